//! `/api/v1/stalls` and `/api/v1/dump`: what blocked the server's runtime,
//! and what every underway job is doing now.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use rdq_store::{DurableError, JobState, ListParams};
use rdq_watchdog::{procfs, Stall, TaskDump};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use super::json::ApiQuery;
use super::queues::find;
use crate::app::App;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `GET /api/v1/stalls` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StallsQuery {
    /// Only stalls of this queue's jobs.
    pub queue: Option<String>,
    /// Most stalls returned, newest first (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// What blocked the runtime: recent stalls and the functions to blame.
#[derive(Debug, Serialize, ToSchema)]
pub struct StallsReply {
    /// Whether the watchdog runs (`[watchdog] enabled` in rdq.toml).
    pub enabled: bool,
    /// How often it looks, in milliseconds.
    pub tick_ms: u64,
    /// A poll longer than this is a stall, in milliseconds.
    pub threshold_ms: u64,
    /// Stalls since the server started, by kind: `cpu`, `blocked`,
    /// `starved`, `unknown`.
    pub counts: BTreeMap<String, u64>,
    /// Per culprit function, most total stall time first (ended stalls;
    /// starved ones blame nobody).
    pub culprits: Vec<CulpritView>,
    /// Recent stalls, newest first.
    pub stalls: Vec<StallView>,
}

/// Stalls caused by one function.
#[derive(Debug, Serialize, ToSchema)]
pub struct CulpritView {
    /// The first function of the job's own code on the blocked stack.
    pub culprit: String,
    /// Stalls it caused.
    pub count: u64,
    /// Their total duration, in milliseconds.
    pub total_ms: u64,
    /// The longest, in milliseconds.
    pub max_ms: u64,
}

/// One stall: a job's poll that held a runtime thread past the threshold.
#[derive(Debug, Serialize, ToSchema)]
pub struct StallView {
    /// Increasing number of the stall.
    pub seq: u64,
    /// The job.
    pub job: u64,
    /// Its queue.
    pub queue: Option<String>,
    /// The blocked thread's name.
    pub thread: String,
    /// Its OS thread id.
    pub tid: i32,
    /// When the poll began (RFC 3339, tick resolution).
    pub started_at: String,
    /// How long it held the thread, in milliseconds (so far, until
    /// `finished`).
    pub duration_ms: u64,
    /// Whether the poll has ended.
    pub finished: bool,
    /// `cpu` (computing), `blocked` (in a system call), `starved` (the host
    /// gave it no CPU), or `unknown`.
    pub kind: String,
    /// The system call it was in.
    pub syscall: Option<String>,
    /// The kernel function it slept in.
    pub wchan: Option<String>,
    /// CPU time it got during the stall, in milliseconds.
    pub ran_ms: u64,
    /// Time it waited for a CPU during the stall, in milliseconds.
    pub waited_ms: u64,
    /// The call that blocked (innermost standard-library function).
    pub blocking_call: Option<String>,
    /// The first function of the job's own code.
    pub culprit: Option<String>,
    /// Why something is missing (no stack, no scheduler data).
    pub note: Option<String>,
    /// The stack, innermost first.
    pub frames: Vec<FrameView>,
    /// The report as text, as the log shows it.
    pub report: String,
}

/// One stack frame.
#[derive(Debug, Serialize, ToSchema)]
pub struct FrameView {
    /// The code address, hexadecimal.
    pub addr: String,
    /// The function.
    pub function: Option<String>,
    /// Source file and line.
    pub location: Option<String>,
}

impl From<&Stall> for StallView {
    fn from(s: &Stall) -> Self {
        StallView {
            seq: s.seq,
            job: s.job,
            queue: s.label.clone(),
            thread: s.thread.clone(),
            tid: s.tid,
            started_at: rdq_store::Timestamp::from(s.started_at).to_string(),
            duration_ms: ms(s.duration),
            finished: s.finished,
            kind: s.kind.as_str().to_owned(),
            syscall: s.syscall.clone(),
            wchan: s.wchan.clone(),
            ran_ms: ms(s.ran),
            waited_ms: ms(s.waited),
            blocking_call: s.blocking_call.clone(),
            culprit: s.culprit.clone(),
            note: s.note.clone(),
            frames: s
                .frames
                .iter()
                .map(|f| FrameView {
                    addr: format!("{:#x}", f.addr),
                    function: f.function.clone(),
                    location: f.location.clone(),
                })
                .collect(),
            report: s.to_string(),
        }
    }
}

/// Recent stalls of the server's runtime and the functions that caused them.
#[utoipa::path(get, path = "/api/v1/stalls", tag = "watchdog", params(StallsQuery),
    responses((status = 200, body = StallsReply), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stalls(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<StallsQuery>,
) -> Result<axum::Json<StallsReply>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit {limit}: give 1 to 1000"
        )));
    }
    if let Some(name) = &q.queue {
        find(&app, name)?;
    }
    let Some(watchdog) = &app.watchdog else {
        return Ok(axum::Json(StallsReply {
            enabled: false,
            tick_ms: 0,
            threshold_ms: 0,
            counts: BTreeMap::new(),
            culprits: Vec::new(),
            stalls: Vec::new(),
        }));
    };
    let config = watchdog.config();
    let stalls = watchdog
        .stalls()
        .iter()
        .rev()
        .filter(|s| q.queue.is_none() || s.label == q.queue)
        .take(limit)
        .map(StallView::from)
        .collect();
    let mut counts: BTreeMap<String, u64> = ["cpu", "blocked", "starved", "unknown"]
        .into_iter()
        .map(|k| (k.to_owned(), 0))
        .collect();
    for (kind, n) in watchdog.counts() {
        counts.insert(kind.as_str().to_owned(), n);
    }
    Ok(axum::Json(StallsReply {
        enabled: true,
        tick_ms: ms(config.tick),
        threshold_ms: ms(config.threshold),
        counts,
        culprits: watchdog
            .culprits()
            .into_iter()
            .map(|c| CulpritView {
                culprit: c.culprit,
                count: c.count,
                total_ms: ms(c.total),
                max_ms: ms(c.max),
            })
            .collect(),
        stalls,
    }))
}

