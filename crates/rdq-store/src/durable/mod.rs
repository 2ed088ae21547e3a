//! Durable queues; the model is documented on [`DurableQueue`].

mod handler;
mod producer;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rdq::{DispatchQueue, Outcome, Rate, RateLimiter, StopMode};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Notify};

use self::handler::{erase, Registry};
pub use self::handler::{HandlerError, JobContext, Retry};
use crate::clock::Clock;
use crate::error::StoreError;
use crate::retry::Backoff;
use crate::row::{Completion, Finish, Inserted, JobId, JobRow, JobState, NewJob, Timestamp};
use crate::store::{
    CancelResult, ListParams, QueueRecord, ReprioritizeResult, RetryResult, StateCounts, Store,
};

/// A claimed job, as the in-memory queue carries it.
type Claimed = Arc<JobRow>;
type Memory = DispatchQueue<Claimed, Option<String>, HandlerError>;

/// The settings a queue keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    /// Most jobs underway at once.
    pub width: usize,
    /// Launch rate limit.
    pub rate: Option<RateSetting>,
    /// Whether launches are paused.
    pub paused: bool,
    /// Default job timeout, in milliseconds.
    pub timeout_ms: Option<u64>,
}

/// A [`Rate`] as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateSetting {
    /// Launches per period.
    pub count: u32,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// Launches allowed back to back.
    pub burst: u32,
}

impl RateSetting {
    /// The stored form of a rate.
    pub fn of(rate: Rate) -> Self {
        RateSetting {
            count: rate.count(),
            period_ms: millis(rate.period()),
            burst: rate.burst(),
        }
    }

    /// The rate, if the stored values are valid.
    pub fn to_rate(self) -> Option<Rate> {
        Rate::new(self.count, Duration::from_millis(self.period_ms))
            .and_then(|r| r.with_burst(self.burst))
            .ok()
    }
}

/// Whole milliseconds of `d`, saturating (an `as` cast would wrap).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Per-job settings for [`DurableQueue::put`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Lower runs first. Default 0.
    pub priority: i32,
    /// Not before this time. Default: now.
    pub run_at: Option<SystemTime>,
    /// While a live job of this queue has this key, a put returns it instead
    /// of adding another.
    pub key: Option<String>,
    /// Overrides the queue's `max_attempts`.
    pub max_attempts: Option<u32>,
    /// Overrides the queue's timeout.
    pub timeout: Option<Duration>,
}

impl PutOptions {
    /// Options with this priority.
    pub fn priority(priority: i32) -> Self {
        PutOptions {
            priority,
            ..PutOptions::default()
        }
    }

    /// Runs no sooner than `at`.
    pub fn run_at(mut self, at: SystemTime) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Runs no sooner than `delay` from now (a delay past year 9999 means
    /// [`Timestamp::MAX`]).
    pub fn delay(self, delay: Duration) -> Self {
        let at = SystemTime::now()
            .checked_add(delay)
            .unwrap_or_else(|| Timestamp::MAX.to_system_time());
        self.run_at(at)
    }

    /// Sets the idempotency key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the job's own attempt limit.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    /// Sets the job's own timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// One job of a [`DurableQueue::put_many`] batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    /// Its kind.
    pub kind: String,
    /// Its arguments as JSON text.
    pub args: String,
    /// Its options.
    pub options: PutOptions,
}

impl JobSpec {
    /// A job with serializable arguments.
    pub fn new(
        kind: impl Into<String>,
        args: &(impl Serialize + ?Sized),
        options: PutOptions,
    ) -> Result<Self, DurableError> {
        let args =
            serde_json::to_string(args).map_err(|e| DurableError::InvalidArgs(e.to_string()))?;
        Ok(JobSpec {
            kind: kind.into(),
            args,
            options,
        })
    }
}

/// Why a durable queue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such job in this queue.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job has finished; nothing changed.
    #[error("job {0} has already finished ({1})")]
    Finished(JobId, JobState),
    /// The job is underway; only waiting jobs can be reprioritized.
    #[error("job {0} is underway; only waiting jobs can be reprioritized")]
    Underway(JobId),
    /// The job is waiting, running or succeeded: nothing to retry.
    #[error("job {0} is {1}; only failed, dead or cancelled jobs can be retried")]
    NotRetryable(JobId, JobState),
    /// The job is finished and a newer live job holds its idempotency key:
    /// retrying it would make two live jobs with one key.
    #[error(
        "job {0} cannot be retried: live job {1} of its queue holds its key; \
         wait for job {1} to finish or cancel it, then retry"
    )]
    KeyHeld(JobId, JobId),
    /// The job is underway on another node, which must cancel it.
    #[error("job {0} is underway on node {1}")]
    Elsewhere(JobId, String),
    /// No handler for this kind.
    #[error("queue {queue:?} has no handler for kind {kind:?}; it knows {known:?}")]
    UnknownKind {
        /// The queue.
        queue: String,
        /// The kind asked for.
        kind: String,
        /// The kinds it has.
        known: Vec<String>,
    },
    /// The arguments could not be serialized, or are not JSON.
    #[error("invalid job arguments: {0}")]
    InvalidArgs(String),
    /// The queue has been stopped.
    #[error("the queue is stopped")]
    Stopped,
}

