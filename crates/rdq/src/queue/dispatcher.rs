//! The engine behind [`DispatchQueue`](crate::DispatchQueue).
//!
//! # Implementation details
//!
//! All mutable state sits in one [`State`] behind one mutex, held only for a
//! few pointer moves: no allocation that grows with the queue, no await, no
//! call into user code. Everything else (building the finished [`Job`],
//! waking its handle, spawning) happens after the lock is released.
//!
//! ## Launching
//!
//! There is no dispatcher task. Whoever changes something that could allow a
//! launch (a put, a finished job, `set_width`, `resume`, the rate pacer) calls
//! [`State::fill`] under the lock, which launches while
//! `underway < width`, the queue is neither paused nor stopped, a job is
//! pending, and the rate limiter (if any) has a token. Each launch moves a
//! job from `pending` to the `underway` table in priority-then-FIFO order, so
//! the launch order is exactly the order of `pending()`.
//!
//! ## Workers
//!
//! A launched job runs in a worker task. When its job finishes, a worker
//! records the outcome and, under the same lock, takes the next job itself if
//! one may launch; only launches beyond that spawn new workers. Under load a
//! queue of width `w` therefore runs on `w` long-lived tasks and spawns
//! nothing per job, which is why it can beat `Semaphore` + `spawn` per job.
//! Workers yield to the runtime through Tokio's cooperative budget, so jobs
//! that finish instantly do not starve other tasks. A worker whose future is
//! dropped mid-job (runtime shutdown, a panic while dropping a job's future)
//! still resolves that job's handle, as `Cancelled`.
//!
//! ## Rate
//!
//! When only the rate limiter stops a launch, `fill` asks for a one-off pacer
//! task that sleeps until the next token and calls `fill` again.
//!
//! ## Time
//!
//! Times are read from `tokio::time::Instant` (so a paused test clock applies)
//! and kept as nanoseconds since the queue's creation; wall-clock stamps are
//! derived from the wall clock read once at creation.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::error::{JobError, StoppedError};
use super::ids::Ids;
use super::job::{Job, JobId, JobInfo, Outcome, Priority, Stamp};
use super::pending::Pending;
use super::slot::Slot;
use super::worker::{panic_message, Launch, Signal};
use crate::limit::rate::{Rate, RateLimiter};

/// Nanoseconds since the queue's creation.
pub(super) type Tick = u64;

pub(crate) type JobSlot<A, R, E> = Arc<Slot<Job<A, R, E>>>;

/// A put's result: the new job's id and its completion slot.
pub(crate) type Queued<A, R, E> = (JobId, JobSlot<A, R, E>);

/// Spawns a worker for a launch; erases the job function's type.
pub(crate) type Spawner<A, R, E> = Box<dyn Fn(Arc<Core<A, R, E>>, Launch<A>) + Send + Sync>;

/// Called with every finished job; see `Builder::on_finish`.
pub(crate) type FinishHook<A, R, E> = Box<dyn Fn(&Job<A, R, E>) + Send + Sync>;

/// Settings fixed at build time.
pub(crate) struct Config {
    pub(crate) name: Option<String>,
    pub(crate) width: usize,
    pub(crate) rate: Option<Rate>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) max_pending: Option<usize>,
    /// When full, drop the oldest pending job instead of refusing the put.
    pub(crate) drop_oldest: bool,
    pub(crate) paused: bool,
    /// Watch jobs with the stall watchdog (feature `watchdog`).
    pub(crate) watch: bool,
}

/// Per-job settings, kept only for jobs that have any.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extras {
    pub(crate) timeout: Option<Duration>,
    pub(crate) allow_block: bool,
    pub(crate) report_id: Option<u64>,
}

/// A pending job. Kept small: this is what a million queued jobs cost.
struct Waiting<A, R, E> {
    slot: JobSlot<A, R, E>,
    queued: Tick,
    arg: A,
}

/// An underway job, as the queue sees it.
struct Running<A, R, E> {
    id: u64,
    priority: Priority,
    queued: Tick,
    launched: Tick,
    seq: u64,
    arg: A,
    slot: JobSlot<A, R, E>,
    signal: Arc<Signal>,
}

/// A job that could not launch: its id, priority, entry and why.
type Broken<A, R, E> = (u64, Priority, Waiting<A, R, E>, String);

