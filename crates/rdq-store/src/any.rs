//! [`AnyStore`]: either backend behind one type, for programs that choose
//! the backend at run time (the server, by its configuration).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use crate::error::Result;
use crate::postgres::PgStore;
use crate::row::{Completion, Inserted, JobId, JobRow, NewJob, Timestamp};
use crate::sqlite::SqliteStore;
use crate::store::{
    CancelResult, ClaimParams, Claimed, HeartbeatReport, ListParams, QueueRecord,
    ReprioritizeResult, RescueParams, RescueReport, RetryResult, StateCounts, Store,
};

/// A store on either backend. [`Store`] is not object-safe (its methods
/// return `impl Future`), so a program that picks the backend at run time
/// holds this instead of a `dyn Store`. Cheap to clone.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// One SQLite file, one process.
    Sqlite(SqliteStore),
    /// A PostgreSQL schema several nodes may share.
    Postgres(PgStore),
}

impl From<SqliteStore> for AnyStore {
    fn from(s: SqliteStore) -> Self {
        AnyStore::Sqlite(s)
    }
}

impl From<PgStore> for AnyStore {
    fn from(s: PgStore) -> Self {
        AnyStore::Postgres(s)
    }
}

/// Calls the same method on whichever store this is.
macro_rules! each {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl Store for AnyStore {
    async fn insert_many(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Inserted>> {
        each!(self, s => s.insert_many(jobs, now).await)
    }

    async fn claim(&self, params: ClaimParams) -> Result<Claimed> {
        each!(self, s => s.claim(params).await)
    }

    fn complete(&self, done: Completion) {
        each!(self, s => s.complete(done))
    }

    async fn flush(&self) -> Result<()> {
        each!(self, s => s.flush().await)
    }

    async fn heartbeat(
        &self,
        node: &str,
        ids: Vec<JobId>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatReport> {
        each!(self, s => s.heartbeat(node, ids, lease, now).await)
    }

    async fn rescue(&self, params: RescueParams) -> Result<RescueReport> {
        each!(self, s => s.rescue(params).await)
    }

    async fn hold(&self, queue: &str, until: Timestamp) -> Result<()> {
        each!(self, s => s.hold(queue, until).await)
    }

    async fn promote_due(&self, queue: &str, now: Timestamp) -> Result<u64> {
        each!(self, s => s.promote_due(queue, now).await)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Timestamp>> {
        each!(self, s => s.next_due(queue).await)
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelResult> {
        each!(self, s => s.cancel(id, now).await)
    }

    async fn reprioritize(&self, id: JobId, priority: i32) -> Result<ReprioritizeResult> {
        each!(self, s => s.reprioritize(id, priority).await)
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> Result<RetryResult> {
        each!(self, s => s.retry(id, now).await)
    }

    async fn cancel_oldest_pending(&self, queue: &str, now: Timestamp) -> Result<Option<JobId>> {
        each!(self, s => s.cancel_oldest_pending(queue, now).await)
    }

    async fn oldest_pending(&self, queue: &str) -> Result<Option<Timestamp>> {
        each!(self, s => s.oldest_pending(queue).await)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRow>> {
        each!(self, s => s.get(id).await)
    }

    async fn list(&self, params: ListParams) -> Result<Vec<JobRow>> {
        each!(self, s => s.list(params).await)
    }

    async fn pending_count(&self, queue: &str) -> Result<u64> {
        each!(self, s => s.pending_count(queue).await)
    }

    async fn counts(&self, queue: &str) -> Result<StateCounts> {
        each!(self, s => s.counts(queue).await)
    }

    async fn prune(&self, queue: &str, before: Timestamp, limit: u64) -> Result<u64> {
        each!(self, s => s.prune(queue, before, limit).await)
    }

    async fn load_queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        each!(self, s => s.load_queue(name).await)
    }

    async fn save_queue(&self, record: QueueRecord) -> Result<()> {
        each!(self, s => s.save_queue(record).await)
    }

    fn work_signal(&self, queue: &str) -> Arc<Notify> {
        each!(self, s => s.work_signal(queue))
    }

    fn finished_events(&self) -> broadcast::Receiver<JobId> {
        each!(self, s => s.finished_events())
    }

    fn settings_signal(&self, queue: &str) -> Arc<Notify> {
        each!(self, s => s.settings_signal(queue))
    }

    fn cancel_events(&self) -> broadcast::Receiver<JobId> {
        each!(self, s => s.cancel_events())
    }

    fn poll_interval(&self) -> Option<Duration> {
        each!(self, s => s.poll_interval())
    }

    async fn close(&self) -> Result<()> {
        each!(self, s => Store::close(s).await)
    }
}
