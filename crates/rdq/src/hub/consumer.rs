//! One consumer: its subscriptions, its queue, its bound and overflow
//! policy, and the meter the hub keeps for it.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backlog::{Backlog, Finish, Gauges};
use super::error::HubError;
use super::pattern::Pattern;
use super::Hub;
use crate::queue::job::{Job, Outcome};
use crate::{DispatchQueue, Rate, WeakDispatchQueue};

/// What a consumer's job function is given: the message and where it came
/// from.
#[derive(Clone, Debug)]
pub struct Delivery<M> {
    /// The topic it was published on.
    pub topic: Arc<str>,
    /// The message (one clone per consumer).
    pub message: M,
    /// When it was published; `published_at.elapsed()` at the start of the
    /// job is its queue wait.
    pub published_at: Instant,
}

/// A consumer's queue: jobs are deliveries, errors are their text.
pub type ConsumerQueue<M> = DispatchQueue<Delivery<M>, (), String>;

/// What happens to a message published to a consumer whose queue holds
/// `bound` waiting messages already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Refuse the new message: `publish` reports this consumer as rejected
    /// (the others still get it). The default.
    RejectNewest,
    /// Drop the oldest waiting message to take the new one; counted in
    /// `dropped`.
    DropOldest,
    /// Make the publisher wait for room, up to this long; then reject.
    Block(Duration),
}

impl Overflow {
    /// `reject_newest`, `drop_oldest` or `block`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Overflow::RejectNewest => "reject_newest",
            Overflow::DropOldest => "drop_oldest",
            Overflow::Block(_) => "block",
        }
    }
}

/// Wakes publishers blocked on a full queue; costs one load when nobody
/// waits.
#[derive(Debug, Default)]
pub(crate) struct Room {
    pub(crate) waiters: AtomicUsize,
    pub(crate) notify: Notify,
}

impl Room {
    fn wake(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
        }
    }
}

pub(crate) struct Consumer<M>
where
    M: Clone + Send + Sync + 'static,
{
    pub(crate) name: Arc<str>,
    pub(crate) patterns: Vec<Pattern>,
    pub(crate) queue: ConsumerQueue<M>,
    pub(crate) bound: usize,
    pub(crate) overflow: Overflow,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) room: Arc<Room>,
}

