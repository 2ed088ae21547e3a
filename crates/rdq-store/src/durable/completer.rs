//! The completer: turns each attempt's end in the in-memory queue into an
//! outcome for the store (retry, backoff, dead, snooze, throttle), and keeps
//! the table of claimed jobs that cancel and the heartbeat work from.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdq::Outcome;
use tokio::sync::{watch, Notify};

use super::handler::{HandlerError, Retry};
use super::options::{AttemptEnd, AttemptHook, KindOptions};
use super::Claimed;
use crate::clock::Clock;
use crate::retry::Backoff;
use crate::row::{Completion, Finish, JobId, Timestamp};
use crate::store::Store;

/// A claimed job this node holds.
pub(super) struct Held {
    /// Its id in the in-memory queue.
    pub(super) memory: rdq::JobId,
    /// After this instant its lease may have expired in the store (it was
    /// last renewed, or claimed, a lease minus a margin before): another
    /// node may run it, so this node gives it up.
    pub(super) deadline: tokio::time::Instant,
}

/// Claimed jobs by store id, for cancel and heartbeats; cancels that
/// arrived between a claim and the job's arrival in memory; and jobs this
/// node lost (its lease expired), whose end is not recorded.
#[derive(Default)]
pub(super) struct ClaimTable {
    pub(super) held: HashMap<JobId, Held>,
    pub(super) doomed: HashSet<JobId>,
    pub(super) lost: HashSet<JobId>,
}

/// What the in-memory queue's `on_finish` hook needs: turns outcomes into
/// store completions.
pub(super) struct Tracker<S> {
    pub(super) queue: String,
    pub(super) store: Arc<S>,
    pub(super) clock: Clock,
    pub(super) backoff: Backoff,
    pub(super) kinds: HashMap<String, KindOptions>,
    pub(super) stopping: AtomicBool,
    pub(super) claims: Mutex<ClaimTable>,
    /// Wakes the producer.
    pub(super) wake: Arc<Notify>,
    /// The earliest known time a scheduled job or retry becomes due.
    pub(super) due_hint: AtomicI64,
    /// No claims before this time (a throttled target); microseconds.
    pub(super) hold_until: AtomicI64,
    /// The latest hold the store has been told of (the producer tells it,
    /// so that every node holds).
    pub(super) hold_stored: AtomicI64,
    pub(super) released: std::sync::atomic::AtomicUsize,
    pub(super) interrupted: std::sync::atomic::AtomicUsize,
    /// Jobs given up because their lease expired (see [`ClaimTable`]).
    pub(super) lost: AtomicU64,
    pub(super) on_attempt_end: Option<AttemptHook>,
    /// Producer rounds begun.
    pub(super) rounds: AtomicU64,
    /// Jobs the producer claimed.
    pub(super) claimed: AtomicU64,
    /// Recent claims' round trips, a moving mean, in nanoseconds.
    pub(super) claim_nanos: AtomicU64,
    /// The number of the round after which the producer last went idle
    /// (waiting for a wake-up, a due time or a token); `u64::MAX` once it
    /// has ended. What [`DurableQueue::settled`](super::DurableQueue::settled) waits on.
    pub(super) idle_after: watch::Sender<u64>,
}

impl<S: Store> Tracker<S> {
    /// Records how long a claim took (a moving mean over about 8).
    pub(super) fn note_claim_time(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let mean = self.claim_nanos.load(Ordering::Relaxed);
        let next = if mean == 0 {
            took
        } else {
            mean - mean / 8 + took / 8
        };
        self.claim_nanos.store(next, Ordering::Relaxed);
    }

    /// The mean round trip of recent claims.
    pub(super) fn claim_time(&self) -> Duration {
        Duration::from_nanos(self.claim_nanos.load(Ordering::Relaxed))
    }

    pub(super) fn claims(&self) -> MutexGuard<'_, ClaimTable> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds claims until `until` (extends, never shortens, a hold).
    pub(super) fn hold(&self, until: Timestamp) {
        self.hold_until.fetch_max(until.0, Ordering::AcqRel);
        self.wake.notify_one();
    }

    pub(super) fn hint_due(&self, at: Timestamp) {
        self.due_hint.fetch_min(at.0, Ordering::AcqRel);
        self.wake.notify_one();
    }

