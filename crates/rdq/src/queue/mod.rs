//! The resizable dispatch queue: [`DispatchQueue`] and its builder, handle
//! and errors. The model is documented on [`DispatchQueue`].

mod dispatcher;
pub(crate) mod error;
mod handle;
mod ids;
pub(crate) mod job;
mod pending;
mod slot;
mod worker;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dispatcher::{Config, Core, FinishHook, Spawner};
pub use error::{CancelError, JobError, PutError, StoppedError};
pub use handle::JobHandle;
use job::{Job, JobId, JobInfo, JobOptions, Priority, Stamp};

use crate::limit::rate::Rate;

/// How [`DispatchQueue::stop`] treats jobs that are underway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Let underway jobs finish.
    Wait,
    /// Cancel underway jobs (their futures are dropped), then wait for them
    /// to be gone.
    CancelUnderway,
    /// Let underway jobs run this long, then cancel the rest.
    CancelAfter(Duration),
}

/// A resizable, prioritized dispatch queue.
///
/// A `DispatchQueue` runs an async job function over the arguments put into
/// it, at most [`width`](DispatchQueue::width) at a time, lowest priority
/// number first, and records for every job when it was queued, launched and
/// stopped, and how it ended.
///
/// ```
/// use rdq::DispatchQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let q = DispatchQueue::builder(|(to, text): (u64, String)| async move {
///     // send_sms(to, &text).await
///     Ok::<_, std::io::Error>(format!("sent {text:?} to {to}"))
/// })
/// .width(5)
/// .build();
///
/// let h = q.put((2127399921, "Hello".into()), 5).unwrap();
/// let job = h.await;
/// assert_eq!(job.outcome.ok().as_deref(), Some("sent \"Hello\" to 2127399921"));
/// assert!(job.launched_at.is_some());
/// # }
/// ```
///
/// # Width
///
/// Width is the most jobs underway at once. [`set_width`](DispatchQueue::set_width)
/// takes effect at once: growing launches waiting jobs immediately; shrinking
/// never interrupts an underway job, it only holds back launches until fewer
/// than `width` are underway. Width 0 is legal and launches nothing.
///
/// # Priority and FIFO
///
/// A lower priority number runs first; equal priorities run in put order.
/// [`reprioritize`](DispatchQueue::reprioritize) moves a pending job, which
/// keeps its put-order place among the jobs of its new priority.
/// [`pending`](DispatchQueue::pending) lists jobs in exactly the order they will
/// launch, and [`underway`](DispatchQueue::underway) in the order they did.
///
/// # Launch order and start order
///
/// *Launching* a job takes it out of `pending` and gives it a width slot;
/// jobs launch in exactly priority-then-put order, and their `launched_at`
/// stamps follow that order. *Starting* a job is its worker calling the job
/// function, right after. With width 1 (or on a current-thread runtime) jobs
/// also start in launch order. With width > 1 on a multi-thread runtime,
/// jobs launched together run on different worker tasks, and the runtime may
/// poll those in any order (Tokio's LIFO slot even reverses them), so jobs
/// launched within the same instant can start in a different order. Nothing
/// can start before it launched, and no lower-priority job launches while a
/// higher-priority one waits.
///
/// # Ids
///
/// Job ids are unique in the process, not just in one queue: an id from
/// another queue is [`JobError::Unknown`] here, so a mix-up cannot cancel or
/// reprioritize the wrong job. Within a queue, ids grow with put order.
///
/// # Cancel
///
/// [`cancel`](DispatchQueue::cancel) removes a pending job, or drops an
/// underway job's future (at its next poll, on its worker's thread); either
/// way its handle resolves [`Outcome::Cancelled`]. A cancel that returns `Ok`
/// always wins, even against a job whose future completed at the same moment.
/// Cancelling a finished job is an error and leaves its outcome untouched.
///
/// # Pause
///
/// [`pause`](DispatchQueue::pause) stops launches at once (underway jobs go
/// on) and returns a future that resolves when no job is underway.
/// [`resume`](DispatchQueue::resume) restarts launches with the width from
/// before the pause, or one set meanwhile, unless given a new one. The width is
/// never touched by pausing, so pausing twice loses nothing.
///
/// # Stop
///
/// [`stop`](DispatchQueue::stop) refuses further puts, resolves every pending
/// job's handle as [`Outcome::NotRun`], waits for (or first cancels) the
/// underway jobs, and returns the jobs that never ran, in launch order, so the
/// caller can save them and [`put`](DispatchQueue::put) them into a new queue
/// later in the same order. **No handle waits forever**: dropping the last
/// clone of a queue stops it the same way (underway jobs finish).
///
/// A stopped queue stays stopped: [`put`](DispatchQueue::put) returns
/// [`PutError::Stopped`], and [`resume`](DispatchQueue::resume),
/// [`set_width`](DispatchQueue::set_width), [`set_rate`](DispatchQueue::set_rate)
/// and [`set_timeout`](DispatchQueue::set_timeout) return [`StoppedError`]
/// and change nothing; [`pause`](DispatchQueue::pause) does nothing but wait
/// for underway jobs.
///
/// A job cancelled before its worker starts it (by
/// [`cancel`](DispatchQueue::cancel) or `StopMode::CancelUnderway`) never
/// starts: its job function is not called.
///
/// # Runtime shutdown
///
/// A queue can outlive the Tokio runtime it was built on. When that runtime
/// shuts down, it drops the queue's tasks; the queue notices and stops
/// itself: a job whose function was running resolves
/// [`Outcome::Cancelled`], one launched but not yet started goes back with
/// the pending jobs, whose handles resolve [`Outcome::NotRun`]; later puts
/// are refused, and [`stop`](DispatchQueue::stop) returns every job that
/// never ran, in launch order, so they can be saved.
///
/// # Rate and timeout
///
/// An optional [`Rate`](crate::Rate) (token bucket with burst, changeable at
/// runtime) spaces launches: a launch needs both a width slot and a token. An
/// optional timeout (per queue, overridable per job) drops a job's future when
/// it runs too long and records [`Outcome::TimedOut`]. Timeouts and rates need
/// the runtime's time driver.
///
/// # Panics
///
/// A panic in the job function, or in its future, is caught and becomes
/// [`Outcome::Panicked`] with the panic message; the queue goes on. A panic
/// in other user code the queue runs (the `on_finish` hook, a future's or a
/// result's `Drop`, `A::clone`) is caught too, logged and counted in
/// [`stray_panics`](DispatchQueue::stray_panics): the job keeps the outcome
/// it had (or, if its argument could not be cloned for its launch, becomes
/// `Panicked`), its handle resolves, and its width slot goes to the next job
/// at once.
///
/// # Memory
///
/// A pending job costs its argument plus about 100 bytes (a 40-byte completion
/// slot, a 32-byte entry in its priority's FIFO, and an id index entry); see
/// benchmark B3. Underway jobs hold a second copy of the argument: one is
/// moved into the job function, the other is returned in the finished [`Job`].
///
/// # Comparison to `tokio::sync::Semaphore`
///
/// `Semaphore` + `spawn` per job bounds concurrency too, but the order of
/// waiters is fixed at arrival, the bound cannot be lowered without forgetting
/// permits, nothing can be cancelled or reprioritized before it starts, and
/// nothing remembers what ran. This queue keeps `width` worker tasks busy
/// instead of spawning per job, so it is about as fast (benchmark B1).
///
/// [`Job`]: crate::Job
/// [`Outcome::Cancelled`]: crate::Outcome::Cancelled
/// [`Outcome::NotRun`]: crate::Outcome::NotRun
/// [`JobError::Unknown`]: crate::JobError::Unknown
/// [`Outcome::TimedOut`]: crate::Outcome::TimedOut
/// [`Outcome::Panicked`]: crate::Outcome::Panicked
///
/// `A` is the job argument, `R` the job function's `Ok` value and `E` its
/// error. Cloning a queue gives another handle to the same queue; the queue
/// stops when the last clone is dropped (see [`downgrade`](DispatchQueue::downgrade)
/// for a handle that does not keep it alive).
pub struct DispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    owner: Arc<Owner<A, R, E>>,
}

