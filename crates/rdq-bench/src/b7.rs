//! B7: a slow consumer of a [`Hub`] must not delay the fast ones.
//!
//! One topic, ten consumers of width 16; N = 20,000 messages published at
//! 5,000/s, paced by absolute deadlines (message `i` is due at
//! `start + i × 200 µs`; a publisher that falls behind catches up at once,
//! it never shifts the later deadlines). Run A: all ten consumers sleep
//! 1 ms per message. Run B: the tenth sleeps 100 ms per message. The tenth
//! has the same settings in both runs, bound 1,000 and
//! [`Overflow::DropOldest`]; only its job differs. The nine fast consumers
//! have a bound of N, so none of their messages can be refused or dropped.
//!
//! The metric is the p99 queue wait over the nine fast consumers: each job
//! records, as the first thing it does, `published_at.elapsed()`, exactly
//! (no histogram buckets); the p99 is the nearest-rank percentile of all
//! 9 × N waits of a run. A round ends when the nine fast consumers have
//! started all N messages; the hub is then stopped, cancelling the slow
//! consumer's backlog.
//!
//! Rounds are interleaved in eleven pairs (two with `--quick`, of 2,000
//! messages) whose order alternates (AB, BA, AB, …),
//! after one unmeasured warm-up run. `value` is B's p99 and `baseline` A's
//! (each the median over rounds, in milliseconds); `ratio` is the median
//! of the per-pair ratios B ÷ A, the figure judged against the target.
//!
//! **What sets the tail.** A fast job is published, started and ended on
//! timer ticks: about 5 messages arrive each millisecond and about 10 of a
//! consumer's 16 slots are busy, so on a quiet machine a message finds a
//! free slot and its wait is the runtime's scheduling latency (p99 about
//! 0.15 ms). When the process loses a core for a few milliseconds (another
//! build or test on this 2-core machine), the publisher catches up with a
//! burst, the slots fill, and waits of one or two job lengths (2–5 ms)
//! follow. A few such stalls a run are enough to move the p99 from 0.15 ms
//! to 1.5–6 ms, in A or B alike, so the per-pair ratios of a run on a busy
//! machine scatter widely; `detail` has every round's p99, the share of
//! waits over 1 ms, and `load_average` the machine's load at the start and
//! at the end.
//!
//! **Why width 16, not the issue's 8.** Tokio's timer has a 1 ms
//! resolution and rounds a sleep up to its next tick; a job started just
//! after a tick (as a busy consumer's jobs are) sleeps about 2 ms, measured
//! 2.1–2.2 ms here. At width 8 a fast consumer then does about 3,700 jobs
//! a second against 5,000 arriving: its wait is its own backlog, growing
//! for as long as the publishing lasts, and the slow neighbour does not
//! enter into it. At width 16 its load is about 0.67 and the wait is what
//! B7 is about. Everything else is the issue's, the 100× between the two
//! sleeps included (the slow consumer measures about 47× the fast one's job
//! time, because of the same rounding; it is saturated either way).
//! `detail` has the fast jobs' mean measured duration, the load that puts
//! on a fast consumer (arrival rate × duration ÷ width), and, in a full
//! run, one pair at width 8 (`width_8`, not judged).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::{Delivery, Hub, Overflow, StopMode};
use tokio::time::Instant;

use crate::report::{median, range, round3, Report};

const CONSUMERS: usize = 10;
const FAST: usize = CONSUMERS - 1;
/// The width of every consumer: 16, not the issue's 8 (see the module docs).
const WIDTH: usize = 16;
/// The issue's width, run once more beside the measured rounds.
const ISSUE_WIDTH: usize = 8;
const RATE: f64 = 5_000.0;
const FAST_JOB: Duration = Duration::from_millis(1);
const SLOW_JOB: Duration = Duration::from_millis(100);
const SLOW_BOUND: usize = 1_000;
const TOPIC: &str = "b7";

/// What one run measured.
struct Run {
    /// Every fast consumer's queue waits, sorted.
    waits: Vec<Duration>,
    /// Mean run time of the fast consumers' jobs.
    fast_job: Duration,
    /// Mean run time of the tenth consumer's jobs.
    tenth_job: Duration,
    /// Messages the tenth consumer dropped.
    tenth_dropped: u64,
    /// The publisher's worst lateness against its deadlines.
    late: Duration,
    /// First to last publish.
    publish_span: Duration,
}

/// The nearest-rank percentile `p` of sorted `waits`, in milliseconds.
fn percentile_ms(waits: &[Duration], p: f64) -> f64 {
    if waits.is_empty() {
        return 0.0;
    }
    let rank = (p * waits.len() as f64).ceil() as usize;
    waits[rank.clamp(1, waits.len()) - 1].as_secs_f64() * 1e3
}

