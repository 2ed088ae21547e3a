//! The SQL of each store operation, on one connection.
//!
//! Writes run on the writer thread inside its batch transaction; reads run on
//! reader connections. Statements are prepared once per connection
//! (`prepare_cached`).

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::Result;
use crate::row::{Completion, Finish, Inserted, JobId, JobRow, JobState, NewJob, Timestamp};
use crate::store::{
    CancelResult, ClaimParams, HeartbeatReport, Limit, ListParams, QueueRecord, ReprioritizeResult,
    RescueReport, RetryResult, StateCounts,
};

// Conditions on `state` are OR chains, as in the schema (see its header):
// IN lists build a temporary index per execution.

/// A job waiting to run.
const WAITING: &str = "(state = 'scheduled' OR state = 'pending' OR state = 'failed')";

/// A live job: the states in which its key is unique.
const LIVE: &str =
    "(state = 'scheduled' OR state = 'pending' OR state = 'underway' OR state = 'failed')";

/// A job that will not run again.
const FINAL: &str = "(state = 'succeeded' OR state = 'dead' OR state = 'cancelled')";

/// Scheduled jobs and retries (the `rdq_jobs_due` index).
const DUE: &str = "(state = 'scheduled' OR state = 'failed')";

const COLUMNS: &str =
    "id, queue, kind, args, priority, state, attempt, max_attempts, run_at, queued_at, \
     launched_at, finished_at, key, timeout_ms, result, error, node, lease_until";

fn row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    let state: String = r.get(5)?;
    let state = state.parse::<JobState>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(JobRow {
        id: JobId(r.get(0)?),
        queue: r.get(1)?,
        kind: r.get(2)?,
        args: r.get(3)?,
        priority: r.get(4)?,
        state,
        attempt: r.get(6)?,
        max_attempts: r.get(7)?,
        run_at: Timestamp(r.get(8)?),
        queued_at: Timestamp(r.get(9)?),
        launched_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
        finished_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
        key: r.get(12)?,
        timeout: r
            .get::<_, Option<i64>>(13)?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        result: r.get(14)?,
        error: r.get(15)?,
        node: r.get(16)?,
        lease_until: r.get::<_, Option<i64>>(17)?.map(Timestamp),
    })
}

pub(crate) fn insert(conn: &Connection, jobs: &[NewJob], now: Timestamp) -> Result<Vec<Inserted>> {
    // Plain statements, prepared once: no RETURNING, which would build a
    // temporary table per row.
    let mut plain = conn.prepare_cached(
        "INSERT INTO rdq_jobs (queue, kind, args, priority, state, max_attempts, run_at, queued_at, key, timeout_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut keyed = conn.prepare_cached(&format!(
        "INSERT INTO rdq_jobs (queue, kind, args, priority, state, max_attempts, run_at, queued_at, key, timeout_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (queue, key) WHERE key IS NOT NULL AND {LIVE} DO NOTHING"
    ))?;
    let mut existing = conn.prepare_cached(&format!(
        "SELECT id FROM rdq_jobs WHERE queue = ?1 AND key = ?2 AND {LIVE}"
    ))?;
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let run_at = job.run_at.unwrap_or(now).max(now);
        let state = if run_at > now {
            JobState::Scheduled
        } else {
            JobState::Pending
        };
        let timeout_ms = job
            .timeout
            .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX));
        let values = params![
            job.queue,
            job.kind,
            job.args,
            job.priority,
            state.as_str(),
            job.max_attempts,
            run_at.0,
            now.0,
            job.key,
            timeout_ms
        ];
        let stmt = if job.key.is_some() {
            &mut keyed
        } else {
            &mut plain
        };
        out.push(if stmt.execute(values)? == 1 {
            Inserted {
                id: JobId(conn.last_insert_rowid()),
                existing: false,
            }
        } else {
            Inserted {
                id: JobId(existing.query_row(params![job.queue, job.key], |r| r.get(0))?),
                existing: true,
            }
        });
    }
    Ok(out)
}

