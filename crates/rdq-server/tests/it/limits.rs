//! Issue 9, B1, B3 and B7: every time, duration and setting is checked at the
//! boundary against one range (`rdq_server::limits`), in the API, the
//! configuration file and the CLI alike; and no stored time, whatever it is,
//! can break the rendering of a job.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use rdq_server::limits;
use rdq_store::{NewJob, Store, Timestamp};
use serde_json::{json, Value};

use crate::support::TestServer;

/// Every job of the server, read through the API.
async fn job_count(s: &TestServer) -> usize {
    let (status, page) = s.call("GET", "/api/v1/jobs?limit=1000", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    page["jobs"].as_array().unwrap().len()
}

fn message(reply: &Value) -> &str {
    reply["error"]["message"].as_str().unwrap_or_default()
}

/// `run_at` is any date-time its format allows (years 0000 to 9999, as the
/// OpenAPI document says): a far one is kept and renders; a past one means
/// now.
#[tokio::test]
async fn run_at_takes_any_rfc3339_year_and_a_past_one_means_now() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    for at in ["9999-12-31T23:59:59Z", "0000-01-01T00:00:00Z"] {
        let body = json!({ "run_at": at }).to_string();
        let (status, reply) = s.call("POST", "/api/v1/queues/sms/jobs", Some(&body)).await;
        assert_eq!(status, StatusCode::CREATED, "{at}: {reply}");
        let id = reply["id"].as_u64().expect("an id");
        let (status, job) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        let run_at = job["run_at"].as_str().expect("run_at renders");
        if at.starts_with("9999") {
            assert!(run_at.starts_with("9999-12-31T23:59:59"), "{run_at}");
        } else {
            assert!(run_at > "2000", "a past run_at means now: {run_at}");
        }
    }
    let (status, _) = s.call("GET", "/api/v1/jobs", None).await;
    assert_eq!(status, StatusCode::OK, "the listing renders every job");
}

