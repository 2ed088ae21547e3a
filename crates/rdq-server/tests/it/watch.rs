//! The watchdog in the server: `GET /api/v1/stalls` and `/api/v1/dump`, the
//! stall and hung-job metrics, through the router, with real stalls (a
//! watched future that blocks its thread) and real child processes.
//!
//! The watchdog is one per process: the first server of this test binary
//! starts it with the default settings (tick 100 ms, threshold 500 ms), and
//! every later one shares it.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use rdq_server::config::{ExecutorConfig, QueueConfig};
use rdq_server::executor::command::{CommandSpec, StdinMode};
use serde_json::Value;

use crate::support::{eventually, sms_queue, TestServer};

/// Blocks its thread: the culprit the stall report must name.
#[inline(never)]
fn block_the_thread_for(d: Duration) {
    std::thread::sleep(d);
    std::hint::black_box(d);
}

/// Polls `look` until it finds something (10 s at most).
async fn found<F, Fut>(what: &str, mut look: F) -> Value
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<Value>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = look().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the first sample of `name` whose labels contain `labels`.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_stall_shows_in_stalls_in_the_culprit_table_and_in_the_metrics() {
    let s = TestServer::start(|_| {}).await;
    let watchdog = s.app.watchdog.clone().expect("the watchdog runs");
    let threshold = watchdog.config().threshold;
    // A task of queue `sms`, id 4242, that holds its thread past the
    // threshold.
    rdq_watchdog::watch(
        async { block_the_thread_for(threshold + Duration::from_millis(400)) },
        "sms",
        4242,
    )
    .await;

    let stall = found("the stall is listed, finished", || async {
        let (status, reply) = s.call("GET", "/api/v1/stalls?queue=sms", None).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["enabled"], true);
        assert_eq!(
            reply["threshold_ms"].as_u64(),
            Some(threshold.as_millis() as u64)
        );
        reply["stalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["job"] == 4242 && x["finished"] == true)
            .cloned()
    })
    .await;
    assert_eq!(stall["queue"], "sms");
    assert_eq!(stall["kind"], "blocked", "{stall:#}");
    assert_eq!(stall["syscall"], "clock_nanosleep", "{stall:#}");
    let culprit = stall["culprit"].as_str().unwrap_or_default().to_owned();
    assert!(culprit.ends_with("block_the_thread_for"), "{stall:#}");
    let ms = stall["duration_ms"].as_u64().unwrap();
    assert!(ms as u128 >= threshold.as_millis(), "{stall:#}");
    assert!(!stall["frames"].as_array().unwrap().is_empty(), "{stall:#}");
    assert!(
        stall["report"].as_str().unwrap().contains(&culprit),
        "{stall:#}"
    );

    // The culprit table blames the function.
    let (_, reply) = s.call("GET", "/api/v1/stalls", None).await;
    let row = reply["culprits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["culprit"] == culprit.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{culprit} in {reply:#}"));
    assert!(row["count"].as_u64().unwrap() >= 1 && row["max_ms"].as_u64().unwrap() >= ms);
    assert!(reply["counts"]["blocked"].as_u64().unwrap() >= 1);

    // And the metrics count it.
    let (_, metrics) = s.call("GET", "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        sample(metrics, "rdq_stalls_total", "kind=\"blocked\"").unwrap() >= 1.0,
        "{metrics}"
    );
    assert!(
        sample(metrics, "rdq_stalls_total", "kind=\"starved\"").is_some(),
        "every kind shows"
    );
    assert!(
        sample(metrics, "rdq_stall_seconds_count", "").unwrap() >= 1.0,
        "{metrics}"
    );
}

/// A command queue whose jobs sleep 30 s, hung after 300 ms, cut off at 20 s.
fn sleepy_queue() -> QueueConfig {
    let mut q = sms_queue("http://127.0.0.1:9/unused");
    q.name = "sleepy".into();
    q.timeout = Some(Duration::from_secs(20));
    q.warn_after = Some(Duration::from_millis(300));
    q.executor = ExecutorConfig::Command(CommandSpec {
        argv: vec!["sleep".into(), "30".into()],
        stdin: StdinMode::Empty,
        timeout: q.timeout,
        ..CommandSpec::default()
    });
    q
}

