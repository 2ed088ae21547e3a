//! Several nodes on one PostgreSQL schema: the cluster-wide promises.
//!
//! The kill and stop tests run real node processes (`rdq-pg-node`, see
//! `src/bin/pg_node.rs`); the others run two "nodes" (two stores, two
//! queues with their own node names) in this process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdq_store::postgres::{PgOptions, PgStore};
use rdq_store::{
    DurableQueue, HandlerError, JobContext, JobId, JobState, NewJob, PutOptions, Store,
};

use crate::postgres::PgTest;

/// A store on the test's schema, on the server's clock, as a node's.
async fn node_store(t: &PgTest, node: &str, options: PgOptions) -> PgStore {
    PgStore::connect(
        &t.url,
        PgOptions {
            schema: t.schema.clone(),
            application_name: node.to_owned(),
            ..options
        },
    )
    .await
    .expect("connect")
}

/// The queue `rdq-pg-node` runs.
const QUEUE: &str = "cluster";

/// Makes the probe tables `rdq-pg-node` writes.
async fn probe_tables(db: &tokio_postgres::Client, schema: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE {schema}.probe (id int PRIMARY KEY, cur int NOT NULL, max int NOT NULL);
         INSERT INTO {schema}.probe VALUES (1, 0, 0);
         CREATE TABLE {schema}.probe_node (node text PRIMARY KEY, cur int NOT NULL);
         CREATE TABLE {schema}.runs (job_id bigint NOT NULL, attempt int NOT NULL, node text NOT NULL,
             at timestamptz NOT NULL DEFAULT clock_timestamp());"
    ))
    .await
    .expect("probe tables");
}

/// A running `rdq-pg-node`.
struct Node {
    name: String,
    child: Child,
}

impl Node {
    /// Starts a node and waits until it prints `ready`.
    fn start(t: &PgTest, name: &str, width: usize, lease_ms: u64) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdq-pg-node"))
            .args([t.url.as_str(), t.schema.as_str(), name])
            .args([
                "--width",
                &width.to_string(),
                "--lease-ms",
                &lease_ms.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rdq-pg-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node said nothing within 60 s");
        assert_eq!(line.trim(), "ready", "node {name} did not start");
        Node {
            name: name.to_owned(),
            child,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let r = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(r, 0, "kill({signal}) failed");
    }

    fn kill(mut self) -> String {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
        self.name
    }

    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().expect("wait").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("node {} did not stop within 20 s of SIGTERM", self.name);
    }
}

/// The runs a killed node had going died with it: takes them off the probe,
/// once the server has ended every session of the node (a statement the
/// node sent just before it died may still run until then).
async fn forget_runs_of(db: &tokio_postgres::Client, schema: &str, node: &str) {
    until(
        "the killed node's sessions end",
        Duration::from_secs(30),
        || async {
            let n: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&node],
                )
                .await
                .expect("pg_stat_activity")
                .get(0);
            n == 0
        },
    )
    .await;
    db.batch_execute("BEGIN").await.expect("begin");
    let row = db
        .query_opt(
            &format!("SELECT cur FROM {schema}.probe_node WHERE node = $1 FOR UPDATE"),
            &[&node],
        )
        .await
        .expect("probe row");
    if let Some(row) = row {
        let cur: i32 = row.get(0);
        db.execute(
            &format!("UPDATE {schema}.probe SET cur = cur - $1 WHERE id = 1"),
            &[&cur],
        )
        .await
        .expect("probe");
        db.execute(
            &format!("UPDATE {schema}.probe_node SET cur = 0 WHERE node = $1"),
            &[&node],
        )
        .await
        .expect("probe node");
    }
    db.batch_execute("COMMIT").await.expect("commit");
}

fn work(key: Option<String>, args: serde_json::Value) -> NewJob {
    NewJob {
        queue: QUEUE.into(),
        kind: "work".into(),
        args: args.to_string(),
        priority: 0,
        run_at: None,
        max_attempts: 100,
        key,
        timeout: None,
    }
}

/// Waits (polling every 50 ms) until `check` holds, up to `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn count(store: &PgStore, state: JobState) -> u64 {
    store
        .counts(QUEUE)
        .await
        .expect("counts")
        .get(&state)
        .copied()
        .unwrap_or(0)
}

