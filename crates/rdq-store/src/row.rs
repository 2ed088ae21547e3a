//! Jobs as the store keeps them.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A durable job's id: unique in its store and never reused. On one node it
/// grows with put order; across nodes sharing a database it is not ordered
/// by commit (a put that commits later may have a smaller id).
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
///
/// # Range
///
/// Any `i64` is a `Timestamp`, but only [`Timestamp::MIN`] (year 0000) to
/// [`Timestamp::MAX`] (year 9999) can be written in RFC 3339. Conversions and
/// arithmetic stay in that range ([`From<SystemTime>`] and
/// [`plus`](Timestamp::plus) saturate at its ends), and [`Display`] is total:
/// a time outside it, which rdq never writes but a row edited by hand or
/// written by an older version may hold, is shown as the nearest end. No
/// stored time can make rendering a job fail.
///
/// [`Display`]: fmt::Display
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// Seconds from 0000-01-01 to the Unix epoch (proleptic Gregorian).
const EPOCH_FROM_YEAR_0: i64 = 62_167_219_200;

impl Timestamp {
    /// The earliest time RFC 3339 can write: `0000-01-01T00:00:00.000000Z`.
    pub const MIN: Timestamp = Timestamp(-EPOCH_FROM_YEAR_0 * 1_000_000);

    /// The latest time RFC 3339 can write: `9999-12-31T23:59:59.999999Z`.
    pub const MAX: Timestamp = Timestamp(253_402_300_799_999_999);

    /// This time, moved into [`MIN`](Timestamp::MIN)..=[`MAX`](Timestamp::MAX).
    pub fn clamped(self) -> Timestamp {
        self.clamp(Timestamp::MIN, Timestamp::MAX)
    }

    /// The time as a [`SystemTime`] (the nearest the platform holds).
    pub fn to_system_time(self) -> SystemTime {
        let exact = |t: Timestamp| {
            let d = Duration::from_micros(t.0.unsigned_abs());
            if t.0 >= 0 {
                UNIX_EPOCH.checked_add(d)
            } else {
                UNIX_EPOCH.checked_sub(d)
            }
        };
        exact(self)
            .or_else(|| exact(self.clamped()))
            .unwrap_or(UNIX_EPOCH)
    }

    /// This time plus `d`, saturating at [`Timestamp::MAX`] (a time already
    /// beyond it stays where it is).
    pub fn plus(self, d: Duration) -> Timestamp {
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp(
            self.0
                .saturating_add(micros)
                .min(Timestamp::MAX.0.max(self.0)),
        )
    }

