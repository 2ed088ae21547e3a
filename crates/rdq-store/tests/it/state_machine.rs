//! Property test of the job state machine, on a real SQLite file.
//!
//! Random sequences of insert / claim / outcome (fresh or stale attempt) /
//! cancel / reprioritize / rescue / time passing run against the store and
//! against a plain model. After every step each job's state, attempt and
//! priority match the model; claims return exactly the model's next jobs in
//! launch order; a job in a final state never changes again; and every job's
//! timeline is in order: `queued_at ≤ launched_at ≤ finished_at`.
//!
//! Claims, outcomes and cancels carry clock readings that may lag the time of
//! the puts before them by up to a second: a producer reads the time, then
//! waits for the writer while a put is stamped and committed (how the demo
//! once showed jobs launched 357 ms before they were queued).

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::{
    CancelResult, ClaimParams, Completion, Finish, JobId, JobState, NewJob, ReprioritizeResult,
    RescueParams, Store, Timestamp,
};

#[derive(Debug, Clone)]
enum Verdict {
    Ok,
    Retry(u64),
    Dead,
    Cancelled,
    Unlaunched,
    Interrupted,
    Snooze(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        priority: i32,
        delay: Option<u64>,
        max_attempts: u32,
    },
    /// At most this many, with a clock reading this many ms behind.
    Claim(usize, u64),
    Outcome {
        job: usize,
        verdict: Verdict,
        stale: bool,
        /// The reading's lag, in ms.
        lag: u64,
    },
    Cancel(usize, u64),
    Retry(usize),
    Reprioritize(usize, i32),
    Rescue,
    Pass(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let verdict = prop_oneof![
        3 => Just(Verdict::Ok),
        2 => (1..30u64).prop_map(Verdict::Retry),
        1 => Just(Verdict::Dead),
        1 => Just(Verdict::Cancelled),
        1 => Just(Verdict::Unlaunched),
        1 => Just(Verdict::Interrupted),
        1 => (1..30u64).prop_map(Verdict::Snooze),
    ];
    prop_oneof![
        4 => (-2..3i32, proptest::option::weighted(0.3, 1..20u64), 1..4u32)
            .prop_map(|(priority, delay, max_attempts)| Op::Insert { priority, delay, max_attempts }),
        3 => (1..4usize, lag()).prop_map(|(max, lag)| Op::Claim(max, lag)),
        4 => (any::<usize>(), verdict, proptest::bool::weighted(0.15), lag())
            .prop_map(|(job, verdict, stale, lag)| Op::Outcome { job, verdict, stale, lag }),
        1 => (any::<usize>(), lag()).prop_map(|(j, lag)| Op::Cancel(j, lag)),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => (any::<usize>(), -2..3i32).prop_map(|(j, p)| Op::Reprioritize(j, p)),
        1 => Just(Op::Rescue),
        2 => (1..15u64).prop_map(Op::Pass),
    ]
}

/// How far behind the latest put a clock reading may be, in ms: mostly not.
fn lag() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(0u64), 1 => 1..1000u64]
}

/// A reading `lag_ms` behind `now`.
fn behind(now: Timestamp, lag_ms: u64) -> Timestamp {
    Timestamp(now.0 - lag_ms as i64 * 1000)
}

/// `queued_at ≤ launched_at ≤ finished_at`, each where present.
fn timeline_in_order(row: &rdq_store::JobRow) -> Result<(), TestCaseError> {
    let launched = row.launched_at.unwrap_or(row.queued_at);
    prop_assert!(
        row.queued_at <= launched && row.finished_at.is_none_or(|f| launched <= f),
        "job {} out of order: queued {:?}, launched {:?}, finished {:?}",
        row.id,
        row.queued_at,
        row.launched_at,
        row.finished_at
    );
    Ok(())
}

#[derive(Debug, Clone)]
struct Model {
    state: JobState,
    attempt: u32,
    max_attempts: u32,
    priority: i32,
    run_at: Timestamp,
}

