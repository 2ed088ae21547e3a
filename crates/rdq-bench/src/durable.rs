//! The durable scenarios on SQLite: B4 and the peers' workloads W1 and W2.
//!
//! Every clock here stops when the work is on disk: a put when it is
//! acknowledged (after the `fdatasync` of its commit, the default
//! `SyncLevel::Full`), a run when its last outcome is committed (seen on the
//! store's finished events) and then synced (`SqliteStore::sync`). The
//! databases live on a real disk (see [`crate::disk`]); each JSON line says
//! which file system, and what is synced when.
//!
//! `RDQ_BENCH_PHASES=1` prints, for B4, when the put was acknowledged and
//! the last outcome committed and synced; for W1-process and W2, when the
//! store was open, the queue built, the last outcome committed and synced.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::{DurableQueue, HandlerError, JobContext, JobId, JobSpec, PutOptions, Store};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::disk::{fdatasync_time, fs_type, BenchDir};
use crate::report::{median, median_with_range, range, round3, Report};

/// Width of B4 and W1-process.
const WIDTH: usize = 16;

/// Width of W2.
const W2_WIDTH: usize = 100;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn open(dir: &BenchDir) -> SqliteStore {
    SqliteStore::open(dir.db(), SqliteOptions::default())
        .await
        .expect("open the bench database")
}

/// What is synced when, for the JSON.
fn synced() -> serde_json::Value {
    serde_json::json!({
        "puts": "acknowledged after fdatasync of the log holding them (SyncLevel::Full, the default)",
        "claims_and_outcomes": "committed at once; fdatasync'd within sync_interval (100 ms) or with the next put's sync",
        "clock_stops": "when the last outcome is committed and then fdatasync'd (SqliteStore::sync)",
    })
}

fn disk_detail(detail: &mut serde_json::Map<String, serde_json::Value>, dir: &BenchDir) {
    detail.insert("fs".into(), fs_type(dir.path()).into());
    detail.insert("dir".into(), dir.path().display().to_string().into());
}

/// Waits until `n` jobs have reached a final state in committed outcomes.
pub(crate) async fn await_finished(events: &mut broadcast::Receiver<JobId>, n: usize) {
    let mut seen = 0;
    while seen < n {
        match events.recv().await {
            Ok(_) => seen += 1,
            Err(RecvError::Lagged(missed)) => seen += missed as usize,
            Err(RecvError::Closed) => panic!("the store closed before {n} jobs finished"),
        }
    }
}

/// The job of B4 and W1-process (`sleep: false`) and of W2 (`sleep: true`):
/// records how long each run took.
#[derive(Clone, Default)]
pub(crate) struct Work {
    nanos: Arc<AtomicU64>,
    runs: Arc<AtomicUsize>,
}

impl Work {
    /// The job: sleeps 1 ms if `sleep`, and records how long it took.
    pub(crate) async fn run(&self, sleep: bool) {
        let start = tokio::time::Instant::now();
        if sleep {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.nanos
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.runs.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn mean(&self) -> Duration {
        let runs = self.runs.load(Ordering::Relaxed).max(1) as u64;
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed) / runs)
    }
}