/// What a `fill` decided; acted on after the lock is released.
pub(crate) struct Launches<A, R, E> {
    first: Option<Launch<A>>,
    rest: Vec<Launch<A>>,
    pacer: Option<Instant>,
    /// Jobs that could not launch because cloning their argument panicked.
    broken: Vec<Broken<A, R, E>>,
}

impl<A, R, E> Launches<A, R, E> {
    fn new() -> Self {
        Launches {
            first: None,
            rest: Vec::new(),
            pacer: None,
            broken: Vec::new(),
        }
    }

    fn push(&mut self, launch: Launch<A>) {
        if self.first.is_none() {
            self.first = Some(launch);
        } else {
            self.rest.push(launch);
        }
    }
}

/// The underway table: a slab, so a worker finds its job by index.
struct Underway<A, R, E> {
    entries: Vec<Option<Running<A, R, E>>>,
    free: Vec<usize>,
    len: usize,
}

impl<A, R, E> Underway<A, R, E> {
    fn insert(&mut self, running: Running<A, R, E>) -> usize {
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(running);
                i
            }
            None => {
                self.entries.push(Some(running));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, index: usize) -> Running<A, R, E> {
        let running = self.entries[index].take().expect("underway slot in use");
        self.free.push(index);
        self.len -= 1;
        running
    }

    fn iter(&self) -> impl Iterator<Item = &Running<A, R, E>> {
        self.entries.iter().flatten()
    }

    fn find(&self, id: u64) -> Option<&Running<A, R, E>> {
        self.iter().find(|r| r.id == id)
    }
}

pub(crate) struct State<A, R, E> {
    pending: Pending<Waiting<A, R, E>>,
    underway: Underway<A, R, E>,
    width: usize,
    paused: bool,
    stopped: bool,
    ids: Ids,
    next_seq: u64,
    max_pending: Option<usize>,
    drop_oldest: bool,
    rate: Option<RateLimiter>,
    /// When the armed pacer task will call `fill`, if one is armed.
    pacer_at: Option<Instant>,
    timeout: Option<Duration>,
    /// Per-job settings, only for jobs put with some.
    job_extras: FxHashMap<u64, Extras>,
    /// Jobs that never ran because the runtime shut down, kept for `stop`
    /// to return (their handles already resolved `NotRun`).
    orphans: Vec<Job<A, R, E>>,
}

pub(crate) struct Core<A, R, E> {
    state: Mutex<State<A, R, E>>,
    pub(crate) name: Option<String>,
    /// Watch jobs with the stall watchdog.
    pub(crate) watch: bool,
    /// The queue's name as the watchdog labels its jobs.
    #[cfg(feature = "watchdog")]
    pub(crate) label: u32,
    base: Instant,
    base_wall: SystemTime,
    pub(crate) runtime: tokio::runtime::Handle,
    spawner: Spawner<A, R, E>,
    on_finish: Option<FinishHook<A, R, E>>,
    drained: Notify,
    drain_waiters: AtomicUsize,
    /// Panics caught in user code outside a job's own poll.
    stray_panics: AtomicU64,
}

impl<A, R, E> State<A, R, E> {
    fn can_launch(&self) -> bool {
        !self.paused && !self.stopped && self.underway.len < self.width && !self.pending.is_empty()
    }

