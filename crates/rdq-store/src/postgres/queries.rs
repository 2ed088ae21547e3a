//! The SQL of each store operation, and rows back into [`JobRow`]s.
//!
//! Every statement mirrors the state transition of the same name in
//! `sqlite/queries.rs`. Time comes in as a nullable `bigint` parameter:
//! NULL means the server's clock (`rdq_now()`), so one statement serves both
//! [`PgClock`](super::PgClock) modes.

use std::time::Duration;

use tokio_postgres::Row;

use crate::error::{Result, StoreError};
use crate::row::{JobId, JobRow, JobState, Timestamp};
use crate::store::Limit;

/// The columns of a job, in [`job`]'s order.
pub(super) const COLUMNS: &str =
    "id, queue, kind, args, priority, state, attempt, max_attempts, run_at, queued_at, \
     launched_at, finished_at, key, timeout_ms, result, error, node, lease_until";

/// A waiting job.
const WAITING: &str = "state IN ('scheduled', 'pending', 'failed')";

/// A live job: the states in which its key is unique.
pub(super) const LIVE: &str = "state IN ('scheduled', 'pending', 'underway', 'failed')";

/// A job that will not run again.
const FINAL: &str = "state IN ('succeeded', 'dead', 'cancelled')";

/// A job from a row whose first 18 columns are [`COLUMNS`].
pub(super) fn job(r: &Row) -> Result<JobRow> {
    let text = |e: tokio_postgres::Error| StoreError::Internal(format!("reading a job: {e}"));
    let state: String = r.try_get(5).map_err(text)?;
    let state = state
        .parse::<JobState>()
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    let attempt: i32 = r.try_get(6).map_err(text)?;
    let max_attempts: i32 = r.try_get(7).map_err(text)?;
    Ok(JobRow {
        id: JobId(r.try_get(0).map_err(text)?),
        queue: r.try_get(1).map_err(text)?,
        kind: r.try_get(2).map_err(text)?,
        args: r.try_get(3).map_err(text)?,
        priority: r.try_get(4).map_err(text)?,
        state,
        attempt: attempt.max(0) as u32,
        max_attempts: max_attempts.max(0) as u32,
        run_at: Timestamp(r.try_get(8).map_err(text)?),
        queued_at: Timestamp(r.try_get(9).map_err(text)?),
        launched_at: r
            .try_get::<_, Option<i64>>(10)
            .map_err(text)?
            .map(Timestamp),
        finished_at: r
            .try_get::<_, Option<i64>>(11)
            .map_err(text)?
            .map(Timestamp),
        key: r.try_get(12).map_err(text)?,
        timeout: r
            .try_get::<_, Option<i64>>(13)
            .map_err(text)?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        result: r.try_get(14).map_err(text)?,
        error: r.try_get(15).map_err(text)?,
        node: r.try_get(16).map_err(text)?,
        lease_until: r
            .try_get::<_, Option<i64>>(17)
            .map_err(text)?
            .map(Timestamp),
    })
}

/// The claim: `rdq_claim` (the migration's function) does it all in one
/// statement: $1 queue, $2 max, $3 node, $4 now, $5 lease (µs), $6 async.
pub(super) const CLAIM: &str = "SELECT * FROM rdq_claim($1, $2, $3, $4, $5, $6)";

/// What a claim returned: its jobs, in launch order, and its limit.
pub(super) fn claimed(rows: &[Row]) -> Result<(Vec<JobRow>, Option<Limit>)> {
    let mut jobs = Vec::with_capacity(rows.len());
    let mut limited = None;
    let bad = |e: tokio_postgres::Error| StoreError::Internal(format!("reading a claim: {e}"));
    for r in rows {
        if r.try_get::<_, Option<i64>>(0).map_err(bad)?.is_some() {
            jobs.push(job(r)?);
            continue;
        }
        let name: Option<String> = r.try_get(18).map_err(bad)?;
        let at: Option<i64> = r.try_get(19).map_err(bad)?;
        limited = match (name.as_deref(), at) {
            (Some("paused"), _) => Some(Limit::Paused),
            (Some("width"), _) => Some(Limit::Width),
            (Some("held"), Some(t)) => Some(Limit::Held {
                until: Timestamp(t),
            }),
            (Some("rate"), Some(t)) => Some(Limit::Rate { next: Timestamp(t) }),
            other => {
                return Err(StoreError::Internal(format!(
                    "rdq_claim returned an unknown limit {other:?}"
                )))
            }
        };
    }
    // RETURNING follows no order: launch order is (priority, run_at, id).
    jobs.sort_by_key(|j| (j.priority, j.run_at, j.id));
    Ok((jobs, limited))
}

