//! Workers: the tasks that run jobs.
//!
//! A worker runs the job it was launched with, records the outcome through
//! [`Core::finish`], and keeps going with the next job `finish` hands it; when
//! there is none, it exits. See the [dispatcher](super::dispatcher) for why.
//!
//! One job at a time, a worker polls the job's future inside
//! `catch_unwind` (a panic becomes an outcome), checks its cancel signal
//! before each poll, and polls the job's timeout timer, which it keeps across
//! jobs and resets in place instead of allocating one per job.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use tokio::time::{Instant, Sleep};

use super::dispatcher::Core;
use super::job::{JobId, Outcome};

/// How a worker learns that its job is cancelled. One per worker, reused for
/// each job it runs; the flag is reset under the lock at each launch.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    cancel: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Clears the flag for the worker's next job (called under the lock).
    pub(super) fn reset(&self) {
        self.cancel.store(false, Ordering::Relaxed);
    }

    pub(super) fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(super) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }
}

/// A job handed to a worker.
pub(crate) struct Launch<A> {
    /// The job's entry in the underway table.
    pub(super) index: usize,
    /// The queue's id for it.
    pub(super) id: u64,
    /// Its id (for the watchdog).
    #[cfg_attr(not(feature = "watchdog"), allow(dead_code))] // Only the watchdog reads it.
    pub(super) job_id: u64,
    /// It may block its thread (the watchdog does not report it).
    #[cfg_attr(not(feature = "watchdog"), allow(dead_code))] // Only the watchdog reads it.
    pub(super) allow_block: bool,
    /// The clone of the argument that the job function consumes.
    pub(super) arg: Option<A>,
    pub(super) deadline: Option<Instant>,
    pub(super) signal: Arc<Signal>,
}

/// A worker's claim on the job it is running, held outside the worker's
/// future so that it outlives it.
///
/// A worker's task is never aborted (nobody holds its `JoinHandle`) and a
/// panic inside it is caught (see [`work`]), so the only way its future can
/// be dropped with a claim still set is the runtime shutting down, or
/// refusing the task because it already has. The claim then tells the queue,
/// which resolves the job and stops (see `Core::runtime_gone`).
struct Claim<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    core: Arc<Core<A, R, E>>,
    /// The job's index in the underway table, or `NONE`.
    index: AtomicUsize,
    /// Whether the job function has been called for this job.
    started: AtomicBool,
}

const NONE: usize = usize::MAX;

impl<A, R, E> Claim<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn set(&self, index: usize) {
        self.started.store(false, Ordering::Relaxed);
        self.index.store(index, Ordering::Relaxed);
    }

    fn take(&self) -> Option<usize> {
        match self.index.swap(NONE, Ordering::Relaxed) {
            NONE => None,
            index => Some(index),
        }
    }
}

impl<A, R, E> Drop for Claim<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(index) = self.take() {
            let started = self.started.load(Ordering::Relaxed);
            self.core.runtime_gone(Some((index, started)));
        }
    }
}

/// A worker: runs its launch, then each job `finish` hands it, then exits.
///
/// The claim on the job is made here, before the task is spawned, so a task
/// that a shut-down runtime refuses (dropping it unpolled) still resolves
/// its job.
pub(crate) fn work<A, R, E, F, Fut>(
    core: Arc<Core<A, R, E>>,
    job_fn: Arc<F>,
    launch: Launch<A>,
) -> impl Future<Output = ()> + Send + 'static
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let claim = Claim {
        core,
        index: AtomicUsize::new(launch.index),
        started: AtomicBool::new(false),
    };
    async move {
        let mut jobs = pin!(run_jobs(&claim, &*job_fn, launch));
        // User code cannot panic out of `run_jobs` (its panics are outcomes or
        // caught where they happen); this catches a bug of our own, so that
        // it costs one job, not a unit of width for good.
        let caught = std::future::poll_fn(|cx| {
            match std::panic::catch_unwind(AssertUnwindSafe(|| jobs.as_mut().poll(cx))) {
                Ok(Poll::Ready(())) => Poll::Ready(None),
                Ok(Poll::Pending) => Poll::Pending,
                Err(panic) => Poll::Ready(Some(panic)),
            }
        })
        .await;
        if let Some(panic) = caught {
            tracing::error!(
                queue = claim.core.name.as_deref().unwrap_or(""),
                "an rdq worker panicked; its job resolves as cancelled: {}",
                panic_message(panic)
            );
            if let Some(index) = claim.take() {
                claim.core.abandon(index);
            }
        }
    }
}

async fn run_jobs<A, R, E, F, Fut>(claim: &Claim<A, R, E>, job_fn: &F, mut launch: Launch<A>)
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let core = &claim.core;
    let mut sleep: Option<Pin<Box<Sleep>>> = None;
    // One watchdog registration per worker, relabelled for each job.
    let watch = Watch::new(core.watch);
    loop {
        watch.begin(core, &launch);
        let outcome = run(
            core,
            job_fn,
            &mut launch,
            &mut sleep,
            &watch,
            &claim.started,
        )
        .await;
        watch.end();
        let stopped = core.now();
        // Yield here, if the task's budget is spent, rather than between
        // taking the next job and starting it, so that a job this worker
        // takes starts at once. (Jobs taken by different workers start in
        // whatever order the runtime polls them: see "Launch order" on
        // `DispatchQueue`.)
        tokio::task::consume_budget().await;
        claim.take();
        match core.finish(launch, outcome, stopped) {
            Some(next) => {
                claim.set(next.index);
                launch = next;
            }
            None => return,
        }
    }
}

