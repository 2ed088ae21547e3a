//! A tour of rdq's `DispatchQueue`: sending text messages through a slow,
//! occasionally failing SMS gateway.
//!
//! Run it twice:
//!
//! ```text
//! cargo run --release -p rdq --example sms                          # about 3 s; writes unsent.json
//! cargo run --release -p rdq --example sms -- --resume unsent.json  # sends the rest
//! ```
//!
//! The first run queues 200 messages at mixed priorities and, while they go
//! out, does what an operator of a real sender does: widens the queue, narrows
//! it, cancels a waiting message and one being sent, moves a message to the
//! front, pauses and resumes. After about three seconds it stops, as it would
//! on a deploy or a Ctrl-C: messages being sent are allowed to finish, and the
//! ones that never started come back from `stop`, in the order they would have
//! been sent. They are saved to a JSON file (`--save FILE` to choose it).
//!
//! The second run (`--resume FILE`) puts them into a new queue with the same
//! priorities, checks that the queue lists them in the saved order, and sends
//! them all.
//!
//! The gateway is fake: each message takes 50–200 ms and about 3% fail with
//! "gateway busy". A tiny PRNG seeded from the message number makes every
//! message behave the same way on every run, with no `rand` dependency.

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::{DispatchQueue, Job, JobHandle, Outcome, Priority, StopMode};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

/// Prints one log line: seconds since `$t0`, an event name, and details.
macro_rules! log {
    ($t0:expr, $event:expr, $($details:tt)+) => {
        println!(
            "[{:5.2}s] {:<12} {}",
            $t0.elapsed().as_secs_f64(),
            $event,
            format_args!($($details)+)
        )
    };
}

// ---------------------------------------------------------------------------
// The job: one text message, and the (fake) gateway that sends it.
// ---------------------------------------------------------------------------

/// One text message: the job's argument.
///
/// The job function sees only its argument, never the job id, so the
/// argument carries everything the job needs. It must be `Clone` (the queue
/// keeps a copy to hand back in the finished `Job`), and here also
/// `Serialize`/`Deserialize`, so that unsent messages can be saved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sms {
    /// Message number, 1 to 200. In the first run it is also the job id
    /// (ids count up from 1 in put order); unlike the id, it stays the same
    /// when the message is re-queued by `--resume`.
    no: u32,
    /// Recipient, in E.164 form.
    to: String,
    /// The text.
    text: String,
}