/// Puts, one statement per batch: $1 queue, $2 kind, $3 args, $4 priority,
/// $5 run_at, $6 max_attempts, $7 key, $8 timeout_ms, $9 now (NULL: the
/// server's clock), one array element per job. Rows are inserted in the
/// arrays' order, so identities grow with it; a keyed job whose key a live
/// job holds (or an earlier job of the batch) is skipped.
pub(super) const INSERT: &str = "\
    WITH t AS (SELECT rdq_now() AS server_now), \
    input AS ( \
        SELECT u.*, coalesce(u.now, t.server_now) AS at \
        FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[], $6::int[], \
                    $7::text[], $8::bigint[], $9::bigint[]) \
             WITH ORDINALITY AS u(queue, kind, args, priority, run_at, max_attempts, key, \
                                  timeout_ms, now, ord), t) \
    INSERT INTO rdq_jobs (queue, kind, args, priority, state, max_attempts, run_at, queued_at, \
                          key, timeout_ms) \
    SELECT queue, kind, args, priority, \
           CASE WHEN coalesce(run_at, at) > at THEN 'scheduled' ELSE 'pending' END, \
           max_attempts, greatest(coalesce(run_at, at), at), at, key, timeout_ms \
    FROM input ORDER BY ord \
    ON CONFLICT DO NOTHING \
    RETURNING id, queue, key";

/// The live holders of keys: $1 queues, $2 keys.
pub(super) fn key_holders() -> String {
    format!(
        "SELECT j.id, j.queue, j.key FROM rdq_jobs j \
         JOIN unnest($1::text[], $2::text[]) AS k(queue, key) ON j.queue = k.queue AND j.key = k.key \
         WHERE j.{LIVE}"
    )
}

/// Outcomes, one statement per batch, guarded like SQLite's `complete`:
/// $1 id, $2 attempt, $3 kind, $4 result, $5 error, $6 run_at, $7 at (NULL:
/// the server's clock). Kinds: succeeded, failed, dead, snooze, cancelled,
/// unlaunched, interrupted. Returns each changed job's id, new state and
/// queue.
pub(super) const COMPLETE: &str = "\
    UPDATE rdq_jobs j SET \
      state = CASE u.kind WHEN 'snooze' THEN 'scheduled' \
                          WHEN 'unlaunched' THEN 'pending' \
                          WHEN 'interrupted' THEN 'pending' ELSE u.kind END, \
      attempt = CASE WHEN u.kind = 'unlaunched' THEN j.attempt - 1 ELSE j.attempt END, \
      launched_at = CASE WHEN u.kind = 'unlaunched' THEN NULL ELSE j.launched_at END, \
      finished_at = CASE WHEN u.kind = 'unlaunched' THEN j.finished_at \
                         ELSE greatest(coalesce(u.at, rdq_now()), coalesce(j.launched_at, j.queued_at)) END, \
      result = CASE WHEN u.kind = 'succeeded' THEN u.result ELSE j.result END, \
      error = CASE WHEN u.kind IN ('failed', 'dead', 'snooze', 'interrupted') THEN u.error ELSE j.error END, \
      run_at = CASE WHEN u.kind IN ('failed', 'snooze') THEN u.run_at ELSE j.run_at END, \
      max_attempts = CASE WHEN u.kind = 'snooze' THEN j.max_attempts + 1 ELSE j.max_attempts END, \
      node = NULL, lease_until = NULL, cancel_requested = false \
    FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[]) \
         AS u(id, attempt, kind, result, error, run_at, at) \
    WHERE j.id = u.id AND j.attempt = u.attempt AND j.state = 'underway' \
    RETURNING j.id, j.state, j.queue";