/// `GET /api/v1/dump` filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DumpQuery {
    /// Only this queue's jobs.
    pub queue: Option<String>,
}

/// What every underway job is doing now.
#[derive(Debug, Serialize, ToSchema)]
pub struct DumpReply {
    /// Whether the watchdog runs (without it, `poll` is always null).
    pub watchdog: bool,
    /// Underway jobs, longest-running first.
    pub jobs: Vec<UnderwayJob>,
    /// Database connections and transactions held now, longest first.
    pub holds: Vec<HoldView>,
}

/// One underway job.
#[derive(Debug, Serialize, ToSchema)]
pub struct UnderwayJob {
    /// The job.
    pub id: i64,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// The node running it (`server.node`): on PostgreSQL, the dump lists
    /// every node's underway jobs; `poll` and `child` are known only for
    /// this node's.
    pub node: Option<String>,
    /// This run's number (1 for the first).
    pub attempt: u32,
    /// Runs allowed.
    pub max_attempts: u32,
    /// When this attempt began (RFC 3339).
    pub launched_at: Option<String>,
    /// How long it has been underway, in milliseconds.
    pub age_ms: u64,
    /// Its timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Its queue's `warn_after`, in milliseconds.
    pub warn_after_ms: Option<u64>,
    /// Underway longer than `warn_after`.
    pub hung: bool,
    /// What the watchdog sees of it (null when it is not running in this
    /// process, or the watchdog is off).
    pub poll: Option<PollView>,
    /// For a command job, the process it waits on.
    pub child: Option<ChildView>,
}

impl UnderwayJob {
    /// What it is doing, in words (for logs and the CLI).
    pub fn doing(&self) -> String {
        let mut parts = Vec::new();
        match &self.poll {
            Some(p) if p.state == "in_poll" => parts.push(format!(
                "inside a poll for {:?} (holding its thread)",
                Duration::from_millis(p.in_poll_ms.unwrap_or(0))
            )),
            Some(p) => parts.push(format!(
                "waiting for {:?} since its last poll ({} polls)",
                Duration::from_millis(p.idle_ms.unwrap_or(0)),
                p.polls
            )),
            None => parts.push("not watched".to_owned()),
        }
        if let Some(c) = &self.child {
            parts.push(format!(
                "child pid {} {}{}",
                c.pid,
                c.state.as_deref().unwrap_or("(gone)"),
                c.wchan
                    .as_deref()
                    .map(|w| format!(" in {w}"))
                    .unwrap_or_default()
            ));
        }
        parts.join("; ")
    }
}

/// A job as the watchdog sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PollView {
    /// `in_poll` (running on a thread now) or `waiting` (for a wake-up).
    pub state: String,
    /// In a poll for this long, in milliseconds.
    pub in_poll_ms: Option<u64>,
    /// Waiting since its last poll ended for this long, in milliseconds.
    pub idle_ms: Option<u64>,
    /// Polls so far.
    pub polls: u64,
    /// How long its last poll took, in milliseconds (tick resolution).
    pub last_poll_ms: u64,
}