/// Why the gateway refused a message: the job's error type.
#[derive(Debug)]
struct GatewayError(&'static str);

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl Error for GatewayError {}

/// The job function: sends one message through a pretend gateway.
///
/// Any `async fn(A) -> Result<R, E>` (or closure returning such a future) can
/// be a queue's job function.
async fn send_sms(sms: Sms) -> Result<(), GatewayError> {
    let mut rng = SplitMix64(u64::from(sms.no));
    let latency = Duration::from_millis(50 + rng.below(151));
    sleep(latency).await;
    if rng.below(100) < 3 {
        return Err(GatewayError("gateway busy"));
    }
    Ok(())
}

/// SplitMix64: a tiny pseudo-random generator, plenty for a simulation.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type SmsQueue = DispatchQueue<Sms, (), GatewayError>;
type SmsJob = Job<Sms, (), GatewayError>;
type SmsHandle = JobHandle<Sms, (), GatewayError>;

/// Lower numbers go first.
const URGENT: Priority = -1;
const NORMAL: Priority = 5;
const LOW: Priority = 9;

/// Builds the queue around `send_sms`. `build` needs a Tokio runtime, which
/// `#[tokio::main]` provides.
fn sms_queue(width: usize, paused: bool) -> SmsQueue {
    DispatchQueue::builder(send_sms)
        .name("sms")
        .width(width)
        // A gateway call that hangs is dropped after 5 s and recorded as
        // `Outcome::TimedOut`, instead of holding a slot for ever.
        .timeout(Duration::from_secs(5))
        // A provider that allows, say, 100 messages a second would add
        // `.rate(rdq::Rate::per_second(100))`: a launch then needs both a
        // free slot and a token.
        .paused(paused)
        .build()
}

/// The 200 messages of the first run: a few urgent login codes, many order
/// notices, and every fourth one a low-priority newsletter.
fn messages() -> Vec<(Sms, Priority)> {
    (1..=200u32)
        .map(|no| {
            let to = format!("+1555{:07}", 100_000 + no);
            let (text, priority) = if no % 40 == 7 {
                let code = 1000 + SplitMix64(u64::from(no) << 32).below(9000);
                (format!("Your login code is {code}"), URGENT)
            } else if no % 4 == 0 {
                ("This week only: 20% off everything".to_owned(), LOW)
            } else {
                (format!("Your order #{} has shipped", 4000 + no), NORMAL)
            };
            (Sms { no, to, text }, priority)
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Watching the jobs.
// ---------------------------------------------------------------------------

/// Running counts of finished jobs, for the progress line.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicUsize,
    failed: AtomicUsize,
    cancelled: AtomicUsize,
}

/// Waits for one job to finish and counts its outcome.
///
/// A `JobHandle` is a future resolving to the finished `Job`. Every handle
/// resolves, whatever happens to its job, even when the queue is stopped
/// before it runs (`Outcome::NotRun`), so awaiting them all never hangs.
async fn watch(handle: SmsHandle, tally: Arc<Tally>) -> SmsJob {
    let job = handle.await;
    let counter = match &job.outcome {
        Outcome::Ok(()) => Some(&tally.sent),
        Outcome::Failed(_) => Some(&tally.failed),
        Outcome::Cancelled => Some(&tally.cancelled),
        _ => None,
    };
    if let Some(counter) = counter {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    job
}

/// Puts every message into the queue, and a watcher for each into `watchers`.
fn put_all(
    q: &SmsQueue,
    jobs: impl IntoIterator<Item = (Sms, Priority)>,
    tally: &Arc<Tally>,
    watchers: &mut JoinSet<SmsJob>,
) -> Result<(), Box<dyn Error>> {
    for (sms, priority) in jobs {
        // `put` never waits; it fails only if the queue is stopped or full.
        let handle = q.put(sms, priority)?;
        watchers.spawn(watch(handle, tally.clone()));
    }
    Ok(())
}

/// Prints a one-line progress report every second until aborted.
fn spawn_progress(q: SmsQueue, tally: Arc<Tally>, t0: Instant) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        every_second.tick().await; // The first tick is immediate.
        let mut done_before = 0;
        loop {
            every_second.tick().await;
            let (underway, pending) = q.size();
            let sent = tally.sent.load(Ordering::Relaxed);
            let failed = tally.failed.load(Ordering::Relaxed);
            let done = sent + failed;
            log!(
                t0,
                "progress",
                "width {:>2} | underway {underway:>2} | pending {pending:>3} | \
                 sent {sent:>3} | failed {failed} | {:>3} msg/s",
                q.width(),
                done - done_before,
            );
            done_before = done;
        }
    })
}

// ---------------------------------------------------------------------------
// The first run: queue 200 messages, operate the queue live, stop and save.
// ---------------------------------------------------------------------------

/// One saved job: what `--resume` needs to put it back.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    priority: Priority,
    sms: Sms,
}