/// Three node processes, cluster width 5, lease 3 s; ten rounds of SIGKILL
/// to a random node at a random moment and a restart. Every acknowledged
/// job exists once and succeeds; none that finished runs again; the probe
/// never sees more than 5 runs at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_to_kill_rounds() {
    const JOBS: usize = 3_000;
    const WIDTH: usize = 5;
    const ROUNDS: usize = 10;
    let Some(t) = PgTest::new().await else {
        return;
    };
    let store = node_store(&t, "kill-test", PgOptions::default()).await;
    let db = t.sql().await;
    probe_tables(&db, &t.schema).await;
    let mut acknowledged = Vec::with_capacity(JOBS);
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(500) {
        let jobs = chunk
            .iter()
            .map(|i| {
                work(
                    Some(format!("job-{i}")),
                    serde_json::json!({"ms": 20 + (i * 7919) % 25}),
                )
            })
            .collect();
        let now = rdq_store::Timestamp::from(std::time::SystemTime::now());
        acknowledged.extend(store.insert_many(jobs, now).await.expect("put"));
    }
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| Node::start(&t, &format!("n{i}-0"), WIDTH, 3_000))
        .collect();
    let started = Instant::now();
    for round in 1..=ROUNDS {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1_500))).await;
        let i = fastrand::usize(..nodes.len());
        let killed = nodes.remove(i).kill();
        forget_runs_of(&db, &t.schema, &killed).await;
        nodes.insert(i, Node::start(&t, &format!("n{i}-{round}"), WIDTH, 3_000));
    }
    let rounds_took = started.elapsed();
    until("every job succeeded", Duration::from_secs(240), || async {
        count(&store, JobState::Succeeded).await == JOBS as u64
    })
    .await;
    let s = &t.schema;
    let jobs: i64 = db
        .query_one(&format!("SELECT count(*) FROM {s}.rdq_jobs"), &[])
        .await
        .expect("count")
        .get(0);
    let keys: i64 = db
        .query_one(
            &format!("SELECT count(DISTINCT key) FROM {s}.rdq_jobs"),
            &[],
        )
        .await
        .expect("keys")
        .get(0);
    let runs: i64 = db
        .query_one(&format!("SELECT count(*) FROM {s}.runs"), &[])
        .await
        .expect("runs")
        .get(0);
    // A run that started after its job's success was recorded, or an attempt
    // beyond the one that succeeded: a finished job ran again.
    let after_finish: i64 = db
        .query_one(
            &format!(
                "SELECT count(*) FROM {s}.runs r JOIN {s}.rdq_jobs j ON j.id = r.job_id \
                 WHERE r.attempt > j.attempt \
                    OR r.at > to_timestamp(j.finished_at / 1e6) + interval '1 millisecond'"
            ),
            &[],
        )
        .await
        .expect("after finish")
        .get(0);
    let probe_max: i32 = db
        .query_one(&format!("SELECT max FROM {s}.probe WHERE id = 1"), &[])
        .await
        .expect("probe")
        .get(0);
    let lost = JOBS as i64 - count(&store, JobState::Succeeded).await as i64;
    eprintln!(
        "kill test: {ROUNDS} rounds over {rounds_took:.1?}, {JOBS} jobs, lost {lost}, \
         runs {runs} (re-runs {}), probe max {probe_max} (width {WIDTH})",
        runs - JOBS as i64
    );
    for node in nodes {
        node.stop();
    }
    assert_eq!(acknowledged.len(), JOBS);
    assert!(acknowledged.iter().all(|a| !a.existing));
    assert_eq!(
        (jobs, keys),
        (JOBS as i64, JOBS as i64),
        "each acknowledged job exists once"
    );
    assert_eq!(lost, 0);
    assert_eq!(after_finish, 0, "a finished job ran again");
    assert!(runs >= JOBS as i64);
    assert!(
        probe_max <= WIDTH as i32,
        "{probe_max} runs at once, width {WIDTH}"
    );
    assert!(
        probe_max >= 2,
        "the probe saw at most {probe_max} at once: did the nodes run in parallel?"
    );
}

