//! The SMS scenario of `rdq`'s `sms` example, on a file: a durable queue that
//! survives Ctrl-C, `kill -9` and restarts.
//!
//! ```text
//! cargo run --release -p rdq-store --example durable_sms              # kill it halfway ...
//! cargo run --release -p rdq-store --example durable_sms              # ... and it finishes the rest
//! cargo run --release -p rdq-store --example durable_sms -- --reset   # start over
//! ```
//!
//! The first run puts 300 text messages into the queue `sms` of an SQLite
//! file (`durable_sms.db`, or `--db FILE`) in one commit, and sends them
//! through a fake gateway: 10 at a time, at most 40 a second, so about eight
//! seconds in all. Stop it halfway, however you like:
//!
//! * **Ctrl-C** (or `kill -INT`): the queue stops claiming, gives the
//!   messages being sent up to 2 s to finish, returns the rest to pending,
//!   and the store closes cleanly.
//! * **`kill -9`**: nothing gets to run. Every message committed stays in the
//!   file; the ones that were being sent are still marked underway there.
//!
//! Run it again: opening the file returns the messages left underway by the
//! dead process to pending (they are sent again: at-least-once), and the
//! queue picks up where it was. Nothing is put a second time. When every
//! message is final (sent, or dead), it prints a summary and exits.
//!
//! The gateway is fake: each message takes 50–150 ms (the same for a given
//! job on every run), about 5% of attempts fail with "gateway busy" and are
//! retried after a short backoff, and two recipients have invalid numbers,
//! which no retry can fix. A tiny PRNG makes it deterministic with no `rand`
//! dependency.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rdq::Rate;
use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::{
    Backoff, DurableQueue, HandlerError, JobContext, JobRow, JobSpec, JobState, ListParams,
    PutOptions, StateCounts, StopReport, Store,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::{sleep, Instant, MissedTickBehavior};

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

/// The queue's name in the file.
const QUEUE: &str = "sms";
/// The one kind of job in it.
const KIND: &str = "send_sms";
/// How many messages the first run puts.
const MESSAGES: u32 = 300;
/// How long `stop` lets messages being sent finish.
const GRACE: Duration = Duration::from_secs(2);

/// Lower numbers go first.
const URGENT: i32 = -1;
const NORMAL: i32 = 5;
const LOW: i32 = 9;

// ---------------------------------------------------------------------------
// The job: one text message, and the (fake) gateway that sends it.
// ---------------------------------------------------------------------------

/// One text message: the job's arguments, stored as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Sms {
    /// Recipient, in E.164 form (`+` and 8 to 15 digits), or so we hope.
    to: String,
    /// The text.
    text: String,
}

/// The handler: sends one message through a pretend gateway and returns the
/// gateway's message id, which the store keeps as the job's result.
///
/// The latency depends on the job id only, so a job takes as long on every
/// run; whether the gateway is busy depends on the attempt too, so a retry
/// can succeed where the first attempt failed.
async fn send_sms(sms: Sms, ctx: JobContext) -> Result<String, HandlerError> {
    // A number the gateway refuses now refuses for ever: retrying is useless.
    let digits = sms.to.strip_prefix('+').unwrap_or("");
    if !(8..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HandlerError::permanent("invalid number"));
    }
    let id = ctx.id.0 as u64;
    sleep(Duration::from_millis(50 + SplitMix64(id).below(101))).await;
    let mut rng = SplitMix64(id << 8 | u64::from(ctx.attempt));
    if rng.below(100) < 5 {
        // Retried after the queue's backoff, while attempts remain.
        return Err(HandlerError::msg("gateway busy"));
    }
    Ok(format!("gw-{:08x}", rng.next() as u32))
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

