//! `rdq jobs`, `job`, `cancel`, `prio`, `retry`: find, show and change jobs.

use clap::Args;
use rdq_store::JobState;
use serde_json::{json, Value};

use super::client::{decode, Client, JobRecord};
use super::output::{self, moment, pretty, print, relative_text, shorten, span, Align, Table};
use super::{CliError, Connection};

/// The largest page the server gives.
const PAGE_MAX: usize = 1000;

/// Errors in the jobs table are cut to this many characters.
const ERROR_WIDTH: usize = 48;

/// `rdq jobs`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// Only jobs of this queue.
    #[arg(long, short)]
    pub queue: Option<String>,
    /// Only jobs in this state: scheduled, pending, underway, succeeded,
    /// failed, dead or cancelled.
    #[arg(long, short, value_parser = state_arg)]
    pub state: Option<String>,
    /// At most this many, newest first (1 to 1000; the server's default is
    /// 100).
    #[arg(long, short = 'n', conflicts_with = "all", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub limit: Option<u16>,
    /// Every matching job, following the server's pages.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// A verb that takes one job id.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The job's id.
    pub id: i64,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// `rdq prio ID PRIORITY`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct PrioArgs {
    /// The job's id.
    pub id: i64,
    /// Its new priority; lower runs first, negative allowed.
    pub priority: i32,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// Checks a `--state` value against the states a job can be in.
fn state_arg(text: &str) -> Result<String, String> {
    text.parse::<JobState>()
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}

/// `rdq jobs`: one page, or with `--all` every page, as a table.
pub async fn list(client: &Client, a: &JobsArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    if let Some(q) = &a.queue {
        query.push(("queue", q.clone()));
    }
    if let Some(s) = &a.state {
        query.push(("state", s.clone()));
    }
    let limit = if a.all {
        Some(PAGE_MAX)
    } else {
        a.limit.map(usize::from)
    };
    if let Some(n) = limit {
        query.push(("limit", n.to_string()));
    }
    let mut jobs: Vec<Value> = Vec::new();
    let mut next: Option<i64>;
    loop {
        let page = client.get(&["jobs"], &query).await?;
        if let Some(list) = page.get("jobs").and_then(Value::as_array) {
            jobs.extend(list.iter().cloned());
        }
        next = page.get("next").and_then(Value::as_i64);
        match next {
            Some(before) if a.all => {
                query.retain(|(k, _)| *k != "before");
                query.push(("before", before.to_string()));
            }
            _ => break,
        }
    }
    if a.conn.json {
        return print(&pretty(&json!({ "jobs": jobs, "next": next })));
    }
    let records: Vec<JobRecord> = decode(&Value::Array(jobs))?;
    if records.is_empty() {
        eprintln!("rdq: no jobs match");
        return Ok(());
    }
    print(&jobs_table(&records).render())?;
    if next.is_some() {
        eprintln!("rdq: there are more; use --all, or a larger --limit");
    }
    Ok(())
}

/// The table `rdq jobs` prints.
pub fn jobs_table(jobs: &[JobRecord]) -> Table {
    let mut table = Table::new(&[
        ("ID", Align::Right),
        ("QUEUE", Align::Left),
        ("STATE", Align::Left),
        ("PRIO", Align::Right),
        ("ATTEMPT", Align::Right),
        ("QUEUED", Align::Left),
        ("ERROR", Align::Left),
    ]);
    for j in jobs {
        table.row(vec![
            j.id.to_string(),
            j.queue.clone(),
            j.state.clone(),
            j.priority.to_string(),
            format!("{}/{}", j.attempt, j.max_attempts),
            relative_text(&j.queued_at),
            j.error
                .as_deref()
                .map(|e| shorten(e, ERROR_WIDTH))
                .unwrap_or_default(),
        ]);
    }
    table
}

/// `rdq job ID`: every field.
pub async fn show(client: &Client, a: &IdArgs) -> Result<(), CliError> {
    let job = client.get(&["jobs", &a.id.to_string()], &[]).await?;
    if a.conn.json {
        return print(&pretty(&job));
    }
    print(&job_details(&decode(&job)?))
}