    /// Launches every job allowed now, in order. The first launch reuses
    /// `me` (the signal of a worker that just finished) if given.
    fn fill(
        &mut self,
        now: Instant,
        tick: Tick,
        mut me: Option<&Arc<Signal>>,
        out: &mut Launches<A, R, E>,
    ) where
        A: Clone,
    {
        while self.can_launch() {
            if let Some(rate) = &mut self.rate {
                if let Err(at) = rate.try_acquire(now) {
                    if self.pacer_at.is_none_or(|armed| at < armed) {
                        self.pacer_at = Some(at);
                        out.pacer = Some(at);
                    }
                    return;
                }
            }
            let (id, priority, waiting) = self.pending.pop().expect("can_launch saw a pending job");
            let extras = if self.job_extras.is_empty() {
                Extras::default()
            } else {
                self.job_extras.remove(&id).unwrap_or_default()
            };
            // `A::clone` is user code and runs under the lock: a panic in it
            // must not lose the job, which is already out of `pending`.
            let arg = match std::panic::catch_unwind(AssertUnwindSafe(|| waiting.arg.clone())) {
                Ok(arg) => arg,
                Err(panic) => {
                    let message = format!(
                        "cloning the job's argument for its launch panicked: {}",
                        panic_message(panic)
                    );
                    out.broken.push((id, priority, waiting, message));
                    continue;
                }
            };
            let deadline = extras.timeout.or(self.timeout).map(|t| now + t);
            let signal = match me.take() {
                Some(signal) => {
                    signal.reset();
                    signal.clone()
                }
                None => Arc::new(Signal::default()),
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            let index = self.underway.insert(Running {
                id,
                priority,
                queued: waiting.queued,
                launched: tick,
                seq,
                arg: waiting.arg,
                slot: waiting.slot,
                signal: signal.clone(),
            });
            out.push(Launch {
                index,
                id,
                job_id: extras.report_id.unwrap_or(id),
                allow_block: extras.allow_block,
                arg: Some(arg),
                deadline,
                signal,
            });
        }
    }

    fn job_error(&self, id: JobId) -> JobError {
        if self.ids.issued(id.get()) {
            JobError::Finished(id)
        } else {
            JobError::Unknown(id)
        }
    }
}

/// Decrements the drain-waiter count when a waiter goes away.
struct WaiterGuard<'a>(&'a AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<A, R, E> Core<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    pub(crate) fn new(
        config: Config,
        runtime: tokio::runtime::Handle,
        spawner: Spawner<A, R, E>,
        on_finish: Option<FinishHook<A, R, E>>,
    ) -> Self {
        Core {
            state: Mutex::new(State {
                pending: Pending::new(),
                underway: Underway {
                    entries: Vec::new(),
                    free: Vec::new(),
                    len: 0,
                },
                width: config.width,
                paused: config.paused,
                stopped: false,
                ids: Ids::default(),
                next_seq: 0,
                max_pending: config.max_pending,
                drop_oldest: config.drop_oldest,
                rate: config.rate.map(RateLimiter::new),
                pacer_at: None,
                timeout: config.timeout,
                job_extras: FxHashMap::default(),
                orphans: Vec::new(),
            }),
            #[cfg(feature = "watchdog")]
            label: rdq_watchdog::intern(config.name.as_deref().unwrap_or("(unnamed queue)")),
            watch: config.watch,
            name: config.name,
            base: Instant::now(),
            base_wall: SystemTime::now(),
            runtime,
            spawner,
            on_finish,
            drained: Notify::new(),
            drain_waiters: AtomicUsize::new(0),
            stray_panics: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<A, R, E>> {
        // No user code runs under this lock, so a poisoned lock can only come
        // from a bug in this module; the state is still consistent between
        // operations, so carry on rather than turn one panic into many.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn now(&self) -> (Instant, Tick) {
        let now = Instant::now();
        let tick = now.saturating_duration_since(self.base).as_nanos() as Tick;
        (now, tick)
    }

    fn stamp(&self, tick: Tick) -> Stamp {
        let offset = Duration::from_nanos(tick);
        Stamp {
            wall: self.base_wall + offset,
            mono: (self.base + offset).into_std(),
        }
    }

    /// Spawns workers and the pacer that a `fill` asked for, and resolves
    /// the jobs it could not launch.
    fn start(self: &Arc<Self>, launches: Launches<A, R, E>) {
        if !launches.broken.is_empty() {
            let (_, tick) = self.now();
            for (id, priority, waiting, message) in launches.broken {
                let outcome = Outcome::Panicked(message);
                self.resolve_unlaunched(JobId::new(id), priority, waiting, tick, outcome);
            }
        }
        if let Some(at) = launches.pacer {
            let pacer = Pacer {
                core: Some(self.clone()),
            };
            self.runtime.spawn(async move {
                tokio::time::sleep_until(at).await;
                pacer.fire(at);
            });
        }
        for launch in launches.first.into_iter().chain(launches.rest) {
            (self.spawner)(self.clone(), launch);
        }
    }

    fn on_pacer(self: &Arc<Self>, at: Instant) {
        let (now, tick) = self.now();
        let mut out = Launches::new();
        {
            let mut st = self.lock();
            if st.pacer_at == Some(at) {
                st.pacer_at = None;
            }
            st.fill(now, tick, None, &mut out);
        }
        self.start(out);
    }

    /// Runs `fill` and starts what it launched.
    fn refill(self: &Arc<Self>, st: MutexGuard<'_, State<A, R, E>>) {
        let mut st = st;
        if !st.can_launch() {
            return;
        }
        let (now, tick) = self.now();
        let mut out = Launches::new();
        st.fill(now, tick, None, &mut out);
        drop(st);
        self.start(out);
    }

    pub(crate) fn put(
        self: &Arc<Self>,
        arg: A,
        priority: Priority,
        extras: Extras,
    ) -> Result<Queued<A, R, E>, super::error::PutError<A>> {
        let slot = Arc::new(Slot::new());
        let (now, tick) = self.now();
        let mut out = Launches::new();
        let id = {
            let mut st = self.lock();
            if st.stopped {
                return Err(super::error::PutError::Stopped(arg));
            }
            let id = st.ids.issue();
            if extras.timeout.is_some() || extras.allow_block || extras.report_id.is_some() {
                st.job_extras.insert(id, extras);
            }
            st.pending.push(
                id,
                priority,
                Waiting {
                    slot: slot.clone(),
                    queued: tick,
                    arg,
                },
            );
            if st.can_launch() {
                st.fill(now, tick, None, &mut out);
            }
            // The bound is on jobs left waiting: a put that launches at once
            // never counts against it (so `max_pending(0)` means "run now or
            // refuse"). Before this put at most `max` were pending, so one
            // more than `max` means nothing launched and this job still waits.
            if let Some(max) = st.max_pending {
                if st.pending.len() > max && st.drop_oldest {
                    let oldest = st.pending.oldest().map(|(id, _)| id);
                    let oldest = oldest.expect("a queue over its bound holds a pending job");
                    let (priority, waiting) = st
                        .pending
                        .remove(oldest)
                        .expect("the oldest pending job is pending");
                    st.job_extras.remove(&oldest);
                    drop(st);
                    self.start(out);
                    self.resolve_unlaunched(
                        JobId::new(oldest),
                        priority,
                        waiting,
                        tick,
                        Outcome::Dropped,
                    );
                    return Ok((JobId::new(id), slot));
                }
                if st.pending.len() > max {
                    let (_, waiting) = st
                        .pending
                        .remove(id)
                        .expect("a put over the bound is still pending");
                    st.job_extras.remove(&id);
                    drop(st);
                    self.start(out);
                    return Err(super::error::PutError::Full(waiting.arg, max));
                }
            }
            id
        };
        self.start(out);
        Ok((JobId::new(id), slot))
    }

    pub(crate) fn cancel(&self, id: JobId) -> Result<(), JobError> {
        let mut st = self.lock();
        if let Some((priority, waiting)) = st.pending.remove(id.get()) {
            st.job_extras.remove(&id.get());
            drop(st);
            let (_, tick) = self.now();
            self.resolve_unlaunched(id, priority, waiting, tick, Outcome::Cancelled);
            return Ok(());
        }
        if let Some(running) = st.underway.find(id.get()) {
            running.signal.cancel();
            return Ok(());
        }
        Err(st.job_error(id))
    }

    pub(crate) fn reprioritize(&self, id: JobId, priority: Priority) -> Result<Priority, JobError> {
        let mut st = self.lock();
        if let Some(old) = st.pending.reprioritize(id.get(), priority) {
            return Ok(old);
        }
        if st.underway.find(id.get()).is_some() {
            return Err(JobError::Underway(id));
        }
        Err(st.job_error(id))
    }

    fn resolve_unlaunched(
        &self,
        id: JobId,
        priority: Priority,
        waiting: Waiting<A, R, E>,
        tick: Tick,
        outcome: Outcome<R, E>,
    ) {
        if !self.wants_job(&waiting.slot) {
            self.drop_caught(id, "dropping a job's argument", (waiting, outcome));
            return;
        }
        let job = Job {
            id,
            arg: waiting.arg,
            priority,
            queued_at: self.stamp(waiting.queued),
            launched_at: None,
            stopped_at: self.stamp(tick),
            outcome,
        };
        self.deliver(&waiting.slot, job);
    }

    /// Whether anyone will look at this job's finished record.
    fn wants_job(&self, slot: &JobSlot<A, R, E>) -> bool {
        self.on_finish.is_some() || !slot.is_closed()
    }

    /// Hands a finished job to the `on_finish` hook, then to its handle.
    ///
    /// User code runs here (the hook, and the drop of a job nobody waits
    /// for), so a panic in it is caught, logged and counted: it costs neither
    /// the handle, nor a launch, nor a unit of width.
    fn deliver(&self, slot: &JobSlot<A, R, E>, job: Job<A, R, E>) {
        if let Some(hook) = &self.on_finish {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&job))) {
                self.stray_panic("the on_finish hook", job.id, panic);
            }
        }
        if slot.is_closed() {
            self.drop_caught(job.id, "dropping a finished job", job);
        } else {
            slot.complete(job);
        }
    }

    /// Drops a value that holds user types, catching a panic in their `Drop`.
    pub(super) fn drop_caught<T>(&self, id: JobId, during: &str, value: T) {
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(move || drop(value))) {
            self.stray_panic(during, id, panic);
        }
    }

    /// Logs and counts a panic caught in user code outside a job's own poll.
    pub(super) fn stray_panic(
        &self,
        during: &str,
        id: JobId,
        panic: Box<dyn std::any::Any + Send>,
    ) {
        self.stray_panics.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            queue = self.name.as_deref().unwrap_or(""),
            job = id.get(),
            "rdq caught a panic in {during}; the queue goes on: {}",
            panic_message(panic)
        );
    }

    pub(crate) fn stray_panics(&self) -> u64 {
        self.stray_panics.load(Ordering::Relaxed)
    }

    pub(crate) fn set_width(self: &Arc<Self>, width: usize) -> Result<(), StoppedError> {
        let mut st = self.lock();
        if st.stopped {
            return Err(StoppedError);
        }
        st.width = width;
        self.refill(st);
        Ok(())
    }

    pub(crate) fn width(&self) -> usize {
        self.lock().width
    }

    pub(crate) fn set_rate(self: &Arc<Self>, rate: Option<Rate>) -> Result<(), StoppedError> {
        let mut st = self.lock();
        if st.stopped {
            return Err(StoppedError);
        }
        st.rate = rate.map(RateLimiter::new);
        st.pacer_at = None;
        self.refill(st);
        Ok(())
    }

    pub(crate) fn rate(&self) -> Option<Rate> {
        self.lock().rate.as_ref().map(RateLimiter::rate)
    }

    pub(crate) fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), StoppedError> {
        let mut st = self.lock();
        if st.stopped {
            return Err(StoppedError);
        }
        st.timeout = timeout;
        Ok(())
    }

    pub(crate) fn timeout(&self) -> Option<Duration> {
        self.lock().timeout
    }

    pub(crate) fn size(&self) -> (usize, usize) {
        let st = self.lock();
        (st.underway.len, st.pending.len())
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.lock().paused
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// Pauses launches; a stopped queue stays as it is.
    pub(crate) fn pause(&self) {
        let mut st = self.lock();
        if !st.stopped {
            st.paused = true;
        }
    }

    pub(crate) fn resume(self: &Arc<Self>, width: Option<usize>) -> Result<(), StoppedError> {
        let mut st = self.lock();
        if st.stopped {
            return Err(StoppedError);
        }
        if let Some(width) = width {
            st.width = width;
        }
        st.paused = false;
        self.refill(st);
        Ok(())
    }

    /// When the job put longest ago that is still pending was put.
    pub(crate) fn oldest_pending(&self) -> Option<Stamp> {
        let st = self.lock();
        let queued = st.pending.oldest().map(|(_, w)| w.queued);
        drop(st);
        queued.map(|tick| self.stamp(tick))
    }

    pub(crate) fn pending(&self) -> Vec<JobInfo<A>> {
        let st = self.lock();
        st.pending
            .iter()
            .map(|(id, priority, w)| JobInfo {
                id: JobId::new(id),
                arg: w.arg.clone(),
                priority,
                queued_at: self.stamp(w.queued),
                launched_at: None,
            })
            .collect()
    }

    pub(crate) fn underway(&self) -> Vec<JobInfo<A>> {
        let st = self.lock();
        let mut running: Vec<&Running<A, R, E>> = st.underway.iter().collect();
        running.sort_unstable_by_key(|r| r.seq);
        running
            .into_iter()
            .map(|r| JobInfo {
                id: JobId::new(r.id),
                arg: r.arg.clone(),
                priority: r.priority,
                queued_at: self.stamp(r.queued),
                launched_at: Some(self.stamp(r.launched)),
            })
            .collect()
    }

    /// Marks the queue stopped and resolves every pending job as `NotRun`.
    /// Returns those jobs, with any the runtime's shutdown left behind, in
    /// launch order.
    pub(crate) fn stop_now(&self, cancel_underway: bool) -> Vec<Job<A, R, E>> {
        let unrun = self.stop_pending(cancel_underway);
        let mut orphans = std::mem::take(&mut self.lock().orphans);
        if orphans.is_empty() {
            return unrun;
        }
        // Ids grow with put order, so (priority, id) is launch order.
        orphans.extend(unrun);
        orphans.sort_by_key(|job| (job.priority, job.id.get()));
        orphans
    }

    /// Marks the queue stopped (cancelling underway jobs if asked, under the
    /// same lock, so no job launched meanwhile escapes), resolves every
    /// pending job as `NotRun`, and returns them in launch order.
    fn stop_pending(&self, cancel_underway: bool) -> Vec<Job<A, R, E>> {
        let drained = {
            let mut st = self.lock();
            st.stopped = true;
            st.job_extras.clear();
            if cancel_underway {
                st.underway.iter().for_each(|r| r.signal.cancel());
            }
            st.pending.drain()
        };
        let (_, tick) = self.now();
        let stopped_at = self.stamp(tick);
        let mut unrun = Vec::with_capacity(drained.len());
        for (id, priority, waiting) in drained {
            let job = Job {
                id: JobId::new(id),
                arg: waiting.arg,
                priority,
                queued_at: self.stamp(waiting.queued),
                launched_at: None,
                stopped_at,
                outcome: Outcome::NotRun,
            };
            if !self.wants_job(&waiting.slot) {
                unrun.push(job);
                continue;
            }
            // `A::clone` is user code: if it panics, the handle still gets
            // the job (with the only copy of its argument), and the job is
            // left out of the returned list, with an error logged.
            match std::panic::catch_unwind(AssertUnwindSafe(|| job.arg.clone())) {
                Ok(arg) => {
                    let copy = Job {
                        arg,
                        outcome: Outcome::NotRun,
                        ..job
                    };
                    self.deliver(&waiting.slot, copy);
                    unrun.push(job);
                }
                Err(panic) => {
                    self.stray_panic("cloning a job's argument at stop", job.id, panic);
                    self.deliver(&waiting.slot, job);
                }
            }
        }
        unrun
    }

    pub(crate) fn cancel_underway(&self) {
        self.lock().underway.iter().for_each(|r| r.signal.cancel());
    }

    /// Resolves when no job is underway.
    pub(crate) async fn drained(&self) {
        self.drain_waiters.fetch_add(1, Ordering::AcqRel);
        let _guard = WaiterGuard(&self.drain_waiters);
        loop {
            let mut notified = pin!(self.drained.notified());
            notified.as_mut().enable();
            if self.lock().underway.len == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Whether no job is underway now.
    pub(crate) fn is_drained(&self) -> bool {
        self.lock().underway.len == 0
    }

    fn notify_if_idle(&self, idle: bool) {
        if idle && self.drain_waiters.load(Ordering::Acquire) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// Records a worker's outcome and hands it the next job, if any.
    pub(super) fn finish(
        self: &Arc<Self>,
        launch: Launch<A>,
        outcome: Outcome<R, E>,
        (now, tick): (Instant, Tick),
    ) -> Option<Launch<A>> {
        let mut out = Launches::new();
        let (running, cancelled, idle) = {
            let mut st = self.lock();
            let running = st.underway.remove(launch.index);
            // Read before `fill` resets the flag for this worker's next job.
            let cancelled = running.signal.is_cancelled();
            if st.can_launch() {
                st.fill(now, tick, Some(&launch.signal), &mut out);
            }
            (running, cancelled, st.underway.len == 0)
        };
        // A cancel that took the lock before this finish wins, even if the
        // future had just completed: cancel() already reported success.
        let outcome = match (cancelled, outcome) {
            (true, outcome) => {
                self.drop_caught(
                    running_id(&running),
                    "dropping a cancelled job's result",
                    outcome,
                );
                Outcome::Cancelled
            }
            (false, outcome) => outcome,
        };
        self.complete(running, tick, outcome, idle);
        let mine = out.first.take();
        self.start(out);
        mine
    }

    /// Resolves the job of a worker that panicked outside the job's own code
    /// (a bug in this crate), as `Cancelled`, and gives its width to the next
    /// job.
    pub(super) fn abandon(self: &Arc<Self>, index: usize) {
        let (now, tick) = self.now();
        let mut out = Launches::new();
        let (running, idle) = {
            let mut st = self.lock();
            let running = st.underway.remove(index);
            if st.can_launch() {
                st.fill(now, tick, None, &mut out);
            }
            (running, st.underway.len == 0)
        };
        self.complete(running, tick, Outcome::Cancelled, idle);
        self.start(out);
    }

    /// The runtime dropped a worker or pacer task, which means it has shut
    /// down: nothing else ever drops them. The worker's job (`claim`: its
    /// index, and whether its function was called) resolves `Cancelled` if
    /// it started, and otherwise goes back to pending; then the queue stops
    /// as if by `stop`: pending handles resolve `NotRun`, puts are refused,
    /// and a later `stop` returns the jobs that never ran.
    pub(super) fn runtime_gone(&self, claim: Option<(usize, bool)>) {
        let (_, tick) = self.now();
        let (running, idle) = {
            let mut st = self.lock();
            let mut running = None;
            if let Some((index, started)) = claim {
                let r = st.underway.remove(index);
                if started {
                    running = Some(r);
                } else {
                    let waiting = Waiting {
                        slot: r.slot,
                        queued: r.queued,
                        arg: r.arg,
                    };
                    st.pending.push(r.id, r.priority, waiting);
                }
            }
            (running, st.underway.len == 0)
        };
        match running {
            Some(running) => self.complete(running, tick, Outcome::Cancelled, idle),
            None => self.notify_if_idle(idle),
        }
        let unrun = self.stop_pending(false);
        if !unrun.is_empty() {
            self.lock().orphans.extend(unrun);
        }
    }

    fn complete(&self, running: Running<A, R, E>, tick: Tick, outcome: Outcome<R, E>, idle: bool) {
        let id = running_id(&running);
        if self.wants_job(&running.slot) {
            let job = Job {
                id,
                arg: running.arg,
                priority: running.priority,
                queued_at: self.stamp(running.queued),
                launched_at: Some(self.stamp(running.launched)),
                stopped_at: self.stamp(tick),
                outcome,
            };
            self.deliver(&running.slot, job);
        } else {
            self.drop_caught(id, "dropping a finished job", (running, outcome));
        }
        self.notify_if_idle(idle);
    }
}

fn running_id<A, R, E>(running: &Running<A, R, E>) -> JobId {
    JobId::new(running.id)
}

/// The pacer task's hold on its queue. Dropped before it fired, it means the
/// runtime shut down (nothing else drops the task), so the queue stops
/// rather than leave its pending jobs waiting for a timer that is gone.
struct Pacer<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    core: Option<Arc<Core<A, R, E>>>,
}

impl<A, R, E> Pacer<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn fire(mut self, at: Instant) {
        if let Some(core) = self.core.take() {
            core.on_pacer(at);
        }
    }
}

impl<A, R, E> Drop for Pacer<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            core.runtime_gone(None);
        }
    }
}

