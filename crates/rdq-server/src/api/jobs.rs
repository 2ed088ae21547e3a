//! `/api/v1/jobs`: find, look at, cancel, reprioritize, retry, and wait for
//! jobs.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use rdq_store::{JobId, JobRow, JobState, ListParams, Store};

use super::error::{ApiError, ErrorBody};
use super::json::{ApiJson, ApiPath, ApiQuery};
use super::queues::find;
use super::types::{JobPage, JobView, ListQuery, PriorityBody, PriorityReply, WaitQuery};
use crate::app::{App, Event, ServerQueue};

async fn job(app: &App, id: i64) -> Result<(JobRow, &ServerQueue), ApiError> {
    if id < 1 {
        return Err(ApiError::BadRequest(format!(
            "bad path: job id {id}; ids are 1 to {}",
            i64::MAX
        )));
    }
    let row = app
        .store
        .get(JobId(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    let queue = app.queues.get(&row.queue).ok_or_else(|| {
        ApiError::NotFound(format!(
            "job {id} belongs to queue {:?}, which this server does not run",
            row.queue
        ))
    })?;
    Ok((row, queue))
}

/// Jobs, newest first, filtered by queue and state, paged with `before`.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn list(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<axum::Json<JobPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Unprocessable(format!(
            "limit {limit}: give 1 to 1000"
        )));
    }
    if let Some(name) = &q.queue {
        find(&app, name)?;
    }
    let state = match &q.state {
        Some(s) => Some(
            s.parse::<JobState>()
                .map_err(|e| ApiError::Unprocessable(e.to_string()))?,
        ),
        None => None,
    };
    // One more than asked for tells whether another page exists.
    let mut rows = app
        .store
        .list(ListParams {
            queue: q.queue,
            state,
            before: q.before.map(JobId),
            limit: limit + 1,
        })
        .await?;
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next = if more {
        rows.last().map(|r| r.id.0)
    } else {
        None
    };
    Ok(axum::Json(JobPage {
        jobs: rows.into_iter().map(JobView::from).collect(),
        next,
    }))
}

/// One job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = JobView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<JobView>, ApiError> {
    Ok(axum::Json(job(&app, id).await?.0.into()))
}

/// How long a cancel waits for an underway job to end before it answers
/// 202 (the request is recorded; the job's node carries it out).
pub const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Cancels a job: a waiting one at once; an underway one has its work
/// dropped (for a command, its process group killed) by the node running
/// it. 200 with the job once it is final (cancelled, or finished just
/// before); 202 with the job still underway when it runs on another node
/// that has not ended it within a second: the request is recorded and that
/// node ends it (`GET /jobs/{id}/wait` tells when). 409 if it had finished.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = JobView, description = "final: cancelled (or finished just before)"),
        (status = 202, body = JobView, description = "cancel requested: the job is still underway on its node, which ends it"),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, axum::Json<JobView>), ApiError> {
    let (row, q) = job(&app, id).await?;
    q.queue.cancel(row.id).await?;
    let (status, now) = match tokio::time::timeout(CANCEL_WAIT, q.queue.wait(row.id)).await {
        Ok(done) => (StatusCode::OK, done?),
        Err(_) => (StatusCode::ACCEPTED, q.queue.get(row.id).await?),
    };
    app.emit(Event::Job {
        id,
        queue: row.queue.clone(),
        event: if status == StatusCode::OK {
            now.state.to_string()
        } else {
            "cancel_requested".into()
        },
        attempt: now.attempt,
    });
    Ok((status, axum::Json(now.into())))
}

/// Changes a waiting job's priority. 409 if it is underway or finished.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/priority", tag = "jobs",
    params(("id" = i64, Path, description = "The job")),
    request_body = PriorityBody,
    responses((status = 200, body = PriorityReply), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn priority(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<PriorityBody>,
) -> Result<axum::Json<PriorityReply>, ApiError> {
    let (row, q) = job(&app, id).await?;
    let old = q.queue.reprioritize(row.id, body.priority).await?;
    app.emit(Event::Job {
        id,
        queue: row.queue.clone(),
        event: "reprioritized".into(),
        attempt: row.attempt,
    });
    Ok(axum::Json(PriorityReply {
        old,
        job: q.queue.get(row.id).await?.into(),
    }))
}

/// Runs a failed, dead or cancelled job again now. 409 for other states.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path, description = "The job")),
    responses((status = 200, body = JobView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn retry(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<i64>,
) -> Result<axum::Json<JobView>, ApiError> {
    let (row, q) = job(&app, id).await?;
    q.queue.retry(row.id).await?;
    app.emit(Event::Job {
        id,
        queue: row.queue.clone(),
        event: "retried".into(),
        attempt: row.attempt,
    });
    Ok(axum::Json(q.queue.get(row.id).await?.into()))
}

/// Waits (long poll) until the job is final (succeeded, dead, cancelled):
/// 200 with the job; or, if `timeout_ms` passes first, 202 with the job as
/// it is then; 503 if the server begins shutting down meanwhile.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/wait", tag = "jobs",
    params(("id" = i64, Path, description = "The job"), WaitQuery),
    responses((status = 200, body = JobView, description = "final"), (status = 202, body = JobView, description = "not final yet"),
        (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn wait(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<(StatusCode, axum::Json<JobView>), ApiError> {
    let timeout = crate::limits::LONG_POLL
        .check_ms("timeout_ms", q.timeout_ms.unwrap_or(30_000))
        .map_err(ApiError::Unprocessable)?;
    let (row, queue) = job(&app, id).await?;
    tokio::select! {
        done = tokio::time::timeout(timeout, queue.queue.wait(row.id)) => match done {
            Ok(done) => Ok((StatusCode::OK, axum::Json(done?.into()))),
            Err(_) => Ok((StatusCode::ACCEPTED, axum::Json(queue.queue.get(row.id).await?.into()))),
        },
        // The server is stopping: say so, rather than look like a timeout.
        () = app.shutting_down() => Err(ApiError::Unavailable(format!(
            "the server is shutting down; job {id} is {}: ask again after it restarts",
            queue.queue.get(row.id).await?.state
        ))),
    }
}