const T0: Timestamp = Timestamp(1_700_000_000_000_000);

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("sm.db"), SqliteOptions::default())
        .await
        .unwrap();
    let mut model: BTreeMap<JobId, Model> = BTreeMap::new();
    let mut now = T0;
    for op in ops {
        let pick = |i: usize| model.keys().nth(i % model.len().max(1)).copied();
        match op {
            Op::Insert {
                priority,
                delay,
                max_attempts,
            } => {
                let run_at = delay.map(|d| now.plus(Duration::from_secs(d)));
                let job = NewJob {
                    queue: "q".into(),
                    kind: "k".into(),
                    args: "null".into(),
                    priority,
                    run_at,
                    max_attempts,
                    key: None,
                    timeout: None,
                };
                let id = store.insert_many(vec![job], now).await.unwrap()[0].id;
                let state = if delay.is_some() {
                    JobState::Scheduled
                } else {
                    JobState::Pending
                };
                model.insert(
                    id,
                    Model {
                        state,
                        attempt: 0,
                        max_attempts,
                        priority,
                        run_at: run_at.unwrap_or(now),
                    },
                );
            }
            Op::Claim(max, lag) => {
                let claimed: Vec<JobId> = store
                    .claim(ClaimParams {
                        queue: "q".into(),
                        max,
                        node: "n".into(),
                        now: behind(now, lag),
                        lease: Duration::from_secs(3600),
                    })
                    .await
                    .unwrap()
                    .jobs
                    .iter()
                    .map(|j| j.id)
                    .collect();
                let mut ready: Vec<(i32, Timestamp, JobId)> = model
                    .iter()
                    .filter(|(_, m)| m.state == JobState::Pending)
                    .map(|(id, m)| (m.priority, m.run_at, *id))
                    .collect();
                ready.sort();
                let want: Vec<JobId> = ready.iter().take(max).map(|(_, _, id)| *id).collect();
                prop_assert_eq!(&claimed, &want, "claim order");
                for id in want {
                    let m = model.get_mut(&id).unwrap();
                    m.state = JobState::Underway;
                    m.attempt += 1;
                }
            }
            Op::Outcome {
                job,
                verdict,
                stale,
                lag,
            } => {
                let Some(id) = pick(job) else { continue };
                let m = model[&id].clone();
                let attempt = if stale {
                    m.attempt.saturating_sub(1)
                } else {
                    m.attempt
                };
                let finish = match &verdict {
                    Verdict::Ok => Finish::Succeeded { result: None },
                    Verdict::Retry(s) => Finish::Retry {
                        error: "e".into(),
                        run_at: now.plus(Duration::from_secs(*s)),
                    },
                    Verdict::Dead => Finish::Dead { error: "e".into() },
                    Verdict::Cancelled => Finish::Cancelled,
                    Verdict::Unlaunched => Finish::Released {
                        launched: false,
                        error: None,
                    },
                    Verdict::Interrupted => Finish::Released {
                        launched: true,
                        error: Some("i".into()),
                    },
                    Verdict::Snooze(s) => Finish::Snooze {
                        error: "z".into(),
                        run_at: now.plus(Duration::from_secs(*s)),
                    },
                };
                store.complete(Completion {
                    id,
                    attempt,
                    finish,
                    at: behind(now, lag),
                });
                store.flush().await.unwrap();
                if m.state == JobState::Underway && attempt == m.attempt {
                    let m = model.get_mut(&id).unwrap();
                    match verdict {
                        Verdict::Ok => m.state = JobState::Succeeded,
                        Verdict::Retry(s) => {
                            m.state = JobState::Failed;
                            m.run_at = now.plus(Duration::from_secs(s));
                        }
                        Verdict::Dead => m.state = JobState::Dead,
                        Verdict::Cancelled => m.state = JobState::Cancelled,
                        Verdict::Unlaunched => {
                            m.state = JobState::Pending;
                            m.attempt -= 1;
                        }
                        Verdict::Interrupted => m.state = JobState::Pending,
                        Verdict::Snooze(s) => {
                            m.state = JobState::Scheduled;
                            m.run_at = now.plus(Duration::from_secs(s));
                            m.max_attempts += 1;
                        }
                    }
                }
            }
            Op::Cancel(i, lag) => {
                let Some(id) = pick(i) else { continue };
                let got = store.cancel(id, behind(now, lag)).await.unwrap();
                let m = model.get_mut(&id).unwrap();
                match m.state {
                    JobState::Underway => prop_assert!(matches!(got, CancelResult::Underway(_))),
                    st if st.is_final() => prop_assert_eq!(got, CancelResult::Finished(st)),
                    _ => {
                        prop_assert_eq!(got, CancelResult::Cancelled);
                        m.state = JobState::Cancelled;
                    }
                }
            }
            Op::Retry(i) => {
                let Some(id) = pick(i) else { continue };
                let got = store.retry(id, now).await.unwrap();
                let m = model.get_mut(&id).unwrap();
                if matches!(
                    m.state,
                    JobState::Failed | JobState::Dead | JobState::Cancelled
                ) {
                    prop_assert_eq!(got, rdq_store::RetryResult::Retried);
                    m.state = JobState::Pending;
                    m.run_at = now;
                    m.max_attempts = m.max_attempts.max(m.attempt + 1);
                } else {
                    prop_assert_eq!(got, rdq_store::RetryResult::NotRetryable(m.state));
                }
            }
            Op::Reprioritize(i, p) => {
                let Some(id) = pick(i) else { continue };
                let got = store.reprioritize(id, p).await.unwrap();
                let m = model.get_mut(&id).unwrap();
                if matches!(
                    m.state,
                    JobState::Scheduled | JobState::Pending | JobState::Failed
                ) {
                    prop_assert_eq!(got, ReprioritizeResult::Changed(m.priority));
                    m.priority = p;
                } else {
                    prop_assert_eq!(got, ReprioritizeResult::NotWaiting(m.state));
                }
            }
            Op::Rescue => {
                let report = store
                    .rescue(RescueParams {
                        expired_before: Some(Timestamp(i64::MAX)),
                        queue: None,
                        limit: 0,
                    })
                    .await
                    .unwrap();
                let (mut requeued, mut dead) = (0, 0);
                for m in model.values_mut().filter(|m| m.state == JobState::Underway) {
                    if m.attempt >= m.max_attempts {
                        m.state = JobState::Dead;
                        dead += 1;
                    } else {
                        m.state = JobState::Pending;
                        requeued += 1;
                    }
                }
                prop_assert_eq!((report.requeued, report.dead), (requeued, dead));
            }
            Op::Pass(secs) => {
                now = now.plus(Duration::from_secs(secs));
                let promoted = store.promote_due("q", now).await.unwrap();
                let mut want = 0;
                for m in model.values_mut() {
                    if matches!(m.state, JobState::Scheduled | JobState::Failed) && m.run_at <= now
                    {
                        m.state = JobState::Pending;
                        want += 1;
                    }
                }
                prop_assert_eq!(promoted, want, "promoted");
            }
        }
        for (id, m) in &model {
            let row = store.get(*id).await.unwrap().unwrap();
            prop_assert_eq!(
                (row.state, row.attempt, row.priority, row.max_attempts),
                (m.state, m.attempt, m.priority, m.max_attempts),
                "job {}",
                id
            );
            timeline_in_order(&row)?;
        }
    }
    store.close().await.unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn store_follows_the_state_machine(ops in proptest::collection::vec(op(), 1..50)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops))?;
    }
}