/// The 300 messages of the first run: every 25th an urgent login code, every
/// fourth a low-priority newsletter, the rest order notices. Two recipients
/// have mistyped numbers. Each has an idempotency key.
fn messages() -> Vec<(Sms, i32, String)> {
    (1..=MESSAGES)
        .map(|no| {
            let to = match no {
                77 => "+1555-0177".to_owned(),
                213 => "+1555213".to_owned(),
                _ => format!("+1555{:07}", 100_000 + no),
            };
            let (text, priority) = if no % 25 == 7 {
                let code = 1000 + SplitMix64(u64::from(no) << 32).below(9000);
                (format!("Your login code is {code}"), URGENT)
            } else if no % 4 == 0 {
                ("This week only: 20% off everything".to_owned(), LOW)
            } else {
                (format!("Your order #{} has shipped", 4000 + no), NORMAL)
            };
            (Sms { to, text }, priority, format!("sms-{no}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The run.
// ---------------------------------------------------------------------------

/// How a run ended.
enum Ending {
    /// Every job is final.
    Done,
    /// Ctrl-C.
    Interrupted,
}

async fn run(db: PathBuf, reset: bool) -> Result<ExitCode, Box<dyn Error>> {
    let t0 = Instant::now();
    if reset {
        match reset_files(&db)? {
            0 => log!(
                t0,
                "reset",
                "nothing to delete: {} does not exist",
                db.display()
            ),
            n => log!(
                t0,
                "reset",
                "deleted {} and its companions ({n} files)",
                db.display()
            ),
        }
    }

    // Opening recovers: jobs the file says are underway belonged to a process
    // that died (the lock file guarantees no live one holds the file).
    let store = SqliteStore::open(&db, SqliteOptions::default()).await?;
    log!(t0, "open", "{}", db.display());
    let recovered = store.recovered();
    if recovered.requeued + recovered.dead == 0 {
        log!(t0, "recovery", "nothing left underway by a dead process");
    } else {
        log!(
            t0,
            "recovery",
            "{} job(s) left underway by a process that died: back to pending \
             (they run again); {} were on their last attempt: dead",
            recovered.requeued,
            recovered.dead
        );
    }
    let before = store.counts(QUEUE).await?;
    let total: u64 = before.values().sum();
    if total == 0 {
        log!(t0, "in the file", "no jobs yet");
    } else {
        log!(t0, "in the file", "{total} jobs: {}", fmt_counts(&before));
    }

    let q = DurableQueue::builder(store.clone(), QUEUE)
        .width(10)
        .rate(Rate::per_second(40))
        .max_attempts(5)
        // Short, so that retries show up within the demo: 200 ms, 400 ms,
        // 800 ms, 1.6 s, then 2 s (each ± 20%).
        .backoff(Backoff::exponential(
            Duration::from_millis(200),
            Duration::from_secs(2),
        )?)
        .handler(KIND, send_sms)
        .build()
        .await?;

    if total == 0 {
        // One commit for all 300: after a crash the file has all of them or
        // none. (The keys do not make a blind re-put safe: a key only
        // matches a *live* job, so a message already sent would be put, and
        // sent, again. Hence: put only into an empty queue.)
        let batch = messages();
        let urgent = batch.iter().filter(|(_, p, _)| *p == URGENT).count();
        let low = batch.iter().filter(|(_, p, _)| *p == LOW).count();
        let specs = batch
            .iter()
            .map(|(sms, priority, key)| {
                JobSpec::new(KIND, sms, PutOptions::priority(*priority).key(key))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let inserted = q.put_many(specs).await?;
        log!(
            t0,
            "put",
            "{} messages in one commit ({urgent} urgent, {} normal, {low} low), \
             jobs {}..={}",
            inserted.len(),
            inserted.len() - urgent - low,
            inserted.first().map_or(0, |i| i.id.0),
            inserted.last().map_or(0, |i| i.id.0),
        );
    } else {
        match total - finals(&before) {
            0 => log!(t0, "resume", "nothing left to do; nothing new put"),
            left => log!(t0, "resume", "{left} jobs left to finish; nothing new put"),
        }
    }
    if finals(&before) < total || total == 0 {
        let pid = std::process::id();
        log!(
            t0,
            "tip",
            "pid {pid}: press Ctrl-C or kill -9 {pid} now; run again to finish the rest"
        );
    }

    let ending = watch(&q, t0).await?;
    if let Ending::Interrupted = ending {
        log!(
            t0,
            "stop",
            "Ctrl-C: no more claims; sends underway get {} to finish",
            fmt_duration(GRACE)
        );
        // A second Ctrl-C does not wait for the grace period: the process
        // ends like a `kill -9`, and the next run recovers what was underway.
        let report = tokio::select! {
            report = q.stop(GRACE) => report?,
            _ = tokio::signal::ctrl_c() => {
                log!(t0, "stop", "second Ctrl-C: quitting now; what was underway runs again next time");
                return Ok(ExitCode::from(130));
            }
        };
        let StopReport {
            released,
            interrupted,
        } = report;
        log!(
            t0,
            "stopped",
            "back to pending: {released} claimed but not launched, \
             {interrupted} cut off by the grace period"
        );
        let after = q.counts().await?;
        store.close().await?;
        log!(t0, "closed", "{}", fmt_counts(&after));
        println!(
            "\n{} of {} messages final; run again to finish the rest",
            finals(&after),
            after.values().sum::<u64>()
        );
        return Ok(ExitCode::SUCCESS);
    }

    // Nothing left to run; stop the queue's tasks and write everything.
    q.stop(GRACE).await?;
    let rows = all_jobs(&store).await?;
    store.close().await?;
    summary(&rows, t0.elapsed());
    Ok(ExitCode::SUCCESS)
}

/// Prints a progress line every second until every job is final (checked
/// whenever a job reaches a final state) or Ctrl-C.
async fn watch(q: &DurableQueue<SqliteStore>, t0: Instant) -> Result<Ending, Box<dyn Error>> {
    let mut finished = q.store().finished_events();
    let mut every_second = tokio::time::interval(Duration::from_secs(1));
    every_second.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every_second.tick().await; // The first tick is immediate.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let mut finals_before = finals(&q.counts().await?);
    let mut check = true;
    loop {
        if check {
            check = false;
            let counts = q.counts().await?;
            if finals(&counts) == counts.values().sum::<u64>() {
                log!(t0, "done", "every job is final: {}", fmt_counts(&counts));
                return Ok(Ending::Done);
            }
        }
        tokio::select! {
            r = &mut ctrl_c => {
                r?;
                println!(); // after the terminal's ^C
                return Ok(Ending::Interrupted);
            }
            _ = every_second.tick() => {
                let counts = q.counts().await?;
                let n = |s| counts.get(&s).copied().unwrap_or(0);
                let now_final = finals(&counts);
                log!(
                    t0,
                    "progress",
                    "pending {:>3} | underway {:>2} | succeeded {:>3} | \
                     failed (retry) {:>2} | dead {} | {:>2} msg/s",
                    n(JobState::Pending) + n(JobState::Scheduled),
                    n(JobState::Underway),
                    n(JobState::Succeeded),
                    n(JobState::Failed),
                    n(JobState::Dead),
                    now_final.saturating_sub(finals_before),
                );
                finals_before = now_final;
            }
            event = finished.recv() => match event {
                Ok(_) | Err(RecvError::Lagged(_)) => check = true,
                Err(RecvError::Closed) => return Err("the store closed".into()),
            },
        }
    }
}

/// Jobs that will never run again.
fn finals(counts: &StateCounts) -> u64 {
    counts
        .iter()
        .filter(|(state, _)| state.is_final())
        .map(|(_, n)| n)
        .sum()
}

/// Every job of the queue, oldest first.
async fn all_jobs(store: &SqliteStore) -> Result<Vec<JobRow>, Box<dyn Error>> {
    let mut rows = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list(ListParams {
                queue: Some(QUEUE.to_owned()),
                state: None,
                before,
                limit: 500,
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        rows.extend(page);
    }
    rows.reverse();
    Ok(rows)
}

// ---------------------------------------------------------------------------
// Reporting.
// ---------------------------------------------------------------------------

/// The final table, from what the file says about every job.
fn summary(rows: &[JobRow], elapsed: Duration) {
    let count = |state| rows.iter().filter(|r| r.state == state).count();
    let attempts: u32 = rows.iter().map(|r| r.attempt).sum();
    // Why jobs that went on to succeed needed more than one attempt: their
    // latest error is kept. A job whose process died mid-send has none.
    let mut retried: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.state == JobState::Succeeded && r.attempt > 1)
    {
        let why = r
            .error
            .as_deref()
            .unwrap_or("(none recorded: its process died)");
        *retried.entry(why).or_default() += 1;
    }
    let first_put = rows.iter().map(|r| r.queued_at).min();
    let last_done = rows.iter().filter_map(|r| r.finished_at).max();

    println!("\nsummary");
    println!("  {:<24}{:>8}", "succeeded", count(JobState::Succeeded));
    println!("  {:<24}{:>8}", "dead", count(JobState::Dead));
    for r in rows.iter().filter(|r| r.state == JobState::Dead) {
        let to = serde_json::from_str::<Sms>(&r.args).map_or_else(|_| "?".to_owned(), |s| s.to);
        println!(
            "    job {:<4} to {:<14} {} (attempt {} of {})",
            r.id,
            to,
            r.error.as_deref().unwrap_or("?"),
            r.attempt,
            r.max_attempts
        );
    }
    if count(JobState::Cancelled) > 0 {
        println!("  {:<24}{:>8}", "cancelled", count(JobState::Cancelled));
    }
    println!("  {:<24}{:>8}", "total jobs", rows.len());
    println!("  {:<24}{:>8}", "total attempts", attempts);
    println!(
        "  {:<24}{:>8}",
        "succeeded after retries",
        retried.values().sum::<usize>()
    );
    println!("    by latest error:");
    for (why, n) in &retried {
        println!("    {n:>4} x {why}");
    }
    println!("  {:<24}{:>8}", "elapsed (this run)", fmt_duration(elapsed));
    if let (Some(first), Some(last)) = (first_put, last_done) {
        println!(
            "  {:<24}{:>8}   first put -> last finish, all runs and the pauses between",
            "elapsed (in all)",
            fmt_duration(last.since(first))
        );
    }
}

/// `pending 120, underway 10, succeeded 168, dead 2`.
fn fmt_counts(counts: &StateCounts) -> String {
    let parts: Vec<String> = counts.iter().map(|(st, n)| format!("{st} {n}")).collect();
    if parts.is_empty() {
        "no jobs".to_owned()
    } else {
        parts.join(", ")
    }
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

const USAGE: &str = "usage: durable_sms [--db FILE] [--reset]";

/// Deletes the database and its companions; returns how many existed.
///
/// Refuses while another process holds the file: deleting its lock file
/// under it would let a second process in.
fn reset_files(db: &Path) -> Result<usize, Box<dyn Error>> {
    let with = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    let lock_path = with(".lock");
    let held = match std::fs::OpenOptions::new().write(true).open(&lock_path) {
        Ok(file) => {
            if file.try_lock().is_err() {
                let pid = std::fs::read_to_string(&lock_path).unwrap_or_default();
                return Err(format!(
                    "{} is in use by pid {}; not resetting it",
                    db.display(),
                    pid.trim()
                )
                .into());
            }
            Some(file)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot open {}: {e}", lock_path.display()).into()),
    };
    let mut removed = 0;
    // The lock file last, still locked while the others go.
    for path in [db.to_owned(), with("-wal"), with("-shm"), lock_path] {
        match std::fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot delete {}: {e}", path.display()).into()),
        }
    }
    drop(held);
    Ok(removed)
}

/// The arguments after the program name: `Some((db, reset))`, `None` for
/// help; `Err` if they are bad.
fn parse_args(args: &[String]) -> Result<Option<(PathBuf, bool)>, ()> {
    let mut db = None;
    let mut reset = false;
    let mut args = args.iter().map(String::as_str);
    while let Some(arg) = args.next() {
        match arg {
            "-h" | "--help" => return Ok(None),
            "--reset" if !reset => reset = true,
            "--db" if db.is_none() => match args.next() {
                Some(f) if !f.starts_with('-') => db = Some(PathBuf::from(f)),
                _ => return Err(()),
            },
            _ => return Err(()),
        }
    }
    let db = db.unwrap_or_else(|| PathBuf::from("durable_sms.db"));
    Ok(Some((db, reset)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (db, reset) = match parse_args(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(()) => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(db, reset).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("durable_sms: {e}");
            ExitCode::FAILURE
        }
    }
}
