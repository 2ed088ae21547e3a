//! The client verbs (`rdq put`, `jobs`, `wait`, `queues`, ...) run as a user
//! would, against a real `rdq serve` on a free port whose queue posts to a
//! small HTTP target in the test: what they print and their exit status.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long anything in these tests may take before it counts as stuck.
const PATIENCE: Duration = Duration::from_secs(60);

/// A target for the http executor on loopback: 200 for every job, except 400
/// (dead at once) for a job whose args have `"fail": true`. It runs on its
/// own thread until the test binary exits.
fn start_target() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let app = axum::Router::new().route(
                "/hook",
                axum::routing::post(|axum::Json(doc): axum::Json<Value>| async move {
                    if doc["args"]["fail"] == Value::Bool(true) {
                        (axum::http::StatusCode::BAD_REQUEST, "told to fail")
                    } else {
                        (axum::http::StatusCode::OK, "{\"ok\":true}")
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    url
}

/// A running `rdq serve`. Dropped without [`Server::stop`] (a failed test),
/// it is stopped all the same, and its log is printed.
struct Server {
    child: Option<Child>,
    url: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        Server::start_with_token(None)
    }

    /// A server that needs `Authorization: Bearer token` (from `RDQ_TOKEN`).
    fn start_with_token(token: Option<&str>) -> Server {
        Server::start_with(token, "")
    }

    /// A server with queue `hook`, and whatever `extra` declares.
    fn start_with(token: Option<&str>, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("rdq.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nshutdown_grace = \"2s\"\n\n\
                 [queues.hook]\nwidth = 2\nmax_attempts = 1\ntimeout = \"5s\"\n\n\
                 [queues.hook.executor]\ntype = \"http\"\nurl = \"{}\"\n\n{extra}",
                start_target()
            ),
        )
        .unwrap();
        let log = dir.path().join("server.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rdq"))
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("x.db"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("RDQ_TOKEN", token.unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("rdq serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            log,
            dir,
        };
        // Read stdout on a thread (to its end, so the server never blocks on
        // a full pipe) and wait here, with a deadline, for the address.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PATIENCE;
        while server.url.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("rdq serve printed its address");
            if let Some(rest) = line.strip_prefix("rdq: listening on http://") {
                let addr = rest.split_whitespace().next().unwrap();
                server.url = format!("http://{addr}");
            }
        }
        server
    }

    /// Runs `rdq ARGS` against this server.
    fn rdq(&self, args: &[&str]) -> Run {
        rdq_with(&self.url, args)
    }

    /// Runs `rdq ARGS --json` and parses what it prints.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.rdq(&all);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {run:?}"))
    }

    fn queue(&self) -> Value {
        let list = self.json(&["queues"]);
        list["queues"][0].clone()
    }

    /// Stops it as `kill` does (SIGTERM) and checks that it exits cleanly.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        let code = terminate(&mut child);
        assert_eq!(
            code,
            Some(0),
            "rdq serve exited with {code:?}; log:\n{}",
            self.read_log()
        );
    }

    fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
            if std::thread::panicking() {
                eprintln!(
                    "rdq serve log ({}):\n{}",
                    self.dir.path().display(),
                    self.read_log()
                );
            }
        }
    }
}

/// SIGTERM, then SIGKILL if it has not exited within [`PATIENCE`]; its exit
/// code.
fn terminate(child: &mut Child) -> Option<i32> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return status.code(),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// What one run of the client did.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Checks that it failed with `code` and one `rdq: ` line on stderr
    /// containing `text`.
    pub(crate) fn failed(&self, code: i32, text: &str) {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:?}");
        assert!(self.stderr.starts_with("rdq: "), "{self:?}");
        assert!(self.stderr.contains(text), "{text:?} not in {self:?}");
    }
}

/// Runs `rdq ARGS` with `RDQ_SERVER=server`; a run that takes longer than
/// [`PATIENCE`] is killed and fails the test.
pub(crate) fn rdq_with(server: &str, args: &[&str]) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_rdq"))
        .args(args)
        .env("RDQ_SERVER", server)
        .env_remove("RDQ_TOKEN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rdq runs");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("rdq {args:?} did not finish in {PATIENCE:?}");
        }
    };
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Puts a job into `hook`; its id.
fn put(server: &Server, args: &[&str]) -> i64 {
    let mut all = vec!["put", "hook"];
    all.extend(args);
    let run = server.rdq(&all);
    assert_eq!(run.code, 0, "{run:?}");
    run.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not an id: {run:?}"))
}

