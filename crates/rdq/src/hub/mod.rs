//! The hub: topic fan-out into per-consumer queues, with each consumer's
//! backlog measured. The model is documented on [`Hub`].

mod backlog;
mod consumer;
mod error;
mod histogram;
mod pattern;
mod status;

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

pub use backlog::{Backlog, BacklogConfig, BacklogSnapshot, Episode, Finish, Gauges, Processed};
use consumer::Consumer;
pub use consumer::{ConsumerBuilder, ConsumerQueue, Delivery, Overflow};
pub use error::{HubError, PublishError, Reason, Rejection};
pub use histogram::{Histogram, EPISODE_BUCKETS, TIME_BUCKETS};
pub use pattern::{check_topic, Pattern, TopicError};
pub use status::Status;

use crate::StopMode;

/// Routes each message published on a topic to every consumer subscribed to
/// it, into that consumer's own [`DispatchQueue`](crate::DispatchQueue), and
/// measures each consumer's backlog.
///
/// ```
/// use std::time::Duration;
/// use rdq::{Hub, Overflow};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub: Hub<String> = Hub::new();
/// hub.consumer("audit")
///     .subscribe("orders.*")
///     .width(8)
///     .start(|d| async move {
///         // write d.message to the audit log
///         Ok::<_, std::io::Error>(())
///     })
///     .unwrap();
/// hub.consumer("billing")
///     .subscribe("orders.paid")
///     .bound(1_000)
///     .overflow(Overflow::Block(Duration::from_secs(1)))
///     .start(|d| async move { Ok::<_, std::io::Error>(()) })
///     .unwrap();
///
/// let sent = hub.publish("orders.paid", "order 17".to_string()).await.unwrap();
/// assert_eq!(sent.delivered.len(), 2);
/// for c in hub.snapshot() {
///     println!("{}: depth {}, catch-up {:?}, {}", c.name, c.backlog.depth,
///              c.backlog.catch_up, c.backlog.status);
/// }
/// # }
/// ```
///
/// # Isolation
///
/// Each consumer has its own queue, width, rate and timeout. Publishing
/// puts one job into each subscribed consumer's queue and returns: it never
/// waits for a consumer's job to run, so a slow consumer delays only its
/// own backlog (benchmark B7). A job function that fails or panics is
/// counted, and the consumer goes on.
///
/// # Subscriptions
///
/// A consumer subscribes to exact topics (`orders.paid`) or prefixes
/// (`orders.*`, which matches `orders.paid` and `orders.eu.paid` but not
/// `orders` or `ordersx`); see [`Pattern`]. A message matching several
/// patterns of one consumer reaches it once.
///
/// # Bounds and overflow
///
/// No queue is unbounded: each consumer has a bound on waiting messages
/// (default 10,000) and an [`Overflow`] policy for a publish that finds it
/// full: reject the new message (the publish returns
/// [`PublishError::Rejected`] naming the consumer, and the other consumers
/// still get it), drop the oldest waiting one (counted in `dropped`), or
/// block the publisher until there is room, up to a timeout.
///
/// # Backlog
///
/// Per consumer, continuously: depth, in flight, width, the oldest
/// message's age; counters (enqueued, processed by outcome, rejected,
/// dropped) that only grow; queue-wait and processing-time histograms; the
/// time to catch up, estimated and observed; and a [`Status`] over a
/// sliding window. [`snapshot`](Hub::snapshot) returns it all. The
/// measures are those of [`Backlog`], whose docs say how each is computed.
/// A background task samples every consumer once a period (1 s by default)
/// for the status window.
pub struct Hub<M>
where
    M: Clone + Send + Sync + 'static,
{
    inner: Arc<Inner<M>>,
}

impl<M> Clone for Hub<M>
where
    M: Clone + Send + Sync + 'static,
{
    fn clone(&self) -> Self {
        Hub {
            inner: self.inner.clone(),
        }
    }
}

impl<M> std::fmt::Debug for Hub<M>
where
    M: Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<Arc<str>> = self.consumers().iter().map(|c| c.name.clone()).collect();
        f.debug_struct("Hub").field("consumers", &names).finish()
    }
}

