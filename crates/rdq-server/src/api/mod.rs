//! The HTTP API, under `/api/v1`, described by `/api/v1/openapi.json`
//! (generated from these handlers), plus `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! Every error is `{"error": {"code", "message"}}` ([`error::ApiError`]).
//! When the server has a token, every route but `/healthz`, `/readyz` and the
//! OpenAPI document needs `Authorization: Bearer <token>`: stricter than
//! guarding only changes, because job arguments can be sensitive.

pub mod doc;
pub mod error;
pub mod events;
pub mod jobs;
pub mod json;
pub mod queues;
pub mod time;
pub mod topics;
pub mod types;
pub mod watch;
pub mod wire;

pub use self::doc::{document, ApiDoc};
pub use self::wire::JsonErrorListener;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt as _;
use tower_http::catch_panic::CatchPanicLayer;

use self::error::{ApiError, ErrorBody};
use crate::app::App;
use crate::store::AnyStore;

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
        .route("/topics", get(topics::list_topics))
        .route("/topics/{topic}/messages", post(topics::publish))
        .route("/consumers", get(topics::list_consumers))
        .route("/consumers/{name}", get(topics::get_consumer))
        .route("/events", get(events::stream))
        .route("/stalls", get(watch::stalls))
        .route("/dump", get(watch::dump));
    let guarded = Router::new()
        .nest("/api/v1", api)
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(app.clone(), read_body))
        .layer(middleware::from_fn_with_state(app.clone(), auth));
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(app.max_body))
        .layer(catch_panic())
        .with_state(app)
}

/// A handler that panics answers a JSON 500 (and the panic is logged),
/// rather than a closed connection.
fn catch_panic() -> CatchPanicLayer<fn(Box<dyn Any + Send + 'static>) -> Response> {
    CatchPanicLayer::custom(panicked as fn(Box<dyn Any + Send + 'static>) -> Response)
}

fn panicked(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_owned());
    tracing::error!(panic = %what, "a request handler panicked");
    ApiError::Internal("the server failed on this request (a bug); its log has the details".into())
        .into_response()
}

/// The most of an oversize body read and dropped before answering 413.
const DRAIN_MAX: u64 = 64 << 20;

/// The longest spent dropping an oversize body.
const DRAIN_TIME: Duration = Duration::from_secs(30);

/// Reads the body (up to `max_body`) before the handler runs. One over the
/// limit is answered 413 naming the limit, after reading and dropping the
/// rest of it (up to [`DRAIN_MAX`]): a server that answered without reading
/// would close the connection on a client still sending, which then sees a
/// broken pipe or a reset instead of the answer.
async fn read_body(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let limit = app.max_body as u64;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let mut kept = Vec::new();
    let mut over = declared.is_some_and(|n| n > limit);
    while !over {
        match stream.next().await {
            None => break,
            Some(Ok(chunk)) => {
                read += chunk.len() as u64;
                over = read > limit;
                if !over {
                    kept.extend_from_slice(&chunk);
                }
            }
            Some(Err(e)) => {
                return ApiError::BadRequest(format!("the request body could not be read: {e}"))
                    .into_response()
            }
        }
    }
    if !over {
        return next.run(Request::from_parts(parts, Body::from(kept))).await;
    }
    let drain = async {
        while read <= DRAIN_MAX {
            match stream.next().await {
                Some(Ok(chunk)) => read += chunk.len() as u64,
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    let size = match declared {
        Some(n) => format!("{n} bytes"),
        None => format!("over {limit} bytes"),
    };
    ApiError::TooLarge(format!(
        "the request body is {size}; this server accepts at most {limit} (its max_body)"
    ))
    .into_response()
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

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "server",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub(crate) async fn openapi() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(document).clone())
}

/// Prometheus metrics, in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "application/openmetrics-text")))]
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Result<Response, ApiError> {
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

/// Whether the process answers: always `ok`.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers (a read on SQLite, `SELECT 1` on
/// PostgreSQL): `ready`, or 503 with the reason (`store_unavailable` when
/// PostgreSQL does not answer).
#[utoipa::path(get, path = "/readyz", tag = "server",
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain"),
        (status = 503, description = "The store does not answer", body = ErrorBody)))]
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    match crate::store::ping(&app.store).await {
        Ok(()) => Ok("ready\n"),
        Err(e) => match &app.store {
            AnyStore::Postgres(_) => Err(ApiError::StoreUnavailable(format!(
                "the store is not ready: {e}"
            ))),
            AnyStore::Sqlite(_) => Err(ApiError::Unavailable(format!(
                "the store is not ready: {}",
                ApiError::from(e)
            ))),
        },
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "{} is not allowed on {}; the Allow header lists what is, see /api/v1/openapi.json",
        request.method(),
        request.uri().path()
    ))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(format!(
        "no route {} {}; see /api/v1/openapi.json",
        request.method(),
        request.uri().path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    #[tokio::test]
    async fn a_panicking_handler_answers_a_json_500() {
        let router: Router = Router::new()
            .route(
                "/boom",
                get(|| async {
                    let found: Option<&'static str> = "".strip_prefix('x');
                    found.expect("a bug")
                }),
            )
            .layer(catch_panic());
        let request = Request::builder().uri("/boom").body(Body::empty()).unwrap();
        let response = router.oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "internal");
    }
}
