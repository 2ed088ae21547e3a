//! The PostgreSQL backend against a real server: the shared suite, and what
//! only several nodes sharing one database show.
//!
//! Each test works in a fresh schema (`rdq_t_<random hex>`) of the database
//! at `RDQ_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped at its end. Without a
//! server the tests are skipped, except in CI (`CI=true`), where they fail.

use std::collections::BTreeSet;
use std::time::Duration;

use rdq_store::postgres::{PgClock, PgOptions, PgStore};
use rdq_store::{
    CancelResult, ClaimParams, Completion, Finish, JobId, JobState, Limit, NewJob, QueueRecord,
    RescueParams, Store, StoreError, Timestamp,
};

const T0: Timestamp = Timestamp(1_700_000_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

fn url() -> String {
    std::env::var("RDQ_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A fresh schema, dropped (best effort) when this goes.
pub(crate) struct PgTest {
    pub(crate) url: String,
    pub(crate) schema: String,
}

impl PgTest {
    /// A fresh schema name; `None` (after saying why on stderr) when the
    /// server is unreachable outside CI. In CI that panics.
    pub(crate) async fn new() -> Option<PgTest> {
        let url = url();
        if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            let msg = format!(
                "PostgreSQL is not reachable at {url} ({e}): start it (`sudo service postgresql start`) or set RDQ_TEST_DATABASE_URL"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipped: {msg}");
            return None;
        }
        Some(PgTest {
            url,
            schema: format!("rdq_t_{:016x}", fastrand::u64(..)),
        })
    }

    /// Options for a node of this schema, on the callers' clock.
    pub(crate) fn options(&self, node: &str) -> PgOptions {
        PgOptions {
            schema: self.schema.clone(),
            application_name: format!("{}_{node}", self.schema),
            clock: PgClock::Caller,
            pool_size: 4,
            ..PgOptions::default()
        }
    }

    pub(crate) async fn store(&self, node: &str) -> PgStore {
        PgStore::connect(&self.url, self.options(node))
            .await
            .expect("connect")
    }

    /// A plain connection to the test database, in this schema.
    pub(crate) async fn sql(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
            .batch_execute(&format!("SET search_path = {}", self.schema))
            .await
            .expect("search_path");
        client
    }
}

impl Drop for PgTest {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        // On a thread of its own: this may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

fn job(queue: &str) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        kind: "k".to_owned(),
        args: "{}".to_owned(),
        priority: 0,
        run_at: None,
        max_attempts: 3,
        key: None,
        timeout: None,
    }
}

fn claim(queue: &str, max: usize, node: &str, now: Timestamp) -> ClaimParams {
    ClaimParams {
        queue: queue.to_owned(),
        max,
        node: node.to_owned(),
        now,
        lease: Duration::from_secs(30),
    }
}

async fn put(store: &PgStore, jobs: Vec<NewJob>, now: Timestamp) -> Vec<JobId> {
    store
        .insert_many(jobs, now)
        .await
        .expect("insert")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

async fn save(store: &PgStore, queue: &str, settings: serde_json::Value) {
    store
        .save_queue(QueueRecord {
            name: queue.to_owned(),
            declared: settings.clone(),
            settings,
        })
        .await
        .expect("save");
}

/// Two nodes claiming at once never get the same job, and between them get
/// every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_claim_concurrently_never_the_same_job() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    let all = put(&a, (0..300).map(|_| job("q")).collect(), at(0)).await;
    let run = |store: PgStore, node: &'static str| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let c = store
                    .claim(claim("q", 7, node, at(1)))
                    .await
                    .expect("claim");
                if c.jobs.is_empty() {
                    return got;
                }
                got.extend(c.jobs.iter().map(|j| j.id));
            }
        })
    };
    let (ga, gb) = (run(a.clone(), "a"), run(b.clone(), "b"));
    let (ga, gb) = (ga.await.expect("a"), gb.await.expect("b"));
    let mut seen = BTreeSet::new();
    for id in ga.iter().chain(&gb) {
        assert!(seen.insert(*id), "job {id} claimed twice");
    }
    assert_eq!(seen, all.into_iter().collect::<BTreeSet<_>>());
    assert!(!ga.is_empty() && !gb.is_empty(), "both nodes claimed");
    a.close().await.expect("close");
    b.close().await.expect("close");
}

