//! What other nodes tell a queue through the store: changed settings (a
//! width, a pause set through another node) and requests to cancel jobs
//! this node runs.

use std::sync::Weak;

use tokio::sync::broadcast;

use super::options::QueueSettings;
use super::Inner;
use crate::store::Store;

/// Reloads the queue's settings whenever the store signals a change, and
/// every poll interval on a shared store (a notification can be lost).
pub(super) async fn settings<S: Store>(queue: Weak<Inner<S>>) {
    let Some((signal, poll)) = queue.upgrade().map(|inner| {
        (
            inner.store.settings_signal(&inner.name),
            inner.store.poll_interval(),
        )
    }) else {
        return;
    };
    loop {
        let changed = signal.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let Some(inner) = queue.upgrade() else { return };
            if inner.is_stopped() {
                return;
            }
            let _io = inner.settings_io.lock().await;
            match inner.store.load_queue(&inner.name).await {
                Ok(Some(rec)) => match serde_json::from_value::<QueueSettings>(rec.settings) {
                    Ok(stored) => inner.apply(stored),
                    Err(e) => {
                        tracing::warn!(queue = %inner.name, error = %e, "stored settings are unreadable; keeping the current ones")
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(queue = %inner.name, error = %e, "reloading settings failed; will try again")
                }
            }
        }
        match poll {
            Some(every) => {
                let _ = tokio::time::timeout(every, changed).await;
            }
            None => changed.await,
        }
    }
}

/// Cancels the jobs of this node that someone asked (through any node) to
/// cancel.
pub(super) async fn cancels<S: Store>(queue: Weak<Inner<S>>) {
    let Some(mut requests) = queue.upgrade().map(|inner| inner.store.cancel_events()) else {
        return;
    };
    loop {
        match requests.recv().await {
            Ok(id) => {
                let Some(inner) = queue.upgrade() else { return };
                let ours = inner.tracker.claims().held.contains_key(&id);
                if ours {
                    tracing::info!(queue = %inner.name, job = %id, "cancelling a job on request");
                    let _ = inner.cancel_local(id);
                }
            }
            // Missed requests are in the next heartbeat's report.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
