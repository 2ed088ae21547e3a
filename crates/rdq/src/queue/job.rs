//! What a job is: its id, priority, timeline and outcome.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime};

/// A job's priority: **lower numbers run first**; equal priorities run in put
/// order.
pub type Priority = i32;

/// Identifies a job within one [`DispatchQueue`](crate::DispatchQueue).
///
/// Ids are assigned in put order, starting at 1, so a smaller id was put
/// earlier. They are unique per queue, not across queues.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(u64);

impl JobId {
    /// Wraps a raw id (for ids that come back from a user, a file or a URL).
    pub const fn new(id: u64) -> Self {
        JobId(id)
    }

    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

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

/// A moment in a job's life, on both clocks.
///
/// `wall` is for showing to people and storing; `mono` is for measuring:
/// differences of `mono` never go backwards, whatever the system clock does.
/// Both are read once per event: `wall` is derived from `mono` and the wall
/// clock at the queue's creation, so the two always agree with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Wall-clock time.
    pub wall: SystemTime,
    /// Monotonic time.
    pub mono: Instant,
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<R, E> {
    /// The job function returned `Ok`.
    Ok(R),
    /// The job function returned `Err`.
    Failed(E),
    /// The job was cancelled: removed while pending, or its future dropped
    /// while underway.
    Cancelled,
    /// The job ran past its timeout and its future was dropped.
    TimedOut,
    /// The job function panicked; the panic message is kept.
    Panicked(String),
    /// The queue was stopped before the job launched.
    NotRun,
    /// The job never launched: the queue was full and dropped it, the
    /// oldest pending job, to take a newer one (see
    /// [`Builder::drop_oldest`](crate::Builder::drop_oldest)).
    Dropped,
}

impl<R, E> Outcome<R, E> {
    /// Whether this is [`Outcome::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// A short lowercase name: `ok`, `failed`, `cancelled`, `timed_out`,
    /// `panicked`, `not_run` or `dropped` (used in logs and metric labels).
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Failed(_) => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::TimedOut => "timed_out",
            Outcome::Panicked(_) => "panicked",
            Outcome::NotRun => "not_run",
            Outcome::Dropped => "dropped",
        }
    }

    /// The result, if the job succeeded.
    pub fn ok(self) -> Option<R> {
        match self {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }
}

/// A finished job: what a [`JobHandle`](crate::JobHandle) resolves to, and what
/// [`DispatchQueue::stop`](crate::DispatchQueue::stop) returns for jobs that
/// never ran.
#[derive(Clone, Debug)]
pub struct Job<A, R, E> {
    /// The job's id.
    pub id: JobId,
    /// The argument it was put with.
    pub arg: A,
    /// Its priority when it launched (or when the queue stopped).
    pub priority: Priority,
    /// When it was put.
    pub queued_at: Stamp,
    /// When it launched; `None` if it never did.
    pub launched_at: Option<Stamp>,
    /// When its outcome was decided.
    pub stopped_at: Stamp,
    /// How it ended.
    pub outcome: Outcome<R, E>,
}

impl<A, R, E> Job<A, R, E> {
    /// Time spent pending: from put to launch, or to the end if it never
    /// launched.
    pub fn wait_time(&self) -> Duration {
        let until = self.launched_at.unwrap_or(self.stopped_at);
        until.mono.saturating_duration_since(self.queued_at.mono)
    }

    /// Time spent underway, if it launched.
    pub fn run_time(&self) -> Option<Duration> {
        self.launched_at
            .map(|l| self.stopped_at.mono.saturating_duration_since(l.mono))
    }
}

/// A snapshot of a pending or underway job, as returned by
/// [`DispatchQueue::pending`](crate::DispatchQueue::pending) and
/// [`DispatchQueue::underway`](crate::DispatchQueue::underway).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo<A> {
    /// The job's id.
    pub id: JobId,
    /// A clone of its argument.
    pub arg: A,
    /// Its current priority.
    pub priority: Priority,
    /// When it was put.
    pub queued_at: Stamp,
    /// When it launched (`None` while pending).
    pub launched_at: Option<Stamp>,
}

/// Per-job settings for [`DispatchQueue::put_with`](crate::DispatchQueue::put_with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobOptions {
    /// The job's priority (lower runs first). Default 0.
    pub priority: Priority,
    /// Overrides the queue's timeout for this job. `None` keeps the queue's.
    pub timeout: Option<Duration>,
    /// The job may block its thread (it calls blocking code on purpose): the
    /// stall watchdog (feature `watchdog`) does not report it.
    pub allow_block: bool,
    /// The id the stall watchdog reports for this job, when not its
    /// [`JobId`] (a durable queue passes its stored job's id).
    pub report_id: Option<u64>,
}

impl JobOptions {
    /// Options with this priority and the queue's timeout.
    pub fn priority(priority: Priority) -> Self {
        JobOptions {
            priority,
            timeout: None,
            allow_block: false,
            report_id: None,
        }
    }

    /// Marks the job as allowed to block its thread (see
    /// [`allow_block`](JobOptions::allow_block)).
    pub fn allow_block(mut self) -> Self {
        self.allow_block = true;
        self
    }

    /// Sets the id the stall watchdog reports for this job (see
    /// [`report_id`](JobOptions::report_id)).
    pub fn report_id(mut self, id: u64) -> Self {
        self.report_id = Some(id);
        self
    }

    /// Sets the job's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(base: Instant, ms: u64) -> Stamp {
        Stamp {
            wall: SystemTime::UNIX_EPOCH + Duration::from_millis(ms),
            mono: base + Duration::from_millis(ms),
        }
    }

    #[test]
    fn durations_follow_the_monotonic_clock() {
        let base = Instant::now();
        let mut job: Job<(), (), ()> = Job {
            id: JobId::new(1),
            arg: (),
            priority: 0,
            queued_at: stamp(base, 10),
            launched_at: Some(stamp(base, 25)),
            stopped_at: stamp(base, 100),
            outcome: Outcome::Ok(()),
        };
        assert_eq!(job.wait_time(), Duration::from_millis(15));
        assert_eq!(job.run_time(), Some(Duration::from_millis(75)));
        job.launched_at = None;
        job.outcome = Outcome::NotRun;
        assert_eq!(job.wait_time(), Duration::from_millis(90));
        assert_eq!(job.run_time(), None);
    }

    #[test]
    fn job_id_round_trips_through_text() {
        let id: JobId = "42".parse().unwrap();
        assert_eq!(id, JobId::new(42));
        assert_eq!(id.to_string(), "42");
        assert!("x".parse::<JobId>().is_err());
    }

    #[test]
    fn outcome_names() {
        let names: Vec<_> = [
            Outcome::<(), ()>::Ok(()),
            Outcome::Failed(()),
            Outcome::Cancelled,
            Outcome::TimedOut,
            Outcome::Panicked("x".into()),
            Outcome::NotRun,
            Outcome::Dropped,
        ]
        .iter()
        .map(Outcome::name)
        .collect();
        assert_eq!(
            names,
            [
                "ok",
                "failed",
                "cancelled",
                "timed_out",
                "panicked",
                "not_run",
                "dropped"
            ]
        );
    }
}