/// Retry policy for one kind of job, overriding the queue's; see
/// [`Builder::kind_options`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KindOptions {
    /// Attempts for jobs of this kind (a job's own setting still wins).
    pub max_attempts: Option<u32>,
    /// Delays between its retries.
    pub backoff: Option<Backoff>,
}

/// How one attempt ended, as the store records it: what
/// [`Builder::on_attempt_end`] hooks see.
#[derive(Debug, Clone, Copy)]
pub struct AttemptEnd<'a> {
    /// The job as claimed (its `attempt` is this attempt).
    pub job: &'a JobRow,
    /// The verdict: `succeeded`, `failed` (will retry), `dead`, `cancelled`,
    /// `snoozed` (comes back without spending an attempt), or `released`
    /// (given back unfinished when the queue stopped).
    pub outcome: &'static str,
    /// From when the job could run to its launch.
    pub wait: Duration,
    /// How long the attempt ran (`None` if it never launched).
    pub run: Option<Duration>,
}

/// A hook called with every attempt's end; see [`Builder::on_attempt_end`].
pub type AttemptHook = Arc<dyn Fn(&AttemptEnd<'_>) + Send + Sync>;

/// What [`DurableQueue::stop`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Claimed jobs that had not launched, back to pending.
    pub released: usize,
    /// Underway jobs the grace period cut off, back to pending.
    pub interrupted: usize,
}

/// What a queue's producer (the task that claims jobs from the store) has
/// done since the queue was built; from [`DurableQueue::producer_stats`] and
/// [`DurableQueue::settled`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Rounds begun: each looks at the store once (promotes due jobs, takes
    /// rate tokens, claims up to the free width), unless the queue is held.
    pub rounds: u64,
    /// Jobs claimed, over all rounds (a retry claims its job again).
    pub claimed: u64,
}

/// Claimed jobs by store id, for cancel; and cancels that arrived between a
/// claim and the job's arrival in memory.
#[derive(Default)]
struct ClaimTable {
    memory_ids: HashMap<JobId, rdq::JobId>,
    doomed: HashSet<JobId>,
}

/// What the in-memory queue's `on_finish` hook needs: turns outcomes into
/// store completions.
struct Tracker<S> {
    queue: String,
    store: Arc<S>,
    clock: Clock,
    backoff: Backoff,
    kinds: HashMap<String, KindOptions>,
    stopping: AtomicBool,
    claims: Mutex<ClaimTable>,
    /// Wakes the producer.
    wake: Arc<Notify>,
    /// The earliest known time a scheduled job or retry becomes due.
    due_hint: AtomicI64,
    /// No claims before this time (a throttled target); microseconds.
    hold_until: AtomicI64,
    released: std::sync::atomic::AtomicUsize,
    interrupted: std::sync::atomic::AtomicUsize,
    on_attempt_end: Option<AttemptHook>,
    /// Producer rounds begun.
    rounds: AtomicU64,
    /// Jobs the producer claimed.
    claimed: AtomicU64,
    /// The number of the round after which the producer last went idle
    /// (waiting for a wake-up, a due time or a token); `u64::MAX` once it
    /// has ended. What [`DurableQueue::settled`] waits on.
    idle_after: watch::Sender<u64>,
}

