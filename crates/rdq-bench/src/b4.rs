//! B4: a durable queue on SQLite with fsync on (sync level Full): put 50,000
//! jobs in one batch, then run them as no-ops at width 16; jobs per second
//! end to end (from the put until every outcome is committed). Also the
//! latency of single puts (each acknowledged only after its fsync) with 16
//! concurrent putters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdq_store::sqlite::{SqliteOptions, SqliteStore, SyncLevel};
use rdq_store::{DurableQueue, HandlerError, JobContext, JobSpec, PutOptions, Store};
use tokio::sync::Notify;

use crate::report::{median, Report};

const WIDTH: usize = 16;
const PUTTERS: usize = 16;

struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> TempDb {
        let dir = std::env::temp_dir().join(format!(
            "rdq-bench-{tag}-{}-{}",
            std::process::id(),
            fastrand_u64()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDb(dir)
    }
    fn path(&self) -> PathBuf {
        self.0.join("bench.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_u64() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

fn options(sync: SyncLevel) -> SqliteOptions {
    SqliteOptions {
        sync,
        ..SqliteOptions::default()
    }
}

async fn end_to_end(n: usize) -> Duration {
    let db = TempDb::new("b4");
    let store = SqliteStore::open(db.path(), options(SyncLevel::Full))
        .await
        .expect("open");
    let done = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(Notify::new());
    let (d, a) = (done.clone(), all_done.clone());
    let q = DurableQueue::builder(store.clone(), "bench")
        .width(WIDTH)
        .handler("noop", move |_: u64, _: JobContext| {
            let (d, a) = (d.clone(), a.clone());
            async move {
                if d.fetch_add(1, Ordering::Relaxed) + 1 == n {
                    a.notify_one();
                }
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .await
        .expect("queue");
    let jobs: Vec<JobSpec> = (0..n as u64)
        .map(|i| JobSpec::new("noop", &i, PutOptions::default()).expect("spec"))
        .collect();
    let start = Instant::now();
    q.put_many(jobs).await.expect("put");
    if std::env::var_os("RDQ_BENCH_PHASES").is_some() {
        eprintln!("b4: put {:?}", start.elapsed());
    }
    all_done.notified().await;
    store.flush().await.expect("flush");
    let elapsed = start.elapsed();
    q.stop(Duration::from_secs(1)).await.expect("stop");
    let counts = q.counts().await.expect("counts");
    assert_eq!(
        counts.get(&rdq_store::JobState::Succeeded).copied(),
        Some(n as u64),
        "{counts:?}"
    );
    store.close().await.expect("close");
    elapsed
}

/// `PUTTERS` tasks each putting one job at a time for `per` puts.
async fn single_puts(per: usize) -> (Vec<Duration>, Duration) {
    let db = TempDb::new("b4p");
    let store = SqliteStore::open(db.path(), options(SyncLevel::Full))
        .await
        .expect("open");
    let q = DurableQueue::builder(store.clone(), "bench")
        .paused(true)
        .handler("noop", |_: u64, _: JobContext| async {
            Ok::<_, HandlerError>(())
        })
        .build()
        .await
        .expect("queue");
    let start = Instant::now();
    let tasks: Vec<_> = (0..PUTTERS)
        .map(|t| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let t0 = Instant::now();
                    q.put("noop", &((t * per + i) as u64), PutOptions::default())
                        .await
                        .expect("put");
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("putter"));
    }
    let wall = start.elapsed();
    q.stop(Duration::from_secs(1)).await.expect("stop");
    store.close().await.expect("close");
    (all, wall)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

pub(crate) fn run(quick: bool) -> Report {
    let (n, rounds, per) = if quick {
        (5_000, 1, 50)
    } else {
        (50_000, 5, 500)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rates: Vec<f64> = (0..rounds)
        .map(|_| n as f64 / rt.block_on(end_to_end(n)).as_secs_f64())
        .collect();
    let value = median(&mut rates);
    let (mut lat, wall) = rt.block_on(single_puts(per));
    lat.sort();
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert(
        "sync".into(),
        "full (acknowledged after fdatasync of the log)".into(),
    );
    detail.insert("rounds".into(), rounds.into());
    detail.insert("single_put_putters".into(), PUTTERS.into());
    detail.insert(
        "single_put_p50_ms".into(),
        ((percentile(&lat, 0.5) * 1000.0).round() / 1000.0).into(),
    );
    detail.insert(
        "single_put_p99_ms".into(),
        ((percentile(&lat, 0.99) * 1000.0).round() / 1000.0).into(),
    );
    detail.insert(
        "single_puts_per_s".into(),
        ((lat.len() as f64 / wall.as_secs_f64()).round()).into(),
    );
    Report {
        id: "B4",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: None,
        ratio: None,
        target: ">= 50,000 jobs/s end to end, fsync on".into(),
        pass: value >= 50_000.0,
        detail,
    }
}