/// The demo's ordering, reproduced: a producer reads the time, a put is
/// stamped 357 ms later and commits, then the producer's claim (carrying the
/// older reading) takes the new job, and its outcome carries an older reading
/// still. The stored timeline must stay in order anyway.
#[test]
fn a_claim_with_a_reading_older_than_the_put_still_launches_after_it() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        let read_by_producer = T0;
        let put_at = T0.plus(Duration::from_millis(357));
        let job = NewJob {
            queue: "q".into(),
            kind: "k".into(),
            args: "null".into(),
            priority: -1,
            run_at: None,
            max_attempts: 1,
            key: None,
            timeout: None,
        };
        let id = store.insert_many(vec![job], put_at).await.unwrap()[0].id;
        let claimed = store
            .claim(ClaimParams {
                queue: "q".into(),
                max: 1,
                node: "n".into(),
                now: read_by_producer,
                lease: Duration::from_secs(60),
            })
            .await
            .unwrap()
            .jobs;
        assert_eq!(claimed.len(), 1);
        assert!(
            claimed[0].launched_at >= Some(put_at),
            "claimed with launched_at {:?} before queued_at {put_at:?}",
            claimed[0].launched_at
        );
        store.complete(Completion {
            id,
            attempt: 1,
            finish: Finish::Succeeded { result: None },
            at: read_by_producer,
        });
        store.flush().await.unwrap();
        let row = store.get(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Succeeded);
        assert_eq!(
            row.launched_at, claimed[0].launched_at,
            "memory and store agree"
        );
        timeline_in_order(&row).unwrap();
        store.close().await.unwrap();
    });
}