#[tokio::test]
async fn times_and_durations_out_of_range_are_refused_and_name_the_range() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let refused = [
        (
            json!({"delay_ms": 1_000_000_000_000_000u64}),
            "delay_ms",
            "0 to 315576000000",
        ),
        (
            json!({"delay_ms": u64::MAX}),
            "delay_ms",
            "0 to 315576000000",
        ),
        (
            json!({"run_at": "+10000-01-01T00:00:00Z"}),
            "run_at",
            "RFC 3339",
        ),
        (json!({"timeout_ms": 0}), "timeout_ms", "1 to 86400000"),
        (
            json!({"timeout_ms": 86_400_001}),
            "timeout_ms",
            "1 to 86400000",
        ),
        (
            json!({"timeout_ms": u64::MAX}),
            "timeout_ms",
            "1 to 86400000",
        ),
        (json!({"max_attempts": 0}), "max_attempts", "1 to 1000"),
        (json!({"max_attempts": 1001}), "max_attempts", "1 to 1000"),
    ];
    for (body, field, range) in &refused {
        let (status, reply) = s
            .call("POST", "/api/v1/queues/sms/jobs", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {reply}");
        let m = message(&reply);
        assert!(m.contains(field) && m.contains(range), "{body}: {m}");
        let batch = json!({"jobs": [{}, body]}).to_string();
        let (status, reply) = s
            .call("POST", "/api/v1/queues/sms/jobs/batch", Some(&batch))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{reply}");
        assert!(message(&reply).starts_with("jobs[1]: "), "{reply}");
    }
    assert_eq!(job_count(&s).await, 0, "nothing refused was stored");

    // The ends of the ranges are accepted, and the jobs render.
    let longest = s
        .put(
            &json!({"delay_ms": limits::DELAY.max_ms(), "timeout_ms": limits::TIMEOUT.max_ms()})
                .to_string(),
        )
        .await;
    let (status, job) = s
        .call("GET", &format!("/api/v1/jobs/{longest}"), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["state"], "scheduled");
    assert_eq!(job["timeout_ms"], limits::TIMEOUT.max_ms());
    s.put(r#"{"delay_ms": 0, "timeout_ms": 1}"#).await;
    assert_eq!(job_count(&s).await, 2);
}

/// A row such as an older version wrote for `delay_ms: 10^15`, or one edited
/// by hand: its times are beyond what RFC 3339 can write. Listing and
/// showing it must still work (it used to panic and drop the connection).
#[tokio::test]
async fn a_stored_time_beyond_year_9999_still_renders() {
    let s = TestServer::start(|c| c.queues[0].paused = true).await;
    let now = Timestamp::from(std::time::SystemTime::now());
    let poison = NewJob {
        queue: "sms".into(),
        kind: "http".into(),
        args: "{}".into(),
        priority: 0,
        run_at: Some(Timestamp(i64::MAX)),
        max_attempts: 1,
        key: None,
        timeout: Some(Duration::from_millis(u64::MAX)),
    };
    let id = s.app.store.insert_many(vec![poison], now).await.unwrap()[0].id;
    let (status, job) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["run_at"], "9999-12-31T23:59:59.999999Z");
    let (status, page) = s.call("GET", "/api/v1/jobs", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"][0]["id"], id.0);
    let (status, queue) = s.call("GET", "/api/v1/queues/sms", None).await;
    assert_eq!(status, StatusCode::OK, "{queue}");
}

#[tokio::test]
async fn queue_settings_that_break_the_server_are_refused_and_nothing_changes() {
    let s = TestServer::start(|_| {}).await;
    let (_, before) = s.call("GET", "/api/v1/queues/sms", None).await;
    let refused = [
        (json!({"timeout_ms": 0}), "timeout_ms 0", "1 to 86400000"),
        (
            json!({"timeout_ms": 86_400_001}),
            "timeout_ms",
            "1 to 86400000",
        ),
        (json!({"width": 10_001}), "width 10001", "0 to 10000"),
        (
            json!({"width": 3, "timeout_ms": 0}),
            "timeout_ms 0",
            "1 to 86400000",
        ),
        (
            json!({"rate": {"count": 0, "period_ms": 1000}}),
            "rate.count",
            "1 to 1000000",
        ),
        (
            json!({"rate": {"count": 1, "period_ms": 0}}),
            "rate.period_ms",
            "1 to 86400000",
        ),
        (
            json!({"rate": {"count": 1, "period_ms": 86_400_001}}),
            "rate.period_ms",
            "1 to 86400000",
        ),
        (
            json!({"rate": {"count": 1, "period_ms": 1000, "burst": 0}}),
            "rate.burst",
            "1 to 1000000",
        ),
    ];
    for (body, field, range) in &refused {
        let (status, reply) = s
            .call("PATCH", "/api/v1/queues/sms", Some(&body.to_string()))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {reply}");
        let m = message(&reply);
        assert!(m.contains(field) && m.contains(range), "{body}: {m}");
    }
    let (_, after) = s.call("GET", "/api/v1/queues/sms", None).await;
    assert_eq!(before, after, "a refused change changes nothing");
    let (status, reply) = s
        .call(
            "PATCH",
            "/api/v1/queues/sms",
            Some(r#"{"width": 10000, "timeout_ms": 86400000}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(
        (reply["width"].clone(), reply["timeout_ms"].clone()),
        (json!(10_000), json!(86_400_000))
    );
}

/// The OpenAPI document states the same ranges the server enforces.
#[tokio::test]
async fn the_openapi_document_states_the_ranges() {
    let s = TestServer::start(|_| {}).await;
    let (_, doc) = s.call("GET", "/api/v1/openapi.json", None).await;
    let schemas = &doc["components"]["schemas"];
    let range = |schema: &str, field: &str| {
        let f = &schemas[schema]["properties"][field];
        (f["minimum"].as_u64(), f["maximum"].as_u64())
    };
    let ms = |r: limits::Durations| (Some(r.min_ms()), Some(r.max_ms()));
    let n = |r: limits::Counts| (Some(r.min), Some(r.max));
    assert_eq!(range("PutBody", "delay_ms"), ms(limits::DELAY));
    assert_eq!(range("PutBody", "timeout_ms"), ms(limits::TIMEOUT));
    assert_eq!(range("PutBody", "max_attempts"), n(limits::MAX_ATTEMPTS));
    assert_eq!(range("QueuePatch", "width"), n(limits::WIDTH));
    assert_eq!(range("QueuePatch", "timeout_ms"), ms(limits::TIMEOUT));
    assert_eq!(range("RateBody", "count"), n(limits::RATE_COUNT));
    assert_eq!(range("RateBody", "period_ms"), ms(limits::RATE_PERIOD));
    assert_eq!(range("RateBody", "burst"), n(limits::RATE_BURST));
}

/// `rdq` run with these arguments and environment: its exit status and
/// stderr. One still running after 30 s (a server that should have refused
/// to start) is killed and reported as such.
fn rdq(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdq"))
        .args(args)
        .env_remove("RDQ_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return (None, format!("still running after 30 s: {args:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_refuses_a_delay_out_of_range_before_sending_anything() {
    // Nothing listens there: a request would fail with exit 1, not 2.
    let server = ["--server", "http://127.0.0.1:9"];
    for (flag, value, range) in [
        ("--delay", "1000000y", "0s to 10years"),
        ("--timeout", "2days", "1ms to 1day"),
        ("--timeout", "0s", "1ms to 1day"),
        ("--at", "next tuesday", "RFC 3339"),
    ] {
        let (code, err) = rdq(
            &[&["put", "sms", "{}", flag, value], &server[..]].concat(),
            &[],
        );
        assert_eq!(code, Some(2), "{flag} {value}: {err}");
        assert!(err.contains(range), "{flag} {value}: {err}");
    }
    let (code, err) = rdq(
        &[&["wait", "1", "--timeout", "1000000y"], &server[..]].concat(),
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--timeout") && err.contains("0s to 1day"),
        "{err}"
    );
}

fn write_config(dir: &std::path::Path, server: &str, queue: &str) -> std::path::PathBuf {
    let path = dir.join("rdq.toml");
    std::fs::write(
        &path,
        format!("[server]\n{server}\n[queues.sms]\n{queue}\n[queues.sms.executor]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/hook\"\n"),
    )
    .unwrap();
    path
}

#[test]
fn settings_out_of_range_in_the_config_file_exit_2_naming_setting_and_range() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    for (server, queue, line, says) in [
        (
            "max_body = \"0\"",
            "",
            2,
            "max_body \"0\" is out of range; allowed: 1024 to 268435456",
        ),
        (
            "shutdown_grace = \"2h\"",
            "",
            2,
            "shutdown_grace \"2h\" is out of range; allowed: 0s to 1h",
        ),
        (
            "",
            "width = 100000",
            4,
            "width 100000 is out of range; allowed: 0 to 10000",
        ),
        (
            "",
            "timeout = \"0s\"",
            4,
            "timeout \"0s\" is out of range; allowed: 1ms to 1day",
        ),
        ("", "rate = \"0/s\"", 4, "rate"),
        ("", "rate = \"1/1000000y\"", 4, "1ms to 1day"),
        (
            "",
            "max_attempts = 5000",
            4,
            "max_attempts 5000 is out of range; allowed: 1 to 1000",
        ),
        (
            "",
            "backoff_max = \"10y\"",
            4,
            "backoff_max \"10y\" is out of range; allowed: 1ms to 1day",
        ),
        (
            "",
            "retention = \"0s\"",
            4,
            "retention \"0s\" is out of range; allowed: 1s to 10years",
        ),
    ] {
        let cfg = write_config(dir.path(), server, queue);
        let (code, err) = rdq(
            &[
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, Some(2), "{server}{queue}: {err}");
        assert!(
            err.contains(&format!("rdq.toml:{line}:")) && err.contains(says),
            "{server}{queue}: {err}"
        );
    }
}

/// A server started on all interfaces with this environment and config;
/// `Ok(())` once it listens (then it is killed), or its exit status and
/// stderr.
fn serve_public(
    env: &[(&str, &str)],
    config: Option<&std::path::Path>,
) -> Result<(), (Option<i32>, String)> {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    let mut args = vec![
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--db",
        db.to_str().unwrap(),
    ];
    if let Some(c) = config {
        args.extend(["--config", c.to_str().unwrap()]);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_rdq"))
        .args(&args)
        .env_remove("RDQ_TOKEN")
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.contains("listening") {
        child.kill().unwrap();
        child.wait().unwrap();
        return Ok(());
    }
    let out = child.wait_with_output().unwrap();
    Err((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn a_weak_token_is_refused_from_the_environment_and_the_config_alike() {
    for weak in [
        "x",
        " ",
        "                ",
        " sixteen-chars-ok",
        "sixteen-chars-ok\n",
        "short-token",
    ] {
        let (code, err) = serve_public(&[("RDQ_TOKEN", weak)], None).unwrap_err();
        assert_eq!(code, Some(2), "RDQ_TOKEN={weak:?}: {err}");
        assert!(
            err.contains("RDQ_TOKEN") && err.contains("16"),
            "RDQ_TOKEN={weak:?}: {err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &format!("token = {}", toml_string(weak)), "");
        let (code, err) = serve_public(&[], Some(&cfg)).unwrap_err();
        assert_eq!(code, Some(2), "token = {weak:?}: {err}");
        assert!(
            err.contains("rdq.toml:2:") && err.contains("16"),
            "token = {weak:?}: {err}"
        );
    }
    serve_public(&[("RDQ_TOKEN", "a-long-enough-token")], None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "token = \"a-long-enough-token\"", "");
    serve_public(&[], Some(&cfg)).unwrap();
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// Settings an older version saved out of today's ranges (a queue timeout of
/// 0 made every job time out at once) go back to the configured ones at the
/// next start.
#[tokio::test]
async fn saved_settings_out_of_range_are_replaced_by_the_configured_ones() {
    use rdq_server::app::App;
    use rdq_store::sqlite::{SqliteOptions, SqliteStore};

    let dir = tempfile::tempdir().unwrap();
    let config = rdq_server::config::Config {
        db: dir.path().join("t.db"),
        queues: vec![crate::support::sms_queue("http://127.0.0.1:9/hook")],
        ..rdq_server::config::Config::default()
    };
    let store = SqliteStore::open(&config.db, SqliteOptions::default())
        .await
        .unwrap();
    let app = App::start(&config, store.clone(), "test-node")
        .await
        .unwrap();
    let mut saved = store.load_queue("sms").await.unwrap().unwrap();
    saved.settings["timeout_ms"] = json!(0);
    saved.settings["width"] = json!(1_000_000_000u64);
    saved.settings["rate"] = json!({"count": 0, "period_ms": 0, "burst": 0});
    store.save_queue(saved).await.unwrap();
    app.shutdown(Duration::from_secs(1)).await.unwrap();

    let store = SqliteStore::open(&config.db, SqliteOptions::default())
        .await
        .unwrap();
    let app = App::start(&config, store, "test-node").await.unwrap();
    let settings = app.queues["sms"].queue.settings();
    assert_eq!(settings.timeout_ms, Some(5_000), "{settings:?}");
    assert_eq!(settings.width, 2, "{settings:?}");
    assert_eq!(settings.rate, None, "{settings:?}");
    app.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// A queue timeout no longer than the queue's `warn_after` would cut jobs off
/// before they are reported hung: the file refuses it, and so does the API,
/// with a 409 (a conflict with the queue's state: the value itself is in
/// range, so the OpenAPI document cannot call it invalid).
#[tokio::test]
async fn a_patched_timeout_must_stay_above_warn_after() {
    let s = TestServer::start(|c| c.queues[0].warn_after = Some(Duration::from_secs(2))).await;
    let (status, reply) = s
        .call(
            "PATCH",
            "/api/v1/queues/sms",
            Some(r#"{"timeout_ms": 2000}"#),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
    assert!(message(&reply).contains("warn_after"), "{reply}");
    let (status, reply) = s
        .call(
            "PATCH",
            "/api/v1/queues/sms",
            Some(r#"{"timeout_ms": 2001}"#),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
}
