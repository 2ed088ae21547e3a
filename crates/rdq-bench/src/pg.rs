//! The durable scenarios on PostgreSQL: B5 and the peers' workloads W1 and
//! W2 (`W1-pg-single`, `W1-pg-bulk`, `W1-pg-process`, `W2-pg`), the
//! counterparts of [`crate::durable`] on a [`PgStore`].
//!
//! The database is `RDQ_BENCH_DATABASE_URL` (default
//! [`DEFAULT_URL`]); every round works in a fresh schema
//! (`rdq_bench_<random hex>`), dropped after it. A server that cannot be
//! reached ends the scenario with an error saying how to start it.
//!
//! Every clock stops when the work is durable: a put when it is
//! acknowledged (committed with the server's `synchronous_commit`), a run
//! when its last outcome is committed (seen on the store's finished events)
//! and the server's write-ahead log is flushed past it ([`PgStore::sync`]).
//! Each JSON line says what is synced when, and B5 puts the server's commit
//! settings and its rate of single-row synchronous commits beside its
//! figures (`pg_test_fsync`'s question, asked through the server).
//!
//! B5 also runs 2 and 3 node processes: this binary again, as
//! `--b5-node <url> <schema> <node>` (see [`node_main`]).
//!
//! `RDQ_BENCH_PHASES=1` prints each round's phases on stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime};

use rdq_store::postgres::{PgOptions, PgStore};
use rdq_store::{
    DurableQueue, HandlerError, JobContext, JobState, NewJob, PutOptions, QueueRecord, Store,
    Timestamp,
};
use tokio_postgres::NoTls;

use crate::durable::{await_finished, percentile_ms, phases, runtime, specs, Work};
use crate::report::{median, median_with_range, range, round3, Report};

/// The database when `RDQ_BENCH_DATABASE_URL` is not set.
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The queue every scenario runs.
const QUEUE: &str = "bench";

/// Width of B5 and W1-pg-process.
const WIDTH: usize = 16;

/// Width of W2-pg.
const W2_WIDTH: usize = 100;

/// Single-row synchronous commits timed for the disk's fsync rate (B5).
const COMMIT_PROBES: usize = 200;

/// The longest a multi-node round may take before it is given up.
const NODES_TIMEOUT: Duration = Duration::from_secs(300);

fn url() -> String {
    std::env::var("RDQ_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The URL as a message shows it: a password in it replaced by `***`.
fn shown(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}***{}", &url[..start + colon + 1], &url[start + at..])
        }
        _ => url.to_owned(),
    }
}

fn unreachable(url: &str, e: &tokio_postgres::Error) -> String {
    // With its causes: "error connecting to server: Connection refused".
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    format!(
        "PostgreSQL is not reachable at {} ({text}): start it (`sudo service postgresql start`) or point RDQ_BENCH_DATABASE_URL at one",
        shown(url)
    )
}

/// `what failed: why`, for `map_err`.
fn fail<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> String {
    move |e| format!("{what}: {e}")
}

