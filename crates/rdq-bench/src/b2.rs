//! B2: 20,000 jobs each awaiting a 1 ms timer, width 100.
//!
//! The design's ideal is `N × 1 ms / width` (200 ms). Tokio's timer has 1 ms
//! ticks and rounds a deadline up to the next tick, so a job that starts just
//! after a tick and sleeps 1 ms wakes two ticks later: no dispatcher can reach
//! that ideal with `tokio::time::sleep`. So this scenario also measures, in
//! the same run, the ideal *for this timer*: `width` plain tasks each awaiting
//! `N / width` of the same sleeps back to back (zero dispatch cost), and
//! reports the queue's wall time against both.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use rdq::DispatchQueue;

use crate::report::{median, Report};

const WIDTH: usize = 100;

async fn job(n: u64) -> Result<u64, Infallible> {
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(n)
}

async fn rdq(n: u64) -> Duration {
    let q = DispatchQueue::builder(job).width(WIDTH).build();
    let start = Instant::now();
    let handles: Vec<_> = (0..n).map(|i| q.put(i, 0).expect("queue open")).collect();
    for h in handles {
        assert!(h.await.outcome.is_ok());
    }
    start.elapsed()
}

/// `WIDTH` tasks, each running its share of jobs back to back.
async fn timer_ideal(n: u64) -> Duration {
    let start = Instant::now();
    let per_task = n / WIDTH as u64;
    let tasks: Vec<_> = (0..WIDTH)
        .map(|_| {
            tokio::spawn(async move {
                for i in 0..per_task {
                    job(i).await.expect("infallible");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task ran");
    }
    start.elapsed()
}

pub(crate) fn run(quick: bool) -> Report {
    let (n, rounds) = if quick { (2_000, 3) } else { (20_000, 5) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut walls = Vec::new();
    let mut ideals = Vec::new();
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (wall, ideal) = if round % 2 == 0 {
            let i = rt.block_on(timer_ideal(n));
            (rt.block_on(rdq(n)), i)
        } else {
            let w = rt.block_on(rdq(n));
            (w, rt.block_on(timer_ideal(n)))
        };
        walls.push(wall.as_secs_f64());
        ideals.push(ideal.as_secs_f64());
        ratios.push(wall.as_secs_f64() / ideal.as_secs_f64());
    }
    let wall = median(&mut walls);
    let timer_ideal = median(&mut ideals);
    let ratio = median(&mut ratios);
    let design_ideal = n as f64 * 0.001 / WIDTH as f64;
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert("design_ideal_s".into(), design_ideal.into());
    detail.insert(
        "wall_over_design_ideal".into(),
        ((wall / design_ideal * 1000.0).round() / 1000.0).into(),
    );
    detail.insert(
        "baseline_is".into(),
        "width tasks awaiting the same 1 ms sleeps back to back (zero dispatch cost)".into(),
    );
    Report {
        id: "B2",
        metric: "wall_s",
        value: (wall * 1e4).round() / 1e4,
        baseline: Some((timer_ideal * 1e4).round() / 1e4),
        ratio: Some((ratio * 1000.0).round() / 1000.0),
        target: "wall <= 1.15 x ideal".into(),
        pass: ratio <= 1.15,
        detail,
    }
}
