//! Jobs as the store keeps them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A durable job's id: unique in its store, never reused, growing with put
/// order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for JobId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(JobId)
    }
}

/// A wall-clock time, in microseconds since the Unix epoch (UTC): the unit
/// the store writes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The time as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )
    }

    /// Time from `earlier` to this, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with microseconds, UTC.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_micros(self.to_system_time())
        )
    }
}

/// Where a job is in its life.
///
/// ```text
///  put ──► scheduled ──(run_at)──► pending ──claim──► underway ──► succeeded
///   │                                ▲                   │    └──► cancelled
///   └────────────────────────────────┘                   ├──► failed ──(backoff)──► pending
///                                                        └──► dead (attempts exhausted)
/// ```
///
/// A pending or scheduled job can also be cancelled. A job underway when its
/// process died goes back to pending (it runs again: at-least-once).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its `run_at` time.
    Scheduled,
    /// Ready to run.
    Pending,
    /// Claimed by a node and running (or about to).
    Underway,
    /// Finished successfully. Final.
    Succeeded,
    /// Failed; will run again at `run_at` (retry with backoff).
    Failed,
    /// Failed and out of attempts, or failed permanently. Final.
    Dead,
    /// Cancelled. Final.
    Cancelled,
}

impl JobState {
    /// Every state, in life order.
    pub const ALL: [JobState; 7] = [
        JobState::Scheduled,
        JobState::Pending,
        JobState::Underway,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
    ];

    /// The name stored and shown: `scheduled`, `pending`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Scheduled => "scheduled",
            JobState::Pending => "pending",
            JobState::Underway => "underway",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Whether the job will never run again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Dead | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`JobState`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}; expected one of scheduled, pending, underway, succeeded, failed, dead, cancelled")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A job as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRow {
    /// Its id.
    pub id: JobId,
    /// The queue it belongs to.
    pub queue: String,
    /// Which handler runs it.
    pub kind: String,
    /// Its arguments, as JSON text.
    pub args: String,
    /// Lower runs first.
    pub priority: i32,
    /// Where it is in its life.
    pub state: JobState,
    /// Runs started so far (the current one included while underway).
    pub attempt: u32,
    /// Runs allowed before it is dead.
    pub max_attempts: u32,
    /// When it may run.
    pub run_at: Timestamp,
    /// When it was put.
    pub queued_at: Timestamp,
    /// When its latest attempt started.
    pub launched_at: Option<Timestamp>,
    /// When its latest attempt ended.
    pub finished_at: Option<Timestamp>,
    /// Its idempotency key.
    pub key: Option<String>,
    /// Its own timeout, overriding the queue's.
    pub timeout: Option<Duration>,
    /// What the handler returned (JSON), once succeeded.
    pub result: Option<String>,
    /// The latest error.
    pub error: Option<String>,
    /// The node that holds it while underway.
    pub node: Option<String>,
    /// Until when that node's claim holds, unless renewed.
    pub lease_until: Option<Timestamp>,
}

/// A job to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// The queue.
    pub queue: String,
    /// The handler's kind.
    pub kind: String,
    /// Arguments, JSON text.
    pub args: String,
    /// Lower runs first.
    pub priority: i32,
    /// Not before this time; `None`: now.
    pub run_at: Option<Timestamp>,
    /// Runs allowed.
    pub max_attempts: u32,
    /// Idempotency key: while a live job of this queue has it, the put
    /// returns that job instead of inserting.
    pub key: Option<String>,
    /// Overrides the queue's timeout.
    pub timeout: Option<Duration>,
}

/// What an insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inserted {
    /// The job's id.
    pub id: JobId,
    /// `true` when a live job with the same key already existed, and this is
    /// its id; nothing was inserted.
    pub existing: bool,
}

/// How an attempt ended, as the store records it. The retry decision (retry
/// when, or give up) is made before, by the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finish {
    /// Succeeded, with the handler's result (JSON).
    Succeeded {
        /// JSON text, if any.
        result: Option<String>,
    },
    /// Failed; runs again at `run_at`.
    Retry {
        /// Why it failed.
        error: String,
        /// When to try again.
        run_at: Timestamp,
    },
    /// Failed for good.
    Dead {
        /// Why.
        error: String,
    },
    /// Cancelled by a user.
    Cancelled,
    /// Told to come back later; not a failure: scheduled at `run_at`, and
    /// `max_attempts` grows by one so the attempt is not spent.
    Snooze {
        /// Why.
        error: String,
        /// When to run again.
        run_at: Timestamp,
    },
    /// Given back without a verdict: never launched (`launched: false`, the
    /// attempt is not counted), or interrupted by a shutdown (the attempt
    /// counts). Back to pending.
    Released {
        /// Whether it had started.
        launched: bool,
        /// Why, if it was interrupted.
        error: Option<String>,
    },
}

/// One attempt's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The job.
    pub id: JobId,
    /// The attempt that ended (guards against recording a stale attempt).
    pub attempt: u32,
    /// The verdict.
    pub finish: Finish,
    /// When it ended.
    pub at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_reject_unknown_names() {
        for st in JobState::ALL {
            assert_eq!(st.as_str().parse::<JobState>(), Ok(st));
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        let err = "done".parse::<JobState>().unwrap_err();
        assert!(err.to_string().contains("expected one of scheduled"));
        assert!(JobState::Dead.is_final() && !JobState::Failed.is_final());
    }

    #[test]
    fn timestamps_convert_and_print() {
        let t = Timestamp::from(UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456));
        assert_eq!(t.0, 1_700_000_000_123_456);
        assert_eq!(t.to_string(), "2023-11-14T22:13:20.123456Z");
        assert_eq!(Timestamp::from(t.to_system_time()), t);
        assert_eq!(
            t.plus(Duration::from_secs(1)).since(t),
            Duration::from_secs(1)
        );
        assert_eq!(t.since(t.plus(Duration::from_secs(1))), Duration::ZERO);
        assert_eq!(Timestamp::from(UNIX_EPOCH - Duration::from_micros(5)).0, -5);
    }
}