impl<M> Consumer<M>
where
    M: Clone + Send + Sync + 'static,
{
    pub(crate) fn wants(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    pub(crate) fn gauges(&self) -> Gauges {
        let (underway, pending) = self.queue.size();
        let now = Instant::now().into_std();
        Gauges {
            depth: pending as u64,
            in_flight: underway as u64,
            width: self.queue.width() as u64,
            paused: self.queue.is_paused(),
            oldest_pending_age: self
                .queue
                .oldest_pending()
                .map(|s| now.saturating_duration_since(s.mono)),
        }
    }

    pub(crate) fn observe_depth(&self) {
        self.backlog
            .observe_depth_with(|| self.queue.size().1 as u64);
    }
}

/// Declares a consumer; see [`Hub::consumer`].
#[must_use = "a consumer exists once `start` is called"]
pub struct ConsumerBuilder<'h, M>
where
    M: Clone + Send + Sync + 'static,
{
    hub: &'h Hub<M>,
    name: String,
    patterns: Vec<String>,
    width: usize,
    rate: Option<Rate>,
    timeout: Option<Duration>,
    bound: usize,
    overflow: Overflow,
}

impl<M> std::fmt::Debug for ConsumerBuilder<'_, M>
where
    M: Clone + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("name", &self.name)
            .field("patterns", &self.patterns)
            .field("width", &self.width)
            .field("bound", &self.bound)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl<'h, M> ConsumerBuilder<'h, M>
where
    M: Clone + Send + Sync + 'static,
{
    pub(crate) fn new(hub: &'h Hub<M>, name: String) -> Self {
        ConsumerBuilder {
            hub,
            name,
            patterns: Vec::new(),
            width: 1,
            rate: None,
            timeout: None,
            bound: 10_000,
            overflow: Overflow::RejectNewest,
        }
    }

    /// Subscribes to a topic (`orders.created`) or a prefix (`orders.*`).
    /// Checked by [`start`](ConsumerBuilder::start).
    pub fn subscribe(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// How many of its jobs may run at once (default 1).
    pub fn width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    /// Spaces its job launches (default: no limit).
    pub fn rate(mut self, rate: Rate) -> Self {
        self.rate = Some(rate);
        self
    }

    /// Cuts off a job that runs longer (default: none).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The most messages that may wait (default 10,000; 0 is refused).
    pub fn bound(mut self, bound: usize) -> Self {
        self.bound = bound;
        self
    }

    /// What a publish to a full queue does (default
    /// [`Overflow::RejectNewest`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Starts the consumer with its job function and returns its queue (to
    /// change its width or rate, pause or resume it while it runs).
    ///
    /// An `Err` or a panic from the job function is counted, and the
    /// consumer goes on with the next message.
    ///
    /// Fails, starting nothing, on an empty or duplicate name, no
    /// subscription, a pattern that is neither a topic nor a topic with a
    /// trailing `.*`, or a bound of 0.
    pub fn start<F, Fut, E>(self, job: F) -> Result<ConsumerQueue<M>, HubError>
    where
        F: Fn(Delivery<M>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        if self.name.trim().is_empty() {
            return Err(HubError::EmptyName);
        }
        if self.patterns.is_empty() {
            return Err(HubError::NoSubscription(self.name));
        }
        if self.bound == 0 {
            return Err(HubError::ZeroBound(self.name));
        }
        let patterns = self
            .patterns
            .iter()
            .map(|p| Pattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| HubError::Pattern(self.name.clone(), e))?;

        let backlog = Arc::new(Backlog::new(self.hub.backlog_config().clone()));
        let room = Arc::new(Room::default());
        let me: Arc<OnceLock<WeakDispatchQueue<Delivery<M>, (), String>>> =
            Arc::new(OnceLock::new());

        let run = {
            let (backlog, room, me) = (backlog.clone(), room.clone(), me.clone());
            move |delivery: Delivery<M>| {
                backlog.started(delivery.published_at.elapsed());
                if let Some(q) = me.get().and_then(WeakDispatchQueue::upgrade) {
                    backlog.observe_depth_with(|| q.size().1 as u64);
                }
                room.wake();
                let work = job(delivery);
                async move { work.await.map_err(|e| e.to_string()) }
            }
        };
        let hook = {
            let (backlog, room) = (backlog.clone(), room.clone());
            move |job: &Job<Delivery<M>, (), String>| {
                let how = match job.outcome {
                    Outcome::Dropped => {
                        backlog.dropped(1);
                        return;
                    }
                    Outcome::Ok(()) => Finish::Ok,
                    Outcome::Failed(_) => Finish::Failed,
                    Outcome::TimedOut => Finish::TimedOut,
                    Outcome::Panicked(_) => Finish::Panicked,
                    Outcome::Cancelled => Finish::Cancelled,
                    Outcome::NotRun => Finish::NotRun,
                };
                backlog.finished(how, job.run_time());
                if job.launched_at.is_none() {
                    room.wake();
                }
            }
        };
        let mut builder = DispatchQueue::builder(run)
            .name(self.name.clone())
            .width(self.width)
            .max_pending(self.bound)
            .drop_oldest(self.overflow == Overflow::DropOldest)
            .on_finish(hook);
        if let Some(rate) = self.rate {
            builder = builder.rate(rate);
        }
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        let queue = builder.build_on(self.hub.runtime().clone());
        let _ = me.set(queue.downgrade());

        let consumer = Consumer {
            name: self.name.into(),
            patterns,
            queue: queue.clone(),
            bound: self.bound,
            overflow: self.overflow,
            backlog,
            room,
        };
        self.hub.add(consumer)?;
        Ok(queue)
    }
}