async fn queue(
    store: &SqliteStore,
    width: usize,
    paused: bool,
    sleep: bool,
    work: &Work,
) -> DurableQueue<SqliteStore> {
    let work = work.clone();
    DurableQueue::builder(store.clone(), "bench")
        .width(width)
        .paused(paused)
        .handler("job", move |_: u64, _: JobContext| {
            let work = work.clone();
            async move {
                work.run(sleep).await;
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .await
        .expect("queue")
}

pub(crate) fn specs(range: std::ops::Range<u64>) -> Vec<JobSpec> {
    range
        .map(|i| JobSpec::new("job", &i, PutOptions::default()).expect("spec"))
        .collect()
}

/// Waits for `n` committed outcomes, then syncs; returns when the last
/// outcome was committed.
async fn until_durable(
    store: &SqliteStore,
    events: &mut broadcast::Receiver<JobId>,
    n: usize,
) -> Instant {
    await_finished(events, n).await;
    let finished = Instant::now();
    store.sync().await.expect("sync");
    finished
}

/// After the clock: stops the queue, checks that all `n` jobs succeeded,
/// closes the store.
async fn wind_down(q: &DurableQueue<SqliteStore>, store: &SqliteStore, n: usize) {
    q.stop(Duration::from_secs(1)).await.expect("stop");
    let counts = q.counts().await.expect("counts");
    assert_eq!(
        counts.get(&rdq_store::JobState::Succeeded).copied(),
        Some(n as u64),
        "{counts:?}"
    );
    store.close().await.expect("close");
}

pub(crate) fn phases() -> bool {
    std::env::var_os("RDQ_BENCH_PHASES").is_some()
}

/// B4: put `n` in one batch into a running queue; until the last outcome
/// is durable.
async fn b4_round(dir: &BenchDir, n: usize) -> Duration {
    let store = open(dir).await;
    let work = Work::default();
    let q = queue(&store, WIDTH, false, false, &work).await;
    let mut events = store.finished_events();
    let start = Instant::now();
    q.put_many(specs(0..n as u64)).await.expect("put");
    let put = start.elapsed();
    let finished = until_durable(&store, &mut events, n).await - start;
    let elapsed = start.elapsed();
    if phases() {
        eprintln!("put acknowledged {put:?} finished {finished:?} synced {elapsed:?}");
    }
    wind_down(&q, &store, n).await;
    elapsed
}

/// `putters` tasks each putting one job at a time, `per` each; every put's
/// latency.
async fn single_puts(dir: &BenchDir, putters: usize, per: usize) -> (Vec<Duration>, Duration) {
    let store = open(dir).await;
    let q = queue(&store, 1, true, false, &Work::default()).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..putters)
        .map(|t| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let t0 = Instant::now();
                    q.put("job", &((t * per + i) as u64), PutOptions::default())
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

pub(crate) fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i].as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn b4(quick: bool) -> Result<Report, String> {
    let (n, rounds, putters, per) = if quick {
        (5_000, 1, 16, 50)
    } else {
        (50_000, 5, 16, 500)
    };
    let rt = runtime();
    let dir = BenchDir::new("b4")?;
    let mut rates = Vec::new();
    for round in 0..rounds {
        let round_dir = BenchDir::new(&format!("b4-{round}"))?;
        rates.push(n as f64 / rt.block_on(b4_round(&round_dir, n)).as_secs_f64());
    }
    let mut detail = serde_json::Map::new();
    let value = median_with_range(&mut rates, "range_jobs_per_s", &mut detail);
    let (mut lat, wall) = rt.block_on(single_puts(&dir, putters, per));
    lat.sort();
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("synced".into(), synced());
    disk_detail(&mut detail, &dir);
    detail.insert("single_put_putters".into(), putters.into());
    detail.insert("single_put_p50_ms".into(), percentile_ms(&lat, 0.5).into());
    detail.insert("single_put_p99_ms".into(), percentile_ms(&lat, 0.99).into());
    detail.insert(
        "single_puts_per_s".into(),
        (lat.len() as f64 / wall.as_secs_f64()).round().into(),
    );
    Ok(Report {
        id: "B4",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: None,
        ratio: None,
        target: ">= 50,000 jobs/s from the put until the last outcome is durable".into(),
        pass: Some(value >= 50_000.0),
        detail,
    })
}

/// W1-single: puts awaited one by one, against one `fdatasync`, interleaved
/// in rounds.
pub(crate) fn w1_single(quick: bool) -> Result<Report, String> {
    let (per_round, rounds, probes) = if quick { (100, 2, 50) } else { (1_000, 5, 200) };
    let rt = runtime();
    let dir = BenchDir::new("w1s")?;
    let (mut put_time, mut sync_time) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    let mut all = Vec::new();
    rt.block_on(async {
        let store = open(&dir).await;
        let q = queue(&store, 1, true, false, &Work::default()).await;
        for round in 0..rounds {
            let s = fdatasync_time(dir.path(), probes);
            let start = Instant::now();
            for i in 0..per_round {
                let t0 = Instant::now();
                q.put(
                    "job",
                    &((round * per_round + i) as u64),
                    PutOptions::default(),
                )
                .await
                .expect("put");
                all.push(t0.elapsed());
            }
            let p = start.elapsed();
            put_time += p;
            sync_time += s;
            let put_rate = per_round as f64 / p.as_secs_f64();
            let sync_rate = probes as f64 / s.as_secs_f64();
            ratios.push(put_rate / sync_rate);
        }
        q.stop(Duration::from_secs(1)).await.expect("stop");
        store.close().await.expect("close");
    });
    let n = per_round * rounds;
    let value = n as f64 / put_time.as_secs_f64();
    let sync_rate = (probes * rounds) as f64 / sync_time.as_secs_f64();
    let (lo, hi) = range(&ratios);
    let ratio = median(&mut ratios);
    all.sort();
    let mut detail = serde_json::Map::new();
    detail.insert("puts".into(), n.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("ratio_range".into(), format!("{lo:.3}..{hi:.3}").into());
    detail.insert(
        "baseline_is".into(),
        "durable 4 KiB appends (write + fdatasync) to a file in the same directory, per second"
            .into(),
    );
    detail.insert("put_p50_ms".into(), percentile_ms(&all, 0.5).into());
    detail.insert("put_p99_ms".into(), percentile_ms(&all, 0.99).into());
    detail.insert("synced".into(), synced());
    disk_detail(&mut detail, &dir);
    Ok(Report {
        id: "W1-single",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: Some(sync_rate.round()),
        ratio: Some(round3(ratio)),
        target: ">= 0.8 x one fdatasync's rate (ratio)".into(),
        pass: Some(ratio >= 0.8),
        detail,
    })
}

/// W1-bulk: puts in chunks, each chunk awaited before the next.
pub(crate) fn w1_bulk(quick: bool) -> Result<Report, String> {
    let (n, chunk, rounds) = if quick {
        (5_000, 1_000, 1)
    } else {
        (50_000, 1_000, 3)
    };
    let rt = runtime();
    let mut rates = Vec::new();
    let mut fs = String::new();
    for round in 0..rounds {
        let dir = BenchDir::new(&format!("w1b-{round}"))?;
        fs = fs_type(dir.path());
        let elapsed = rt.block_on(async {
            let store = open(&dir).await;
            let q = queue(&store, 1, true, false, &Work::default()).await;
            let start = Instant::now();
            for c in (0..n as u64).step_by(chunk) {
                q.put_many(specs(c..c + chunk as u64)).await.expect("put");
            }
            let elapsed = start.elapsed();
            q.stop(Duration::from_secs(1)).await.expect("stop");
            store.close().await.expect("close");
            elapsed
        });
        rates.push(n as f64 / elapsed.as_secs_f64());
    }
    let mut detail = serde_json::Map::new();
    let value = median_with_range(&mut rates, "range_jobs_per_s", &mut detail);
    detail.insert("jobs".into(), n.into());
    detail.insert("chunk".into(), chunk.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("synced".into(), synced());
    detail.insert("fs".into(), fs.into());
    Ok(Report {
        id: "W1-bulk",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: None,
        ratio: None,
        target: "none: reported beside the peers' figures".into(),
        pass: None,
        detail,
    })
}

/// Puts `n` jobs into a fresh database and closes it.
async fn preinsert(dir: &BenchDir, n: usize) {
    let store = open(dir).await;
    let q = queue(&store, 1, true, false, &Work::default()).await;
    for c in (0..n as u64).step_by(10_000) {
        q.put_many(specs(c..(c + 10_000).min(n as u64)))
            .await
            .expect("put");
    }
    q.stop(Duration::from_secs(1)).await.expect("stop");
    store.close().await.expect("close");
}

/// From opening a store holding `n` pending jobs until the last outcome is
/// durable; with the jobs' mean duration.
async fn process_round(
    dir: &BenchDir,
    n: usize,
    width: usize,
    sleep: bool,
) -> (Duration, Duration) {
    let work = Work::default();
    let start = Instant::now();
    let store = open(dir).await;
    let opened = start.elapsed();
    let mut events = store.finished_events();
    let q = queue(&store, width, false, sleep, &work).await;
    let built = start.elapsed();
    let finished = until_durable(&store, &mut events, n).await - start;
    let elapsed = start.elapsed();
    if phases() {
        eprintln!("opened {opened:?} built {built:?} finished {finished:?} synced {elapsed:?}");
    }
    wind_down(&q, &store, n).await;
    (elapsed, work.mean())
}

/// W1-process: pre-inserted no-op jobs at width 16.
pub(crate) fn w1_process(quick: bool) -> Result<Report, String> {
    let (n, rounds) = if quick { (5_000, 1) } else { (50_000, 3) };
    let rt = runtime();
    let mut rates = Vec::new();
    let mut fs = String::new();
    for round in 0..rounds {
        let dir = BenchDir::new(&format!("w1p-{round}"))?;
        fs = fs_type(dir.path());
        rt.block_on(preinsert(&dir, n));
        let (elapsed, _) = rt.block_on(process_round(&dir, n, WIDTH, false));
        rates.push(n as f64 / elapsed.as_secs_f64());
    }
    let mut detail = serde_json::Map::new();
    let value = median_with_range(&mut rates, "range_jobs_per_s", &mut detail);
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert(
        "clock".into(),
        "from opening the store until the last outcome is durable".into(),
    );
    detail.insert("synced".into(), synced());
    detail.insert("fs".into(), fs.into());
    Ok(Report {
        id: "W1-process",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: None,
        ratio: None,
        target: ">= 50,000 jobs/s".into(),
        pass: Some(value >= 50_000.0),
        detail,
    })
}

/// W2: pre-inserted jobs each awaiting a 1 ms timer, width 100.
pub(crate) fn w2(quick: bool) -> Result<Report, String> {
    let (n, rounds) = if quick { (2_000, 1) } else { (10_000, 3) };
    let rt = runtime();
    let (mut walls, mut ideals, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut means = Vec::new();
    let mut fs = String::new();
    for round in 0..rounds {
        let dir = BenchDir::new(&format!("w2-{round}"))?;
        fs = fs_type(dir.path());
        rt.block_on(preinsert(&dir, n));
        let (wall, mean) = rt.block_on(process_round(&dir, n, W2_WIDTH, true));
        let ideal = n as f64 * mean.as_secs_f64() / W2_WIDTH as f64;
        walls.push(wall.as_secs_f64());
        ideals.push(ideal);
        means.push(mean.as_secs_f64() * 1e3);
        ratios.push(wall.as_secs_f64() / ideal);
    }
    let (lo, hi) = range(&ratios);
    let wall = median(&mut walls);
    let ideal = median(&mut ideals);
    let ratio = median(&mut ratios);
    let mut detail = serde_json::Map::new();
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), W2_WIDTH.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("ratio_range".into(), format!("{lo:.3}..{hi:.3}").into());
    detail.insert(
        "ideal_is".into(),
        "jobs x their mean measured duration / width".into(),
    );
    detail.insert("mean_job_ms".into(), round3(median(&mut means)).into());
    detail.insert(
        "clock".into(),
        "from opening the store until the last outcome is durable".into(),
    );
    detail.insert("synced".into(), synced());
    detail.insert("fs".into(), fs.into());
    Ok(Report {
        id: "W2",
        metric: "wall_s",
        value: (wall * 1e4).round() / 1e4,
        baseline: Some((ideal * 1e4).round() / 1e4),
        ratio: Some(round3(ratio)),
        target: "wall <= 1.25 x ideal (ratio)".into(),
        pass: Some(ratio <= 1.25),
        detail,
    })
}
