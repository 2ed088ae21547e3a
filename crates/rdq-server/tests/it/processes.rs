//! Real `rdq serve` processes: one per database file whatever the path
//! (a symlink, a hard link, two started at once), and the signals that stop
//! one (two close together are one request; a later one forces).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Answer, Target};

/// A spawned `rdq serve`: its stderr gathered as it comes, its first stdout
/// line (the address) once it listens. Killed if the test ends early.
struct Rdq {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

impl Drop for Rdq {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn gather(from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let into = text.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let mut t = into.lock().unwrap();
            t.push_str(&line);
            t.push('\n');
        }
    });
    text
}

impl Rdq {
    /// `rdq serve` on `db` (with `config` if given), through `wrapper` (a
    /// command and its arguments put before rdq, e.g. `timeout`) if given.
    fn spawn(db: &Path, config: Option<&Path>, wrapper: &[&str]) -> Rdq {
        let rdq = env!("CARGO_BIN_EXE_rdq");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(rdq);
                c
            }
            None => Command::new(rdq),
        };
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .env("RUST_LOG", "info")
            .env_remove("RDQ_TOKEN")
            .env_remove("RDQ_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        let mut child = cmd.spawn().expect("rdq starts");
        let stdout = gather(child.stdout.take().unwrap());
        let stderr = gather(child.stderr.take().unwrap());
        Rdq {
            child: Some(child),
            stderr,
            stdout,
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (at most 20 s) until `what` says it is done.
    fn until(&self, what: &str, done: impl Fn(&Rdq) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within 20 s; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The base URL, once it listens (at most 20 s).
    fn base(&self) -> String {
        self.until("listening", |r| r.stdout.lock().unwrap().contains('\n'));
        let line = self.stdout.lock().unwrap().clone();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        format!("http://{addr}")
    }

    /// Its exit status, waiting at most `limit`; `None` if it was killed by a
    /// signal. Fails the test if it is still running then.
    fn exit_within(mut self, limit: Duration) -> (Option<i32>, String) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return (status.code(), self.stderr());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rdq still running after {limit:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }
}

/// A second `rdq serve` on the file `first` holds, through `path`: it exits
/// 1 at once, naming the first one's pid, and the first keeps serving.
fn assert_second_is_refused(first: &Rdq, holder_pid: i32, path: &Path) {
    let second = Rdq::spawn(path, None, &[]);
    let (code, stderr) = second.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("in use by another process")
            && stderr.contains(&format!("pid {holder_pid}")),
        "{stderr}"
    );
    assert!(first.child.is_some());
}

#[test]
fn a_second_server_through_a_symlink_or_a_hard_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("rdq.db");
    let first = Rdq::spawn(&real, None, &[]);
    let _ = first.base();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_second_is_refused(&first, first.pid(), &link);
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&real, &hard).unwrap();
    assert_second_is_refused(&first, first.pid(), &hard);
    first.signal(libc::SIGTERM);
    let (code, stderr) = first.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
}

/// Two servers started at the same moment on a file that does not exist
/// yet: one serves, the other is refused with its pid.
#[test]
fn two_servers_started_at_once_on_a_new_file_one_serves() {
    let dir = tempfile::tempdir().unwrap();
    let db: PathBuf = dir.path().join("new.db");
    let a = Rdq::spawn(&db, None, &[]);
    let b = Rdq::spawn(&db, None, &[]);
    let refused = |r: &Rdq| r.stderr().contains("in use by another process");
    let listening = |r: &Rdq| r.stdout.lock().unwrap().contains("listening");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (winner, loser) = loop {
        match (refused(&a) || listening(&b), refused(&b) || listening(&a)) {
            (true, _) => break (b, a),
            (_, true) => break (a, b),
            _ => {}
        }
        assert!(Instant::now() < deadline, "neither started nor was refused");
        std::thread::sleep(Duration::from_millis(5));
    };
    let winner_pid = winner.pid();
    let (code, stderr) = loser.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("pid {winner_pid}")), "{stderr}");
    let _ = winner.base();
    winner.signal(libc::SIGTERM);
    let (code, stderr) = winner.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
}

/// A config whose queue `sms` posts to `target` with a grace period of
/// `grace`.
fn config(dir: &Path, target: &str, grace: &str) -> PathBuf {
    let path = dir.join("rdq.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nshutdown_grace = \"{grace}\"\n\n[queues.sms]\nwidth = 1\ntimeout = \"60s\"\n\n\
             [queues.sms.executor]\ntype = \"http\"\nurl = \"{target}\"\n"
        ),
    )
    .unwrap();
    path
}