/// Renews leases: $1 ids, $2 node, $3 lease (µs), $4 now. Returns the held
/// ids and whether each was asked to cancel.
pub(super) const HEARTBEAT: &str = "\
    UPDATE rdq_jobs SET lease_until = coalesce($4::bigint, rdq_now()) + $3::bigint \
    WHERE id = ANY($1::bigint[]) AND node = $2 AND state = 'underway' \
    RETURNING id, cancel_requested";

/// Rescue: $1 expired before (NULL: now), $2 now, $3 queue (NULL: all), $4
/// limit (NULL: none). Returns each rescued job's id, new state and queue.
pub(super) const RESCUE: &str = "\
    WITH t AS (SELECT coalesce($2::bigint, rdq_now()) AS now), \
    victims AS ( \
        SELECT j.id FROM rdq_jobs j, t \
        WHERE j.state = 'underway' \
          AND (j.lease_until IS NULL OR j.lease_until < coalesce($1::bigint, t.now)) \
          AND ($3::text IS NULL OR j.queue = $3::text) \
        ORDER BY j.id LIMIT $4::bigint \
        FOR UPDATE OF j SKIP LOCKED) \
    UPDATE rdq_jobs j SET \
      state = CASE WHEN j.attempt >= j.max_attempts THEN 'dead' ELSE 'pending' END, \
      error = CASE WHEN j.attempt >= j.max_attempts \
              THEN 'orphaned on its last attempt: the node running it stopped without finishing it' \
              ELSE 'interrupted: the node running it stopped without finishing it' END, \
      finished_at = CASE WHEN j.attempt >= j.max_attempts \
                    THEN greatest(t.now, coalesce(j.launched_at, j.queued_at)) ELSE j.finished_at END, \
      node = NULL, lease_until = NULL, cancel_requested = false \
    FROM victims, t WHERE j.id = victims.id AND j.state = 'underway' \
    RETURNING j.id, j.state, j.queue";

/// A hold: $1 queue, $2 until, $3 now.
pub(super) const HOLD: &str = "\
    INSERT INTO rdq_queues (name, updated_at, held_until) \
    VALUES ($1, coalesce($3::bigint, rdq_now()), $2::bigint) \
    ON CONFLICT (name) DO UPDATE \
    SET held_until = greatest(rdq_queues.held_until, excluded.held_until)";

/// $1 queue, $2 now.
pub(super) fn promote_due() -> String {
    "UPDATE rdq_jobs SET state = 'pending' \
     WHERE queue = $1 AND state IN ('scheduled', 'failed') \
       AND run_at <= coalesce($2::bigint, rdq_now())"
        .to_owned()
}

/// $1 queue.
pub(super) const NEXT_DUE: &str = "SELECT min(run_at) FROM rdq_jobs \
     WHERE queue = $1 AND state IN ('scheduled', 'failed')";

/// $1 id.
pub(super) fn get() -> String {
    format!("SELECT {COLUMNS} FROM rdq_jobs WHERE id = $1")
}

/// Cancels a waiting job: $1 id, $2 now.
pub(super) fn cancel_waiting() -> String {
    format!(
        "UPDATE rdq_jobs SET state = 'cancelled', \
         finished_at = greatest(coalesce($2::bigint, rdq_now()), coalesce(launched_at, queued_at)) \
         WHERE id = $1 AND {WAITING} RETURNING queue"
    )
}