/// The width counts the jobs underway on every node; a node's own buffered
/// outcomes are written ahead of its claim, so they free the width at once.
#[tokio::test]
async fn width_is_cluster_wide() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    save(
        &a,
        "q",
        serde_json::json!({"width": 3, "rate": null, "paused": false}),
    )
    .await;
    put(&a, (0..10).map(|_| job("q")).collect(), at(0)).await;
    let first = a.claim(claim("q", 2, "a", at(1))).await.expect("claim");
    assert_eq!((first.jobs.len(), first.limited), (2, None));
    let second = b.claim(claim("q", 5, "b", at(1))).await.expect("claim");
    assert_eq!((second.jobs.len(), second.limited), (1, Some(Limit::Width)));
    let third = a.claim(claim("q", 5, "a", at(1))).await.expect("claim");
    assert_eq!((third.jobs.len(), third.limited), (0, Some(Limit::Width)));
    // Buffered, not flushed: the claim writes it first.
    a.complete(Completion {
        id: first.jobs[0].id,
        attempt: 1,
        finish: Finish::Succeeded { result: None },
        at: at(2),
    });
    let fourth = a.claim(claim("q", 5, "a", at(2))).await.expect("claim");
    assert_eq!(
        (fourth.jobs.len(), fourth.limited),
        (1, Some(Limit::Width)),
        "the outcome freed one place"
    );
    assert_eq!(
        a.get(first.jobs[0].id)
            .await
            .expect("get")
            .expect("job")
            .state,
        JobState::Succeeded
    );
    a.flush().await.expect("flush");
    // Paused and held, for every node.
    save(&b, "q", serde_json::json!({"width": 30, "paused": true})).await;
    let paused = a.claim(claim("q", 5, "a", at(3))).await.expect("claim");
    assert_eq!(
        (paused.jobs.len(), paused.limited),
        (0, Some(Limit::Paused))
    );
    save(&b, "q", serde_json::json!({"width": 30, "paused": false})).await;
    b.hold("q", at(60)).await.expect("hold");
    b.hold("q", at(30))
        .await
        .expect("an earlier hold changes nothing");
    let held = a.claim(claim("q", 5, "a", at(4))).await.expect("claim");
    assert_eq!(
        (held.jobs.len(), held.limited),
        (0, Some(Limit::Held { until: at(60) }))
    );
    let after = a.claim(claim("q", 2, "a", at(61))).await.expect("claim");
    assert_eq!((after.jobs.len(), after.limited), (2, None));
    // The widest width there is: no limit.
    save(&a, "q", serde_json::json!({"width": u64::MAX})).await;
    let rest = a.claim(claim("q", 10, "a", at(62))).await.expect("claim");
    assert_eq!((rest.jobs.len(), rest.limited), (4, None));
}

/// One token bucket per queue, shared by every node.
#[tokio::test]
async fn rate_is_cluster_wide() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    save(
        &a,
        "q",
        serde_json::json!({"width": 100, "rate": {"count": 1, "period_ms": 60_000, "burst": 2}, "paused": false}),
    )
    .await;
    put(&a, (0..5).map(|_| job("q")).collect(), at(0)).await;
    let one = a.claim(claim("q", 1, "a", at(0))).await.expect("claim");
    assert_eq!((one.jobs.len(), one.limited), (1, None));
    let two = b.claim(claim("q", 5, "b", at(0))).await.expect("claim");
    assert_eq!(
        (two.jobs.len(), two.limited),
        (1, Some(Limit::Rate { next: at(60) })),
        "the burst of 2 is spent across both nodes"
    );
    let none = a.claim(claim("q", 5, "a", at(30))).await.expect("claim");
    assert_eq!(
        (none.jobs.len(), none.limited),
        (0, Some(Limit::Rate { next: at(60) }))
    );
    let later = b.claim(claim("q", 5, "b", at(60))).await.expect("claim");
    assert_eq!(
        (later.jobs.len(), later.limited),
        (1, Some(Limit::Rate { next: at(120) }))
    );
}

