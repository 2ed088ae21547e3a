// The cases of `durable.rs`, included once per backend (see there): no
// module docs or imports of its own beyond what both share.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdq::Rate;
use rdq_store::{
    Backoff, Clock, DurableError, DurableQueue, HandlerError, JobContext, JobId, JobRow, JobSpec,
    JobState, PutOptions, Store,
};


/// Polls `check` until it holds, failing after 10 s of real time.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Queue `q`, paused, whose kind `k` does nothing: for tests of what
/// happens to waiting jobs.
async fn paused_noop_queue(t: &TempStore) -> Queue {
    DurableQueue::builder(t.store.clone(), "q")
        .paused(true)
        .handler("k", |_: (), _: JobContext| async {
            Ok::<_, HandlerError>(())
        })
        .build()
        .await
        .unwrap()
}

async fn row(q: &Queue, id: JobId) -> JobRow {
    q.get(id).await.unwrap()
}

async fn wait(q: &Queue, id: JobId) -> JobRow {
    tokio::time::timeout(Duration::from_secs(10), q.wait(id))
        .await
        .expect("the job finishes")
        .unwrap()
}

#[tokio::test]
async fn put_run_and_wait() {
    let Some(t) = fresh().await else { return };
    let q = DurableQueue::builder(t.store.clone(), "q")
        .width(2)
        .handler("double", |n: u64, _: JobContext| async move {
            Ok::<_, HandlerError>(n * 2)
        })
        .build()
        .await
        .unwrap();
    let job = q
        .put("double", &21u64, PutOptions::default())
        .await
        .unwrap();
    let done = wait(&q, job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_deref(), Some("42"));
    assert_eq!(done.attempt, 1);
    assert!(done.launched_at.is_some() && done.finished_at >= done.launched_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_jobs_all_finish_once() {
    let Some(t) = fresh().await else { return };
    let n = 3_000u64;
    let runs = Arc::new(Mutex::new(vec![0u32; n as usize]));
    let r = runs.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .width(16)
        .handler("count", move |i: u64, _: JobContext| {
            let r = r.clone();
            async move {
                r.lock().unwrap()[i as usize] += 1;
                Ok::<_, HandlerError>(())
            }
        })
        .build()
        .await
        .unwrap();
    let jobs: Vec<JobSpec> = (0..n)
        .map(|i| JobSpec::new("count", &i, PutOptions::default()).unwrap())
        .collect();
    q.put_many(jobs).await.unwrap();
    eventually("all succeeded", || async {
        q.counts().await.unwrap().get(&JobState::Succeeded) == Some(&n)
    })
    .await;
    assert!(
        runs.lock().unwrap().iter().all(|r| *r == 1),
        "each job ran exactly once"
    );
}

/// Failures retry after the backoff, then the job is dead; timings follow
/// the clock exactly (no jitter here).
#[tokio::test]
async fn failures_retry_after_the_backoff_then_die() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock.clone())
        .max_attempts(3)
        .backoff(
            Backoff::exponential(Duration::from_secs(10), Duration::from_secs(60))
                .unwrap()
                .with_jitter(0.0)
                .unwrap(),
        )
        .handler("flaky", move |_: (), ctx: JobContext| {
            a.fetch_add(1, Ordering::SeqCst);
            async move {
                Err::<(), _>(HandlerError::msg(format!(
                    "busy on attempt {}",
                    ctx.attempt
                )))
            }
        })
        .build()
        .await
        .unwrap();
    let id = q.put("flaky", &(), PutOptions::default()).await.unwrap().id;
    let t0 = clock.now();
    eventually("first failure recorded", || async {
        row(&q, id).await.state == JobState::Failed
    })
    .await;
    let failed = row(&q, id).await;
    assert_eq!(failed.error.as_deref(), Some("busy on attempt 1"));
    assert_eq!(
        failed.run_at,
        t0.plus(Duration::from_secs(10)),
        "first retry after the base delay"
    );

    let before = q.settled().await;
    clock.advance(Duration::from_secs(9));
    let after = q.settled().await;
    assert!(after.rounds > before.rounds);
    assert_eq!(
        after.claimed, before.claimed,
        "looked 9 s on, and claimed nothing: not before its time"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "not before its time");
    assert_eq!(row(&q, id).await.state, JobState::Failed);
    clock.advance(Duration::from_secs(1));
    eventually("second failure recorded", || async {
        row(&q, id).await.attempt == 2 && row(&q, id).await.state == JobState::Failed
    })
    .await;
    assert_eq!(
        row(&q, id).await.run_at,
        t0.plus(Duration::from_secs(10 + 20)),
        "then doubled"
    );

    clock.advance(Duration::from_secs(20));
    let dead = wait(&q, id).await;
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.attempt, 3);
    assert_eq!(dead.error.as_deref(), Some("busy on attempt 3"));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_job_can_set_its_own_attempts_and_a_handler_its_own_delay() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock.clone())
        .max_attempts(10)
        .handler("later", |_: (), _: JobContext| async {
            Err::<(), _>(HandlerError::retry_after(
                "rate limited",
                Duration::from_secs(90),
            ))
        })
        .build()
        .await
        .unwrap();
    let t0 = clock.now();
    let id = q
        .put("later", &(), PutOptions::default().max_attempts(2))
        .await
        .unwrap()
        .id;
    eventually("failed once", || async {
        row(&q, id).await.state == JobState::Failed
    })
    .await;
    assert_eq!(row(&q, id).await.run_at, t0.plus(Duration::from_secs(90)));
    clock.advance(Duration::from_secs(90));
    assert_eq!(
        wait(&q, id).await.state,
        JobState::Dead,
        "its own limit of 2"
    );
}

