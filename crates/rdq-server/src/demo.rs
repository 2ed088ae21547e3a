//! `rdq demo`: a real server on a temporary database, with one queue, `sms`,
//! that sends "SMS" through a built-in fake gateway.
//!
//! The gateway accepts 20 messages a second (bursts of 5); called faster, it
//! answers `429 Too Many Requests` with `Retry-After: 1`, and now and then it
//! fails with a 500. The queue sends 15 a second, under the limit, so jobs
//! flow; raise its rate (`rdq rate sms 40/s`) to see the gateway push back
//! and the whole queue hold for the `Retry-After`. Failures are retried.
//!
//! Messages arrive in waves ([`LOAD`]): a backlog at start, then, every
//! 25 s, a rush of 25 a second for 10 s (above what the gateway allows) and
//! 4 a second in between; 12.4 a second on average, which the queue's 15 a
//! second keeps up with. The load stops by itself after 30 minutes; the
//! server runs until Ctrl-C.
//!
//! Each message is also published on the topic `sms.queued`, which two
//! consumers take: `receipts`, fast (5 ms a message, width 4), and
//! `analytics`, slow (60 ms a message, width 1: about 16 a second). In a
//! rush `analytics` falls behind and catches up in the calm that follows:
//! `rdq consumers --watch` shows its depth, catch-up estimate and status.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use rdq::{Rate, RateLimiter};
use rdq_store::{JobSpec, PutOptions};

use rdq::hub::{Overflow, Pattern};

use crate::config::{Config, ConsumerConfig, ExecutorConfig, QueueConfig};
use crate::consumers::Message;
use crate::executor::http::HttpSpec;
use crate::serve::ServeError;

/// What the fake gateway allows: this many messages a second ...
pub const GATEWAY_PER_SECOND: u32 = 20;

/// ... and this many back to back.
const GATEWAY_BURST: u32 = 5;

/// How fast the demo queue sends, at start.
pub const QUEUE_PER_SECOND: u32 = 15;

/// The topic every demo message is also published on.
pub const TOPIC: &str = "sms.queued";

/// How often the feeder puts what the load says is due.
const FEED_EVERY: Duration = Duration::from_millis(100);

/// The messages the demo puts: a backlog at start, then waves, each a rush
/// followed by a calm, repeated until `stop_after`. Messages are put
/// every 100 ms, spread evenly over each second, so a rate is a rate and
/// not a burst once a second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Put at once at start.
    pub backlog: u64,
    /// Messages a second during a rush.
    pub rush_per_second: u64,
    /// How long a rush lasts.
    pub rush: Duration,
    /// Messages a second between rushes.
    pub calm_per_second: u64,
    /// How long the calm between two rushes lasts.
    pub calm: Duration,
    /// Nothing more is put after this long (the demo must not fill a disk).
    pub stop_after: Duration,
}

/// The demo's load: a rush of 25 a second (above the gateway's 20) for 10 s
/// of every 25 s, 4 a second in between: 12.4 a second on average, under
/// the queue's 15. For 30 minutes.
pub const LOAD: Load = Load {
    backlog: 150,
    rush_per_second: 25,
    rush: Duration::from_secs(10),
    calm_per_second: 4,
    calm: Duration::from_secs(15),
    stop_after: Duration::from_secs(30 * 60),
};

impl Load {
    /// One rush and one calm.
    pub fn period(&self) -> Duration {
        self.rush + self.calm
    }

    /// Messages put in one period.
    fn per_period(&self) -> u64 {
        per(self.rush_per_second, self.rush) + per(self.calm_per_second, self.calm)
    }

    /// How many messages are due by `elapsed` after the start, the backlog
    /// included.
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let elapsed = elapsed.min(self.stop_after);
        let period = self.period().as_millis().max(1);
        let cycles = u64::try_from(elapsed.as_millis() / period).unwrap_or(u64::MAX);
        let within =
            Duration::from_millis(u64::try_from(elapsed.as_millis() % period).unwrap_or_default());
        let partial = if within < self.rush {
            per(self.rush_per_second, within)
        } else {
            per(self.rush_per_second, self.rush) + per(self.calm_per_second, within - self.rush)
        };
        self.backlog
            .saturating_add(cycles.saturating_mul(self.per_period()))
            .saturating_add(partial)
    }

    /// Whether `elapsed` after the start falls in a rush.
    pub fn in_rush(&self, elapsed: Duration) -> bool {
        elapsed < self.stop_after
            && elapsed.as_millis() % self.period().as_millis().max(1) < self.rush.as_millis()
    }
}

/// Messages at `rate` a second over `d`, rounded down.
fn per(rate: u64, d: Duration) -> u64 {
    u64::try_from(u128::from(rate) * d.as_millis() / 1000).unwrap_or(u64::MAX)
}

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

/// How long a consumer's "work" takes: `?ms=N`.
#[derive(Debug, serde::Deserialize)]
struct Work {
    ms: u64,
}

