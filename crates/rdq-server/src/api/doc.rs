//! The OpenAPI document: what utoipa generates from the handlers, and the
//! rules it cannot derive from them (statuses every operation shares, the
//! ranges of unsigned integers, job ids, the `state` filter), so that the
//! document states exactly what the server does.

use utoipa::OpenApi;

use super::{error, events, jobs, queues, topics, watch};

/// The OpenAPI document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "rdq", description = "Durable, rate-controlled job queues over HTTP."),
    paths(
        queues::list, queues::get, queues::patch, queues::put, queues::put_batch,
        jobs::list, jobs::get, jobs::cancel, jobs::priority, jobs::retry, jobs::wait,
        topics::publish, topics::list_topics, topics::list_consumers, topics::get_consumer,
        events::stream,
        watch::stalls, watch::dump,
        super::metrics, super::healthz, super::readyz, super::openapi,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail, crate::app::Event)),
    tags(
        (name = "queues", description = "Queues: settings and counts"),
        (name = "jobs", description = "Jobs: put, find, cancel, reprioritize, retry, wait"),
        (name = "topics", description = "Topics and consumers: publish a message to every subscribed consumer's queue; each consumer's backlog"),
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
