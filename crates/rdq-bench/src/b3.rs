//! B3: memory per pending job (u64 argument) in a paused queue, swept over
//! n, reporting the worst.
//!
//! Each n runs in a child process (`rdq-bench-b3`, beside this binary), the
//! only binary with a counting allocator: it counts the heap bytes the queue
//! asked for, and the resident set as a cross-check. Containers grow by
//! doubling, so the cost per job depends on n: the sweep includes sizes
//! just past a doubling of the pending buckets (four priorities, so a
//! bucket doubles when n passes 4 × 2^k), and the target must hold at each.

use std::process::Command;

use crate::report::Report;

/// Sizes swept: the design's list, plus the next doubling point.
const SWEEP: [u64; 6] = [100_000, 500_000, 1_000_000, 1_048_580, 2_000_000, 2_097_156];

/// The quick sweep still crosses a doubling (4 × 2^15 = 131,072).
const QUICK: [u64; 2] = [100_000, 131_076];

const ARG_BYTES: f64 = std::mem::size_of::<u64>() as f64;

fn child(n: u64) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("no path to this binary: {e}"))?;
    let b3 = exe.with_file_name("rdq-bench-b3");
    let out = Command::new(&b3).arg(n.to_string()).output().map_err(|e| {
        format!(
            "cannot run {} ({e}); build it with `cargo build --release -p rdq-bench`",
            b3.display()
        )
    })?;
    if !out.status.success() {
        return Err(format!(
            "{} {n} failed ({}): {}",
            b3.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("rdq-bench-b3 printed bad JSON: {e}"))
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
