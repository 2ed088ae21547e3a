//! Durable queues; the model is documented on [`DurableQueue`].
//!
//! One file per moving part: the face ([`DurableQueue`], here), the
//! [builder](builder), the [producer](producer) that claims jobs, the
//! [completer](completer) that turns outcomes into store writes, the
//! [heartbeat](heartbeat) that renews leases and carries out cancel requests,
//! the [rescuer](rescuer) that returns dead nodes' jobs, the
//! [listener](listener) that reloads settings other nodes change, and the
//! [pruner](pruner).

mod builder;
mod completer;
mod handler;
mod heartbeat;
mod listener;
mod options;
mod producer;
mod pruner;
mod rescuer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdq::{DispatchQueue, Rate, StopMode};
use serde::Serialize;
use tokio::sync::broadcast;

pub use self::builder::Builder;
use self::completer::Tracker;
use self::handler::Registry;
pub use self::handler::{HandlerError, JobContext, Retry};
use self::options::millis;
pub use self::options::{
    AttemptEnd, AttemptHook, DurableError, JobSpec, KindOptions, ProducerStats, PutOptions,
    QueueSettings, RateSetting, StopReport,
};
use crate::clock::Clock;
use crate::error::StoreError;
use crate::retry::Backoff;
use crate::row::{Inserted, JobId, JobRow, JobState, NewJob, Timestamp};
use crate::store::{
    CancelResult, ListParams, QueueRecord, ReprioritizeResult, RetryResult, StateCounts, Store,
};

/// A claimed job, as the in-memory queue carries it.
type Claimed = Arc<JobRow>;
type Memory = DispatchQueue<Claimed, Option<String>, HandlerError>;

struct Inner<S> {
    name: String,
    store: Arc<S>,
    memory: Memory,
    tracker: Arc<Tracker<S>>,
    registry: Registry,
    settings: Mutex<QueueSettings>,
    /// Held across a read of the stored settings and what follows from it (a
    /// change saved, or a reload applied): a reload that read the store
    /// before a change was saved cannot apply the older settings after it.
    settings_io: tokio::sync::Mutex<()>,
    declared: QueueSettings,
    max_attempts: u32,
    retention: Duration,
    node: String,
    lease: Duration,
    stopped: AtomicBool,
    tasks: Mutex<Tasks>,
}

/// The queue's background tasks. Each holds only a weak reference to the
/// queue, so dropping every handle to a queue ends them.
#[derive(Default)]
struct Tasks {
    producer: Option<tokio::task::JoinHandle<()>>,
    /// Renews leases while jobs run: stopped after the in-memory queue.
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    /// Hold nothing worth finishing: cut off at stop.
    others: Vec<tokio::task::JoinHandle<()>>,
}

impl Tasks {
    fn start<S: Store>(inner: &Arc<Inner<S>>) {
        let weak = Arc::downgrade(inner);
        let shared = inner.store.poll_interval().is_some();
        let mut tasks = Tasks {
            producer: Some(tokio::spawn(producer::run(weak.clone()))),
            heartbeat: None,
            others: vec![
                tokio::spawn(pruner::run(weak.clone())),
                tokio::spawn(listener::settings(weak.clone())),
                tokio::spawn(listener::cancels(weak.clone())),
            ],
        };
        // One process owns a store without a poll interval (SQLite, by its
        // lock file): its jobs cannot be another node's, and its own dead
        // jobs are recovered when it opens.
        if shared {
            tasks.heartbeat = Some(tokio::spawn(heartbeat::run(weak.clone())));
            tasks.others.push(tokio::spawn(rescuer::run(weak)));
        }
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
    }