/// Nodes starting at once on a fresh schema migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_once() {
    let Some(t) = PgTest::new().await else { return };
    let connects: Vec<_> = (0..4)
        .map(|i| {
            let (url, options) = (t.url.clone(), t.options(&format!("n{i}")));
            tokio::spawn(async move { PgStore::connect(&url, options).await })
        })
        .collect();
    for c in connects {
        c.await.expect("task").expect("connect");
    }
    let versions: i64 = t
        .sql()
        .await
        .query_one("SELECT count(*) FROM rdq_schema_version", &[])
        .await
        .expect("versions")
        .get(0);
    assert_eq!(versions, 1);
}

/// A schema a newer build migrated is refused, with what to do.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(t) = PgTest::new().await else { return };
    t.store("a").await.close().await.expect("close");
    t.sql()
        .await
        .execute("INSERT INTO rdq_schema_version (version) VALUES (999)", &[])
        .await
        .expect("bump");
    let err = PgStore::connect(&t.url, t.options("a"))
        .await
        .expect_err("refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found: 999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade rdq"), "{err}");
}

/// A put on one node wakes the waiters of another (NOTIFY).
#[tokio::test]
async fn a_put_wakes_another_node() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    let signal = b.work_signal("q");
    let waiter = tokio::spawn(async move { signal.notified().await });
    tokio::task::yield_now().await;
    put(&a, vec![job("q")], at(0)).await;
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("woken within 1 s")
        .expect("waiter");
    // Settings too.
    let settings = b.settings_signal("q");
    let waiter = tokio::spawn(async move { settings.notified().await });
    tokio::task::yield_now().await;
    save(&a, "q", serde_json::json!({"width": 2})).await;
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("settings signal within 1 s")
        .expect("waiter");
    // And finished events.
    let mut finished = b.finished_events();
    let id = a
        .claim(claim("q", 1, "a", at(1)))
        .await
        .expect("claim")
        .jobs[0]
        .id;
    a.complete(Completion {
        id,
        attempt: 1,
        finish: Finish::Succeeded { result: None },
        at: at(2),
    });
    a.flush().await.expect("flush");
    let seen = tokio::time::timeout(Duration::from_secs(1), finished.recv())
        .await
        .expect("finished event within 1 s")
        .expect("event");
    assert_eq!(seen, id);
}

/// A cancel asked through one node reaches the node running the job, at once
/// and in its next heartbeat.
#[tokio::test]
async fn a_cancel_reaches_the_running_node() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    let id = put(&a, vec![job("q")], at(0)).await[0];
    let mut cancels = a.cancel_events();
    a.claim(claim("q", 1, "a", at(1))).await.expect("claim");
    match b.cancel(id, at(2)).await.expect("cancel") {
        CancelResult::Underway(row) => assert_eq!(row.node.as_deref(), Some("a")),
        other => panic!("expected Underway, got {other:?}"),
    }
    let seen = tokio::time::timeout(Duration::from_secs(1), cancels.recv())
        .await
        .expect("cancel event within 1 s")
        .expect("event");
    assert_eq!(seen, id);
    let report = a
        .heartbeat("a", vec![id], Duration::from_secs(30), at(3))
        .await
        .expect("heartbeat");
    assert_eq!(
        (report.held, report.cancel, report.lost),
        (vec![id], vec![id], vec![])
    );
    assert_eq!(
        a.get(id).await.expect("get").expect("job").state,
        JobState::Underway,
        "the running node cancels it"
    );
}

/// A job rescued from under its node is reported lost by that node's next
/// heartbeat; rescue is idempotent and limited.
#[tokio::test]
async fn a_rescued_job_is_lost_to_its_node() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    let ids = put(&a, (0..3).map(|_| job("q")).collect(), at(0)).await;
    a.claim(claim("q", 3, "a", at(0))).await.expect("claim");
    let rescue = |limit| RescueParams {
        expired_before: Some(at(31)),
        queue: None,
        limit,
    };
    let first = b.rescue(rescue(2)).await.expect("rescue");
    assert_eq!((first.requeued, first.dead), (2, 0), "at most the limit");
    let second = b.rescue(rescue(0)).await.expect("rescue");
    assert_eq!(second.requeued, 1);
    assert_eq!(b.rescue(rescue(0)).await.expect("rescue").requeued, 0);
    let report = a
        .heartbeat("a", ids.clone(), Duration::from_secs(30), at(32))
        .await
        .expect("heartbeat");
    assert!(report.held.is_empty());
    assert_eq!(report.lost, ids);
}

