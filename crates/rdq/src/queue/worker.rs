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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use tokio::time::{Instant, Sleep};

use super::dispatcher::Core;
use super::job::Outcome;

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

/// Resolves the job of a worker dropped mid-job.
struct Guard<'a, A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    core: &'a Arc<Core<A, R, E>>,
    index: Option<usize>,
}

impl<A, R, E> Drop for Guard<'_, A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    fn drop(&mut self) {
        if let Some(index) = self.index {
            self.core.abandon(index);
        }
    }
}

/// A worker: runs its launch, then each job `finish` hands it, then exits.
pub(crate) async fn work<A, R, E, F, Fut>(
    core: Arc<Core<A, R, E>>,
    job_fn: Arc<F>,
    mut launch: Launch<A>,
) where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let mut sleep: Option<Pin<Box<Sleep>>> = None;
    // One watchdog registration per worker, relabelled for each job.
    let watch = Watch::new(core.watch);
    loop {
        let mut guard = Guard {
            core: &core,
            index: Some(launch.index),
        };
        watch.begin(&core, &launch);
        let outcome = run(&*job_fn, &mut launch, &mut sleep, &watch).await;
        watch.end();
        let stopped = core.now();
        // Yield here, if the task's budget is spent, rather than between
        // taking the next job and starting it: a job starts right after its
        // launch, so start order is launch order.
        tokio::task::consume_budget().await;
        guard.index = None;
        match core.finish(launch, outcome, stopped) {
            Some(next) => launch = next,
            None => return,
        }
    }
}

/// Runs one job to its outcome. Its future is dropped before this returns.
async fn run<A, R, E, F, Fut>(
    job_fn: &F,
    launch: &mut Launch<A>,
    sleep: &mut Option<Pin<Box<Sleep>>>,
    watch: &Watch,
) -> Outcome<R, E>
where
    F: Fn(A) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let arg = launch.arg.take().expect("a launch carries its argument");
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| job_fn(arg))) {
        Ok(fut) => fut,
        Err(panic) => return Outcome::Panicked(panic_message(panic)),
    };
    let mut fut = pin!(fut);
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
    std::future::poll_fn(|cx| {
        if signal.is_cancelled() {
            return Poll::Ready(Outcome::Cancelled);
        }
        signal.waker.register(cx.waker());
        if signal.is_cancelled() {
            return Poll::Ready(Outcome::Cancelled);
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| watch.poll(fut.as_mut(), cx))) {
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
    .await
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

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
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