#[tokio::test]
async fn permanent_failures_and_bad_arguments_are_dead_at_once() {
    let Some(t) = fresh().await else { return };
    let q = DurableQueue::builder(t.store.clone(), "q")
        .width(2)
        .handler("refuse", |_: (), _: JobContext| async {
            Err::<(), _>(HandlerError::permanent("invalid number"))
        })
        .handler("typed", |n: u32, _: JobContext| async move {
            Ok::<_, HandlerError>(n)
        })
        .build()
        .await
        .unwrap();
    let refused = q
        .put("refuse", &(), PutOptions::default())
        .await
        .unwrap()
        .id;
    let mistyped = q
        .put("typed", &"not a number", PutOptions::default())
        .await
        .unwrap()
        .id;
    let refused = wait(&q, refused).await;
    assert_eq!((refused.state, refused.attempt), (JobState::Dead, 1));
    assert_eq!(refused.error.as_deref(), Some("invalid number"));
    let mistyped = wait(&q, mistyped).await;
    assert_eq!(mistyped.state, JobState::Dead);
    let err = mistyped.error.unwrap();
    assert!(
        err.contains("arguments do not fit handler \"typed\"") && err.contains("u32"),
        "{err}"
    );
}

#[tokio::test]
async fn panics_and_timeouts_are_failures_that_retry() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock)
        .width(2)
        .timeout(Duration::from_millis(50))
        .handler("boom", |_: (), _: JobContext| async {
            panic!("kaboom");
            #[allow(unreachable_code)] // the handler's type
            Ok::<(), HandlerError>(())
        })
        .handler("hang", |_: (), _: JobContext| async {
            std::future::pending::<()>().await;
            Ok::<(), HandlerError>(())
        })
        .build()
        .await
        .unwrap();
    let boom = q.put("boom", &(), PutOptions::default()).await.unwrap().id;
    let hang = q.put("hang", &(), PutOptions::default()).await.unwrap().id;
    eventually("both failed", || async {
        row(&q, boom).await.state == JobState::Failed
            && row(&q, hang).await.state == JobState::Failed
    })
    .await;
    assert_eq!(
        row(&q, boom).await.error.as_deref(),
        Some("panicked: kaboom")
    );
    let timed_out = row(&q, hang).await.error.unwrap();
    assert!(timed_out.starts_with("timed out after"), "{timed_out}");
}

#[tokio::test]
async fn unknown_kinds_and_bad_values_are_refused_at_put() {
    let Some(t) = fresh().await else { return };
    let q = DurableQueue::builder(t.store.clone(), "q")
        .handler("send_sms", |_: (), _: JobContext| async {
            Ok::<_, HandlerError>(())
        })
        .build()
        .await
        .unwrap();
    let err = q
        .put("send_fax", &(), PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, DurableError::UnknownKind { .. }));
    assert!(
        err.to_string().contains("send_fax") && err.to_string().contains("send_sms"),
        "{err}"
    );
    let err = q.put("send_sms", &f64::NAN, PutOptions::default()).await;
    // NaN serializes to null in serde_json: still valid JSON, so accepted.
    assert!(err.is_ok());
    assert_eq!(q.counts().await.unwrap().values().sum::<u64>(), 1);
}

