//! The producer: claims jobs from the store into the in-memory queue.
//!
//! It holds only a weak reference to the queue, so dropping every handle to
//! a queue ends it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdq::JobOptions;

use super::completer::Held;
use super::Inner;
use crate::row::{Completion, Finish, Timestamp};
use crate::store::{ClaimParams, Limit, Store};

/// After a store error, wait this long before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

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
        let poll = inner.store.poll_interval();
        let wait = match step(&inner).await {
            Ok(Some(due)) => due,
            Ok(None) => continue, // there may be more to claim right away
            Err(e) => {
                tracing::warn!(queue = %inner.name, error = %e, "claiming jobs failed; trying again shortly");
                clock.now().plus(ERROR_PAUSE)
            }
        };
        inner.tracker.idle_after.send_replace(round);
        drop(inner);
        // On a store several nodes share, a wake-up can be lost (and a
        // width freed by another node wakes no one here): look again now
        // and then.
        let poll = async {
            match poll {
                Some(every) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = clock.sleep_until(wait) => {}
            _ = poll => {}
        }
    }
}

/// One round: promote due jobs, pass on a throttle hold, claim, hand over.
/// Returns when to look again at the latest (besides a wake-up), or `None`
/// to look again at once.
async fn step<S: Store>(inner: &Arc<Inner<S>>) -> Result<Option<Timestamp>, crate::StoreError> {
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
    // A throttled target holds every node: tell the store.
    let held = tracker.hold_until.load(Ordering::Acquire);
    if held > tracker.hold_stored.load(Ordering::Acquire) {
        inner.store.hold(&inner.name, Timestamp(held)).await?;
        tracker.hold_stored.fetch_max(held, Ordering::AcqRel);
    }
    // Nothing scheduled: look hourly anyway, as a safety net.
    let mut due = tracker
        .due_hint
        .load(Ordering::Acquire)
        .min(now.plus(Duration::from_secs(3600)).0);
    if held > now.0 {
        // Known here already: no claims until the hold ends.
        return Ok(Some(Timestamp(held.min(due.max(now.0)))));
    }
    let free = gather(inner).await;
    if free > 0 {
        let sent = tokio::time::Instant::now();
        let claimed = inner
            .store
            .claim(ClaimParams {
                queue: inner.name.clone(),
                max: free,
                node: inner.node.clone(),
                // Read again: `now` is as old as the promotion's round trip
                // to the store, and puts stamped meanwhile may be claimed
                // here (the store keeps launched_at ≥ queued_at regardless).
                now: tracker.clock.now(),
                lease: inner.lease,
            })
            .await?;
        tracker.note_claim_time(sent.elapsed());
        let got = claimed.jobs.len();
        // A job that ended meanwhile may have put the queue on hold (a
        // throttled target): a claim sent before that must launch nothing.
        let held = tracker.hold_until.load(Ordering::Acquire);
        if held > tracker.clock.now().0 {
            for row in claimed.jobs {
                inner.store.complete(Completion {
                    id: row.id,
                    attempt: row.attempt,
                    finish: Finish::Released {
                        launched: false,
                        error: None,
                    },
                    at: tracker.clock.now(),
                });
            }
            return Ok(Some(Timestamp(held)));
        }
        tracker.claimed.fetch_add(got as u64, Ordering::SeqCst);
        let deadline = sent
            + inner
                .lease
                .saturating_sub(super::heartbeat::margin(inner.lease));
        for row in claimed.jobs {
            hand_over(inner, row, deadline);
        }
        match claimed.limited {
            None if got == free => return Ok(None),
            // Ran dry; or the width is taken or the queue paused, and a job
            // finishing (or a settings change) wakes the producer.
            None | Some(Limit::Width) | Some(Limit::Paused) => {}
            Some(Limit::Held { until }) => due = due.min(until.0),
            Some(Limit::Rate { next }) => due = due.min(next.0),
        }
    }
    Ok(Some(Timestamp(due)))
}

/// Yields in a row without a job finishing after which [`gather`] stops.
const GATHER_IDLE_YIELDS: u32 = 3;

/// The longest a claim to a shared store waits to gather free width.
const GATHER_AT_MOST: Duration = Duration::from_millis(2);

/// The free width to claim for, once gathered.
///
/// A claim costs a round trip to the store whatever its size, and the
/// producer sends one at a time. Woken by the first of several jobs that
/// are finishing together (short jobs handed over by one claim), a
/// producer that claimed at once split the width: its claims alternated
/// between the one slot and the rest (on PostgreSQL, B5 measured 8 jobs per
/// claim at width 16, and 0.40 of the throughput of full claims). So while
/// jobs are running:
///
/// * on a store several nodes share, whose claims are round trips over the
///   network, the producer waits for more of them to finish, up to the
///   whole width, for at most one claim's round trip (the mean of recent
///   ones, at most [`GATHER_AT_MOST`]): the slot that freed first waits no
///   longer than the next claim would have taken anyway;
/// * on a store of one process (SQLite, whose claims are answered before
///   their commit), it yields to the running jobs and claims once
///   [`GATHER_IDLE_YIELDS`] yields in a row freed nothing more. No timer:
///   jobs that are not about to finish cost a few yields, never an idle
///   slot (W2, whose 1 ms jobs finish one after another, lost 10% to the
///   timed wait).
async fn gather<S: Store>(inner: &Arc<Inner<S>>) -> usize {
    let width = inner.memory.width();
    let mut free = inner.free_width();
    if inner.store.poll_interval().is_some() {
        let linger = inner.tracker.claim_time().min(GATHER_AT_MOST);
        let deadline = tokio::time::Instant::now() + linger;
        while free > 0 && free < width {
            let (underway, pending) = inner.memory.size();
            if underway + pending == 0 {
                break;
            }
            tokio::select! {
                _ = inner.tracker.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => return inner.free_width(),
            }
            free = inner.free_width();
        }
        return free;
    }
    let mut idle = 0;
    while free > 0 && free < width && idle < GATHER_IDLE_YIELDS {
        tokio::task::yield_now().await;
        let now_free = inner.free_width();
        if now_free > free {
            free = now_free;
            idle = 0;
        } else {
            idle += 1;
        }
    }
    free
}

/// Puts a claimed job into the in-memory queue, unless it was cancelled (or
/// the queue stopped) since the claim.
fn hand_over<S: Store>(
    inner: &Arc<Inner<S>>,
    row: crate::row::JobRow,
    deadline: tokio::time::Instant,
) {
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
                claims.held.insert(
                    row.id,
                    Held {
                        memory: handle.id(),
                        deadline,
                    },
                );
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
