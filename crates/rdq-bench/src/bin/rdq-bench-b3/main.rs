//! The measuring child of benchmark B3 (`rdq-bench B3` runs it; not a tool).
//!
//! ```text
//! rdq-bench-b3 <n>
//! ```
//!
//! Puts `n` jobs (a `u64` argument each, four priorities) into a paused
//! queue and prints one JSON object: the heap bytes the queue asked for
//! (counted by this binary's global allocator, which only this binary has,
//! so that no other scenario pays for the counting) and the growth of the
//! resident set, as a cross-check that includes the allocator's overhead.
//! Handles are dropped: a handle is 32 bytes wherever the caller keeps it,
//! and the per-job state it points to is counted either way.

mod alloc;

use std::convert::Infallible;
use std::process::ExitCode;

use rdq::{DispatchQueue, StopMode};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn main() -> ExitCode {
    let n: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: rdq-bench-b3 <number of jobs>");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (heap, rss) = rt.block_on(async {
        let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
            .paused(true)
            .width(64)
            .build();
        let heap0 = alloc::live_bytes();
        let rss0 = rss_bytes();
        for i in 0..n as u64 {
            drop(q.put(i, (i % 4) as i32).expect("queue open"));
        }
        assert_eq!(q.size(), (0, n));
        let heap = alloc::live_bytes() - heap0;
        let rss = rss_bytes().zip(rss0).map(|(a, b)| a - b);
        let unrun = q.stop(StopMode::Wait).await;
        assert_eq!(unrun.len(), n);
        (heap, rss)
    });
    println!(
        "{}",
        serde_json::json!({
            "n": n,
            "heap_bytes": heap,
            "rss_bytes": rss,
            "handle_bytes": std::mem::size_of::<rdq::JobHandle<u64, u64, Infallible>>(),
        })
    );
    ExitCode::SUCCESS
}