/// A scheduled job waits for its time; the producer wakes for it.
#[tokio::test]
async fn scheduled_jobs_run_at_their_time() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock.clone())
        .handler("tick", move |_: (), _: JobContext| {
            r.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, HandlerError>(()) }
        })
        .build()
        .await
        .unwrap();
    let at = clock.now().plus(Duration::from_secs(3600)).to_system_time();
    let id = q
        .put("tick", &(), PutOptions::default().run_at(at))
        .await
        .unwrap()
        .id;
    assert_eq!(row(&q, id).await.state, JobState::Scheduled);
    clock.advance(Duration::from_secs(3599));
    let looked = q.settled().await;
    assert_eq!(
        looked.claimed, 0,
        "a second early: the producer looked and claimed nothing"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    assert_eq!(row(&q, id).await.state, JobState::Scheduled);
    clock.advance(Duration::from_secs(1));
    assert_eq!(wait(&q, id).await.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_key_dedupes_while_its_job_lives() {
    let Some(t) = fresh().await else { return };
    let q = paused_noop_queue(&t).await;
    let a = q
        .put("k", &(), PutOptions::default().key("order-7"))
        .await
        .unwrap();
    let b = q
        .put("k", &(), PutOptions::default().key("order-7"))
        .await
        .unwrap();
    assert!(!a.existing && b.existing && a.id == b.id);
    q.resume().await.unwrap();
    wait(&q, a.id).await;
    let c = q
        .put("k", &(), PutOptions::default().key("order-7"))
        .await
        .unwrap();
    assert!(!c.existing && c.id != a.id, "a finished job frees its key");
}

/// Width 1, paused: jobs launch by priority then put order, and again in
/// that order after a restart.
#[tokio::test]
async fn launch_order_is_priority_then_fifo_across_restarts() {
    let Some(t) = fresh().await else { return };
    let order = Arc::new(Mutex::new(Vec::new()));
    let build = |store, order: Arc<Mutex<Vec<u32>>>| {
        DurableQueue::builder(store, "q")
            .width(1)
            .paused(true)
            .handler("log", move |n: u32, _: JobContext| {
                order.lock().unwrap().push(n);
                async { Ok::<_, HandlerError>(()) }
            })
            .build()
    };
    let q = build(t.store.clone(), order.clone()).await.unwrap();
    let prios = [5, 1, 5, -3, 1, 9, 0];
    let jobs = prios
        .iter()
        .enumerate()
        .map(|(i, p)| JobSpec::new("log", &(i as u32), PutOptions::priority(*p)).unwrap())
        .collect();
    q.put_many(jobs).await.unwrap();
    q.stop(Duration::from_secs(1)).await.unwrap();
    drop(q);
    let t = t.reopen().await;
    let q = build(t.store.clone(), order.clone()).await.unwrap();
    assert!(q.settings().paused, "still paused after the restart");
    q.resume().await.unwrap();
    eventually("all ran", || async {
        order.lock().unwrap().len() == prios.len()
    })
    .await;
    assert_eq!(*order.lock().unwrap(), [3, 6, 1, 4, 0, 2, 5]);
}

#[tokio::test]
async fn runtime_settings_survive_a_restart_until_the_code_changes_them() {
    let Some(t) = fresh().await else { return };
    let build = |store, width: usize| {
        DurableQueue::builder(store, "q")
            .width(width)
            .handler("k", |_: (), _: JobContext| async {
                Ok::<_, HandlerError>(())
            })
            .build()
    };
    let q = build(t.store.clone(), 2).await.unwrap();
    q.set_width(7).await.unwrap();
    q.set_rate(Some(Rate::per_second(5))).await.unwrap();
    q.set_timeout(Some(Duration::from_secs(3))).await.unwrap();
    q.pause().await.unwrap();
    q.stop(Duration::from_secs(1)).await.unwrap();
    drop(q);
    let t = t.reopen().await;
    let q = build(t.store.clone(), 2).await.unwrap();
    let s = q.settings();
    assert_eq!((s.width, s.paused, s.timeout_ms), (7, true, Some(3000)));
    assert_eq!(s.rate.and_then(|r| r.to_rate()), Some(Rate::per_second(5)));
    q.stop(Duration::from_secs(1)).await.unwrap();
    drop(q);
    // The code now declares width 3: that is a deliberate change, it wins.
    let t = t.reopen().await;
    let q = build(t.store.clone(), 3).await.unwrap();
    let s = q.settings();
    assert_eq!((s.width, s.paused, s.rate), (3, false, None));
}

#[tokio::test]
async fn cancel_waiting_and_underway_jobs() {
    let Some(t) = fresh().await else { return };
    let started = Arc::new(tokio::sync::Notify::new());
    let s = started.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .width(1)
        .handler("hang", move |_: (), _: JobContext| {
            let s = s.clone();
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                Ok::<(), HandlerError>(())
            }
        })
        .build()
        .await
        .unwrap();
    let running = q.put("hang", &(), PutOptions::default()).await.unwrap().id;
    let waiting = q.put("hang", &(), PutOptions::default()).await.unwrap().id;
    started.notified().await;
    q.cancel(waiting).await.unwrap();
    assert_eq!(row(&q, waiting).await.state, JobState::Cancelled);
    q.cancel(running).await.unwrap();
    assert_eq!(wait(&q, running).await.state, JobState::Cancelled);
    let err = q.cancel(running).await.unwrap_err();
    assert!(
        matches!(err, DurableError::Finished(_, JobState::Cancelled)),
        "{err}"
    );
    assert!(matches!(
        q.cancel(JobId(12345)).await.unwrap_err(),
        DurableError::NotFound(_)
    ));
}

#[tokio::test]
async fn reprioritize_a_waiting_job() {
    let Some(t) = fresh().await else { return };
    let q = paused_noop_queue(&t).await;
    let id = q.put("k", &(), PutOptions::priority(5)).await.unwrap().id;
    assert_eq!(q.reprioritize(id, -1).await.unwrap(), 5);
    assert_eq!(row(&q, id).await.priority, -1);
    q.resume().await.unwrap();
    wait(&q, id).await;
    assert!(matches!(
        q.reprioritize(id, 0).await.unwrap_err(),
        DurableError::Finished(..)
    ));
}

/// Stop lets jobs finish within the grace period, then returns the rest to
/// pending; after a restart they run again.
#[tokio::test]
async fn stop_returns_unfinished_jobs_to_pending() {
    let Some(t) = fresh().await else { return };
    let build = |store, hang: bool| {
        DurableQueue::builder(store, "q")
            .width(1)
            .handler("job", move |_: (), _: JobContext| async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<(), HandlerError>(())
            })
            .build()
    };
    let q = build(t.store.clone(), true).await.unwrap();
    let a = q.put("job", &(), PutOptions::default()).await.unwrap().id;
    let b = q.put("job", &(), PutOptions::default()).await.unwrap().id;
    eventually("a underway", || async {
        row(&q, a).await.state == JobState::Underway
    })
    .await;
    let report = q.stop(Duration::from_millis(50)).await.unwrap();
    assert_eq!(report.interrupted, 1);
    let a_row = row(&q, a).await;
    assert_eq!((a_row.state, a_row.attempt), (JobState::Pending, 1));
    assert!(a_row.error.unwrap().contains("interrupted"));
    assert_eq!(row(&q, b).await.state, JobState::Pending);
    assert!(matches!(
        q.put("job", &(), PutOptions::default()).await,
        Err(DurableError::Stopped)
    ));
    drop(q);
    let t = t.reopen().await;
    let q = build(t.store.clone(), false).await.unwrap();
    let a_done = wait(&q, a).await;
    assert_eq!((a_done.state, a_done.attempt), (JobState::Succeeded, 2));
    assert_eq!(wait(&q, b).await.attempt, 1);
}

