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
pub mod wire;

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
use rdq_store::Store;
use tower_http::catch_panic::CatchPanicLayer;
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
        metrics, healthz, readyz, openapi,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, crate::app::Event)),
    tags(
        (name = "queues", description = "Queues: settings and counts"),
        (name = "jobs", description = "Jobs: put, find, cancel, reprioritize, retry, wait"),
        (name = "events", description = "Live changes"),
        (name = "watchdog", description = "Stalls of the server's runtime, and what every underway job is doing"),
        (name = "server", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// What operations can answer besides their own statuses, as the document
/// states it: 400 for a bad path parameter, an unknown or bad query
/// parameter or a body that is not JSON (on operations with parameters or a
/// body; others ignore a query string); 401 without the token (on every
/// route the token guards); 503 in an outage or while shutting down; and,
/// with a body, 413 (over `max_body`), 415 (not sent as `application/json`)
/// and 422 (JSON that does not fit).
const COMMON: [(&str, &str); 6] = [
    ("400", "Malformed: a bad path parameter, an unknown or bad query parameter, or a body that is not JSON"),
    ("401", "The server has a token, and the request did not carry it"),
    ("503", "The store is unavailable (locked, read-only, unreachable, disk full) or the server is shutting down"),
    ("413", "The body is larger than the server's max_body"),
    ("415", "The body is not sent with Content-Type: application/json"),
    ("422", "The body is JSON that does not fit, or a value is out of range"),
];

/// The OpenAPI document, as `/api/v1/openapi.json` serves it: what
/// [`ApiDoc`] generates, with the statuses every operation shares
/// (400, 401, 413, 415, 422, 503 where they apply), job ids as `int64` from
/// 1, the states a `state` filter takes, and request bodies required.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    // A rule between two fields: run_at and delay_ms, not both (either may
    // be null, which is as good as absent).
    if let Some(put) = doc.pointer_mut("/components/schemas/PutBody") {
        put["not"] = serde_json::json!({
            "required": ["run_at", "delay_ms"],
            "properties": {"run_at": {"type": "string"}, "delay_ms": {"type": "integer"}}
        });
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        for schema in schemas.values_mut() {
            if let Some(fields) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
                fields.values_mut().for_each(unsigned);
            }
        }
    }
    let error = serde_json::json!({
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
    });
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let open = matches!(
            path.as_str(),
            "/healthz" | "/readyz" | "/api/v1/openapi.json"
        );
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut().filter_map(|op| op.as_object_mut()) {
            let has_body = match op.get_mut("requestBody").and_then(|b| b.as_object_mut()) {
                Some(body) => {
                    body.insert("required".into(), true.into());
                    true
                }
                None => false,
            };
            let has_params = op
                .get("parameters")
                .and_then(|p| p.as_array())
                .is_some_and(|p| !p.is_empty());
            if let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) {
                for param in params.iter_mut() {
                    if let Some(schema) = param.get_mut("schema") {
                        unsigned(schema);
                    }
                    match (param["in"].as_str(), param["name"].as_str()) {
                        (Some("path"), Some("id")) => {
                            param["schema"] = serde_json::json!({"type": "integer", "format": "int64", "minimum": 1});
                        }
                        (Some("query"), Some("state")) => {
                            let states: Vec<String> = rdq_store::JobState::ALL
                                .iter()
                                .map(|s| s.to_string())
                                .collect();
                            param["schema"] = serde_json::json!({"type": "string", "enum": states});
                        }
                        _ => {}
                    }
                }
            }
            let Some(responses) = op.get_mut("responses").and_then(|r| r.as_object_mut()) else {
                continue;
            };
            for (status, description) in COMMON {
                let applies = match status {
                    "400" => has_params || has_body,
                    "401" => !open,
                    "503" => !open || path == "/readyz",
                    _ => has_body,
                };
                if applies && !responses.contains_key(status) {
                    responses.insert(
                        status.into(),
                        serde_json::json!({"description": description, "content": error}),
                    );
                }
            }
        }
    }
    doc
}

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

/// Documents an unsigned integer as what it is: utoipa writes a `u32` as
/// `int32` and a `u64` as `int64` (with minimum 0), whose ranges end at half
/// of what the server accepts, and a `usize` with no maximum. Each becomes
/// `uint32` or `uint64` with its real maximum, unless a smaller one is given.
fn unsigned(schema: &mut serde_json::Value) {
    let integer = schema["type"] == "integer"
        || schema["type"]
            .as_array()
            .is_some_and(|t| t.contains(&serde_json::json!("integer")));
    if !integer || schema["minimum"].as_i64().is_none_or(|m| m < 0) {
        return;
    }
    let (format, most) = match schema["format"].as_str() {
        Some("int32") => ("uint32", u64::from(u32::MAX)),
        Some("int64") | None => ("uint64", u64::MAX),
        Some(_) => return,
    };
    let narrower = schema["maximum"]
        .as_u64()
        .is_some_and(|m| m <= i32::MAX as u64);
    if !narrower {
        schema["format"] = format.into();
        if !schema["maximum"].is_u64() {
            schema["maximum"] = most.into();
        }
    }
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
async fn openapi() -> impl IntoResponse {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(document).clone())
}

/// Prometheus metrics, in the OpenMetrics text format.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "The metrics", body = String,
        content_type = "application/openmetrics-text")))]
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

/// Whether the process answers: always `ok`.
#[utoipa::path(get, path = "/healthz", tag = "server",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers a read: `ready`, or 503.
#[utoipa::path(get, path = "/readyz", tag = "server",
    responses((status = 200, description = "`ready`", body = String, content_type = "text/plain")))]
async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    match app.store.get(rdq_store::JobId(0)).await {
        Ok(_) => Ok("ready\n"),
        Err(e) => Err(ApiError::Unavailable(format!(
            "the store is not ready: {}",
            ApiError::from(e)
        ))),
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
