//! [`TaskPool`]: counting in-flight work, and waiting for it to drain.
//!
//! The model (what counts, when `notify_when_empty` resolves, how it compares
//! to tokio-util's `TaskTracker`) is documented on [`TaskPool`] itself, where
//! users see it: this module is private and re-exported from the crate root.
//!
//! # Implementation details
//!
//! One 64-bit atomic holds the count (low 32 bits) and an *epoch* (high 32
//! bits) that is bumped by the same atomic operation that takes the count to
//! zero. A waiter remembers the epoch of its call; it is done when the epoch
//! has moved. To sleep, it creates a [`Notified`](tokio::sync::futures::Notified),
//! [`enable`](tokio::sync::futures::Notified::enable)s it, and only then reads
//! the epoch again: the task that reaches zero bumps the epoch before calling
//! [`notify_waiters`](tokio::sync::Notify::notify_waiters), so a waiter either
//! sees the new epoch or is registered in time to be woken. A wake-up from an
//! older drain (one whose notification was late) finds the epoch unchanged and
//! goes back to sleep. The epoch wraps after 2³² drains; a waiter would have
//! to sleep through exactly a multiple of that many to miss one.
//!
//! Adding work is one `fetch_add`; finishing is one compare-and-swap loop, and
//! only a finish that reaches zero touches the [`Notify`].

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