/// A claim's `launched_at`: its clock reading (`?2`), but never before the
/// job was queued. The producer reads the clock, then waits for the writer;
/// a put stamped meanwhile can commit first and be claimed with the older
/// reading. (Wall clocks also step back.) So `queued_at ≤ launched_at`
/// holds whatever the readings.
const LAUNCHED_AT: &str = "MAX(?2, queued_at)";

/// An outcome's `finished_at`: its reading (`?3`), but never before the
/// attempt launched (or, unlaunched, the job was queued), for the same
/// reason: `launched_at ≤ finished_at` whatever the readings.
const FINISHED_AT: &str = "MAX(?3, COALESCE(launched_at, queued_at))";

/// What a queue's limits allow a claim now.
pub(crate) struct Allowance {
    /// At most this many jobs.
    pub(crate) max: usize,
    /// The limit that set `max` below what was asked, if one did.
    pub(crate) limited: Option<Limit>,
    /// The token bucket after the claim, if the queue has a rate: tokens
    /// left before taking the claimed jobs, and the rate (per microsecond).
    bucket: Option<(f64, f64)>,
}

/// A queue's limits as its stored settings and row hold them.
struct Limits {
    paused: bool,
    width: Option<usize>,
    /// (count, period in µs, burst)
    rate: Option<(f64, f64, f64)>,
    held_until: Option<i64>,
    tokens: Option<f64>,
    refilled_at: Option<i64>,
}

/// Reads a queue's limits from its row; `None` if it has none (no limits).
fn limits(conn: &Connection, queue: &str) -> Result<Option<Limits>> {
    let found = conn
        .prepare_cached(
            "SELECT settings, held_until, tokens, refilled_at FROM rdq_queues WHERE name = ?1",
        )?
        .query_row(params![queue], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?,
                r.get::<_, Option<f64>>(2)?,
                r.get::<_, Option<i64>>(3)?,
            ))
        })
        .optional()?;
    let Some((settings, held_until, tokens, refilled_at)) = found else {
        return Ok(None);
    };
    let settings: serde_json::Value = serde_json::from_str(&settings).map_err(|e| {
        crate::StoreError::Internal(format!("queue {queue}: stored settings are not JSON: {e}"))
    })?;
    let rate = settings.get("rate").and_then(|r| {
        let count = r.get("count")?.as_f64()?;
        let period_us = r.get("period_ms")?.as_f64()? * 1000.0;
        let burst = r.get("burst")?.as_f64()?;
        (count > 0.0 && period_us > 0.0).then_some((count, period_us, burst.max(1.0)))
    });
    Ok(Some(Limits {
        paused: settings.get("paused").and_then(|p| p.as_bool()) == Some(true),
        width: settings
            .get("width")
            .and_then(|w| w.as_u64())
            .map(|w| usize::try_from(w).unwrap_or(usize::MAX)),
        rate,
        held_until,
        tokens,
        refilled_at,
    }))
}