impl<S: Store> Tracker<S> {
    fn claims(&self) -> MutexGuard<'_, ClaimTable> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds claims until `until` (extends, never shortens, a hold).
    fn hold(&self, until: Timestamp) {
        self.hold_until.fetch_max(until.0, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn hint_due(&self, at: Timestamp) {
        self.due_hint.fetch_min(at.0, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn finished(&self, job: &rdq::Job<Claimed, Option<String>, HandlerError>) {
        let row = &job.arg;
        {
            let mut claims = self.claims();
            claims.memory_ids.remove(&row.id);
            claims.doomed.remove(&row.id);
        }
        let now = self.clock.now();
        let fail = |error: String, retry: Retry| -> Finish {
            if retry == Retry::Never || row.attempt >= row.max_attempts {
                Finish::Dead { error }
            } else {
                let backoff = self
                    .kinds
                    .get(&row.kind)
                    .and_then(|k| k.backoff)
                    .unwrap_or(self.backoff);
                let delay = match retry {
                    Retry::After(d) => d,
                    _ => backoff.delay(row.attempt),
                };
                Finish::Retry {
                    error,
                    run_at: now.plus(delay),
                }
            }
        };
        let snooze = |error: &HandlerError, delay: Duration| Finish::Snooze {
            error: error.message().to_owned(),
            run_at: now.plus(delay),
        };
        let finish = match &job.outcome {
            Outcome::Ok(result) => Finish::Succeeded {
                result: result.clone(),
            },
            Outcome::Failed(e) => match e.retry() {
                Retry::Snooze(delay) => snooze(e, delay),
                Retry::Throttle(delay) => {
                    self.hold(now.plus(delay));
                    tracing::info!(queue = %self.queue, job = %row.id, delay = ?delay, error = %e, "target throttled us; holding the queue");
                    snooze(e, delay)
                }
                retry => fail(e.message().to_owned(), retry),
            },
            Outcome::Panicked(msg) => fail(format!("panicked: {msg}"), Retry::Backoff),
            Outcome::TimedOut => {
                let ran = job.run_time().unwrap_or_default();
                fail(format!("timed out after {ran:.1?}"), Retry::Backoff)
            }
            Outcome::Cancelled if self.stopping.load(Ordering::Acquire) => {
                self.interrupted.fetch_add(1, Ordering::Relaxed);
                Finish::Released {
                    launched: true,
                    error: Some("interrupted: the queue stopped before the job finished".into()),
                }
            }
            Outcome::Cancelled => Finish::Cancelled,
            Outcome::NotRun => {
                self.released.fetch_add(1, Ordering::Relaxed);
                Finish::Released {
                    launched: false,
                    error: None,
                }
            }
        };
        match &finish {
            Finish::Snooze { run_at, .. } => self.hint_due(*run_at),
            Finish::Retry { error, run_at } => {
                tracing::info!(queue = %self.queue, job = %row.id, attempt = row.attempt, %error, retry_at = %run_at, "job failed; will retry");
                self.hint_due(*run_at);
            }
            Finish::Dead { error } => {
                tracing::warn!(queue = %self.queue, job = %row.id, attempt = row.attempt, %error, "job failed for good");
            }
            _ => {}
        }
        if let Some(hook) = &self.on_attempt_end {
            let outcome = match &finish {
                Finish::Succeeded { .. } => "succeeded",
                Finish::Retry { .. } => "failed",
                Finish::Dead { .. } => "dead",
                Finish::Cancelled => "cancelled",
                Finish::Snooze { .. } => "snoozed",
                Finish::Released { .. } => "released",
            };
            let wait = row
                .launched_at
                .map(|l| l.since(row.run_at))
                .unwrap_or_default();
            hook(&AttemptEnd {
                job: row,
                outcome,
                wait,
                run: job.run_time(),
            });
        }
        self.store.complete(Completion {
            id: row.id,
            attempt: row.attempt,
            finish,
            at: now,
        });
        self.wake.notify_one();
    }
}

struct Inner<S> {
    name: String,
    store: Arc<S>,
    memory: Memory,
    tracker: Arc<Tracker<S>>,
    registry: Registry,
    settings: Mutex<QueueSettings>,
    /// The launch rate, applied at claim time.
    limiter: Mutex<Option<RateLimiter>>,
    declared: QueueSettings,
    max_attempts: u32,
    retention: Duration,
    node: String,
    lease: Duration,
    stopped: AtomicBool,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Durable queues: jobs that survive restarts, retried with backoff.
///
/// A [`DurableQueue`] is a named queue in a [`Store`]. Jobs are put with a
/// *kind* and JSON-serializable arguments; the queue runs each with the
/// handler registered for its kind.
///
/// ```no_run
/// use rdq_store::{DurableQueue, HandlerError, JobContext, PutOptions};
/// use rdq_store::sqlite::{SqliteOptions, SqliteStore};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Sms { to: String, text: String }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("rdq.db", SqliteOptions::default()).await?;
/// let q = DurableQueue::builder(store, "sms")
///     .width(5)
///     .handler("send_sms", |sms: Sms, ctx: JobContext| async move {
///         println!("attempt {}: {} <- {}", ctx.attempt, sms.to, sms.text);
///         Ok::<_, HandlerError>(())
///     })
///     .build()
///     .await?;
/// let job = q.put("send_sms", &Sms { to: "+15550100".into(), text: "hi".into() }, PutOptions::priority(1)).await?;
/// let done = q.wait(job.id).await?;
/// # Ok(()) }
/// ```
///
/// # How it runs
///
/// The queue is an [`rdq::DispatchQueue`] fed from the store. A producer task
/// claims up to the free width of pending jobs, in launch order (priority,
/// then `run_at`, then id), and puts them into the in-memory queue, which
/// enforces width and timeouts, catches panics and cancels underway jobs,
/// exactly as in memory. The rate limit is applied by the producer, which
/// takes a token per job *before* claiming it: a claimed job starts at once,
/// and never holds a claim (or spends an attempt) waiting for a token. Every outcome goes back to the store through
/// the in-memory queue's `on_finish` hook, batched. No job holds a database
/// connection or transaction while it runs.
///
/// # Outcomes and retries
///
/// A handler that returns `Ok` makes the job `succeeded` (its return value is
/// kept as JSON). An error, a panic or a timeout is a failure: while attempts
/// remain the job becomes `failed` and runs again after the queue's
/// [`Backoff`]; after the last attempt, or for a [`HandlerError::permanent`]
/// failure (such as arguments that do not deserialize into the handler's
/// type), it is `dead`.
///
/// # Settings that survive restarts
///
/// Width, rate, timeout and paused can change at runtime; each change is
/// committed, and a restart keeps it. What the code (or config) declares is
/// stored beside it: when a later start declares something different, the new
/// declaration wins, since someone changed it on purpose.
///
/// # Stopping
///
/// [`stop`](DurableQueue::stop) stops claiming, lets underway jobs finish
/// within a grace period, returns the rest (and any cancelled by the grace
/// period running out) to pending, and waits until every outcome is written.
///
/// Cheap to clone: clones share the queue.
pub struct DurableQueue<S: Store> {
    inner: Arc<Inner<S>>,
}

impl<S: Store> Clone for DurableQueue<S> {
    fn clone(&self) -> Self {
        DurableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<S: Store> std::fmt::Debug for DurableQueue<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableQueue")
            .field("name", &self.inner.name)
            .field("settings", &*self.settings_lock())
            .field("handlers", &self.inner.registry)
            .finish_non_exhaustive()
    }
}

/// Builds a [`DurableQueue`]; from [`DurableQueue::builder`].
#[must_use = "call .build().await to get a queue"]
pub struct Builder<S> {
    store: S,
    name: String,
    declared: QueueSettings,
    registry: Registry,
    max_attempts: u32,
    backoff: Backoff,
    kinds: HashMap<String, KindOptions>,
    retention: Duration,
    clock: Clock,
    lease: Duration,
    on_attempt_end: Option<AttemptHook>,
    watch: bool,
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

    /// How long a claim holds without a heartbeat (multi-node stores).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
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
            released: Default::default(),
            interrupted: Default::default(),
            on_attempt_end: self.on_attempt_end.clone(),
            rounds: AtomicU64::new(0),
            claimed: AtomicU64::new(0),
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
            limiter: Mutex::new(
                effective
                    .rate
                    .and_then(RateSetting::to_rate)
                    .map(RateLimiter::new),
            ),
            settings: Mutex::new(effective),
            declared: self.declared,
            max_attempts: self.max_attempts,
            retention: self.retention,
            node: node_name(),
            lease: self.lease,
            stopped: AtomicBool::new(false),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            tokio::spawn(producer::run(Arc::downgrade(&inner))),
            tokio::spawn(producer::prune(Arc::downgrade(&inner))),
        ];
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(DurableQueue { inner })
    }
}

fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

impl<S: Store> DurableQueue<S> {
    /// Starts building the queue `name` in `store`.
    pub fn builder(store: S, name: impl Into<String>) -> Builder<S> {
        Builder {
            store,
            name: name.into(),
            declared: QueueSettings {
                width: 1,
                rate: None,
                paused: false,
                timeout_ms: None,
            },
            registry: Registry::default(),
            max_attempts: 20,
            backoff: Backoff::default(),
            kinds: HashMap::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            clock: Clock::System,
            lease: Duration::from_secs(60),
            on_attempt_end: None,
            watch: true,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.inner.store
    }

    /// The kinds this queue has handlers for.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.inner.registry.handlers.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    fn settings_lock(&self) -> MutexGuard<'_, QueueSettings> {
        self.inner
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The settings in effect.
    pub fn settings(&self) -> QueueSettings {
        self.settings_lock().clone()
    }

    /// Puts one job; returns once it is committed. With a key that a live job
    /// already has, returns that job (`existing: true`).
    pub async fn put(
        &self,
        kind: &str,
        args: &(impl Serialize + ?Sized),
        options: PutOptions,
    ) -> Result<Inserted, DurableError> {
        let spec = JobSpec::new(kind, args, options)?;
        let mut done = self.put_many(vec![spec]).await?;
        Ok(done.remove(0))
    }

    /// Puts jobs in one commit, in order.
    pub async fn put_many(&self, jobs: Vec<JobSpec>) -> Result<Vec<Inserted>, DurableError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(DurableError::Stopped);
        }
        let handlers = &self.inner.registry.handlers;
        let mut rows = Vec::with_capacity(jobs.len());
        let mut earliest: Option<Timestamp> = None;
        for spec in jobs {
            if !handlers.is_empty() && !handlers.contains_key(&spec.kind) {
                return Err(DurableError::UnknownKind {
                    queue: self.inner.name.clone(),
                    kind: spec.kind,
                    known: self.kinds(),
                });
            }
            let run_at = spec.options.run_at.map(Timestamp::from);
            if let Some(at) = run_at {
                earliest = Some(earliest.map_or(at, |e| e.min(at)));
            }
            let max_attempts = spec
                .options
                .max_attempts
                .or_else(|| {
                    self.inner
                        .tracker
                        .kinds
                        .get(&spec.kind)
                        .and_then(|k| k.max_attempts)
                })
                .unwrap_or(self.inner.max_attempts)
                .max(1);
            rows.push(NewJob {
                queue: self.inner.name.clone(),
                kind: spec.kind,
                args: spec.args,
                priority: spec.options.priority,
                run_at,
                max_attempts,
                key: spec.options.key,
                timeout: spec.options.timeout,
            });
        }
        let now = self.inner.tracker.clock.now();
        let inserted = self.inner.store.insert_many(rows, now).await?;
        if let Some(at) = earliest {
            self.inner.tracker.hint_due(at);
        }
        Ok(inserted)
    }

    /// One of this queue's jobs.
    pub async fn get(&self, id: JobId) -> Result<JobRow, DurableError> {
        match self.inner.store.get(id).await? {
            Some(row) if row.queue == self.inner.name => Ok(row),
            _ => Err(DurableError::NotFound(id)),
        }
    }

    /// This queue's jobs, newest first (see [`ListParams`]; its `queue` is
    /// ignored).
    pub async fn list(&self, params: ListParams) -> Result<Vec<JobRow>, DurableError> {
        let params = ListParams {
            queue: Some(self.inner.name.clone()),
            ..params
        };
        Ok(self.inner.store.list(params).await?)
    }

    /// Waits until the job reaches a final state (succeeded, dead or
    /// cancelled) and returns it. Wrap in `tokio::time::timeout` to bound it.
    pub async fn wait(&self, id: JobId) -> Result<JobRow, DurableError> {
        let mut events = self.inner.store.finished_events();
        loop {
            let row = self.get(id).await?;
            if row.state.is_final() {
                return Ok(row);
            }
            loop {
                match events.recv().await {
                    Ok(done) if done == id => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        return Err(StoreError::Closed.into())
                    }
                }
            }
        }
    }

    /// Cancels a job: a waiting one is cancelled in the store; an underway
    /// one has its future dropped and is recorded cancelled.
    pub async fn cancel(&self, id: JobId) -> Result<(), DurableError> {
        let now = self.inner.tracker.clock.now();
        if let Some(row) = self.inner.store.get(id).await? {
            if row.queue != self.inner.name {
                return Err(DurableError::NotFound(id));
            }
        }
        match self.inner.store.cancel(id, now).await? {
            CancelResult::Cancelled => Ok(()),
            CancelResult::Finished(state) => Err(DurableError::Finished(id, state)),
            CancelResult::NotFound => Err(DurableError::NotFound(id)),
            CancelResult::Underway(row) => {
                let row = *row;
                if row.node.as_deref() != Some(self.inner.node.as_str()) {
                    return Err(DurableError::Elsewhere(id, row.node.unwrap_or_default()));
                }
                let memory_id = {
                    let mut claims = self.inner.tracker.claims();
                    match claims.memory_ids.get(&id) {
                        Some(m) => Some(*m),
                        None => {
                            claims.doomed.insert(id);
                            None
                        }
                    }
                };
                // Outside the claims lock: cancelling may run the finish hook.
                if let Some(m) = memory_id {
                    if let Err(rdq::JobError::Finished(_)) = self.inner.memory.cancel(m) {
                        let state = self
                            .get(id)
                            .await
                            .map(|r| r.state)
                            .unwrap_or(JobState::Succeeded);
                        return Err(DurableError::Finished(id, state));
                    }
                }
                Ok(())
            }
        }
    }

    /// Runs a failed, dead or cancelled job again now (with one more attempt
    /// if it had spent them all).
    pub async fn retry(&self, id: JobId) -> Result<(), DurableError> {
        self.get(id).await?;
        match self
            .inner
            .store
            .retry(id, self.inner.tracker.clock.now())
            .await?
        {
            RetryResult::Retried => {
                self.inner.tracker.wake.notify_one();
                Ok(())
            }
            RetryResult::NotFound => Err(DurableError::NotFound(id)),
            RetryResult::NotRetryable(state) => Err(DurableError::NotRetryable(id, state)),
            RetryResult::KeyHeld(live) => Err(DurableError::KeyHeld(id, live)),
        }
    }

    /// Holds every launch of this queue until `until` (underway jobs go on);
    /// a later hold extends it, an earlier one changes nothing. What a
    /// throttled handler does through [`HandlerError::throttle`].
    pub fn hold_until(&self, until: Timestamp) {
        self.inner.tracker.hold(until);
    }

    /// Until when launches are held, if they are.
    pub fn held_until(&self) -> Option<Timestamp> {
        let hold = self.inner.tracker.hold_until.load(Ordering::Acquire);
        (hold > self.inner.tracker.clock.now().0).then_some(Timestamp(hold))
    }

    /// What the producer has done so far: rounds looked and jobs claimed.
    pub fn producer_stats(&self) -> ProducerStats {
        let tracker = &self.inner.tracker;
        ProducerStats {
            rounds: tracker.rounds.load(Ordering::SeqCst),
            claimed: tracker.claimed.load(Ordering::SeqCst),
        }
    }

    /// Waits until the producer has looked at the store once more, after
    /// everything done before this call (puts, settings, a [`Clock::advance`]
    /// of a manual clock), and has gone idle: it claimed what it could and now
    /// waits for a wake-up, a due time or a rate token. Returns its stats at
    /// that point, so a caller can tell what that look claimed.
    ///
    /// For tests and tools that need to know the queue has acted on a change
    /// rather than sleep and hope: "the clock moved to 9 s before the retry is
    /// due and the producer looked and claimed nothing" is
    /// `clock.advance(..); let s = q.settled().await; assert_eq!(s.claimed, before)`.
    /// The jobs it claimed may still be starting. Returns at once if the
    /// queue is stopped.
    pub async fn settled(&self) -> ProducerStats {
        let tracker = &self.inner.tracker;
        let mut idle = tracker.idle_after.subscribe();
        // A round numbered above `begun` begins after this load, so it sees
        // everything done before the call.
        let begun = tracker.rounds.load(Ordering::SeqCst);
        tracker.wake.notify_one();
        // An error means the sender is gone: so is the queue.
        let _ = idle.wait_for(|&after| after > begun).await;
        self.producer_stats()
    }

    /// Deletes the finished jobs older than the queue's retention now, as
    /// the queue does by itself every minute; returns how many.
    pub async fn prune(&self) -> Result<u64, DurableError> {
        Ok(producer::prune_once(&self.inner).await?)
    }

    /// When the longest-waiting pending job became runnable.
    pub async fn oldest_pending(&self) -> Result<Option<Timestamp>, DurableError> {
        Ok(self.inner.store.oldest_pending(&self.inner.name).await?)
    }

    /// The clock this queue schedules by.
    pub fn clock(&self) -> &Clock {
        &self.inner.tracker.clock
    }

    /// Changes a waiting job's priority; returns the old one.
    pub async fn reprioritize(&self, id: JobId, priority: i32) -> Result<i32, DurableError> {
        self.get(id).await?;
        match self.inner.store.reprioritize(id, priority).await? {
            ReprioritizeResult::Changed(old) => Ok(old),
            ReprioritizeResult::NotFound => Err(DurableError::NotFound(id)),
            ReprioritizeResult::NotWaiting(JobState::Underway) => Err(DurableError::Underway(id)),
            ReprioritizeResult::NotWaiting(state) => Err(DurableError::Finished(id, state)),
        }
    }

    async fn change(
        &self,
        f: impl FnOnce(&mut QueueSettings),
    ) -> Result<QueueSettings, DurableError> {
        let settings = {
            let mut s = self.settings_lock();
            f(&mut s);
            s.clone()
        };
        self.inner
            .store
            .save_queue(QueueRecord {
                name: self.inner.name.clone(),
                declared: serde_json::to_value(&self.inner.declared).expect("settings serialize"),
                settings: serde_json::to_value(&settings).expect("settings serialize"),
            })
            .await?;
        self.inner.tracker.wake.notify_one();
        Ok(settings)
    }

    /// Sets the width, now and after restarts.
    pub async fn set_width(&self, width: usize) -> Result<(), DurableError> {
        self.change(|s| s.width = width).await?;
        // A stopped in-memory queue means this durable queue is closing; the
        // width is persisted for the next open, which is all that matters then.
        let _ = self.inner.memory.set_width(width);
        self.inner.tracker.wake.notify_one();
        Ok(())
    }

    /// Sets or removes the rate limit, now and after restarts.
    pub async fn set_rate(&self, rate: Option<Rate>) -> Result<(), DurableError> {
        self.change(|s| s.rate = rate.map(RateSetting::of)).await?;
        *self.inner.limiter.lock().unwrap_or_else(|e| e.into_inner()) = rate.map(RateLimiter::new);
        self.inner.tracker.wake.notify_one();
        Ok(())
    }

    /// Sets or removes the default timeout, now and after restarts.
    pub async fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), DurableError> {
        self.change(|s| s.timeout_ms = timeout.map(millis)).await?;
        // As for the width: persisted; a closing queue need not apply it.
        let _ = self.inner.memory.set_timeout(timeout);
        Ok(())
    }

