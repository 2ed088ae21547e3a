//! `rdq queues`, `width`, `rate`, `pause`, `resume`: look at queues and
//! steer them. Every change is one `PATCH /api/v1/queues/{name}`, which the
//! server keeps across restarts.

use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::client::{decode, Client, QueueRecord};
use super::output::{self, pretty, print, relative_text, span, Align, Table};
use super::{CliError, Connection};
use crate::config::resolved::parse_rate;

/// `rdq queues`.
#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// A verb that takes one queue.
#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The queue.
    pub queue: String,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// `rdq width QUEUE N`.
#[derive(Debug, Args)]
pub struct WidthArgs {
    /// The queue.
    pub queue: String,
    /// Most jobs underway at once (0 holds every launch).
    pub width: usize,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// `rdq rate QUEUE RATE`.
#[derive(Debug, Args)]
pub struct RateArgs {
    /// The queue.
    pub queue: String,
    /// Launches per period, `COUNT/PERIOD` (`10/s`, `600/min`, `5/2s`), or
    /// `none` for no limit.
    pub rate: String,
    /// Launches allowed back to back (default 1).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: Option<u32>,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// `rdq queues`: one row per queue.
pub async fn list(client: &Client, a: &QueuesArgs) -> Result<(), CliError> {
    let reply = client.get(&["queues"], &[]).await?;
    if a.conn.json {
        return print(&pretty(&reply));
    }
    let queues: Vec<QueueRecord> = decode(reply.get("queues").unwrap_or(&Value::Null))?;
    if queues.is_empty() {
        eprintln!("rdq: the server has no queues; declare them in rdq.toml");
        return Ok(());
    }
    print(&queues_table(&queues).render())
}

/// The table `rdq queues` prints.
pub fn queues_table(queues: &[QueueRecord]) -> Table {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("EXECUTOR", Align::Left),
        ("WIDTH", Align::Right),
        ("RATE", Align::Left),
        ("PAUSED", Align::Left),
        ("PENDING", Align::Right),
        ("UNDERWAY", Align::Right),
        ("SCHED+FAILED", Align::Right),
        ("DEAD", Align::Right),
        ("OLDEST", Align::Left),
        ("HELD UNTIL", Align::Left),
    ]);
    for q in queues {
        table.row(vec![
            q.name.clone(),
            q.executor.clone(),
            q.width.to_string(),
            q.rate.as_ref().map_or_else(|| "-".to_owned(), output::rate),
            if q.paused { "yes" } else { "no" }.to_owned(),
            q.count("pending").to_string(),
            q.count("underway").to_string(),
            (q.count("scheduled") + q.count("failed")).to_string(),
            q.count("dead").to_string(),
            q.oldest_pending_age_seconds
                .filter(|s| s.is_finite() && *s >= 0.0)
                // Whatever the server sent (negative, NaN, huge): no panic.
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .map_or_else(|| "-".to_owned(), span),
            q.held_until
                .as_deref()
                .map_or_else(|| "-".to_owned(), relative_text),
        ]);
    }
    table
}

async fn patch(
    client: &Client,
    conn: &Connection,
    queue: &str,
    body: Value,
    said: &str,
) -> Result<(), CliError> {
    let reply = client.patch(&["queues", queue], &body).await?;
    if conn.json {
        return print(&pretty(&reply));
    }
    let q: QueueRecord = decode(&reply)?;
    print(&format!("{}: {said}\n", q.name))
}

/// `rdq width QUEUE N`.
pub async fn width(client: &Client, a: &WidthArgs) -> Result<(), CliError> {
    let said = format!("width {}", a.width);
    patch(
        client,
        &a.conn,
        &a.queue,
        json!({ "width": a.width }),
        &said,
    )
    .await
}

/// `rdq rate QUEUE RATE [--burst N]`.
pub async fn rate(client: &Client, a: &RateArgs) -> Result<(), CliError> {
    let body = rate_body(&a.rate, a.burst).map_err(CliError::Usage)?;
    let said = match &body {
        Value::Null => "rate none".to_owned(),
        _ => format!("rate {}", output::rate(&decode(&body)?)),
    };
    patch(client, &a.conn, &a.queue, json!({ "rate": body }), &said).await
}

/// The API's rate body for `rdq rate`'s argument: `null` for `none`.
pub fn rate_body(text: &str, burst: Option<u32>) -> Result<Value, String> {
    if text.trim() == "none" {
        if burst.is_some() {
            return Err("--burst needs a rate; `none` has no burst".to_owned());
        }
        return Ok(Value::Null);
    }
    let rate = parse_rate(text, burst).map_err(|e| format!("{e}, or \"none\""))?;
    let period = rate.period();
    if period.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?}: the period must be whole milliseconds"));
    }
    Ok(json!({
        "count": rate.count(),
        "period_ms": u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
        "burst": rate.burst(),
    }))
}

/// `rdq pause QUEUE` (`paused` true) and `rdq resume QUEUE` (false).
pub async fn pause(client: &Client, a: &QueueArgs, paused: bool) -> Result<(), CliError> {
    let said = if paused { "paused" } else { "resumed" };
    patch(client, &a.conn, &a.queue, json!({ "paused": paused }), said).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_become_the_apis_body() {
        assert_eq!(
            rate_body("10/s", None),
            Ok(json!({"count": 10, "period_ms": 1000, "burst": 1}))
        );
        assert_eq!(
            rate_body("600/min", Some(5)),
            Ok(json!({"count": 600, "period_ms": 60000, "burst": 5}))
        );
        assert_eq!(
            rate_body("5/2s", None),
            Ok(json!({"count": 5, "period_ms": 2000, "burst": 1}))
        );
        assert_eq!(rate_body("none", None), Ok(Value::Null));
        assert!(rate_body("none", Some(2))
            .unwrap_err()
            .contains("--burst needs a rate"));
        assert!(rate_body("fast", None)
            .unwrap_err()
            .contains("COUNT/PERIOD"));
        assert!(rate_body("10/parsec", None)
            .unwrap_err()
            .contains("not a duration"));
        assert!(rate_body("0/s", None).is_err());
        assert!(rate_body("1/1500us", None)
            .unwrap_err()
            .contains("whole milliseconds"));
    }

    #[test]
    fn the_queues_table_sums_scheduled_and_failed() {
        let q: QueueRecord = decode(&json!({
            "name": "sms", "executor": "http", "width": 4,
            "rate": {"count": 10, "period_ms": 1000, "burst": 1}, "paused": true, "timeout_ms": null,
            "held_until": null,
            "counts": {"scheduled": 2, "pending": 5, "underway": 4, "succeeded": 9, "failed": 1, "dead": 3, "cancelled": 0},
            "oldest_pending_age_seconds": 12.5,
        }))
        .unwrap();
        let text = queues_table(&[q]).render();
        assert_eq!(
            text,
            "NAME  EXECUTOR  WIDTH  RATE  PAUSED  PENDING  UNDERWAY  SCHED+FAILED  DEAD  OLDEST  HELD UNTIL\n\
             sms   http          4  10/s  yes           5         4             3     3  12s     -\n"
        );
    }
}
