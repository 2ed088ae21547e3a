//! The heartbeat: on a store several nodes share, renews the leases of the
//! jobs this node runs, every third of a lease, and acts on what the store
//! answers: jobs it no longer holds are given up, jobs someone asked to
//! cancel are cancelled.
//!
//! A node that cannot renew a job's lease (the store is unreachable, or the
//! process was stopped) gives the job up once the lease, less a margin, has
//! passed since it was last renewed: by then another node may be running
//! it. It records nothing for such a job; the rescuer of some node returns
//! it to pending, and it runs again (at-least-once).

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::Inner;
use crate::row::JobId;
use crate::store::Store;

/// How long before its lease ends in the store this node gives a job up: a
/// sixth of the lease (the heartbeat runs every third).
pub(super) fn margin(lease: Duration) -> Duration {
    lease / 6
}

pub(super) async fn run<S: Store>(queue: Weak<Inner<S>>) {
    loop {
        let every = {
            let Some(inner) = queue.upgrade() else { return };
            beat(&inner).await;
            inner.lease / 3
        };
        tokio::time::sleep(every).await;
    }
}

/// One round: give up what has expired, renew the rest.
async fn beat<S: Store>(inner: &Inner<S>) {
    let now = Instant::now();
    let (expired, ids): (Vec<JobId>, Vec<JobId>) = {
        let claims = inner.tracker.claims();
        let mut expired = Vec::new();
        let mut ids = Vec::new();
        for (id, held) in &claims.held {
            if claims.lost.contains(id) {
                continue;
            }
            if held.deadline <= now {
                expired.push(*id);
            } else {
                ids.push(*id);
            }
        }
        (expired, ids)
    };
    if !expired.is_empty() {
        tracing::warn!(queue = %inner.name, jobs = expired.len(), "could not renew the lease of running jobs in time; giving them up (another node may run them)");
        inner.give_up(&expired);
    }
    if ids.is_empty() {
        return;
    }
    let sent = Instant::now();
    let renew = inner
        .store
        .heartbeat(&inner.node, ids, inner.lease, inner.tracker.clock.now());
    let report = match tokio::time::timeout(inner.lease / 3, renew).await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            tracing::warn!(queue = %inner.name, error = %e, "renewing leases failed; will try again");
            return;
        }
        Err(_) => {
            tracing::warn!(queue = %inner.name, "renewing leases timed out; will try again");
            return;
        }
    };
    let deadline = sent + inner.lease.saturating_sub(margin(inner.lease));
    {
        let mut claims = inner.tracker.claims();
        for id in &report.held {
            if let Some(held) = claims.held.get_mut(id) {
                held.deadline = deadline;
            }
        }
    }
    if !report.lost.is_empty() {
        tracing::warn!(queue = %inner.name, jobs = report.lost.len(), "running jobs are no longer this node's (their lease expired and they were rescued); giving them up");
        inner.give_up(&report.lost);
    }
    for id in report.cancel {
        let _ = inner.cancel_local(id);
    }
}