#[test]
fn jobs_are_put_listed_shown_waited_for_and_changed() {
    let server = Server::start();

    let id = put(
        &server,
        &[r#"{"to": "+1555"}"#, "--priority", "-2", "--timeout", "3s"],
    );
    let wait = server.rdq(&["wait", &id.to_string(), "--timeout", "30s"]);
    assert_eq!(
        (wait.code, wait.stdout.as_str()),
        (0, format!("job {id}: succeeded\n").as_str()),
        "{wait:?}"
    );

    let jobs = server.rdq(&["jobs", "--queue", "hook"]);
    assert_eq!(jobs.code, 0, "{jobs:?}");
    let mut lines = jobs.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "QUEUE", "STATE", "PRIO", "ATTEMPT", "QUEUED", "ERROR"]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        [id.to_string().as_str(), "hook", "succeeded", "-2", "1/1"],
        "{jobs:?}"
    );

    let job = server.rdq(&["job", &id.to_string()]);
    assert_eq!(job.code, 0, "{job:?}");
    for field in [
        "state     succeeded\n",
        "priority  -2\n",
        "timeout   3s\n",
        "\"to\": \"+1555\"",
        "\"status\": 200",
    ] {
        assert!(job.stdout.contains(field), "{field:?} not in {job:?}");
    }
    assert_eq!(server.json(&["job", &id.to_string()])["state"], "succeeded");

    // A finished job cannot be cancelled: exit 1, the server's message.
    server
        .rdq(&["cancel", &id.to_string()])
        .failed(1, "finished");
    server
        .rdq(&["job", "999999"])
        .failed(1, "job 999999 not found");

    // A job the target refuses is dead: wait says so and exits 1; retry
    // runs it again.
    let dead = put(&server, &[r#"{"fail": true}"#]);
    let wait = server.rdq(&["wait", &dead.to_string(), &id.to_string()]);
    assert_eq!(wait.code, 1, "{wait:?}");
    assert!(
        wait.stdout
            .starts_with(&format!("job {dead}: dead after 1 of 1 attempts: ")),
        "{wait:?}"
    );
    assert!(
        wait.stdout.ends_with(&format!("job {id}: succeeded\n")),
        "{wait:?}"
    );
    wait.failed(1, "1 of 2 jobs did not succeed");
    let retry = server.rdq(&["retry", &dead.to_string()]);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(
        retry.stdout.starts_with(&format!("job {dead}: ")),
        "{retry:?}"
    );

    // Waiting jobs: reprioritized, cancelled, and found by state; a key
    // finds the live job again.
    assert_eq!(server.rdq(&["pause", "hook"]).stdout, "hook: paused\n");
    let waiting = put(&server, &["--key", "once"]);
    let again = server.rdq(&["put", "hook", "--key", "once"]);
    assert_eq!(
        (again.code, again.stdout.trim()),
        (0, waiting.to_string().as_str()),
        "{again:?}"
    );
    assert!(again.stderr.contains("existing"), "{again:?}");
    let prio = server.rdq(&["prio", &waiting.to_string(), "-7"]);
    assert_eq!(
        prio.stdout,
        format!("job {waiting}: priority 0 -> -7\n"),
        "{prio:?}"
    );
    let pending = server.json(&["jobs", "--state", "pending"]);
    assert_eq!(pending["jobs"][0]["id"], waiting, "{pending}");
    assert_eq!(pending["jobs"][0]["priority"], -7, "{pending}");
    let cancel = server.rdq(&["cancel", &waiting.to_string()]);
    assert_eq!(
        cancel.stdout,
        format!("job {waiting}: cancelled\n"),
        "{cancel:?}"
    );
    let timed_out = server.rdq(&["wait", &put(&server, &[]).to_string(), "--timeout", "100ms"]);
    assert_eq!(timed_out.code, 1, "{timed_out:?}");
    assert!(
        timed_out
            .stdout
            .contains(": still pending after 100ms (timed out)"),
        "{timed_out:?}"
    );

    // --all follows the pages to the oldest job.
    let all = server.json(&["jobs", "--all"]);
    assert_eq!(
        all["jobs"].as_array().unwrap().last().unwrap()["id"],
        id,
        "{all}"
    );

    server.stop();
}

#[test]
fn queues_are_steered_and_the_changes_show() {
    let server = Server::start();
    let table = server.rdq(&["queues"]);
    assert_eq!(table.code, 0, "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "NAME  EXECUTOR  WIDTH  RATE  PAUSED  PENDING  UNDERWAY  SCHED+FAILED  DEAD  OLDEST  HELD UNTIL"
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["hook", "http", "2", "-", "no", "0", "0", "0", "0", "-", "-"]
    );

    assert_eq!(
        server.rdq(&["width", "hook", "5"]).stdout,
        "hook: width 5\n"
    );
    assert_eq!(
        server
            .rdq(&["rate", "hook", "600/min", "--burst", "3"])
            .stdout,
        "hook: rate 600/min, burst 3\n"
    );
    assert_eq!(server.rdq(&["pause", "hook"]).stdout, "hook: paused\n");
    let q = server.queue();
    assert_eq!(q["width"], 5);
    assert_eq!(
        q["rate"],
        serde_json::json!({"count": 600, "period_ms": 60000, "burst": 3})
    );
    assert_eq!(q["paused"], true);
    let row = server.rdq(&["queues"]).stdout;
    assert!(row.contains("  600/min, burst 3  yes  "), "{row}");

    assert_eq!(
        server.rdq(&["rate", "hook", "none"]).stdout,
        "hook: rate none\n"
    );
    assert_eq!(server.rdq(&["resume", "hook"]).stdout, "hook: resumed\n");
    let q = server.queue();
    assert_eq!(
        (q["rate"].clone(), q["paused"].clone()),
        (Value::Null, Value::Bool(false))
    );

    server
        .rdq(&["width", "nowhere", "3"])
        .failed(1, "no queue named \"nowhere\"");
    server.stop();
}

#[test]
fn a_jobs_file_is_put_in_batches_up_to_its_first_bad_line() {
    let server = Server::start();
    server.rdq(&["pause", "hook"]);
    let file = server.dir.path().join("jobs.jsonl");
    let mut text = String::new();
    for i in 1..=2500 {
        match i {
            1800 => text.push_str("{\"args\": 1, \"priorty\": 2}\n"),
            7 => text.push('\n'),
            _ if i % 2 == 0 => {
                text.push_str(&format!("{{\"args\": {{\"n\": {i}}}, \"priority\": 1}}\n"))
            }
            _ => text.push_str(&format!("{{\"n\": {i}}}\n")),
        }
    }
    std::fs::write(&file, &text).unwrap();
    let path = file.to_str().unwrap();

    let run = server.rdq(&["put", "hook", "--file", path]);
    run.failed(2, &format!("{path} line 1800: unknown field \"priorty\""));
    assert!(
        run.stderr
            .contains("the 1798 jobs before it were put, none from it on"),
        "{run:?}"
    );
    assert_eq!(server.queue()["counts"]["pending"], 1798);
    let newest = server.json(&["jobs", "--limit", "1"]);
    assert_eq!(
        newest["jobs"][0]["args"],
        serde_json::json!({"n": 1799}),
        "{newest}"
    );

    let good: String = text.lines().skip(1800).map(|l| format!("{l}\n")).collect();
    std::fs::write(&file, good).unwrap();
    let run = server.rdq(&["put", "hook", "--file", path, "--delay", "1h"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "put 700 jobs into hook: 700 new, 0 existing\n"),
        "{run:?}"
    );
    assert_eq!(server.queue()["counts"]["scheduled"], 700);
    server.stop();
}

#[test]
fn a_token_is_sent_when_given() {
    let server = Server::start_with_token(Some("a-token-only-we-know"));
    server
        .rdq(&["queues"])
        .failed(1, "this server needs Authorization: Bearer <token>");
    server
        .rdq(&["queues", "--token", "wrong"])
        .failed(1, "wrong bearer token");
    let run = server.rdq(&["queues", "--token", "a-token-only-we-know"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.starts_with("NAME  EXECUTOR"), "{run:?}");
    server.stop();
}

#[test]
fn no_server_and_bad_usage_fail_with_their_own_status() {
    // A port nobody listens on (bound, then freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("http://127.0.0.1:{port}");
    rdq_with(&nowhere, &["queues"]).failed(
        1,
        &format!(
            "cannot reach the rdq server at {nowhere}: connection refused — is `rdq serve` running? \
             (set --server or RDQ_SERVER)"
        ),
    );

    // Usage errors are found before anything is sent: exit 2.
    for (args, says) in [
        (&["width", "hook", "-3"][..], "unexpected argument"),
        (&["jobs", "--state", "asleep"], "unknown job state"),
        (&["wait"], "required"),
        (&["publish", "topic"], "required"),
        (&["put", "hook", "{not json"], "JSON_ARGS is not JSON"),
        (
            &["put", "hook", "--delay", "soon"],
            "--delay: \"soon\" is not a duration",
        ),
        (&["rate", "hook", "10/parsec"], "not a duration"),
        (
            &["put", "hook", "--file", "/nonexistent/jobs.jsonl"],
            "cannot open /nonexistent/jobs.jsonl",
        ),
        (&["queues", "--server", "ftp://example"], "not a server URL"),
    ] {
        let run = rdq_with(&nowhere, args);
        assert_eq!(run.code, 2, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains(says),
            "{args:?}: {says:?} not in {run:?}"
        );
    }
}

#[test]
fn an_oversize_body_shows_the_servers_413_message() {
    let server = Server::start();
    // One job whose JSON is larger than the server's max_body (1 MiB).
    let jobs = server.dir.path().join("big.jsonl");
    std::fs::write(&jobs, format!("\"{}\"\n", "x".repeat(32 << 20))).unwrap();
    let run = server.rdq(&["put", "hook", "--file", jobs.to_str().unwrap()]);
    run.failed(1, "max_body");
    assert!(!run.stderr.contains("roken pipe"), "{run:?}");
    assert_eq!(server.queue()["counts"]["pending"], 0, "nothing was put");
    server.stop();
}

#[test]
fn a_server_that_hangs_up_mid_body_gets_a_message_that_says_so() {
    // Reads a little of each request, then closes without answering.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 1024];
            let _ = std::io::Read::read(&mut conn, &mut buf);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("big.jsonl");
    std::fs::write(&jobs, format!("\"{}\"\n", "x".repeat(32 << 20))).unwrap();
    let run = rdq_with(&url, &["put", "hook", "--file", jobs.to_str().unwrap()]);
    run.failed(1, "closed the connection while the request was being sent");
}

#[test]
fn stalls_and_dump_show_what_the_server_is_doing() {
    let server = Server::start_with(
        None,
        "[queues.sleepy]\nmax_attempts = 1\ntimeout = \"20s\"\nwarn_after = \"200ms\"\n\
         [queues.sleepy.executor]\ntype = \"command\"\nargv = [\"sleep\", \"30\"]\nstdin = \"empty\"\n",
    );
    // Nothing has blocked the server.
    let run = server.rdq(&["stalls"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .starts_with("stalls (polls over 500ms): blocked 0, cpu 0, starved 0, unknown 0"),
        "{run:?}"
    );
    assert!(run.stdout.contains("no stalls"), "{run:?}");
    let reply = server.json(&["stalls"]);
    assert_eq!(
        (reply["enabled"].as_bool(), reply["tick_ms"].as_u64()),
        (Some(true), Some(100))
    );
    let run = server.rdq(&["dump"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "no jobs underway\n"),
        "{run:?}"
    );

    // A command job that sleeps: hung after 200 ms, with its child asleep.
    let run = server.rdq(&["put", "sleepy", "{}"]);
    assert_eq!(run.code, 0, "{run:?}");
    let id = run.stdout.trim().to_owned();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let dump = server.json(&["dump", "--queue", "sleepy"]);
        if dump["jobs"][0]["hung"] == true && dump["jobs"][0]["child"].is_object() {
            assert_eq!(dump["jobs"][0]["id"].to_string(), id);
            break;
        }
        assert!(Instant::now() < deadline, "never hung: {dump:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let run = server.rdq(&["dump"]);
    assert_eq!(run.code, 0, "{run:?}");
    let row = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&id))
        .unwrap_or_else(|| panic!("job {id} in {run:?}"));
    for words in ["sleepy", "1/1", "20s", "waiting", "S (sleeping)", "HUNG"] {
        assert!(row.contains(words), "{words:?} not in {row:?}");
    }
    // The server logged it once, with what it was doing.
    let deadline = Instant::now() + PATIENCE;
    while !server.read_log().contains("job hung") {
        assert!(
            Instant::now() < deadline,
            "no hung report: {}",
            server.read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = server.read_log();
    let line = log.lines().find(|l| l.contains("job hung")).unwrap();
    assert!(
        line.contains(&format!("job={id}")) && line.contains("child pid"),
        "{line}"
    );
    assert_eq!(log.matches("job hung").count(), 1, "{log}");

    let run = server.rdq(&["cancel", &id]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = server.rdq(&["stalls", "--queue", "nope"]);
    run.failed(1, "no queue named \"nope\"");
    server.stop();
}
