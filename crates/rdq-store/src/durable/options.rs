//! The durable queue's public value types: settings, put options, errors,
//! hooks and reports.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdq::Rate;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::{Builder, DurableQueue};
use crate::error::StoreError;
use crate::retry::Backoff;
use crate::row::{JobId, JobRow, JobState, Timestamp};

/// The settings a queue keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Most jobs underway at once.
    pub width: usize,
    /// Launch rate limit.
    pub rate: Option<RateSetting>,
    /// Whether launches are paused.
    pub paused: bool,
    /// Default job timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// A [`Rate`] as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateSetting {
    /// Launches per period.
    pub count: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// Launches allowed back to back.
    pub burst: u32,
}

impl RateSetting {
    /// The stored form of a rate.
    pub fn of(rate: Rate) -> Self {
        RateSetting {
            count: rate.count(),
            period_ms: millis(rate.period()),
            burst: rate.burst(),
        }
    }

    /// The rate, if the stored values are valid.
    pub fn to_rate(self) -> Option<Rate> {
        Rate::new(self.count, Duration::from_millis(self.period_ms))
            .and_then(|r| r.with_burst(self.burst))
            .ok()
    }
}

/// Whole milliseconds of `d`, saturating (an `as` cast would wrap).
pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Per-job settings for [`DurableQueue::put`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Lower runs first. Default 0.
    pub priority: i32,
    /// Not before this time. Default: now.
    pub run_at: Option<SystemTime>,
    /// While a live job of this queue has this key, a put returns it instead
    /// of adding another.
    pub key: Option<String>,
    /// Overrides the queue's `max_attempts`.
    pub max_attempts: Option<u32>,
    /// Overrides the queue's timeout.
    pub timeout: Option<Duration>,
}

impl PutOptions {
    /// Options with this priority.
    pub fn priority(priority: i32) -> Self {
        PutOptions {
            priority,
            ..PutOptions::default()
        }
    }

    /// Runs no sooner than `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs no sooner than `delay` from now (a delay past year 9999 means
    /// [`Timestamp::MAX`]).
    pub fn delay(self, delay: Duration) -> Self {
        let at = SystemTime::now()
            .checked_add(delay)
            .unwrap_or_else(|| Timestamp::MAX.to_system_time());
        self.run_at(at)
    }

    /// Sets the idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the job's own attempt limit.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the job's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// One job of a [`DurableQueue::put_many`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// Its kind.
    pub kind: String,
    /// Its arguments as JSON text.
    pub args: String,
    /// Its options.
    pub options: PutOptions,
}

impl JobSpec {
    /// A job with serializable arguments.
    pub fn new(
        kind: impl Into<String>,
        args: &(impl Serialize + ?Sized),
        options: PutOptions,
    ) -> Result<Self, DurableError> {
        let args =
            serde_json::to_string(args).map_err(|e| DurableError::InvalidArgs(e.to_string()))?;
        Ok(JobSpec {
            kind: kind.into(),
            args,
            options,
        })
    }
}

/// Why a durable queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such job in this queue.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job has finished; nothing changed.
    #[error("job {0} has already finished ({1})")]
    Finished(JobId, JobState),
    /// The job is underway; only waiting jobs can be reprioritized.
    #[error("job {0} is underway; only waiting jobs can be reprioritized")]
    Underway(JobId),
    /// The job is waiting, running or succeeded: nothing to retry.
    #[error("job {0} is {1}; only failed, dead or cancelled jobs can be retried")]
    NotRetryable(JobId, JobState),
    /// The job is finished and a newer live job holds its idempotency key:
    /// retrying it would make two live jobs with one key.
    #[error(
        "job {0} cannot be retried: live job {1} of its queue holds its key; \
         wait for job {1} to finish or cancel it, then retry"
    )]
    KeyHeld(JobId, JobId),
    /// No handler for this kind.
    #[error("queue {queue:?} has no handler for kind {kind:?}; it knows {known:?}")]
    UnknownKind {
        /// The queue.
        queue: String,
        /// The kind asked for.
        kind: String,
        /// The kinds it has.
        known: Vec<String>,
    },
    /// The arguments could not be serialized, or are not JSON.
    #[error("invalid job arguments: {0}")]
    InvalidArgs(String),
    /// The queue has been stopped.
    #[error("the queue is stopped")]
    Stopped,
}

/// Retry policy for one kind of job, overriding the queue's; see
/// [`Builder::kind_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KindOptions {
    /// Attempts for jobs of this kind (a job's own setting still wins).
    pub max_attempts: Option<u32>,
    /// Delays between its retries.
    pub backoff: Option<Backoff>,
}

/// How one attempt ended, as the store records it: what
/// [`Builder::on_attempt_end`] hooks see.
#[derive(Debug, Clone, Copy)]
pub struct AttemptEnd<'a> {
    /// The job as claimed (its `attempt` is this attempt).
    pub job: &'a JobRow,
    /// The verdict: `succeeded`, `failed` (will retry), `dead`, `cancelled`,
    /// `snoozed` (comes back without spending an attempt), `released`
    /// (given back unfinished when the queue stopped), or `lost` (its lease
    /// expired before this node could renew it: another node may run it,
    /// and nothing was recorded).
    pub outcome: &'static str,
    /// From when the job could run to its launch.
    pub wait: Duration,
    /// How long the attempt ran (`None` if it never launched).
    pub run: Option<Duration>,
}

/// A hook called with every attempt's end; see [`Builder::on_attempt_end`].
pub type AttemptHook = Arc<dyn Fn(&AttemptEnd<'_>) + Send + Sync>;

/// What [`DurableQueue::stop`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Claimed jobs that had not launched, back to pending.
    pub released: usize,
    /// Underway jobs the grace period cut off, back to pending.
    pub interrupted: usize,
}

/// What a queue's producer (the task that claims jobs from the store) has
/// done since the queue was built; from [`DurableQueue::producer_stats`] and
/// [`DurableQueue::settled`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Rounds begun: each looks at the store once (promotes due jobs, takes
    /// rate tokens, claims up to the free width), unless the queue is held.
    pub rounds: u64,
    /// Jobs claimed, over all rounds (a retry claims its job again).
    pub claimed: u64,
}
