//! Model-based test of the dispatch queue.
//!
//! Random sequences of put / cancel / reprioritize / set_width / pause /
//! resume / job completion / stop run against the real queue and against a
//! plain reference model (a sorted `Vec` and a few flags). After every step:
//! the launch order so far is exactly the model's (priority, then put order,
//! launching only while underway < width), and `size()`, `pending()` and
//! `underway()` agree with the model. At the end every handle has resolved,
//! with the outcome the model predicts, and every `stop()` returned exactly
//! the jobs the model had pending, in order. A second property runs the
//! same with a bound on pending jobs, refusing or dropping the oldest.

use std::collections::HashMap;

use proptest::prelude::*;
use rdq::{JobError, JobHandle, JobId, Outcome, PutError, StopMode, StoppedError};

use crate::support::{ids, now_or_never, settle, Gates};

#[derive(Debug, Clone)]
enum Op {
    Put(i32),
    Cancel(usize),
    Reprioritize(usize, i32),
    SetWidth(usize),
    Pause,
    Resume(Option<usize>),
    /// The n-th underway job (mod the count) finishes, Ok or Err.
    Finish(usize, bool),
    Stop(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (-2..3i32).prop_map(Op::Put),
        2 => any::<usize>().prop_map(Op::Cancel),
        2 => (any::<usize>(), -2..3i32).prop_map(|(i, p)| Op::Reprioritize(i, p)),
        2 => (0..5usize).prop_map(Op::SetWidth),
        1 => Just(Op::Pause),
        1 => proptest::option::of(0..5usize).prop_map(Op::Resume),
        8 => (any::<usize>(), any::<bool>()).prop_map(|(i, ok)| Op::Finish(i, ok)),
        1 => any::<bool>().prop_map(Op::Stop),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Ok(u64),
    Failed,
    Cancelled,
    NotRun,
    Dropped,
}

#[derive(Debug, Default)]
struct Model {
    /// Sorted by (priority, id).
    pending: Vec<(i32, u64)>,
    underway: Vec<u64>,
    width: usize,
    paused: bool,
    stopped: bool,
    launched: Vec<u64>,
    outcomes: HashMap<u64, Expect>,
    next: u64,
    /// `max_pending`, and whether a full queue drops its oldest job.
    bound: Option<(usize, bool)>,
}

impl Model {
    fn fill(&mut self) {
        self.pending.sort();
        while !self.paused
            && !self.stopped
            && self.underway.len() < self.width
            && !self.pending.is_empty()
        {
            let (_, id) = self.pending.remove(0);
            self.underway.push(id);
            self.launched.push(id);
        }
    }