    /// Stops launching (now and after restarts); underway jobs go on.
    pub async fn pause(&self) -> Result<(), DurableError> {
        self.change(|s| s.paused = true).await?;
        drop(self.inner.memory.pause());
        Ok(())
    }

    /// Launches again.
    pub async fn resume(&self) -> Result<(), DurableError> {
        self.change(|s| s.paused = false).await?;
        self.inner
            .memory
            .resume(None)
            .map_err(|_| DurableError::Stopped)?;
        self.inner.tracker.wake.notify_one();
        Ok(())
    }

    /// `(underway, claimed but not yet launched)` in this process.
    pub fn size(&self) -> (usize, usize) {
        self.inner.memory.size()
    }

    /// Jobs per state in the store.
    pub async fn counts(&self) -> Result<StateCounts, DurableError> {
        Ok(self.inner.store.counts(&self.inner.name).await?)
    }

    /// Stops claiming; lets underway jobs finish within `grace`, then cancels
    /// the rest; returns everything unfinished to pending; waits until every
    /// outcome is written.
    pub async fn stop(&self, grace: Duration) -> Result<StopReport, DurableError> {
        let inner = &self.inner;
        inner.stopped.store(true, Ordering::Release);
        inner.tracker.stopping.store(true, Ordering::Release);
        inner.tracker.wake.notify_one();
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut tasks = tasks.into_iter();
        // The producer finishes its round and returns; the pruner holds
        // nothing worth finishing, so it is cut off mid-sleep.
        if let Some(producer) = tasks.next() {
            let _ = producer.await;
        }
        for t in tasks {
            t.abort();
        }
        inner.memory.stop(StopMode::CancelAfter(grace)).await;
        inner.store.flush().await?;
        Ok(StopReport {
            released: inner.tracker.released.load(Ordering::Relaxed),
            interrupted: inner.tracker.interrupted.load(Ordering::Relaxed),
        })
    }
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        for t in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

/// For the producer: the pieces of the queue it drives.
impl<S: Store> Inner<S> {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Takes up to `n` rate tokens; returns how many, and when the next one
    /// comes if it ran out.
    fn take_tokens(&self, n: usize) -> (usize, Option<tokio::time::Instant>) {
        let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        let Some(limiter) = limiter.as_mut() else {
            return (n, None);
        };
        let now = tokio::time::Instant::now();
        for taken in 0..n {
            if let Err(next) = limiter.try_acquire(now) {
                return (taken, Some(next));
            }
        }
        (n, None)
    }

    /// Gives back tokens taken for jobs the claim did not find.
    fn refund_tokens(&self, n: usize) {
        if let Some(limiter) = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            limiter.refund(n as u32);
        }
    }

    fn free_width(&self) -> usize {
        if self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paused
        {
            return 0;
        }
        let (underway, pending) = self.memory.size();
        self.memory.width().saturating_sub(underway + pending)
    }
}