/// How many jobs of the queue a claim may take now, within its limits
/// (paused, hold, width over the jobs underway, rate).
pub(crate) fn allowance(conn: &Connection, p: &ClaimParams) -> Result<Allowance> {
    let mut allow = Allowance {
        max: p.max,
        limited: None,
        bucket: None,
    };
    let Some(l) = limits(conn, &p.queue)? else {
        return Ok(allow);
    };
    let now = p.now.0;
    if l.paused {
        allow.max = 0;
        allow.limited = Some(Limit::Paused);
        return Ok(allow);
    }
    if let Some(until) = l.held_until.filter(|&u| u > now) {
        allow.max = 0;
        allow.limited = Some(Limit::Held {
            until: Timestamp(until),
        });
        return Ok(allow);
    }
    if let Some(width) = l.width {
        let underway: i64 = conn
            .prepare_cached(
                "SELECT COUNT(*) FROM rdq_jobs WHERE queue = ?1 AND state = 'underway'",
            )?
            .query_row(params![p.queue], |r| r.get(0))?;
        let free = width.saturating_sub(usize::try_from(underway).unwrap_or(usize::MAX));
        if free < allow.max {
            allow.max = free;
            allow.limited = Some(Limit::Width);
        }
    }
    if let Some((count, period_us, burst)) = l.rate {
        let per_us = count / period_us;
        let tokens = match (l.tokens, l.refilled_at) {
            (Some(t), Some(at)) => (t + (now - at).max(0) as f64 * per_us).min(burst),
            _ => burst,
        };
        let whole = tokens.floor().max(0.0) as usize;
        if whole < allow.max {
            allow.max = whole;
            let wait_us = ((1.0 - (tokens - tokens.floor())) / per_us).ceil() as i64;
            allow.limited = Some(Limit::Rate {
                next: Timestamp(now.saturating_add(wait_us.max(1))),
            });
        }
        allow.bucket = Some((tokens, per_us));
    }
    Ok(allow)
}

/// Takes `taken` tokens from the queue's bucket (when it has a rate).
pub(crate) fn spend_tokens(
    conn: &Connection,
    p: &ClaimParams,
    allow: &Allowance,
    taken: usize,
) -> Result<()> {
    if let Some((tokens, _)) = allow.bucket {
        conn.prepare_cached("UPDATE rdq_queues SET tokens = ?2, refilled_at = ?3 WHERE name = ?1")?
            .execute(params![p.queue, tokens - taken as f64, p.now.0])?;
    }
    Ok(())
}

/// Holds the queue's launches until `until` (extends, never shortens).
pub(crate) fn hold(conn: &Connection, queue: &str, until: Timestamp, now: Timestamp) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO rdq_queues (name, declared, settings, updated_at, held_until)          VALUES (?1, '{}', '{}', ?3, ?2)          ON CONFLICT (name) DO UPDATE SET held_until = MAX(COALESCE(held_until, ?2), ?2)",
    )?
    .execute(params![queue, until.0, now.0])?;
    Ok(())
}

/// The claim's select (see [`claim_select`]).
fn claim_select_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM rdq_jobs WHERE queue = (SELECT ?1) AND state = 'pending' ORDER BY priority, run_at, id"
    )
}

/// A claim's first half: the next `max` pending jobs of the queue, in launch
/// order, as they will be once [`claim_mark`] has run (underway, attempt
/// + 1, leased to the node). Nothing is written yet.
pub(crate) fn claim_select(conn: &Connection, p: &ClaimParams) -> Result<Vec<JobRow>> {
    // Select, then update by id: two simple cached statements. (One
    // `UPDATE ... WHERE id IN (SELECT ...) RETURNING` is recompiled on every
    // run and builds temporary tables; this is several times cheaper.)
    // No LIMIT: a bound LIMIT makes SQLite recompile the statement at every
    // run; the index yields rows in order, so taking `max` costs `max` steps.
    // `(SELECT ?1)`, not `?1`: with a bare parameter in the equality and an
    // ORDER BY, SQLite (built with STAT4) re-prepares the statement at every
    // run, which cost a tenth of the writer thread's time in B4; the scalar
    // subquery is a constant to the planner, and the plan is the same
    // search of `rdq_jobs_ready` (test `the_claim_statement_is_prepared_once`).
    let mut select = conn.prepare_cached(&claim_select_sql())?;
    let mut jobs = select
        .query_map(params![p.queue], row)?
        .take(p.max)
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let lease_until = p.now.plus(p.lease);
    for job in &mut jobs {
        job.state = JobState::Underway;
        job.attempt += 1;
        job.launched_at = Some(p.now.max(job.queued_at));
        job.finished_at = None;
        job.node = Some(p.node.clone());
        job.lease_until = Some(lease_until);
    }
    Ok(jobs)
}

