//! Scheduled changes to a queue are plain Tokio timers calling `set_width`.
//!
//! ```text
//! cargo run --release -p rdq --example scheduled_width
//! ```
//!
//! rdq has no scheduling API, on purpose: "width 8 in one hour" is a task
//! that sleeps for an hour and then calls `set_width(8)`, and "width 2 at
//! 22:00 every night" is the same thing in a loop. The task's `JoinHandle`
//! is the schedule entry: `abort()` calls the change off. The same goes for
//! `set_rate`, `pause` and `resume`.
//!
//! The demo: a queue at width 2 is fed a steady stream of jobs (100 a second,
//! each taking 100 ms, so there is always a backlog and the width alone sets
//! the pace). One timer widens it to 8 after 0.8 s, another narrows it to 1
//! after 1.6 s, and a third, far in the future, is called off. The whole run
//! takes about 2.5 s; in production the delays would be hours.

use std::convert::Infallible;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdq::{DispatchQueue, StopMode, WeakDispatchQueue};
use tokio::time::{sleep, sleep_until, Instant};

/// Prints one log line: seconds since `$t0`, an event name, and details.
macro_rules! log {
    ($t0:expr, $event:expr, $($details:tt)+) => {
        println!(
            "[{:5.2}s] {:<8} {}",
            $t0.elapsed().as_secs_f64(),
            $event,
            format_args!($($details)+)
        )
    };
}

type Queue = DispatchQueue<u64, (), Infallible>;

#[tokio::main]
async fn main() {
    let t0 = Instant::now();
    let meter = Arc::new(Meter::new());

    // Each job takes 100 ms, so at width w, with a backlog, the queue
    // launches (and finishes) 10 * w jobs a second. The job function is
    // called at the moment a job launches: count launches there, the pace
    // the width sets (finishes follow 100 ms later).
    let q: Queue = {
        let meter = meter.clone();
        DispatchQueue::builder(move |_n: u64| {
            meter.launched();
            async {
                sleep(Duration::from_millis(100)).await;
                Ok(())
            }
        })
        .name("stream")
        .width(2)
        .build()
    };
    log!(
        t0,
        "start",
        "width {}; 100 jobs/s arrive, each takes 100 ms",
        q.width()
    );

    // The stream of work: a job every 10 ms until the queue is stopped. We
    // do not need the results, so each handle is dropped at once (dropping a
    // handle does not cancel its job).
    let producer = {
        let q = q.clone();
        tokio::spawn(async move {
            let mut every_10ms = tokio::time::interval(Duration::from_millis(10));
            for n in 0.. {
                every_10ms.tick().await;
                if q.put(n, 0).is_err() {
                    break; // Stopped.
                }
            }
        })
    };

    // ---- The pattern ---------------------------------------------------
    //
    // "Width 8 in 0.8 s": spawn a task that sleeps, then sets the width.
    // In production the delay is simply longer, e.g. for "in one hour":
    //
    //     sleep(Duration::from_secs(60 * 60)).await;
    //
    // The task owns a clone of the queue (clones share one queue).
    let widen = {
        let (q, meter) = (q.clone(), meter.clone());
        tokio::spawn(async move {
            sleep(Duration::from_millis(800)).await;
            let before = meter.lap(q.width());
            q.set_width(8).expect("running"); // Growing launches waiting jobs at once.
            log!(t0, "change", "width 2 -> 8 | before: {before}");
        })
    };
    log!(
        t0,
        "schedule",
        "width 8 in 0.8 s (in production: in an hour)"
    );

    // "Width 1 in 1.6 s". Shrinking never interrupts an underway job: the
    // 8 underway finish, and no job launches until fewer than 1 run.
    let narrow = {
        let (q, meter) = (q.clone(), meter.clone());
        tokio::spawn(async move {
            sleep(Duration::from_millis(1600)).await;
            let before = meter.lap(q.width());
            q.set_width(1).expect("running");
            log!(
                t0,
                "change",
                "width 8 -> 1 | before: {before} | {} underway finish first",
                q.size().0
            );
        })
    };
    log!(t0, "schedule", "width 1 in 1.6 s");

    // A schedule entry is a `JoinHandle`: `abort()` calls the change off, as
    // long as it has not happened yet.
    let surge = {
        let q = q.clone();
        tokio::spawn(async move {
            sleep(Duration::from_secs(60)).await;
            q.set_width(50).expect("running");
        })
    };
    surge.abort();
    log!(t0, "schedule", "width 50 in 60 s ... called off (aborted)");

    // A fixed time of day, every day: see `every_day_at` below. It is spawned
    // the same way; this demo ends long before it fires, so it is aborted at
    // the end.
    let (hour, minute) = (22, 0);
    let nightly = tokio::spawn(every_day_at(q.downgrade(), hour, minute, 2));
    log!(
        t0,
        "schedule",
        "width 2 at {hour:02}:{minute:02} UTC every day; next in {}",
        fmt_hm(until_next_utc(hour, minute, SystemTime::now()))
    );

    // ---- Watching ------------------------------------------------------
    //
    // A sample every 200 ms from 0.25 s to 2.25 s: the width, what is
    // underway and pending, and the launches over the last 200 ms. (Jobs
    // launch in rounds every 100 ms; the windows start between rounds.)
    let period = Duration::from_millis(200);
    let mut every_200ms = tokio::time::interval_at(t0 + Duration::from_millis(50), period);
    every_200ms.tick().await;
    let mut before = meter.count();
    for _ in 0..11 {
        every_200ms.tick().await;
        let (underway, pending) = q.size();
        let count = meter.count();
        log!(
            t0,
            "sample",
            "width {} | underway {underway} | pending {pending:>3} | {:>3} launches/s",
            q.width(),
            (count - before) * 5,
        );
        before = count;
    }

    // ---- Shutdown ------------------------------------------------------
    //
    // The timers hold clones of the queue, and a queue runs until its last
    // clone is dropped, so call off what has not fired and stop explicitly.
    sleep_until(t0 + Duration::from_millis(2400)).await;
    let last = meter.lap(q.width());
    log!(t0, "stop", "at width {} | before: {last}", q.width());
    nightly.abort();
    let unrun = q.stop(StopMode::Wait).await;
    producer.await.expect("the producer does not panic");
    // Both changes have fired by now; awaiting them just tidies up.
    widen.await.expect("the timer does not panic");
    narrow.await.expect("the timer does not panic");
    log!(
        t0,
        "stopped",
        "{} jobs ran, {} never did (stop hands them back, to save or drop)",
        meter.count(),
        unrun.len()
    );

    println!("\nthroughput by width (launches per second; each job runs 100 ms)");
    for lap in meter.laps() {
        println!("  {lap}");
    }
}