/// The demo consumers' target: answers 200 after `ms` milliseconds (at
/// most a second).
async fn work(Query(w): Query<Work>) -> StatusCode {
    tokio::time::sleep(Duration::from_millis(w.ms.min(1000))).await;
    StatusCode::OK
}

/// Starts the fake gateway on a free loopback port; returns its URL.
async fn start_gateway() -> Result<String, ServeError> {
    let gw = Arc::new(Gateway {
        limiter: Mutex::new(RateLimiter::new(
            Rate::per_second(GATEWAY_PER_SECOND)
                .with_burst(GATEWAY_BURST)
                .expect("a burst of 5 is valid"),
        )),
        calls: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/send", post(send))
        .route("/work", post(work))
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

fn message(i: u64) -> (serde_json::Value, i32) {
    let urgent = i.is_multiple_of(25);
    let args = serde_json::json!({
        "to": format!("+1555{:07}", 100 + i),
        "text": if urgent { format!("Your code is {:06}", (i * 7919) % 1_000_000) } else { format!("Weekly news #{i}") },
    });
    (args, if urgent { -1 } else { 5 })
}

async fn put(app: &crate::app::App, from: u64, count: u64) -> u64 {
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
        Ok(done) => done.len() as u64,
        Err(e) => {
            tracing::warn!(error = %e, "the demo could not put jobs");
            0
        }
    }
}

/// Puts the load's messages as they come due, until it stops or the server
/// shuts down.
async fn feed(app: Arc<crate::app::App>, load: Load) {
    let start = tokio::time::Instant::now();
    let total = load.due_by(load.stop_after);
    let mut next = put(&app, 0, load.backlog).await;
    let mut tick = tokio::time::interval(FEED_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rushing = false;
    while next < total {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.shutting_down() => return,
        }
        let elapsed = start.elapsed();
        if load.in_rush(elapsed) != rushing {
            rushing = !rushing;
            if rushing {
                println!(
                    "[{:>4}s] a rush: {} messages a second for {:?} (the gateway allows {GATEWAY_PER_SECOND})",
                    elapsed.as_secs(),
                    load.rush_per_second,
                    load.rush
                );
            }
        }
        let due = load.due_by(elapsed);
        if due > next {
            // A put that fails is not retried: the demo just sends fewer.
            let count = due - next;
            put(&app, next, count).await;
            for i in next..next + count {
                let message = Message {
                    body: serde_json::json!({ "sms": i }),
                    priority: 0,
                    key: None,
                };
                if let Err(e) = crate::consumers::publish(&app, TOPIC, message).await {
                    tracing::warn!(error = %e, "the demo could not publish");
                }
            }
            next += count;
        }
    }
    println!(
        "[{:>4}s] the demo has put all {total} messages; the server runs on until Ctrl-C",
        start.elapsed().as_secs()
    );
}

/// A running demo: the server, its fake gateway and the feeder.
#[derive(Debug)]
pub struct Demo {
    /// The server.
    pub running: crate::serve::Running,
    /// The fake gateway's URL.
    pub gateway: String,
    feeder: tokio::task::JoinHandle<()>,
    dir: TempDir,
}

impl std::fmt::Debug for TempDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TempDir").field(&self.0).finish()
    }
}

impl Demo {
    /// The directory of the demo's database (removed when the demo ends).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir.0
    }

    /// Stops the feeder and the server, as Ctrl-C would.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.feeder.abort();
        let result = self.running.stop().await;
        drop(self.dir);
        result
    }
}