    /// Time from `earlier` to this, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl From<SystemTime> for Timestamp {
    /// The time, saturating at [`Timestamp::MIN`] and [`Timestamp::MAX`].
    fn from(t: SystemTime) -> Self {
        let micros = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |m| -m),
        };
        Timestamp(micros).clamped()
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 with microseconds, UTC: `2023-11-14T22:13:20.123456Z`. A time
    /// outside [`Timestamp::MIN`]..=[`Timestamp::MAX`] is shown as the
    /// nearest end; this never fails.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.clamped().0;
        let (secs, micros) = (t.div_euclid(1_000_000), t.rem_euclid(1_000_000));
        let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_date(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            day_secs / 3600,
            day_secs % 3600 / 60,
            day_secs % 60
        )
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01: (year, month,
/// day). Counts in 400-year eras of 146,097 days, each starting on March 1st
/// so that the leap day ends the year.
fn civil_date(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days from 0000-03-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

impl NewJob {
    /// Refuses what a store would keep but nobody could use, and what does
    /// not fit every backend (PostgreSQL's 32-bit integers, its text without
    /// NUL): one rule for both, so a job one store takes the other takes too.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        use crate::StoreError;
        if self.queue.is_empty() {
            return Err(StoreError::Invalid("a job needs a queue name".into()));
        }
        if self.kind.is_empty() {
            return Err(StoreError::Invalid("a job needs a kind".into()));
        }
        if self.max_attempts == 0 {
            return Err(StoreError::Invalid(
                "max_attempts must be at least 1".into(),
            ));
        }
        if self.max_attempts > i32::MAX as u32 {
            return Err(StoreError::Invalid(format!(
                "max_attempts must be at most {}",
                i32::MAX
            )));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&self.args) {
            return Err(StoreError::Invalid(format!(
                "job args are not valid JSON: {e}"
            )));
        }
        if self.queue.contains('\0') || self.kind.contains('\0') || self.args.contains('\0') {
            return Err(StoreError::Invalid(
                "a job's queue, kind and args cannot hold a NUL character".into(),
            ));
        }
        if self.key.as_deref().is_some_and(|k| k.contains('\0')) {
            return Err(StoreError::Invalid(
                "a job's key cannot hold a NUL character".into(),
            ));
        }
        Ok(())
    }
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

    #[test]
    fn every_stored_time_renders_the_ends_of_the_range_exactly() {
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59.999999Z");
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000000Z");
        assert_eq!(Timestamp(-1).to_string(), "1969-12-31T23:59:59.999999Z");
        // What a `delay_ms` of 10^15 (or u64::MAX) used to store: shown as
        // the latest writable time instead of failing.
        let poison = Timestamp(1_700_000_000_000_000).plus(Duration::from_millis(u64::MAX));
        assert_eq!(poison, Timestamp::MAX);
        for t in [i64::MIN, i64::MIN + 1, -1_000_000_000_000_000_000, i64::MAX] {
            let text = Timestamp(t).to_string();
            assert!(
                text == Timestamp::MIN.to_string() || text == Timestamp::MAX.to_string(),
                "{text}"
            );
        }
        assert_eq!(
            Timestamp(i64::MAX).plus(Duration::from_secs(1)),
            Timestamp(i64::MAX)
        );
        let far = UNIX_EPOCH + Duration::from_secs(1_000_000_000_000_000);
        assert_eq!(Timestamp::from(far), Timestamp::MAX);
    }

    /// The time `t` as humantime writes it (years 1970 to 9999 only): an
    /// independent check of our own formatter.
    fn humantime_text(t: i64) -> String {
        humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(t as u64)).to_string()
    }

    /// Any `i64`, half of them in the writable range.
    fn any_time() -> impl proptest::strategy::Strategy<Value = i64> {
        proptest::prop_oneof![proptest::num::i64::ANY, Timestamp::MIN.0..=Timestamp::MAX.0]
    }

    proptest::proptest! {
        #[test]
        fn rendering_is_total_and_ordered(a in any_time(), b in any_time()) {
            let (ta, tb) = (Timestamp(a).to_string(), Timestamp(b).to_string());
            // Fixed width, so text order is time order.
            proptest::prop_assert_eq!(ta.len(), 27);
            proptest::prop_assert_eq!(
                Timestamp(a).clamped().cmp(&Timestamp(b).clamped()),
                ta.cmp(&tb)
            );
            if (0..=Timestamp::MAX.0).contains(&a) {
                proptest::prop_assert_eq!(&ta, &humantime_text(a));
                let back = humantime::parse_rfc3339(&ta).unwrap();
                proptest::prop_assert_eq!(Timestamp::from(back), Timestamp(a));
            }
        }

        #[test]
        fn conversions_round_trip_and_saturate(
            t in Timestamp::MIN.0..=Timestamp::MAX.0,
            micros in proptest::num::u64::ANY,
        ) {
            let t = Timestamp(t);
            proptest::prop_assert_eq!(Timestamp::from(t.to_system_time()), t);
            let d = Duration::from_micros(micros);
            let later = t.plus(d);
            proptest::prop_assert!(later >= t && later <= Timestamp::MAX);
            if later < Timestamp::MAX {
                proptest::prop_assert_eq!(later.since(t), d);
            }
            proptest::prop_assert_eq!(t.since(later), Duration::ZERO);
            let from_millis = t.plus(Duration::from_millis(micros));
            proptest::prop_assert!(from_millis <= Timestamp::MAX);
        }
    }
}