/// A claim's second half: marks the jobs [`claim_select`] returned as
/// underway, as it described them.
pub(crate) fn claim_mark(conn: &Connection, ids: &[JobId], p: &ClaimParams) -> Result<()> {
    // A job launches no earlier than it was queued: the claim's reading of
    // the clock may predate the put of a job it takes (see `LAUNCHED_AT`).
    let mut update = conn.prepare_cached(&claim_mark_sql())?;
    let lease_until = p.now.plus(p.lease);
    let mut list = String::with_capacity(ids.len() * 8 + 2);
    list.push('[');
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            list.push(',');
        }
        list.push_str(&id.0.to_string());
    }
    list.push(']');
    update.execute(params![list, p.now.0, p.node, lease_until.0])?;
    Ok(())
}

/// The claim's update: one statement for every job of the claim, the ids
/// as a JSON array.
fn claim_mark_sql() -> String {
    format!(
        "UPDATE rdq_jobs SET state = 'underway', attempt = attempt + 1, launched_at = {LAUNCHED_AT}, \
         finished_at = NULL, node = ?3, lease_until = ?4, cancel_requested = 0 \
         WHERE id IN (SELECT value FROM json_each(?1))"
    )
}

/// Both halves of a claim at once.
#[cfg(test)]
fn claim(conn: &Connection, p: &ClaimParams) -> Result<Vec<JobRow>> {
    let jobs = claim_select(conn, p)?;
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    claim_mark(conn, &ids, p)?;
    Ok(jobs)
}

/// Records one outcome. Returns the job's id if it reached a final state.
/// An outcome for an attempt that is no longer underway changes nothing.
pub(crate) fn complete(conn: &Connection, c: &Completion) -> Result<Option<JobId>> {
    const GUARD: &str = "WHERE id = ?1 AND attempt = ?2 AND state = 'underway'";
    let changed = match &c.finish {
        Finish::Succeeded { result } => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'succeeded', finished_at = {FINISHED_AT}, result = ?4, \
                 node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt, c.at.0, result])?,
        Finish::Retry { error, run_at } => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'failed', finished_at = {FINISHED_AT}, error = ?4, run_at = ?5, \
                 node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt, c.at.0, error, run_at.0])?,
        Finish::Dead { error } => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'dead', finished_at = {FINISHED_AT}, error = ?4, \
                 node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt, c.at.0, error])?,
        Finish::Snooze { error, run_at } => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'scheduled', finished_at = {FINISHED_AT}, error = ?4, run_at = ?5, \
                 max_attempts = max_attempts + 1, node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt, c.at.0, error, run_at.0])?,
        Finish::Cancelled => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'cancelled', finished_at = {FINISHED_AT}, \
                 node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt, c.at.0])?,
        Finish::Released {
            launched: false, ..
        } => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'pending', attempt = attempt - 1, launched_at = NULL, \
                 node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt])?,
        Finish::Released {
            launched: true,
            error,
        } => conn
            .prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'pending', finished_at = {FINISHED_AT}, error = ?4, \
                 node = NULL, lease_until = NULL {GUARD}"
            ))?
            .execute(params![c.id.0, c.attempt, c.at.0, error])?,
    };
    let is_final = matches!(
        c.finish,
        Finish::Succeeded { .. } | Finish::Dead { .. } | Finish::Cancelled
    );
    Ok((changed > 0 && is_final).then_some(c.id))
}

