//! B3: memory per pending job (u64 argument) in a paused queue, swept over
//! n, reporting the worst.
//!
//! Each n runs in a child process (this binary, `--b3-child N`), the only
//! process whose allocator counts (see [`crate::alloc`]): it counts the heap
//! bytes the queue asked for, and the resident set as a cross-check. Handles
//! are dropped: a handle is 32 bytes wherever the caller keeps it, and the
//! per-job state it points to is counted either way. Containers grow by
//! doubling, so the cost per job depends on n: the sweep includes sizes
//! just past a doubling of the pending buckets (four priorities, so a
//! bucket doubles when n passes 4 × 2^k), and the target must hold at each.

use std::convert::Infallible;
use std::process::Command;

use rdq::{DispatchQueue, StopMode};

use crate::report::Report;

/// Sizes swept: the design's list, plus the next doubling point.
const SWEEP: [u64; 6] = [100_000, 500_000, 1_000_000, 1_048_580, 2_000_000, 2_097_156];

/// The quick sweep still crosses a doubling (4 × 2^15 = 131,072).
const QUICK: [u64; 2] = [100_000, 131_076];

const ARG_BYTES: f64 = std::mem::size_of::<u64>() as f64;

fn child(n: u64) -> Result<serde_json::Value, String> {
    let b3 = std::env::current_exe().map_err(|e| format!("no path to this binary: {e}"))?;
    let out = Command::new(&b3)
        .args(["--b3-child", &n.to_string()])
        .output()
        .map_err(|e| format!("cannot run {} --b3-child ({e})", b3.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} --b3-child {n} failed ({}): {}",
            b3.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("the B3 child printed bad JSON: {e}"))
}

fn per_job(total: f64, n: u64) -> f64 {
    ((total / n as f64 - ARG_BYTES) * 10.0).round() / 10.0
}

pub(crate) fn run(quick: bool) -> Result<Report, String> {
    let sweep: &[u64] = if quick { &QUICK } else { &SWEEP };
    let mut worst = f64::NEG_INFINITY;
    let mut worst_n = 0;
    let mut points = serde_json::Map::new();
    let mut handle_bytes = serde_json::Value::Null;
    for &n in sweep {
        let v = child(n)?;
        let heap = v["heap_bytes"].as_f64().ok_or("no heap_bytes")?;
        let bytes = per_job(heap, n);
        let rss = v["rss_bytes"].as_f64().map(|rss| per_job(rss, n));
        points.insert(
            n.to_string(),
            serde_json::json!({ "heap": bytes, "rss": rss }),
        );
        handle_bytes = v["handle_bytes"].clone();
        if bytes > worst {
            worst = bytes;
            worst_n = n;
        }
    }
    let mut detail = serde_json::Map::new();
    detail.insert("priorities".into(), 4.into());
    detail.insert("worst_at_n".into(), worst_n.into());
    detail.insert(
        "bytes_per_job_beyond_arg_by_n".into(),
        serde_json::Value::Object(points),
    );
    detail.insert("handle_bytes".into(), handle_bytes);
    Ok(Report {
        id: "B3",
        metric: "bytes_per_pending_job_beyond_arg",
        value: worst,
        baseline: None,
        ratio: None,
        target: "<= 128 bytes at every n of the sweep (value: the worst)".into(),
        pass: Some(worst <= 128.0),
        detail,
    })
}

fn rss_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The child: puts `n` jobs (a `u64` argument each, four priorities) into
/// a paused queue and prints one JSON object: the heap bytes the queue
/// asked for and the growth of the resident set.
pub(crate) fn child_main(n: usize) {
    crate::alloc::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (heap, rss) = rt.block_on(async {
        let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
            .paused(true)
            .width(64)
            .build();
        let heap0 = crate::alloc::live_bytes();
        let rss0 = rss_bytes();
        for i in 0..n as u64 {
            drop(q.put(i, (i % 4) as i32).expect("queue open"));
        }
        assert_eq!(q.size(), (0, n));
        let heap = crate::alloc::live_bytes() - heap0;
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
}
