//! The API's JSON: what requests carry and responses return.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rdq_store::{JobRow, JobState, QueueSettings, Timestamp};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::limits;

/// A job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// Its id.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// Its kind (the queue's executor: `http` or `command`).
    pub kind: String,
    /// `scheduled`, `pending`, `underway`, `succeeded`, `failed` (will
    /// retry), `dead` or `cancelled`.
    pub state: String,
    /// Lower runs first.
    pub priority: i32,
    /// Runs started so far.
    pub attempt: u32,
    /// Runs allowed.
    pub max_attempts: u32,
    /// Its arguments: any JSON (`null` when the put gave none).
    pub args: serde_json::Value,
    /// When it may run (RFC 3339).
    pub run_at: String,
    /// When it was put.
    pub queued_at: String,
    /// When its latest attempt started.
    pub launched_at: Option<String>,
    /// When its latest attempt ended.
    pub finished_at: Option<String>,
    /// Its idempotency key.
    pub key: Option<String>,
    /// Its own timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// What its executor returned (any JSON), once succeeded.
    pub result: Option<serde_json::Value>,
    /// The latest error.
    pub error: Option<String>,
    /// While underway, the node running it (`server.node`); null otherwise.
    pub node: Option<String>,
}

impl From<JobRow> for JobView {
    fn from(row: JobRow) -> Self {
        let parse = |text: &str| {
            serde_json::from_str(text).unwrap_or(serde_json::Value::String(text.to_owned()))
        };
        JobView {
            id: row.id.0,
            args: parse(&row.args),
            result: row.result.as_deref().map(parse),
            queue: row.queue,
            kind: row.kind,
            state: row.state.to_string(),
            priority: row.priority,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            run_at: row.run_at.to_string(),
            queued_at: row.queued_at.to_string(),
            launched_at: row.launched_at.map(|t| t.to_string()),
            finished_at: row.finished_at.map(|t| t.to_string()),
            key: row.key,
            timeout_ms: row.timeout.map(|t| t.as_millis() as u64),
            error: row.error,
            node: row.node.filter(|_| row.state == JobState::Underway),
        }
    }
}

/// A launch rate: `count` launches per `period_ms`, `burst` back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateBody {
    /// Launches per period (1 to 1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub count: u32,
    /// The period in milliseconds (1 ms to 1 day).
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub period_ms: u64,
    /// Launches allowed back to back (1 to 1,000,000; default 1).
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl RateBody {
    /// The rate, or what is wrong with it (each field in its range: see
    /// [`limits`]).
    pub fn to_rate(self) -> Result<rdq::Rate, String> {
        limits::RATE_COUNT.check("rate.count", self.count)?;
        let period = limits::RATE_PERIOD.check_ms("rate.period_ms", self.period_ms)?;
        limits::RATE_BURST.check("rate.burst", self.burst)?;
        rdq::Rate::new(self.count, period)
            .and_then(|r| r.with_burst(self.burst))
            .map_err(|e| format!("rate: {e}"))
    }
}

/// A queue: its settings now, and its jobs by state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// `http` or `command`.
    pub executor: String,
    /// Most jobs underway at once.
    pub width: usize,
    /// The launch rate, if limited.
    pub rate: Option<RateBody>,
    /// Whether launches are paused.
    pub paused: bool,
    /// Default timeout of each attempt, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Until when a throttling target holds launches (RFC 3339), if it does.
    pub held_until: Option<String>,
    /// Jobs per state.
    pub counts: BTreeMap<String, u64>,
    /// How long the longest-waiting pending job has been ready.
    pub oldest_pending_age_seconds: Option<f64>,
}

/// A change to a queue: only the fields given change. `rate: null` and
/// `timeout_ms: null` remove the limit.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueuePatch {
    /// New width (0 to 10,000).
    #[schema(minimum = 0, maximum = 10_000)]
    pub width: Option<usize>,
    /// New rate, or `null` for none.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<RateBody>)]
    pub rate: Option<Option<RateBody>>,
    /// Pause (`true`) or resume (`false`).
    pub paused: Option<bool>,
    /// New default timeout in milliseconds (1 ms to 1 day), or `null` for
    /// none.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<Option<u64>>,
}

/// A [`QueuePatch`] whose every value is in its range.
#[derive(Debug, Clone, Default)]
pub struct CheckedPatch {
    /// New width.
    pub width: Option<usize>,
    /// New rate, or `Some(None)` for none.
    pub rate: Option<Option<rdq::Rate>>,
    /// Pause or resume.
    pub paused: Option<bool>,
    /// New default timeout, or `Some(None)` for none.
    pub timeout: Option<Option<Duration>>,
}

impl QueuePatch {
    /// Checks every field against its range (see [`limits`]) before
    /// anything changes.
    pub fn check(self) -> Result<CheckedPatch, String> {
        let width = self
            .width
            .map(|w| limits::WIDTH.check("width", w as u64).map(|_| w))
            .transpose()?;
        let rate = match self.rate {
            Some(Some(body)) => Some(Some(body.to_rate()?)),
            Some(None) => Some(None),
            None => None,
        };
        let timeout = match self.timeout_ms {
            Some(Some(ms)) => Some(Some(limits::TIMEOUT.check_ms("timeout_ms", ms)?)),
            Some(None) => Some(None),
            None => None,
        };
        Ok(CheckedPatch {
            width,
            rate,
            paused: self.paused,
            timeout,
        })
    }
}

