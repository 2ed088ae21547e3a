//! B1: a million no-op jobs through a DispatchQueue of width 64, against two
//! comparators running the same job function in the same process:
//!
//! * the **bare pool** (the design target): `width` long-lived tasks pulling
//!   boxed closures from one unbounded channel, each closure running the job
//!   and sending its result on a oneshot. The same idea as the queue, with
//!   none of its features (no priorities, no resizing, no cancel, no
//!   timestamps);
//! * **Semaphore + spawn + oneshot**: a Tokio task per job, `width` permits.
//!
//! Rounds are interleaved (the order rotates), and each ratio is the median
//! of the per-round ratios.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdq::DispatchQueue;
use tokio::sync::{oneshot, Semaphore};

use crate::report::{median, round3, Report};

const WIDTH: usize = 64;

async fn job(n: u64) -> Result<u64, Infallible> {
    Ok(black_box(n))
}

type Task = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

async fn bare_pool(n: u64) -> Duration {
    let (tx, rx) = async_channel::unbounded::<Task>();
    let workers: Vec<_> = (0..WIDTH)
        .map(|_| {
            let rx = rx.clone();
            tokio::spawn(async move {
                while let Ok(task) = rx.recv().await {
                    task().await;
                }
            })
        })
        .collect();
    let start = Instant::now();
    let mut rxs = Vec::with_capacity(n as usize);
    for i in 0..n {
        let (done, rx) = oneshot::channel();
        let task: Task = Box::new(move || {
            Box::pin(async move {
                let _ = done.send(job(i).await);
            })
        });
        tx.send(task).await.expect("pool open");
        rxs.push(rx);
    }
    for rx in rxs {
        let _ = black_box(rx.await.expect("job ran"));
    }
    let elapsed = start.elapsed();
    drop(tx);
    for w in workers {
        w.await.expect("worker");
    }
    elapsed
}

async fn semaphore(n: u64) -> Duration {
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

#[derive(Clone, Copy)]
enum Who {
    Rdq,
    Bare,
    Semaphore,
}

pub(crate) fn run(quick: bool) -> Report {
    let (n, rounds) = if quick { (50_000, 3) } else { (1_000_000, 9) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let time = |who: Who| {
        let d = rt.block_on(async move {
            match who {
                Who::Rdq => tokio::spawn(rdq(n)).await,
                Who::Bare => tokio::spawn(bare_pool(n)).await,
                Who::Semaphore => tokio::spawn(semaphore(n)).await,
            }
            .expect("round")
        });
        n as f64 / d.as_secs_f64()
    };
    let orders = [
        [Who::Rdq, Who::Bare, Who::Semaphore],
        [Who::Bare, Who::Semaphore, Who::Rdq],
        [Who::Semaphore, Who::Rdq, Who::Bare],
    ];
    let (mut ours, mut bares, mut sems) = (Vec::new(), Vec::new(), Vec::new());
    let (mut vs_bare, mut vs_sem) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut rates = [0.0; 3];
        for who in orders[round % orders.len()] {
            rates[who as usize] = time(who);
        }
        let [a, b, s] = rates;
        ours.push(a);
        bares.push(b);
        sems.push(s);
        vs_bare.push(a / b);
        vs_sem.push(a / s);
    }
    let (lo, hi) = crate::report::range(&vs_bare);
    let value = median(&mut ours);
    let bare = median(&mut bares);
    let ratio = median(&mut vs_bare);
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert(
        "baseline_is".into(),
        "bare pool: width long-lived tasks pulling boxed closures from one unbounded async-channel"
            .into(),
    );
    detail.insert("ratio_range".into(), format!("{lo:.3}..{hi:.3}").into());
    detail.insert(
        "semaphore_jobs_per_s".into(),
        median(&mut sems).round().into(),
    );
    detail.insert(
        "ratio_vs_semaphore".into(),
        round3(median(&mut vs_sem)).into(),
    );
    Report {
        id: "B1",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: Some(bare.round()),
        ratio: Some(round3(ratio)),
        target: ">= 0.8 x the bare pool (ratio) and >= 1,000,000 jobs/s (value)".into(),
        pass: Some(ratio >= 0.8 && value >= 1_000_000.0),
        detail,
    }
}