#[tokio::test]
async fn finished_jobs_are_pruned_after_their_retention() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock.clone())
        .retention(Duration::from_secs(3600))
        .handler("k", |_: (), _: JobContext| async {
            Ok::<_, HandlerError>(())
        })
        .build()
        .await
        .unwrap();
    let id = q.put("k", &(), PutOptions::default()).await.unwrap().id;
    wait(&q, id).await;
    clock.advance(Duration::from_secs(1800));
    // The same pass the queue runs every minute, run now.
    assert_eq!(q.prune().await.unwrap(), 0, "within its retention");
    assert!(q.get(id).await.is_ok(), "kept within its retention");
    clock.advance(Duration::from_secs(3600));
    eventually("pruned", || async {
        matches!(q.get(id).await, Err(DurableError::NotFound(_)))
    })
    .await;
}

#[tokio::test]
async fn queues_in_one_store_are_separate() {
    let Some(t) = fresh().await else { return };
    let a = DurableQueue::builder(t.store.clone(), "a")
        .handler("k", |_: (), _: JobContext| async {
            Ok::<_, HandlerError>("from a")
        })
        .build()
        .await
        .unwrap();
    let b = DurableQueue::builder(t.store.clone(), "b")
        .paused(true)
        .handler("k", |_: (), _: JobContext| async {
            Ok::<_, HandlerError>("from b")
        })
        .build()
        .await
        .unwrap();
    let in_a = a.put("k", &(), PutOptions::default()).await.unwrap().id;
    let in_b = b.put("k", &(), PutOptions::default()).await.unwrap().id;
    assert_eq!(wait(&a, in_a).await.result.as_deref(), Some("\"from a\""));
    assert_eq!(
        b.get(in_b).await.unwrap().state,
        JobState::Pending,
        "b is paused"
    );
    assert!(
        matches!(a.get(in_b).await, Err(DurableError::NotFound(_))),
        "a job of b is not a's"
    );
    assert_eq!(
        t.store.counts("a").await.unwrap().get(&JobState::Succeeded),
        Some(&1)
    );
}

