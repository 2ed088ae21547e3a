//! The HTTP API, under `/api/v1`, described by `/api/v1/openapi.json`
//! (generated from these handlers), plus `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Every error is `{"error": {"code", "message"}}` ([`error::ApiError`]).
//! When the server has a token, every route but `/healthz`, `/readyz` and the
//! OpenAPI document needs `Authorization: Bearer <token>`: stricter than
//! guarding only changes, because job arguments can be sensitive.

pub mod error;
pub mod events;
pub mod jobs;
pub mod json;
pub mod queues;
pub mod types;
pub mod watch;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use rdq_store::Store;
use utoipa::OpenApi;

use self::error::ApiError;
use crate::app::App;

/// The OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "rdq", description = "Durable, rate-controlled job queues over HTTP."),
    paths(
        queues::list, queues::get, queues::patch, queues::put, queues::put_batch,
        jobs::list, jobs::get, jobs::cancel, jobs::priority, jobs::retry, jobs::wait,
        events::stream,
        watch::stalls, watch::dump,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, crate::app::Event)),
    tags(
        (name = "queues", description = "Queues: settings and counts"),
        (name = "jobs", description = "Jobs: put, find, cancel, reprioritize, retry, wait"),
        (name = "events", description = "Live changes"),
        (name = "watchdog", description = "Stalls of the server's runtime, and what every underway job is doing"),
    )
)]
pub struct ApiDoc;

/// The whole HTTP surface, for `serve` and for tests (`oneshot`).
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/queues", get(queues::list))
        .route("/queues/{name}", get(queues::get).patch(queues::patch))
        .route("/queues/{name}/jobs", post(queues::put))
        .route("/queues/{name}/jobs/batch", post(queues::put_batch))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{id}", get(jobs::get))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/priority", post(jobs::priority))
        .route("/jobs/{id}/retry", post(jobs::retry))
        .route("/jobs/{id}/wait", get(jobs::wait))
        .route("/events", get(events::stream))
        .route("/stalls", get(watch::stalls))
        .route("/dump", get(watch::dump));
    let guarded = Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(app.max_body))
        .with_state(app)
}

async fn auth(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if let Some(token) = &app.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => {}
            Some(_) => return ApiError::Unauthorized("wrong bearer token".into()).into_response(),
            None => {
                return ApiError::Unauthorized(
                    "this server needs Authorization: Bearer <token> (RDQ_TOKEN)".into(),
                )
                .into_response()
            }
        }
    }
    next.run(request).await
}

/// Compares without leaking, through timing, how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn openapi() -> impl IntoResponse {
    axum::Json(ApiDoc::openapi())
}

async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
    let text = app.metrics.render(&app).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers a read.
async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    match app.store.get(rdq_store::JobId(0)).await {
        Ok(_) => Ok("ready\n"),
        Err(e) => Err(ApiError::Unavailable(format!(
            "the store is not ready: {}",
            ApiError::from(e)
        ))),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; see /api/v1/openapi.json",
        request.method(),
        request.uri().path()
    ))
}
