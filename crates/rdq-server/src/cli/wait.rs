//! `rdq wait ID...`: long-polls each job until it is final or the overall
//! timeout passes. The server answers one poll within 60 s at most, so a
//! longer wait is a series of polls, each for what is left.

use std::time::Duration;

use clap::Args;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{decode, Client, JobRecord};
use super::output::{pretty, print, progress, shorten, span};
use super::{duration_arg, CliError, Connection};

/// The longest poll the server allows.
const MAX_POLL: Duration = Duration::from_secs(60);

/// Time allowed beyond a poll's own timeout for the answer to arrive.
const POLL_SLACK: Duration = Duration::from_secs(30);

/// Most polls open at once (each holds a connection).
const MAX_POLLS: usize = 64;

/// A poll that comes back this much sooner than asked, unfinished, means
/// the server is stopping; the next poll waits a little first.
const EARLY: Duration = Duration::from_millis(100);

/// `rdq wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The jobs' ids.
    #[arg(required = true, num_args = 1..)]
    pub ids: Vec<i64>,
    /// Give up after this long in all (`60s`, `10m`).
    #[arg(long, default_value = "60s")]
    pub timeout: String,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// How waiting for one job ended.
#[derive(Debug, Clone)]
pub enum Waited {
    /// It is final (succeeded, dead or cancelled); the job.
    Final(Value),
    /// Time ran out; the job as it was last seen.
    TimedOut(Value),
    /// It could not be waited for.
    Failed(CliError),
}

impl Waited {
    /// Whether the job succeeded.
    pub fn succeeded(&self) -> bool {
        matches!(self, Waited::Final(job) if job.get("state").and_then(Value::as_str) == Some("succeeded"))
    }

    /// One line for people: `job 7: succeeded`.
    pub fn line(&self, id: i64, timeout: Duration) -> String {
        let job = match self {
            Waited::Final(job) | Waited::TimedOut(job) => decode::<JobRecord>(job),
            Waited::Failed(e) => return format!("job {id}: {e}"),
        };
        let j = match job {
            Ok(j) => j,
            Err(e) => return format!("job {id}: {e}"),
        };
        let error = j
            .error
            .as_deref()
            .map(|e| format!(": {}", shorten(e, 100)))
            .unwrap_or_default();
        match self {
            Waited::Final(_) if j.state == "succeeded" => format!("job {id}: succeeded"),
            Waited::Final(_) => format!(
                "job {id}: {} after {} of {} attempts{error}",
                j.state, j.attempt, j.max_attempts
            ),
            _ => format!(
                "job {id}: still {} after {} (timed out){error}",
                j.state,
                span(timeout)
            ),
        }
    }

    /// Its JSON for `--json`: the job, or `{"id", "error"}`.
    fn json(&self, id: i64) -> Value {
        match self {
            Waited::Final(job) | Waited::TimedOut(job) => job.clone(),
            Waited::Failed(CliError::Server { code, message, .. }) => {
                json!({ "id": id, "error": { "code": code, "message": message } })
            }
            Waited::Failed(e) => json!({ "id": id, "error": { "message": e.to_string() } }),
        }
    }
}

/// Waits for one job until `deadline`.
pub async fn wait_one(client: &Client, id: i64, deadline: Instant) -> Waited {
    let path = id.to_string();
    loop {
        let started = Instant::now();
        let poll = deadline.saturating_duration_since(started).min(MAX_POLL);
        let url = client.url(
            &["jobs", &path, "wait"],
            &[("timeout_ms", poll.as_millis().to_string())],
        );
        let reply = match client.send(Method::GET, url, None, poll + POLL_SLACK).await {
            Ok(r) => r,
            Err(e) => return Waited::Failed(e),
        };
        if reply.status != 202 {
            return Waited::Final(reply.body);
        }
        let now = Instant::now();
        if now >= deadline || poll.is_zero() {
            return Waited::TimedOut(reply.body);
        }
        if now.duration_since(started) + EARLY < poll {
            tokio::time::sleep(Duration::from_millis(250).min(deadline - now)).await;
        }
    }
}

/// `rdq wait`: the ids at once (at most 64 polls open); one line
/// per job, in the order given.
pub async fn run(client: &Client, a: &WaitArgs) -> Result<(), CliError> {
    let timeout = duration_arg("--timeout", &a.timeout)?;
    let timeout = crate::limits::WAIT
        .check("--timeout", &a.timeout, timeout)
        .map_err(CliError::Usage)?;
    let deadline = Instant::now() + timeout;
    let bar = if a.ids.len() > 1 {
        progress(Some(a.ids.len() as u64), "jobs final")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let waits = a.ids.iter().map(|&id| {
        let bar = bar.clone();
        async move {
            let w = wait_one(client, id, deadline).await;
            bar.inc(1);
            w
        }
    });
    let results: Vec<Waited> = futures_util::stream::iter(waits)
        .buffered(MAX_POLLS)
        .collect()
        .await;
    bar.finish_and_clear();
    // One server down fails every wait the same way: say it once.
    if let Some(Waited::Failed(e @ CliError::Unreachable { .. })) = results.first() {
        if results
            .iter()
            .all(|w| matches!(w, Waited::Failed(CliError::Unreachable { .. })))
        {
            return Err(e.clone());
        }
    }
    if a.conn.json {
        let jobs: Vec<Value> = a
            .ids
            .iter()
            .zip(&results)
            .map(|(&id, w)| w.json(id))
            .collect();
        print(&pretty(&Value::Array(jobs)))?;
    } else {
        let lines: String = a
            .ids
            .iter()
            .zip(&results)
            .map(|(&id, w)| w.line(id, timeout) + "\n")
            .collect();
        print(&lines)?;
    }
    let failed = results.iter().filter(|w| !w.succeeded()).count();
    match (failed, results.len()) {
        (0, _) => Ok(()),
        (_, 1) => Err(CliError::Failed(format!(
            "job {} did not succeed",
            a.ids[0]
        ))),
        (n, all) => Err(CliError::Failed(format!(
            "{n} of {all} jobs did not succeed"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: &str, error: Option<&str>) -> Value {
        json!({
            "id": 7, "queue": "sms", "kind": "http", "state": state, "priority": 0,
            "attempt": 2, "max_attempts": 3, "args": null, "run_at": "2000-01-01T00:00:00Z",
            "queued_at": "2000-01-01T00:00:00Z", "error": error,
        })
    }

    #[test]
    fn each_outcome_has_one_line() {
        let t = Duration::from_secs(60);
        let ok = Waited::Final(job("succeeded", None));
        assert!(ok.succeeded());
        assert_eq!(ok.line(7, t), "job 7: succeeded");
        let dead = Waited::Final(job("dead", Some("HTTP 404 Not Found")));
        assert!(!dead.succeeded());
        assert_eq!(
            dead.line(7, t),
            "job 7: dead after 2 of 3 attempts: HTTP 404 Not Found"
        );
        let late = Waited::TimedOut(job("failed", Some("HTTP 500")));
        assert!(!late.succeeded());
        assert_eq!(
            late.line(7, t),
            "job 7: still failed after 1m (timed out): HTTP 500"
        );
        let gone = Waited::Failed(CliError::Server {
            status: 404,
            code: "not_found".into(),
            message: "job 7 not found".into(),
        });
        assert_eq!(gone.line(7, t), "job 7: job 7 not found");
        assert_eq!(
            gone.json(7),
            json!({"id": 7, "error": {"code": "not_found", "message": "job 7 not found"}})
        );
    }
}