/// The rate is applied before claiming: a claimed job starts at once and
/// never spends an attempt waiting for a token.
#[tokio::test]
async fn the_rate_limits_claims_not_just_launches() {
    let Some(t) = fresh().await else { return };
    let q = DurableQueue::builder(t.store.clone(), "q")
        .width(10)
        .rate(Rate::per_second(20))
        .handler("k", |_: (), _: JobContext| async {
            Ok::<_, HandlerError>(())
        })
        .build()
        .await
        .unwrap();
    q.set_rate(Some(Rate::per_minute(1))).await.unwrap();
    let jobs = (0..5)
        .map(|_| JobSpec::new("k", &(), PutOptions::default()).unwrap())
        .collect();
    let ids: Vec<JobId> = q
        .put_many(jobs)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    eventually("the first job ran", || async {
        row(&q, ids[0]).await.state == JobState::Succeeded
    })
    .await;
    // The first job's end woke the producer; it looks again with free
    // width and no token.
    let looked = q.settled().await;
    assert_eq!(looked.claimed, 1, "nothing claimed ahead of its token");
    let counts = q.counts().await.unwrap();
    assert_eq!(
        counts.get(&JobState::Underway),
        None,
        "nothing claimed ahead of its token: {counts:?}"
    );
    assert_eq!(counts.get(&JobState::Pending), Some(&4));
    q.set_rate(None).await.unwrap();
    for id in &ids[1..] {
        assert_eq!(wait(&q, *id).await.attempt, 1);
    }
}

/// Retry policy per queue, per kind, and per job, in that order of weight.
#[tokio::test]
async fn retry_policy_per_queue_kind_and_job() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let fail = |_: (), _: JobContext| async { Err::<(), _>(HandlerError::msg("no")) };
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock.clone())
        .width(3)
        .max_attempts(5)
        .backoff(
            Backoff::constant(Duration::from_secs(100))
                .unwrap()
                .with_jitter(0.0)
                .unwrap(),
        )
        .kind_options(
            "quick",
            rdq_store::KindOptions {
                max_attempts: Some(2),
                backoff: Some(
                    Backoff::constant(Duration::from_secs(7))
                        .unwrap()
                        .with_jitter(0.0)
                        .unwrap(),
                ),
            },
        )
        .handler("slow", fail)
        .handler("quick", fail)
        .build()
        .await
        .unwrap();
    let t0 = clock.now();
    let slow = q.put("slow", &(), PutOptions::default()).await.unwrap().id;
    let quick = q.put("quick", &(), PutOptions::default()).await.unwrap().id;
    let own = q
        .put("quick", &(), PutOptions::default().max_attempts(1))
        .await
        .unwrap()
        .id;
    assert_eq!(
        (
            row(&q, slow).await.max_attempts,
            row(&q, quick).await.max_attempts
        ),
        (5, 2)
    );
    assert_eq!(
        wait(&q, own).await.state,
        JobState::Dead,
        "its own limit: 1"
    );
    eventually("both failed once", || async {
        row(&q, slow).await.state == JobState::Failed
            && row(&q, quick).await.state == JobState::Failed
    })
    .await;
    assert_eq!(
        row(&q, slow).await.run_at,
        t0.plus(Duration::from_secs(100))
    );
    assert_eq!(row(&q, quick).await.run_at, t0.plus(Duration::from_secs(7)));
    clock.advance(Duration::from_secs(7));
    assert_eq!(wait(&q, quick).await.attempt, 2);
}

