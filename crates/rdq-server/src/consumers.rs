//! Topics and durable consumers: publishing a message writes one durable job
//! per subscribed consumer, in one commit; each consumer's backlog is
//! measured with an [`rdq::hub::Backlog`].
//!
//! A consumer is a durable queue of its own name (see
//! [`ConsumerConfig`]). A message published on topic `T` becomes, in each
//! consumer whose patterns match `T`, a job of kind `T` whose arguments are
//! the message, so the executor sees the topic (`kind`) beside the message
//! (`args`).
//!
//! # Bounds and overflow
//!
//! A consumer's depth is its count of pending jobs, read from the store
//! before the commit (on PostgreSQL: every node's). At its bound:
//!
//! * `reject_newest`: the consumer does not get the message; the publish
//!   names it among the rejected (the others still get it);
//! * `drop_oldest`: it gets the message, and once that is committed, if the
//!   queue is still over its bound, the pending job of its queue put first
//!   is cancelled (counted in `dropped`);
//! * `block`: the publish waits for room (looking again when a job finishes,
//!   or every 50 ms), up to the consumer's `block_timeout`; then the
//!   consumer is rejected. The other consumers' jobs wait for it too: they
//!   are all written in the one commit.
//!
//! Publishers that look at the depth at the same moment all see room, so
//! concurrent publishers can overshoot a bound by their number (at most one
//! message each): the bound is a limit on growth, not an exact cap.
//!
//! # Measures
//!
//! Depth, in flight and the oldest pending job's age come from the store;
//! rates, wait and processing times, episodes and status from this process:
//! `enqueued` on each publish, `started`/`finished` from the queue's attempt
//! hooks, and one sample per second per consumer (see [`spawn_samplers`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rdq::hub::{Backlog, BacklogSnapshot, Finish, Gauges, Overflow};
use rdq_store::{DurableError, JobState, NewJob, Store as _};
use tokio::time::Instant;

use crate::app::{App, Event, Queue};
use crate::config::ConsumerConfig;

/// How often a blocked publish looks at a full consumer's depth again when
/// no job finished meanwhile.
const BLOCK_POLL: Duration = Duration::from_millis(50);

/// One consumer as the server runs it.
#[derive(Debug)]
pub struct ServerConsumer {
    /// Its configuration.
    pub config: ConsumerConfig,
    /// Its queue (also in [`App::queues`] under the same name).
    pub queue: Queue,
    /// Its backlog meter.
    pub backlog: Arc<Backlog>,
    /// Publishes of this process waiting for room in it now (`block`).
    pub blocked: AtomicU64,
}

impl ServerConsumer {
    /// Its name (that of its queue).
    pub fn name(&self) -> &str {
        &self.config.queue.name
    }

    /// Whether it takes messages published on `topic`.
    pub fn wants(&self, topic: &str) -> bool {
        self.config.topics.iter().any(|t| t == topic)
    }

    /// Jobs pending in its queue, on every node.
    async fn depth(&self) -> Result<u64, DurableError> {
        Ok(self.queue.store().pending_count(self.name()).await?)
    }

    /// Its backlog now: gauges from the store, the rest from the meter.
    pub async fn snapshot(&self) -> Result<BacklogSnapshot, DurableError> {
        let counts = self.queue.counts().await?;
        let count = |s| counts.get(&s).copied().unwrap_or(0);
        let now = self.queue.clock().now();
        let oldest = self.queue.oldest_pending().await?.map(|t| now.since(t));
        let settings = self.queue.settings();
        Ok(self.backlog.snapshot(Gauges {
            depth: count(JobState::Pending),
            in_flight: count(JobState::Underway),
            width: settings.width as u64,
            paused: settings.paused,
            oldest_pending_age: oldest,
        }))
    }
}

/// How an attempt's end counts in a consumer's `processed`, and whether its
/// run time is a processing time (only for attempts that ran to a verdict).
pub fn finish_of(outcome: &str) -> (Finish, bool) {
    match outcome {
        "succeeded" => (Finish::Ok, true),
        "failed" | "dead" => (Finish::Failed, true),
        "cancelled" => (Finish::Cancelled, false),
        // snoozed, released, lost: given back, to run again.
        _ => (Finish::NotRun, false),
    }
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct Message {
    /// Any JSON.
    pub body: serde_json::Value,
    /// The jobs' priority (lower runs first).
    pub priority: i32,
    /// An idempotency key for each consumer's job: while a live job of a
    /// consumer has it, that consumer gets no second one.
    pub key: Option<String>,
}

/// A consumer that got the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The consumer.
    pub consumer: String,
    /// Its job.
    pub job: i64,
    /// The job existed already (same key).
    pub existing: bool,
}

/// A consumer that did not get the message: it was full.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The consumer.
    pub consumer: String,
    /// Its bound.
    pub bound: u64,
    /// How long the publish waited for room (`block` only).
    pub waited: Option<Duration>,
}

/// What a publish did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    /// The consumers that got it, in declaration order.
    pub delivered: Vec<Delivered>,
    /// The consumers that were full.
    pub rejected: Vec<Rejected>,
    /// Consumers that dropped their oldest waiting message to take it.
    pub dropped: Vec<String>,
}