pub(crate) fn heartbeat(
    conn: &Connection,
    node: &str,
    ids: &[JobId],
    lease_until: Timestamp,
) -> Result<HeartbeatReport> {
    let mut stmt = conn.prepare_cached(
        "UPDATE rdq_jobs SET lease_until = ?1 WHERE id = ?2 AND node = ?3 AND state = 'underway' \
         RETURNING cancel_requested",
    )?;
    let mut report = HeartbeatReport::default();
    for id in ids {
        let found = stmt
            .query_row(params![lease_until.0, id.0, node], |r| r.get::<_, bool>(0))
            .optional()?;
        match found {
            Some(cancel) => {
                report.held.push(*id);
                if cancel {
                    report.cancel.push(*id);
                }
            }
            None => report.lost.push(*id),
        }
    }
    Ok(report)
}

pub(crate) fn rescue(
    conn: &Connection,
    expired_before: Timestamp,
    queue: Option<&str>,
    limit: usize,
    now: Timestamp,
) -> Result<RescueReport> {
    let limit = if limit == 0 {
        -1
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    };
    let mut stmt = conn.prepare_cached(
        "UPDATE rdq_jobs SET \
           state = CASE WHEN attempt >= max_attempts THEN 'dead' ELSE 'pending' END, \
           error = CASE WHEN attempt >= max_attempts \
                   THEN 'orphaned on its last attempt: the node running it stopped without finishing it' \
                   ELSE 'interrupted: the node running it stopped without finishing it' END, \
           finished_at = CASE WHEN attempt >= max_attempts \
                         THEN MAX(?2, COALESCE(launched_at, queued_at)) ELSE finished_at END, \
           node = NULL, lease_until = NULL, cancel_requested = 0 \
         WHERE id IN (SELECT id FROM rdq_jobs WHERE state = 'underway' \
           AND (lease_until IS NULL OR lease_until < ?1) AND (?3 IS NULL OR queue = ?3) LIMIT ?4) \
         RETURNING state",
    )?;
    let states = stmt
        .query_map(params![expired_before.0, now.0, queue, limit], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let dead = states.iter().filter(|s| *s == "dead").count() as u64;
    Ok(RescueReport {
        requeued: states.len() as u64 - dead,
        dead,
    })
}

pub(crate) fn promote_due(conn: &Connection, queue: &str, now: Timestamp) -> Result<u64> {
    Ok(conn
        .prepare_cached(&format!(
            "UPDATE rdq_jobs SET state = 'pending' WHERE queue = ?1 AND {DUE} AND run_at <= ?2"
        ))?
        .execute(params![queue, now.0])? as u64)
}

pub(crate) fn next_due(conn: &Connection, queue: &str) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT MIN(run_at) FROM rdq_jobs WHERE queue = ?1 AND {DUE}"
        ))?
        .query_row(params![queue], |r| r.get::<_, Option<i64>>(0))?
        .map(Timestamp))
}

pub(crate) fn get(conn: &Connection, id: JobId) -> Result<Option<JobRow>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM rdq_jobs WHERE id = ?1"))?
        .query_row(params![id.0], row)
        .optional()?)
}

pub(crate) fn cancel(conn: &Connection, id: JobId, now: Timestamp) -> Result<CancelResult> {
    let Some(job) = get(conn, id)? else {
        return Ok(CancelResult::NotFound);
    };
    match job.state {
        JobState::Underway => {
            conn.prepare_cached(
                "UPDATE rdq_jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'underway'",
            )?
            .execute(params![id.0])?;
            Ok(CancelResult::Underway(Box::new(job)))
        }
        st if st.is_final() => Ok(CancelResult::Finished(st)),
        _ => {
            conn.prepare_cached(&format!(
                "UPDATE rdq_jobs SET state = 'cancelled', \
                 finished_at = MAX(?2, COALESCE(launched_at, queued_at)) WHERE id = ?1 AND {WAITING}"
            ))?
            .execute(params![id.0, now.0])?;
            Ok(CancelResult::Cancelled)
        }
    }
}

