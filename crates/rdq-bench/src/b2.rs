//! B2: 20,000 jobs each awaiting a 1 ms timer, width 100.
//!
//! Two figures, both against targets DESIGN.md §9 states:
//!
//! * `ratio` = wall ÷ ideal, where ideal = N × (the jobs' mean measured
//!   duration) ÷ width: what width-100 dispatch of these very jobs would take
//!   with zero dispatch cost. Each job measures its own duration. Tokio
//!   rounds a relative 1 ms sleep up to the next 1 ms tick, so a job lasts
//!   about 2 ms: that is the job's cost, and the ideal counts it, rather
//!   than pretending the job took 1 ms (which no dispatcher could reach).
//!   Target ≤ 1.15.
//! * `detail.ratio_vs_plain_tasks` = wall ÷ the wall of `width` plain tasks
//!   running the same jobs back to back (the same run, rounds interleaved).
//!   Target ≤ 1.05.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdq::DispatchQueue;

use crate::report::{median, range, round3, Report};

const WIDTH: usize = 100;

/// The job: awaits a 1 ms timer; adds how long it took to `spent`.
async fn job(spent: Arc<AtomicU64>) -> Result<(), Infallible> {
    let start = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1)).await;
    spent.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

/// The queue's wall time, and the jobs' mean duration.
async fn rdq(n: u64) -> (Duration, Duration) {
    let spent = Arc::new(AtomicU64::new(0));
    let q = DispatchQueue::builder(job).width(WIDTH).build();
    let start = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|_| q.put(spent.clone(), 0).expect("queue open"))
        .collect();
    for h in handles {
        assert!(h.await.outcome.is_ok());
    }
    let wall = start.elapsed();
    (
        wall,
        Duration::from_nanos(spent.load(Ordering::Relaxed) / n),
    )
}

/// `WIDTH` tasks, each running its share of the jobs back to back.
async fn plain_tasks(n: u64) -> Duration {
    let spent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let per_task = n / WIDTH as u64;
    let tasks: Vec<_> = (0..WIDTH)
        .map(|_| {
            let spent = spent.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    job(spent.clone()).await.expect("infallible");
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
    let (n, rounds) = if quick { (2_000, 3) } else { (20_000, 7) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut walls, mut ideals, mut means) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vs_ideal, mut vs_plain) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let ((wall, mean), plain) = if round % 2 == 0 {
            let p = rt.block_on(plain_tasks(n));
            (rt.block_on(rdq(n)), p)
        } else {
            let w = rt.block_on(rdq(n));
            (w, rt.block_on(plain_tasks(n)))
        };
        let ideal = n as f64 * mean.as_secs_f64() / WIDTH as f64;
        walls.push(wall.as_secs_f64());
        ideals.push(ideal);
        means.push(mean.as_secs_f64() * 1e3);
        vs_ideal.push(wall.as_secs_f64() / ideal);
        vs_plain.push(wall.as_secs_f64() / plain.as_secs_f64());
    }
    let (lo, hi) = range(&vs_ideal);
    let (plo, phi) = range(&vs_plain);
    let wall = median(&mut walls);
    let ideal = median(&mut ideals);
    let ratio = median(&mut vs_ideal);
    let ratio_plain = median(&mut vs_plain);
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert(
        "ideal_is".into(),
        "jobs x their mean measured duration / width".into(),
    );
    detail.insert("mean_job_ms".into(), round3(median(&mut means)).into());
    detail.insert("ratio_range".into(), format!("{lo:.3}..{hi:.3}").into());
    detail.insert("ratio_vs_plain_tasks".into(), round3(ratio_plain).into());
    detail.insert(
        "ratio_vs_plain_tasks_range".into(),
        format!("{plo:.3}..{phi:.3}").into(),
    );
    detail.insert(
        "plain_tasks_are".into(),
        "width tasks running the same jobs back to back (zero dispatch cost)".into(),
    );
    Report {
        id: "B2",
        metric: "wall_s",
        value: (wall * 1e4).round() / 1e4,
        baseline: Some((ideal * 1e4).round() / 1e4),
        ratio: Some(round3(ratio)),
        target:
            "wall <= 1.15 x ideal (ratio) and <= 1.05 x plain tasks (detail.ratio_vs_plain_tasks)"
                .into(),
        pass: Some(ratio <= 1.15 && ratio_plain <= 1.05),
        detail,
    }
}
