//! The real `rdq` binary on a free port: the SMS scenario over HTTP, kill -9
//! and restart under load, graceful shutdown, and refusals at start.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{Answer, Target};

/// A running `rdq serve`, killed (SIGKILL) if the test ends without
/// stopping it.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) base: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config(dir: &Path, target: &str, extra: &str) -> PathBuf {
    let path = dir.join("rdq.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
shutdown_grace = "3s"

[queues.sms]
width = 2
max_attempts = 50
backoff_base = "50ms"
backoff_max = "200ms"
timeout = "5s"
{extra}
[queues.sms.executor]
type = "http"
url = "{target}"
"#
        ),
    )
    .unwrap();
    path
}

impl Server {
    pub(crate) fn start(dir: &Path, config: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdq"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.join("rdq.db"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rdq starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Server {
            child: Some(child),
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, body: Value) -> i64 {
        let (status, reply) = self
            .call("POST", "/api/v1/queues/sms/jobs", Some(body))
            .await;
        assert_eq!(status, 201, "{reply}");
        reply["id"].as_i64().unwrap()
    }

    pub(crate) async fn finished(&self, id: i64) -> Value {
        let (status, job) = self
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/wait?timeout_ms=20000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "job {id} did not finish: {job}");
        job
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Waits for the process to exit; its status code.
    pub(crate) fn exit(mut self) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "rdq did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls `check` until it holds, failing after 20 s.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The SMS scenario over HTTP: put, widen, cancel, reprioritize, pause,
/// resume, wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sms_scenario_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.script((0..30).map(|_| Answer {
        delay: Duration::from_millis(30),
        ..Answer::status(200)
    }));
    let cfg = config(dir.path(), &target.url, "paused = true\n");
    let s = Server::start(dir.path(), &cfg);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            s.put(json!({"args": {"to": format!("+1555{i:04}"), "text": "hello"}, "priority": if i == 19 { 9 } else { 5 }}))
                .await,
        );
    }
    // Reprioritize the last one to the front; cancel one.
    let (status, reply) = s
        .call(
            "POST",
            &format!("/api/v1/jobs/{}/priority", ids[19]),
            Some(json!({"priority": -1})),
        )
        .await;
    assert_eq!((status, reply["old"].as_i64()), (200, Some(9)));
    let (status, _) = s
        .call("POST", &format!("/api/v1/jobs/{}/cancel", ids[10]), None)
        .await;
    assert_eq!(status, 200);
    // Start one at a time: the reprioritized job goes first. Then widen
    // (with more at once, requests race to the target).
    let (_, q) = s
        .call(
            "PATCH",
            "/api/v1/queues/sms",
            Some(json!({"width": 1, "paused": false})),
        )
        .await;
    assert_eq!(
        (q["width"].as_u64(), q["paused"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(s.finished(ids[19]).await["state"], "succeeded");
    let first_sent = target.seen()[0].0["args"]["to"].as_str().map(str::to_owned);
    assert_eq!(
        first_sent.as_deref(),
        Some("+15550019"),
        "the reprioritized job went first"
    );
    let (_, q) = s
        .call("PATCH", "/api/v1/queues/sms", Some(json!({"width": 5})))
        .await;
    assert_eq!(q["width"], 5);
    // Pause halfway, then resume.
    let (_, q) = s
        .call("PATCH", "/api/v1/queues/sms", Some(json!({"paused": true})))
        .await;
    assert_eq!(q["paused"], true);
    s.call(
        "PATCH",
        "/api/v1/queues/sms",
        Some(json!({"paused": false})),
    )
    .await;
    for (i, id) in ids.iter().enumerate() {
        let job = s.finished(*id).await;
        let want = if i == 10 { "cancelled" } else { "succeeded" };
        assert_eq!(job["state"], want, "job {id}: {job}");
    }
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit(), Some(0));
}

/// kill -9 while puts and jobs are in flight; after a restart every
/// acknowledged job is there and runs to success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.script((0..400).map(|_| Answer {
        delay: Duration::from_millis(20),
        ..Answer::status(200)
    }));
    let cfg = config(dir.path(), &target.url, "");
    let s = Server::start(dir.path(), &cfg);
    let acked: Arc<Mutex<Vec<i64>>> = Arc::default();
    let putters: Vec<_> = (0..4)
        .map(|p| {
            let (base, acked) = (s.base.clone(), acked.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                for i in 0..1000 {
                    let body = json!({"args": {"putter": p, "i": i}});
                    let Ok(resp) = http
                        .post(format!("{base}/api/v1/queues/sms/jobs"))
                        .json(&body)
                        .send()
                        .await
                    else {
                        return; // the server is gone
                    };
                    if resp.status().as_u16() != 201 {
                        return;
                    }
                    let Ok(reply) = resp.json::<Value>().await else {
                        return;
                    };
                    acked.lock().unwrap().push(reply["id"].as_i64().unwrap());
                }
            })
        })
        .collect();
    // Kill while puts are being acknowledged and jobs are being sent.
    until("100 puts acknowledged and 10 jobs sent", || {
        acked.lock().unwrap().len() >= 100 && target.seen().len() >= 10
    })
    .await;
    s.signal(libc::SIGKILL);
    assert_eq!(s.exit(), None, "killed by a signal");
    for p in putters {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "some puts were acknowledged before the kill"
    );
    let s = Server::start(dir.path(), &cfg);
    let mut lost = Vec::new();
    for id in &acked {
        let (status, _) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        if status != 200 {
            lost.push(*id);
        }
    }
    assert!(lost.is_empty(), "acknowledged jobs lost: {lost:?}");
    for id in &acked {
        assert_eq!(s.finished(*id).await["state"], "succeeded");
    }
    // Re-runs: deliveries beyond the first per job (at-least-once).
    let mut per_key: HashMap<String, usize> = HashMap::new();
    for (_, key) in target.seen() {
        *per_key.entry(key.unwrap_or_default()).or_default() += 1;
    }
    let reruns: usize = per_key.values().map(|n| n - 1).sum();
    let delivered: HashSet<&String> = per_key.keys().collect();
    println!(
        "kill -9 under load: {} acknowledged, 0 lost, {} delivered, {reruns} re-run after the restart",
        acked.len(),
        delivered.len()
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit(), Some(0));
}