/// Runs one job to its outcome. Its future is dropped before this returns.
async fn run<A, R, E, F, Fut>(
    core: &Core<A, R, E>,
    job_fn: &F,
    launch: &mut Launch<A>,
    sleep: &mut Option<Pin<Box<Sleep>>>,
    watch: &Watch,
    started: &AtomicBool,
) -> Outcome<R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(A) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let arg = launch.arg.take().expect("a launch carries its argument");
    // A job cancelled before its worker got to it never starts.
    if launch.signal.is_cancelled() {
        core.drop_caught(job_id(launch), "dropping a cancelled job's argument", arg);
        return Outcome::Cancelled;
    }
    started.store(true, Ordering::Relaxed);
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| job_fn(arg))) {
        Ok(fut) => fut,
        Err(panic) => return Outcome::Panicked(panic_message(panic)),
    };
    // In an `Option` so that it can be dropped in place, under
    // `catch_unwind`: a future that panics while being dropped (after a
    // cancel, a timeout, or its own end) must not take the worker with it.
    let mut fut = pin!(Some(fut));
    let mut timer = match launch.deadline {
        Some(deadline) => {
            let sleep = match sleep {
                Some(sleep) => {
                    sleep.as_mut().reset(deadline);
                    sleep
                }
                None => sleep.insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            Some(sleep.as_mut())
        }
        None => None,
    };
    let signal = &*launch.signal;
    let outcome = std::future::poll_fn(|cx| {
        if signal.is_cancelled() {
            return Poll::Ready(Outcome::Cancelled);
        }
        signal.waker.register(cx.waker());
        if signal.is_cancelled() {
            return Poll::Ready(Outcome::Cancelled);
        }
        let live = fut
            .as_mut()
            .as_pin_mut()
            .expect("polled before it is dropped");
        match std::panic::catch_unwind(AssertUnwindSafe(|| watch.poll(live, cx))) {
            Ok(Poll::Ready(Ok(r))) => Poll::Ready(Outcome::Ok(r)),
            Ok(Poll::Ready(Err(e))) => Poll::Ready(Outcome::Failed(e)),
            Err(panic) => Poll::Ready(Outcome::Panicked(panic_message(panic))),
            Ok(Poll::Pending) => {
                let expired = timer
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if expired {
                    Poll::Ready(Outcome::TimedOut)
                } else {
                    Poll::Pending
                }
            }
        }
    })
    .await;
    if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| fut.set(None))) {
        core.stray_panic("dropping a job's future", job_id(launch), panic);
    }
    outcome
}

/// The id the queue knows a launched job by (for logs).
fn job_id<A>(launch: &Launch<A>) -> JobId {
    JobId::new(launch.id)
}

/// The worker's link to the stall watchdog: with the `watchdog` feature and
/// the queue's `watch` on, each poll of a job stamps the thread's slot.
#[cfg(feature = "watchdog")]
struct Watch(Option<rdq_watchdog::TaskHandle>);

#[cfg(feature = "watchdog")]
impl Watch {
    fn new(on: bool) -> Self {
        Watch(on.then(rdq_watchdog::TaskHandle::new))
    }

    fn begin<A, R, E>(&self, core: &Core<A, R, E>, launch: &Launch<A>) {
        if let Some(t) = &self.0 {
            t.begin(launch.job_id, core.label, launch.allow_block);
        }
    }

    fn end(&self) {
        if let Some(t) = &self.0 {
            t.end();
        }
    }

    #[inline]
    fn poll<F: Future>(
        &self,
        fut: Pin<&mut F>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<F::Output> {
        match &self.0 {
            Some(t) => t.poll(fut, cx),
            None => fut.poll(cx),
        }
    }
}

/// Without the `watchdog` feature: nothing.
#[cfg(not(feature = "watchdog"))]
struct Watch;

#[cfg(not(feature = "watchdog"))]
impl Watch {
    fn new(_on: bool) -> Self {
        Watch
    }

    fn begin<A, R, E>(&self, _core: &Core<A, R, E>, _launch: &Launch<A>) {}

    fn end(&self) {}

    #[inline]
    fn poll<F: Future>(
        &self,
        fut: Pin<&mut F>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<F::Output> {
        fut.poll(cx)
    }
}

pub(crate) fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => match panic.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "panic with a non-string payload".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::panic_message;

    #[test]
    fn panic_messages_of_every_payload_kind() {
        let owned = std::panic::catch_unwind(|| panic!("{} apples", 3)).unwrap_err();
        assert_eq!(panic_message(owned), "3 apples");
        let fixed = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(panic_message(fixed), "plain");
        let other = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(panic_message(other), "panic with a non-string payload");
    }
}