/// No session of the store sits idle inside a transaction while claims and
/// outcomes run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_idles_in_a_transaction() {
    let Some(t) = PgTest::new().await else { return };
    let a = t.store("a").await;
    put(&a, (0..2000).map(|_| job("q")).collect(), at(0)).await;
    let app = t.options("a").application_name;
    let worker = tokio::spawn({
        let a = a.clone();
        async move {
            for _ in 0..200 {
                let c = a.claim(claim("q", 10, "a", at(1))).await.expect("claim");
                if c.jobs.is_empty() {
                    break;
                }
                for j in c.jobs {
                    a.complete(Completion {
                        id: j.id,
                        attempt: j.attempt,
                        finish: Finish::Succeeded { result: None },
                        at: at(2),
                    });
                }
            }
            a.flush().await.expect("flush");
        }
    });
    let watcher = t.sql().await;
    let mut looks = 0;
    while !worker.is_finished() {
        // A session between the statements of a pipelined transaction is
        // "idle in transaction" for microseconds; one that stays there
        // (a transaction held open) is what must not happen.
        let idle: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state LIKE 'idle in transaction%' AND state_change < clock_timestamp() - interval '100 ms'",
                &[&app],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        assert_eq!(idle, 0, "a session of the store idles in a transaction");
        looks += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    worker.await.expect("worker");
    assert!(looks > 0);
    let sessions: i64 = watcher
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert!(
        sessions >= 2,
        "the store's sessions carry its application_name"
    );
}

/// A statement past its timeout, or a lock wait past its own, is a
/// `Timeout`.
#[tokio::test]
async fn timeouts_are_timeouts() {
    let Some(t) = PgTest::new().await else { return };
    let a = t.store("a").await;
    save(&a, "q", serde_json::json!({"width": 5})).await;
    put(&a, vec![job("q")], at(0)).await;
    // Another session holds the queue's row: a claim waits for it.
    let mut blocker = t.sql().await;
    let tx = blocker.transaction().await.expect("begin");
    tx.execute("SELECT 1 FROM rdq_queues WHERE name = 'q' FOR UPDATE", &[])
        .await
        .expect("lock");
    let statement = PgStore::connect(
        &t.url,
        PgOptions {
            statement_timeout: Duration::from_millis(200),
            lock_timeout: Duration::from_secs(10),
            ..t.options("s")
        },
    )
    .await
    .expect("connect");
    let err = statement
        .claim(claim("q", 1, "s", at(1)))
        .await
        .expect_err("timed out");
    assert!(matches!(err, StoreError::Timeout(_)), "{err:?}");
    let lock = PgStore::connect(
        &t.url,
        PgOptions {
            lock_timeout: Duration::from_millis(100),
            ..t.options("l")
        },
    )
    .await
    .expect("connect");
    let err = lock
        .claim(claim("q", 1, "l", at(1)))
        .await
        .expect_err("timed out");
    assert!(matches!(err, StoreError::Timeout(_)), "{err:?}");
    assert!(err.is_unavailable());
    tx.rollback().await.expect("rollback");
    let c = lock.claim(claim("q", 1, "l", at(1))).await.expect("claim");
    assert_eq!(c.jobs.len(), 1, "the store works once the lock is gone");
}