/// SIGTERM: underway jobs finish within the grace period, the rest wait in
/// the database, the process exits 0, and a restart finishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_a_restart_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    target.script((0..2).map(|_| Answer {
        delay: Duration::from_millis(1000),
        ..Answer::status(200)
    }));
    let cfg = config(dir.path(), &target.url, "");
    let s = Server::start(dir.path(), &cfg);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(s.put(json!({"args": i})).await);
    }
    // Two are underway (width 2): the target holds each for a second.
    until("two jobs sent", || target.seen().len() == 2).await;
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit(), Some(0));
    assert_eq!(target.seen().len(), 2, "nothing launched after the signal");
    let s = Server::start(dir.path(), &cfg);
    let mut finished = 0;
    for id in &ids {
        let job = s.finished(*id).await;
        assert_eq!(job["state"], "succeeded");
        finished += 1;
    }
    assert_eq!(finished, 10);
    let first_two: Vec<i64> = ids[..2].to_vec();
    for id in first_two {
        let (_, job) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(
            job["attempt"], 1,
            "finished within the grace period: not run again"
        );
    }
    s.signal(libc::SIGINT);
    assert_eq!(s.exit(), Some(0));
}

pub(crate) fn rdq(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rdq"))
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn refusals_at_start_say_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[queues.sms]\nwidth = -2\n[queues.sms.executor]\ntype = \"http\"\nurl = \"http://x\"\n",
    )
    .unwrap();
    let db = dir.path().join("x.db");
    let db = db.to_str().unwrap();
    let (code, err) = rdq(
        &["serve", "--config", bad.to_str().unwrap(), "--db", db],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("bad.toml:2:") && err.contains("width -2 is out of range"),
        "{err}"
    );

    let (code, err) = rdq(
        &["serve", "--listen", "0.0.0.0:0", "--db", db],
        &[("RDQ_TOKEN", "")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("without a token"), "{err}");

    let (code, err) = rdq(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "/nonexistent/dir/x.db",
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("/nonexistent/dir") && err.contains("does not exist"),
        "{err}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let (code, err) = rdq(&["serve", "--listen", &port, "--db", db], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("cannot listen"), "{err}");

    let (code, _) = rdq(&["serve", "--no-such-flag"], &[]);
    assert_eq!(code, Some(2));
}

/// Bad requests of every kind, against the real binary: each gets its status
/// and a message in the error shape, and nothing in the store changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_change_nothing_on_the_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let cfg = config(dir.path(), &target.url, "paused = true\n");
    let s = Server::start(dir.path(), &cfg);
    let id = s.put(json!({"args": 1})).await;
    let done = s.put(json!({"args": 2})).await;
    s.call("POST", &format!("/api/v1/jobs/{done}/cancel"), None)
        .await;
    let raw = |method: &str, path: &str, body: Vec<u8>, content_type: &str| {
        let req = s
            .http
            .request(method.parse().unwrap(), format!("{}{path}", s.base))
            .header("content-type", content_type.to_owned())
            .body(body);
        async move {
            let resp = req.send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let cases: Vec<(&str, String, Vec<u8>, &str, u16)> = vec![
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            b"{oops".to_vec(),
            "application/json",
            400,
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            b"{\"args\": 1}".to_vec(),
            "text/plain",
            415,
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            [&b"{\"args\":\""[..], &[0xff, 0xfe], &b"\"}"[..]].concat(),
            "application/json",
            400,
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            format!("{{\"args\": \"{}\"}}", "x".repeat(2 << 20)).into_bytes(),
            "application/json",
            413,
        ),
        (
            "POST",
            "/api/v1/queues/sms/jobs".into(),
            b"{\"args\": 1, \"priority\": \"high\"}".to_vec(),
            "application/json",
            422,
        ),
        (
            "POST",
            "/api/v1/queues/nope/jobs".into(),
            b"{\"args\": 1}".to_vec(),
            "application/json",
            404,
        ),
        (
            "PATCH",
            "/api/v1/queues/sms".into(),
            b"{\"width\": -5}".to_vec(),
            "application/json",
            422,
        ),
        (
            "GET",
            "/api/v1/jobs/424242".into(),
            vec![],
            "application/json",
            404,
        ),
        (
            "POST",
            format!("/api/v1/jobs/{done}/cancel"),
            vec![],
            "application/json",
            409,
        ),
        (
            "POST",
            format!("/api/v1/jobs/{id}/retry"),
            vec![],
            "application/json",
            409,
        ),
    ];
    for (method, path, body, content_type, status) in cases {
        let (got, reply) = raw(method, &path, body, content_type).await;
        assert_eq!(got, status, "{method} {path}: {reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{method} {path}: {reply}"
        );
    }
    let (_, q) = s.call("GET", "/api/v1/queues/sms", None).await;
    assert_eq!(
        (
            q["counts"]["pending"].as_u64(),
            q["counts"]["cancelled"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        (q["width"].as_u64(), q["paused"].as_bool()),
        (Some(2), Some(true)),
        "nothing changed"
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit(), Some(0));
}