/// The share of sorted `waits` longer than `limit`, in percent (2 decimals).
fn over_pct(waits: &[Duration], limit: Duration) -> f64 {
    let over = waits.len() - waits.partition_point(|w| *w <= limit);
    (over as f64 * 10_000.0 / waits.len().max(1) as f64).round() / 100.0
}

/// One run of `n` messages; the tenth consumer's job sleeps `tenth`.
async fn run_once(n: usize, width: usize, tenth: Duration) -> Run {
    let hub: Hub<u32> = Hub::new();
    // waits[c × n + i]: consumer c's wait for message i, in nanoseconds.
    let waits: Arc<Vec<AtomicU64>> = Arc::new((0..FAST * n).map(|_| AtomicU64::new(0)).collect());
    let started = Arc::new(AtomicUsize::new(0));
    for c in 0..FAST {
        let (waits, started) = (waits.clone(), started.clone());
        hub.consumer(format!("fast{c}"))
            .subscribe(TOPIC)
            .width(width)
            .bound(n)
            .overflow(Overflow::RejectNewest)
            .start(move |d: Delivery<u32>| {
                let (waits, started) = (waits.clone(), started.clone());
                async move {
                    let wait = d.published_at.elapsed();
                    let nanos = u64::try_from(wait.as_nanos()).unwrap_or(u64::MAX);
                    waits[c * n + d.message as usize].store(nanos, Ordering::Relaxed);
                    started.fetch_add(1, Ordering::Release);
                    tokio::time::sleep(FAST_JOB).await;
                    Ok::<_, Infallible>(())
                }
            })
            .expect("fast consumer starts");
    }
    hub.consumer("tenth")
        .subscribe(TOPIC)
        .width(width)
        .bound(SLOW_BOUND)
        .overflow(Overflow::DropOldest)
        .start(move |_: Delivery<u32>| async move {
            tokio::time::sleep(tenth).await;
            Ok::<_, Infallible>(())
        })
        .expect("tenth consumer starts");

    let period = Duration::from_secs_f64(1.0 / RATE);
    let start = Instant::now();
    let mut late = Duration::ZERO;
    let mut last = start;
    for i in 0..n {
        let due = start + period * i as u32;
        if Instant::now() < due {
            tokio::time::sleep_until(due).await;
        }
        last = Instant::now();
        late = late.max(last.saturating_duration_since(due));
        hub.publish(TOPIC, i as u32)
            .await
            .expect("every consumer takes every message");
    }
    let publish_span = last.duration_since(start);
    while started.load(Ordering::Acquire) < FAST * n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snapshot = hub.snapshot();
    hub.stop(StopMode::CancelUnderway).await;

    let mean = |h: &rdq::BacklogSnapshot| {
        if h.processing.count == 0 {
            Duration::ZERO
        } else {
            h.processing.sum / h.processing.count as u32
        }
    };
    let (fast_sum, fast_count) = snapshot[..FAST].iter().fold((Duration::ZERO, 0), |acc, c| {
        (
            acc.0 + c.backlog.processing.sum,
            acc.1 + c.backlog.processing.count,
        )
    });
    let tenth_snapshot = &snapshot[FAST].backlog;
    let mut waits: Vec<Duration> = waits
        .iter()
        .map(|w| Duration::from_nanos(w.load(Ordering::Relaxed)))
        .collect();
    waits.sort_unstable();
    Run {
        waits,
        fast_job: fast_sum / fast_count.max(1) as u32,
        tenth_job: mean(tenth_snapshot),
        tenth_dropped: tenth_snapshot.dropped,
        late,
        publish_span,
    }
}