/// A plain connection, outside any store.
async fn sql(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| unreachable(url, &e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A fresh schema name, and its `DROP SCHEMA … CASCADE` when this goes
/// (also when a round fails half-way).
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str) -> Schema {
        Schema {
            url: url.to_owned(),
            name: format!("rdq_bench_{:016x}", fastrand::u64(..)),
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // On a thread of its own: this runs inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok(client) = sql(&url).await {
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn options(schema: &str, node: &str, synchronous_outcomes: bool) -> PgOptions {
    PgOptions {
        schema: schema.to_owned(),
        application_name: node.to_owned(),
        synchronous_outcomes,
        ..PgOptions::default()
    }
}

/// Opens a store on `schema` (created and migrated if new).
async fn open(
    url: &str,
    schema: &str,
    node: &str,
    synchronous_outcomes: bool,
) -> Result<PgStore, String> {
    PgStore::connect(url, options(schema, node, synchronous_outcomes))
        .await
        .map_err(fail("connect the store"))
}

/// A `DurableQueue` named [`QUEUE`] on `store`, its handler `job` doing
/// [`Work::run`].
async fn queue(
    store: &PgStore,
    node: &str,
    width: usize,
    paused: bool,
    sleep: bool,
    work: &Work,
) -> Result<DurableQueue<PgStore>, String> {
    let work = work.clone();
    DurableQueue::builder(store.clone(), QUEUE)
        .width(width)
        .paused(paused)
        .node(node)
        .handler("job", move |_: u64, _: JobContext| {
            let work = work.clone();
            async move {
                work.run(sleep).await;
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .await
        .map_err(fail("build the queue"))
}

/// `n` no-op jobs as the store takes them (as `DurableQueue::put_many`
/// makes them: the queue's default 20 attempts).
fn new_jobs(n: usize) -> Vec<NewJob> {
    (0..n as u64)
        .map(|i| NewJob {
            queue: QUEUE.to_owned(),
            kind: "job".to_owned(),
            args: i.to_string(),
            priority: 0,
            run_at: None,
            max_attempts: 20,
            key: None,
            timeout: None,
        })
        .collect()
}

/// Puts `n` jobs in one call; how long until they were acknowledged.
async fn put_batch(store: &PgStore, n: usize) -> Result<Duration, String> {
    let start = Instant::now();
    let inserted = store
        .insert_many(new_jobs(n), Timestamp::from(SystemTime::now()))
        .await
        .map_err(fail("put"))?;
    if inserted.len() != n {
        return Err(format!("put {n} jobs, {} acknowledged", inserted.len()));
    }
    Ok(start.elapsed())
}

/// Checks that all `n` jobs of the queue succeeded.
async fn all_succeeded(store: &PgStore, n: usize) -> Result<(), String> {
    let counts = store.counts(QUEUE).await.map_err(fail("counts"))?;
    if counts.get(&JobState::Succeeded).copied() != Some(n as u64) {
        return Err(format!("expected {n} jobs succeeded, found {counts:?}"));
    }
    Ok(())
}

/// After the clock: stops the queue, checks that all `n` jobs succeeded,
/// closes the store.
async fn wind_down(q: &DurableQueue<PgStore>, store: &PgStore, n: usize) -> Result<(), String> {
    q.stop(Duration::from_secs(1))
        .await
        .map_err(fail("stop the queue"))?;
    all_succeeded(store, n).await?;
    store.close().await.map_err(fail("close the store"))
}

/// What is synced when, for the JSON.
fn synced(synchronous_outcomes: bool) -> serde_json::Value {
    serde_json::json!({
        "puts": "acknowledged once committed with the server's synchronous_commit (see server.synchronous_commit)",
        "claims_and_outcomes": if synchronous_outcomes {
            "committed with the server's synchronous_commit (PgOptions::synchronous_outcomes)"
        } else {
            "committed with synchronous_commit = off: the server flushes its WAL within wal_writer_delay (200 ms by default)"
        },
        "clock_stops": "when the last outcome is committed and the WAL flushed past it (PgStore::sync: one synchronous commit)",
    })
}

/// The server's commit settings, and the rate of single-row synchronous
/// commits on one connection: what one durable commit costs on this disk.
async fn server_context(url: &str, schema: &str) -> Result<serde_json::Value, String> {
    let client = sql(url).await?;
    let show = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one(&format!("SHOW {name}"), &[])
                .await
                .map_err(fail("SHOW"))?;
            Ok::<String, String>(row.get(0))
        }
    };
    let synchronous_commit = show("synchronous_commit").await?;
    let wal_sync_method = show("wal_sync_method").await?;
    let fsync = show("fsync").await?;
    let rate = CommitProbe::create(&client, schema)
        .await?
        .rate(&client, COMMIT_PROBES)
        .await?;
    Ok(serde_json::json!({
        "synchronous_commit": synchronous_commit,
        "wal_sync_method": wal_sync_method,
        "fsync": fsync,
        "single_row_commits_per_s": rate.round(),
        "commits_timed": COMMIT_PROBES,
        "commits_are": "INSERT of one row into a plain table, autocommit, one connection, synchronous_commit as the server has it",
    }))
}

/// A plain one-column table for timing bare synchronous commits.
struct CommitProbe {
    insert: tokio_postgres::Statement,
}

impl CommitProbe {
    /// Creates the table in `schema` (creating the schema if needed).
    async fn create(client: &tokio_postgres::Client, schema: &str) -> Result<CommitProbe, String> {
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; \
                 CREATE TABLE IF NOT EXISTS {schema}.bench_commits (id bigserial PRIMARY KEY, x bigint NOT NULL)"
            ))
            .await
            .map_err(fail("create the commit probe table"))?;
        let insert = client
            .prepare(&format!(
                "INSERT INTO {schema}.bench_commits (x) VALUES ($1)"
            ))
            .await
            .map_err(fail("prepare the commit probe"))?;
        Ok(CommitProbe { insert })
    }

    /// How long `n` commits took, one after the other.
    async fn time(&self, client: &tokio_postgres::Client, n: usize) -> Result<Duration, String> {
        let start = Instant::now();
        for i in 0..n as i64 {
            client
                .execute(&self.insert, &[&i])
                .await
                .map_err(fail("commit probe"))?;
        }
        Ok(start.elapsed())
    }

    /// Commits per second over `n`.
    async fn rate(&self, client: &tokio_postgres::Client, n: usize) -> Result<f64, String> {
        Ok(n as f64 / self.time(client, n).await?.as_secs_f64())
    }
}

/// Fails at once, saying how to start it, when the server is unreachable.
fn reachable(rt: &tokio::runtime::Runtime, url: &str) -> Result<(), String> {
    rt.block_on(async {
        let client = sql(url).await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| unreachable(url, &e))?;
        Ok(())
    })
}

// ---------------------------------------------------------------- B5 ----

/// One rdq round of B5: put `n` in one batch, then from building the queue
/// until the last outcome is durable. Returns (put, run, jobs per claim
/// round).
async fn b5_round(
    url: &str,
    n: usize,
    synchronous_outcomes: bool,
) -> Result<(Duration, Duration, f64), String> {
    let schema = Schema::new(url);
    let store = open(url, &schema.name, "b5", synchronous_outcomes).await?;
    let put = put_batch(&store, n).await?;
    let work = Work::default();
    let mut events = store.finished_events();
    let start = Instant::now();
    let q = queue(&store, "b5", WIDTH, false, false, &work).await?;
    let built = start.elapsed();
    await_finished(&mut events, n).await;
    let finished = start.elapsed();
    store.sync().await.map_err(fail("sync"))?;
    let run = start.elapsed();
    if phases() {
        eprintln!(
            "B5 rdq (synchronous outcomes: {synchronous_outcomes}): put {put:?}; built {built:?} finished {finished:?} synced {run:?}"
        );
    }
    let stats = q.producer_stats();
    let per_round = stats.claimed as f64 / stats.rounds.max(1) as f64;
    wind_down(&q, &store, n).await?;
    Ok((put, run, per_round))
}

/// One baseline round of B5: the same `n` put, the queue's settings saved
/// as `DurableQueue` saves them, then the store's claim and outcome
/// statements in a bare loop on one connection until the queue is drained
/// and durable.
async fn b5_bare_round(url: &str, n: usize) -> Result<Duration, String> {
    let schema = Schema::new(url);
    let store = open(url, &schema.name, "bare", false).await?;
    put_batch(&store, n).await?;
    let settings =
        serde_json::json!({"width": WIDTH, "paused": false, "rate": null, "timeout_ms": null});
    store
        .save_queue(QueueRecord {
            name: QUEUE.to_owned(),
            declared: settings.clone(),
            settings,
        })
        .await
        .map_err(fail("save the queue's settings"))?;
    let start = Instant::now();
    let ran = store
        .bench_bare_loop(QUEUE, WIDTH, "bare")
        .await
        .map_err(fail("bare loop"))?;
    let drained = start.elapsed();
    store.sync().await.map_err(fail("sync"))?;
    let elapsed = start.elapsed();
    if phases() {
        eprintln!("B5 bare: drained {drained:?} synced {elapsed:?}");
    }
    if ran != n as u64 {
        return Err(format!("the bare loop ran {ran} jobs of {n}"));
    }
    all_succeeded(&store, n).await?;
    store.close().await.map_err(fail("close the store"))?;
    Ok(elapsed)
}

/// Node processes, killed (and reaped) when this goes.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One multi-node round of B5: `n` put in one batch, then `nodes` node
/// processes started, until every job succeeded and is durable. The clock
/// starts when the first process is spawned. Returns the elapsed time and
/// when the last node said `ready` (from the spawn).
async fn b5_nodes_round(url: &str, n: usize, nodes: usize) -> Result<(Duration, Duration), String> {
    let schema = Schema::new(url);
    let store = open(url, &schema.name, "b5-parent", false).await?;
    put_batch(&store, n).await?;
    let exe = std::env::current_exe().map_err(fail("no path to this binary"))?;
    let watch = sql(url).await?;
    let left = watch
        .prepare(&format!(
            "SELECT count(*) FROM (SELECT 1 FROM {}.rdq_jobs WHERE queue = $1 AND state IN ('pending', 'scheduled', 'underway', 'failed') LIMIT 1) x",
            schema.name
        ))
        .await
        .map_err(fail("prepare the progress query"))?;
    let mut events = store.finished_events();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let start = Instant::now();
    let mut children = Nodes(Vec::new());
    for i in 0..nodes {
        let mut child = Command::new(&exe)
            .args(["--b5-node", url, &schema.name, &format!("b5-node-{i}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {} --b5-node: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let ready_tx = ready_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) if l.trim() == "ready" => {
                        let _ = ready_tx.send(start.elapsed());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        children.0.push(child);
    }
    // Finished jobs come from the nodes' notifications; a look at the table
    // every 25 ms (an index probe for a job not yet finished) stands in for
    // any that are late or lost.
    let mut seen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    loop {
        tokio::select! {
            got = events.recv() => {
                match got {
                    Ok(_) => seen += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(k)) => seen += k as usize,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        return Err("the store closed".into())
                    }
                }
                if seen < n {
                    continue;
                }
            }
            _ = tick.tick() => {
                for child in &mut children.0 {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!("a B5 node process ended early ({status})"));
                    }
                }
                if start.elapsed() > NODES_TIMEOUT {
                    return Err(format!("{nodes} nodes did not finish {n} jobs within {NODES_TIMEOUT:?}"));
                }
            }
        }
        let row = watch
            .query_one(&left, &[&QUEUE])
            .await
            .map_err(fail("progress query"))?;
        if row.get::<_, i64>(0) == 0 {
            break;
        }
    }
    let finished = start.elapsed();
    store.sync().await.map_err(fail("sync"))?;
    let elapsed = start.elapsed();
    drop(children);
    let ready: Vec<Duration> = ready_rx.try_iter().collect();
    if ready.len() != nodes {
        return Err(format!(
            "{} of {nodes} node processes said ready",
            ready.len()
        ));
    }
    let all_ready = ready.into_iter().max().unwrap_or_default();
    if phases() {
        eprintln!(
            "B5 {nodes} nodes: all ready {all_ready:?} finished {finished:?} synced {elapsed:?}"
        );
    }
    all_succeeded(&store, n).await?;
    store.close().await.map_err(fail("close the store"))?;
    Ok((elapsed, all_ready))
}