/// The engine driven by hand: a spawner that records launches instead of
/// running them, so each test decides exactly when a job finishes and can
/// stage races (a cancel between a job's end and its `finish`) that real
/// workers would hit only by chance.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::error::PutError;

    type TestCore = Arc<Core<u64, u64, ()>>;
    type Launched = Arc<Mutex<Vec<Launch<u64>>>>;

    fn core(width: usize, rate: Option<Rate>) -> (tokio::runtime::Runtime, TestCore, Launched) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let launched: Launched = Arc::default();
        let log = launched.clone();
        let config = Config {
            name: Some("test".into()),
            width,
            rate,
            timeout: None,
            max_pending: Some(3),
            drop_oldest: false,
            paused: false,
            watch: false,
        };
        let spawner: Spawner<u64, u64, ()> =
            Box::new(move |_, launch| log.lock().unwrap().push(launch));
        let core = Arc::new(Core::new(config, rt.handle().clone(), spawner, None));
        (rt, core, launched)
    }

    fn take(launched: &Launched) -> Vec<Launch<u64>> {
        std::mem::take(&mut *launched.lock().unwrap())
    }

    fn outcome(slot: &JobSlot<u64, u64, ()>) -> Outcome<u64, ()> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match slot.poll_take(&mut cx) {
            std::task::Poll::Ready(job) => job.outcome,
            std::task::Poll::Pending => panic!("job not resolved"),
        }
    }

    #[test]
    fn finish_hands_the_next_job_to_the_same_worker() {
        let (_rt, core, launched) = core(1, None);
        core.put(1, 0, Extras::default()).unwrap();
        core.put(2, 0, Extras::default()).unwrap();
        let first = take(&launched).pop().unwrap();
        assert_eq!(first.arg, Some(1));
        let next = core
            .finish(first, Outcome::Ok(1), core.now())
            .expect("job 2 for me");
        assert_eq!(next.arg, Some(2));
        assert!(take(&launched).is_empty(), "nothing spawned");
    }

    /// A cancel that took the lock between the job's end and its `finish`
    /// wins; and the worker's reused signal starts clean for its next job.
    #[test]
    fn cancel_before_finish_wins_and_does_not_leak_into_the_next_job() {
        let (_rt, core, launched) = core(1, None);
        let (id1, slot1) = core.put(1, 0, Extras::default()).unwrap();
        let (_, slot2) = core.put(2, 0, Extras::default()).unwrap();
        let first = take(&launched).pop().unwrap();
        core.cancel(id1).unwrap();
        let next = core.finish(first, Outcome::Ok(1), core.now()).unwrap();
        assert_eq!(outcome(&slot1), Outcome::Cancelled);
        assert!(
            !next.signal.is_cancelled(),
            "job 2 must not inherit job 1's cancel"
        );
        assert!(core.finish(next, Outcome::Ok(2), core.now()).is_none());
        assert_eq!(outcome(&slot2), Outcome::Ok(2));
    }

    #[test]
    fn abandoned_job_resolves_cancelled_and_frees_its_slot() {
        let (_rt, core, launched) = core(1, None);
        let (_, slot) = core.put(1, 0, Extras::default()).unwrap();
        let launch = take(&launched).pop().unwrap();
        core.abandon(launch.index);
        assert_eq!(outcome(&slot), Outcome::Cancelled);
        assert_eq!(core.size(), (0, 0));
    }

    #[test]
    fn ids_tell_finished_from_unknown() {
        let (_rt, core, launched) = core(1, None);
        let (id, _) = core.put(1, 0, Extras::default()).unwrap();
        let launch = take(&launched).pop().unwrap();
        core.finish(launch, Outcome::Ok(1), core.now());
        assert_eq!(core.cancel(id), Err(JobError::Finished(id)));
        let never = JobId::new(id.get() + 1);
        assert_eq!(core.cancel(never), Err(JobError::Unknown(never)));
    }

    #[test]
    fn max_pending_counts_pending_jobs_only() {
        let (_rt, core, _launched) = core(1, None);
        for k in 0..4 {
            core.put(k, 0, Extras::default()).unwrap(); // one launches, three pend
        }
        assert!(matches!(
            core.put(9, 0, Extras::default()),
            Err(PutError::Full(9, 3))
        ));
    }

    #[test]
    fn rate_arms_one_pacer_at_the_next_token() {
        let (rt, core, launched) = core(10, Some(Rate::per_second(10)));
        let _guard = rt.enter();
        let (now, tick) = core.now();
        let mut out = Launches::new();
        {
            let mut st = core.lock();
            for k in 0..3 {
                let id = st.ids.issue();
                st.pending.push(
                    id,
                    0,
                    Waiting {
                        slot: Arc::new(Slot::new()),
                        queued: tick,
                        arg: k,
                    },
                );
            }
            st.fill(now, tick, None, &mut out);
            assert_eq!(st.underway.len, 1, "one token at first");
            assert_eq!(out.pacer, Some(now + Duration::from_millis(100)));
            // A second fill before the token does not arm a second pacer.
            let mut again = Launches::new();
            st.fill(now, tick, None, &mut again);
            assert!(again.first.is_none() && again.pacer.is_none());
        }
        assert!(take(&launched).is_empty());
    }

    #[test]
    fn paused_and_stopped_launch_nothing() {
        let (_rt, core, launched) = core(2, None);
        core.pause();
        core.put(1, 0, Extras::default()).unwrap();
        assert!(take(&launched).is_empty());
        assert_eq!(core.size(), (0, 1));
        let unrun = core.stop_now(false);
        assert_eq!(unrun.len(), 1);
        assert_eq!(core.resume(None), Err(StoppedError));
        assert!(take(&launched).is_empty());
    }
}
