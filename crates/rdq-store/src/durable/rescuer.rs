//! The rescuer: on a store several nodes share, returns jobs whose lease
//! expired (their node died or hung) to pending, on every node, every half
//! lease. There is no leader: the store rescues each expired job once,
//! whoever asks (`SKIP LOCKED` on PostgreSQL), so every node may ask.

use std::sync::Weak;

use super::Inner;
use crate::store::{RescueParams, Store};

/// Most jobs one rescue returns (the rest wait for the next round, which
/// comes at once).
const BATCH: usize = 1_000;

pub(super) async fn run<S: Store>(queue: Weak<Inner<S>>) {
    loop {
        let every = {
            let Some(inner) = queue.upgrade() else { return };
            if inner.is_stopped() {
                return;
            }
            let params = RescueParams {
                // The store's own clock: on PostgreSQL, the server's.
                expired_before: None,
                queue: Some(inner.name.clone()),
                limit: BATCH,
            };
            match inner.store.rescue(params).await {
                Ok(r) if r.requeued + r.dead == BATCH as u64 => continue,
                Ok(r) if r.requeued + r.dead > 0 => {
                    tracing::warn!(queue = %inner.name, requeued = r.requeued, dead = r.dead, "rescued jobs whose node stopped renewing their lease");
                    inner.tracker.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue = %inner.name, error = %e, "rescuing expired jobs failed; will try again")
                }
            }
            inner.lease / 2
        };
        tokio::time::sleep(every).await;
    }
}
