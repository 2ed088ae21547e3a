//! B3: memory of 1,000,000 pending jobs (u64 argument) in a paused queue.
//!
//! Counts heap bytes through the counting global allocator (what the queue
//! asked for) and, as a cross-check, the process's resident memory (what it
//! cost, allocator overhead included). Handles are dropped: a handle is 32
//! bytes wherever the caller keeps it, and the per-job state it points to is
//! counted here either way.

use std::convert::Infallible;

use rdq::{DispatchQueue, StopMode};

use crate::alloc::live_bytes;
use crate::report::Report;

fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub(crate) fn run(quick: bool) -> Report {
    let n: usize = if quick { 100_000 } else { 1_000_000 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (heap, rss) = rt.block_on(async {
        let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
            .paused(true)
            .width(64)
            .build();
        let heap0 = live_bytes();
        let rss0 = rss_bytes();
        for i in 0..n as u64 {
            drop(q.put(i, (i % 4) as i32).expect("queue open"));
        }
        assert_eq!(q.size(), (0, n));
        let heap = live_bytes() - heap0;
        let rss = rss_bytes().zip(rss0).map(|(a, b)| a - b);
        let unrun = q.stop(StopMode::Wait).await;
        assert_eq!(unrun.len(), n);
        (heap, rss)
    });
    let arg = std::mem::size_of::<u64>() as f64;
    let per_job = heap as f64 / n as f64 - arg;
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("priorities".into(), 4.into());
    if let Some(rss) = rss {
        detail.insert(
            "rss_bytes_per_job_beyond_arg".into(),
            ((rss as f64 / n as f64 - arg) * 10.0)
                .round()
                .div_euclid(10.0)
                .into(),
        );
    }
    detail.insert(
        "handle_bytes".into(),
        std::mem::size_of::<rdq::JobHandle<u64, u64, Infallible>>().into(),
    );
    Report {
        id: "B3",
        metric: "bytes_per_pending_job_beyond_arg",
        value: (per_job * 10.0).round() / 10.0,
        baseline: None,
        ratio: None,
        target: "<= 128 bytes".into(),
        pass: per_job <= 128.0,
        detail,
    }
}