/// Puts one job and waits until it is underway.
async fn one_job_underway(base: &str, target: &Target) {
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/api/v1/queues/sms/jobs"))
        .json(&json!({"args": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let deadline = Instant::now() + Duration::from_secs(20);
    while target.seen().is_empty() {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A server (run under `wrapper`, if any) whose one job is underway at a
/// target that answers it after `answer`; `grace` to stop.
async fn a_job_underway(
    dir: &Path,
    answer: Duration,
    grace: &str,
    wrapper: &[&str],
) -> (Target, Rdq) {
    let target = Target::start().await;
    target.script([Answer {
        delay: answer,
        ..Answer::status(200)
    }]);
    let cfg = config(dir, &target.url, grace);
    let rdq = Rdq::spawn(&dir.join("rdq.db"), Some(&cfg), wrapper);
    one_job_underway(&rdq.base(), &target).await;
    (target, rdq)
}

/// How rdq exited (within `within`), and what it wrote to stderr.
async fn exit_of(rdq: Rdq, within: Duration) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || rdq.exit_within(within))
        .await
        .unwrap()
}

/// GNU `timeout` sends SIGTERM to rdq and then to its process group, a
/// fraction of a millisecond apart. That is one request to stop: rdq stops
/// gracefully (the job underway finishes) and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_signals_close_together_are_one_graceful_stop() {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = ["timeout", "--preserve-status", "3"];
    let (_target, rdq) =
        a_job_underway(dir.path(), Duration::from_millis(4500), "20s", &wrapper).await;
    let (code, stderr) = exit_of(rdq, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("signal received: shutting down"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stopped: unfinished jobs are back to pending"),
        "{stderr}"
    );
    assert!(!stderr.contains("second signal"), "{stderr}");
}

/// The same without `timeout`'s luck: a second SIGTERM a few milliseconds
/// after the first was handled (so it cannot merge with the first in the
/// kernel) is still the same request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_soon_after_the_first_is_the_same_request() {
    let dir = tempfile::tempdir().unwrap();
    let (target, rdq) = a_job_underway(dir.path(), Duration::from_millis(1500), "20s", &[]).await;
    rdq.signal(libc::SIGTERM);
    rdq.until("first signal handled", |r| {
        r.stderr().contains("signal received: shutting down")
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    rdq.signal(libc::SIGTERM);
    let (code, stderr) = exit_of(rdq, Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("stopped: unfinished jobs are back to pending"),
        "{stderr}"
    );
    assert_eq!(target.seen().len(), 1);
}

/// A second signal well after the first (past the window) still means
/// "now": rdq exits 130 without waiting for the job underway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_second_signal_forces_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (_target, rdq) = a_job_underway(dir.path(), Duration::from_secs(60), "60s", &[]).await;
    rdq.signal(libc::SIGTERM);
    rdq.until("first signal handled", |r| {
        r.stderr().contains("signal received: shutting down")
    });
    // Past the window in which a second signal is the same request.
    tokio::time::sleep(rdq_server::shutdown::SAME_REQUEST + Duration::from_millis(300)).await;
    rdq.signal(libc::SIGTERM);
    let (code, stderr) = exit_of(rdq, Duration::from_secs(10)).await;
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("second signal"), "{stderr}");
}

/// Another program (not rdq) holds SQLite's lock on the file, as
/// `sqlite3 rdq.db 'BEGIN EXCLUSIVE;'` left open does: rdq says so at once,
/// naming the file, instead of waiting in silence; and starts as soon as
/// the other program lets go.
#[test]
fn a_database_locked_by_another_program_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("theirs.db");
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch("CREATE TABLE mine(a); BEGIN EXCLUSIVE; INSERT INTO mine VALUES (1);")
        .unwrap();
    let rdq = Rdq::spawn(&db, None, &[]);
    let started = Instant::now();
    rdq.until("the warning", |r| {
        r.stderr().contains("locked by another program")
    });
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "said at once, not after the wait: {:?}",
        started.elapsed()
    );
    assert!(
        rdq.stderr().contains(&db.display().to_string()),
        "{}",
        rdq.stderr()
    );
    other.execute_batch("COMMIT").unwrap();
    drop(other);
    let _ = rdq.base();
    rdq.signal(libc::SIGTERM);
    let (code, stderr) = rdq.exit_within(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{stderr}");
}

/// A SIGTERM right after the "listening" line stops the server gracefully:
/// the signal handlers are in place before it says it listens (they were
/// installed by the serving task, which could start later, so such a
/// signal killed the process outright).
#[test]
fn a_signal_right_after_the_listening_line_is_a_graceful_stop() {
    for round in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let rdq = Rdq::spawn(&dir.path().join("rdq.db"), None, &[]);
        let _ = rdq.base();
        rdq.signal(libc::SIGTERM);
        let (code, stderr) = rdq.exit_within(Duration::from_secs(20));
        assert_eq!(code, Some(0), "round {round}: {stderr}");
        assert!(
            stderr.contains("stopped: unfinished jobs are back to pending"),
            "round {round}: {stderr}"
        );
    }
}
