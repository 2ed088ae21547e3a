//! The running server's state: its store, its queues and their executors,
//! metrics, and the event stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdq_store::{DurableQueue, JobContext, StopReport, Store as _};
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use rdq::hub::{Backlog, BacklogConfig};

use crate::config::{Config, ExecutorConfig, QueueConfig};
use crate::consumers::ServerConsumer;
use crate::executor::command::{Children, CommandExecutor};
use crate::executor::http::HttpExecutor;
use crate::limits;
use crate::metrics::Metrics;
use crate::store::AnyStore;

/// A queue as the server runs it.
pub type Queue = DurableQueue<AnyStore>;

/// The default timeout of an http queue that sets none: a request must not
/// wait forever.
const HTTP_DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// One of the server's queues.
#[derive(Debug)]
pub struct ServerQueue {
    /// The durable queue.
    pub queue: Queue,
    /// Its configuration (as declared; runtime changes live in `queue`).
    pub config: QueueConfig,
}

/// A change, as the event stream (`GET /api/v1/events`) sends it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A job was put, or one of its attempts ended, or it was cancelled,
    /// retried or reprioritized.
    Job {
        /// The job.
        id: i64,
        /// Its queue.
        queue: String,
        /// What happened: `queued`, `scheduled`, `succeeded`, `failed`,
        /// `dead`, `cancelled`, `snoozed`, `released`, `retried`,
        /// `reprioritized`, `cancel_requested` (cancelled while underway on
        /// another node, which ends it).
        event: String,
        /// The attempt it concerns (0 before the first).
        attempt: u32,
    },
    /// A queue's settings changed.
    Queue {
        /// The queue.
        queue: String,
        /// `width`, `rate`, `paused`, `resumed` or `timeout`.
        change: String,
    },
}

/// The server.
#[derive(Debug)]
pub struct App {
    /// The store all queues share.
    pub store: AnyStore,
    /// The queues, by name, consumers' queues included.
    pub queues: BTreeMap<String, ServerQueue>,
    /// The declared topics, in declaration order.
    pub topics: Vec<String>,
    /// The consumers, in declaration order.
    pub consumers: Vec<ServerConsumer>,
    /// The API's bearer token, if any.
    pub token: Option<String>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Live changes, for `GET /api/v1/events`.
    pub events: broadcast::Sender<Event>,
    /// Largest request body.
    pub max_body: usize,
    /// The stall watchdog, unless `[watchdog] enabled = false` (or it could
    /// not start).
    pub watchdog: Option<rdq_watchdog::Watchdog>,
    /// Command jobs' children, for the dump.
    pub children: Arc<Children>,
    /// Becomes `true` when shutdown begins: long polls and event streams end.
    shutdown: tokio::sync::watch::Sender<bool>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

impl App {
    /// Starts every configured queue on `store`, as node `node` (see
    /// [`Config::node`]).
    pub async fn start(
        config: &Config,
        store: impl Into<AnyStore>,
        node: &str,
    ) -> Result<Arc<App>, StartError> {
        let store = store.into();
        let metrics = Arc::new(Metrics::new());
        let (events, _) = broadcast::channel(1024);
        let watchdog = crate::watch::start(&config.watchdog);
        let children = Arc::new(Children::default());
        let mut queues = BTreeMap::new();
        let shared = Shared {
            store: &store,
            node,
            lease: config.lease,
            metrics: &metrics,
            events: &events,
            children: &children,
            watch: watchdog.is_some(),
        };
        for q in &config.queues {
            let queue = build_queue(q, &shared, &[], None).await?;
            queues.insert(
                q.name.clone(),
                ServerQueue {
                    queue,
                    config: q.clone(),
                },
            );
        }
        let mut consumers = Vec::with_capacity(config.consumers.len());
        for c in &config.consumers {
            let backlog = Arc::new(Backlog::new(
                BacklogConfig::default().window(c.status_window),
            ));
            let queue = build_queue(&c.queue, &shared, &c.topics, Some(backlog.clone())).await?;
            queues.insert(
                c.queue.name.clone(),
                ServerQueue {
                    queue: queue.clone(),
                    config: c.queue.clone(),
                },
            );
            consumers.push(ServerConsumer {
                config: c.clone(),
                queue,
                backlog,
                blocked: Default::default(),
            });
        }
        let app = Arc::new(App {
            store,
            queues,
            topics: config.topics.clone(),
            consumers,
            token: config.token.clone(),
            metrics,
            events,
            max_body: config.max_body,
            watchdog,
            children,
            shutdown: tokio::sync::watch::Sender::new(false),
        });
        crate::watch::spawn_hung_reporter(&app);
        crate::consumers::spawn_samplers(&app);
        Ok(app)
    }