/// A node process of B5 (`--b5-node <url> <schema> <node>`): runs the
/// bench queue, width 16, on `schema`, prints `ready`, and runs until it is
/// killed or its standard input closes.
pub(crate) fn node_main(url: &str, schema: &str, node: &str) -> Result<(), String> {
    let rt = runtime();
    rt.block_on(async {
        let store = open(url, schema, node, false).await?;
        let q = queue(&store, node, WIDTH, false, false, &Work::default()).await?;
        println!("ready");
        std::io::stdout().flush().map_err(fail("stdout"))?;
        let (eof_tx, eof_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let _ = eof_tx.send(());
        });
        let _ = eof_rx.await;
        q.stop(Duration::from_secs(1))
            .await
            .map_err(fail("stop the queue"))?;
        store.close().await.map_err(fail("close the store"))
    })
}

/// `putters` tasks each putting one job at a time, `per` each, into a
/// paused queue; every put's latency, and the wall time.
async fn single_puts(
    url: &str,
    putters: usize,
    per: usize,
) -> Result<(Vec<Duration>, Duration), String> {
    let schema = Schema::new(url);
    let store = open(url, &schema.name, "b5-puts", false).await?;
    let q = queue(&store, "b5-puts", 1, true, false, &Work::default()).await?;
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
                        .map_err(fail("put"))?;
                    lat.push(t0.elapsed());
                }
                Ok::<_, String>(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(fail("putter"))??);
    }
    let wall = start.elapsed();
    q.stop(Duration::from_secs(1))
        .await
        .map_err(fail("stop the queue"))?;
    store.close().await.map_err(fail("close the store"))?;
    Ok((all, wall))
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// B5: DurableQueue on PostgreSQL, one node, against the store's own claim
/// and outcome statements in a bare loop, interleaved rounds.
pub(crate) fn b5(quick: bool) -> Result<Report, String> {
    let (n, rounds, putters, per) = if quick {
        (5_000, 1, 16, 50)
    } else {
        (50_000, 5, 16, 500)
    };
    let url = url();
    let rt = runtime();
    reachable(&rt, &url)?;
    let (mut rdq, mut bare, mut ratios, mut puts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_claim = Vec::new();
    for _ in 0..rounds {
        let (put, run, per_round) = rt.block_on(b5_round(&url, n, false))?;
        per_claim.push(per_round);
        let a = rate(n, run);
        let b = rate(n, rt.block_on(b5_bare_round(&url, n))?);
        rdq.push(a);
        bare.push(b);
        ratios.push(a / b);
        puts.push(rate(n, put));
    }
    let mut detail = serde_json::Map::new();
    let value = median_with_range(&mut rdq, "range_jobs_per_s", &mut detail);
    let baseline = median_with_range(&mut bare, "range_baseline_jobs_per_s", &mut detail);
    let (lo, hi) = range(&ratios);
    let ratio = median(&mut ratios);
    detail.insert("ratio_range".into(), format!("{lo:.3}..{hi:.3}").into());
    detail.insert("jobs".into(), n.into());
    detail.insert("width".into(), WIDTH.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert(
        "clock".into(),
        "from building the queue (the jobs already put) until the last outcome is durable".into(),
    );
    detail.insert(
        "baseline_is".into(),
        "PgStore::bench_bare_loop: the store's claim and outcome statements (cluster width 16) in a bare loop on one connection, then sync; same jobs, same run, rounds interleaved".into(),
    );
    let put_rate = median_with_range(&mut puts, "range_put_jobs_per_s", &mut detail);
    detail.insert("put_jobs_per_s".into(), put_rate.round().into());

    detail.insert(
        "jobs_per_claim_round".into(),
        round3(median(&mut per_claim)).into(),
    );
    let (_, run, _) = rt.block_on(b5_round(&url, n, true))?;
    detail.insert(
        "all_synchronous_jobs_per_s".into(),
        rate(n, run).round().into(),
    );
    for nodes in [2, 3] {
        let (elapsed, ready) = rt.block_on(b5_nodes_round(&url, n, nodes))?;
        detail.insert(
            format!("nodes_{nodes}_jobs_per_s"),
            rate(n, elapsed).round().into(),
        );
        detail.insert(
            format!("nodes_{nodes}_all_ready_ms"),
            (ready.as_secs_f64() * 1e3).round().into(),
        );
    }
    detail.insert(
        "nodes_clock".into(),
        "node processes (this binary, --b5-node), width 16 each, cluster width 16: from spawning the first until every job succeeded and is durable (process start and store connect included; nodes_N_all_ready_ms says when the last was ready)".into(),
    );

    let (mut lat, wall) = rt.block_on(single_puts(&url, putters, per))?;
    lat.sort();
    detail.insert("single_put_putters".into(), putters.into());
    detail.insert("single_put_p50_ms".into(), percentile_ms(&lat, 0.5).into());
    detail.insert("single_put_p99_ms".into(), percentile_ms(&lat, 0.99).into());
    detail.insert(
        "single_puts_per_s".into(),
        rate(lat.len(), wall).round().into(),
    );
    detail.insert("synced".into(), synced(false));
    let schema = Schema::new(&url);
    detail.insert(
        "server".into(),
        rt.block_on(server_context(&url, &schema.name))?,
    );
    drop(schema);
    Ok(Report {
        id: "B5",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: Some(baseline.round()),
        ratio: Some(round3(ratio)),
        target: "≥ 0.7 × bare loop of the same SQL, ≥ 10,000 jobs/s".into(),
        pass: Some(ratio >= 0.7 && value >= 10_000.0),
        detail,
    })
}

// ---------------------------------------------------------------- W1 ----

/// W1-pg-single: puts awaited one by one, against a bare loop of
/// single-row synchronous commits on one connection, interleaved in rounds.
pub(crate) fn w1_single(quick: bool) -> Result<Report, String> {
    let (per_round, rounds, probes) = if quick {
        (500, 2, 100)
    } else {
        (1_000, 5, 200)
    };
    let url = url();
    let rt = runtime();
    reachable(&rt, &url)?;
    let schema = Schema::new(&url);
    let (mut put_time, mut commit_time) = (Duration::ZERO, Duration::ZERO);
    let mut ratios = Vec::new();
    let mut all = Vec::new();
    rt.block_on(async {
        let store = open(&url, &schema.name, "w1-single", false).await?;
        let q = queue(&store, "w1-single", 1, true, false, &Work::default()).await?;
        let client = sql(&url).await?;
        let probe = CommitProbe::create(&client, &schema.name).await?;
        for round in 0..rounds {
            let c = probe.time(&client, probes).await?;
            let start = Instant::now();
            for i in 0..per_round {
                let t0 = Instant::now();
                q.put(
                    "job",
                    &((round * per_round + i) as u64),
                    PutOptions::default(),
                )
                .await
                .map_err(fail("put"))?;
                all.push(t0.elapsed());
            }
            let p = start.elapsed();
            put_time += p;
            commit_time += c;
            ratios.push(rate(per_round, p) / rate(probes, c));
        }
        q.stop(Duration::from_secs(1))
            .await
            .map_err(fail("stop the queue"))?;
        store.close().await.map_err(fail("close the store"))
    })?;
    drop(schema);
    let n = per_round * rounds;
    let value = rate(n, put_time);
    let commit_rate = rate(probes * rounds, commit_time);
    let (lo, hi) = range(&ratios);
    let ratio = median(&mut ratios);
    all.sort();
    let mut detail = serde_json::Map::new();
    detail.insert("puts".into(), n.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("ratio_range".into(), format!("{lo:.3}..{hi:.3}").into());
    detail.insert(
        "baseline_is".into(),
        format!("single-row INSERTs into a plain table, autocommit (synchronous), one after the other on one connection, per second; {probes} before each round's puts")
            .into(),
    );
    detail.insert("put_p50_ms".into(), percentile_ms(&all, 0.5).into());
    detail.insert("put_p99_ms".into(), percentile_ms(&all, 0.99).into());
    detail.insert("synced".into(), synced(false));
    Ok(Report {
        id: "W1-pg-single",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: Some(commit_rate.round()),
        ratio: Some(round3(ratio)),
        target: "≥ 0.8 × 1 / (one synchronous commit, measured in the same run)".into(),
        pass: Some(ratio >= 0.8),
        detail,
    })
}

/// W1-pg-bulk: puts in chunks, each chunk awaited before the next.
pub(crate) fn w1_bulk(quick: bool) -> Result<Report, String> {
    let (n, chunk, rounds) = if quick {
        (5_000, 1_000, 1)
    } else {
        (50_000, 1_000, 3)
    };
    let url = url();
    let rt = runtime();
    reachable(&rt, &url)?;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let schema = Schema::new(&url);
        let elapsed = rt.block_on(async {
            let store = open(&url, &schema.name, "w1-bulk", false).await?;
            let q = queue(&store, "w1-bulk", 1, true, false, &Work::default()).await?;
            let start = Instant::now();
            for c in (0..n as u64).step_by(chunk) {
                q.put_many(specs(c..c + chunk as u64))
                    .await
                    .map_err(fail("put"))?;
            }
            let elapsed = start.elapsed();
            q.stop(Duration::from_secs(1))
                .await
                .map_err(fail("stop the queue"))?;
            store.close().await.map_err(fail("close the store"))?;
            Ok::<_, String>(elapsed)
        })?;
        rates.push(rate(n, elapsed));
    }
    let mut detail = serde_json::Map::new();
    let value = median_with_range(&mut rates, "range_jobs_per_s", &mut detail);
    detail.insert("jobs".into(), n.into());
    detail.insert("chunk".into(), chunk.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("synced".into(), synced(false));
    Ok(Report {
        id: "W1-pg-bulk",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: None,
        ratio: None,
        target: "none: reported beside the peers' figures".into(),
        pass: None,
        detail,
    })
}

/// Puts `n` jobs into `schema` and closes the store.
async fn preinsert(url: &str, schema: &str, n: usize) -> Result<(), String> {
    let store = open(url, schema, "preinsert", false).await?;
    put_batch(&store, n).await?;
    store.close().await.map_err(fail("close the store"))
}

/// From opening a store on `schema`, holding `n` pending jobs, until the
/// last outcome is durable; with the jobs' mean duration.
async fn process_round(
    url: &str,
    schema: &str,
    n: usize,
    width: usize,
    sleep: bool,
) -> Result<(Duration, Duration), String> {
    let work = Work::default();
    let start = Instant::now();
    let store = open(url, schema, "process", false).await?;
    let opened = start.elapsed();
    let mut events = store.finished_events();
    let q = queue(&store, "process", width, false, sleep, &work).await?;
    let built = start.elapsed();
    await_finished(&mut events, n).await;
    let finished = start.elapsed();
    store.sync().await.map_err(fail("sync"))?;
    let elapsed = start.elapsed();
    if phases() {
        eprintln!("opened {opened:?} built {built:?} finished {finished:?} synced {elapsed:?}");
    }
    wind_down(&q, &store, n).await?;
    Ok((elapsed, work.mean()))
}

/// W1-pg-process: pre-inserted no-op jobs at width 16.
pub(crate) fn w1_process(quick: bool) -> Result<Report, String> {
    let (n, rounds) = if quick { (5_000, 1) } else { (50_000, 3) };
    let url = url();
    let rt = runtime();
    reachable(&rt, &url)?;
    let mut rates = Vec::new();
    for _ in 0..rounds {
        let schema = Schema::new(&url);
        rt.block_on(preinsert(&url, &schema.name, n))?;
        let (elapsed, _) = rt.block_on(process_round(&url, &schema.name, n, WIDTH, false))?;
        rates.push(rate(n, elapsed));
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
    detail.insert("synced".into(), synced(false));
    Ok(Report {
        id: "W1-pg-process",
        metric: "jobs_per_s",
        value: value.round(),
        baseline: None,
        ratio: None,
        target: "≥ 50,000 jobs/s".into(),
        pass: Some(value >= 50_000.0),
        detail,
    })
}

// ---------------------------------------------------------------- W2 ----

/// W2-pg: pre-inserted jobs each awaiting a 1 ms timer, width 100.
pub(crate) fn w2(quick: bool) -> Result<Report, String> {
    let (n, rounds) = if quick { (2_000, 1) } else { (10_000, 3) };
    let url = url();
    let rt = runtime();
    reachable(&rt, &url)?;
    let (mut walls, mut ideals, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let mut means = Vec::new();
    for _ in 0..rounds {
        let schema = Schema::new(&url);
        rt.block_on(preinsert(&url, &schema.name, n))?;
        let (wall, mean) = rt.block_on(process_round(&url, &schema.name, n, W2_WIDTH, true))?;
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
    detail.insert("synced".into(), synced(false));
    Ok(Report {
        id: "W2-pg",
        metric: "wall_s",
        value: (wall * 1e4).round() / 1e4,
        baseline: Some((ideal * 1e4).round() / 1e4),
        ratio: Some(round3(ratio)),
        target: "≤ 1.25 × ideal".into(),
        pass: Some(ratio <= 1.25),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::shown;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            shown("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            shown("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }
}
