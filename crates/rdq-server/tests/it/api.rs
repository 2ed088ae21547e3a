//! The HTTP API, through its router: every route, every error status, and
//! the http executor's answers, against a scripted target.

use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use serde_json::json;

use crate::support::{eventually, Answer, TestServer};

#[tokio::test]
async fn put_run_wait_and_read_a_job() {
    let s = TestServer::start(|_| {}).await;
    let id = s
        .put(r#"{"args": {"to": "+15550100", "text": "hi"}, "priority": 3}"#)
        .await;
    let job = s.finished(id).await;
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["kind"], "http");
    assert_eq!(job["priority"], 3);
    assert_eq!(job["args"], json!({"to": "+15550100", "text": "hi"}));
    assert_eq!(job["result"], json!({"status": 200, "body": {"ok": true}}));
    let (status, same) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!((status, &same["id"]), (StatusCode::OK, &json!(id)));
    // The target got the job document and a stable idempotency key.
    let (doc, key) = s.target.seen().remove(0);
    assert_eq!(
        (
            doc["id"].as_i64(),
            doc["queue"].as_str(),
            doc["attempt"].as_u64()
        ),
        (Some(id), Some("sms"), Some(1))
    );
    assert_eq!(doc["args"]["to"], "+15550100");
    assert_eq!(key, Some(format!("rdq-sms-{id}")));
}