    /// Whether shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Tells long polls and event streams to end: the server is stopping.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub async fn shutting_down(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Sends an event to whoever listens (nobody is fine).
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Stops every queue: no more launches, underway jobs get `grace` to
    /// finish, the rest go back to pending; then closes the store.
    pub async fn shutdown(&self, grace: Duration) -> Result<StopReport, StartError> {
        let stops = self.queues.values().map(|q| q.queue.stop(grace));
        let mut total = StopReport::default();
        for report in futures_util::future::join_all(stops).await {
            let report = report.map_err(|e| StartError(format!("stopping a queue failed: {e}")))?;
            total.released += report.released;
            total.interrupted += report.interrupted;
        }
        self.store
            .close()
            .await
            .map_err(|e| StartError(format!("closing the store failed: {e}")))?;
        Ok(total)
    }
}

/// What every queue of the server shares.
struct Shared<'a> {
    store: &'a AnyStore,
    node: &'a str,
    lease: Duration,
    metrics: &'a Arc<Metrics>,
    events: &'a broadcast::Sender<Event>,
    children: &'a Arc<Children>,
    watch: bool,
}

/// Builds a queue; a consumer's (with `backlog`) also runs jobs of each of
/// `topics` as kinds, and feeds its backlog meter as attempts end.
async fn build_queue(
    q: &QueueConfig,
    shared: &Shared<'_>,
    topics: &[String],
    backlog: Option<Arc<Backlog>>,
) -> Result<Queue, StartError> {
    let (m, e) = (shared.metrics.clone(), shared.events.clone());
    let (watch, children) = (shared.watch, shared.children);
    let mut builder = DurableQueue::builder(shared.store.clone(), q.name.clone())
        .node(shared.node)
        .lease(shared.lease)
        .width(q.width)
        .max_attempts(q.max_attempts)
        .backoff(q.backoff)
        .retention(q.retention)
        .paused(q.paused)
        .watch(watch)
        .on_attempt_end(move |end| {
            m.attempt_ended(&end.job.queue, end.outcome, end.wait, end.run);
            if let Some(b) = &backlog {
                let (finish, ran) = crate::consumers::finish_of(end.outcome);
                let run = end.run.filter(|_| ran);
                if run.is_some() {
                    b.started(end.wait);
                }
                b.finished(finish, run);
            }
            let _ = e.send(Event::Job {
                id: end.job.id.0,
                queue: end.job.queue.clone(),
                event: end.outcome.to_owned(),
                attempt: end.job.attempt,
            });
        });
    if let Some(rate) = q.rate {
        builder = builder.rate(rate);
    }
    let fail = |e: String| StartError(format!("queue {}: {e}", q.name));
    let mut declared_timeout = None;
    builder = match &q.executor {
        ExecutorConfig::Http(spec) => {
            declared_timeout = Some(q.timeout.unwrap_or(HTTP_DEFAULT_TIMEOUT));
            builder = builder.timeout(q.timeout.unwrap_or(HTTP_DEFAULT_TIMEOUT));
            let executor = HttpExecutor::new(spec).map_err(fail)?;
            for kind in std::iter::once("http").chain(topics.iter().map(String::as_str)) {
                let executor = executor.clone();
                builder = builder.handler(kind, move |args: serde_json::Value, ctx: JobContext| {
                    let executor = executor.clone();
                    async move { executor.run(&args, &ctx).await }
                });
            }
            builder
        }
        ExecutorConfig::Command(spec) => {
            // The executor times out first (SIGTERM, grace, SIGKILL to the
            // group); the queue's timeout is only a backstop above it.
            if let Some(t) = spec.timeout {
                declared_timeout = Some(t + spec.grace + Duration::from_secs(5));
                builder = builder.timeout(t + spec.grace + Duration::from_secs(5));
            }
            let executor = Arc::new(
                CommandExecutor::new(spec.clone())
                    .map_err(fail)?
                    .with_children(children.clone()),
            );
            for kind in std::iter::once("command").chain(topics.iter().map(String::as_str)) {
                let executor = executor.clone();
                builder = builder.handler(kind, move |args: serde_json::Value, ctx: JobContext| {
                    let executor = executor.clone();
                    async move { executor.run(&args, &ctx).await }
                });
            }
            builder
        }
    };
    let queue = builder.build().await.map_err(|e| fail(e.to_string()))?;
    repair_settings(&queue, q, declared_timeout)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(queue)
}

/// Settings a queue kept from an earlier run may be outside today's ranges
/// ([`crate::limits`]): older versions took a queue timeout of 0 through the
/// API (every job then timed out at once) and any width. Each such setting
/// goes back to what the configuration declares, with a warning.
async fn repair_settings(
    queue: &Queue,
    q: &QueueConfig,
    declared_timeout: Option<Duration>,
) -> Result<(), rdq_store::DurableError> {
    let kept = queue.settings();
    let warn = |setting: &str, problem: String| {
        tracing::warn!(queue = %q.name, "the saved {setting} is out of range ({problem}); using the configured one");
    };
    if let Err(e) = limits::WIDTH.check("width", kept.width as u64) {
        warn("width", e);
        queue.set_width(q.width).await?;
    }
    let declared_ms = declared_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    if let Some(ms) = kept.timeout_ms.filter(|ms| Some(*ms) != declared_ms) {
        if let Err(e) = limits::TIMEOUT.check_ms("timeout_ms", ms) {
            warn("timeout", e);
            queue.set_timeout(declared_timeout).await?;
        }
    }
    if let Some(r) = kept.rate {
        let body = crate::api::types::RateBody {
            count: r.count,
            period_ms: r.period_ms,
            burst: r.burst,
        };
        if let Err(e) = body.to_rate() {
            warn("rate", e);
            queue.set_rate(q.rate).await?;
        }
    }
    Ok(())
}