struct Inner<M>
where
    M: Clone + Send + Sync + 'static,
{
    consumers: RwLock<Arc<[Arc<Consumer<M>>]>>,
    config: BacklogConfig,
    runtime: tokio::runtime::Handle,
}

/// One consumer, as [`Hub::snapshot`] describes it.
#[derive(Clone, Debug)]
pub struct ConsumerSnapshot {
    /// Its name.
    pub name: Arc<str>,
    /// What it subscribes to.
    pub patterns: Vec<String>,
    /// The most messages that may wait.
    pub bound: usize,
    /// What a publish to a full queue does.
    pub overflow: Overflow,
    /// Its backlog.
    pub backlog: BacklogSnapshot,
}

/// What a successful [`publish`](Hub::publish) did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// The consumers that took the message, in declaration order. Empty
    /// when no consumer subscribes to the topic.
    pub delivered: Vec<Arc<str>>,
}

impl<M> Default for Hub<M>
where
    M: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Hub::new()
    }
}

impl<M> Hub<M>
where
    M: Clone + Send + Sync + 'static,
{
    /// A hub with the default [`BacklogConfig`], on the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime; see [`with_config_on`](Hub::with_config_on).
    pub fn new() -> Self {
        Hub::with_config(BacklogConfig::default())
    }

    /// A hub whose consumers are measured with `config`, on the current
    /// runtime.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn with_config(config: BacklogConfig) -> Self {
        Hub::with_config_on(config, tokio::runtime::Handle::current())
    }

    /// A hub on the given runtime: consumers' jobs and the sampler run
    /// there.
    pub fn with_config_on(config: BacklogConfig, runtime: tokio::runtime::Handle) -> Self {
        let inner = Arc::new(Inner {
            consumers: RwLock::new(Arc::from(Vec::new())),
            config,
            runtime: runtime.clone(),
        });
        runtime.spawn(sample(Arc::downgrade(&inner)));
        Hub { inner }
    }

    pub(crate) fn backlog_config(&self) -> &BacklogConfig {
        &self.inner.config
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// Declares a consumer named `name`; finish with
    /// [`start`](ConsumerBuilder::start).
    pub fn consumer(&self, name: impl Into<String>) -> ConsumerBuilder<'_, M> {
        ConsumerBuilder::new(self, name.into())
    }

    pub(crate) fn add(&self, consumer: Consumer<M>) -> Result<(), HubError> {
        let mut list = self
            .inner
            .consumers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if list.iter().any(|c| c.name == consumer.name) {
            return Err(HubError::Duplicate(consumer.name.to_string()));
        }
        let mut next: Vec<Arc<Consumer<M>>> = list.iter().cloned().collect();
        next.push(Arc::new(consumer));
        *list = Arc::from(next);
        Ok(())
    }

    fn consumers(&self) -> Arc<[Arc<Consumer<M>>]> {
        self.inner
            .consumers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A consumer's queue, to change its width or rate, or pause it.
    pub fn queue(&self, consumer: &str) -> Option<ConsumerQueue<M>> {
        self.consumers()
            .iter()
            .find(|c| &*c.name == consumer)
            .map(|c| c.queue.clone())
    }

    /// The names of the consumers subscribed to `topic`.
    pub fn subscribers(&self, topic: &str) -> Vec<Arc<str>> {
        self.consumers()
            .iter()
            .filter(|c| c.wants(topic))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Puts `message` into the queue of every consumer subscribed to
    /// `topic`.
    ///
    /// Returns at once unless a subscribed consumer is full and its policy
    /// is [`Overflow::Block`]; then it waits for room, up to that
    /// consumer's timeout (counted from the call). Consumers that refuse
    /// the message are named in [`PublishError::Rejected`], beside those
    /// that took it. A topic nobody subscribes to delivers nowhere, which
    /// is not an error.
    pub async fn publish(&self, topic: &str, message: M) -> Result<Published, PublishError> {
        check_topic(topic)?;
        let start = Instant::now();
        let topic: Arc<str> = Arc::from(topic);
        let consumers = self.consumers();
        let mut delivered = Vec::new();
        let mut rejected = Vec::new();
        let mut blocked = Vec::new();
        for c in consumers.iter().filter(|c| c.wants(&topic)) {
            let delivery = Delivery {
                topic: topic.clone(),
                message: message.clone(),
                published_at: Instant::now(),
            };
            match c.queue.put(delivery, 0) {
                Ok(_) => {
                    c.backlog.enqueued(1);
                    c.observe_depth();
                    delivered.push(c.name.clone());
                }
                Err(crate::PutError::Full(delivery, _)) => match c.overflow {
                    Overflow::Block(timeout) => blocked.push((c, delivery, start + timeout)),
                    _ => {
                        c.backlog.rejected(1);
                        rejected.push(Rejection {
                            consumer: c.name.clone(),
                            reason: Reason::Full { bound: c.bound },
                        });
                    }
                },
                Err(crate::PutError::Stopped(_)) => {
                    c.backlog.rejected(1);
                    rejected.push(Rejection {
                        consumer: c.name.clone(),
                        reason: Reason::Stopped,
                    });
                }
            }
        }
        for (c, delivery, deadline) in blocked {
            match put_blocking(c, delivery, deadline).await {
                Ok(()) => delivered.push(c.name.clone()),
                Err(reason) => {
                    c.backlog.rejected(1);
                    let reason = match reason {
                        Reason::TimedOut { .. } => Reason::TimedOut {
                            waited: start.elapsed(),
                        },
                        other => other,
                    };
                    rejected.push(Rejection {
                        consumer: c.name.clone(),
                        reason,
                    });
                }
            }
        }
        if rejected.is_empty() {
            Ok(Published { delivered })
        } else {
            Err(PublishError::Rejected {
                delivered,
                rejected,
            })
        }
    }

    /// Every consumer's backlog, in declaration order.
    pub fn snapshot(&self) -> Vec<ConsumerSnapshot> {
        self.consumers()
            .iter()
            .map(|c| ConsumerSnapshot {
                name: c.name.clone(),
                patterns: c.patterns.iter().map(|p| p.to_string()).collect(),
                bound: c.bound,
                overflow: c.overflow,
                backlog: c.backlog.snapshot(c.gauges()),
            })
            .collect()
    }

    /// Stops every consumer (see [`DispatchQueue::stop`]) and returns, per
    /// consumer, the messages that never ran, in launch order. Later
    /// publishes are rejected with [`Reason::Stopped`].
    ///
    /// [`DispatchQueue::stop`]: crate::DispatchQueue::stop
    pub async fn stop(&self, mode: StopMode) -> Vec<(Arc<str>, Vec<Delivery<M>>)> {
        let mut out = Vec::new();
        for c in self.consumers().iter() {
            let unrun = c.queue.stop(mode).await;
            out.push((c.name.clone(), unrun.into_iter().map(|j| j.arg).collect()));
        }
        out
    }
}

/// Waits for room in a full consumer's queue, up to `deadline`.
async fn put_blocking<M>(
    c: &Consumer<M>,
    mut delivery: Delivery<M>,
    deadline: Instant,
) -> Result<(), Reason>
where
    M: Clone + Send + Sync + 'static,
{
    struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
    c.room
        .waiters
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let _waiting = Waiting(&c.room.waiters);
    loop {
        let notified = c.room.notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        match c.queue.put(delivery, 0) {
            Ok(_) => {
                c.backlog.enqueued(1);
                c.observe_depth();
                return Ok(());
            }
            Err(crate::PutError::Full(back, _)) => delivery = back,
            Err(crate::PutError::Stopped(_)) => return Err(Reason::Stopped),
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(Reason::TimedOut {
                waited: Duration::ZERO,
            });
        }
    }
}

/// Samples every consumer once a period, until the hub is gone.
async fn sample<M>(inner: Weak<Inner<M>>)
where
    M: Clone + Send + Sync + 'static,
{
    let period = match inner.upgrade() {
        Some(inner) => inner.config.sample_period(),
        None => return,
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let consumers = inner
            .consumers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        drop(inner);
        for c in consumers.iter() {
            let (underway, pending) = c.queue.size();
            c.backlog.sample(pending as u64, underway as u64);
        }
    }
}