/// Cancels the pending job of a queue put first: $1 queue, $2 now. One
/// statement; a job another transaction holds (being claimed) is skipped.
pub(super) const CANCEL_OLDEST_PENDING: &str = "\
    UPDATE rdq_jobs SET state = 'cancelled', \
      finished_at = greatest(coalesce($2::bigint, rdq_now()), coalesce(launched_at, queued_at)) \
    WHERE id = (SELECT id FROM rdq_jobs WHERE queue = $1 AND state = 'pending' \
                ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
      AND state = 'pending' RETURNING id";

/// Asks an underway job's node to cancel it: $1 id.
pub(super) fn cancel_underway() -> String {
    format!(
        "UPDATE rdq_jobs SET cancel_requested = true WHERE id = $1 AND state = 'underway' \
         RETURNING {COLUMNS}"
    )
}

/// Makes a failed, dead or cancelled job pending: $1 id, $2 now. Fails with
/// a unique violation when a live job holds its key.
pub(super) const RETRY: &str = "\
    UPDATE rdq_jobs SET state = 'pending', run_at = coalesce($2::bigint, rdq_now()), \
      max_attempts = greatest(max_attempts, attempt + 1) \
    WHERE id = $1 AND state IN ('failed', 'dead', 'cancelled') RETURNING queue";

/// The live holder of a job's key, other than the job: $1 id.
pub(super) fn key_holder_of() -> String {
    format!(
        "SELECT h.id FROM rdq_jobs j JOIN rdq_jobs h ON h.queue = j.queue AND h.key = j.key \
         WHERE j.id = $1 AND h.id <> j.id AND h.{LIVE}"
    )
}

/// $1 queue.
pub(super) const OLDEST_PENDING: &str =
    "SELECT min(run_at) FROM rdq_jobs WHERE queue = $1 AND state = 'pending'";

/// $1 id, $2 priority: the old priority, if the job was waiting.
pub(super) fn reprioritize() -> String {
    format!(
        "UPDATE rdq_jobs j SET priority = $2 \
         FROM (SELECT id, priority FROM rdq_jobs WHERE id = $1 FOR UPDATE) old \
         WHERE j.id = old.id AND j.{WAITING} RETURNING old.priority"
    )
}

/// The list statement for the filters given, with its placeholders in the
/// order queue, state, before, limit (those given only).
pub(super) fn list(queue: bool, state: bool, before: bool) -> String {
    let mut sql = format!("SELECT {COLUMNS} FROM rdq_jobs WHERE true");
    let mut n = 0;
    for (on, cond) in [
        (queue, "queue = $"),
        (state, "state = $"),
        (before, "id < $"),
    ] {
        if on {
            n += 1;
            sql.push_str(&format!(" AND {cond}{n}"));
        }
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
    sql
}

/// $1 queue.
/// $1 queue: its pending jobs (on the `rdq_jobs_ready` partial index).
pub(super) const PENDING_COUNT: &str =
    "SELECT count(*) FROM rdq_jobs WHERE queue = $1 AND state = 'pending'";

pub(super) const COUNTS: &str =
    "SELECT state, count(*) FROM rdq_jobs WHERE queue = $1 GROUP BY state";

/// $1 queue, $2 before, $3 limit.
pub(super) fn prune() -> String {
    format!(
        "DELETE FROM rdq_jobs WHERE id IN (SELECT id FROM rdq_jobs \
         WHERE queue = $1 AND {FINAL} AND finished_at < $2 LIMIT $3)"
    )
}

/// $1 name.
pub(super) const LOAD_QUEUE: &str = "SELECT declared::text, settings::text FROM rdq_queues \
     WHERE name = $1 AND declared IS NOT NULL AND settings IS NOT NULL";

/// $1 name, $2 declared, $3 settings (JSON text), $4 now.
pub(super) const SAVE_QUEUE: &str = "\
    INSERT INTO rdq_queues (name, declared, settings, updated_at) \
    VALUES ($1, $2::text::jsonb, $3::text::jsonb, coalesce($4::bigint, rdq_now())) \
    ON CONFLICT (name) DO UPDATE SET declared = excluded.declared, \
      settings = excluded.settings, updated_at = excluded.updated_at";