/// Starts the demo: a fresh database in a temporary directory, the fake
/// gateway, the server with queue `sms`, and the feeder putting `load`.
pub async fn start(listen: std::net::SocketAddr, load: Load) -> Result<Demo, ServeError> {
    let dir = std::env::temp_dir().join(format!(
        "rdq-demo-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ServeError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let dir = TempDir(dir);
    let gateway = start_gateway().await?;
    let work_url = gateway.replace("/send", "/work");
    let failed = |e: String| ServeError::Failed(e);
    let consumer = |name: &str, width: usize, ms: u64| -> Result<ConsumerConfig, ServeError> {
        Ok(ConsumerConfig {
            queue: QueueConfig {
                name: name.into(),
                width,
                rate: None,
                timeout: Some(Duration::from_secs(10)),
                warn_after: None,
                max_attempts: 3,
                backoff: rdq_store::Backoff::exponential(
                    Duration::from_millis(200),
                    Duration::from_secs(5),
                )
                .map_err(|e| failed(e.to_string()))?,
                retention: Duration::from_secs(3600),
                paused: false,
                executor: ExecutorConfig::Http(HttpSpec {
                    url: format!("{work_url}?ms={ms}"),
                    headers: Default::default(),
                }),
            },
            subscribe: vec![Pattern::parse("sms.*").map_err(|e| failed(e.to_string()))?],
            topics: vec![TOPIC.into()],
            bound: 5_000,
            overflow: Overflow::DropOldest,
            status_window: Duration::from_secs(20),
        })
    };
    let config = Config {
        listen,
        db: dir.0.join("demo.db"),
        shutdown_grace: Duration::from_secs(5),
        queues: vec![QueueConfig {
            name: "sms".into(),
            width: 4,
            rate: Some(Rate::per_second(QUEUE_PER_SECOND)),
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
        topics: vec![TOPIC.into()],
        consumers: vec![consumer("receipts", 4, 5)?, consumer("analytics", 1, 60)?],
        ..Config::default()
    };
    let running = crate::serve::start(config).await?;
    let feeder = tokio::spawn(feed(running.app.clone(), load));
    Ok(Demo {
        running,
        gateway,
        feeder,
        dir,
    })
}

/// Runs the demo until Ctrl-C.
pub async fn run(listen: std::net::SocketAddr) -> Result<(), ServeError> {
    let demo = start(listen, LOAD).await?;
    let base = format!("http://{}", demo.running.addr);
    let gateway = &demo.gateway;
    println!(
        "\nrdq demo is running: queue `sms` sends \"SMS\" to a fake gateway at {gateway}\n\
         that allows {GATEWAY_PER_SECOND} a second (429 + Retry-After when faster); the queue sends {QUEUE_PER_SECOND} a second.\n\
         Messages come in waves: {} at start, then a rush of {} a second for {:?} of every {:?}\n\
         and {} a second in between, for {} minutes. Look at:\n\n\
         \x20 {base}/api/v1/queues/sms            the queue: width, rate, counts, throttle\n\
         \x20 {base}/api/v1/jobs?queue=sms        its jobs, newest first\n\
         \x20 {base}/api/v1/events                live changes (server-sent events)\n\
         \x20 {base}/metrics                      Prometheus metrics\n\
         \x20 {base}/api/v1/consumers             topic `{TOPIC}`'s consumers: receipts (fast), analytics (slow)\n\
         \x20 {base}/api/v1/dump                  what every underway job is doing (hung after 5 s)\n\
         \x20 {base}/api/v1/stalls                what blocked the server's runtime, if anything\n\
         \x20 {base}/api/v1/openapi.json          the API\n\n\
         or, in another terminal (rdq <verb> --server {base}):\n\
         \x20 rdq queues                 rdq jobs --queue sms        rdq pause sms / rdq resume sms\n\
         \x20 rdq consumers --watch      (analytics falls behind in a rush, catches up after)\n\
         \x20 rdq width sms 8; rdq rate sms 40/s   (faster than the gateway allows: in a rush,\n\
         \x20                                       watch it throttle the queue: HELD UNTIL)\n\n\
         Ctrl-C stops it; the database lives in {} until then.\n",
        LOAD.backlog,
        LOAD.rush_per_second,
        LOAD.rush,
        LOAD.period(),
        LOAD.calm_per_second,
        LOAD.stop_after.as_secs() / 60,
        demo.dir().display()
    );
    let Demo {
        running,
        feeder,
        dir,
        ..
    } = demo;
    let result = running.wait().await;
    feeder.abort();
    drop(dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_rushes_above_the_gateway_and_averages_below_the_queue() {
        let second = Duration::from_secs(1);
        let per_second: Vec<u64> = (0..LOAD.stop_after.as_secs() + 5)
            .map(|s| {
                let t = second * u32::try_from(s).unwrap();
                LOAD.due_by(t + second) - LOAD.due_by(t)
            })
            .collect();
        let period = usize::try_from(LOAD.period().as_secs()).unwrap();
        for (n, cycle) in per_second[..per_second.len() - 5]
            .chunks(period)
            .enumerate()
        {
            assert!(
                cycle.iter().any(|&n| n > u64::from(GATEWAY_PER_SECOND)),
                "cycle {n} goes above the gateway's limit: {cycle:?}"
            );
            let mean = cycle.iter().sum::<u64>() as f64 / cycle.len() as f64;
            assert!(
                mean < f64::from(QUEUE_PER_SECOND),
                "cycle {n} averages {mean}/s, under the queue's rate"
            );
        }
        assert!(
            per_second[per_second.len() - 5..].iter().all(|&n| n == 0),
            "it stops by itself"
        );
        assert_eq!(LOAD.due_by(Duration::ZERO), LOAD.backlog);
        assert_eq!(
            LOAD.due_by(LOAD.stop_after * 2),
            LOAD.due_by(LOAD.stop_after)
        );
        assert_eq!(
            LOAD.due_by(LOAD.stop_after),
            LOAD.backlog + 72 * (250 + 60),
            "30 minutes of 25 s waves"
        );
    }

    #[test]
    fn a_load_is_spread_within_each_second() {
        let t = Duration::from_millis(500);
        assert_eq!(LOAD.due_by(t) - LOAD.backlog, 12, "half a second of a rush");
        assert!(LOAD.in_rush(Duration::from_secs(9)));
        assert!(!LOAD.in_rush(Duration::from_secs(10)));
        assert!(LOAD.in_rush(LOAD.period()));
        assert!(!LOAD.in_rush(LOAD.stop_after));
    }
}
