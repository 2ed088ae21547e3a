//! Property test of the job state machine, on a real SQLite file.
//!
//! Random sequences of insert / claim / outcome (fresh or stale attempt) /
//! cancel / reprioritize / rescue / time passing run against the store and
//! against a plain model. After every step each job's state, attempt and
//! priority match the model; claims return exactly the model's next jobs in
//! launch order; and a job in a final state never changes again.

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
    Claim(usize),
    Outcome {
        job: usize,
        verdict: Verdict,
        stale: bool,
    },
    Cancel(usize),
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
        3 => (1..4usize).prop_map(Op::Claim),
        4 => (any::<usize>(), verdict, proptest::bool::weighted(0.15))
            .prop_map(|(job, verdict, stale)| Op::Outcome { job, verdict, stale }),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => (any::<usize>(), -2..3i32).prop_map(|(j, p)| Op::Reprioritize(j, p)),
        1 => Just(Op::Rescue),
        2 => (1..15u64).prop_map(Op::Pass),
    ]
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
            Op::Claim(max) => {
                let claimed: Vec<JobId> = store
                    .claim(ClaimParams {
                        queue: "q".into(),
                        max,
                        node: "n".into(),
                        now,
                        lease: Duration::from_secs(3600),
                    })
                    .await
                    .unwrap()
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
                    at: now,
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
            Op::Cancel(i) => {
                let Some(id) = pick(i) else { continue };
                let got = store.cancel(id, now).await.unwrap();
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
                        expired_before: Timestamp(i64::MAX),
                        queue: None,
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