// ---------------------------------------------------------------------------
// "At 22:00 every night"
// ---------------------------------------------------------------------------

/// Sets the queue's width every day at `hour:minute` UTC.
///
/// For local time, compute the next moment with a time-zone library (jiff,
/// chrono-tz): "22:00 local" is not always 24 hours after the last one.
/// Several changes a day ("2 at 22:00, 8 at 06:00") are one such task each.
///
/// It holds a *weak* handle: a schedule that runs forever must not keep the
/// queue alive after its owners drop it. The loop ends once the queue is gone.
async fn every_day_at(
    q: WeakDispatchQueue<u64, (), Infallible>,
    hour: u64,
    minute: u64,
    width: usize,
) {
    loop {
        let now = SystemTime::now();
        let next = now + until_next_utc(hour, minute, now);
        sleep_until_wall(next).await;
        match q.upgrade() {
            // A stopped queue refuses, and the schedule has nothing left to do.
            Some(q) => {
                if q.set_width(width).is_err() {
                    return;
                }
            }
            None => return,
        }
    }
}

/// Sleeps until a wall-clock time.
///
/// Tokio's timers run on the monotonic clock, which may stop while the
/// machine is suspended and ignores changes to the system clock. Sleeping
/// at most a minute at a time and re-reading the wall clock keeps a
/// long wait on time.
async fn sleep_until_wall(at: SystemTime) {
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if left.is_zero() {
            break;
        }
        sleep(left.min(Duration::from_secs(60))).await;
    }
}

/// How long from `now` until the next `hour:minute` UTC (a full day if it is
/// that time now).
fn until_next_utc(hour: u64, minute: u64, now: SystemTime) -> Duration {
    const DAY: u64 = 24 * 60 * 60;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into_day = Duration::from_secs(since_epoch.as_secs() % DAY)
        + Duration::from_nanos(u64::from(since_epoch.subsec_nanos()));
    let target = Duration::from_secs((hour * 60 + minute) * 60);
    if target > into_day {
        target - into_day
    } else {
        target + Duration::from_secs(DAY) - into_day
    }
}

/// `7h 05m`.
fn fmt_hm(d: Duration) -> String {
    let minutes = d.as_secs().div_ceil(60);
    format!("{}h {:02}m", minutes / 60, minutes % 60)
}

// ---------------------------------------------------------------------------
// Measuring throughput.
// ---------------------------------------------------------------------------

/// Counts launched jobs, and splits the run into laps (one per width) to
/// measure the throughput of each.
#[derive(Debug)]
struct Meter {
    launched: AtomicU64,
    laps: Mutex<Laps>,
}

#[derive(Debug)]
struct Laps {
    /// Start of the current lap, and the launch count then.
    start: (Instant, u64),
    done: Vec<Lap>,
}

/// Throughput over one stretch of time at one width.
#[derive(Clone, Copy, Debug)]
struct Lap {
    width: usize,
    jobs: u64,
    took: Duration,
}

impl fmt::Display for Lap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "width {}: {:>3} launches in {:.2} s = {:>4.1}/s",
            self.width,
            self.jobs,
            self.took.as_secs_f64(),
            self.jobs as f64 / self.took.as_secs_f64()
        )
    }
}

impl Meter {
    fn new() -> Self {
        Meter {
            launched: AtomicU64::new(0),
            laps: Mutex::new(Laps {
                start: (Instant::now(), 0),
                done: Vec::new(),
            }),
        }
    }

    fn launched(&self) {
        self.launched.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.launched.load(Ordering::Relaxed)
    }

    /// Ends the current lap, run at `width`, and starts the next.
    fn lap(&self, width: usize) -> Lap {
        let (now, done) = (Instant::now(), self.count());
        let mut laps = self.laps.lock().expect("not poisoned");
        let (started, done_then) = laps.start;
        let lap = Lap {
            width,
            jobs: done - done_then,
            took: now - started,
        };
        laps.done.push(lap);
        laps.start = (now, done);
        lap
    }

    fn laps(&self) -> Vec<Lap> {
        self.laps.lock().expect("not poisoned").done.clone()
    }
}
