//! One test suite for every [`Store`] backend (feature `testkit`).
//!
//! Each check takes a fresh, empty store and panics on the first thing that
//! breaks the [`Store`] contract. A backend runs them all with
//! [`store_suite!`](crate::store_suite), which makes one `#[tokio::test]` per
//! check:
//!
//! ```ignore
//! rdq_store::store_suite!(async { make_fresh_store().await });
//! ```
//!
//! The expression may also give a [`SuiteStore`]: `Option<(store, guard)>`,
//! where `None` skips the check (a database server this machine lacks) and
//! the guard is dropped after the store (to drop a test schema).

use std::time::Duration;

use crate::row::{Completion, Finish, JobId, JobState, NewJob, Timestamp};
use crate::store::RetryResult;
use crate::store::{
    CancelResult, ClaimParams, Limit, ListParams, QueueRecord, ReprioritizeResult, RescueParams,
    RescueReport, Store,
};

/// Generates one `#[tokio::test]` per check of [`testkit`](crate::testkit),
/// each on the store the given expression (an `async` block) makes.
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@tests $make;
            claims_come_in_launch_order, claims_are_exclusive, scheduled_jobs_wait_until_due,
            keys_dedupe_live_jobs_only, outcomes_set_states, stale_outcomes_are_ignored,
            cancel_answers_by_state, reprioritize_waiting_jobs_only, rescue_returns_expired_leases,
            heartbeat_extends_leases, list_pages_newest_first, counts_per_state,
            prune_removes_old_finished_jobs_only, queue_records_round_trip,
            finished_events_follow_commits, puts_signal_work, invalid_jobs_are_refused,
            snooze_spends_no_attempt, retry_reopens_failures_only, retry_refuses_a_key_a_live_job_holds,
            oldest_pending_is_the_earliest_runnable, rescue_is_limited_and_idempotent,
            claims_obey_the_width, claims_obey_pause_and_hold, claims_obey_the_rate,
            cancel_oldest_pending_takes_the_first_put_waiting_job);
    };
    (@tests $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let Some((store, guard)) = $crate::testkit::SuiteStore::into_parts($make.await) else {
                    return;
                };
                $crate::testkit::$check(&store).await;
                drop(store);
                drop(guard);
            }
        )*
    };
}

/// What a [`store_suite!`](crate::store_suite) constructor gives: a store,
/// or `Option<(store, guard)>` (`None`: skip the check).
pub trait SuiteStore {
    /// The store under test.
    type Store: Store;
    /// Dropped after the store, when the check ends.
    type Guard;
    /// The store and its guard, or `None` to skip.
    fn into_parts(self) -> Option<(Self::Store, Self::Guard)>;
}

impl<S: Store> SuiteStore for S {
    type Store = S;
    type Guard = ();
    fn into_parts(self) -> Option<(S, ())> {
        Some((self, ()))
    }
}

impl<S: Store, G> SuiteStore for Option<(S, G)> {
    type Store = S;
    type Guard = G;
    fn into_parts(self) -> Option<(S, G)> {
        self
    }
}

const T0: Timestamp = Timestamp(1_700_000_000_000_000);

fn at(secs: u64) -> Timestamp {
    T0.plus(Duration::from_secs(secs))
}

fn job(queue: &str, priority: i32) -> NewJob {
    NewJob {
        queue: queue.to_owned(),
        kind: "k".to_owned(),
        args: "{}".to_owned(),
        priority,
        run_at: None,
        max_attempts: 3,
        key: None,
        timeout: None,
    }
}

fn claim_params(queue: &str, max: usize, now: Timestamp) -> ClaimParams {
    ClaimParams {
        queue: queue.to_owned(),
        max,
        node: "node-a".to_owned(),
        now,
        lease: Duration::from_secs(30),
    }
}

async fn ids<S: Store>(store: &S, jobs: Vec<NewJob>, now: Timestamp) -> Vec<JobId> {
    store
        .insert_many(jobs, now)
        .await
        .expect("insert")
        .into_iter()
        .map(|i| i.id)
        .collect()
}

async fn state<S: Store>(store: &S, id: JobId) -> JobState {
    store.get(id).await.expect("get").expect("job exists").state
}

async fn finish<S: Store>(store: &S, id: JobId, attempt: u32, finish: Finish) {
    store.complete(Completion {
        id,
        attempt,
        finish,
        at: at(10),
    });
    store.flush().await.expect("flush");
}

