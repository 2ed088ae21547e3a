//! `rdq demo`: a real server on a temporary database, with one queue, `sms`,
//! that sends "SMS" through a built-in fake gateway.
//!
//! The gateway accepts 20 messages a second (bursts of 5); called faster, it
//! answers `429 Too Many Requests` with `Retry-After: 1`, and now and then it
//! fails with a 500. The queue sends 15 a second, under the limit, so jobs
//! flow; raise its rate (`rdq rate sms 40/s`) to see the gateway push back
//! and the whole queue hold for the `Retry-After`. Failures are retried.
//! Jobs keep flowing (a burst at start, then a trickle) until Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use rdq::{Rate, RateLimiter};
use rdq_store::{JobSpec, PutOptions};

use crate::config::{Config, ExecutorConfig, QueueConfig};
use crate::executor::http::HttpSpec;
use crate::serve::ServeError;

/// Messages put at start.
const BURST: usize = 200;

/// Messages put per second afterwards.
const TRICKLE_PER_SECOND: usize = 5;

/// Stop putting after this many (the demo must not fill a disk).
const MOST: usize = 20_000;

struct Gateway {
    limiter: Mutex<RateLimiter>,
    calls: AtomicU64,
}

async fn send(State(gw): State<Arc<Gateway>>, body: axum::body::Bytes) -> impl IntoResponse {
    let n = gw.calls.fetch_add(1, Ordering::Relaxed);
    let allowed = gw
        .limiter
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .try_acquire(tokio::time::Instant::now());
    if allowed.is_err() {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down: at most 20 messages a second",
        )
            .into_response();
    }
    // 20 to 80 ms "to deliver", and 1 call in 50 fails.
    tokio::time::sleep(Duration::from_millis(20 + (n * 37) % 60)).await;
    if n % 50 == 49 {
        return (StatusCode::INTERNAL_SERVER_ERROR, "carrier unreachable").into_response();
    }
    let to = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["args"]["to"].as_str().map(str::to_owned))
        .unwrap_or_default();
    axum::Json(serde_json::json!({ "message_id": format!("msg-{n}"), "to": to })).into_response()
}

/// Starts the fake gateway on a free loopback port; returns its URL.
async fn start_gateway() -> Result<String, ServeError> {
    let gw = Arc::new(Gateway {
        limiter: Mutex::new(RateLimiter::new(
            Rate::per_second(20)
                .with_burst(5)
                .expect("a burst of 5 is valid"),
        )),
        calls: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/send", post(send))
        .with_state(gw);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| ServeError::Failed(format!("cannot start the fake gateway: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Failed(e.to_string()))?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://{addr}/send"))
}

/// A fresh directory for the demo's database, removed at the end.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn message(i: usize) -> (serde_json::Value, i32) {
    let urgent = i.is_multiple_of(25);
    let args = serde_json::json!({
        "to": format!("+1555{:07}", 100 + i),
        "text": if urgent { format!("Your code is {:06}", (i * 7919) % 1_000_000) } else { format!("Weekly news #{i}") },
    });
    (args, if urgent { -1 } else { 5 })
}

async fn put(app: &crate::app::App, from: usize, count: usize) -> usize {
    let Some(q) = app.queues.get("sms") else {
        return 0;
    };
    let jobs: Vec<JobSpec> = (from..from + count)
        .filter_map(|i| {
            let (args, priority) = message(i);
            JobSpec::new(
                "http",
                &args,
                PutOptions::priority(priority).key(format!("demo-{i}")),
            )
            .ok()
        })
        .collect();
    match q.queue.put_many(jobs).await {
        Ok(done) => done.len(),
        Err(e) => {
            tracing::warn!(error = %e, "the demo could not put jobs");
            0
        }
    }
}

/// Runs the demo until Ctrl-C.
pub async fn run(listen: std::net::SocketAddr) -> Result<(), ServeError> {
    let dir = std::env::temp_dir().join(format!("rdq-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ServeError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let dir = TempDir(dir);
    let gateway = start_gateway().await?;
    let config = Config {
        listen,
        db: dir.0.join("demo.db"),
        shutdown_grace: Duration::from_secs(5),
        queues: vec![QueueConfig {
            name: "sms".into(),
            width: 4,
            rate: Some(Rate::per_second(15)),
            timeout: Some(Duration::from_secs(10)),
            warn_after: Some(Duration::from_secs(5)),
            max_attempts: 5,
            backoff: rdq_store::Backoff::exponential(
                Duration::from_millis(500),
                Duration::from_secs(10),
            )
            .map_err(|e| ServeError::Failed(e.to_string()))?,
            retention: Duration::from_secs(3600),
            paused: false,
            executor: ExecutorConfig::Http(HttpSpec {
                url: gateway.clone(),
                headers: Default::default(),
            }),
        }],
        ..Config::default()
    };
    let running = crate::serve::start(config).await?;
    let base = format!("http://{}", running.addr);
    println!(
        "\nrdq demo is running: queue `sms` sends \"SMS\" to a fake gateway at {gateway}\n\
         that allows 20 a second (429 + Retry-After when faster); the queue sends 15 a second. Look at:\n\n\
         \x20 {base}/api/v1/queues/sms            the queue: width, rate, counts, throttle\n\
         \x20 {base}/api/v1/jobs?queue=sms        its jobs, newest first\n\
         \x20 {base}/api/v1/events                live changes (server-sent events)\n\
         \x20 {base}/metrics                      Prometheus metrics\n\
         \x20 {base}/api/v1/dump                 what every underway job is doing (hung after 5 s)\n\
         \x20 {base}/api/v1/stalls               what blocked the server's runtime, if anything\n\
         \x20 {base}/api/v1/openapi.json          the API\n\n\
         or, in another terminal (cargo run --release -- <verb> --server {base}):\n\
         \x20 rdq queues                 rdq jobs --queue sms        rdq pause sms / rdq resume sms\n\
         \x20 rdq rate sms 40/s          (faster than the gateway allows: watch it throttle the queue)\n\n\
         Ctrl-C stops it; the database lives in {} until then.\n",
        dir.0.display()
    );
    let app = running.app.clone();
    let feeder = tokio::spawn(async move {
        let mut next = put(&app, 0, BURST).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while next < MOST {
            tokio::select! {
                _ = tick.tick() => next += put(&app, next, TRICKLE_PER_SECOND).await,
                () = app.shutting_down() => break,
            }
        }
    });
    let result = running.wait().await;
    feeder.abort();
    result
}
