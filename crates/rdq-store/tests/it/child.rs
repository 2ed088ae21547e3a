//! The crash tests' child process (`rdq-crash-child`, `src/bin/crash_child.rs`):
//! started, watched line by line, and killed at a planned point.
//!
//! Kills are planned relative to the child's own progress, not to when it
//! was started: opening the store takes a varying time, and a kill timed
//! from the start lands before the open or after the last put as often as
//! during the puts. A [`KillPlan`] counts from the child's first `ack`
//! line (or, in a run with nothing left to put, from its `puts-done`).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdq_store::sqlite::SqliteStore;
use rdq_store::{JobId, JobRow, ListParams, Store};

/// The child's queue.
pub(crate) const QUEUE: &str = "crash";

/// SplitMix64: a small deterministic generator for the kill plans.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(crate) fn in_range(&mut self, range: &std::ops::RangeInclusive<u64>) -> u64 {
        range.start() + self.next() % (range.end() - range.start() + 1)
    }
}

/// The value of the environment variable `name`, or `default()` if unset.
pub(crate) fn env_or<T: std::str::FromStr>(name: &str, default: impl FnOnce() -> T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
        Err(_) => default(),
    }
}

/// The seed in the environment variable `name`, else one from the clock.
pub(crate) fn seed(name: &str) -> u64 {
    env_or(name, || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    })
}

/// The child for the file `db` and `jobs` jobs; more arguments may follow.
pub(crate) fn command(db: &Path, jobs: u64) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rdq-crash-child"));
    cmd.arg(db).arg(jobs.to_string());
    cmd
}

/// When to kill a run: once `acks_after_first` more `ack` lines followed
/// the first, or `delay` after the first, whichever comes first. A run that
/// puts nothing (`puts-done` with no `ack` before it) is killed `delay`
/// after its `puts-done`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KillPlan {
    pub(crate) acks_after_first: u64,
    pub(crate) delay: Duration,
}

/// One run of the child.
pub(crate) struct ChildRun {
    /// Whole lines it printed on stdout.
    pub(crate) lines: Vec<String>,
    /// What it printed on stderr.
    pub(crate) stderr: String,
    pub(crate) status: ExitStatus,
    /// Whether the test killed it (rather than it exiting by itself).
    pub(crate) killed: bool,
    pub(crate) ran: Duration,
}

impl ChildRun {
    /// `ack` lines it printed.
    pub(crate) fn acks(&self) -> usize {
        self.lines.iter().filter(|l| l.starts_with("ack ")).count()
    }

    /// Whether the kill landed while puts were being acknowledged: after
    /// the run's first `ack`, before its `puts-done`.
    pub(crate) fn killed_during_puts(&self) -> bool {
        self.killed && self.acks() > 0 && !self.lines.iter().any(|l| l == "puts-done")
    }

    /// The status, the last line and stderr, for a failure message.
    pub(crate) fn describe(&self) -> String {
        format!(
            "status {}, last line {:?}, stderr {:?}",
            self.status,
            self.lines.last(),
            self.stderr.trim()
        )
    }
}

/// A child being watched.
pub(crate) struct Running {
    child: Child,
    lines: Receiver<String>,
    /// The readers of its stdout and stderr; taken by [`Running::run`].
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    started: Instant,
}

impl Running {
    /// Starts `cmd` with its stdout and stderr piped to the test.
    pub(crate) fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the crash child starts");
        let out = child.stdout.take().expect("piped stdout");
        let mut err = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        // Lines are whole when they end in a newline: the child writes each
        // batch of lines in one write, so only that can be cut.
        let stdout = std::thread::spawn(move || {
            let mut out = BufReader::new(out);
            let mut line = String::new();
            while matches!(out.read_line(&mut line), Ok(n) if n > 0) {
                if let Some(whole) = line.strip_suffix('\n') {
                    if tx.send(whole.to_owned()).is_err() {
                        return;
                    }
                }
                line.clear();
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Running {
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
            started: Instant::now(),
        }
    }

    /// Watches the child's lines and kills it with `SIGKILL` as `plan` says,
    /// or once `limit` has passed since it started, unless it exits first;
    /// returns everything it printed.
    pub(crate) fn run(mut self, plan: Option<KillPlan>, limit: Duration) -> ChildRun {
        let mut lines = Vec::new();
        let mut acks = 0u64;
        // From when the plan's delay counts.
        let mut anchor: Option<Instant> = None;
        let deadline = self.started + limit;
        let kill = loop {
            let due = match (plan, anchor) {
                (Some(plan), Some(at)) => deadline.min(at + plan.delay),
                _ => deadline,
            };
            match self
                .lines
                .recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    if line.starts_with("ack ") {
                        acks += 1;
                        anchor.get_or_insert_with(Instant::now);
                    } else if line == "puts-done" {
                        anchor.get_or_insert_with(Instant::now);
                    }
                    lines.push(line);
                    if plan.is_some_and(|p| acks > p.acks_after_first) {
                        break true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= due {
                        break true;
                    }
                }
                // Its stdout is closed: it is exiting.
                Err(RecvTimeoutError::Disconnected) => break false,
            }
        };
        let mut killed = false;
        let status = if kill {
            match self.child.try_wait().expect("try_wait on the child") {
                Some(status) => status,
                None => {
                    self.child.kill().expect("SIGKILL to the child");
                    killed = true;
                    self.child.wait().expect("wait for the child")
                }
            }
        } else {
            self.wait_until(deadline).unwrap_or_else(|| {
                self.child.kill().expect("SIGKILL to the child");
                killed = true;
                self.child.wait().expect("wait for the child")
            })
        };
        let ran = self.started.elapsed();
        // What it printed before it died, not yet read.
        lines.extend(self.lines.iter());
        if let Some(reader) = self.stdout.take() {
            reader.join().expect("stdout reader");
        }
        ChildRun {
            lines,
            stderr: self
                .stderr
                .take()
                .map(|reader| reader.join().expect("stderr reader"))
                .unwrap_or_default(),
            status,
            killed,
            ran,
        }
    }

    /// Waits until the child exits or `deadline` passes; its status if it
    /// exited.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait on the child") {
                return Some(status);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
    }
}

impl Drop for Running {
    /// A test that fails while its child runs kills it, rather than leave it
    /// running (or unreaped) after the test.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Every job of the child's queue, paging through the list newest first.
pub(crate) async fn all_rows(store: &SqliteStore) -> Vec<JobRow> {
    let mut rows = Vec::new();
    let mut before: Option<JobId> = None;
    loop {
        let page = store
            .list(ListParams {
                queue: Some(QUEUE.to_owned()),
                state: None,
                before,
                limit: 500,
            })
            .await
            .expect("listing jobs");
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        rows.extend(page);
    }
    rows
}
