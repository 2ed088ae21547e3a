//! The real `rdq` binary on PostgreSQL (`--database-url`): put, run, wait
//! and restart; two servers on one schema; PostgreSQL unreachable at start
//! and mid-run; bad URLs. Each test gets a schema of its own
//! ([`schema::fresh`]) and skips, saying why, when PostgreSQL is not
//! running (fails under `CI=true`).

mod proxy;
mod schema;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use self::proxy::Proxy;
use self::schema::Schema;

/// Bounds every wait of these tests.
const PATIENCE: Duration = Duration::from_secs(30);

/// A password the tests put in URLs, to check that no message shows it.
const SECRET: &str = "hunter2-not-shown";

/// `rdq.toml` for a test: one command queue `work` whose jobs sleep
/// `args.secs` seconds, on `schema`, as node `node`.
fn config(dir: &Path, schema: &str, node: &str, extra_server: &str) -> PathBuf {
    let path = dir.join(format!("{node}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[server]
database_schema = "{schema}"
node = "{node}"
lease = "3s"
shutdown_grace = "2s"
{extra_server}

[queues.work]
width = 2
max_attempts = 3
backoff_base = "50ms"
backoff_max = "200ms"
[queues.work.executor]
type = "command"
argv = ["/bin/sleep", "{{args.secs}}"]
"#
        ),
    )
    .unwrap();
    path
}

/// A running `rdq serve`, killed if the test ends without stopping it.
struct Server {
    child: Child,
    base: String,
    http: reqwest::Client,
    // Kept open: the server may still write to its stdout.
    _stdout: BufReader<ChildStdout>,
}

fn rdq(url: &str, config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdq"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", url])
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .env_remove("RDQ_DATABASE_URL")
        .env_remove("RDQ_TOKEN")
        .kill_on_drop(true);
    cmd
}