/// A throttled target (HTTP 429 with Retry-After) holds the whole queue, and
/// the job comes back without spending an attempt.
#[tokio::test]
async fn a_throttle_holds_the_queue_and_spends_no_attempt() {
    let Some(t) = fresh().await else { return };
    let clock = Clock::manual();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .clock(clock.clone())
        .width(4)
        .max_attempts(1)
        .handler("call", move |_: (), _: JobContext| {
            let first = c.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if first {
                    Err(HandlerError::throttle(
                        "429 Too Many Requests",
                        Duration::from_secs(30),
                    ))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .await
        .unwrap();
    let first = q.put("call", &(), PutOptions::default()).await.unwrap().id;
    eventually("throttled", || async {
        row(&q, first).await.state == JobState::Scheduled
    })
    .await;
    let t0 = clock.now();
    assert!(q.held_until().is_some());
    let second = q.put("call", &(), PutOptions::default()).await.unwrap().id;
    let looked = q.settled().await;
    assert_eq!(
        looked.claimed, 1,
        "held: the producer looked and claimed nothing"
    );
    assert_eq!(
        row(&q, second).await.state,
        JobState::Pending,
        "held: nothing launches"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(30));
    let again = wait(&q, first).await;
    assert_eq!(
        (again.state, again.attempt, again.max_attempts),
        (JobState::Succeeded, 2, 2)
    );
    assert!(again.run_at >= t0);
    assert_eq!(wait(&q, second).await.state, JobState::Succeeded);
    assert!(q.held_until().is_none());
}

#[tokio::test]
async fn a_dead_job_can_be_retried() {
    let Some(t) = fresh().await else { return };
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .max_attempts(1)
        .handler("k", move |_: (), _: JobContext| {
            let failing = f.load(Ordering::SeqCst);
            async move {
                if failing {
                    Err(HandlerError::msg("down"))
                } else {
                    Ok(())
                }
            }
        })
        .build()
        .await
        .unwrap();
    let id = q.put("k", &(), PutOptions::default()).await.unwrap().id;
    assert_eq!(wait(&q, id).await.state, JobState::Dead);
    fail.store(false, Ordering::SeqCst);
    q.retry(id).await.unwrap();
    let done = wait(&q, id).await;
    assert_eq!((done.state, done.attempt), (JobState::Succeeded, 2));
    assert!(matches!(
        q.retry(id).await.unwrap_err(),
        DurableError::NotRetryable(_, JobState::Succeeded)
    ));
}

#[tokio::test]
async fn the_attempt_hook_sees_each_verdict() {
    let Some(t) = fresh().await else { return };
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let q = DurableQueue::builder(t.store.clone(), "q")
        .max_attempts(2)
        .backoff(Backoff::constant(Duration::from_millis(1)).unwrap())
        .on_attempt_end(move |end| {
            s.lock()
                .unwrap()
                .push((end.job.attempt, end.outcome, end.run.is_some()));
        })
        .handler("k", |_: (), ctx: JobContext| async move {
            if ctx.attempt == 1 {
                Err(HandlerError::msg("once"))
            } else {
                Ok(())
            }
        })
        .build()
        .await
        .unwrap();
    let id = q.put("k", &(), PutOptions::default()).await.unwrap().id;
    wait(&q, id).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [(1, "failed", true), (2, "succeeded", true)]
    );
}