pin_project_lite::pin_project! {
    /// A future counted by a [`TaskPool`]; from [`TaskPool::track`].
    ///
    /// Counts from its creation until it completes or is dropped. The inner
    /// future is dropped before the count goes down (struct fields drop in
    /// declaration order), so a [`notify_when_empty`](TaskPool::notify_when_empty)
    /// never resolves while its destructor still runs.
    #[must_use = "futures do nothing unless polled"]
    pub struct Tracked<F> {
        #[pin]
        future: F,
        token: Option<Token>,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = std::task::ready!(this.future.poll(cx));
        // Done: stop counting now rather than when the caller drops us.
        this.token.take();
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for Tracked<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("counted", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// Low bits of the state: the number of live futures.
const COUNT_MASK: u64 = (1 << 32) - 1;
/// One step of the epoch, which lives in the high bits.
const EPOCH_ONE: u64 = 1 << 32;
/// Refuse to count beyond this, long before the count could carry into the
/// epoch (as `Arc` does for its reference count).
const MAX_COUNT: u64 = COUNT_MASK / 2;

fn count(state: u64) -> usize {
    (state & COUNT_MASK) as usize
}

fn epoch(state: u64) -> u64 {
    state >> 32
}

/// Counts in-flight futures and tasks, and tells you when none is left.
///
/// It is the graceful-shutdown primitive of rdq: stop accepting work, then
/// `pool.notify_when_empty().await` to know that everything already started
/// has finished.
///
/// ```
/// use rdq::TaskPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = TaskPool::new();
/// for i in 0..10 {
///     pool.spawn(async move {
///         // handle connection i …
///         # let _ = i;
///     });
/// }
/// // Shutting down: stop accepting, then wait for what is in flight.
/// pool.notify_when_empty().await;
/// assert!(pool.is_empty());
/// # }
/// ```
///
/// # What is counted
///
/// A future counts from the moment it is handed to the pool — the call to
/// [`spawn`](TaskPool::spawn) or [`track`](TaskPool::track), not its first
/// poll — until it **completes or is dropped**, whichever comes first. So a
/// spawned task stops counting when it returns, when it panics (the panic
/// unwinds through the future and drops it), when it is
/// [aborted](tokio::task::JoinHandle::abort), and when its runtime shuts down.
/// A tracked future that is never polled counts until it is dropped.
///
/// The count goes down just *before* the task's output is stored, so for a
/// short moment after [`notify_when_empty`](TaskPool::notify_when_empty)
/// resolves, [`JoinHandle::is_finished`](tokio::task::JoinHandle::is_finished)
/// may still say `false`. Everything the futures did, including running their
/// destructors, happened before the wait resolved.
///
/// # When `notify_when_empty` resolves
///
/// The future returned by [`notify_when_empty`](TaskPool::notify_when_empty)
/// resolves once the count **has been zero at some moment since the call**:
///
/// - if the count is zero at the call, it resolves at its first poll, even if
///   work was added in between;
/// - otherwise it resolves after the count next drops to zero, even if new
///   work has raised it again by the time the waiting task runs.
///
/// The moment is taken at the call, not at the first poll, and nothing can
/// slip between checking the count and starting to wait (the source explains
/// how). A pool with a steady trickle of short tasks may reach zero often;
/// to wait for a *final* drain, stop adding work first.
///
/// # Comparison to `TaskTracker`
///
/// tokio-util's [`TaskTracker`] does the same counting and adds a *closed*
/// flag: its `wait()` resolves only when the tracker is closed **and** empty,
/// which guards against waiting before the first task was spawned. A
/// `TaskPool` has no such flag; it answers "when is nothing in flight?", and
/// the caller decides when to ask — typically after closing its own intake
/// (a listener, a [`DispatchQueue`](crate::DispatchQueue) it stopped). Like
/// `TaskTracker`, and unlike [`JoinSet`](tokio::task::JoinSet), it keeps no
/// outputs, so finished tasks free their memory at once, it needs only `&self`
/// to add work, and clones share one count. It also keeps rdq free of a
/// dependency on tokio-util.
///
/// # Sharing
///
/// Cloning a `TaskPool` gives another handle to the same count.
///
/// [`notify_when_empty`]: TaskPool::notify_when_empty
/// [`TaskTracker`]: https://docs.rs/tokio-util/latest/tokio_util/task/task_tracker/struct.TaskTracker.html
#[derive(Clone, Default)]
pub struct TaskPool {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Count in the low 32 bits, epoch (drains so far, wrapping) in the high.
    state: AtomicU64,
    /// Woken with `notify_waiters` each time the count reaches zero.
    emptied: Notify,
}

/// Counts one future while it is alive.
struct Token {
    inner: Arc<Inner>,
}

impl Drop for Token {
    fn drop(&mut self) {
        // Take the count down and, if this reaches zero, bump the epoch in
        // the same atomic step (see "Implementation details").
        let prev = self
            .inner
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(if s & COUNT_MASK == 1 {
                    (s - 1).wrapping_add(EPOCH_ONE)
                } else {
                    s - 1
                })
            })
            .unwrap_or_else(|s| s); // The closure always returns `Some`.
        if prev & COUNT_MASK == 1 {
            self.inner.emptied.notify_waiters();
        }
    }
}

impl TaskPool {
    /// An empty pool.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `future` on the current Tokio runtime and counts it until it
    /// completes, panics, is aborted, or is dropped with the runtime.
    ///
    /// Same as `tokio::spawn(pool.track(future))`. The count goes up before
    /// this returns.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does (the count is back
    /// down by then).
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new();
    /// let handle = pool.spawn(async { 6 * 7 });
    /// assert_eq!(pool.len(), 1); // counted at once, before it runs
    /// assert_eq!(handle.await.unwrap(), 42);
    /// pool.notify_when_empty().await;
    /// # }
    /// ```
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(self.track(future))
    }

    /// Wraps `future` so that it counts while it is alive, without spawning
    /// it.
    ///
    /// The count goes up now and down when the returned future completes or
    /// is dropped, whichever comes first — a tracked future that is never
    /// polled still counts until it is dropped.
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::TaskPool;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new();
    /// let work = pool.track(async { "done" });
    /// assert_eq!(pool.len(), 1);
    /// assert_eq!(work.await, "done");
    /// assert!(pool.is_empty());
    /// # }
    /// ```
    pub fn track<F>(&self, future: F) -> Tracked<F>
    where
        F: Future,
    {
        Tracked {
            future,
            token: Some(self.token()),
        }
    }

    /// The number of futures counted now.
    ///
    /// Other tasks may change it at any moment; use
    /// [`notify_when_empty`](TaskPool::notify_when_empty) to wait for zero.
    pub fn len(&self) -> usize {
        count(self.inner.state.load(Ordering::Acquire))
    }

    /// Whether nothing is counted now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the count has been zero at some moment since this call:
    /// at once if it is zero now, otherwise when it next reaches zero.
    ///
    /// The returned future does not borrow the pool and may be moved to
    /// another task. Dropping it is harmless. See
    /// [When `notify_when_empty` resolves](TaskPool#when-notify_when_empty-resolves).
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::TaskPool;
    /// use tokio::sync::oneshot;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let pool = TaskPool::new();
    /// let (finish, finished) = oneshot::channel::<()>();
    /// pool.spawn(async move {
    ///     let _ = finished.await;
    /// });
    ///
    /// let drained = pool.notify_when_empty(); // the count is 1 now
    /// finish.send(()).unwrap();
    /// drained.await; // resolves once the task above has finished
    /// assert!(pool.is_empty());
    /// # }
    /// ```
    pub fn notify_when_empty(&self) -> impl Future<Output = ()> + Send + 'static {
        let inner = Arc::clone(&self.inner);
        let start = inner.state.load(Ordering::Acquire);
        async move {
            if count(start) == 0 {
                return;
            }
            loop {
                let mut notified = pin!(inner.emptied.notified());
                // Register before checking, so that a drain after the check
                // is sure to wake us.
                notified.as_mut().enable();
                if epoch(inner.state.load(Ordering::Acquire)) != epoch(start) {
                    return;
                }
                notified.await;
            }
        }
    }

    fn token(&self) -> Token {
        let prev = self.inner.state.fetch_add(1, Ordering::Relaxed);
        if prev & COUNT_MASK >= MAX_COUNT {
            // Undo through the token, so waiters are handled as usual.
            drop(Token {
                inner: Arc::clone(&self.inner),
            });
            panic!("TaskPool: more than {MAX_COUNT} futures in flight");
        }
        Token {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl fmt::Debug for TaskPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskPool")
            .field("len", &self.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use std::task::Poll;

    /// Polls once; `true` if ready.
    async fn ready_now<F: Future>(f: std::pin::Pin<&mut F>) -> bool {
        let mut f = f;
        poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx).is_ready())).await
    }

    #[tokio::test]
    async fn empty_pool_resolves_at_once() {
        let pool = TaskPool::new();
        assert!(pool.is_empty());
        let mut wait = pin!(pool.notify_when_empty());
        assert!(ready_now(wait.as_mut()).await);
    }

    #[tokio::test]
    async fn zero_at_call_wins_over_work_added_before_poll() {
        let pool = TaskPool::new();
        let mut wait = pin!(pool.notify_when_empty());
        let busy = pool.track(std::future::pending::<()>());
        assert_eq!(pool.len(), 1);
        assert!(ready_now(wait.as_mut()).await);
        drop(busy);
    }

    #[tokio::test]
    async fn unpolled_tracked_future_counts_until_dropped() {
        let pool = TaskPool::new();
        let a = pool.track(async {});
        let b = pool.track(async {});
        assert_eq!(pool.len(), 2);
        drop(a);
        assert_eq!(pool.len(), 1);
        b.await;
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_drain_between_call_and_poll_is_not_missed() {
        let pool = TaskPool::new();
        let first = pool.track(async {});
        let mut wait = pin!(pool.notify_when_empty());
        drop(first); // zero here …
        let second = pool.track(std::future::pending::<()>()); // … and busy again
        assert_eq!(pool.len(), 1);
        assert!(ready_now(wait.as_mut()).await);
        drop(second);
    }

    #[tokio::test]
    async fn a_decrement_above_zero_does_not_resolve() {
        let pool = TaskPool::new();
        let a = pool.track(async {});
        let b = pool.track(async {});
        let mut wait = pin!(pool.notify_when_empty());
        assert!(!ready_now(wait.as_mut()).await);
        drop(a);
        assert!(!ready_now(wait.as_mut()).await);
        drop(b);
        assert!(ready_now(wait.as_mut()).await);
    }

    #[tokio::test]
    async fn epoch_moves_once_per_drain() {
        let pool = TaskPool::new();
        for n in 1..=3 {
            drop(pool.track(async {}));
            assert_eq!(epoch(pool.inner.state.load(Ordering::Relaxed)), n);
        }
        let a = pool.track(async {});
        let b = pool.track(async {});
        drop(a);
        assert_eq!(epoch(pool.inner.state.load(Ordering::Relaxed)), 3);
        drop(b);
        assert_eq!(epoch(pool.inner.state.load(Ordering::Relaxed)), 4);
    }

    /// Records the pool's count when dropped.
    struct Probe {
        pool: TaskPool,
        seen: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.seen.lock().unwrap().push(self.pool.len());
        }
    }

    #[tokio::test]
    async fn dropped_before_it_stops_counting() {
        let pool = TaskPool::new();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let future = |done: bool| {
            let probe = Probe {
                pool: pool.clone(),
                seen: seen.clone(),
            };
            async move {
                let _probe = probe;
                if !done {
                    std::future::pending::<()>().await;
                }
            }
        };
        // Never polled.
        drop(pool.track(future(false)));
        // Suspended.
        let mut suspended = Box::pin(pool.track(future(false)));
        assert!(!ready_now(suspended.as_mut()).await);
        drop(suspended);
        // Completed.
        pool.track(future(true)).await;
        // Spawned, then aborted.
        let handle = pool.spawn(future(false));
        tokio::task::yield_now().await;
        handle.abort();
        let _ = handle.await;

        assert_eq!(*seen.lock().unwrap(), [1, 1, 1, 1]);
        assert!(pool.is_empty());
    }

    #[test]
    fn epoch_wraps_without_touching_the_count() {
        let pool = TaskPool::new();
        // Epoch at its maximum, count zero.
        pool.inner.state.store(!COUNT_MASK, Ordering::Relaxed);
        drop(pool.track(async {}));
        let state = pool.inner.state.load(Ordering::Relaxed);
        assert_eq!((count(state), epoch(state)), (0, 0));
    }
}