impl From<&TaskDump> for PollView {
    fn from(t: &TaskDump) -> Self {
        PollView {
            state: if t.in_poll.is_some() {
                "in_poll"
            } else {
                "waiting"
            }
            .to_owned(),
            in_poll_ms: t.in_poll.map(ms),
            idle_ms: t.idle.map(ms),
            polls: t.polls,
            last_poll_ms: ms(t.last_poll),
        }
    }
}

/// A command job's child process, from `/proc`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChildView {
    /// Its pid (also its process group).
    pub pid: i32,
    /// Its state, e.g. `S (sleeping)`, `R (running)`, `D (disk sleep)`,
    /// `Z (zombie)`; null once gone.
    pub state: Option<String>,
    /// The kernel function it waits in, e.g. `pipe_write`, `do_wait`.
    pub wchan: Option<String>,
}

/// A held database connection or transaction.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    /// What is held.
    pub resource: String,
    /// Where it was acquired (`file:line:column`).
    pub location: String,
    /// The job holding it.
    pub job: Option<u64>,
    /// That job's queue.
    pub queue: Option<String>,
    /// For how long, in milliseconds.
    pub held_ms: u64,
}

/// Every underway job (of `queue`, or of all queues), longest-running first.
pub(crate) async fn underway(
    app: &App,
    queue: Option<&str>,
) -> Result<Vec<UnderwayJob>, DurableError> {
    let polls: HashMap<(String, u64), TaskDump> = app
        .watchdog
        .as_ref()
        .map(|w| {
            w.dump()
                .into_iter()
                .filter_map(|t| Some(((t.label.clone()?, t.id), t)))
                .collect()
        })
        .unwrap_or_default();
    let mut jobs = Vec::new();
    for (name, q) in &app.queues {
        if queue.is_some_and(|want| want != name) {
            continue;
        }
        let rows = q
            .queue
            .list(ListParams {
                queue: Some(name.clone()),
                state: Some(JobState::Underway),
                before: None,
                limit: 10_000,
            })
            .await?;
        let now = q.queue.clock().now();
        // A command queue's own timeout is its executor's (the queue's is a
        // backstop above it).
        let timeout = match &q.config.executor {
            crate::config::ExecutorConfig::Command(spec) => spec.timeout,
            crate::config::ExecutorConfig::Http(_) => {
                q.queue.settings().timeout_ms.map(Duration::from_millis)
            }
        };
        for row in rows {
            let age = row.launched_at.map(|t| now.since(t)).unwrap_or_default();
            let warn_after = q.config.warn_after;
            let poll = u64::try_from(row.id.0)
                .ok()
                .and_then(|id| polls.get(&(name.clone(), id)))
                .map(PollView::from);
            let child = app.children.get(row.id.0).map(|pid| {
                let p = u32::try_from(pid).unwrap_or(0);
                ChildView {
                    pid,
                    state: procfs::process_state(p),
                    wchan: procfs::process_wchan(p),
                }
            });
            jobs.push(UnderwayJob {
                id: row.id.0,
                queue: row.queue,
                kind: row.kind,
                node: row.node,
                attempt: row.attempt,
                max_attempts: row.max_attempts,
                launched_at: row.launched_at.map(|t| t.to_string()),
                age_ms: ms(age),
                timeout_ms: row.timeout.or(timeout).map(ms),
                warn_after_ms: warn_after.map(ms),
                hung: warn_after.is_some_and(|w| age > w),
                poll,
                child,
            });
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.age_ms));
    Ok(jobs)
}

/// What every underway job is doing now: how long it has run, whether it is
/// inside a poll (holding a runtime thread) or waiting, and for a command
/// job, its child process's state. `hung` marks jobs past their queue's
/// `warn_after`.
#[utoipa::path(get, path = "/api/v1/dump", tag = "watchdog", params(DumpQuery),
    responses((status = 200, body = DumpReply), (status = 404, body = ErrorBody)))]
pub async fn dump(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<DumpQuery>,
) -> Result<axum::Json<DumpReply>, ApiError> {
    if let Some(name) = &q.queue {
        find(&app, name)?;
    }
    let jobs = underway(&app, q.queue.as_deref()).await?;
    let holds = app
        .watchdog
        .as_ref()
        .map(|w| {
            w.holds()
                .into_iter()
                .filter(|h| q.queue.is_none() || h.label == q.queue)
                .map(|h| HoldView {
                    resource: h.resource.to_owned(),
                    location: h.location,
                    job: h.job,
                    queue: h.label,
                    held_ms: ms(h.held),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(DumpReply {
        watchdog: app.watchdog.is_some(),
        jobs,
        holds,
    }))
}