/// Bad URLs, unreachable servers and missing databases: errors that never
/// show the password.
#[tokio::test]
async fn errors_never_show_the_password() {
    let Some(t) = PgTest::new().await else { return };
    let secret = "hunter2-s3cret";
    let malformed = format!("postgres://postgres:{secret}@127.0.0.1:notaport/test");
    let err = PgStore::connect(&malformed, t.options("a"))
        .await
        .expect_err("malformed");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("malformed database URL"), "{text}");
    assert!(!text.contains(secret), "{text}");
    let cases = [
        format!("postgres://postgres:{secret}@127.0.0.1:1/test"),
        format!("postgres://postgres:{secret}@127.0.0.1:5432/rdq_no_such_database"),
        format!("host=127.0.0.1 port=1 user=postgres password={secret} dbname=test"),
    ];
    for url in cases {
        let err = PgStore::connect(&url, t.options("a"))
            .await
            .expect_err("unavailable");
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        assert!(matches!(err, StoreError::Unavailable(_)), "{url}: {debug}");
        assert!(!text.contains(secret) && !debug.contains(secret), "{text}");
    }
}

/// On the server's clock, the callers' `now` is ignored.
#[tokio::test]
async fn the_server_clock_ignores_the_callers() {
    let Some(t) = PgTest::new().await else { return };
    let a = PgStore::connect(
        &t.url,
        PgOptions {
            clock: PgClock::Server,
            ..t.options("a")
        },
    )
    .await
    .expect("connect");
    let before = Timestamp::from(std::time::SystemTime::now());
    let mut later = job("q");
    later.run_at = Some(before.plus(Duration::from_secs(3600)));
    let ids = put(&a, vec![job("q"), later], Timestamp(0)).await;
    let row = a.get(ids[0]).await.expect("get").expect("job");
    let skew = Duration::from_secs(60);
    assert!(row.queued_at.since(before) < skew && before.since(row.queued_at) < skew);
    assert_eq!(
        a.get(ids[1]).await.expect("get").expect("job").state,
        JobState::Scheduled,
        "an explicit run_at stays"
    );
    assert_eq!(
        a.promote_due("q", Timestamp(i64::MAX / 2))
            .await
            .expect("promote"),
        0
    );
    let c = a
        .claim(claim("q", 5, "a", Timestamp(0)))
        .await
        .expect("claim");
    assert_eq!(c.jobs.len(), 1);
    let lease = c.jobs[0].lease_until.expect("lease");
    assert!(lease.since(before) >= Duration::from_secs(29));
    assert_eq!(a.poll_interval(), Some(Duration::from_secs(1)));
    a.close().await.expect("close");
    assert!(matches!(
        a.get(ids[0]).await.expect_err("closed"),
        StoreError::Closed
    ));
}

/// Keys dedupe within a batch and across coalesced puts; a job too big for
/// PostgreSQL's integers is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_puts_answer_each_caller() {
    let Some(t) = PgTest::new().await else { return };
    let a = t.store("a").await;
    let puts: Vec<_> = (0..20)
        .map(|i| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut keyed = job("q");
                keyed.key = Some(format!("k{}", i % 5));
                let jobs = vec![job("q"), keyed.clone(), keyed];
                a.insert_many(jobs, at(0)).await.expect("insert")
            })
        })
        .collect();
    let mut fresh = BTreeSet::new();
    let mut keyed: std::collections::BTreeMap<u32, BTreeSet<JobId>> = Default::default();
    for (i, p) in puts.into_iter().enumerate() {
        let got = p.await.expect("put");
        assert_eq!(got.len(), 3);
        assert!(!got[0].existing && fresh.insert(got[0].id));
        assert!(got[2].existing && got[2].id == got[1].id, "{got:?}");
        keyed.entry(i as u32 % 5).or_default().insert(got[1].id);
    }
    assert!(
        keyed.values().all(|ids| ids.len() == 1),
        "one live job per key"
    );
    let counts = a.counts("q").await.expect("counts");
    assert_eq!(counts.get(&JobState::Pending), Some(&25));
    let mut huge = job("q");
    huge.max_attempts = u32::MAX;
    assert!(matches!(
        a.insert_many(vec![huge], at(0)).await,
        Err(StoreError::Invalid(_))
    ));
}

