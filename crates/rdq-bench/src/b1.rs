//! B1: a million no-op jobs through a DispatchQueue of width 64, against
//! Tokio `Semaphore` + `spawn` + `oneshot` running the same job function.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdq::DispatchQueue;
use tokio::sync::{oneshot, Semaphore};

use crate::report::{median, Report};

const WIDTH: usize = 64;

async fn job(n: u64) -> Result<u64, Infallible> {
    Ok(black_box(n))
}

async fn baseline(n: u64) -> Duration {
    let sem = Arc::new(Semaphore::new(WIDTH));
    let start = Instant::now();
    let mut rxs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let r = job(i).await;
            drop(permit);
            let _ = tx.send(r);
        });
        rxs.push(rx);
    }
    for rx in rxs {
        let _ = black_box(rx.await.expect("job ran"));
    }
    start.elapsed()
}

async fn rdq(n: u64) -> Duration {
    let q = DispatchQueue::builder(job).width(WIDTH).build();
    let start = Instant::now();
    let handles: Vec<_> = (0..n).map(|i| q.put(i, 0).expect("queue open")).collect();
    for h in handles {
        black_box(h.await.outcome);
    }
    start.elapsed()
}

pub(crate) fn run(quick: bool) -> Report {
    let (n, rounds) = if quick { (50_000, 3) } else { (1_000_000, 7) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut ratios = Vec::new();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for round in 0..rounds {
        // Interleave, and alternate which goes first.
        let (a, b) = if round % 2 == 0 {
            let b = rt.block_on(async { tokio::spawn(baseline(n)).await.unwrap() });
            let a = rt.block_on(async { tokio::spawn(rdq(n)).await.unwrap() });
            (a, b)
        } else {
            let a = rt.block_on(async { tokio::spawn(rdq(n)).await.unwrap() });
            let b = rt.block_on(async { tokio::spawn(baseline(n)).await.unwrap() });
            (a, b)
        };
        let a = n as f64 / a.as_secs_f64();
        let b = n as f64 / b.as_secs_f64();
        ours.push(a);
        theirs.push(b);
        ratios.push(a / b);
    }
    let value = median(&mut ours);
    let baseline = median(&mut theirs);
    let ratio = median(&mut ratios);
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("width".into(), WIDTH.into());
    Report {
        id: "B1",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: Some(baseline.round()),
        ratio: Some((ratio * 1000.0).round() / 1000.0),
        target: ">= 0.8 x baseline and >= 1,000,000 jobs/s".into(),
        pass: ratio >= 0.8 && value >= 1_000_000.0,
        detail,
    }
}