    pub(super) fn finished(&self, job: &rdq::Job<Claimed, Option<String>, HandlerError>) {
        let row = &job.arg;
        // The job stays in `held` until its outcome is on its way to the
        // store: the producer counts free width by `held`, and a claim sent
        // after the outcome must not find the job still underway there (the
        // in-memory queue frees the slot before it calls this hook).
        let lost = {
            let mut claims = self.claims();
            claims.doomed.remove(&row.id);
            claims.lost.remove(&row.id)
        };
        if lost {
            // Another node may run it now: record nothing (the store would
            // ignore a stale attempt anyway), hold nothing, retry nothing.
            tracing::warn!(queue = %self.queue, job = %row.id, attempt = row.attempt, "gave up a job whose lease expired; another node may run it");
            if let Some(hook) = &self.on_attempt_end {
                hook(&AttemptEnd {
                    job: row,
                    outcome: "lost",
                    wait: Duration::ZERO,
                    run: job.run_time(),
                });
            }
            self.claims().held.remove(&row.id);
            self.wake.notify_one();
            return;
        }
        let now = self.clock.now();
        let fail = |error: String, retry: Retry| -> Finish {
            if retry == Retry::Never || row.attempt >= row.max_attempts {
                Finish::Dead { error }
            } else {
                let backoff = self
                    .kinds
                    .get(&row.kind)
                    .and_then(|k| k.backoff)
                    .unwrap_or(self.backoff);
                let delay = match retry {
                    Retry::After(d) => d,
                    _ => backoff.delay(row.attempt),
                };
                Finish::Retry {
                    error,
                    run_at: now.plus(delay),
                }
            }
        };
        let snooze = |error: &HandlerError, delay: Duration| Finish::Snooze {
            error: error.message().to_owned(),
            run_at: now.plus(delay),
        };
        let finish = match &job.outcome {
            Outcome::Ok(result) => Finish::Succeeded {
                result: result.clone(),
            },
            Outcome::Failed(e) => match e.retry() {
                Retry::Snooze(delay) => snooze(e, delay),
                Retry::Throttle(delay) => {
                    self.hold(now.plus(delay));
                    tracing::info!(queue = %self.queue, job = %row.id, delay = ?delay, error = %e, "target throttled us; holding the queue");
                    snooze(e, delay)
                }
                retry => fail(e.message().to_owned(), retry),
            },
            Outcome::Panicked(msg) => fail(format!("panicked: {msg}"), Retry::Backoff),
            Outcome::TimedOut => {
                let ran = job.run_time().unwrap_or_default();
                fail(format!("timed out after {ran:.1?}"), Retry::Backoff)
            }
            Outcome::Cancelled if self.stopping.load(Ordering::Acquire) => {
                self.interrupted.fetch_add(1, Ordering::Relaxed);
                Finish::Released {
                    launched: true,
                    error: Some("interrupted: the queue stopped before the job finished".into()),
                }
            }
            Outcome::Cancelled => Finish::Cancelled,
            // The durable queue never bounds its dispatch queue, so nothing
            // is dropped; were it, the job would go back to pending.
            Outcome::NotRun | Outcome::Dropped => {
                self.released.fetch_add(1, Ordering::Relaxed);
                Finish::Released {
                    launched: false,
                    error: None,
                }
            }
        };
        match &finish {
            Finish::Snooze { run_at, .. } => self.hint_due(*run_at),
            Finish::Retry { error, run_at } => {
                tracing::info!(queue = %self.queue, job = %row.id, attempt = row.attempt, %error, retry_at = %run_at, "job failed; will retry");
                self.hint_due(*run_at);
            }
            Finish::Dead { error } => {
                tracing::warn!(queue = %self.queue, job = %row.id, attempt = row.attempt, %error, "job failed for good");
            }
            _ => {}
        }
        if let Some(hook) = &self.on_attempt_end {
            let outcome = match &finish {
                Finish::Succeeded { .. } => "succeeded",
                Finish::Retry { .. } => "failed",
                Finish::Dead { .. } => "dead",
                Finish::Cancelled => "cancelled",
                Finish::Snooze { .. } => "snoozed",
                Finish::Released { .. } => "released",
            };
            let wait = row
                .launched_at
                .map(|l| l.since(row.run_at))
                .unwrap_or_default();
            hook(&AttemptEnd {
                job: row,
                outcome,
                wait,
                run: job.run_time(),
            });
        }
        self.store.complete(Completion {
            id: row.id,
            attempt: row.attempt,
            finish,
            at: now,
        });
        self.claims().held.remove(&row.id);
        self.wake.notify_one();
    }
}
