//! `rdq stalls` and `rdq dump`: what blocked the server's runtime, and what
//! every underway job is doing now.

use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use serde_json::Value;

use super::client::{decode, Client};
use super::output::{pretty, print, relative_text, shorten, span, Align, Table};
use super::{CliError, Connection};

/// `rdq stalls`.
#[derive(Debug, Args)]
pub struct StallsArgs {
    /// Only stalls of this queue's jobs.
    #[arg(long, short)]
    pub queue: Option<String>,
    /// At most this many recent stalls (1 to 1000; default 50).
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: Option<u16>,
    /// Print each stall's full report (cause, blocking call, stack) instead
    /// of a table.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// `rdq dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Only this queue's jobs.
    #[arg(long, short)]
    pub queue: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// The fields of `GET /api/v1/stalls` the tables show.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `StallsReply` documents each field.
pub struct StallsRecord {
    pub enabled: bool,
    pub threshold_ms: u64,
    pub counts: std::collections::BTreeMap<String, u64>,
    pub culprits: Vec<CulpritRecord>,
    pub stalls: Vec<StallRecord>,
}

/// One row of the culprit table.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `CulpritView` documents each field.
pub struct CulpritRecord {
    pub culprit: String,
    pub count: u64,
    pub total_ms: u64,
    pub max_ms: u64,
}

/// One stall.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `StallView` documents each field.
pub struct StallRecord {
    pub seq: u64,
    pub job: u64,
    pub queue: Option<String>,
    pub started_at: String,
    pub duration_ms: u64,
    pub finished: bool,
    pub kind: String,
    pub syscall: Option<String>,
    pub blocking_call: Option<String>,
    pub culprit: Option<String>,
    pub report: String,
}

/// `rdq stalls`: counts, the culprit table, and recent stalls.
pub async fn stalls(client: &Client, a: &StallsArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    if let Some(q) = &a.queue {
        query.push(("queue", q.clone()));
    }
    if let Some(n) = a.limit {
        query.push(("limit", n.to_string()));
    }
    let reply = client.get(&["stalls"], &query).await?;
    if a.conn.json {
        return print(&pretty(&reply));
    }
    let r: StallsRecord = decode(&reply)?;
    if !r.enabled {
        return print(
            "the watchdog is off on this server ([watchdog] enabled = false in rdq.toml)\n",
        );
    }
    if a.full {
        let text: String = r.stalls.iter().map(|s| format!("{}\n", s.report)).collect();
        return print(if text.is_empty() {
            "no stalls\n"
        } else {
            &text
        });
    }
    print(&stalls_text(&r))
}

/// What `rdq stalls` prints.
pub fn stalls_text(r: &StallsRecord) -> String {
    let counts: Vec<String> = r.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut out = format!(
        "stalls (polls over {}): {}\n",
        span(Duration::from_millis(r.threshold_ms)),
        counts.join(", ")
    );
    if !r.culprits.is_empty() {
        let mut t = Table::new(&[
            ("CULPRIT", Align::Left),
            ("STALLS", Align::Right),
            ("TOTAL", Align::Right),
            ("MAX", Align::Right),
        ]);
        for c in &r.culprits {
            t.row(vec![
                c.culprit.clone(),
                c.count.to_string(),
                span(Duration::from_millis(c.total_ms)),
                span(Duration::from_millis(c.max_ms)),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if r.stalls.is_empty() {
        out.push_str("\nno stalls\n");
        return out;
    }
    let mut t = Table::new(&[
        ("#", Align::Right),
        ("WHEN", Align::Left),
        ("JOB", Align::Right),
        ("QUEUE", Align::Left),
        ("KIND", Align::Left),
        ("FOR", Align::Right),
        ("IN", Align::Left),
        ("CULPRIT", Align::Left),
    ]);
    for s in &r.stalls {
        let cause = match (s.syscall.as_deref(), s.blocking_call.as_deref()) {
            (Some(sys), Some(call)) => format!("{sys} ({})", shorten(call, 40)),
            (Some(sys), None) => sys.to_owned(),
            (None, Some(call)) => shorten(call, 48),
            (None, None) => "-".to_owned(),
        };
        t.row(vec![
            s.seq.to_string(),
            relative_text(&s.started_at),
            s.job.to_string(),
            s.queue.clone().unwrap_or_else(|| "-".into()),
            s.kind.clone(),
            format!(
                "{}{}",
                span(Duration::from_millis(s.duration_ms)),
                if s.finished { "" } else { "+" }
            ),
            cause,
            s.culprit
                .as_deref()
                .map_or_else(|| "-".to_owned(), |c| shorten(c, 60)),
        ]);
    }
    out.push('\n');
    out.push_str(&t.render());
    out
}

/// The fields of `GET /api/v1/dump` the tables show.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `DumpReply` documents each field.
pub struct DumpRecord {
    pub watchdog: bool,
    pub jobs: Vec<UnderwayRecord>,
    pub holds: Vec<HoldRecord>,
}

/// One underway job.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `UnderwayJob` documents each field.
pub struct UnderwayRecord {
    pub id: i64,
    pub queue: String,
    pub attempt: u32,
    pub max_attempts: u32,
    pub age_ms: u64,
    pub timeout_ms: Option<u64>,
    pub hung: bool,
    pub poll: Option<PollRecord>,
    pub child: Option<ChildRecord>,
}

/// A job as the watchdog sees it.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `PollView` documents each field.
pub struct PollRecord {
    pub state: String,
    pub in_poll_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    pub polls: u64,
    pub last_poll_ms: u64,
}

/// A command job's child.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `ChildView` documents each field.
pub struct ChildRecord {
    pub pid: i32,
    pub state: Option<String>,
    pub wchan: Option<String>,
}

/// A held database connection or transaction.
#[derive(Debug, Deserialize)]
#[allow(missing_docs)] // The server's `HoldView` documents each field.
pub struct HoldRecord {
    pub resource: String,
    pub location: String,
    pub job: Option<u64>,
    pub held_ms: u64,
}

/// `rdq dump`: one row per underway job.
pub async fn dump(client: &Client, a: &DumpArgs) -> Result<(), CliError> {
    let query: Vec<(&str, String)> = a.queue.iter().map(|q| ("queue", q.clone())).collect();
    let reply: Value = client.get(&["dump"], &query).await?;
    if a.conn.json {
        return print(&pretty(&reply));
    }
    print(&dump_text(&decode(&reply)?))
}

/// What `rdq dump` prints.
pub fn dump_text(r: &DumpRecord) -> String {
    let ms = |m: u64| span(Duration::from_millis(m));
    let mut out = String::new();
    if r.jobs.is_empty() {
        out.push_str("no jobs underway\n");
    } else {
        let mut t = Table::new(&[
            ("ID", Align::Right),
            ("QUEUE", Align::Left),
            ("ATTEMPT", Align::Right),
            ("AGE", Align::Right),
            ("TIMEOUT", Align::Right),
            ("NOW", Align::Left),
            ("POLLS", Align::Right),
            ("LAST POLL", Align::Right),
            ("CHILD", Align::Left),
            ("HUNG", Align::Left),
        ]);
        for j in &r.jobs {
            let now = match &j.poll {
                Some(p) if p.state == "in_poll" => {
                    format!("in a poll for {}", ms(p.in_poll_ms.unwrap_or(0)))
                }
                Some(p) => format!("waiting {}", ms(p.idle_ms.unwrap_or(0))),
                None => "-".to_owned(),
            };
            let child = j.child.as_ref().map_or_else(
                || "-".to_owned(),
                |c| {
                    format!(
                        "{} {}{}",
                        c.pid,
                        c.state.as_deref().unwrap_or("gone"),
                        c.wchan
                            .as_deref()
                            .map(|w| format!(" {w}"))
                            .unwrap_or_default()
                    )
                },
            );
            t.row(vec![
                j.id.to_string(),
                j.queue.clone(),
                format!("{}/{}", j.attempt, j.max_attempts),
                ms(j.age_ms),
                j.timeout_ms.map_or_else(|| "-".to_owned(), ms),
                now,
                j.poll
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| p.polls.to_string()),
                j.poll
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |p| ms(p.last_poll_ms)),
                child,
                if j.hung { "HUNG" } else { "" }.to_owned(),
            ]);
        }
        out.push_str(&t.render());
    }
    if !r.holds.is_empty() {
        let mut t = Table::new(&[
            ("HELD", Align::Left),
            ("FOR", Align::Right),
            ("JOB", Align::Right),
            ("ACQUIRED AT", Align::Left),
        ]);
        for h in &r.holds {
            t.row(vec![
                h.resource.clone(),
                ms(h.held_ms),
                h.job.map_or_else(|| "-".to_owned(), |j| j.to_string()),
                h.location.clone(),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    if !r.watchdog {
        out.push_str(
            "\n(the watchdog is off on this server: no poll details; [watchdog] enabled = false)\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dump_table_says_what_each_job_does() {
        let r: DumpRecord = serde_json::from_value(serde_json::json!({
            "watchdog": true,
            "holds": [{"resource": "db", "location": "src/jobs.rs:12:9", "job": 7, "queue": "q", "held_ms": 6000}],
            "jobs": [
                {"id": 7, "queue": "reports", "kind": "command", "attempt": 1, "max_attempts": 3,
                 "launched_at": null, "age_ms": 12000, "timeout_ms": 60000, "warn_after_ms": 10000, "hung": true,
                 "poll": {"state": "waiting", "in_poll_ms": null, "idle_ms": 11900, "polls": 3, "last_poll_ms": 0},
                 "child": {"pid": 4242, "state": "S (sleeping)", "wchan": "pipe_write"}},
                {"id": 8, "queue": "sms", "kind": "http", "attempt": 2, "max_attempts": 3,
                 "launched_at": null, "age_ms": 900, "timeout_ms": null, "warn_after_ms": null, "hung": false,
                 "poll": {"state": "in_poll", "in_poll_ms": 700, "idle_ms": null, "polls": 1, "last_poll_ms": 0},
                 "child": null}
            ]
        }))
        .unwrap();
        let text = dump_text(&r);
        assert!(text.contains("4242 S (sleeping) pipe_write"), "{text}");
        assert!(text.contains("waiting 11s"), "{text}");
        assert!(text.contains("in a poll for 700ms"), "{text}");
        assert!(text.contains("HUNG"), "{text}");
        assert!(text.contains("src/jobs.rs:12:9"), "{text}");
    }
}
