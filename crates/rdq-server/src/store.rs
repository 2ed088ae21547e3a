//! The server's store: one SQLite file (the default) or a PostgreSQL schema
//! that several `rdq serve` processes share.
//!
//! [`Store`] is not dyn-compatible (its methods return `impl Future`), so
//! the server holds an enum over both backends and delegates each call; a
//! queue is a [`DurableQueue<AnyStore>`](rdq_store::DurableQueue) whichever
//! backend runs below it.

use std::sync::Arc;
use std::time::Duration;

use rdq_store::postgres::PgStore;
use rdq_store::sqlite::SqliteStore;
use rdq_store::{
    CancelResult, ClaimParams, Claimed, Completion, HeartbeatReport, Inserted, JobId, JobRow,
    ListParams, NewJob, QueueRecord, ReprioritizeResult, RescueParams, RescueReport, Result,
    RetryResult, StateCounts, Store, Timestamp,
};
use tokio::sync::{broadcast, Notify};

/// Either backend. Cheap to clone (both are handles).
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// One SQLite file, one process.
    Sqlite(SqliteStore),
    /// A PostgreSQL schema, any number of nodes.
    Postgres(PgStore),
}

/// Calls the same method on whichever backend this is.
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

impl AnyStore {
    /// Whether the store answers now (for `/readyz`): a read on SQLite, a
    /// `SELECT 1` on PostgreSQL.
    pub async fn ping(&self) -> Result<()> {
        match self {
            AnyStore::Sqlite(s) => s.get(JobId(0)).await.map(drop),
            AnyStore::Postgres(s) => s.ping().await,
        }
    }

    /// The backend's name, for logs and the start line.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Sqlite(_) => "sqlite",
            AnyStore::Postgres(_) => "postgres",
        }
    }
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

impl Store for AnyStore {
    async fn insert_many(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Inserted>> {
        delegate!(self, s => s.insert_many(jobs, now).await)
    }

    async fn claim(&self, params: ClaimParams) -> Result<Claimed> {
        delegate!(self, s => s.claim(params).await)
    }

    fn complete(&self, done: Completion) {
        delegate!(self, s => s.complete(done))
    }

    async fn flush(&self) -> Result<()> {
        delegate!(self, s => s.flush().await)
    }

    async fn heartbeat(
        &self,
        node: &str,
        ids: Vec<JobId>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatReport> {
        delegate!(self, s => s.heartbeat(node, ids, lease, now).await)
    }

    async fn rescue(&self, params: RescueParams) -> Result<RescueReport> {
        delegate!(self, s => s.rescue(params).await)
    }

    async fn hold(&self, queue: &str, until: Timestamp) -> Result<()> {
        delegate!(self, s => s.hold(queue, until).await)
    }

    async fn promote_due(&self, queue: &str, now: Timestamp) -> Result<u64> {
        delegate!(self, s => s.promote_due(queue, now).await)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Timestamp>> {
        delegate!(self, s => s.next_due(queue).await)
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelResult> {
        delegate!(self, s => s.cancel(id, now).await)
    }

    async fn reprioritize(&self, id: JobId, priority: i32) -> Result<ReprioritizeResult> {
        delegate!(self, s => s.reprioritize(id, priority).await)
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> Result<RetryResult> {
        delegate!(self, s => s.retry(id, now).await)
    }

    async fn oldest_pending(&self, queue: &str) -> Result<Option<Timestamp>> {
        delegate!(self, s => s.oldest_pending(queue).await)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRow>> {
        delegate!(self, s => s.get(id).await)
    }

    async fn list(&self, params: ListParams) -> Result<Vec<JobRow>> {
        delegate!(self, s => s.list(params).await)
    }

    async fn counts(&self, queue: &str) -> Result<StateCounts> {
        delegate!(self, s => s.counts(queue).await)
    }

    async fn prune(&self, queue: &str, before: Timestamp, limit: u64) -> Result<u64> {
        delegate!(self, s => s.prune(queue, before, limit).await)
    }

    async fn load_queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        delegate!(self, s => s.load_queue(name).await)
    }

    async fn save_queue(&self, record: QueueRecord) -> Result<()> {
        delegate!(self, s => s.save_queue(record).await)
    }

    fn work_signal(&self, queue: &str) -> Arc<Notify> {
        delegate!(self, s => s.work_signal(queue))
    }

    fn finished_events(&self) -> broadcast::Receiver<JobId> {
        delegate!(self, s => s.finished_events())
    }

    fn settings_signal(&self, queue: &str) -> Arc<Notify> {
        delegate!(self, s => s.settings_signal(queue))
    }

    fn cancel_events(&self) -> broadcast::Receiver<JobId> {
        delegate!(self, s => s.cancel_events())
    }

    fn poll_interval(&self) -> Option<Duration> {
        delegate!(self, s => s.poll_interval())
    }

    async fn close(&self) -> Result<()> {
        delegate!(self, s => s.close().await)
    }
}