/// A node stopped (SIGSTOP) while it holds jobs: they run elsewhere within
/// two leases; continued, it drops them without recording an outcome, and
/// goes on taking new work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_nodes_jobs_are_rescued_within_two_leases() {
    const LEASE_MS: u64 = 3_000;
    let Some(t) = PgTest::new().await else {
        return;
    };
    let store = node_store(&t, "stop-test", PgOptions::default()).await;
    let db = t.sql().await;
    probe_tables(&db, &t.schema).await;
    let a = Node::start(&t, "a", 4, LEASE_MS);
    let now = rdq_store::Timestamp::from(std::time::SystemTime::now());
    let held: Vec<JobId> = store
        .insert_many(
            (0..4)
                .map(|_| work(None, serde_json::json!({"ms": 50, "first_ms": 600_000})))
                .collect(),
            now,
        )
        .await
        .expect("put")
        .into_iter()
        .map(|i| i.id)
        .collect();
    until(
        "node a holds the 4 jobs",
        Duration::from_secs(20),
        || async {
            let mut on_a = 0;
            for id in &held {
                let row = store.get(*id).await.expect("get").expect("row");
                on_a += usize::from(
                    row.state == JobState::Underway && row.node.as_deref() == Some("a"),
                );
            }
            on_a == 4
        },
    )
    .await;
    let b = Node::start(&t, "b", 4, LEASE_MS);
    a.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    until(
        "the held jobs succeed on node b",
        Duration::from_millis(4 * LEASE_MS),
        || async {
            let mut done = 0;
            for id in &held {
                let row = store.get(*id).await.expect("get").expect("row");
                done += usize::from(row.state == JobState::Succeeded);
            }
            done == 4
        },
    )
    .await;
    let rescued_in = stopped.elapsed();
    eprintln!("rescue: a stopped node's 4 jobs finished elsewhere {rescued_in:.2?} after SIGSTOP (lease {LEASE_MS} ms)");
    assert!(
        rescued_in <= Duration::from_millis(2 * LEASE_MS),
        "rescued after {rescued_in:?}, more than two leases"
    );
    let before: Vec<_> = futures_rows(&store, &held).await;
    for row in &before {
        assert_eq!(row.result.as_deref(), Some("\"b\""), "{row:?}");
        assert_eq!(row.attempt, 2);
    }
    a.signal(libc::SIGCONT);
    // Node a can take new work only once it has dropped the 4 jobs that
    // filled its width: wait for a new job to start there. (Enough work that
    // node b cannot finish it all first: 600 jobs of 50 ms at width 4 is
    // 7.5 s, and node a gives its jobs up within a lease of waking.)
    let now = rdq_store::Timestamp::from(std::time::SystemTime::now());
    store
        .insert_many(
            (0..600)
                .map(|_| work(None, serde_json::json!({"ms": 50})))
                .collect(),
            now,
        )
        .await
        .expect("put");
    let old: Vec<i64> = held.iter().map(|id| id.0).collect();
    let s = &t.schema;
    until(
        "node a starts new jobs",
        Duration::from_secs(30),
        || async {
            let n: i64 = db
                .query_one(
                    &format!(
                        "SELECT count(*) FROM {s}.runs WHERE node = 'a' AND job_id <> ALL($1)"
                    ),
                    &[&old],
                )
                .await
                .expect("runs")
                .get(0);
            n > 0
        },
    )
    .await;
    let after = futures_rows(&store, &held).await;
    assert_eq!(
        before, after,
        "node a recorded an outcome for jobs it had lost"
    );
    a.stop();
    b.stop();
}

async fn futures_rows(store: &PgStore, ids: &[JobId]) -> Vec<rdq_store::JobRow> {
    let mut rows = Vec::new();
    for id in ids {
        rows.push(store.get(*id).await.expect("get").expect("row"));
    }
    rows
}

/// Two nodes in this process, on one schema.
async fn two_nodes(
    t: &PgTest,
    width: usize,
    handler: impl Fn(u64, JobContext) -> futures_box::Fut + Clone + Send + Sync + 'static,
) -> (DurableQueue<PgStore>, DurableQueue<PgStore>) {
    let mut queues = Vec::new();
    for name in ["node-a", "node-b"] {
        let store = node_store(t, name, PgOptions::default()).await;
        let h = handler.clone();
        queues.push(
            DurableQueue::builder(store, "q")
                .width(width)
                .lease(Duration::from_secs(3))
                .node(name)
                .handler("sleep", move |ms: u64, ctx| h(ms, ctx))
                .build()
                .await
                .expect("queue"),
        );
    }
    let b = queues.pop().expect("b");
    let a = queues.pop().expect("a");
    (a, b)
}

mod futures_box {
    /// A handler's future, boxed so both nodes share one handler type.
    pub(super) type Fut = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<String, rdq_store::HandlerError>> + Send>,
    >;
}

fn sleeper(ms: u64, ctx: JobContext) -> futures_box::Fut {
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, HandlerError>(format!("attempt {}", ctx.attempt))
    })
}