/// The 1-minute load average, as `/proc/loadavg` has it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The scenario.
pub(crate) fn run(quick: bool) -> Report {
    let load_before = load_average();
    let (n, pairs) = if quick { (2_000, 2) } else { (20_000, 11) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let go_at = |n: usize, width: usize, tenth: Duration| {
        rt.block_on(async {
            tokio::spawn(run_once(n, width, tenth))
                .await
                .expect("round")
        })
    };
    let go = |n: usize, tenth: Duration| go_at(n, WIDTH, tenth);
    go(n / 10, FAST_JOB); // warm-up, not measured

    let mut ratios = Vec::new();
    let (mut p99_a, mut p99_b) = (Vec::new(), Vec::new());
    let (mut p50_a, mut p50_b) = (Vec::new(), Vec::new());
    let (mut max_a, mut max_b) = (Vec::new(), Vec::new());
    let (mut over_a, mut over_b) = (Vec::new(), Vec::new());
    let mut fast_jobs = Vec::new();
    let mut slow_jobs = Vec::new();
    let mut dropped = Vec::new();
    let mut late = Duration::ZERO;
    let mut spans = Vec::new();
    for pair in 0..pairs {
        let (a, b) = if pair % 2 == 0 {
            let a = go(n, FAST_JOB);
            (a, go(n, SLOW_JOB))
        } else {
            let b = go(n, SLOW_JOB);
            (go(n, FAST_JOB), b)
        };
        let (pa, pb) = (percentile_ms(&a.waits, 0.99), percentile_ms(&b.waits, 0.99));
        ratios.push(pb / pa);
        p99_a.push(pa);
        p99_b.push(pb);
        p50_a.push(percentile_ms(&a.waits, 0.5));
        p50_b.push(percentile_ms(&b.waits, 0.5));
        max_a.push(percentile_ms(&a.waits, 1.0));
        max_b.push(percentile_ms(&b.waits, 1.0));
        over_a.push(over_pct(&a.waits, Duration::from_millis(1)));
        over_b.push(over_pct(&b.waits, Duration::from_millis(1)));
        for r in [&a, &b] {
            fast_jobs.push(r.fast_job.as_secs_f64() * 1e3);
            late = late.max(r.late);
            spans.push(r.publish_span.as_secs_f64());
        }
        slow_jobs.push(b.tenth_job.as_secs_f64() * 1e3);
        dropped.push(b.tenth_dropped as f64);
    }
    let per_round: Vec<f64> = ratios.iter().map(|r| round3(*r)).collect();
    let rounds_a: Vec<f64> = p99_a.iter().map(|v| round3(*v)).collect();
    let rounds_b: Vec<f64> = p99_b.iter().map(|v| round3(*v)).collect();
    let spread = range(&ratios);
    let ratio = median(&mut ratios);
    let ms = |v: f64| (v * 1000.0).round() / 1000.0;
    let fast_job = median(&mut fast_jobs);
    let slow_job = median(&mut slow_jobs);

    let mut detail = serde_json::Map::new();
    detail.insert(
        "load_average".into(),
        format!("{load_before} at the start, {} at the end", load_average()).into(),
    );
    detail.insert("messages".into(), n.into());
    detail.insert("rate_per_s".into(), RATE.into());
    detail.insert("consumers".into(), CONSUMERS.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert("pairs".into(), pairs.into());
    detail.insert("ratios".into(), per_round.into());
    detail.insert("p99_ms_a_rounds".into(), rounds_a.into());
    detail.insert("p99_ms_b_rounds".into(), rounds_b.into());
    detail.insert("over_1ms_pct_a_rounds".into(), over_a.into());
    detail.insert("over_1ms_pct_b_rounds".into(), over_b.into());
    detail.insert(
        "ratio_range".into(),
        format!("{:.3}..{:.3}", spread.0, spread.1).into(),
    );
    detail.insert("p50_ms_a".into(), ms(median(&mut p50_a)).into());
    detail.insert("p50_ms_b".into(), ms(median(&mut p50_b)).into());
    detail.insert("max_ms_a".into(), ms(median(&mut max_a)).into());
    detail.insert("max_ms_b".into(), ms(median(&mut max_b)).into());
    detail.insert("fast_job_ms_measured".into(), ms(fast_job).into());
    detail.insert("slow_job_ms_measured".into(), ms(slow_job).into());
    detail.insert(
        "fast_load".into(),
        round3(RATE * fast_job / 1e3 / WIDTH as f64).into(),
    );
    detail.insert("slow_dropped_median".into(), median(&mut dropped).into());
    detail.insert("publish_s_median".into(), ms(median(&mut spans)).into());
    detail.insert(
        "publisher_worst_late_ms".into(),
        ms(late.as_secs_f64() * 1e3).into(),
    );
    detail.insert(
        "baseline_is".into(),
        "the same hub with the tenth consumer as fast as the others (run A); value is run B, \
         the tenth 100x slower (bound 1,000, drop-oldest); p99 over the 9 fast consumers' exact \
         waits, medians over rounds"
            .into(),
    );
    if !quick {
        // One more pair at the issue's width 8, where the fast consumers
        // are overloaded: their wait is their own backlog.
        let a = go_at(n, ISSUE_WIDTH, FAST_JOB);
        let b = go_at(n, ISSUE_WIDTH, SLOW_JOB);
        let (pa, pb) = (percentile_ms(&a.waits, 0.99), percentile_ms(&b.waits, 0.99));
        detail.insert(
            "width_8".into(),
            serde_json::json!({
                "p99_ms_a": ms(pa),
                "p99_ms_b": ms(pb),
                "ratio": round3(pb / pa),
                "fast_load": round3(RATE * a.fast_job.as_secs_f64() / ISSUE_WIDTH as f64),
                "note": "one pair, not judged: at width 8 a ~2.2 ms job cannot keep up with 5,000/s",
            }),
        );
    }
    let p99_b = median(&mut p99_b);
    Report {
        id: "B7",
        metric: "p99_wait_ms_fast_consumers",
        value: ms(p99_b),
        baseline: Some(ms(median(&mut p99_a))),
        ratio: Some(round3(ratio)),
        target: "≤ 1.1 x the p99 wait with no slow consumer (ratio)".into(),
        pass: Some(ratio <= 1.1),
        detail,
    }
}