/// The user-held side: stops the queue when the last clone goes.
struct Owner<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    core: Arc<Core<A, R, E>>,
}

impl<A, R, E> Drop for Owner<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn drop(&mut self) {
        self.core.stop_now(false);
    }
}

impl<A, R, E> Clone for DispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn clone(&self) -> Self {
        DispatchQueue {
            owner: self.owner.clone(),
        }
    }
}

impl<A, R, E> fmt::Debug for DispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (underway, pending) = self.size();
        f.debug_struct("DispatchQueue")
            .field("name", &self.core().name)
            .field("width", &self.width())
            .field("underway", &underway)
            .field("pending", &pending)
            .finish()
    }
}

/// A handle to a [`DispatchQueue`] that does not keep it alive: for timers
/// and background tasks that adjust a queue but should not stop it from
/// stopping when its owners drop it. From [`DispatchQueue::downgrade`].
pub struct WeakDispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    owner: std::sync::Weak<Owner<A, R, E>>,
}

impl<A, R, E> WeakDispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// The queue, if some [`DispatchQueue`] clone still holds it.
    pub fn upgrade(&self) -> Option<DispatchQueue<A, R, E>> {
        self.owner.upgrade().map(|owner| DispatchQueue { owner })
    }
}

impl<A, R, E> Clone for WeakDispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn clone(&self) -> Self {
        WeakDispatchQueue {
            owner: self.owner.clone(),
        }
    }
}

