//! The outcome buffer: [`complete`](crate::Store::complete) only enqueues;
//! a batch is written by the completer task, or by a claim ahead of its own
//! statement (so the node's finished jobs no longer count against the
//! queue's width). [`flush`](Outcomes::flush) waits until every outcome
//! enqueued before it is committed, whoever wrote it.
//!
//! Every outcome gets a sequence number. A batch taken out of the buffer is
//! in flight until its writer reports it committed (gone) or failed (back
//! into the buffer, to be written again). Everything below the lowest
//! sequence number still buffered or in flight is committed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::{watch, Notify};

use crate::error::{Result, StoreError};
use crate::row::Completion;

/// The most outcomes written by one statement.
pub(super) const MAX_BATCH: usize = 4096;

/// Outcomes waiting to be written, and who waits for them.
#[derive(Debug)]
pub(super) struct Outcomes {
    state: Mutex<State>,
    /// Bumped whenever a batch commits or fails.
    changed: watch::Sender<u64>,
    /// Wakes the completer task.
    pub(super) wake: Notify,
    /// Tells the completer that someone waits ([`flush`](Outcomes::flush)):
    /// write now, without lingering.
    pub(super) hurry: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The sequence number of the next outcome.
    next: u64,
    buffered: BTreeMap<u64, Completion>,
    /// Batches being written: lowest sequence number → size.
    in_flight: BTreeMap<u64, usize>,
    /// Failures so far.
    failures: u64,
    /// The latest failure: its count, the lowest sequence number of its
    /// batch, and the error.
    failure: Option<(u64, u64, StoreError)>,
}

impl State {
    /// Every outcome numbered below this is committed.
    fn committed_below(&self) -> u64 {
        let buffered = self.buffered.keys().next().copied();
        let flying = self.in_flight.keys().next().copied();
        [buffered, flying, Some(self.next)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next)
    }
}

/// Outcomes taken out of the buffer to be written.
#[derive(Debug)]
pub(super) struct Batch {
    lowest: u64,
    items: Vec<(u64, Completion)>,
}

impl Batch {
    /// The sequence number of its first outcome: its name while in flight.
    pub(super) fn lowest(&self) -> u64 {
        self.lowest
    }

    /// The outcomes, in the order they were enqueued.
    pub(super) fn outcomes(&self) -> impl Iterator<Item = &Completion> {
        self.items.iter().map(|(_, c)| c)
    }
}

impl Outcomes {
    pub(super) fn new() -> Outcomes {
        Outcomes {
            state: Mutex::new(State::default()),
            changed: watch::Sender::new(0),
            wake: Notify::new(),
            hurry: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues one outcome and wakes the completer.
    pub(super) fn push(&self, done: Completion) {
        {
            let mut st = self.lock();
            let seq = st.next;
            st.next += 1;
            st.buffered.insert(seq, done);
        }
        self.wake.notify_one();
    }

    /// Takes the oldest buffered outcomes (up to [`MAX_BATCH`]), if any.
    pub(super) fn take(&self) -> Option<Batch> {
        let mut st = self.lock();
        let lowest = *st.buffered.keys().next()?;
        let rest = match st.buffered.keys().nth(MAX_BATCH).copied() {
            Some(cut) => st.buffered.split_off(&cut),
            None => BTreeMap::new(),
        };
        let items: Vec<(u64, Completion)> = std::mem::replace(&mut st.buffered, rest)
            .into_iter()
            .collect();
        st.in_flight.insert(lowest, items.len());
        Some(Batch { lowest, items })
    }

    /// The batch is committed.
    pub(super) fn committed(&self, batch: Batch) {
        self.lock().in_flight.remove(&batch.lowest);
        self.changed.send_modify(|n| *n += 1);
    }

    /// The batch failed: its outcomes go back into the buffer, to be written
    /// again; waiting flushes that include it fail with `error`.
    pub(super) fn failed(&self, batch: Batch, error: StoreError) {
        {
            let mut st = self.lock();
            st.in_flight.remove(&batch.lowest);
            st.buffered.extend(batch.items);
            st.failures += 1;
            st.failure = Some((st.failures, batch.lowest, error));
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Waits until the batches in flight now (taken by the completer or
    /// another claim), but `except` (the caller's own), are committed or
    /// failed: a claim that follows counts the width their outcomes freed.
    pub(super) async fn settle_in_flight(&self, except: Option<u64>) {
        let mut changes = self.changed.subscribe();
        let flying: Vec<u64> = self
            .lock()
            .in_flight
            .keys()
            .copied()
            .filter(|k| Some(*k) != except)
            .collect();
        if flying.is_empty() {
            return;
        }
        loop {
            if !flying.iter().any(|k| self.lock().in_flight.contains_key(k)) {
                return;
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether nothing is buffered or in flight.
    pub(super) fn is_idle(&self) -> bool {
        let st = self.lock();
        st.buffered.is_empty() && st.in_flight.is_empty()
    }

    /// Waits until every outcome enqueued before the call is committed;
    /// fails if a batch holding one of them fails meanwhile (the outcomes
    /// stay buffered, and are written again).
    pub(super) async fn flush(&self) -> Result<()> {
        let mut changes = self.changed.subscribe();
        let (target, failures) = {
            let st = self.lock();
            (st.next, st.failures)
        };
        self.wake.notify_one();
        self.hurry.notify_one();
        loop {
            {
                let st = self.lock();
                if st.committed_below() >= target {
                    return Ok(());
                }
                if let Some((n, lowest, e)) = &st.failure {
                    if *n > failures && *lowest < target {
                        return Err(copy(e));
                    }
                }
            }
            if changes.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }
}

/// A copy of an error, for every flush that waited on the failed batch.
pub(super) fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Timeout(m) => StoreError::Timeout(m.clone()),
        StoreError::Closed => StoreError::Closed,
        StoreError::Internal(m) => StoreError::Internal(m.clone()),
        StoreError::Invalid(m) => StoreError::Invalid(m.clone()),
        StoreError::DiskFull(m) => StoreError::DiskFull(m.clone()),
        other => StoreError::Database(other.to_string()),
    }
}
