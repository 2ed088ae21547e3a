//! `rdq publish` and `rdq consumers`: publish a message on a topic, and see
//! each consumer's backlog.

use std::io::Read as _;
use std::time::Duration;

use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{decode, Client};
use super::output::{pretty, print, span, Align, Table};
use super::{CliError, Connection};
use crate::api::topics::{ConsumerView, PublishReply};

/// How long a publish may take: a consumer with `overflow = "block"` can
/// hold it for its `block_timeout` (at most a minute).
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(90);

/// `rdq publish TOPIC JSON`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// A declared topic.
    pub topic: String,
    /// The message: any JSON, or `-` to read it from stdin.
    #[arg(allow_negative_numbers = true)]
    pub message: String,
    /// The jobs' priority (lower runs first).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Idempotency key: a consumer with a live job of this key gets no
    /// second one.
    #[arg(long)]
    pub key: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// `rdq consumers [NAME]`.
#[derive(Debug, Args)]
pub struct ConsumersArgs {
    /// Only this consumer.
    pub name: Option<String>,
    /// Redraw every second until interrupted.
    #[arg(long)]
    pub watch: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

/// The publish body from the arguments; a message that is not JSON is a
/// usage error.
pub fn publish_body(a: &PublishArgs) -> Result<Value, CliError> {
    let text = if a.message == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Usage(format!("cannot read the message from stdin: {e}")))?;
        text
    } else {
        a.message.clone()
    };
    let message: Value = serde_json::from_str(&text).map_err(|e| {
        CliError::Usage(format!(
            "the message is not JSON ({e}); quote a string as '\"text\"', or give an object such as '{{\"order\": 17}}'"
        ))
    })?;
    let mut body = json!({ "message": message });
    if let Some(p) = a.priority {
        body["priority"] = p.into();
    }
    if let Some(k) = &a.key {
        body["key"] = k.clone().into();
    }
    Ok(body)
}

/// `rdq publish`: prints where the message went; fails (exit 1) when a
/// consumer was full.
pub async fn publish(client: &Client, a: &PublishArgs) -> Result<(), CliError> {
    let body = publish_body(a)?;
    let url = client.url(&["topics", &a.topic, "messages"], &[]);
    let reply = client
        .send_accepting(Method::POST, url, Some(&body), PUBLISH_TIMEOUT, &[429])
        .await?;
    if a.conn.json {
        print(&pretty(&reply.body))?;
    }
    let r: PublishReply = decode(&reply.body)?;
    if !a.conn.json {
        let mut table = Table::new(&[
            ("CONSUMER", Align::Left),
            ("RESULT", Align::Left),
            ("JOB", Align::Right),
        ]);
        for d in &r.delivered {
            let mut result = if d.existing { "existing" } else { "delivered" }.to_owned();
            if r.dropped.contains(&d.consumer) {
                result.push_str(" (dropped its oldest)");
            }
            table.row(vec![d.consumer.clone(), result, d.job.to_string()]);
        }
        for x in &r.rejected {
            table.row(vec![
                x.consumer.clone(),
                format!("rejected: {} (bound {})", x.reason, x.bound),
                "-".into(),
            ]);
        }
        if table.is_empty() {
            eprintln!("rdq: no consumer subscribes to {}", a.topic);
        } else {
            print(&table.render())?;
        }
    }
    match r.error {
        Some(e) => Err(CliError::Server {
            status: reply.status,
            code: e.code,
            message: e.message,
        }),
        None => Ok(()),
    }
}

/// `rdq consumers`: one row per consumer, once or every second.
pub async fn consumers(client: &Client, a: &ConsumersArgs) -> Result<(), CliError> {
    if !a.watch {
        return consumers_once(client, a, false).await;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // One listener for the whole watch: an interrupt while a table is being
    // fetched is not lost.
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            _ = &mut interrupted => return Ok(()),
            _ = tick.tick() => {
                tokio::select! {
                    done = consumers_once(client, a, true) => done?,
                    _ = &mut interrupted => return Ok(()),
                }
            }
        }
    }
}

async fn consumers_once(client: &Client, a: &ConsumersArgs, redraw: bool) -> Result<(), CliError> {
    let (reply, list): (Value, Vec<ConsumerView>) = match &a.name {
        Some(name) => {
            let reply = client.get(&["consumers", name], &[]).await?;
            let one: ConsumerView = decode(&reply)?;
            (reply, vec![one])
        }
        None => {
            let reply = client.get(&["consumers"], &[]).await?;
            let all = decode(reply.get("consumers").unwrap_or(&Value::Null))?;
            (reply, all)
        }
    };
    let text = if a.conn.json {
        pretty(&reply)
    } else if list.is_empty() {
        "no consumers; declare them in rdq.toml as [consumers.NAME]".to_owned()
    } else {
        consumers_table(&list).render()
    };
    if redraw && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        // Clear the screen and go home, then draw.
        print(&format!("\x1b[2J\x1b[H{text}"))
    } else {
        print(&text)
    }
}

/// The table `rdq consumers` prints: NAME DEPTH RUNNING/WIDTH OLDEST
/// CATCH-UP STATUS.
pub fn consumers_table(list: &[ConsumerView]) -> Table {
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("DEPTH", Align::Right),
        ("RUNNING/WIDTH", Align::Right),
        ("OLDEST", Align::Right),
        ("CATCH-UP", Align::Right),
        ("STATUS", Align::Left),
    ]);
    let seconds = |s: f64| span(Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX));
    for c in list {
        let mut running = format!("{}/{}", c.in_flight, c.width);
        if c.paused {
            running.push_str(" paused");
        }
        table.row(vec![
            c.name.clone(),
            c.depth.to_string(),
            running,
            c.oldest_pending_age_seconds.map_or("-".into(), seconds),
            match c.catch_up_seconds {
                Some(_) if c.depth == 0 => "-".into(),
                Some(s) => seconds(s),
                None => "never".into(),
            },
            c.status.to_ascii_uppercase(),
        ]);
    }
    table
}