async fn first_run(save: PathBuf) -> Result<(), Box<dyn Error>> {
    let t0 = Instant::now();
    let q = sms_queue(5, false);
    let tally = Arc::new(Tally::default());
    let mut watchers = JoinSet::new();

    let messages = messages();
    let count = |priority| messages.iter().filter(|(_, p)| *p == priority).count();
    log!(
        t0,
        "put",
        "{} messages ({} urgent, {} normal, {} low) at width {}",
        messages.len(),
        count(URGENT),
        count(NORMAL),
        count(LOW),
        q.width(),
    );
    // The first five start at once: `put` launches whenever a slot is free.
    put_all(&q, messages, &tally, &mut watchers)?;
    let progress = spawn_progress(q.clone(), tally.clone(), t0);

    // Evening rush: more slots. Growing launches waiting jobs immediately.
    sleep_until(t0 + Duration::from_millis(400)).await;
    q.set_width(20).expect("the queue runs");
    log!(t0, "widen", "5 -> 20: {} underway now", q.size().0);

    // The gateway complains: fewer slots. Shrinking never interrupts a
    // message being sent; it only holds back launches until fewer than 3 run.
    sleep_until(t0 + Duration::from_millis(900)).await;
    q.set_width(3).expect("the queue runs");
    log!(
        t0,
        "narrow",
        "20 -> 3: the {} underway finish; no launch until fewer than 3 run",
        q.size().0
    );

    // `pending()` and `underway()` are snapshots (id, argument, priority,
    // timestamps): pick jobs from them, then act on them by id.
    sleep_until(t0 + Duration::from_millis(1300)).await;
    let waiting = q.pending();
    if let Some(job) = waiting.get(waiting.len() / 2) {
        match q.cancel(job.id) {
            Ok(()) => log!(
                t0,
                "cancel",
                "job {} (pending, to {}): removed, will never be sent",
                job.id,
                job.arg.to
            ),
            Err(e) => log!(t0, "cancel", "job {}: {e}", job.id),
        }
    }
    // The first in launch order has been underway longest. Should it finish
    // between the snapshot and the cancel, `cancel` says so (an error) and
    // leaves its outcome alone; an `Ok` means the cancel won.
    if let Some(job) = q.underway().first() {
        let running_for = job.launched_at.map(|l| l.mono.elapsed());
        match q.cancel(job.id) {
            Ok(()) => log!(
                t0,
                "cancel",
                "job {} (underway for {}, to {}): its future is dropped",
                job.id,
                fmt_duration(running_for.unwrap_or_default()),
                job.arg.to
            ),
            Err(e) => log!(t0, "cancel", "job {}: {e}", job.id),
        }
    }

    // A customer on the phone asks where their shipping notice is: move the
    // last order notice in line up to urgent. Among the jobs of its new
    // priority it keeps its put-order place.
    let waiting = q.pending();
    if let Some(place) = waiting.iter().rposition(|j| j.priority == NORMAL) {
        let job = &waiting[place];
        match q.reprioritize(job.id, URGENT) {
            Ok(old) => {
                let new_place = q.pending().iter().position(|j| j.id == job.id);
                log!(
                    t0,
                    "reprioritize",
                    "job {} {old} -> {URGENT}: place in line {} -> {}",
                    job.id,
                    place + 1,
                    new_place.map_or_else(|| "launched".to_owned(), |i| (i + 1).to_string()),
                );
            }
            // Only pending jobs can be reprioritized; it may have launched.
            Err(e) => log!(t0, "reprioritize", "job {}: {e}", job.id),
        }
    }

    // Maintenance window: pause stops launches at once; the future it returns
    // resolves when the messages already underway are done.
    sleep_until(t0 + Duration::from_millis(1600)).await;
    let (underway, pending) = q.size();
    log!(
        t0,
        "pause",
        "no new launches; {underway} underway, {pending} pending"
    );
    let pause_started = Instant::now();
    q.pause().await;
    log!(
        t0,
        "paused",
        "underway drained in {}",
        fmt_duration(pause_started.elapsed())
    );
    sleep(Duration::from_millis(300)).await;
    // `resume(None)` keeps the width from before the pause; `Some(n)` would
    // set a new one.
    q.resume(None)?;
    log!(
        t0,
        "resume",
        "at width {} (kept through the pause)",
        q.width()
    );

    // Shutdown, as on a deploy or a Ctrl-C (in a real service the trigger
    // would be `tokio::signal::ctrl_c().await`). `stop` refuses new puts and
    // resolves every pending handle as `NotRun` at once; the future waits for
    // the underway messages (`StopMode::Wait`), then yields the jobs that
    // never ran, in the order they would have launched.
    sleep_until(t0 + Duration::from_millis(2900)).await;
    progress.abort();
    let (underway, pending) = q.size();
    log!(
        t0,
        "stop",
        "{pending} pending handed back; waiting for {underway} underway"
    );
    let unsent = q.stop(StopMode::Wait).await;
    log!(t0, "stopped", "nothing underway");
    let late = Sms {
        no: 0,
        to: "+15550100000".to_owned(),
        text: "Too late".to_owned(),
    };
    if let Err(e) = q.put(late, NORMAL) {
        log!(t0, "put", "refused after stop: {e}");
    }

    let saved: Vec<Saved> = unsent
        .iter()
        .map(|job| Saved {
            priority: job.priority,
            sms: job.arg.clone(),
        })
        .collect();
    // A real service would write to a temporary file and rename it, so that
    // a crash mid-write cannot leave half a file.
    std::fs::write(&save, serde_json::to_string_pretty(&saved)?)?;
    log!(
        t0,
        "saved",
        "{} unsent messages to {}, in launch order",
        saved.len(),
        save.display()
    );

    let jobs = watchers.join_all().await;
    summary("first run", "saved (not run)", &jobs, t0.elapsed());
    println!(
        "\nnext: cargo run --release -p rdq --example sms -- --resume {}",
        save.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// The second run: re-queue the saved jobs and send them all.
// ---------------------------------------------------------------------------

async fn resume_run(from: PathBuf) -> Result<(), Box<dyn Error>> {
    let t0 = Instant::now();
    let text = std::fs::read_to_string(&from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let saved: Vec<Saved> = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a saved queue: {e}", from.display()))?;
    log!(
        t0,
        "loaded",
        "{} unsent messages from {}",
        saved.len(),
        from.display()
    );

    if saved.is_empty() {
        log!(t0, "done", "nothing to resume");
        return Ok(());
    }

    // Start paused so that nothing launches while we put: then `pending()`
    // shows the whole queue, to compare with the file.
    let q = sms_queue(5, true);
    let tally = Arc::new(Tally::default());
    let mut watchers = JoinSet::new();
    let jobs = saved.iter().map(|s| (s.sms.clone(), s.priority));
    put_all(&q, jobs, &tally, &mut watchers)?;

    // Putting jobs in their saved launch order, with their priorities,
    // restores that order: lower priority first, and put order among equals.
    let queued: Vec<u32> = q.pending().iter().map(|j| j.arg.no).collect();
    let in_file: Vec<u32> = saved.iter().map(|s| s.sms.no).collect();
    if queued != in_file {
        return Err("the re-queued jobs are not in the saved order".into());
    }
    let first: Vec<String> = queued.iter().take(6).map(|no| format!("#{no}")).collect();
    log!(
        t0,
        "order",
        "restored: pending() lists all {} in the saved launch order ({} ...)",
        queued.len(),
        first.join(" ")
    );

    q.resume(None)?;
    log!(t0, "resume", "at width {}; sending until done", q.width());
    let progress = spawn_progress(q.clone(), tally.clone(), t0);

    // This time, no early stop: wait for every job.
    let jobs = watchers.join_all().await;
    progress.abort();
    let unsent = q.stop(StopMode::Wait).await;
    log!(t0, "done", "{} left unsent", unsent.len());

    summary("resumed run", "not run", &jobs, t0.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------
// Reporting.
// ---------------------------------------------------------------------------

/// Prints the final table from every job's recorded timeline and outcome.
fn summary(title: &str, not_run_label: &str, jobs: &[SmsJob], elapsed: Duration) {
    let count = |name: &str| jobs.iter().filter(|j| j.outcome.name() == name).count();
    let mean = |ds: &[Duration]| {
        let n = u32::try_from(ds.len()).unwrap_or(u32::MAX).max(1);
        ds.iter().sum::<Duration>() / n
    };
    // Wait: put -> launch, for jobs that launched.
    let waits: Vec<Duration> = jobs
        .iter()
        .filter(|j| j.launched_at.is_some())
        .map(Job::wait_time)
        .collect();
    // Run time: launch -> stop, for jobs that ran to the end (sent or failed).
    let runs: Vec<Duration> = jobs
        .iter()
        .filter(|j| matches!(j.outcome, Outcome::Ok(_) | Outcome::Failed(_)))
        .filter_map(Job::run_time)
        .collect();

    println!("\nsummary ({title})");
    println!("  {:<18}{:>8}", "sent", count("ok"));
    println!("  {:<18}{:>8}", "failed", count("failed"));
    println!("  {:<18}{:>8}", "cancelled", count("cancelled"));
    for other in ["timed_out", "panicked"] {
        if count(other) > 0 {
            println!("  {other:<18}{:>8}", count(other));
        }
    }
    println!("  {not_run_label:<18}{:>8}", count("not_run"));
    println!("  {:<18}{:>8}", "total", jobs.len());
    println!(
        "  {:<18}{:>8}   queued -> launched, over {} jobs",
        "mean wait",
        fmt_duration(mean(&waits)),
        waits.len()
    );
    println!(
        "  {:<18}{:>8}   launched -> done, over {} jobs",
        "mean run time",
        fmt_duration(mean(&runs)),
        runs.len()
    );
    println!("  {:<18}{:>8}", "elapsed", fmt_duration(elapsed));
}

/// `123 ms` below a second, `1.23 s` above.
fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

// ---------------------------------------------------------------------------
// Command line.
// ---------------------------------------------------------------------------

const USAGE: &str = "usage: sms [--save FILE | --resume FILE]";

enum Mode {
    /// `-h` or `--help`.
    Help,
    /// Queue the 200 messages, stop early, save the unsent to this file.
    First { save: PathBuf },
    /// Re-queue the messages saved in this file and send them all.
    Resume { from: PathBuf },
}

/// Parses the arguments after the program name; `None` if they are bad.
fn parse_args(args: &[&str]) -> Option<Mode> {
    let file = |f: &str| (!f.starts_with('-')).then(|| PathBuf::from(f));
    match *args {
        [] => Some(Mode::First {
            save: PathBuf::from("unsent.json"),
        }),
        ["-h" | "--help"] => Some(Mode::Help),
        ["--save", f] => file(f).map(|save| Mode::First { save }),
        ["--resume", f] => file(f).map(|from| Mode::Resume { from }),
        _ => None,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(mode) = parse_args(&args) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match mode {
        Mode::Help => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Mode::First { save } => first_run(save).await,
        Mode::Resume { from } => resume_run(from).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sms: {e}");
            ExitCode::FAILURE
        }
    }
}
