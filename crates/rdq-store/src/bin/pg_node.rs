//! One node of the PostgreSQL cluster tests (`tests/it/cluster.rs`); not a
//! tool.
//!
//! ```text
//! rdq-pg-node <database url> <schema> <node name> [--width N] [--lease-ms MS]
//! ```
//!
//! It connects a [`PgStore`] to `schema` (server clock), runs the queue
//! `cluster` with the given cluster-wide width (default 5) and lease
//! (default 3,000 ms) under the node name, and prints `ready` once it runs.
//! It runs until a signal ends it (SIGTERM or SIGKILL; the tests also stop
//! it with SIGSTOP): its jobs are then another node's to rescue.
//!
//! Each run of a job of kind `work` (args `{"ms": M, "first_ms": F}`):
//!
//! 1. increments the probe: `probe_node.cur` for this node and `probe.cur`
//!    (keeping `probe.max`), in one statement, so that `probe.max` is the
//!    most runs ever at once across the cluster (the test subtracts a killed
//!    node's `probe_node.cur` from `probe.cur`: its runs died with it);
//! 2. records the run in `runs (job_id, attempt, node)`;
//! 3. sleeps `F` ms on its first attempt if given, else `M` ms;
//! 4. decrements the probe and returns the node's name (the job's result).
//!
//! The test creates those tables in the schema before starting nodes.
//! Bad arguments: one line on stderr and exit code 2.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rdq_store::postgres::{PgOptions, PgStore};
use rdq_store::{DurableQueue, HandlerError, JobContext};
use serde::Deserialize;

/// The queue every node runs.
const QUEUE: &str = "cluster";

#[derive(Deserialize)]
struct Work {
    ms: u64,
    #[serde(default)]
    first_ms: Option<u64>,
}

struct Args {
    url: String,
    schema: String,
    node: String,
    width: usize,
    lease: Duration,
}

fn parse() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let usage =
        "usage: rdq-pg-node <database url> <schema> <node name> [--width N] [--lease-ms MS]";
    let url = args.next().ok_or(usage)?;
    let schema = args.next().ok_or(usage)?;
    let node = args.next().ok_or(usage)?;
    let mut parsed = Args {
        url,
        schema,
        node,
        width: 5,
        lease: Duration::from_millis(3000),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|e| format!("{flag} {v}: not a whole number: {e}"))
        };
        match flag.as_str() {
            "--width" => parsed.width = number(&value)? as usize,
            "--lease-ms" => parsed.lease = Duration::from_millis(number(&value)?),
            other => return Err(format!("unknown flag {other}; {usage}")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rdq-pg-node: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdq-pg-node: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let store = PgStore::connect(
        &args.url,
        PgOptions {
            schema: args.schema.clone(),
            application_name: args.node.clone(),
            ..PgOptions::default()
        },
    )
    .await
    .map_err(|e| format!("connect: {e}"))?;
    // Named after the node, as the store's sessions are: the test waits
    // until a killed node has no session left before it takes the node's
    // runs off the probe (a statement sent before the kill may still run).
    let mut config: tokio_postgres::Config =
        args.url.parse().map_err(|e| format!("database url: {e}"))?;
    config.application_name(&args.node);
    let (probe, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("probe connection: {e}"))?;
    tokio::spawn(connection);
    let probe = Arc::new(probe);
    let s = &args.schema;
    probe
        .execute(
            &format!(
                "INSERT INTO {s}.probe_node (node, cur) VALUES ($1, 0) ON CONFLICT DO NOTHING"
            ),
            &[&args.node],
        )
        .await
        .map_err(|e| format!("probe row: {e}"))?;
    let up = Arc::new(format!(
        "WITH n AS (UPDATE {s}.probe_node SET cur = cur + 1 WHERE node = $1) \
         UPDATE {s}.probe SET cur = cur + 1, max = greatest(max, cur + 1) WHERE id = 1"
    ));
    let down = Arc::new(format!(
        "WITH n AS (UPDATE {s}.probe_node SET cur = cur - 1 WHERE node = $1) \
         UPDATE {s}.probe SET cur = cur - 1 WHERE id = 1"
    ));
    let record = Arc::new(format!(
        "INSERT INTO {s}.runs (job_id, attempt, node) VALUES ($1, $2, $3)"
    ));
    let node = args.node.clone();
    let queue = DurableQueue::builder(store.clone(), QUEUE)
        .width(args.width)
        .lease(args.lease)
        .node(args.node.clone())
        .max_attempts(100)
        .handler("work", move |work: Work, ctx: JobContext| {
            let (probe, up, down, record, node) = (
                probe.clone(),
                up.clone(),
                down.clone(),
                record.clone(),
                node.clone(),
            );
            async move {
                let fail = |e: tokio_postgres::Error| HandlerError::msg(format!("probe: {e}"));
                probe.execute(up.as_str(), &[&node]).await.map_err(fail)?;
                let attempt = i32::try_from(ctx.attempt).unwrap_or(i32::MAX);
                probe
                    .execute(record.as_str(), &[&ctx.id.0, &attempt, &node])
                    .await
                    .map_err(fail)?;
                let ms = match work.first_ms {
                    Some(first) if ctx.attempt == 1 => first,
                    _ => work.ms,
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                probe.execute(down.as_str(), &[&node]).await.map_err(fail)?;
                Ok::<_, HandlerError>(node)
            }
        })
        .build()
        .await
        .map_err(|e| format!("queue: {e}"))?;
    println!("ready");
    // Until a signal ends the process.
    std::future::pending::<()>().await;
    drop(queue);
    Ok(())
}
