//! Building a durable queue: declared settings, handlers, policies; `build`
//! loads the stored settings and starts the queue's tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdq::{DispatchQueue, Rate};
use serde::Serialize;
use tokio::sync::watch;

use super::completer::{ClaimTable, Tracker};
use super::handler::{erase, HandlerError, JobContext, Registry};
use super::options::{
    millis, AttemptEnd, AttemptHook, DurableError, KindOptions, QueueSettings, RateSetting,
};
use super::{Claimed, DurableQueue, Inner};
use crate::clock::Clock;
use crate::retry::Backoff;
use crate::store::{QueueRecord, Store};

/// Builds a [`DurableQueue`]; from [`DurableQueue::builder`].
#[must_use = "call .build().await to get a queue"]
pub struct Builder<S> {
    pub(super) store: S,
    pub(super) name: String,
    pub(super) declared: QueueSettings,
    pub(super) registry: Registry,
    pub(super) max_attempts: u32,
    pub(super) backoff: Backoff,
    pub(super) kinds: HashMap<String, KindOptions>,
    pub(super) retention: Duration,
    pub(super) clock: Clock,
    pub(super) lease: Duration,
    pub(super) node: Option<String>,
    pub(super) on_attempt_end: Option<AttemptHook>,
    pub(super) watch: bool,
}

impl<S> std::fmt::Debug for Builder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("declared", &self.declared)
            .field("handlers", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S: Store> Builder<S> {
    /// Most jobs underway at once. Default 1.
    pub fn width(mut self, width: usize) -> Self {
        self.declared.width = width;
        self
    }

    /// Limits the launch rate.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.declared.rate = Some(RateSetting::of(rate));
        self
    }

    /// Default timeout of each attempt.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.declared.timeout_ms = Some(millis(timeout));
        self
    }

    /// Whether the stall watchdog watches this queue's jobs, reported under
    /// their stored ids (when `rdq` is built with its `watchdog` feature;
    /// default on). See `rdq::Builder::watch`.
    pub fn watch(mut self, on: bool) -> Self {
        self.watch = on;
        self
    }

    /// Starts paused (if no runtime change says otherwise).
    pub fn paused(mut self, paused: bool) -> Self {
        self.declared.paused = paused;
        self
    }

    /// Attempts per job, unless the job sets its own. Default 20.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Delay before each retry. Default: see [`Backoff`].
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Retry policy for jobs of `kind` (attempts, backoff), overriding the
    /// queue's; a job's own `max_attempts` still wins.
    pub fn kind_options(mut self, kind: impl Into<String>, options: KindOptions) -> Self {
        self.kinds.insert(kind.into(), options);
        self
    }

    /// Calls `hook` when each attempt ends, with its verdict and timings
    /// (for metrics and event streams). It runs on the thread that decided
    /// the outcome: keep it quick and never block in it.
    pub fn on_attempt_end(
        mut self,
        hook: impl Fn(&AttemptEnd<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.on_attempt_end = Some(Arc::new(hook));
        self
    }

    /// How long finished jobs are kept before pruning. Default 7 days.
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Where time comes from; see [`Clock`].
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// How long a claim holds without a heartbeat, on a store that several
    /// nodes share. Default 30 s. The queue renews its jobs' leases every
    /// third of it; a node that cannot renew them for a lease (minus a
    /// margin) gives them up, and every node rescues jobs whose lease
    /// expired every half of it: a dead node's jobs run elsewhere within
    /// about 1.5 leases. At least 300 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(300));
        self
    }

    /// This node's name, as leases record it and PostgreSQL shows it.
    /// Default: host name, process id and a random suffix. Give each node
    /// (process) its own.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// Registers the handler for jobs of `kind`. Arguments are deserialized
    /// from JSON into `T`; the `Ok` value is kept as the job's result.
    pub fn handler<T, O, F, Fut>(mut self, kind: impl Into<String>, handler: F) -> Self
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(T, JobContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<O, HandlerError>> + Send + 'static,
    {
        self.registry.handlers.insert(kind.into(), erase(handler));
        self
    }

    /// Loads persisted settings, starts the producer and maintenance tasks,
    /// and returns the queue. Needs a Tokio runtime.
    pub async fn build(self) -> Result<DurableQueue<S>, DurableError> {
        let store = Arc::new(self.store);
        let declared_json = serde_json::to_value(&self.declared).expect("settings serialize");
        let effective = match store.load_queue(&self.name).await? {
            Some(rec) if rec.declared == declared_json => {
                serde_json::from_value(rec.settings).unwrap_or_else(|_| self.declared.clone())
            }
            _ => self.declared.clone(),
        };
        store
            .save_queue(QueueRecord {
                name: self.name.clone(),
                declared: declared_json,
                settings: serde_json::to_value(&effective).expect("settings serialize"),
            })
            .await?;

        let tracker = Arc::new(Tracker {
            queue: self.name.clone(),
            store: store.clone(),
            clock: self.clock.clone(),
            backoff: self.backoff,
            kinds: self.kinds.clone(),
            stopping: AtomicBool::new(false),
            claims: Mutex::new(ClaimTable::default()),
            wake: store.work_signal(&self.name),
            due_hint: AtomicI64::new(i64::MIN), // check at start
            hold_until: AtomicI64::new(i64::MIN),
            hold_stored: AtomicI64::new(i64::MIN),
            released: Default::default(),
            interrupted: Default::default(),
            lost: AtomicU64::new(0),
            on_attempt_end: self.on_attempt_end.clone(),
            rounds: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
            claim_nanos: AtomicU64::new(0),
            idle_after: watch::Sender::new(0),
        });
        let registry = self.registry.clone();
        let hook_tracker = tracker.clone();
        let mut memory = DispatchQueue::builder(move |job: Claimed| registry.run(&job))
            .name(self.name.clone())
            .width(effective.width)
            .paused(effective.paused)
            .watch(self.watch)
            .on_finish(move |job| hook_tracker.finished(job));
        if let Some(ms) = effective.timeout_ms {
            memory = memory.timeout(Duration::from_millis(ms));
        }
        let inner = Arc::new(Inner {
            name: self.name,
            store,
            memory: memory.build(),
            tracker,
            registry: self.registry,
            settings: Mutex::new(effective),
            settings_io: tokio::sync::Mutex::new(()),
            declared: self.declared,
            max_attempts: self.max_attempts,
            retention: self.retention,
            node: self.node.unwrap_or_else(node_name),
            lease: self.lease,
            stopped: AtomicBool::new(false),
            tasks: Mutex::new(super::Tasks::default()),
        });
        super::Tasks::start(&inner);
        Ok(DurableQueue { inner })
    }
}

pub(super) fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}