pub(crate) fn retry(conn: &Connection, id: JobId, now: Timestamp) -> Result<RetryResult> {
    let Some(job) = get(conn, id)? else {
        return Ok(RetryResult::NotFound);
    };
    if !matches!(
        job.state,
        JobState::Failed | JobState::Dead | JobState::Cancelled
    ) {
        return Ok(RetryResult::NotRetryable(job.state));
    }
    // A failed job is live and still holds its key; a dead or cancelled one
    // gave it up, and a newer job may have taken it.
    if let (Some(key), true) = (&job.key, job.state.is_final()) {
        let holder: Option<i64> = conn
            .prepare_cached(&format!(
                "SELECT id FROM rdq_jobs WHERE queue = ?1 AND key = ?2 AND {LIVE}"
            ))?
            .query_row(params![job.queue, key], |r| r.get(0))
            .optional()?;
        if let Some(holder) = holder {
            return Ok(RetryResult::KeyHeld(JobId(holder)));
        }
    }
    // One more attempt if they were all spent; the history stays.
    conn.prepare_cached(
        "UPDATE rdq_jobs SET state = 'pending', run_at = ?2, max_attempts = MAX(max_attempts, attempt + 1) \
         WHERE id = ?1",
    )?
    .execute(params![id.0, now.0])?;
    Ok(RetryResult::Retried)
}

pub(crate) fn oldest_pending(conn: &Connection, queue: &str) -> Result<Option<Timestamp>> {
    Ok(conn
        .prepare_cached("SELECT MIN(run_at) FROM rdq_jobs WHERE queue = ?1 AND state = 'pending'")?
        .query_row(params![queue], |r| r.get::<_, Option<i64>>(0))?
        .map(Timestamp))
}

/// Cancels the pending job of `queue` put first (on the writer thread, so
/// no claim comes between the look and the change).
pub(crate) fn cancel_oldest_pending(
    conn: &Connection,
    queue: &str,
    now: Timestamp,
) -> Result<Option<JobId>> {
    let id: Option<i64> = conn
        .prepare_cached(
            "SELECT id FROM rdq_jobs WHERE queue = ?1 AND state = 'pending' ORDER BY id LIMIT 1",
        )?
        .query_row(params![queue], |r| r.get(0))
        .optional()?;
    let Some(id) = id else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE rdq_jobs SET state = 'cancelled', \
         finished_at = MAX(?2, COALESCE(launched_at, queued_at)) WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![id, now.0])?;
    Ok(Some(JobId(id)))
}

pub(crate) fn reprioritize(
    conn: &Connection,
    id: JobId,
    priority: i32,
) -> Result<ReprioritizeResult> {
    let Some(job) = get(conn, id)? else {
        return Ok(ReprioritizeResult::NotFound);
    };
    if !matches!(
        job.state,
        JobState::Scheduled | JobState::Pending | JobState::Failed
    ) {
        return Ok(ReprioritizeResult::NotWaiting(job.state));
    }
    conn.prepare_cached("UPDATE rdq_jobs SET priority = ?2 WHERE id = ?1")?
        .execute(params![id.0, priority])?;
    Ok(ReprioritizeResult::Changed(job.priority))
}