/// Width and pause set through node A apply on node B within a second, and
/// a cancel through B stops a job running on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_cancels_reach_the_other_node() {
    let Some(t) = PgTest::new().await else {
        return;
    };
    let (a, b) = two_nodes(&t, 2, sleeper).await;
    a.set_width(7).await.expect("width");
    until("node b's width follows", Duration::from_secs(1), || async {
        b.settings().width == 7
    })
    .await;
    a.pause().await.expect("pause");
    until("node b pauses", Duration::from_secs(1), || async {
        b.settings().paused
    })
    .await;
    let before = b.settled().await;
    let put = b
        .put("sleep", &10u64, PutOptions::default())
        .await
        .expect("put");
    let after = b.settled().await;
    assert_eq!(after.claimed, before.claimed, "node b claimed while paused");
    assert_eq!(b.get(put.id).await.expect("get").state, JobState::Pending);
    a.resume().await.expect("resume");
    b.wait(put.id).await.expect("runs after resume");
    // A job that runs for ten minutes on node A, cancelled through node B.
    let long = a
        .put("sleep", &600_000u64, PutOptions::default())
        .await
        .expect("put");
    until(
        "the long job is underway",
        Duration::from_secs(10),
        || async { a.get(long.id).await.expect("get").state == JobState::Underway },
    )
    .await;
    let on = a.get(long.id).await.expect("get").node;
    let (runner, other) = if on.as_deref() == Some("node-a") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let cancelled_at = Instant::now();
    other
        .cancel(long.id)
        .await
        .expect("cancel through the other node");
    let row = tokio::time::timeout(Duration::from_secs(5), runner.wait(long.id))
        .await
        .expect("cancelled within 5 s")
        .expect("wait");
    assert_eq!(row.state, JobState::Cancelled);
    eprintln!(
        "cancel through the other node took {:.0?}",
        cancelled_at.elapsed()
    );
    a.stop(Duration::from_secs(1)).await.expect("stop");
    b.stop(Duration::from_secs(1)).await.expect("stop");
}

/// A hung job times out; meanwhile no session of the nodes sits idle in a
/// transaction; with a pool of 2 connections, 3 hung jobs hold none of
/// them and the other jobs finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_jobs_hold_no_connection_or_transaction() {
    let Some(t) = PgTest::new().await else {
        return;
    };
    let db = t.sql().await;
    let node = format!("{}_hung", t.schema);
    let store = node_store(
        &t,
        &node,
        PgOptions {
            pool_size: 2,
            ..PgOptions::default()
        },
    )
    .await;
    let q = DurableQueue::builder(store, "q")
        .width(5)
        .max_attempts(1)
        .node(node.clone())
        .handler("sleep", |ms: u64, _ctx: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HandlerError>(())
        })
        .build()
        .await
        .expect("queue");
    let hung: Vec<JobId> = futures_puts(&q, 3, 600_000, Some(Duration::from_secs(3))).await;
    let quick: Vec<JobId> = futures_puts(&q, 20, 10, None).await;
    until(
        "the hung jobs are underway",
        Duration::from_secs(10),
        || async {
            let mut underway = 0;
            for id in &hung {
                underway += usize::from(q.get(*id).await.expect("get").state == JobState::Underway);
            }
            underway == 3
        },
    )
    .await;
    for id in &quick {
        let row = tokio::time::timeout(Duration::from_secs(20), q.wait(*id))
            .await
            .expect("quick jobs finish while 3 hang")
            .expect("wait");
        assert_eq!(row.state, JobState::Succeeded);
    }
    let idle: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND state LIKE 'idle in transaction%'",
            &[&node],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(
        idle, 0,
        "a session sits idle in a transaction while jobs hang"
    );
    for id in &hung {
        let row = tokio::time::timeout(Duration::from_secs(20), q.wait(*id))
            .await
            .expect("hung jobs time out")
            .expect("wait");
        assert_eq!(row.state, JobState::Dead);
        assert!(
            row.error.as_deref().unwrap_or("").contains("timed out"),
            "{row:?}"
        );
    }
    q.stop(Duration::from_secs(1)).await.expect("stop");
}

async fn futures_puts(
    q: &DurableQueue<PgStore>,
    n: usize,
    ms: u64,
    timeout: Option<Duration>,
) -> Vec<JobId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let options = PutOptions {
            timeout,
            ..PutOptions::default()
        };
        ids.push(q.put("sleep", &ms, options).await.expect("put").id);
    }
    ids
}

/// B5's baseline drains a queue with the store's own statements, within the
/// queue's width; `sync` then returns with everything committed.
#[tokio::test]
async fn the_bare_loop_drains_a_queue_within_its_width() {
    let Some(t) = PgTest::new().await else {
        return;
    };
    let store = node_store(&t, "bare", PgOptions::default()).await;
    store
        .save_queue(rdq_store::QueueRecord {
            name: QUEUE.into(),
            declared: serde_json::json!({}),
            settings: serde_json::json!({"width": 4, "paused": false, "rate": null}),
        })
        .await
        .expect("settings");
    let now = rdq_store::Timestamp::from(std::time::SystemTime::now());
    store
        .insert_many(
            (0..250)
                .map(|_| work(None, serde_json::json!({"ms": 0})))
                .collect(),
            now,
        )
        .await
        .expect("put");
    let ran = store
        .bench_bare_loop(QUEUE, 16, "bare")
        .await
        .expect("bare loop");
    store.sync().await.expect("sync");
    assert_eq!(ran, 250);
    assert_eq!(count(&store, JobState::Succeeded).await, 250);
}
