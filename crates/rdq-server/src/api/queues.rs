//! `/api/v1/queues`: list, look at, and steer queues.

use std::sync::Arc;

use axum::extract::State;
use rdq_store::{JobSpec, PutOptions, Timestamp};

use super::error::{ApiError, ErrorBody};
use super::json::{ApiJson, ApiPath};
use super::types::{
    queue_view, BatchBody, BatchReply, PutBody, PutReply, QueueList, QueuePatch, QueueView,
};
use crate::app::{App, Event, ServerQueue};

/// Most jobs in one batch put.
pub const MAX_BATCH: usize = 10_000;

pub(crate) fn find<'a>(app: &'a App, name: &str) -> Result<&'a ServerQueue, ApiError> {
    app.queues.get(name).ok_or_else(|| {
        let known: Vec<&str> = app.queues.keys().map(String::as_str).collect();
        ApiError::NotFound(format!("no queue named {name:?}; the queues are {known:?}"))
    })
}

pub(crate) async fn view(q: &ServerQueue) -> Result<QueueView, ApiError> {
    let counts = q.queue.counts().await?;
    let now = q.queue.clock().now();
    let oldest = q.queue.oldest_pending().await?.map(|t| now.since(t));
    Ok(queue_view(
        q.queue.name(),
        q.config.executor.kind(),
        q.queue.settings(),
        &counts,
        q.queue.held_until(),
        oldest,
    ))
}

/// Every queue.
#[utoipa::path(get, path = "/api/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList)))]
pub async fn list(State(app): State<Arc<App>>) -> Result<axum::Json<QueueList>, ApiError> {
    let mut queues = Vec::with_capacity(app.queues.len());
    for q in app.queues.values() {
        queues.push(view(q).await?);
    }
    Ok(axum::Json(QueueList { queues }))
}

/// One queue.
#[utoipa::path(get, path = "/api/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue")),
    responses((status = 200, body = QueueView), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<QueueView>, ApiError> {
    Ok(axum::Json(view(find(&app, &name)?).await?))
}

/// Changes a queue's width, rate, timeout or paused state, now and after
/// restarts.
#[utoipa::path(patch, path = "/api/v1/queues/{name}", tag = "queues",
    params(("name" = String, Path, description = "The queue")),
    request_body = QueuePatch,
    responses((status = 200, body = QueueView), (status = 404, body = ErrorBody),
        (status = 409, description = "The timeout is not longer than the queue's warn_after", body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn patch(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(patch): ApiJson<QueuePatch>,
) -> Result<axum::Json<QueueView>, ApiError> {
    let q = find(&app, &name)?;
    // Check everything before changing anything.
    let patch = patch.check().map_err(ApiError::Unprocessable)?;
    if let (Some(Some(timeout)), Some(warn)) = (patch.timeout, q.config.warn_after) {
        // The rule of the configuration file, too. A conflict with the
        // queue's state (409), not a value out of its range (422): the same
        // timeout is fine on a queue with a shorter warn_after.
        if timeout <= warn {
            return Err(ApiError::Conflict(format!(
                "timeout_ms {} is not longer than the queue's warn_after ({warn:?}): \
                 the timeout would cut jobs off before they are reported as hung",
                timeout.as_millis()
            )));
        }
    }
    let changed = |change: &str| {
        app.emit(Event::Queue {
            queue: name.clone(),
            change: change.to_owned(),
        })
    };
    if let Some(width) = patch.width {
        q.queue.set_width(width).await?;
        changed("width");
    }
    if let Some(rate) = patch.rate {
        q.queue.set_rate(rate).await?;
        changed("rate");
    }
    if let Some(timeout) = patch.timeout {
        q.queue.set_timeout(timeout).await?;
        changed("timeout");
    }
    match patch.paused {
        Some(true) => {
            q.queue.pause().await?;
            changed("paused");
        }
        Some(false) => {
            q.queue.resume().await?;
            changed("resumed");
        }
        None => {}
    }
    Ok(axum::Json(view(q).await?))
}

fn spec(q: &ServerQueue, body: PutBody) -> Result<JobSpec, ApiError> {
    let now = q.queue.clock().now().to_system_time();
    let run_at = body.check(now).map_err(ApiError::Unprocessable)?;
    let mut options = PutOptions::priority(body.priority);
    if let Some(at) = run_at {
        options = options.run_at(at);
    }
    if let Some(key) = body.key {
        options = options.key(key);
    }
    if let Some(n) = body.max_attempts {
        options = options.max_attempts(n);
    }
    if let Some(ms) = body.timeout_ms {
        options = options.timeout(std::time::Duration::from_millis(ms));
    }
    JobSpec::new(q.config.executor.kind(), &body.args, options).map_err(ApiError::from)
}

async fn put_specs(
    app: &App,
    q: &ServerQueue,
    specs: Vec<JobSpec>,
) -> Result<Vec<PutReply>, ApiError> {
    let now = q.queue.clock().now();
    let scheduled: Vec<bool> = specs
        .iter()
        .map(|s| s.options.run_at.is_some_and(|t| Timestamp::from(t) > now))
        .collect();
    let inserted = q.queue.put_many(specs).await?;
    for (i, s) in inserted.iter().zip(scheduled) {
        if !i.existing {
            app.emit(Event::Job {
                id: i.id.0,
                queue: q.queue.name().to_owned(),
                event: if s { "scheduled" } else { "queued" }.to_owned(),
                attempt: 0,
            });
        }
    }
    Ok(inserted
        .into_iter()
        .map(|i| PutReply {
            id: i.id.0,
            existing: i.existing,
        })
        .collect())
}

/// Puts one job. Returns once it is committed (201; 200 when a live job with
/// the same key already existed).
#[utoipa::path(post, path = "/api/v1/queues/{name}/jobs", tag = "jobs",
    params(("name" = String, Path, description = "The queue")),
    request_body = PutBody,
    responses((status = 201, body = PutReply), (status = 200, body = PutReply, description = "an existing job with this key"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn put(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PutBody>,
) -> Result<(axum::http::StatusCode, axum::Json<PutReply>), ApiError> {
    let q = find(&app, &name)?;
    let spec = spec(q, body)?;
    let reply = put_specs(&app, q, vec![spec]).await?.remove(0);
    let status = if reply.existing {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::CREATED
    };
    Ok((status, axum::Json(reply)))
}

/// Puts 1 to 10,000 jobs in one commit, in order: all or none (422 for
/// none or more).
#[utoipa::path(post, path = "/api/v1/queues/{name}/jobs/batch", tag = "jobs",
    params(("name" = String, Path, description = "The queue")),
    request_body = BatchBody,
    responses((status = 201, body = BatchReply), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn put_batch(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<BatchBody>,
) -> Result<(axum::http::StatusCode, axum::Json<BatchReply>), ApiError> {
    let q = find(&app, &name)?;
    if body.jobs.len() > MAX_BATCH {
        return Err(ApiError::Unprocessable(format!(
            "{} jobs in one batch; at most {MAX_BATCH}",
            body.jobs.len()
        )));
    }
    if body.jobs.is_empty() {
        return Err(ApiError::Unprocessable("the batch has no jobs".into()));
    }
    let specs = body
        .jobs
        .into_iter()
        .enumerate()
        .map(|(i, b)| spec(q, b).map_err(|e| prefix(i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = put_specs(&app, q, specs).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(BatchReply { jobs }),
    ))
}

fn prefix(index: usize, e: ApiError) -> ApiError {
    match e {
        ApiError::Unprocessable(m) => ApiError::Unprocessable(format!("jobs[{index}]: {m}")),
        other => other,
    }
}
