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
    /// At most this many jobs (the claiming node's free width).
    pub max: usize,
    /// The claiming node's name.
    pub node: String,
    /// The caller's time. A store that keeps time on the database server
    /// (PostgreSQL by default) ignores it; see [`Store`], "Time".
    pub now: Timestamp,
    /// How long the claim holds without a heartbeat.
    pub lease: Duration,
}

/// Why a [`Store::claim`] returned fewer jobs than asked for although more
/// may be pending: a limit of the queue's, counted over every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The queue is paused.
    Paused,
    /// The queue's width is taken: as many jobs are underway, on all nodes
    /// together, as its settings allow.
    Width,
    /// Launches are held (a throttled target) until this time.
    Held {
        /// When the hold ends.
        until: Timestamp,
    },
    /// The launch rate is spent; the next token comes at this time.
    Rate {
        /// When the next launch is allowed.
        next: Timestamp,
    },
}

/// What a [`Store::claim`] returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The claimed jobs, underway and leased to the claiming node, in launch
    /// order.
    pub jobs: Vec<JobRow>,
    /// The limit that cut the claim short, if one did (`None`: the claim
    /// took all it asked for, or every pending job).
    pub limited: Option<Limit>,
}

/// What a [`Store::heartbeat`] found, job by job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatReport {
    /// Still underway on this node: their leases are renewed.
    pub held: Vec<JobId>,
    /// No longer this node's (rescued after their lease expired, finished,
    /// or gone): the node must stop running them and record nothing.
    pub lost: Vec<JobId>,
    /// Held, and someone asked to cancel them (see [`Store::cancel`]): the
    /// node must cancel them. Also listed in `held`.
    pub cancel: Vec<JobId>,
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
#[derive(Clone, Debug, Default)]
pub struct RescueParams {
    /// Rescue underway jobs whose lease ended before this; `None`: before
    /// the store's now.
    pub expired_before: Option<Timestamp>,
    /// Only this queue, or all.
    pub queue: Option<String>,
    /// At most this many jobs per call (0: no limit).
    pub limit: usize,
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
    /// It is underway: the store recorded a request to cancel it, which the
    /// node running it carries out (it learns of it from
    /// [`Store::cancel_events`] at once, or from its next
    /// [`Store::heartbeat`]). The job's state is unchanged until then.
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
/// * **Claims are exclusive and limited cluster-wide.** A job returned by
///   [`claim`](Store::claim) is `underway`, owned by the claiming node until
///   its lease expires; no other claim returns it meanwhile. Claims come in
///   launch order: priority, then `run_at`, then id. A claim obeys the
///   queue's stored settings (see [`save_queue`](Store::save_queue)) counted
///   over every node: `paused`, `width` (jobs underway, on every node, until
///   their outcome is committed), `rate` (one token bucket per queue) and
///   [`hold`](Store::hold); it says which one cut it short.
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
/// * **Time.** Every method that depends on the time takes the caller's
///   `now`. A store whose nodes share a database server keeps time on that
///   server instead (leases, due checks, rescue, rate), so that nodes with
///   skewed clocks agree; it may offer a caller-clock mode for tests with a
///   manual clock.
/// * **Ids** are unique and never reused. On one node they grow with put
///   order; across nodes they are not ordered by commit.
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

    /// Claims up to `max` pending jobs of a queue, in launch order, within
    /// the queue's limits: each becomes underway, attempt + 1, leased to
    /// `node`. Outcomes enqueued before the call are recorded first, so
    /// their jobs no longer count against the width. Returns once the claim
    /// is committed (see the backend for how durably).
    fn claim(&self, params: ClaimParams) -> impl Future<Output = Result<Claimed>> + Send;

    /// Enqueues an attempt's outcome, to be written with the next batch.
    fn complete(&self, done: Completion);

    /// Waits until every outcome enqueued before this call is committed.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;

    /// Renews, to `now + lease`, the lease of each of `ids` that `node`
    /// still holds; reports which it holds, which it lost, and which were
    /// asked to be cancelled.
    fn heartbeat(
        &self,
        node: &str,
        ids: Vec<JobId>,
        lease: Duration,
        now: Timestamp,
    ) -> impl Future<Output = Result<HeartbeatReport>> + Send;

    /// Returns jobs whose lease has expired to pending (or dead). Safe to
    /// run on every node at once: each expired job is rescued once.
    fn rescue(&self, params: RescueParams) -> impl Future<Output = Result<RescueReport>> + Send;

    /// Holds every launch of `queue`, on every node, until `until` (a later
    /// hold extends it; an earlier one changes nothing).
    fn hold(&self, queue: &str, until: Timestamp) -> impl Future<Output = Result<()>> + Send;

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

    /// Cancels the pending job of `queue` that was put first (the lowest id)
    /// and returns its id; `None` when nothing is pending. One atomic step:
    /// a job claimed meanwhile is never touched. A bounded queue that drops
    /// its oldest message to take a new one uses this.
    fn cancel_oldest_pending(
        &self,
        queue: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<JobId>>> + Send;

    /// When the longest-waiting pending job of a queue became runnable.
    fn oldest_pending(&self, queue: &str)
        -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// One job.
    fn get(&self, id: JobId) -> impl Future<Output = Result<Option<JobRow>>> + Send;

    /// Jobs, newest first.
    fn list(&self, params: ListParams) -> impl Future<Output = Result<Vec<JobRow>>> + Send;

    /// How many jobs of a queue are pending (ready to run, not started): a
    /// count over the pending jobs alone, cheap however many finished jobs
    /// the queue keeps.
    fn pending_count(&self, queue: &str) -> impl Future<Output = Result<u64>> + Send;

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

    /// Notified when `queue`'s settings were saved (by any node): a queue
    /// reloads them.
    fn settings_signal(&self, queue: &str) -> Arc<Notify>;

    /// Ids of underway jobs someone asked to cancel (by any node). The node
    /// running one cancels it; the others ignore it.
    fn cancel_events(&self) -> broadcast::Receiver<JobId>;

    /// How often a waiter should look again although no signal came: `None`
    /// when the signals are exact (one process), else the fallback for a
    /// notification lost between nodes.
    fn poll_interval(&self) -> Option<Duration>;

    /// Writes what is queued and releases the store's connections (or file).
    /// Later calls fail with [`StoreError::Closed`](crate::StoreError::Closed).
    fn close(&self) -> impl Future<Output = Result<()>> + Send;
}