/// A job in full, one field a line, args and result as indented JSON.
pub fn job_details(j: &JobRecord) -> String {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut t = Table::new(&[("", Align::Left), ("", Align::Left)]);
    let mut field = |name: &str, value: String| t.row(vec![name.to_owned(), value]);
    field("id", j.id.to_string());
    field("queue", j.queue.clone());
    field("kind", j.kind.clone());
    field("state", j.state.clone());
    field("priority", j.priority.to_string());
    field("attempt", format!("{} of {}", j.attempt, j.max_attempts));
    field("key", dash(j.key.clone()));
    field(
        "timeout",
        dash(
            j.timeout_ms
                .map(|ms| span(std::time::Duration::from_millis(ms))),
        ),
    );
    field("queued", moment(Some(&j.queued_at)));
    field("run at", moment(j.run_at.as_deref()));
    field("launched", moment(j.launched_at.as_deref()));
    field("finished", moment(j.finished_at.as_deref()));
    field("error", dash(j.error.as_deref().map(output::one_line)));
    // The header row of this table is empty: drop it.
    let rendered = t.render();
    let mut out = rendered
        .split_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_owned();
    for (name, value) in [("args", Some(&j.args)), ("result", j.result.as_ref())] {
        match value {
            Some(v) => {
                out.push_str(name);
                out.push('\n');
                for line in pretty(v).lines() {
                    out.push_str("  ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
            None => out.push_str(&format!("{name:<9} -\n")),
        }
    }
    out
}

/// `rdq cancel ID`.
pub async fn cancel(client: &Client, a: &IdArgs) -> Result<(), CliError> {
    let job = client
        .post(&["jobs", &a.id.to_string(), "cancel"], None)
        .await?;
    changed(&a.conn, &job, |j| match j.state.as_str() {
        // 202: recorded; the node running it ends it.
        "underway" => format!(
            "job {}: cancel requested; the node running it ends it (rdq wait {} tells when)",
            j.id, j.id
        ),
        state => format!("job {}: {state}", j.id),
    })
}

/// `rdq prio ID PRIORITY`.
pub async fn prio(client: &Client, a: &PrioArgs) -> Result<(), CliError> {
    let body = json!({ "priority": a.priority });
    let reply = client
        .post(&["jobs", &a.id.to_string(), "priority"], Some(&body))
        .await?;
    if a.conn.json {
        return print(&pretty(&reply));
    }
    let old = reply.get("old").and_then(Value::as_i64).unwrap_or_default();
    let job: JobRecord = decode(reply.get("job").unwrap_or(&Value::Null))?;
    print(&format!(
        "job {}: priority {old} -> {}\n",
        job.id, job.priority
    ))
}

/// `rdq retry ID`.
pub async fn retry(client: &Client, a: &IdArgs) -> Result<(), CliError> {
    let job = client
        .post(&["jobs", &a.id.to_string(), "retry"], None)
        .await?;
    changed(&a.conn, &job, |j| {
        format!(
            "job {}: {} (attempt {} of {} so far)",
            j.id, j.state, j.attempt, j.max_attempts
        )
    })
}

fn changed(
    conn: &Connection,
    job: &Value,
    line: impl Fn(&JobRecord) -> String,
) -> Result<(), CliError> {
    if conn.json {
        return print(&pretty(job));
    }
    let mut text = line(&decode(job)?);
    text.push('\n');
    print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(error: Option<&str>) -> JobRecord {
        decode(&json!({
            "id": 42, "queue": "sms", "kind": "http", "state": "dead", "priority": -1,
            "attempt": 3, "max_attempts": 3, "args": {"to": "+1555"},
            "run_at": "2000-01-01T00:00:00.000000Z", "queued_at": "2000-01-01T00:00:00.000000Z",
            "launched_at": null, "finished_at": null, "key": null, "timeout_ms": 10000,
            "result": null, "error": error,
        }))
        .unwrap()
    }

    #[test]
    fn the_jobs_table_has_a_row_per_job_with_short_errors() {
        let long = format!("HTTP 500 Internal Server Error: {}", "x".repeat(100));
        let text = jobs_table(&[record(Some(&long)), record(None)]).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("ID  QUEUE  STATE  PRIO  ATTEMPT  QUEUED"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("42  sms    dead     -1      3/3  "),
            "{text}"
        );
        assert!(
            lines[1].contains(" ago  HTTP 500 Internal Server Error: xxx"),
            "{text}"
        );
        assert!(lines[1].ends_with('…'), "{text}");
        assert!(lines[2].ends_with(" ago"), "{text}");
    }

    #[test]
    fn job_details_show_every_field_and_pretty_args() {
        let text = job_details(&record(Some("boom\nbang")));
        assert!(text.starts_with("id        42\nqueue     sms\n"), "{text}");
        assert!(text.contains("\nattempt   3 of 3\n"), "{text}");
        assert!(text.contains("\ntimeout   10s\n"), "{text}");
        assert!(text.contains("\nlaunched  -\n"), "{text}");
        assert!(text.contains("\nerror     boom bang\n"), "{text}");
        assert!(
            text.contains("\nargs\n  {\n    \"to\": \"+1555\"\n  }\nresult    -\n"),
            "{text}"
        );
    }

    #[test]
    fn states_are_checked_before_asking() {
        assert_eq!(state_arg("dead"), Ok("dead".to_owned()));
        assert!(state_arg("asleep")
            .unwrap_err()
            .contains("expected one of scheduled"));
    }
}