impl<A, R, E> fmt::Debug for WeakDispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakDispatchQueue").finish_non_exhaustive()
    }
}

/// Builds a [`DispatchQueue`]; from [`DispatchQueue::builder`].
#[must_use = "call .build() to get a queue"]
pub struct Builder<A, R, E> {
    config: Config,
    spawner: Spawner<A, R, E>,
    on_finish: Option<FinishHook<A, R, E>>,
}

impl<A, R, E> fmt::Debug for Builder<A, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.config.name)
            .field("width", &self.config.width)
            .field("rate", &self.config.rate)
            .field("timeout", &self.config.timeout)
            .field("max_pending", &self.config.max_pending)
            .field("paused", &self.config.paused)
            .finish()
    }
}

impl<A, R, E> Builder<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// Most jobs underway at once. Default 1.
    pub fn width(mut self, width: usize) -> Self {
        self.config.width = width;
        self
    }

    /// Limits the launch rate. Default: no limit.
    pub fn rate(mut self, rate: Rate) -> Self {
        self.config.rate = Some(rate);
        self
    }

    /// Default timeout for every job. Default: none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Bounds the number of pending jobs; a `put` that would leave more
    /// than `max` jobs waiting returns [`PutError::Full`]. A put that
    /// launches at once never counts against the bound, so `max_pending(0)`
    /// is legal and means "run now or refuse": a put succeeds only when a
    /// width slot (and a rate token) is free. Default: unbounded.
    pub fn max_pending(mut self, max: usize) -> Self {
        self.config.max_pending = Some(max);
        self
    }

    /// With [`max_pending`](Builder::max_pending): when a put finds the
    /// queue full, drop the oldest pending job (the one put longest ago,
    /// whatever its priority) to take the new one, instead of refusing the
    /// put. The dropped job's handle resolves [`Outcome::Dropped`]
    /// (and the `on_finish` hook sees it). Default: refuse.
    ///
    /// [`Outcome::Dropped`]: crate::Outcome::Dropped
    pub fn drop_oldest(mut self, on: bool) -> Self {
        self.config.drop_oldest = on;
        self
    }

    /// A name for logs and diagnostics.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// Whether the stall watchdog watches this queue's jobs (feature
    /// `watchdog`; on by default with it). A watched job whose poll blocks
    /// its thread past the watchdog's threshold is reported with its id, this
    /// queue's name, the stack and the cause. Costs a few stores per poll.
    /// Without the feature there is nothing to watch with, and this does
    /// nothing.
    pub fn watch(mut self, on: bool) -> Self {
        self.config.watch = on;
        self
    }

    /// Starts the queue paused: jobs can be put but none launch until
    /// [`resume`](DispatchQueue::resume).
    pub fn paused(mut self, paused: bool) -> Self {
        self.config.paused = paused;
        self
    }

    /// Calls `hook` with every job once its outcome is decided: finished,
    /// failed, cancelled, timed out, panicked, or not run because the queue
    /// stopped. It runs on whichever thread decided the outcome, before the
    /// job's handle resolves, and must be quick and must not block: record,
    /// count or send the job somewhere, nothing more. (It may call the
    /// queue's own methods.)
    ///
    /// This is how a layer above the queue (metrics, a durable store) learns
    /// every outcome, including those its job function never sees.
    pub fn on_finish(mut self, hook: impl Fn(&Job<A, R, E>) + Send + Sync + 'static) -> Self {
        self.on_finish = Some(Box::new(hook));
        self
    }

    /// Builds the queue on the current Tokio runtime.
    ///
    /// # Panics
    ///
    /// If called outside a Tokio runtime; use [`build_on`](Builder::build_on)
    /// to name one.
    pub fn build(self) -> DispatchQueue<A, R, E> {
        self.build_on(tokio::runtime::Handle::current())
    }

    /// Builds the queue on the given runtime: its workers are spawned there,
    /// so `put` works from any thread.
    pub fn build_on(self, runtime: tokio::runtime::Handle) -> DispatchQueue<A, R, E> {
        let core = Arc::new(Core::new(
            self.config,
            runtime,
            self.spawner,
            self.on_finish,
        ));
        DispatchQueue {
            owner: Arc::new(Owner { core }),
        }
    }
}