impl Server {
    async fn start(url: &str, config: &Path) -> Server {
        let mut child = rdq(url, config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rdq starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        tokio::time::timeout(PATIENCE, stdout.read_line(&mut line))
            .await
            .expect("rdq says where it listens")
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        assert!(!line.contains(SECRET), "{line}");
        Server {
            child,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            _stdout: stdout,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.parse().unwrap(), url)
            .timeout(PATIENCE);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn put(&self, secs: &str) -> i64 {
        let (status, reply) = self
            .call(
                "POST",
                "/api/v1/queues/work/jobs",
                Some(json!({"args": {"secs": secs}})),
            )
            .await;
        assert_eq!(status, 201, "{reply}");
        reply["id"].as_i64().unwrap()
    }

    async fn job(&self, id: i64) -> Value {
        let (status, job) = self.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(status, 200, "job {id}: {job}");
        job
    }

    async fn finished(&self, id: i64) -> Value {
        let (status, job) = self
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/wait?timeout_ms=25000"),
                None,
            )
            .await;
        assert_eq!(status, 200, "job {id} did not finish: {job}");
        job
    }

    async fn patch(&self, body: Value) -> Value {
        let (status, q) = self.call("PATCH", "/api/v1/queues/work", Some(body)).await;
        assert_eq!(status, 200, "{q}");
        q
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// SIGTERM, then the exit status.
    async fn stop(mut self) -> Option<i32> {
        let pid = self.child.id().unwrap() as i32;
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("rdq stops")
            .unwrap();
        status.code()
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `limit`.
async fn within<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `rdq serve` expected to fail: its exit status and stderr.
async fn failing(url: &str, config: &Path) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        PATIENCE,
        rdq(url, config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("rdq exits")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains(SECRET), "the password leaked: {stderr}");
    (out.status.code(), stderr)
}

fn millis(rfc3339: &Value) -> SystemTime {
    let text = rfc3339.as_str().unwrap_or_else(|| panic!("{rfc3339}"));
    humantime::parse_rfc3339_weak(text.trim_end_matches('Z'))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

macro_rules! schema_or_skip {
    ($name:literal) => {
        match schema::fresh($name).await {
            Some(s) => s,
            None => return,
        }
    };
}

/// Put, run, wait; jobs put while paused survive a restart and run after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_run_wait_and_restart_keep_jobs() {
    let schema: Schema = schema_or_skip!("put_run_wait_and_restart_keep_jobs");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &schema.name, "solo", "");
    let s = Server::start(&schema.url, &cfg).await;
    let (status, ready) = s.call("GET", "/readyz", None).await;
    assert_eq!(status, 200, "{ready}");
    let done: Vec<i64> = [s.put("0").await, s.put("0").await, s.put("0").await].into();
    for id in &done {
        let job = s.finished(*id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    assert_eq!(s.patch(json!({"paused": true})).await["paused"], true);
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(s.put("0").await);
    }
    assert_eq!(s.stop().await, Some(0));

    let s = Server::start(&schema.url, &cfg).await;
    for id in &done {
        assert_eq!(s.job(*id).await["state"], "succeeded");
    }
    for id in &waiting {
        assert_eq!(s.job(*id).await["state"], "pending");
    }
    s.patch(json!({"paused": false})).await;
    for id in &waiting {
        assert_eq!(s.finished(*id).await["state"], "succeeded");
    }
    // The rows are in the schema the configuration names.
    let row = schema
        .query_one(&format!("SELECT count(*) FROM {}.rdq_jobs", schema.name))
        .await;
    assert_eq!(row.get::<_, i64>(0), 6);
    assert_eq!(s.stop().await, Some(0));
}

/// Two servers on one schema: a width set through A shows on B within a
/// second; a pause through A holds B's launches until the resume; a job
/// running on one is cancelled through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_settings_and_cancels() {
    let schema: Schema = schema_or_skip!("two_servers_share_settings_and_cancels");
    let dir = tempfile::tempdir().unwrap();
    let a = Server::start(&schema.url, &config(dir.path(), &schema.name, "node-a", "")).await;
    let b = Server::start(&schema.url, &config(dir.path(), &schema.name, "node-b", "")).await;

    // Each node's sessions carry its name.
    for node in ["node-a", "node-b"] {
        let row = schema
            .query_one(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{node}'"
            ))
            .await;
        assert!(row.get::<_, i64>(0) >= 1, "no session of {node}");
    }

    // Width through A, seen on B within a second.
    assert_eq!(a.patch(json!({"width": 7})).await["width"], 7);
    within(Duration::from_secs(1), "B shows A's width", || async {
        let (_, q) = b.call("GET", "/api/v1/queues/work", None).await;
        (q["width"] == 7).then_some(())
    })
    .await;

    // Pause through A: B shows it, and what is put through B launches only
    // after the resume.
    a.patch(json!({"paused": true})).await;
    within(Duration::from_secs(1), "B shows A's pause", || async {
        let (_, q) = b.call("GET", "/api/v1/queues/work", None).await;
        (q["paused"] == true).then_some(())
    })
    .await;
    let held: Vec<i64> = [b.put("0").await, b.put("0").await].into();
    let resumed_at = SystemTime::now();
    a.patch(json!({"paused": false})).await;
    for id in &held {
        let job = b.finished(*id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let launched = millis(&job["launched_at"]);
        // Timestamps are kept to the millisecond.
        assert!(
            launched + Duration::from_millis(1) >= resumed_at,
            "job {id} launched at {launched:?}, before the resume at {resumed_at:?}"
        );
    }

    // A long job: cancelled through the node that does not run it.
    let id = a.put("60").await;
    let (runner, other) = runs_on(id, [&a, &b]).await;
    let (status, job) = other
        .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    assert!(status == 200 || status == 202, "{status} {job}");
    if status == 202 {
        assert_eq!(job["state"], "underway", "{job}");
    } else {
        assert_eq!(job["state"], "cancelled", "{job}");
    }
    let job = runner.finished(id).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    assert_eq!(job["node"], json!(null), "{job}");

    // The node running it is stopped (SIGSTOP, well within its lease): the
    // cancel is recorded, 202 with the job still underway; once the node
    // runs again, it ends the job cancelled.
    let id = a.put("60").await;
    let (runner, other) = runs_on(id, [&a, &b]).await;
    runner.signal(libc::SIGSTOP);
    let (status, job) = other
        .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    runner.signal(libc::SIGCONT);
    assert_eq!((status, &job["state"]), (202, &json!("underway")), "{job}");
    let job = other.finished(id).await;
    assert_eq!(job["state"], "cancelled", "{job}");

    assert_eq!(a.stop().await, Some(0));
    assert_eq!(b.stop().await, Some(0));
}

/// Which of two servers (nodes `node-a`, `node-b`) runs job `id`, and the
/// other, once it is underway.
async fn runs_on(id: i64, [a, b]: [&Server; 2]) -> (&Server, &Server) {
    let (runner, other) = within(PATIENCE, "the job runs on a node", || async {
        let job = a.job(id).await;
        match job["node"].as_str() {
            Some("node-a") => Some((a, b)),
            Some("node-b") => Some((b, a)),
            _ => None,
        }
    })
    .await;
    // Either node's dump lists it, naming the node.
    let (_, dump) = other.call("GET", "/api/v1/dump", None).await;
    let jobs = dump["jobs"].as_array().cloned().unwrap_or_default();
    let listed = jobs.iter().find(|j| j["id"] == id);
    let runner_name = if std::ptr::eq(runner, a) {
        "node-a"
    } else {
        "node-b"
    };
    assert_eq!(
        listed.map(|j| j["node"].clone()),
        Some(json!(runner_name)),
        "{dump}"
    );
    (runner, other)
}

/// A URL to a closed port: retries with backoff for `connect_timeout`,
/// then exit 1 saying what to start, with no password in sight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_retries_then_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = config(dir.path(), "rdq", "lonely", "connect_timeout = \"2s\"");
    let url = format!("postgres://postgres:{SECRET}@127.0.0.1:{port}/test");
    let started = std::time::Instant::now();
    let (code, stderr) = failing(&url, &cfg).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up too soon"
    );
    assert!(stderr.contains("cannot reach PostgreSQL at"), "{stderr}");
    assert!(stderr.contains("start PostgreSQL"), "{stderr}");
    assert!(stderr.contains(":***@127.0.0.1"), "{stderr}");
    // 0.2 + 0.4 + 0.8 s: several attempts, each logged once.
    let attempts = stderr
        .lines()
        .filter(|l| l.contains("cannot reach PostgreSQL") && l.contains("retry_in"))
        .count();
    assert!(attempts >= 3, "{stderr}");
}

