//! B6: B1 with the stall watchdog watching every job, against B1 without it,
//! in the same process: interleaved rounds, the median of the per-round
//! watched ÷ unwatched ratios. `value` is the watched rate, `baseline` the
//! unwatched one.
//! Also the cost the watchdog adds to one poll (a micro-benchmark).

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rdq::DispatchQueue;

use crate::report::{median, Report};

const WIDTH: usize = 64;

async fn job(n: u64) -> Result<u64, Infallible> {
    Ok(black_box(n))
}

async fn queue(n: u64, watch: bool) -> Duration {
    let q = DispatchQueue::builder(job)
        .width(WIDTH)
        .name("b6")
        .watch(watch)
        .build();
    let start = Instant::now();
    let handles: Vec<_> = (0..n).map(|i| q.put(i, 0).expect("queue open")).collect();
    for h in handles {
        black_box(h.await.outcome);
    }
    start.elapsed()
}

/// Nanoseconds one poll costs, directly and through a watched task handle.
fn per_poll(n: u64) -> (f64, f64) {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut fut = pin!(std::future::poll_fn(|_| {
        black_box(0u8);
        Poll::<()>::Pending
    }));
    let handle = rdq_watchdog::TaskHandle::new();
    handle.begin(1, rdq_watchdog::intern("b6-micro"), false);
    let mut direct = Vec::new();
    let mut watched = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            let _ = black_box(fut.as_mut().poll(&mut cx));
        }
        direct.push(t.elapsed().as_nanos() as f64 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            let _ = black_box(handle.poll(fut.as_mut(), &mut cx));
        }
        watched.push(t.elapsed().as_nanos() as f64 / n as f64);
    }
    handle.end();
    (median(&mut direct), median(&mut watched))
}

pub(crate) fn run(quick: bool) -> Report {
    let (n, rounds, polls) = if quick {
        (50_000, 4, 2_000_000)
    } else {
        (1_000_000, 20, 20_000_000)
    };
    let watchdog = rdq_watchdog::Watchdog::builder().start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ratios = Vec::new();
    let mut on_rates = Vec::new();
    let mut off_rates = Vec::new();
    for round in 0..rounds {
        let (on, off) = if round % 2 == 0 {
            let off = rt.block_on(async { tokio::spawn(queue(n, false)).await.expect("round") });
            (
                rt.block_on(async { tokio::spawn(queue(n, true)).await.expect("round") }),
                off,
            )
        } else {
            let on = rt.block_on(async { tokio::spawn(queue(n, true)).await.expect("round") });
            (
                on,
                rt.block_on(async { tokio::spawn(queue(n, false)).await.expect("round") }),
            )
        };
        on_rates.push(n as f64 / on.as_secs_f64());
        off_rates.push(n as f64 / off.as_secs_f64());
        ratios.push(off.as_secs_f64() / on.as_secs_f64());
    }
    let spread = crate::report::range(&ratios);
    let ratio = median(&mut ratios);
    let (direct, watched) = per_poll(polls);
    let added = watched - direct;
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert(
        "ratio_range".into(),
        format!("{:.3}..{:.3}", spread.0, spread.1).into(),
    );
    detail.insert(
        "watchdog".into(),
        watchdog
            .as_ref()
            .map_or_else(|e| e.to_string(), |_| "running".into())
            .into(),
    );
    detail.insert(
        "poll_ns_direct".into(),
        ((direct * 100.0).round() / 100.0).into(),
    );
    detail.insert(
        "poll_ns_watched".into(),
        ((watched * 100.0).round() / 100.0).into(),
    );
    detail.insert(
        "poll_ns_added".into(),
        ((added * 100.0).round() / 100.0).into(),
    );
    detail.insert("poll_target".into(), "<= 15 ns added per poll".into());
    detail.insert(
        "baseline_is".into(),
        "the same queue, unwatched (B1's scenario), rounds interleaved".into(),
    );
    Report {
        id: "B6",
        metric: "jobs_per_s",
        value: median(&mut on_rates).round(),
        baseline: Some(median(&mut off_rates).round()),
        ratio: Some(crate::report::round3(ratio)),
        target: ">= 0.97 x unwatched (ratio) and <= 15 ns added per poll (detail.poll_ns_added)"
            .into(),
        pass: Some(ratio >= 0.97 && added <= 15.0),
        detail,
    }
}
