//! The tasks behind a durable queue: the producer, which claims jobs into
//! the in-memory queue, and the pruner.
//!
//! Both hold only a weak reference to the queue, so dropping every handle to
//! a queue ends them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdq::JobOptions;

use super::Inner;
use crate::row::{Completion, Finish, Timestamp};
use crate::store::{ClaimParams, Store};

/// After a store error, wait this long before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// How often finished jobs past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most rows one prune deletes (so it never holds the writer long).
const PRUNE_BATCH: u64 = 5_000;

/// Claims as many pending jobs as the in-memory queue has free width for,
/// whenever that may have changed: a put, a finished job, a settings change,
/// or a scheduled job coming due.
pub(super) async fn run<S: Store>(queue: Weak<Inner<S>>) {
    loop {
        let Some(inner) = queue.upgrade() else { return };
        if inner.is_stopped() {
            inner.tracker.idle_after.send_replace(u64::MAX);
            return;
        }
        let wake = inner.tracker.wake.clone();
        let clock = inner.tracker.clock.clone();
        let round = inner.tracker.rounds.fetch_add(1, Ordering::SeqCst) + 1;
        let wait = match step(&inner).await {
            Ok(Some(wait)) => wait,
            Ok(None) => continue, // there may be more to claim right away
            Err(e) => {
                tracing::warn!(queue = %inner.name, error = %e, "claiming jobs failed; trying again shortly");
                Wait {
                    due: clock.now().plus(ERROR_PAUSE),
                    token: None,
                }
            }
        };
        inner.tracker.idle_after.send_replace(round);
        drop(inner);
        let token = async {
            match wait.token {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = clock.sleep_until(wait.due) => {}
            _ = token => {}
        }
    }
}

/// What to wait for before the next round (besides a wake-up).
struct Wait {
    /// The next scheduled job or retry (on the queue's clock).
    due: Timestamp,
    /// The next rate token, if the rate ran out.
    token: Option<tokio::time::Instant>,
}

/// One round: promote due jobs, take rate tokens, claim, hand over.
/// `Ok(None)` asks for another round at once.
async fn step<S: Store>(inner: &Arc<Inner<S>>) -> Result<Option<Wait>, crate::StoreError> {
    let tracker = &inner.tracker;
    let now = tracker.clock.now();
    if tracker.due_hint.load(Ordering::Acquire) <= now.0 {
        // Take the hint before querying, so a hint set meanwhile survives.
        tracker.due_hint.store(i64::MAX, Ordering::Release);
        inner.store.promote_due(&inner.name, now).await?;
        if let Some(next) = inner.store.next_due(&inner.name).await? {
            tracker.due_hint.fetch_min(next.0, Ordering::AcqRel);
        }
    }
    let held = tracker.hold_until.load(Ordering::Acquire);
    if held > now.0 {
        // A throttled target: no claims until the hold ends.
        return Ok(Some(Wait {
            due: Timestamp(held.min(tracker.due_hint.load(Ordering::Acquire).max(now.0))),
            token: None,
        }));
    }
    let (free, token) = inner.take_tokens(inner.free_width());
    if free > 0 {
        let jobs = inner
            .store
            .claim(ClaimParams {
                queue: inner.name.clone(),
                max: free,
                node: inner.node.clone(),
                // Read again: `now` is as old as the promotion's round trip
                // to the writer, and puts stamped meanwhile may be claimed
                // here (the store keeps launched_at ≥ queued_at regardless).
                now: tracker.clock.now(),
                lease: inner.lease,
            })
            .await?;
        let got = jobs.len();
        tracker.claimed.fetch_add(got as u64, Ordering::SeqCst);
        for row in jobs {
            hand_over(inner, row);
        }
        if got < free {
            inner.refund_tokens(free - got);
        } else if token.is_none() {
            return Ok(None);
        }
    }
    let due = tracker.due_hint.load(Ordering::Acquire);
    Ok(Some(Wait {
        // Nothing scheduled: wake hourly anyway, as a safety net.
        due: Timestamp(due.min(now.plus(Duration::from_secs(3600)).0)),
        token,
    }))
}

/// Puts a claimed job into the in-memory queue, unless it was cancelled (or
/// the queue stopped) since the claim.
fn hand_over<S: Store>(inner: &Arc<Inner<S>>, row: crate::row::JobRow) {
    let tracker = &inner.tracker;
    let row = Arc::new(row);
    let mut claims = tracker.claims();
    let verdict = if claims.doomed.remove(&row.id) {
        Some(Finish::Cancelled)
    } else if inner.is_stopped() {
        Some(Finish::Released {
            launched: false,
            error: None,
        })
    } else {
        let options = JobOptions {
            priority: row.priority,
            timeout: row.timeout,
            allow_block: false,
            report_id: u64::try_from(row.id.0).ok(),
        };
        match inner.memory.put_with(row.clone(), options) {
            Ok(handle) => {
                claims.memory_ids.insert(row.id, handle.id());
                None
            }
            Err(_) => Some(Finish::Released {
                launched: false,
                error: None,
            }),
        }
    };
    drop(claims);
    if let Some(finish) = verdict {
        inner.store.complete(Completion {
            id: row.id,
            attempt: row.attempt,
            finish,
            at: tracker.clock.now(),
        });
    }
}

/// Deletes finished jobs older than the queue's retention, a batch at a
/// time; returns how many.
pub(super) async fn prune_once<S: Store>(inner: &Inner<S>) -> Result<u64, crate::StoreError> {
    let retention = i64::try_from(inner.retention.as_micros()).unwrap_or(i64::MAX);
    let before = Timestamp(inner.tracker.clock.now().0.saturating_sub(retention));
    let mut pruned = 0;
    loop {
        let n = inner.store.prune(&inner.name, before, PRUNE_BATCH).await?;
        pruned += n;
        if n < PRUNE_BATCH {
            return Ok(pruned); // else maybe more: go on
        }
    }
}

/// Prunes every [`PRUNE_EVERY`] (on the queue's clock).
pub(super) async fn prune<S: Store>(queue: Weak<Inner<S>>) {
    loop {
        {
            let Some(inner) = queue.upgrade() else { return };
            match prune_once(&inner).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(queue = %inner.name, pruned = n, "pruned finished jobs"),
                Err(e) => {
                    tracing::warn!(queue = %inner.name, error = %e, "pruning failed; will try again")
                }
            }
        }
        let Some(clock) = queue.upgrade().map(|q| q.tracker.clock.clone()) else {
            return;
        };
        clock.sleep_until(clock.now().plus(PRUNE_EVERY)).await;
    }
}