/// Malformed URLs: exit 2, naming the URL without its password. No such
/// database: exit 1 with the server's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_databases_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "rdq", "refused", "");
    for url in [
        format!("postgres://u:{SECRET}@127.0.0.1:notaport/test"),
        format!("mysql://u:{SECRET}@127.0.0.1/test"),
    ] {
        let (code, stderr) = failing(&url, &cfg).await;
        assert_eq!(code, Some(2), "{url}: {stderr}");
        assert!(stderr.contains("u:***@127.0.0.1"), "{stderr}");
    }

    let schema: Schema = schema_or_skip!("bad_urls_and_databases_are_refused");
    let upstream = proxy::upstream_of(&schema.url);
    let url = format!(
        "postgres://postgres:{SECRET}@{upstream}/rdq_no_such_database_{}",
        std::process::id()
    );
    let (code, stderr) = failing(&url, &cfg).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!stderr.contains("retry_in"), "not retried: {stderr}");
    // A login refused (here: no such role; with a password, a wrong one).
    let url = format!("postgres://rdq_no_such_role:{SECRET}@{upstream}/postgres");
    let (code, stderr) = failing(&url, &cfg).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("rdq_no_such_role"), "{stderr}");
    assert!(!stderr.contains("retry_in"), "not retried: {stderr}");
}

/// A schema a newer rdq migrated: exit 1, "upgrade rdq", nothing touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let schema: Schema = schema_or_skip!("a_newer_schema_is_refused");
    schema
        .execute(&format!(
            "CREATE SCHEMA {s};
             CREATE TABLE {s}.rdq_schema_version (version bigint PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO {s}.rdq_schema_version (version) VALUES (999);",
            s = schema.name
        ))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = failing(&schema.url, &config(dir.path(), &schema.name, "old", "")).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("upgrade rdq"), "{stderr}");
    let row = schema
        .query_one(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{}'",
            schema.name
        ))
        .await;
    assert_eq!(row.get::<_, i64>(0), 1, "no table was created");
}