pub(crate) fn list(conn: &Connection, p: &ListParams) -> Result<Vec<JobRow>> {
    let mut sql = format!("SELECT {COLUMNS} FROM rdq_jobs WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(q) = &p.queue {
        sql.push_str(" AND queue = ?");
        args.push(q.clone().into());
    }
    if let Some(st) = p.state {
        sql.push_str(" AND state = ?");
        args.push(st.as_str().to_owned().into());
    }
    if let Some(before) = p.before {
        sql.push_str(" AND id < ?");
        args.push(before.0.into());
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push((p.limit.max(1) as i64).into());
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(args), row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Pending jobs of a queue, counted on the `rdq_jobs_ready` index (pending
/// jobs only).
pub(crate) fn pending_count(conn: &Connection, queue: &str) -> Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM rdq_jobs WHERE queue = ?1 AND state = 'pending'")?
        .query_row(params![queue], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

pub(crate) fn counts(conn: &Connection, queue: &str) -> Result<StateCounts> {
    let mut stmt = conn
        .prepare_cached("SELECT state, COUNT(*) FROM rdq_jobs WHERE queue = ?1 GROUP BY state")?;
    let mut counts = StateCounts::new();
    for r in stmt.query_map(params![queue], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (state, n) = r?;
        if let Ok(state) = state.parse::<JobState>() {
            counts.insert(state, n as u64);
        }
    }
    Ok(counts)
}

pub(crate) fn prune(conn: &Connection, queue: &str, before: Timestamp, limit: u64) -> Result<u64> {
    Ok(conn
        .prepare_cached(&format!(
            "DELETE FROM rdq_jobs WHERE id IN (SELECT id FROM rdq_jobs \
                 WHERE queue = ?1 AND {FINAL} AND finished_at < ?2 LIMIT ?3)"
        ))?
        .execute(params![queue, before.0, limit as i64])? as u64)
}

pub(crate) fn load_queue(conn: &Connection, name: &str) -> Result<Option<QueueRecord>> {
    let found = conn
        .prepare_cached("SELECT declared, settings FROM rdq_queues WHERE name = ?1")?
        .query_row(params![name], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    let Some((declared, settings)) = found else {
        return Ok(None);
    };
    let parse = |text: &str| {
        serde_json::from_str(text).map_err(|e| {
            crate::StoreError::Internal(format!("queue {name}: stored settings are not JSON: {e}"))
        })
    };
    Ok(Some(QueueRecord {
        name: name.to_owned(),
        declared: parse(&declared)?,
        settings: parse(&settings)?,
    }))
}

pub(crate) fn save_queue(conn: &Connection, rec: &QueueRecord, now: Timestamp) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO rdq_queues (name, declared, settings, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (name) DO UPDATE SET declared = ?2, settings = ?3, updated_at = ?4",
    )?
    .execute(params![
        rec.name,
        rec.declared.to_string(),
        rec.settings.to_string(),
        now.0
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim's select runs from the statement cache without being
    /// prepared again (a re-prepare parses and plans it anew: see `claim`),
    /// and still claims in launch order.
    #[test]
    fn the_claim_statement_is_prepared_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("claim.db");
        let mut conn = Connection::open(&path).expect("open");
        crate::sqlite::schema::migrate(&mut conn, &path).expect("migrate");
        for (i, prio) in [3, 1, 2, 1].iter().enumerate() {
            for queue in ["a", "b"] {
                conn.execute(
                    "INSERT INTO rdq_jobs (queue, kind, args, priority, state, run_at, queued_at, \
                     attempt, max_attempts) VALUES (?1, 'k', '{}', ?2, 'pending', ?3, 0, 0, 3)",
                    params![queue, prio, i as i64],
                )
                .expect("insert");
            }
        }
        let mut order = Vec::new();
        for round in 0..8 {
            let jobs = claim(
                &conn,
                &ClaimParams {
                    queue: if round % 2 == 0 { "a" } else { "b" }.into(),
                    max: 1,
                    node: "n".into(),
                    now: Timestamp(1_000),
                    lease: std::time::Duration::from_secs(30),
                },
            )
            .expect("claim");
            order.extend(jobs.iter().map(|j| (j.queue.clone(), j.priority)));
        }
        let select = conn.prepare_cached(&claim_select_sql()).expect("cached");
        assert_eq!(
            select.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the claim select was prepared again"
        );
        let update = conn.prepare_cached(&claim_mark_sql()).expect("cached");
        assert_eq!(
            update.get_status(rusqlite::StatementStatus::RePrepare),
            0,
            "the claim's update was prepared again"
        );
        let a: Vec<i32> = order
            .iter()
            .filter(|(q, _)| q == "a")
            .map(|(_, p)| *p)
            .collect();
        assert_eq!(a, [1, 1, 2, 3]);
        assert_eq!(order.len(), 8);
    }
}