    fn abort_all(&mut self) {
        let all = self
            .producer
            .take()
            .into_iter()
            .chain(self.heartbeat.take())
            .chain(self.others.drain(..));
        for t in all {
            t.abort();
        }
    }
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
/// exactly as in memory. The store's claim applies the queue's limits,
/// counted over every node sharing the store: width (jobs underway until
/// their outcome is committed), rate (one token bucket, taken *before* a
/// job is claimed: a claimed job starts at once, and never holds a claim or
/// spends an attempt waiting for a token), pause and throttle holds. Every
/// outcome goes back to the store through the in-memory queue's `on_finish`
/// hook, batched. No job holds a database connection or transaction while
/// it runs.
///
/// # Several nodes
///
/// On a store several nodes share (PostgreSQL), each running job is leased
/// to its node; a heartbeat renews the leases every third of the
/// [lease](Builder::lease). A node that cannot renew a job's lease in time
/// gives the job up (cancels it and records nothing), and every node's
/// rescuer returns jobs whose lease expired to pending, so a dead or hung
/// node's jobs run elsewhere (at-least-once). Settings changed on one node
/// reach the others through the store's settings signal; a cancel of a job
/// underway on another node is recorded and carried out by that node.
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
            lease: Duration::from_secs(30),
            node: None,
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
        // A store shared by nodes may lose a notification: look again now
        // and then.
        let poll = self.inner.store.poll_interval();
        loop {
            let row = self.get(id).await?;
            if row.state.is_final() {
                return Ok(row);
            }
            loop {
                let event = match poll {
                    Some(every) => match tokio::time::timeout(every, events.recv()).await {
                        Ok(event) => event,
                        Err(_) => break,
                    },
                    None => events.recv().await,
                };
                match event {
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
    /// one has its future dropped and is recorded cancelled. On a store
    /// several nodes share, a job underway on another node is cancelled by
    /// that node: this returns once the request is recorded.
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
                if row.node.as_deref() != Some(self.inner.node.as_str()) {
                    // Recorded; its node carries it out.
                    return Ok(());
                }
                if let Err(rdq::JobError::Finished(_)) = self.inner.cancel_local(id) {
                    let state = self
                        .get(id)
                        .await
                        .map(|r| r.state)
                        .unwrap_or(JobState::Succeeded);
                    return Err(DurableError::Finished(id, state));
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
        Ok(pruner::prune_once(&self.inner).await?)
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
        let _io = self.inner.settings_io.lock().await;
        // Start from what is stored: another node may have changed another
        // setting since this one last heard.
        if let Some(rec) = self.inner.store.load_queue(&self.inner.name).await? {
            if let Ok(stored) = serde_json::from_value::<QueueSettings>(rec.settings) {
                self.inner.apply(stored);
            }
        }
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
        let mut tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        // The producer finishes its round and returns; the heartbeat goes on
        // renewing leases while underway jobs finish; the rest hold nothing
        // worth finishing, so they are cut off mid-sleep.
        if let Some(producer) = tasks.producer.take() {
            let _ = producer.await;
        }
        for t in tasks.others.drain(..) {
            t.abort();
        }
        inner.memory.stop(StopMode::CancelAfter(grace)).await;
        tasks.abort_all();
        inner.store.flush().await?;
        Ok(StopReport {
            released: inner.tracker.released.load(Ordering::Relaxed),
            interrupted: inner.tracker.interrupted.load(Ordering::Relaxed),
        })
    }
}

impl<S> Drop for Inner<S> {
    fn drop(&mut self) {
        self.tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .abort_all();
    }
}

/// For the tasks: the pieces of the queue they drive.
impl<S: Store> Inner<S> {
    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// How many more jobs this node can take: its width less the jobs it
    /// claimed whose outcome is not yet on its way to the store (see
    /// [`Tracker::finished`]; the in-memory queue's own count drops earlier,
    /// when a job ends, and a claim then would find it still underway).
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
        let held = self.tracker.claims().held.len();
        self.memory
            .width()
            .saturating_sub(held.max(underway + pending))
    }

    /// Cancels a job this node holds in memory; a job claimed but not yet
    /// in memory is cancelled when it arrives.
    fn cancel_local(&self, id: JobId) -> Result<(), rdq::JobError> {
        let memory_id = {
            let mut claims = self.tracker.claims();
            match claims.held.get(&id) {
                Some(h) => Some(h.memory),
                None => {
                    claims.doomed.insert(id);
                    None
                }
            }
        };
        // Outside the claims lock: cancelling may run the finish hook.
        match memory_id {
            Some(m) => self.memory.cancel(m).map(drop),
            None => Ok(()),
        }
    }

    /// Gives up jobs this node may no longer hold (their lease expired or
    /// the store says they are no longer ours): cancels them in memory and
    /// records nothing for them.
    fn give_up(&self, ids: &[JobId]) {
        let mut memory_ids = Vec::with_capacity(ids.len());
        {
            let mut claims = self.tracker.claims();
            for id in ids {
                if let Some(h) = claims.held.get(id) {
                    memory_ids.push(h.memory);
                    claims.lost.insert(*id);
                }
            }
        }
        self.tracker
            .lost
            .fetch_add(memory_ids.len() as u64, Ordering::Relaxed);
        for m in memory_ids {
            let _ = self.memory.cancel(m);
        }
    }

    /// Applies settings read from the store (another node changed them).
    fn apply(&self, new: QueueSettings) {
        let old = std::mem::replace(
            &mut *self.settings.lock().unwrap_or_else(|e| e.into_inner()),
            new.clone(),
        );
        if old == new {
            return;
        }
        tracing::info!(queue = %self.name, ?new, "settings changed");
        if old.width != new.width {
            let _ = self.memory.set_width(new.width);
        }
        if old.timeout_ms != new.timeout_ms {
            let _ = self
                .memory
                .set_timeout(new.timeout_ms.map(Duration::from_millis));
        }
        if new.paused && !old.paused {
            drop(self.memory.pause());
        } else if !new.paused && old.paused {
            let _ = self.memory.resume(None);
        }
        self.tracker.wake.notify_one();
    }
}