/// Priority first (lower first), then `run_at`, then id.
pub async fn claims_come_in_launch_order<S: Store>(store: &S) {
    let a = ids(
        store,
        vec![job("q", 5), job("q", 1), job("q", 5), job("q", -2)],
        at(0),
    )
    .await;
    let later = ids(store, vec![job("q", 1)], at(1)).await;
    let claimed: Vec<JobId> = store
        .claim(claim_params("q", 10, at(2)))
        .await
        .expect("claim")
        .jobs
        .into_iter()
        .map(|j| {
            assert_eq!(j.state, JobState::Underway);
            assert_eq!(j.attempt, 1);
            assert_eq!(j.node.as_deref(), Some("node-a"));
            assert_eq!(j.lease_until, Some(at(32)));
            assert_eq!(j.launched_at, Some(at(2)));
            j.id
        })
        .collect();
    assert_eq!(claimed, [a[3], a[1], later[0], a[0], a[2]]);
}

/// A claimed job is not claimed again; queues are separate.
pub async fn claims_are_exclusive<S: Store>(store: &S) {
    ids(store, (0..5).map(|_| job("q", 0)).collect(), at(0)).await;
    ids(store, vec![job("other", 0)], at(0)).await;
    let first = store
        .claim(claim_params("q", 3, at(1)))
        .await
        .expect("claim")
        .jobs;
    let second = store
        .claim(claim_params("q", 10, at(1)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 2);
    assert!(first.iter().all(|j| !second.iter().any(|k| k.id == j.id)));
    assert!(store
        .claim(claim_params("q", 10, at(1)))
        .await
        .expect("claim")
        .jobs
        .is_empty());
    assert_eq!(
        store
            .claim(claim_params("other", 10, at(1)))
            .await
            .expect("claim")
            .jobs
            .len(),
        1
    );
    assert!(store
        .claim(claim_params("q", 0, at(1)))
        .await
        .expect("claim")
        .jobs
        .is_empty());
}

/// A job with a future `run_at` is scheduled, not claimable, until promoted.
pub async fn scheduled_jobs_wait_until_due<S: Store>(store: &S) {
    let mut later = job("q", 0);
    later.run_at = Some(at(60));
    let id = ids(store, vec![later], at(0)).await[0];
    assert_eq!(state(store, id).await, JobState::Scheduled);
    assert_eq!(store.next_due("q").await.expect("next_due"), Some(at(60)));
    assert_eq!(store.promote_due("q", at(59)).await.expect("promote"), 0);
    assert!(store
        .claim(claim_params("q", 1, at(59)))
        .await
        .expect("claim")
        .jobs
        .is_empty());
    assert_eq!(store.promote_due("q", at(60)).await.expect("promote"), 1);
    assert_eq!(store.next_due("q").await.expect("next_due"), None);
    let claimed = store
        .claim(claim_params("q", 1, at(61)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(claimed[0].id, id);
    assert_eq!(claimed[0].run_at, at(60));
}

/// A key dedupes while its job is live; once finished, the key is free.
pub async fn keys_dedupe_live_jobs_only<S: Store>(store: &S) {
    let mut keyed = job("q", 0);
    keyed.key = Some("k1".into());
    let first = store
        .insert_many(vec![keyed.clone()], at(0))
        .await
        .expect("insert");
    let again = store
        .insert_many(vec![keyed.clone(), keyed.clone()], at(1))
        .await
        .expect("insert");
    assert!(!first[0].existing);
    assert!(again.iter().all(|i| i.existing && i.id == first[0].id));
    let mut other_queue = keyed.clone();
    other_queue.queue = "q2".into();
    assert!(
        !store
            .insert_many(vec![other_queue], at(1))
            .await
            .expect("insert")[0]
            .existing
    );
    let claimed = store
        .claim(claim_params("q", 1, at(2)))
        .await
        .expect("claim")
        .jobs;
    assert!(
        store
            .insert_many(vec![keyed.clone()], at(2))
            .await
            .expect("insert")[0]
            .existing
    );
    finish(store, claimed[0].id, 1, Finish::Succeeded { result: None }).await;
    let fresh = store.insert_many(vec![keyed], at(3)).await.expect("insert");
    assert!(!fresh[0].existing);
    assert_ne!(fresh[0].id, first[0].id);
}

/// Each verdict lands in its state with its details.
pub async fn outcomes_set_states<S: Store>(store: &S) {
    let ids = ids(store, (0..6).map(|_| job("q", 0)).collect(), at(0)).await;
    let claimed = store
        .claim(claim_params("q", 6, at(1)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(claimed.len(), 6);
    let verdicts = [
        Finish::Succeeded {
            result: Some("{\"ok\":1}".into()),
        },
        Finish::Retry {
            error: "busy".into(),
            run_at: at(100),
        },
        Finish::Dead {
            error: "bad".into(),
        },
        Finish::Cancelled,
        Finish::Released {
            launched: false,
            error: None,
        },
        Finish::Released {
            launched: true,
            error: Some("interrupted".into()),
        },
    ];
    for (id, verdict) in ids.iter().zip(verdicts) {
        finish(store, *id, 1, verdict).await;
    }
    let rows: Vec<_> = futures_join(store, &ids).await;
    assert_eq!(rows[0].state, JobState::Succeeded);
    assert_eq!(rows[0].result.as_deref(), Some("{\"ok\":1}"));
    assert_eq!(rows[0].finished_at, Some(at(10)));
    assert_eq!(rows[1].state, JobState::Failed);
    assert_eq!(
        (rows[1].error.as_deref(), rows[1].run_at),
        (Some("busy"), at(100))
    );
    assert_eq!(
        (rows[2].state, rows[2].error.as_deref()),
        (JobState::Dead, Some("bad"))
    );
    assert_eq!(rows[3].state, JobState::Cancelled);
    assert_eq!(
        (rows[4].state, rows[4].attempt),
        (JobState::Pending, 0),
        "never launched: not counted"
    );
    assert_eq!(
        (rows[5].state, rows[5].attempt),
        (JobState::Pending, 1),
        "interrupted: counted"
    );
    assert!(rows
        .iter()
        .all(|r| r.node.is_none() && r.lease_until.is_none()));
    // A failed job comes back when due.
    assert_eq!(store.promote_due("q", at(100)).await.expect("promote"), 1);
    let again = store
        .claim(claim_params("q", 10, at(101)))
        .await
        .expect("claim")
        .jobs;
    let again: Vec<(JobId, u32)> = again.iter().map(|j| (j.id, j.attempt)).collect();
    assert!(
        again.contains(&(ids[1], 2))
            && again.contains(&(ids[4], 1))
            && again.contains(&(ids[5], 2))
    );
}

async fn futures_join<S: Store>(store: &S, ids: &[JobId]) -> Vec<crate::row::JobRow> {
    let mut rows = Vec::new();
    for id in ids {
        rows.push(store.get(*id).await.expect("get").expect("exists"));
    }
    rows
}

/// An outcome for an attempt that is no longer current changes nothing.
pub async fn stale_outcomes_are_ignored<S: Store>(store: &S) {
    let id = ids(store, vec![job("q", 0)], at(0)).await[0];
    store
        .claim(claim_params("q", 1, at(1)))
        .await
        .expect("claim");
    let rescued = store
        .rescue(RescueParams {
            expired_before: Some(at(1000)),
            queue: None,
            limit: 0,
        })
        .await
        .expect("rescue");
    assert_eq!(rescued.requeued, 1);
    let second = store
        .claim(claim_params("q", 1, at(2)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(second[0].attempt, 2);
    finish(store, id, 1, Finish::Succeeded { result: None }).await;
    assert_eq!(
        state(store, id).await,
        JobState::Underway,
        "attempt 1 is stale"
    );
    finish(store, id, 2, Finish::Succeeded { result: None }).await;
    assert_eq!(state(store, id).await, JobState::Succeeded);
    finish(
        store,
        id,
        2,
        Finish::Dead {
            error: "late".into(),
        },
    )
    .await;
    assert_eq!(
        state(store, id).await,
        JobState::Succeeded,
        "a final state is final"
    );
}

/// Waiting jobs are cancelled; underway ones are left to their node.
pub async fn cancel_answers_by_state<S: Store>(store: &S) {
    let mut scheduled = job("q", 0);
    scheduled.run_at = Some(at(60));
    let ids = ids(store, vec![job("q", 0), scheduled, job("q", 1)], at(0)).await;
    let claimed = store
        .claim(claim_params("q", 1, at(1)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(claimed[0].id, ids[0]);
    match store.cancel(ids[0], at(2)).await.expect("cancel") {
        CancelResult::Underway(row) => assert_eq!(row.node.as_deref(), Some("node-a")),
        other => panic!("expected Underway, got {other:?}"),
    }
    assert_eq!(
        store.cancel(ids[1], at(2)).await.expect("cancel"),
        CancelResult::Cancelled
    );
    assert_eq!(
        store.cancel(ids[2], at(2)).await.expect("cancel"),
        CancelResult::Cancelled
    );
    assert_eq!(
        store.cancel(ids[2], at(3)).await.expect("cancel"),
        CancelResult::Finished(JobState::Cancelled)
    );
    assert_eq!(
        store.cancel(JobId(999_999), at(3)).await.expect("cancel"),
        CancelResult::NotFound
    );
    assert_eq!(state(store, ids[0]).await, JobState::Underway);
    assert!(store
        .claim(claim_params("q", 10, at(100)))
        .await
        .expect("claim")
        .jobs
        .is_empty());
}

/// `cancel_oldest_pending` cancels the pending job put first, never an
/// underway, scheduled or other queue's job, and says when none is left.
pub async fn cancel_oldest_pending_takes_the_first_put_waiting_job<S: Store>(store: &S) {
    let mut scheduled = job("q", 0);
    scheduled.run_at = Some(at(600));
    let ids = ids(
        store,
        vec![
            job("q", 5),
            job("q", 0),
            scheduled,
            job("other", 0),
            job("q", 9),
        ],
        at(0),
    )
    .await;
    // The first put is claimed: the oldest pending one is then the second.
    let claimed = store
        .claim(claim_params("q", 1, at(1)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(claimed[0].id, ids[1], "priority 0 launches first");
    let mut finished = store.finished_events();
    assert_eq!(
        store
            .cancel_oldest_pending("q", at(2))
            .await
            .expect("cancel"),
        Some(ids[0])
    );
    assert_eq!(finished.recv().await.expect("event"), ids[0]);
    assert_eq!(state(store, ids[0]).await, JobState::Cancelled);
    assert_eq!(
        store
            .cancel_oldest_pending("q", at(3))
            .await
            .expect("cancel"),
        Some(ids[4])
    );
    assert_eq!(
        store
            .cancel_oldest_pending("q", at(4))
            .await
            .expect("cancel"),
        None,
        "only the underway and the scheduled job are left"
    );
    assert_eq!(state(store, ids[1]).await, JobState::Underway);
    assert_eq!(state(store, ids[2]).await, JobState::Scheduled);
    assert_eq!(state(store, ids[3]).await, JobState::Pending);
}

/// Only waiting jobs change priority, and the claim order follows.
pub async fn reprioritize_waiting_jobs_only<S: Store>(store: &S) {
    let ids = ids(store, vec![job("q", 0), job("q", 5), job("q", 5)], at(0)).await;
    store
        .claim(claim_params("q", 1, at(1)))
        .await
        .expect("claim");
    assert_eq!(
        store.reprioritize(ids[0], 9).await.expect("reprioritize"),
        ReprioritizeResult::NotWaiting(JobState::Underway)
    );
    assert_eq!(
        store.reprioritize(ids[2], -1).await.expect("reprioritize"),
        ReprioritizeResult::Changed(5)
    );
    assert_eq!(
        store
            .reprioritize(JobId(999_999), 1)
            .await
            .expect("reprioritize"),
        ReprioritizeResult::NotFound
    );
    let next = store
        .claim(claim_params("q", 1, at(2)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(next[0].id, ids[2]);
}

/// Expired leases come back as pending, or dead on their last attempt.
pub async fn rescue_returns_expired_leases<S: Store>(store: &S) {
    let mut last = job("q", 0);
    last.max_attempts = 1;
    let ids = ids(store, vec![job("q", 0), last], at(0)).await;
    store
        .claim(claim_params("q", 2, at(0)))
        .await
        .expect("claim");
    let none = store
        .rescue(RescueParams {
            expired_before: Some(at(30)),
            queue: None,
            limit: 0,
        })
        .await
        .expect("rescue");
    assert_eq!((none.requeued, none.dead), (0, 0), "leases run to 30 s");
    let report = store
        .rescue(RescueParams {
            expired_before: Some(at(31)),
            queue: Some("q".into()),
            limit: 0,
        })
        .await
        .expect("rescue");
    assert_eq!((report.requeued, report.dead), (1, 1));
    assert_eq!(state(store, ids[0]).await, JobState::Pending);
    let dead = store.get(ids[1]).await.expect("get").expect("exists");
    assert_eq!(dead.state, JobState::Dead);
    assert!(dead
        .error
        .as_deref()
        .is_some_and(|e| e.contains("orphaned")));
}

/// A heartbeat moves the lease of the node's own jobs only, and reports
/// which it holds, which it lost, and which someone asked to cancel.
pub async fn heartbeat_extends_leases<S: Store>(store: &S) {
    let ids = ids(store, vec![job("q", 0), job("q", 0), job("q", 0)], at(0)).await;
    store
        .claim(claim_params("q", 2, at(0)))
        .await
        .expect("claim");
    let report = store
        .heartbeat("node-a", ids.clone(), Duration::from_secs(60), at(30))
        .await
        .expect("heartbeat");
    assert_eq!(report.held, ids[..2].to_vec());
    assert_eq!(report.lost, vec![ids[2]], "never claimed: not held");
    assert!(report.cancel.is_empty());
    let other = store
        .heartbeat("node-b", ids.clone(), Duration::from_secs(500), at(30))
        .await
        .expect("heartbeat");
    assert!(other.held.is_empty());
    assert_eq!(other.lost, ids);
    let rescued = store
        .rescue(RescueParams {
            expired_before: Some(at(60)),
            queue: None,
            limit: 0,
        })
        .await
        .expect("rescue");
    assert_eq!(rescued.requeued, 0);
    assert_eq!(
        store
            .get(ids[0])
            .await
            .expect("get")
            .expect("exists")
            .lease_until,
        Some(at(90))
    );
    // A cancel request for an underway job: recorded, reported, announced.
    let mut cancels = store.cancel_events();
    match store.cancel(ids[1], at(31)).await.expect("cancel") {
        CancelResult::Underway(row) => assert_eq!(row.node.as_deref(), Some("node-a")),
        other => panic!("cancelling an underway job answered {other:?}"),
    }
    let announced = tokio::time::timeout(Duration::from_secs(5), cancels.recv())
        .await
        .expect("a cancel event within 5 s")
        .expect("event");
    assert_eq!(announced, ids[1]);
    let report = store
        .heartbeat("node-a", ids[..2].to_vec(), Duration::from_secs(60), at(32))
        .await
        .expect("heartbeat");
    assert_eq!(report.cancel, vec![ids[1]]);
    assert_eq!(
        state(store, ids[1]).await,
        JobState::Underway,
        "the node cancels it"
    );
    // Rescued after its lease expired: lost to its node, whose late
    // outcome changes nothing.
    store
        .rescue(RescueParams {
            expired_before: Some(at(1000)),
            queue: Some("q".into()),
            limit: 0,
        })
        .await
        .expect("rescue");
    let report = store
        .heartbeat(
            "node-a",
            ids[..2].to_vec(),
            Duration::from_secs(60),
            at(1001),
        )
        .await
        .expect("heartbeat");
    assert!(report.held.is_empty());
    assert_eq!(report.lost, ids[..2].to_vec());
    finish(store, ids[0], 1, Finish::Succeeded { result: None }).await;
    assert_eq!(state(store, ids[0]).await, JobState::Pending);
}

/// A rescue takes at most `limit` jobs; the next takes the rest, once.
pub async fn rescue_is_limited_and_idempotent<S: Store>(store: &S) {
    ids(store, (0..5).map(|_| job("q", 0)).collect(), at(0)).await;
    store
        .claim(claim_params("q", 5, at(0)))
        .await
        .expect("claim");
    let rescue = |limit| RescueParams {
        expired_before: Some(at(100)),
        queue: Some("q".into()),
        limit,
    };
    let first = store.rescue(rescue(3)).await.expect("rescue");
    assert_eq!(first.requeued, 3);
    let second = store.rescue(rescue(0)).await.expect("rescue");
    assert_eq!(second.requeued, 2);
    let third = store.rescue(rescue(0)).await.expect("rescue");
    assert_eq!(third, RescueReport::default());
}

/// Stores a queue record with these settings.
async fn settings<S: Store>(store: &S, queue: &str, settings: serde_json::Value) {
    store
        .save_queue(QueueRecord {
            name: queue.to_owned(),
            declared: serde_json::json!({}),
            settings,
        })
        .await
        .expect("save");
}

/// A claim obeys the queue's stored width over every node's underway jobs,
/// and says so; a committed outcome frees the width.
pub async fn claims_obey_the_width<S: Store>(store: &S) {
    settings(
        store,
        "q",
        serde_json::json!({"width": 3, "paused": false, "rate": null}),
    )
    .await;
    ids(store, (0..6).map(|_| job("q", 0)).collect(), at(0)).await;
    let a = store
        .claim(claim_params("q", 2, at(1)))
        .await
        .expect("claim");
    assert_eq!((a.jobs.len(), a.limited), (2, None));
    let mut b = claim_params("q", 10, at(1));
    b.node = "node-b".into();
    let b1 = store.claim(b.clone()).await.expect("claim");
    assert_eq!((b1.jobs.len(), b1.limited), (1, Some(Limit::Width)));
    let b2 = store.claim(b.clone()).await.expect("claim");
    assert_eq!((b2.jobs.len(), b2.limited), (0, Some(Limit::Width)));
    // An outcome enqueued before the claim frees its place.
    store.complete(Completion {
        id: a.jobs[0].id,
        attempt: 1,
        finish: Finish::Succeeded { result: None },
        at: at(2),
    });
    let b3 = store.claim(b.clone()).await.expect("claim");
    assert_eq!(b3.jobs.len(), 1, "the finished job's place is free");
    // No queue record: no limits.
    ids(store, (0..4).map(|_| job("free", 0)).collect(), at(0)).await;
    let free = store
        .claim(claim_params("free", 10, at(1)))
        .await
        .expect("claim");
    assert_eq!((free.jobs.len(), free.limited), (4, None));
}

/// A paused queue claims nothing; a hold claims nothing until it ends.
pub async fn claims_obey_pause_and_hold<S: Store>(store: &S) {
    settings(
        store,
        "q",
        serde_json::json!({"width": 10, "paused": true, "rate": null}),
    )
    .await;
    ids(store, (0..3).map(|_| job("q", 0)).collect(), at(0)).await;
    let paused = store
        .claim(claim_params("q", 5, at(1)))
        .await
        .expect("claim");
    assert_eq!(
        (paused.jobs.len(), paused.limited),
        (0, Some(Limit::Paused))
    );
    settings(
        store,
        "q",
        serde_json::json!({"width": 10, "paused": false, "rate": null}),
    )
    .await;
    store.hold("q", at(10)).await.expect("hold");
    store
        .hold("q", at(5))
        .await
        .expect("an earlier hold changes nothing");
    let held = store
        .claim(claim_params("q", 5, at(6)))
        .await
        .expect("claim");
    assert_eq!(
        (held.jobs.len(), held.limited),
        (0, Some(Limit::Held { until: at(10) }))
    );
    let after = store
        .claim(claim_params("q", 5, at(10)))
        .await
        .expect("claim");
    assert_eq!(after.jobs.len(), 3);
}

/// The rate is one token bucket per queue: a burst, then a token per
/// period, with the time of the next one when it runs out.
pub async fn claims_obey_the_rate<S: Store>(store: &S) {
    settings(
        store,
        "q",
        serde_json::json!({"width": 100, "paused": false,
            "rate": {"count": 2, "period_ms": 1000, "burst": 3}}),
    )
    .await;
    ids(store, (0..10).map(|_| job("q", 0)).collect(), at(0)).await;
    let first = store
        .claim(claim_params("q", 10, at(1)))
        .await
        .expect("claim");
    assert_eq!(first.jobs.len(), 3, "the burst");
    let next = at(1).plus(Duration::from_millis(500));
    assert_eq!(first.limited, Some(Limit::Rate { next }));
    let mut other = claim_params("q", 10, at(1));
    other.node = "node-b".into();
    let none = store.claim(other).await.expect("claim");
    assert_eq!(
        (none.jobs.len(), none.limited),
        (0, Some(Limit::Rate { next }))
    );
    let later = store
        .claim(claim_params("q", 10, at(2)))
        .await
        .expect("claim");
    assert_eq!(later.jobs.len(), 2, "two tokens a second");
}

/// Newest first, filtered, with an id cursor.
pub async fn list_pages_newest_first<S: Store>(store: &S) {
    let ids = ids(store, (0..7).map(|_| job("q", 0)).collect(), at(0)).await;
    ids_in(store, vec![job("other", 0)]).await;
    store
        .claim(claim_params("q", 2, at(1)))
        .await
        .expect("claim");
    let page = |before: Option<JobId>| ListParams {
        queue: Some("q".into()),
        state: None,
        before,
        limit: 3,
    };
    let p1: Vec<JobId> = store
        .list(page(None))
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(p1, [ids[6], ids[5], ids[4]]);
    let p3: Vec<JobId> = store
        .list(page(Some(ids[1])))
        .await
        .expect("list")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(p3, [ids[0]]);
    let underway = store
        .list(ListParams {
            queue: Some("q".into()),
            state: Some(JobState::Underway),
            before: None,
            limit: 100,
        })
        .await
        .expect("list");
    assert_eq!(
        underway.iter().map(|r| r.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    let all = store
        .list(ListParams {
            limit: 100,
            ..ListParams::default()
        })
        .await
        .expect("list");
    assert_eq!(all.len(), 8);
}

async fn ids_in<S: Store>(store: &S, jobs: Vec<NewJob>) -> Vec<JobId> {
    ids(store, jobs, at(0)).await
}

/// How many jobs of a queue are in each state.
pub async fn counts_per_state<S: Store>(store: &S) {
    ids(store, (0..4).map(|_| job("q", 0)).collect(), at(0)).await;
    let mut later = job("q", 0);
    later.run_at = Some(at(99));
    ids(store, vec![later, job("other", 0)], at(0)).await;
    let claimed = store
        .claim(claim_params("q", 2, at(1)))
        .await
        .expect("claim")
        .jobs;
    finish(store, claimed[0].id, 1, Finish::Succeeded { result: None }).await;
    let counts = store.counts("q").await.expect("counts");
    let get = |s| counts.get(&s).copied().unwrap_or(0);
    assert_eq!(
        (
            get(JobState::Pending),
            get(JobState::Underway),
            get(JobState::Succeeded),
            get(JobState::Scheduled)
        ),
        (2, 1, 1, 1)
    );
    assert_eq!(counts.values().sum::<u64>(), 5);
    assert_eq!(store.pending_count("q").await.expect("pending"), 2);
    assert_eq!(store.pending_count("other").await.expect("pending"), 1);
    assert_eq!(store.pending_count("none").await.expect("pending"), 0);
}

/// Only finished jobs older than the cut-off go, a limited batch at a time.
pub async fn prune_removes_old_finished_jobs_only<S: Store>(store: &S) {
    let ids = ids(store, (0..4).map(|_| job("q", 0)).collect(), at(0)).await;
    store
        .claim(claim_params("q", 3, at(1)))
        .await
        .expect("claim");
    for id in &ids[..2] {
        finish(store, *id, 1, Finish::Succeeded { result: None }).await;
    }
    assert_eq!(
        store.prune("q", at(10), 10).await.expect("prune"),
        0,
        "finished at 10 s, not before"
    );
    assert_eq!(store.prune("other", at(11), 10).await.expect("prune"), 0);
    assert_eq!(store.prune("q", at(11), 1).await.expect("prune"), 1);
    assert_eq!(store.prune("q", at(11), 10).await.expect("prune"), 1);
    assert!(store.get(ids[0]).await.expect("get").is_none());
    assert_eq!(state(store, ids[2]).await, JobState::Underway);
    assert_eq!(state(store, ids[3]).await, JobState::Pending);
    // Ids are never reused, even after the newest job is pruned.
    let claimed = store
        .claim(claim_params("q", 10, at(12)))
        .await
        .expect("claim")
        .jobs;
    for j in claimed {
        finish(store, j.id, j.attempt, Finish::Cancelled).await;
    }
    store.prune("q", at(100), 100).await.expect("prune");
    let next = ids_in(store, vec![job("q", 0)]).await;
    assert!(next[0] > ids[3]);
}

/// Settings are stored and replaced whole.
pub async fn queue_records_round_trip<S: Store>(store: &S) {
    assert_eq!(store.load_queue("q").await.expect("load"), None);
    let rec = QueueRecord {
        name: "q".into(),
        declared: serde_json::json!({"width": 1}),
        settings: serde_json::json!({"width": 4}),
    };
    store.save_queue(rec.clone()).await.expect("save");
    assert_eq!(
        store.load_queue("q").await.expect("load"),
        Some(rec.clone())
    );
    let changed = QueueRecord {
        settings: serde_json::json!({"width": 9}),
        ..rec
    };
    store.save_queue(changed.clone()).await.expect("save");
    assert_eq!(store.load_queue("q").await.expect("load"), Some(changed));
}

/// Final outcomes (and cancels) are announced once committed.
pub async fn finished_events_follow_commits<S: Store>(store: &S) {
    let ids = ids(store, vec![job("q", 0), job("q", 0), job("q", 0)], at(0)).await;
    let mut events = store.finished_events();
    store
        .claim(claim_params("q", 2, at(1)))
        .await
        .expect("claim");
    finish(
        store,
        ids[0],
        1,
        Finish::Retry {
            error: "x".into(),
            run_at: at(50),
        },
    )
    .await;
    finish(store, ids[1], 1, Finish::Succeeded { result: None }).await;
    store.cancel(ids[2], at(2)).await.expect("cancel");
    let mut seen = Vec::new();
    while let Ok(Ok(id)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        seen.push(id);
    }
    assert_eq!(seen, [ids[1], ids[2]], "a retry is not final");
}

/// A put wakes whoever waits for work on its queue.
pub async fn puts_signal_work<S: Store>(store: &S) {
    let signal = store.work_signal("q");
    let waiter = tokio::spawn({
        let signal = signal.clone();
        async move { signal.notified().await }
    });
    tokio::task::yield_now().await;
    ids(store, vec![job("q", 0)], at(0)).await;
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .expect("waiter ran");
}

/// Nothing is stored for a job nobody could run.
pub async fn invalid_jobs_are_refused<S: Store>(store: &S) {
    let mut bad_args = job("q", 0);
    bad_args.args = "{not json".into();
    let mut no_attempts = job("q", 0);
    no_attempts.max_attempts = 0;
    let mut no_kind = job("q", 0);
    no_kind.kind = String::new();
    for bad in [bad_args, no_attempts, no_kind] {
        let err = store
            .insert_many(vec![job("q", 0), bad], at(0))
            .await
            .unwrap_err();
        assert!(matches!(err, crate::StoreError::Invalid(_)), "{err}");
    }
    assert_eq!(
        store
            .counts("q")
            .await
            .expect("counts")
            .values()
            .sum::<u64>(),
        0,
        "all or nothing"
    );
}

/// A snoozed job is scheduled again, and its attempt is given back by a
/// larger `max_attempts`.
pub async fn snooze_spends_no_attempt<S: Store>(store: &S) {
    let mut one = job("q", 0);
    one.max_attempts = 1;
    let id = ids(store, vec![one], at(0)).await[0];
    store
        .claim(claim_params("q", 1, at(1)))
        .await
        .expect("claim");
    finish(
        store,
        id,
        1,
        Finish::Snooze {
            error: "429".into(),
            run_at: at(40),
        },
    )
    .await;
    let row = store.get(id).await.expect("get").expect("exists");
    assert_eq!(
        (row.state, row.attempt, row.max_attempts),
        (JobState::Scheduled, 1, 2)
    );
    assert_eq!((row.run_at, row.error.as_deref()), (at(40), Some("429")));
    assert_eq!(store.promote_due("q", at(40)).await.expect("promote"), 1);
    let again = store
        .claim(claim_params("q", 1, at(41)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!((again[0].attempt, again[0].max_attempts), (2, 2));
}

/// Failed, dead and cancelled jobs can run again; others cannot.
pub async fn retry_reopens_failures_only<S: Store>(store: &S) {
    let mut once = job("q", 0);
    once.max_attempts = 1;
    let ids = ids(store, vec![once, job("q", 0), job("q", 0)], at(0)).await;
    store
        .claim(claim_params("q", 2, at(1)))
        .await
        .expect("claim");
    finish(store, ids[0], 1, Finish::Dead { error: "x".into() }).await;
    finish(store, ids[1], 1, Finish::Succeeded { result: None }).await;
    assert_eq!(
        store.retry(ids[0], at(20)).await.expect("retry"),
        RetryResult::Retried
    );
    let row = store.get(ids[0]).await.expect("get").expect("exists");
    assert_eq!(
        (row.state, row.run_at, row.max_attempts),
        (JobState::Pending, at(20), 2)
    );
    assert_eq!(
        store.retry(ids[1], at(20)).await.expect("retry"),
        RetryResult::NotRetryable(JobState::Succeeded)
    );
    assert_eq!(
        store.retry(ids[2], at(20)).await.expect("retry"),
        RetryResult::NotRetryable(JobState::Pending)
    );
    assert_eq!(
        store.retry(JobId(999_999), at(20)).await.expect("retry"),
        RetryResult::NotFound
    );
    let again = store
        .claim(claim_params("q", 1, at(21)))
        .await
        .expect("claim")
        .jobs;
    assert_eq!(
        (again[0].id, again[0].attempt),
        (ids[2], 1),
        "the retried one queues by its new run_at"
    );
}

/// A finished job whose key a newer live job now holds is not retried (two
/// live jobs would share the key): the answer names the holder, and nothing
/// changes.
pub async fn retry_refuses_a_key_a_live_job_holds<S: Store>(store: &S) {
    let mut keyed = job("q", 0);
    keyed.key = Some("k1".into());
    let old = ids(store, vec![keyed.clone()], at(0)).await[0];
    assert_eq!(
        store.cancel(old, at(1)).await.expect("cancel"),
        CancelResult::Cancelled
    );
    let live = ids(store, vec![keyed], at(2)).await[0];
    assert_ne!(live, old);
    assert_eq!(
        store.retry(old, at(3)).await.expect("retry"),
        RetryResult::KeyHeld(live)
    );
    let row = store.get(old).await.expect("get").expect("exists");
    assert_eq!(row.state, JobState::Cancelled, "nothing changed");
    // Once the holder is final, the old job may run again.
    assert_eq!(
        store.cancel(live, at(4)).await.expect("cancel"),
        CancelResult::Cancelled
    );
    assert_eq!(
        store.retry(old, at(5)).await.expect("retry"),
        RetryResult::Retried
    );
}

/// The oldest pending job by the time it became runnable.
pub async fn oldest_pending_is_the_earliest_runnable<S: Store>(store: &S) {
    assert_eq!(store.oldest_pending("q").await.expect("oldest"), None);
    ids(store, vec![job("q", 9)], at(5)).await;
    ids(store, vec![job("q", -1)], at(7)).await;
    assert_eq!(
        store.oldest_pending("q").await.expect("oldest"),
        Some(at(5))
    );
    store
        .claim(claim_params("q", 1, at(8)))
        .await
        .expect("claim"); // takes priority -1
    assert_eq!(
        store.oldest_pending("q").await.expect("oldest"),
        Some(at(5))
    );
}