impl<A, R, E> DispatchQueue<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// Starts building a queue around an async job function.
    pub fn builder<F, Fut>(job: F) -> Builder<A, R, E>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        let job = Arc::new(job);
        let spawner: Spawner<A, R, E> = Box::new(move |core, launch| {
            let runtime = core.runtime.clone();
            runtime.spawn(worker::work(core, job.clone(), launch));
        });
        Builder {
            config: Config {
                name: None,
                width: 1,
                rate: None,
                timeout: None,
                max_pending: None,
                drop_oldest: false,
                paused: false,
                watch: cfg!(feature = "watchdog"),
            },
            spawner,
            on_finish: None,
        }
    }

    fn core(&self) -> &Arc<Core<A, R, E>> {
        &self.owner.core
    }

    /// A handle that does not keep the queue alive.
    pub fn downgrade(&self) -> WeakDispatchQueue<A, R, E> {
        WeakDispatchQueue {
            owner: Arc::downgrade(&self.owner),
        }
    }

    /// The queue's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        self.core().name.as_deref()
    }

    /// Queues a job with the given priority (lower runs first).
    ///
    /// Never waits. Fails, giving the argument back, if the queue is stopped
    /// or full.
    pub fn put(&self, arg: A, priority: Priority) -> Result<JobHandle<A, R, E>, PutError<A>> {
        self.put_with(arg, JobOptions::priority(priority))
    }

    /// Queues a job with per-job options (priority, timeout).
    pub fn put_with(&self, arg: A, options: JobOptions) -> Result<JobHandle<A, R, E>, PutError<A>> {
        let extras = dispatcher::Extras {
            timeout: options.timeout,
            allow_block: options.allow_block,
            report_id: options.report_id,
        };
        let (id, slot) = self.core().put(arg, options.priority, extras)?;
        Ok(JobHandle::new(id, slot, self.core().clone()))
    }

    /// Cancels a pending or underway job. See [Cancel](DispatchQueue#cancel).
    pub fn cancel(&self, id: JobId) -> Result<(), CancelError> {
        self.core().cancel(id)
    }

    /// Changes a pending job's priority; returns the old one.
    pub fn reprioritize(&self, id: JobId, priority: Priority) -> Result<Priority, JobError> {
        self.core().reprioritize(id, priority)
    }

    /// Sets the width. See [Width](DispatchQueue#width). A stopped queue
    /// refuses (and keeps the width it had).
    pub fn set_width(&self, width: usize) -> Result<(), StoppedError> {
        self.core().set_width(width)
    }

    /// The width (kept while paused).
    pub fn width(&self) -> usize {
        self.core().width()
    }

    /// Sets or removes the launch rate. The new rate starts with a full
    /// burst. A stopped queue refuses.
    pub fn set_rate(&self, rate: Option<Rate>) -> Result<(), StoppedError> {
        self.core().set_rate(rate)
    }

    /// The launch rate, if limited.
    pub fn rate(&self) -> Option<Rate> {
        self.core().rate()
    }

    /// Sets or removes the default timeout of jobs launched from now on. A
    /// stopped queue refuses.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), StoppedError> {
        self.core().set_timeout(timeout)
    }

    /// The default job timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.core().timeout()
    }

    /// `(underway, pending)`: exact counts, taken together.
    pub fn size(&self) -> (usize, usize) {
        self.core().size()
    }

    /// When the oldest pending job (the one put longest ago, whatever its
    /// priority) was put; `None` when nothing is pending. Costs one look per
    /// distinct pending priority, not a copy of the queue.
    pub fn oldest_pending(&self) -> Option<Stamp> {
        self.core().oldest_pending()
    }

    /// Pending jobs in the order they will launch (a snapshot).
    pub fn pending(&self) -> Vec<JobInfo<A>> {
        self.core().pending()
    }

    /// Underway jobs in the order they launched (a snapshot).
    pub fn underway(&self) -> Vec<JobInfo<A>> {
        self.core().underway()
    }

    /// Stops launches now; the returned future resolves when no job is
    /// underway. See [Pause](DispatchQueue#pause).
    pub fn pause(&self) -> impl Future<Output = ()> + Send + 'static {
        self.core().pause();
        let core = self.core().clone();
        async move { core.drained().await }
    }

    /// Whether the queue is paused.
    pub fn is_paused(&self) -> bool {
        self.core().is_paused()
    }

    /// Restarts launches, optionally with a new width. On a queue that is not
    /// paused this only applies the width, if given.
    pub fn resume(&self, width: Option<usize>) -> Result<(), StoppedError> {
        self.core().resume(width)
    }

    /// Stops the queue now and returns, once underway jobs are gone, the jobs
    /// that never ran. See [Stop](DispatchQueue#stop).
    ///
    /// The queue is stopped (puts refused, pending handles resolved) as soon
    /// as this is called; awaiting the future only waits for underway jobs.
    /// To stop without waiting, drop the future: `drop(q.stop(StopMode::Wait))`.
    /// Stopping a stopped queue returns an empty list.
    pub fn stop(&self, mode: StopMode) -> impl Future<Output = Vec<Job<A, R, E>>> + Send + 'static {
        let unrun = self.core().stop_now(mode == StopMode::CancelUnderway);
        let core = self.core().clone();
        async move {
            if let StopMode::CancelAfter(grace) = mode {
                // No timer when nothing is underway: this future may be
                // awaited after the queue's runtime is gone.
                if !core.is_drained() && tokio::time::timeout(grace, core.drained()).await.is_err()
                {
                    core.cancel_underway();
                }
            }
            core.drained().await;
            unrun
        }
    }

    /// Whether the queue has been stopped (by [`stop`](DispatchQueue::stop),
    /// or because its runtime shut down).
    pub fn is_stopped(&self) -> bool {
        self.core().is_stopped()
    }

    /// How many panics the queue caught in user code outside a job's own
    /// poll: in the [`on_finish`](Builder::on_finish) hook, in a job
    /// future's `Drop`, in the `Drop` of a result nobody waits for, or in
    /// `A::clone`. Each is also logged (`tracing`, level error); none stops
    /// the queue, loses a handle or costs width. See [Panics](DispatchQueue#panics).
    pub fn stray_panics(&self) -> u64 {
        self.core().stray_panics()
    }
}