/// Present (even as `null`) becomes `Some`; absent stays `None` (by
/// `#[serde(default)]`).
fn some<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A job to put.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// Its arguments (any JSON; default `null`).
    #[serde(default)]
    pub args: serde_json::Value,
    /// Lower runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Not before this time: any RFC 3339 date-time (years 0000 to 9999);
    /// one that has passed means now.
    #[schema(format = DateTime)]
    pub run_at: Option<String>,
    /// Not before this many milliseconds from now (0 to 10 years).
    #[schema(minimum = 0, maximum = 315_576_000_000_u64)]
    pub delay_ms: Option<u64>,
    /// Idempotency key: while a live job of the queue has it, the put
    /// returns that job.
    #[schema(min_length = 1, max_length = 255)]
    pub key: Option<String>,
    /// Runs allowed (1 to 1,000; default: the queue's).
    #[schema(minimum = 1, maximum = 1_000)]
    pub max_attempts: Option<u32>,
    /// Its own timeout in milliseconds (1 ms to 1 day).
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
}

impl PutBody {
    /// Checks every field against its range (see [`limits`]): the rule of
    /// the server and of `rdq put` alike. `now` is the time `delay_ms` and
    /// `run_at` count from. Returns when the job may run, if given.
    pub fn check(&self, now: SystemTime) -> Result<Option<SystemTime>, String> {
        let run_at = match (&self.run_at, self.delay_ms) {
            (Some(_), Some(_)) => return Err("give run_at or delay_ms, not both".to_owned()),
            // Any date-time the format allows (years 0000 to 9999): every
            // stored time renders, so none can poison a listing; one that
            // has passed means now.
            (Some(text), None) => Some(
                crate::api::time::parse_rfc3339(text)
                    .map_err(|e| format!("run_at {e}"))?
                    .max(now),
            ),
            (None, Some(ms)) => Some(now + limits::DELAY.check_ms("delay_ms", ms)?),
            (None, None) => None,
        };
        if self
            .key
            .as_ref()
            .is_some_and(|k| !(1..=255).contains(&k.chars().count()))
        {
            return Err("key must be 1 to 255 characters".to_owned());
        }
        if let Some(n) = self.max_attempts {
            limits::MAX_ATTEMPTS.check("max_attempts", n)?;
        }
        if let Some(ms) = self.timeout_ms {
            limits::TIMEOUT.check_ms("timeout_ms", ms)?;
        }
        Ok(run_at)
    }
}

/// The answer to a put.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct PutReply {
    /// The job's id.
    pub id: i64,
    /// `true` if a live job with the same key existed: nothing was added.
    pub existing: bool,
}

/// Jobs to put in one commit.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// The jobs, in order: 1 to 10,000.
    #[schema(min_items = 1, max_items = 10_000)]
    pub jobs: Vec<PutBody>,
}

/// The answer to a batch put, in the same order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchReply {
    /// One per job.
    pub jobs: Vec<PutReply>,
}

/// Filters and paging for `GET /api/v1/jobs` (unknown parameters are a
/// 400).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this state: `scheduled`, `pending`, `underway`, `succeeded`,
    /// `failed`, `dead` or `cancelled`.
    pub state: Option<String>,
    /// The cursor: `next` from the previous page.
    pub before: Option<i64>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next: Option<i64>,
}

/// The queues.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueList {
    /// Every queue, by name.
    pub queues: Vec<QueueView>,
}

/// A new priority.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriorityBody {
    /// Lower runs first.
    pub priority: i32,
}

/// The answer to a reprioritize.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PriorityReply {
    /// The priority before.
    pub old: i32,
    /// The job now.
    pub job: JobView,
}

/// How long to wait for a job to finish (unknown parameters are a 400).
#[derive(Debug, Clone, Copy, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Milliseconds, 0 to 60000 (default 30000).
    #[param(minimum = 0, maximum = 60_000)]
    pub timeout_ms: Option<u64>,
}

pub(crate) fn queue_view(
    name: &str,
    executor: &str,
    settings: QueueSettings,
    counts: &rdq_store::StateCounts,
    held_until: Option<Timestamp>,
    oldest_age: Option<Duration>,
) -> QueueView {
    QueueView {
        name: name.to_owned(),
        executor: executor.to_owned(),
        width: settings.width,
        rate: settings.rate.map(|r| RateBody {
            count: r.count,
            period_ms: r.period_ms,
            burst: r.burst,
        }),
        paused: settings.paused,
        timeout_ms: settings.timeout_ms,
        held_until: held_until.map(|t| t.to_string()),
        counts: JobState::ALL
            .iter()
            .map(|s| (s.to_string(), counts.get(s).copied().unwrap_or(0)))
            .collect(),
        oldest_pending_age_seconds: oldest_age.map(|d| d.as_secs_f64()),
    }
}