/// Publishes `message` on `topic` (a declared topic): one job per
/// subscribed consumer with room, all in one commit; see the
/// [module docs](self) for full consumers. Returns once committed.
pub async fn publish(app: &App, topic: &str, message: Message) -> Result<Published, DurableError> {
    let start = Instant::now();
    let args = serde_json::to_string(&message.body)
        .map_err(|e| DurableError::Store(rdq_store::StoreError::Invalid(e.to_string())))?;
    let mut taking: Vec<(&ServerConsumer, bool)> = Vec::new();
    let mut out = Published::default();
    for c in app.consumers.iter().filter(|c| c.wants(topic)) {
        let depth = c.depth().await?;
        if depth < c.config.bound {
            taking.push((c, false));
            continue;
        }
        match c.config.overflow {
            Overflow::RejectNewest => out.rejected.push(Rejected {
                consumer: c.name().to_owned(),
                bound: c.config.bound,
                waited: None,
            }),
            Overflow::DropOldest => taking.push((c, true)),
            Overflow::Block(timeout) => {
                if room(c, start + timeout).await? {
                    taking.push((c, false));
                } else {
                    out.rejected.push(Rejected {
                        consumer: c.name().to_owned(),
                        bound: c.config.bound,
                        waited: Some(start.elapsed()),
                    });
                }
            }
        }
    }
    let now = rdq_store::Timestamp::from(std::time::SystemTime::now());
    let jobs: Vec<NewJob> = taking
        .iter()
        .map(|(c, _)| NewJob {
            queue: c.name().to_owned(),
            kind: topic.to_owned(),
            args: args.clone(),
            priority: message.priority,
            run_at: None,
            max_attempts: c.config.queue.max_attempts.max(1),
            key: message.key.clone(),
            timeout: None,
        })
        .collect();
    let inserted = if jobs.is_empty() {
        Vec::new()
    } else {
        app.store.insert_many(jobs, now).await?
    };
    for ((c, drop_oldest), ins) in taking.iter().zip(&inserted) {
        if !ins.existing {
            c.backlog.enqueued(1);
            app.emit(Event::Job {
                id: ins.id.0,
                queue: c.name().to_owned(),
                event: "queued".into(),
                attempt: 0,
            });
        }
        out.delivered.push(Delivered {
            consumer: c.name().to_owned(),
            job: ins.id.0,
            existing: ins.existing,
        });
        if *drop_oldest && !ins.existing {
            match drop_oldest_over_bound(c, now).await {
                Ok(Some(id)) => {
                    c.backlog.dropped(1);
                    app.emit(Event::Job {
                        id: id.0,
                        queue: c.name().to_owned(),
                        event: "cancelled".into(),
                        attempt: 0,
                    });
                    out.dropped.push(c.name().to_owned());
                }
                Ok(None) => {}
                // The message is committed: the publish succeeded, and the
                // queue stays one over its bound until the next publish.
                Err(e) => tracing::warn!(
                    consumer = %c.name(),
                    error = %e,
                    "dropping the oldest waiting message failed"
                ),
            }
        }
    }
    for r in &out.rejected {
        if let Some(c) = app.consumers.iter().find(|c| c.name() == r.consumer) {
            c.backlog.rejected(1);
        }
    }
    Ok(out)
}

/// After a commit (so a failed put never costs a message), and only while
/// `c` is still over its bound (claims since the look may have made room):
/// cancels its pending job put first.
async fn drop_oldest_over_bound(
    c: &ServerConsumer,
    now: rdq_store::Timestamp,
) -> Result<Option<rdq_store::JobId>, DurableError> {
    if c.depth().await? <= c.config.bound {
        return Ok(None);
    }
    Ok(c.queue.store().cancel_oldest_pending(c.name(), now).await?)
}

/// Waits until `c` is below its bound (`true`) or `deadline` passes
/// (`false`), looking again whenever a job finishes, or every
/// [`BLOCK_POLL`] (claims, which make room too, send no signal).
async fn room(c: &ServerConsumer, deadline: Instant) -> Result<bool, DurableError> {
    struct Waiting<'a>(&'a AtomicU64);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    c.blocked.fetch_add(1, Ordering::Relaxed);
    let _waiting = Waiting(&c.blocked);
    let mut finished = c.queue.store().finished_events();
    loop {
        if c.depth().await? < c.config.bound {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        let pause = BLOCK_POLL.min(deadline - now);
        tokio::select! {
            _ = finished.recv() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Starts one task per consumer that samples its depth and in-flight count
/// from the store once a sampling period (1 s) and feeds them to its
/// backlog meter (the status window and episodes). The tasks end when the
/// app is dropped or begins shutting down.
pub fn spawn_samplers(app: &Arc<App>) {
    for (i, c) in app.consumers.iter().enumerate() {
        let weak: Weak<App> = Arc::downgrade(app);
        let period = c.backlog.config().sample_period();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                if app.is_shutting_down() {
                    return;
                }
                let c = &app.consumers[i];
                match c.queue.counts().await {
                    Ok(counts) => {
                        let count = |s| counts.get(&s).copied().unwrap_or(0);
                        c.backlog
                            .sample(count(JobState::Pending), count(JobState::Underway));
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %c.name(), error = %e, "sampling the consumer's backlog failed");
                    }
                }
            }
        });
    }
}

/// The consumers subscribed to `topic`, by name.
pub fn subscribers<'a>(app: &'a App, topic: &str) -> Vec<&'a str> {
    app.consumers
        .iter()
        .filter(|c| c.wants(topic))
        .map(|c| c.name())
        .collect()
}
