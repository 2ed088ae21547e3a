//! The `Store` trait and its parameters; the contract is on [`Store`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use crate::error::Result;
use crate::row::{Completion, Inserted, JobId, JobRow, JobState, NewJob, Timestamp};

/// Parameters of [`Store::claim`].
#[derive(Clone, Debug)]
pub struct ClaimParams {
    /// The queue to claim from.
    pub queue: String,
    /// At most this many jobs.
    pub max: usize,
    /// The claiming node's name.
    pub node: String,
    /// The current time.
    pub now: Timestamp,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
}

/// Parameters of [`Store::list`]: newest first, keyset-paged.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state.
    pub state: Option<JobState>,
    /// Only jobs with a smaller id (the cursor: the last id of the previous
    /// page).
    pub before: Option<JobId>,
    /// At most this many (0 is treated as 1).
    pub limit: usize,
}

/// Parameters of [`Store::rescue`].
#[derive(Clone, Debug)]
pub struct RescueParams {
    /// Rescue underway jobs whose lease ended before this.
    pub expired_before: Timestamp,
    /// Only this queue, or all.
    pub queue: Option<String>,
}

/// What a [`Store::rescue`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RescueReport {
    /// Jobs returned to pending.
    pub requeued: u64,
    /// Jobs that were on their last attempt, now dead.
    pub dead: u64,
}

/// What [`Store::cancel`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// It was waiting (scheduled, pending or failed) and is now cancelled.
    Cancelled,
    /// It is underway: the node running it must cancel it; the store did not
    /// change it.
    Underway(Box<JobRow>),
    /// It had already finished in this state; nothing changed.
    Finished(JobState),
    /// No such job.
    NotFound,
}

/// What [`Store::reprioritize`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReprioritizeResult {
    /// Done; this was the old priority.
    Changed(i32),
    /// The job is underway or finished (in this state); nothing changed.
    NotWaiting(JobState),
    /// No such job.
    NotFound,
}

/// What [`Store::retry`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryResult {
    /// It was failed, dead or cancelled, and is now pending.
    Retried,
    /// It is in this state, which cannot be retried (it is waiting, running,
    /// or succeeded).
    NotRetryable(JobState),
    /// It is finished, and a newer live job of its queue holds its
    /// idempotency key (this one): retrying it would make two live jobs with
    /// one key. Nothing changed.
    KeyHeld(JobId),
    /// No such job.
    NotFound,
}

/// A queue's persisted settings (see `DurableQueue` for their meaning).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueRecord {
    /// The queue.
    pub name: String,
    /// What the code or config declared when it last started.
    pub declared: serde_json::Value,
    /// What is in effect, runtime changes included.
    pub settings: serde_json::Value,
}

/// Jobs of one queue per state.
pub type StateCounts = BTreeMap<JobState, u64>;

/// A durable job store: what a durable queue needs from a database.
///
/// # The contract
///
/// * **Acknowledged means committed.** [`insert_many`](Store::insert_many)
///   returns only once its jobs are committed at the store's sync level (see
///   the backend's docs for what that survives).
/// * **Claims are exclusive.** A job returned by [`claim`](Store::claim) is
///   `underway`, owned by the claiming node until its lease expires; no other
///   claim returns it meanwhile. Claims come in launch order: priority, then
///   `run_at`, then id.
/// * **Outcomes are batched.** [`complete`](Store::complete) only enqueues;
///   the store writes outcomes in batches, and [`flush`](Store::flush) waits
///   until everything enqueued so far is committed. An outcome for an attempt
///   that is no longer current (the job was rescued and claimed again) is
///   ignored, so a late writer can never overwrite a newer attempt.
/// * **Leases and rescue.** Claiming nodes renew their leases with
///   [`heartbeat`](Store::heartbeat); [`rescue`](Store::rescue) returns jobs
///   whose lease expired (their node died or hung) to pending, or to dead
///   when they were on their last attempt. A job's attempt counts its
///   recorded claims, so a rescued job runs again as attempt + 1. (A backend
///   may answer a claim before committing it; a crash in between makes the
///   job run again under the same attempt number. At-least-once either way.)
/// * **No connection is held by a running job.** Every method does its work
///   in one short transaction and returns; nothing spans a job's run.
///
/// The same contract holds for one process on a SQLite file and for several
/// nodes sharing a PostgreSQL database.
pub trait Store: Send + Sync + 'static {
    /// Inserts jobs (jobs with a live duplicate key are not inserted; the
    /// existing id comes back). Returns once committed.
    fn insert_many(
        &self,
        jobs: Vec<NewJob>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Inserted>>> + Send;

    /// Claims up to `max` pending jobs of a queue, in launch order: each
    /// becomes underway, attempt + 1, leased to `node`.
    fn claim(&self, params: ClaimParams) -> impl Future<Output = Result<Vec<JobRow>>> + Send;

    /// Enqueues an attempt's outcome, to be written with the next batch.
    fn complete(&self, done: Completion);

    /// Waits until every outcome enqueued before this call is committed.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;

    /// Renews the lease of the given jobs held by `node`; returns how many it
    /// still holds.
    fn heartbeat(
        &self,
        node: &str,
        ids: Vec<JobId>,
        lease_until: Timestamp,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Returns jobs whose lease has expired to pending (or dead).
    fn rescue(&self, params: RescueParams) -> impl Future<Output = Result<RescueReport>> + Send;

    /// Makes scheduled jobs and retries whose time has come pending.
    fn promote_due(&self, queue: &str, now: Timestamp) -> impl Future<Output = Result<u64>> + Send;

    /// When the next scheduled job or retry of a queue becomes due.
    fn next_due(&self, queue: &str) -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// Cancels a waiting job.
    fn cancel(
        &self,
        id: JobId,
        now: Timestamp,
    ) -> impl Future<Output = Result<CancelResult>> + Send;

    /// Changes a waiting job's priority.
    fn reprioritize(
        &self,
        id: JobId,
        priority: i32,
    ) -> impl Future<Output = Result<ReprioritizeResult>> + Send;

    /// Makes a failed, dead or cancelled job pending now (with one more
    /// attempt if it had spent them all).
    fn retry(&self, id: JobId, now: Timestamp) -> impl Future<Output = Result<RetryResult>> + Send;

    /// When the longest-waiting pending job of a queue became runnable.
    fn oldest_pending(&self, queue: &str)
        -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// One job.
    fn get(&self, id: JobId) -> impl Future<Output = Result<Option<JobRow>>> + Send;

    /// Jobs, newest first.
    fn list(&self, params: ListParams) -> impl Future<Output = Result<Vec<JobRow>>> + Send;

    /// How many jobs of a queue are in each state.
    fn counts(&self, queue: &str) -> impl Future<Output = Result<StateCounts>> + Send;

    /// Deletes up to `limit` finished jobs of a queue that finished before
    /// `before`; returns how many.
    fn prune(
        &self,
        queue: &str,
        before: Timestamp,
        limit: u64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// A queue's persisted settings.
    fn load_queue(&self, name: &str) -> impl Future<Output = Result<Option<QueueRecord>>> + Send;

    /// Persists a queue's settings. Returns once committed.
    fn save_queue(&self, record: QueueRecord) -> impl Future<Output = Result<()>> + Send;

    /// Notified whenever new work for `queue` may be ready (a put, a job
    /// given back). A consumer that finds nothing waits on it.
    fn work_signal(&self, queue: &str) -> Arc<Notify>;

    /// Ids of jobs that reached a final state, as their outcomes commit.
    /// Receivers that lag should re-read the jobs they wait for.
    fn finished_events(&self) -> broadcast::Receiver<JobId>;
}