/// A node whose connections are all cut reconnects: its waiters are woken
/// (a notification may have been missed meanwhile), and it hears the other
/// nodes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects() {
    let Some(t) = PgTest::new().await else { return };
    let (a, b) = (t.store("a").await, t.store("b").await);
    let woken = b.work_signal("idle");
    let waiter = tokio::spawn(async move { woken.notified().await });
    tokio::task::yield_now().await;
    let killed: i64 = t
        .sql()
        .await
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1) k",
            &[&t.options("b").application_name],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed >= 1);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("waiters woken after the reconnect")
        .expect("waiter");
    // Heard again: a put through A wakes B.
    let signal = b.work_signal("q");
    let heard = tokio::spawn(async move { signal.notified().await });
    tokio::task::yield_now().await;
    put(&a, vec![job("q")], at(0)).await;
    tokio::time::timeout(Duration::from_secs(2), heard)
        .await
        .expect("B hears A again")
        .expect("waiter");
    // B's pools replaced their dead connections too.
    assert_eq!(
        b.counts("q").await.expect("counts").values().sum::<u64>(),
        1
    );
}

/// Two DurableQueues on two nodes share the queue's width: never more jobs
/// run at once, over both, than it allows; every job runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_queues_on_two_nodes_share_the_width() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let Some(t) = PgTest::new().await else { return };
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut queues = Vec::new();
    for node in ["a", "b"] {
        let store = PgStore::connect(
            &t.url,
            PgOptions {
                clock: PgClock::Server,
                poll_interval: Duration::from_millis(100),
                ..t.options(node)
            },
        )
        .await
        .expect("connect");
        let (running, most, runs) = (running.clone(), most.clone(), runs.clone());
        let q = rdq_store::DurableQueue::builder(store, "q")
            .node(node)
            .width(2)
            .handler("k", move |_: (), _: rdq_store::JobContext| {
                let (running, most, runs) = (running.clone(), most.clone(), runs.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(15)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, rdq_store::HandlerError>(())
                }
            })
            .build()
            .await
            .expect("build");
        queues.push(q);
    }
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(
            queues[0]
                .put("k", &(), rdq_store::PutOptions::default())
                .await
                .expect("put")
                .id,
        );
    }
    for id in ids {
        let row = tokio::time::timeout(Duration::from_secs(20), queues[1].wait(id))
            .await
            .expect("finished in time")
            .expect("wait");
        assert_eq!(row.state, JobState::Succeeded);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 20, "each job ran once");
    assert!(
        most.load(Ordering::SeqCst) <= 2,
        "{} jobs ran at once over a width of 2",
        most.load(Ordering::SeqCst)
    );
    for q in &queues {
        q.stop(Duration::from_secs(5)).await.expect("stop");
        q.store().close().await.expect("close");
    }
}

/// Many claimers at once on one node, each writing outcomes ahead of its
/// claims, beside the completer: no claim waits on a connection another
/// holds, and every job ends once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_and_the_completer_do_not_stall() {
    let Some(t) = PgTest::new().await else { return };
    let a = t.store("a").await;
    save(&a, "q", serde_json::json!({"width": 16})).await;
    put(&a, (0..400).map(|_| job("q")).collect(), at(0)).await;
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let a = a.clone();
            tokio::spawn(async move {
                let mut idle = 0;
                while idle < 3 {
                    let c = a.claim(claim("q", 4, "a", at(1))).await.expect("claim");
                    if c.jobs.is_empty() {
                        idle += 1;
                        a.flush().await.expect("flush");
                        continue;
                    }
                    idle = 0;
                    for j in c.jobs {
                        a.complete(Completion {
                            id: j.id,
                            attempt: j.attempt,
                            finish: Finish::Succeeded { result: None },
                            at: at(2),
                        });
                    }
                }
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(20), async {
        for w in workers {
            w.await.expect("worker");
        }
    })
    .await
    .expect("the claimers finish");
    a.flush().await.expect("flush");
    let counts = a.counts("q").await.expect("counts");
    assert_eq!(counts.get(&JobState::Succeeded), Some(&400), "{counts:?}");
}

mod suite {
    use super::*;

    // Each check in a schema of its own, dropped after it; skipped without
    // a server (outside CI).
    rdq_store::store_suite!(async {
        match PgTest::new().await {
            Some(t) => Some((t.store("node-a").await, t)),
            None => None,
        }
    });
}