    fn pending_ids(&self) -> Vec<u64> {
        self.pending.iter().map(|(_, id)| *id).collect()
    }
}

type Handle = JobHandle<u64, u64, String>;

async fn run_case(
    width: usize,
    bound: Option<(usize, bool)>,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let gates = Gates::new();
    let mut builder = rdq::DispatchQueue::builder(gates.job()).width(width);
    if let Some((max, drop_oldest)) = bound {
        builder = builder.max_pending(max).drop_oldest(drop_oldest);
    }
    let q = builder.build();
    let mut m = Model {
        width,
        next: 1,
        bound,
        ..Model::default()
    };
    let mut handles: HashMap<u64, Handle> = HashMap::new();
    // The queue's id of the model's job n (args are 1, 2, 3, …; ids are
    // unique in the process, so they need not start at 1).
    let mut real: Vec<Option<JobId>> = Vec::new();
    let mut stops = Vec::new();

    for op in ops {
        match op {
            Op::Put(p) => {
                let r = q.put(m.next, p);
                if m.stopped {
                    prop_assert!(matches!(r, Err(PutError::Stopped(_))));
                    continue;
                }
                m.pending.push((p, m.next));
                m.fill();
                let mut refused = false;
                if let Some((max, drop_oldest)) = m.bound {
                    if m.pending.len() > max {
                        let victim = if drop_oldest {
                            m.pending.iter().map(|(_, id)| *id).min()
                        } else {
                            Some(m.next)
                        };
                        let victim = victim.expect("a full queue holds a pending job");
                        m.pending.retain(|(_, id)| *id != victim);
                        if drop_oldest {
                            m.outcomes.insert(victim, Expect::Dropped);
                        } else {
                            refused = true;
                        }
                    }
                }
                if refused {
                    prop_assert!(matches!(r, Err(PutError::Full(arg, _)) if arg == m.next));
                    // The refused job keeps its number in the model; the
                    // queue still issued it an id, which is never used.
                    real.push(None);
                    m.next += 1;
                    continue;
                }
                let h = r.map_err(|e| TestCaseError::fail(format!("put failed: {e}")))?;
                if let Some(last) = real.iter().rev().flatten().next() {
                    prop_assert!(h.id().get() > last.get(), "ids grow with put order");
                }
                real.push(Some(h.id()));
                handles.insert(m.next, h);
                m.next += 1;
            }
            Op::Cancel(i) if m.next > 1 => {
                let id = 1 + (i as u64) % (m.next - 1);
                let Some(jid) = real[id as usize - 1] else {
                    continue; // a refused put
                };
                let r = q.cancel(jid);
                if let Some(pos) = m.pending.iter().position(|(_, j)| *j == id) {
                    prop_assert_eq!(r, Ok(()));
                    m.pending.remove(pos);
                    m.outcomes.insert(id, Expect::Cancelled);
                } else if let Some(pos) = m.underway.iter().position(|j| *j == id) {
                    prop_assert_eq!(r, Ok(()));
                    m.underway.remove(pos);
                    m.outcomes.insert(id, Expect::Cancelled);
                } else {
                    prop_assert_eq!(r, Err(JobError::Finished(jid)));
                }
            }
            Op::Reprioritize(i, p) if m.next > 1 => {
                let id = 1 + (i as u64) % (m.next - 1);
                let Some(jid) = real[id as usize - 1] else {
                    continue; // a refused put
                };
                let r = q.reprioritize(jid, p);
                if let Some(entry) = m.pending.iter_mut().find(|(_, j)| *j == id) {
                    prop_assert_eq!(r, Ok(entry.0));
                    entry.0 = p;
                } else if m.underway.contains(&id) {
                    prop_assert_eq!(r, Err(JobError::Underway(jid)));
                } else {
                    prop_assert_eq!(r, Err(JobError::Finished(jid)));
                }
            }
            Op::SetWidth(w) => {
                let r = q.set_width(w);
                if m.stopped {
                    prop_assert_eq!(r, Err(StoppedError));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    m.width = w;
                }
                prop_assert_eq!(q.width(), m.width, "width()");
            }
            Op::Pause => {
                drop(q.pause());
                m.paused = true;
            }
            Op::Resume(w) => {
                let r = q.resume(w);
                if m.stopped {
                    prop_assert_eq!(r, Err(StoppedError));
                } else {
                    prop_assert_eq!(r, Ok(()));
                    m.paused = false;
                    if let Some(w) = w {
                        m.width = w;
                    }
                }
            }
            Op::Finish(i, ok) if !m.underway.is_empty() => {
                let id = m.underway.remove(i % m.underway.len());
                if ok {
                    gates.finish(id, Ok(id * 10));
                    m.outcomes.insert(id, Expect::Ok(id * 10));
                } else {
                    gates.finish(id, Err(format!("job {id} failed")));
                    m.outcomes.insert(id, Expect::Failed);
                }
            }
            Op::Stop(cancel) => {
                let mode = if cancel {
                    StopMode::CancelUnderway
                } else {
                    StopMode::Wait
                };
                stops.push((Box::pin(q.stop(mode)), m.pending_ids_sorted()));
                m.stopped = true;
                for (_, id) in m.pending.drain(..) {
                    m.outcomes.insert(id, Expect::NotRun);
                }
                if cancel {
                    for id in m.underway.drain(..) {
                        m.outcomes.insert(id, Expect::Cancelled);
                    }
                }
            }
            _ => continue,
        }
        m.fill();
        settle().await;
        prop_assert_eq!(&gates.started(), &m.launched, "launch order");
        prop_assert_eq!(q.size(), (m.underway.len(), m.pending.len()), "size()");
        prop_assert_eq!(ids(&q.pending()), m.pending_ids(), "pending()");
        let prios: Vec<i32> = q.pending().iter().map(|i| i.priority).collect();
        prop_assert_eq!(prios, m.pending.iter().map(|(p, _)| *p).collect::<Vec<_>>());
        prop_assert_eq!(ids(&q.underway()), m.underway.clone(), "underway()");
    }

    // Wind down: finish what runs, then stop.
    for id in std::mem::take(&mut m.underway) {
        gates.finish(id, Ok(id * 10));
        m.outcomes.insert(id, Expect::Ok(id * 10));
    }
    stops.push((Box::pin(q.stop(StopMode::Wait)), m.pending_ids_sorted()));
    for (_, id) in m.pending.drain(..) {
        m.outcomes.insert(id, Expect::NotRun);
    }
    settle().await;

    for (i, (mut stop, want)) in stops.into_iter().enumerate() {
        let unrun = now_or_never(&mut stop)
            .ok_or_else(|| TestCaseError::fail("a stop() never resolved"))?;
        let got: Vec<u64> = unrun.iter().map(|j| j.arg).collect();
        // Only the first stop finds pending jobs; later ones return nothing.
        let want = if i == 0 { want } else { Vec::new() };
        prop_assert_eq!(got, want, "stop() #{} returned", i);
    }
    let refused = real.iter().filter(|j| j.is_none()).count() as u64;
    prop_assert_eq!(handles.len() as u64, m.next - 1 - refused);
    for (id, mut h) in handles {
        let job = now_or_never(&mut h)
            .ok_or_else(|| TestCaseError::fail(format!("handle {id} never resolved")))?;
        let got = match job.outcome {
            Outcome::Ok(v) => Expect::Ok(v),
            Outcome::Failed(_) => Expect::Failed,
            Outcome::Cancelled => Expect::Cancelled,
            Outcome::NotRun => Expect::NotRun,
            Outcome::Dropped => Expect::Dropped,
            other => {
                return Err(TestCaseError::fail(format!(
                    "job {id}: unexpected {other:?}"
                )))
            }
        };
        prop_assert_eq!(Some(&got), m.outcomes.get(&id), "outcome of job {}", id);
        prop_assert_eq!(job.launched_at.is_some(), m.launched.contains(&id));
    }
    Ok(())
}

impl Model {
    /// The pending ids in launch order (what a stop right now returns).
    fn pending_ids_sorted(&mut self) -> Vec<u64> {
        self.pending.sort();
        self.pending_ids()
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
        .max(1000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn queue_matches_model(width in 0..4usize, ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(width, None, ops))?;
    }

    /// The same with a bound, refusing or dropping the oldest when full.
    #[test]
    fn bounded_queue_matches_model(
        width in 0..3usize,
        max in 0..4usize,
        drop_oldest in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(width, Some((max, drop_oldest)), ops))?;
    }
}