#[tokio::test]
async fn the_dump_shows_a_command_jobs_child_and_flags_it_hung_before_its_timeout() {
    let s = TestServer::start(|c| c.queues.push(sleepy_queue())).await;
    let (status, reply) = s
        .call(
            "POST",
            "/api/v1/queues/sleepy/jobs",
            Some(r#"{"args": {}}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    let id = reply["id"].as_i64().unwrap();

    let job = found("the job is in the dump, hung, with its child", || async {
        let (status, reply) = s.call("GET", "/api/v1/dump?queue=sleepy", None).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        assert_eq!(reply["watchdog"], true);
        reply["jobs"]
            .as_array()
            .unwrap()
            .first()
            .filter(|j| j["hung"] == true && j["child"].is_object())
            .cloned()
    })
    .await;
    assert_eq!(job["id"], id);
    assert_eq!(
        (job["attempt"].as_u64(), job["timeout_ms"].as_u64()),
        (Some(1), Some(20_000))
    );
    assert_eq!(job["warn_after_ms"], 300);
    // (age_ms is truncated to whole milliseconds; hung compares the exact age.)
    assert!(job["age_ms"].as_u64().unwrap() >= 300, "{job:#}");
    // The job awaits its child: not in a poll, waiting.
    let poll = &job["poll"];
    assert_eq!(poll["state"], "waiting", "{job:#}");
    assert!(poll["polls"].as_u64().unwrap() >= 1, "{job:#}");
    // The child is `sleep`, asleep.
    let pid = job["child"]["pid"].as_i64().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");
    assert!(
        job["child"]["state"].as_str().unwrap().starts_with("S "),
        "{job:#}"
    );

    // The metrics say so, before the timeout: the gauge now, the counter
    // once the reporter has looked (each second).
    let (_, metrics) = s.call("GET", "/metrics", None).await;
    assert_eq!(
        sample(
            metrics.as_str().unwrap(),
            "rdq_queue_hung",
            "queue=\"sleepy\""
        ),
        Some(1.0)
    );
    eventually("the hung job is counted", || async {
        let (_, metrics) = s.call("GET", "/metrics", None).await;
        sample(
            metrics.as_str().unwrap(),
            "rdq_jobs_hung_total",
            "queue=\"sleepy\"",
        ) == Some(1.0)
    })
    .await;

    // Cancelled, it leaves the dump, and its child is gone.
    let (status, _) = s
        .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("the dump is empty", || async {
        let (_, reply) = s.call("GET", "/api/v1/dump?queue=sleepy", None).await;
        reply["jobs"].as_array().unwrap().is_empty()
    })
    .await;
    eventually("the child is gone", || async {
        !PathBuf::from(format!("/proc/{pid}/comm")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    })
    .await;
}

#[tokio::test]
async fn bad_watchdog_queries_get_clear_errors() {
    let s = TestServer::start(|_| {}).await;
    for (uri, status, words) in [
        (
            "/api/v1/stalls?limit=0",
            StatusCode::UNPROCESSABLE_ENTITY,
            "give 1 to 1000",
        ),
        (
            "/api/v1/stalls?queue=nope",
            StatusCode::NOT_FOUND,
            "no queue named \"nope\"",
        ),
        (
            "/api/v1/stalls?colour=red",
            StatusCode::BAD_REQUEST,
            "colour",
        ),
        (
            "/api/v1/dump?queue=nope",
            StatusCode::NOT_FOUND,
            "no queue named",
        ),
    ] {
        let (got, reply) = s.call("GET", uri, None).await;
        assert_eq!(got, status, "{uri}: {reply}");
        let message = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(words), "{uri}: {reply}");
    }
}

#[tokio::test]
async fn with_the_watchdog_off_the_routes_say_so() {
    let s = TestServer::start(|c| c.watchdog.enabled = false).await;
    assert!(s.app.watchdog.is_none());
    let (status, reply) = s.call("GET", "/api/v1/stalls", None).await;
    assert_eq!(
        (status, &reply["enabled"]),
        (StatusCode::OK, &Value::Bool(false))
    );
    let (status, reply) = s.call("GET", "/api/v1/dump", None).await;
    assert_eq!(
        (status, &reply["watchdog"]),
        (StatusCode::OK, &Value::Bool(false))
    );
}
