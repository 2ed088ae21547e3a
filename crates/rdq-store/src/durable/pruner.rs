//! The pruner: deletes finished jobs past the queue's retention.

use std::sync::Weak;
use std::time::Duration;

use super::Inner;
use crate::row::Timestamp;
use crate::store::Store;

/// How often finished jobs past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Most rows one prune deletes (so it never holds the writer long).
const PRUNE_BATCH: u64 = 5_000;

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

/// Prunes every [`PRUNE_EVERY`] (on the queue's clock). The next pass is
/// due a period after this one *began*: a clock that moved during a pass (a
/// test's manual clock jumping hours) makes the next one due at once, rather
/// than a period after the jump.
pub(super) async fn run<S: Store>(queue: Weak<Inner<S>>) {
    loop {
        let (clock, next) = {
            let Some(inner) = queue.upgrade() else { return };
            let clock = inner.tracker.clock.clone();
            let next = clock.now().plus(PRUNE_EVERY);
            match prune_once(&inner).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(queue = %inner.name, pruned = n, "pruned finished jobs"),
                Err(e) => {
                    tracing::warn!(queue = %inner.name, error = %e, "pruning failed; will try again")
                }
            }
            (clock, next)
        };
        clock.sleep_until(next).await;
    }
}