#[tokio::test]
async fn a_key_returns_the_live_job_with_200() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let id = s.put(r#"{"args": 1, "key": "order-9"}"#).await;
    let (status, reply) = s
        .call(
            "POST",
            "/api/v1/queues/sms/jobs",
            Some(r#"{"args": 2, "key": "order-9"}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply, json!({"id": id, "existing": true}));
}

#[tokio::test]
async fn batch_put_is_ordered_and_all_or_nothing() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let (status, reply) = s
        .call(
            "POST",
            "/api/v1/queues/sms/jobs/batch",
            Some(r#"{"jobs": [{"args": 1}, {"args": 2, "priority": -1}, {"args": 3, "delay_ms": 60000}]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let ids: Vec<i64> = reply["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let (status, err) = s
        .call(
            "POST",
            "/api/v1/queues/sms/jobs/batch",
            Some(r#"{"jobs": [{"args": 1}, {"args": 2, "max_attempts": 0}]}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("jobs[1]: max_attempts"),
        "{err}"
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/queues/sms/jobs/batch",
            Some(r#"{"jobs": []}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let counts = s.counts().await;
    assert_eq!(
        (counts["pending"].as_u64(), counts["scheduled"].as_u64()),
        (Some(2), Some(1)),
        "nothing of the bad batch"
    );
}

#[tokio::test]
async fn listing_pages_newest_first_with_filters() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let ids: Vec<i64> = futures_ids(&s, 5).await;
    let (status, page) = s.call("GET", "/api/v1/jobs?queue=sms&limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<i64> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(got, [ids[4], ids[3]]);
    let next = page["next"].as_i64().unwrap();
    let (_, page2) = s
        .call(
            "GET",
            &format!("/api/v1/jobs?queue=sms&limit=2&before={next}"),
            None,
        )
        .await;
    assert_eq!(page2["jobs"][0]["id"].as_i64(), Some(ids[2]));
    let (_, last) = s
        .call(
            "GET",
            &format!("/api/v1/jobs?limit=10&before={}", ids[1]),
            None,
        )
        .await;
    assert_eq!(
        (last["jobs"].as_array().unwrap().len(), &last["next"]),
        (1, &json!(null))
    );
    let (_, pending) = s.call("GET", "/api/v1/jobs?state=pending", None).await;
    assert_eq!(pending["jobs"].as_array().unwrap().len(), 5);
    for (uri, status) in [
        ("/api/v1/jobs?state=done", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/v1/jobs?limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("/api/v1/jobs?limit=lots", StatusCode::BAD_REQUEST),
        ("/api/v1/jobs?queue=fax", StatusCode::NOT_FOUND),
        ("/api/v1/jobs?colour=red", StatusCode::BAD_REQUEST),
    ] {
        assert_eq!(s.call("GET", uri, None).await.0, status, "{uri}");
    }
}

async fn futures_ids(s: &TestServer, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(s.put(&format!(r#"{{"args": {i}}}"#)).await);
    }
    ids
}

/// Every malformed request gets its status and a message in one shape, and
/// changes nothing.
#[tokio::test]
async fn bad_requests_get_the_right_status_and_change_nothing() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let id = s.put(r#"{"args": 1}"#).await;
    let big = format!(r#"{{"args": "{}"}}"#, "x".repeat(70 * 1024));
    // (method, uri, body, send as JSON, status, error code)
    type Case<'a> = (&'a str, String, Option<String>, bool, StatusCode, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some("{not json".into()),
            true,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some(r#"{"args": 1}"#.into()),
            false,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some(r#"{"priority": "high"}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some(r#"{"args": 1, "colour": "red"}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some(r#"{"args": 1, "run_at": "tomorrow"}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some(r#"{"args": 1, "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            Some(big),
            true,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "POST",
            "/api/v1/queues/fax/jobs".into(),
            Some(r#"{"args": 1}"#.into()),
            true,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "PATCH",
            "/api/v1/queues/sms".into(),
            Some(r#"{"width": -1}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "PATCH",
            "/api/v1/queues/sms".into(),
            Some(r#"{"rate": {"count": 0, "period_ms": 1000}}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "PATCH",
            "/api/v1/queues/sms".into(),
            Some(r#"{"speed": 3}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "GET",
            "/api/v1/jobs/999999".into(),
            None,
            true,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "GET",
            "/api/v1/jobs/seven".into(),
            None,
            true,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "POST",
            "/api/v1/jobs/999999/cancel".into(),
            None,
            true,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "POST",
            format!("/api/v1/jobs/{id}/priority"),
            Some(r#"{"priority": "top"}"#.into()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "GET",
            format!("/api/v1/jobs/{id}/wait?timeout_ms=999999"),
            None,
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
        ),
        (
            "DELETE",
            "/api/v1/queues/sms".into(),
            None,
            true,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/api/v2/queues".into(),
            None,
            true,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, uri, body, json, status, code) in cases {
        let (got, reply) = s.call_with(method, &uri, body.as_deref(), None, json).await;
        assert_eq!(got, status, "{method} {uri}: {reply}");
        if !code.is_empty() {
            assert_eq!(reply["error"]["code"], code, "{method} {uri}: {reply}");
            assert!(
                !reply["error"]["message"].as_str().unwrap_or("").is_empty(),
                "{method} {uri}: {reply}"
            );
        }
    }
    let counts = s.counts().await;
    assert_eq!(counts["pending"], 1, "nothing changed: {counts}");
    let (_, q) = s.call("GET", "/api/v1/queues/sms", None).await;
    assert_eq!((q["width"].as_u64(), &q["rate"]), (Some(2), &json!(null)));
}

/// One request through the router; status, headers and body as JSON.
async fn raw_call(
    s: &TestServer,
    request: axum::http::Request<axum::body::Body>,
) -> (StatusCode, axum::http::HeaderMap, serde_json::Value) {
    let response = tower::ServiceExt::oneshot(s.router.clone(), request)
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{}: not JSON: {:?}",
            parts.status,
            String::from_utf8_lossy(&bytes)
        )
    });
    (parts.status, parts.headers, value)
}

#[tokio::test]
async fn rejections_of_the_router_and_extractors_are_json() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let request = |method: &str, uri: &str, content_type: Option<&str>, body: &str| {
        let mut r = axum::http::Request::builder().method(method).uri(uri);
        if let Some(t) = content_type {
            r = r.header("content-type", t);
        }
        r.body(axum::body::Body::from(body.to_owned())).unwrap()
    };
    let (status, headers, body) =
        raw_call(&s, request("DELETE", "/api/v1/queues/sms", None, "")).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    let allow = headers
        .get("allow")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        allow.contains("GET") && allow.contains("PATCH"),
        "allow: {allow:?}"
    );
    for (content_type, body) in [
        (None, r#"{"args": 1}"#),
        (Some("text/plain"), r#"{"args": 1}"#),
    ] {
        let (status, _, reply) = raw_call(
            &s,
            request("POST", "/api/v1/queues/sms/jobs", content_type, body),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {reply}"
        );
        assert_eq!(reply["error"]["code"], "unsupported_media_type", "{reply}");
    }
    assert_eq!(s.counts().await["pending"], 0, "nothing was put");
}

#[tokio::test]
async fn non_utf8_bodies_are_refused() {
    let s = TestServer::start(|_| {}).await;
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/v1/queues/sms/jobs")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(vec![
            b'{', b'"', b'a', b'r', b'g', b's', b'"', b':', b'"', 0xff, 0xfe, b'"', b'}',
        ]))
        .unwrap();
    let response = tower::ServiceExt::oneshot(s.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cancel_reprioritize_and_retry_by_state() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let a = s.put(r#"{"args": "a", "priority": 5}"#).await;
    let b = s.put(r#"{"args": "b"}"#).await;
    let (status, reply) = s
        .call(
            "POST",
            &format!("/api/v1/jobs/{a}/priority"),
            Some(r#"{"priority": -2}"#),
        )
        .await;
    assert_eq!(
        (
            status,
            reply["old"].as_i64(),
            reply["job"]["priority"].as_i64()
        ),
        (StatusCode::OK, Some(5), Some(-2))
    );
    let (status, job) = s
        .call("POST", &format!("/api/v1/jobs/{b}/cancel"), None)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    let (status, err) = s
        .call("POST", &format!("/api/v1/jobs/{b}/cancel"), None)
        .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/jobs/{b}/priority"),
            Some(r#"{"priority": 1}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, job) = s
        .call("POST", &format!("/api/v1/jobs/{b}/retry"), None)
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (StatusCode::OK, Some("pending"))
    );
    let (status, _) = s
        .call("POST", &format!("/api/v1/jobs/{a}/retry"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a pending job cannot be retried"
    );
    s.call("PATCH", "/api/v1/queues/sms", Some(r#"{"paused": false}"#))
        .await;
    assert_eq!(s.finished(a).await["state"], "succeeded");
    assert_eq!(s.finished(b).await["state"], "succeeded");
}

#[tokio::test]
async fn retrying_a_job_whose_key_a_live_job_holds_is_a_conflict_naming_it() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let old = s.put(r#"{"args": 1, "key": "order-7"}"#).await;
    let (status, _) = s
        .call("POST", &format!("/api/v1/jobs/{old}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let live = s.put(r#"{"args": 2, "key": "order-7"}"#).await;
    assert_ne!(live, old);
    let (status, err) = s
        .call("POST", &format!("/api/v1/jobs/{old}/retry"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert_eq!(err["error"]["code"], "conflict");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("live job {live}")), "{message}");
    assert!(!message.contains("constraint"), "no SQL text: {message}");
    let (_, job) = s.call("GET", &format!("/api/v1/jobs/{old}"), None).await;
    assert_eq!(job["state"], "cancelled", "nothing changed");
}

#[tokio::test]
async fn wait_answers_202_when_the_job_is_not_done_in_time() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let id = s.put(r#"{"args": 1}"#).await;
    let (status, job) = s
        .call(
            "GET",
            &format!("/api/v1/jobs/{id}/wait?timeout_ms=50"),
            None,
        )
        .await;
    assert_eq!(
        (status, job["state"].as_str()),
        (StatusCode::ACCEPTED, Some("pending"))
    );
}

#[tokio::test]
async fn queue_settings_change_at_runtime() {
    let s = TestServer::start(|_| {}).await;
    let (status, q) = s
        .call(
            "PATCH",
            "/api/v1/queues/sms",
            Some(r#"{"width": 7, "rate": {"count": 10, "period_ms": 1000, "burst": 2}, "timeout_ms": 2500, "paused": true}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(q["width"], 7);
    assert_eq!(
        q["rate"],
        json!({"count": 10, "period_ms": 1000, "burst": 2})
    );
    assert_eq!(
        (q["timeout_ms"].as_u64(), q["paused"].as_bool()),
        (Some(2500), Some(true))
    );
    let (_, q) = s
        .call(
            "PATCH",
            "/api/v1/queues/sms",
            Some(r#"{"rate": null, "timeout_ms": null}"#),
        )
        .await;
    assert_eq!(
        (&q["rate"], &q["timeout_ms"], q["width"].as_u64()),
        (&json!(null), &json!(null), Some(7))
    );
    assert_eq!(
        s.app.queues["sms"].queue.settings().width,
        7,
        "the queue itself changed"
    );
    let (_, list) = s.call("GET", "/api/v1/queues", None).await;
    assert_eq!(list["queues"][0]["name"], "sms");
    assert_eq!(list["queues"][0]["executor"], "http");
    let (status, _) = s.call("GET", "/api/v1/queues/fax", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_token_guards_everything_but_health_and_the_api_document() {
    let token = "0123456789abcdef-secret";
    let s = TestServer::start(|c| c.token = Some(token.into())).await;
    for (uri, token, status) in [
        ("/api/v1/queues", None, StatusCode::UNAUTHORIZED),
        (
            "/api/v1/queues",
            Some("wrong-token-000000"),
            StatusCode::UNAUTHORIZED,
        ),
        ("/api/v1/queues", Some(token), StatusCode::OK),
        ("/metrics", None, StatusCode::UNAUTHORIZED),
        ("/healthz", None, StatusCode::OK),
        ("/readyz", None, StatusCode::OK),
        ("/api/v1/openapi.json", None, StatusCode::OK),
    ] {
        let (got, reply) = s.call_with("GET", uri, None, token, true).await;
        assert_eq!(got, status, "{uri} with {token:?}: {reply}");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(reply["error"]["code"], "unauthorized");
        }
    }
    let (status, _) = s
        .call_with(
            "POST",
            "/api/v1/queues/sms/jobs",
            Some(r#"{"args": 1}"#),
            None,
            true,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.counts().await["pending"],
        0,
        "an unauthorized put puts nothing"
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let s = TestServer::start(|_| {}).await;
    let (status, doc) = s.call("GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/api/v1/queues",
        "/api/v1/queues/{name}",
        "/api/v1/queues/{name}/jobs",
        "/api/v1/queues/{name}/jobs/batch",
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/priority",
        "/api/v1/jobs/{id}/retry",
        "/api/v1/jobs/{id}/wait",
        "/api/v1/events",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn the_openapi_document_and_the_server_agree() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let (_, doc) = s.call("GET", "/api/v1/openapi.json", None).await;
    let paths = doc["paths"].as_object().unwrap();
    for path in ["/metrics", "/healthz", "/readyz"] {
        assert!(paths[path]["get"].is_object(), "{path} missing");
    }
    // Every operation with parameters documents 400 (a bad path or query);
    // every one with a body documents 400, 413, 415 and 422.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            if op.get("parameters").is_some() || op.get("requestBody").is_some() {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
            if op.get("requestBody").is_some() {
                for status in ["413", "415", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: no {status}"
                    );
                }
            }
        }
    }
    // Job ids: int64 from 1; anything else is a documented 400.
    let id = &paths["/api/v1/jobs/{id}"]["get"]["parameters"][0];
    assert_eq!(
        (
            &id["name"],
            &id["schema"]["format"],
            &id["schema"]["minimum"]
        ),
        (&json!("id"), &json!("int64"), &json!(1)),
        "{id}"
    );
    for bad in ["9223372036854775808", "0", "-3", "seven"] {
        let (status, err) = s.call("GET", &format!("/api/v1/jobs/{bad}"), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {err}");
        assert_eq!(err["error"]["code"], "bad_request");
    }
    // Unknown query parameters are a documented 400, not ignored.
    let (status, _) = s.call("GET", "/api/v1/jobs?colour=red", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // `args` is any JSON, absent means null, on the way in and out.
    let schemas = &doc["components"]["schemas"];
    for schema in ["PutBody", "JobView"] {
        let args = &schemas[schema]["properties"]["args"];
        assert!(
            args.get("type").is_none(),
            "{schema}.args is any JSON: {args}"
        );
    }
    let id = s.put("{}").await;
    let (_, job) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!(job["args"], json!(null));
    // An integer may be written 5.0 (JSON Schema's integer), not 5.5; args
    // keep what was sent.
    let (status, reply) = s
        .call(
            "POST",
            "/api/v1/queues/sms/jobs",
            Some(r#"{"args": {"n": 5.0}, "priority": 2.0, "max_attempts": 3.0}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let (_, job) = s
        .call("GET", &format!("/api/v1/jobs/{}", reply["id"]), None)
        .await;
    assert_eq!(
        (
            &job["priority"],
            &job["max_attempts"],
            job["args"]["n"].as_f64()
        ),
        (&json!(2), &json!(3), Some(5.0))
    );
    assert!(job["args"]["n"].is_f64(), "args untouched: {job}");
    let (status, _) = s
        .call(
            "POST",
            &format!("/api/v1/jobs/{id}/priority"),
            Some(r#"{"priority": 5.5}"#),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // Unsigned integers are documented as such: a u32 or u64 field is not
    // "int32" or "int64" (whose ranges end lower), and states its maximum.
    for (name, schema) in schemas.as_object().unwrap() {
        for (field, p) in schema["properties"].as_object().into_iter().flatten() {
            let integer = p["type"] == "integer"
                || p["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("integer")));
            if integer && p["minimum"].as_i64().is_some_and(|m| m >= 0) {
                assert!(
                    p["maximum"].is_u64() && p["format"] != "int32" && p["format"] != "int64"
                        || p["maximum"].as_u64().is_some_and(|m| m <= i32::MAX as u64),
                    "{name}.{field}: {p}"
                );
            }
        }
    }
    // A batch holds 1 to 10,000 jobs; outside that range it is a 422, like
    // any value out of its documented range.
    let jobs = &schemas["BatchBody"]["properties"]["jobs"];
    assert_eq!(
        (&jobs["minItems"], &jobs["maxItems"]),
        (&json!(1), &json!(10_000)),
        "{jobs}"
    );
    for n in [0, 10_001] {
        let body = format!(r#"{{"jobs": [{}]}}"#, vec!["{}"; n].join(","));
        let (status, err) = s
            .call("POST", "/api/v1/queues/sms/jobs/batch", Some(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{n} jobs: {err}");
    }
    // A key is 1 to 255 characters (JSON Schema counts characters, not
    // bytes).
    let key = &schemas["PutBody"]["properties"]["key"];
    assert_eq!(
        (&key["minLength"], &key["maxLength"]),
        (&json!(1), &json!(255)),
        "{key}"
    );
    for (n, want) in [
        (255, StatusCode::CREATED),
        (256, StatusCode::UNPROCESSABLE_ENTITY),
        (0, StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let body = json!({"key": "é".repeat(n)}).to_string();
        let (status, reply) = s.call("POST", "/api/v1/queues/sms/jobs", Some(&body)).await;
        assert_eq!(status, want, "{n} characters: {reply}");
    }
    // run_at is any RFC 3339 date-time, the document's format: a past one
    // (even before 1970) means now.
    assert_eq!(
        schemas["PutBody"]["properties"]["run_at"]["format"],
        "date-time"
    );
    for (run_at, want) in [
        ("0550-05-07T22:14:23Z", "pending"),
        ("1969-12-31T23:59:59.5+01:00", "pending"),
        ("9999-12-31T23:59:59Z", "scheduled"),
    ] {
        let body = json!({"run_at": run_at}).to_string();
        let (status, reply) = s.call("POST", "/api/v1/queues/sms/jobs", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{run_at}: {reply}");
        let (_, job) = s
            .call("GET", &format!("/api/v1/jobs/{}", reply["id"]), None)
            .await;
        assert_eq!(job["state"], want, "{run_at}: {job}");
        if want == "pending" {
            assert_eq!(
                job["run_at"], job["queued_at"],
                "a past time means now: {job}"
            );
        }
    }
    let (status, _) = s
        .call("POST", "/api/v1/queues/sms/jobs", Some(r#"{"run_at": ""}"#))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // run_at and delay_ms: not both, unless one is null.
    assert_eq!(
        schemas["PutBody"]["not"]["required"],
        json!(["run_at", "delay_ms"])
    );
    let (status, _) = s
        .call(
            "POST",
            "/api/v1/queues/sms/jobs",
            Some(r#"{"run_at": null, "delay_ms": 5}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // The event stream is documented per event: its name and JSON data.
    let sse = &paths["/api/v1/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
        ["schema"];
    let name = sse["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
    let sse = &schemas[name];
    assert_eq!(sse["required"], json!(["event", "data"]), "{sse}");
    assert_eq!(sse["properties"]["data"]["type"], "string", "{sse}");
}

#[tokio::test]
async fn metrics_follow_the_design_names() {
    let s = TestServer::start(|_| {}).await;
    let id = s.put(r#"{"args": 1}"#).await;
    s.finished(id).await;
    let (status, text) = s.call("GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap().to_owned();
    for needle in [
        "rdq_queue_depth{queue=\"sms\"} 0",
        "rdq_queue_underway{queue=\"sms\"}",
        "rdq_queue_width{queue=\"sms\"} 2",
        "rdq_queue_oldest_pending_age_seconds{queue=\"sms\"}",
        "rdq_jobs_total{queue=\"sms\",outcome=\"succeeded\"} 1",
        "rdq_job_wait_seconds_bucket{",
        "rdq_job_run_seconds_count{queue=\"sms\"} 1",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// A 429 (or 503) with Retry-After holds the whole queue for that long,
/// and the job comes back without spending an attempt.
#[tokio::test]
async fn a_throttling_target_holds_the_queue() {
    let s = TestServer::start(|c| c.queues[0].width = 1).await;
    s.target.script([Answer {
        retry_after: Some("2"),
        body: "slow down",
        ..Answer::status(429)
    }]);
    let queue = &s.app.queues["sms"].queue;
    let first = s.put(r#"{"args": "first"}"#).await;
    eventually("the queue is held", || async {
        !s.call("GET", "/api/v1/queues/sms", None).await.1["held_until"].is_null()
    })
    .await;
    let until = queue.held_until().expect("held").to_system_time();
    let second = s.put(r#"{"args": "second"}"#).await;
    // The producer has looked at the store since the put, and claimed
    // nothing: the first job's one claim is all.
    let looked = queue.settled().await;
    assert!(
        SystemTime::now() < until,
        "this machine took over the 2 s hold to put one job and look once: the check below needs it within the hold"
    );
    assert_eq!(looked.claimed, 1, "nothing is claimed while held");
    assert_eq!(s.target.seen().len(), 1, "nothing is sent while held");
    let first = s.finished(first).await;
    assert_eq!(first["state"], "succeeded");
    assert_eq!(
        (first["attempt"].as_u64(), first["max_attempts"].as_u64()),
        (Some(2), Some(4)),
        "the throttled attempt is given back"
    );
    assert_eq!(s.finished(second).await["state"], "succeeded");
    let arrived = s.target.arrived();
    assert_eq!(arrived.len(), 3);
    assert!(
        arrived[1..].iter().all(|at| *at >= until),
        "nothing is sent before the hold ends ({until:?}): {arrived:?}"
    );
}

#[tokio::test]
async fn a_4xx_is_dead_at_once_and_a_5xx_retries() {
    let s = TestServer::start(|c| c.queues[0].width = 1).await;
    s.target.script([Answer {
        body: "{\"error\":\"no such number\"}",
        ..Answer::status(404)
    }]);
    let dead = s.finished(s.put(r#"{"args": 1}"#).await).await;
    assert_eq!(
        (dead["state"].as_str(), dead["attempt"].as_u64()),
        (Some("dead"), Some(1))
    );
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .starts_with("HTTP 404 Not Found"),
        "{dead}"
    );
    s.target.script([Answer::status(502), Answer::status(500)]);
    let retried = s.finished(s.put(r#"{"args": 2}"#).await).await;
    assert_eq!(
        (retried["state"].as_str(), retried["attempt"].as_u64()),
        (Some("succeeded"), Some(3))
    );
}

#[tokio::test]
async fn a_target_that_does_not_answer_in_time_is_retried() {
    let s = TestServer::start(|c| {
        c.queues[0].width = 1;
        c.queues[0].timeout = Some(Duration::from_millis(200));
    })
    .await;
    s.target.script([Answer {
        delay: Duration::from_secs(5),
        ..Answer::status(200)
    }]);
    let job = s.finished(s.put(r#"{"args": 1}"#).await).await;
    assert_eq!(
        (job["state"].as_str(), job["attempt"].as_u64()),
        (Some("succeeded"), Some(2))
    );
}

#[tokio::test]
async fn the_event_stream_reports_puts_and_outcomes() {
    use http_body_util::BodyExt;
    let s = TestServer::start(|_| {}).await;
    let request = axum::http::Request::builder()
        .uri("/api/v1/events")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(s.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let id = s.put(r#"{"args": 1}"#).await;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // The put's event and the run's come from different tasks: a job that
    // runs at once may report its success first.
    while !(text.contains("\"succeeded\"") && text.contains("\"queued\"")) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events arrive")
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert!(text.contains("event: job"), "{text}");
    assert!(
        text.contains(&format!("\"id\":{id}")) && text.contains("\"queued\""),
        "{text}"
    );
}