/// PostgreSQL lost mid-run (a proxy in between, cut): `/readyz` and puts
/// answer 503 `store_unavailable`; restored: puts succeed again, and every
/// acknowledged job is there and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_lost_mid_run_then_back() {
    let schema: Schema = schema_or_skip!("database_lost_mid_run_then_back");
    let proxy = Proxy::start(proxy::upstream_of(&schema.url)).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &schema.name, "proxied", "");
    let s = Server::start(&proxy.url_for(&schema.url), &cfg).await;
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        acknowledged.push(s.put("0").await);
    }

    proxy.cut();
    let reason = within(PATIENCE, "/readyz answers 503", || async {
        let (status, body) = s.call("GET", "/readyz", None).await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(reason["error"]["code"], "store_unavailable", "{reason}");
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/queues/work/jobs",
            Some(json!({"args": {"secs": "0"}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("store_unavailable")),
        "{body}"
    );

    proxy.restore();
    let id = within(PATIENCE, "a put succeeds again", || async {
        let (status, body) = s
            .call(
                "POST",
                "/api/v1/queues/work/jobs",
                Some(json!({"args": {"secs": "0"}})),
            )
            .await;
        (status == 201).then(|| body["id"].as_i64().unwrap())
    })
    .await;
    acknowledged.push(id);
    let (status, _) = s.call("GET", "/readyz", None).await;
    assert_eq!(status, 200);
    for id in &acknowledged {
        let job = s.finished(*id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    assert_eq!(s.stop().await, Some(0));
}

/// What the API refuses, the same on both backends: `max_attempts` beyond
/// 2³¹ − 1 (or any beyond the limit), a body that is not JSON; and how a
/// cancel answers.
async fn refusals(s: &crate::support::TestServer) {
    use axum::http::StatusCode;
    for n in ["1001", "2147483648", "4294967296", "18446744073709551616"] {
        let body = format!(r#"{{"args": {{}}, "max_attempts": {n}}}"#);
        let (status, reply) = s.call("POST", "/api/v1/queues/sms/jobs", Some(&body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{n}: {reply}");
        assert_eq!(reply["error"]["code"], "unprocessable", "{reply}");
    }
    let (status, reply) = s
        .call("POST", "/api/v1/queues/sms/jobs", Some("{\"args\": nope}"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{reply}");
    assert_eq!(s.counts().await["pending"], 0, "nothing was put: {reply}");
    // A waiting job is cancelled at once: 200, final.
    let id = s.put(r#"{"args": {}}"#).await;
    let (status, job) = s
        .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(
        (status, &job["state"]),
        (StatusCode::OK, &json!("cancelled"))
    );
    let (status, reply) = s
        .call("POST", &format!("/api/v1/jobs/{id}/cancel"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_sqlite() {
    let s = crate::support::TestServer::start(|c| c.queues[0].paused = true).await;
    refusals(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_on_postgres() {
    let schema: Schema = schema_or_skip!("refusals_on_postgres");
    let store = rdq_store::postgres::PgStore::connect(
        &schema.url,
        rdq_store::postgres::PgOptions {
            schema: schema.name.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s = crate::support::TestServer::start_on(Some(store.into()), |c| c.queues[0].paused = true)
        .await;
    refusals(&s).await;
    let (status, _) = s.call("GET", "/readyz", None).await;
    assert_eq!(status, axum::http::StatusCode::OK);
}

/// A message published to two consumers on PostgreSQL: one commit writes a
/// job into each consumer's queue, and both run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_to_two_consumers_runs_in_both() {
    let schema: Schema = schema_or_skip!("a_message_published_to_two_consumers_runs_in_both");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topics.toml");
    let consumer = |name: &str| {
        format!(
            "[consumers.{name}]\nsubscribe = [\"orders.*\"]\nmax_attempts = 2\n\
             [consumers.{name}.executor]\ntype = \"command\"\nargv = [\"/bin/sleep\", \"{{args.secs}}\"]\n"
        )
    };
    std::fs::write(
        &path,
        format!(
            "topics = [\"orders.paid\"]\n[server]\ndatabase_schema = \"{}\"\nnode = \"pub\"\n{}{}",
            schema.name,
            consumer("fast"),
            consumer("slow")
        ),
    )
    .unwrap();
    let s = Server::start(&schema.url, &path).await;
    let (status, reply) = s
        .call(
            "POST",
            "/api/v1/topics/orders.paid/messages",
            Some(json!({"message": {"secs": "0"}})),
        )
        .await;
    assert_eq!(status, 201, "{reply}");
    let delivered = reply["delivered"].as_array().unwrap();
    assert_eq!(delivered.len(), 2, "{reply}");
    for d in delivered {
        let job = s.finished(d["job"].as_i64().unwrap()).await;
        assert_eq!(
            (&job["state"], &job["queue"], &job["kind"]),
            (&json!("succeeded"), &d["consumer"], &json!("orders.paid")),
            "{job}"
        );
    }
    let (status, list) = s.call("GET", "/api/v1/consumers", None).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["consumers"].as_array().unwrap().len(), 2);
    assert_eq!(s.stop().await, Some(0));
}
