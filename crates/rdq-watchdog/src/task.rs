//! Watched tasks: the future wrapper, and the registry [`dump`] reads.
//!
//! [`dump`]: crate::Watchdog::dump

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock;
use crate::slot::InPoll;

static LABELS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

/// An interned label (a queue's name). Interned once, when a queue or task
/// is made, so a poll stores a number, never a string.
pub fn intern(label: &str) -> u32 {
    let mut labels = LABELS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = labels.iter().position(|l| *l == label) {
        return i as u32 + 1;
    }
    labels.push(Box::leak(label.to_owned().into_boxed_str()));
    labels.len() as u32
}

/// The label behind an interned number.
pub(crate) fn label(n: u32) -> Option<&'static str> {
    let labels = LABELS.lock().unwrap_or_else(|e| e.into_inner());
    n.checked_sub(1)
        .and_then(|i| labels.get(i as usize).copied())
}

/// What the monitor and [`dump`](crate::Watchdog::dump) know of a watched
/// task or job. All plain atomics, written by the polling thread.
#[derive(Debug, Default)]
struct Info {
    id: AtomicU64,
    label: AtomicU32,
    allow_block: AtomicBool,
    /// Whether it holds a job now (a worker between jobs does not).
    active: AtomicBool,
    started: AtomicU64,
    polls: AtomicU64,
    /// Coarse µs when the poll in progress began; 0 between polls.
    poll_started: AtomicU64,
    last_poll_us: AtomicU64,
    last_poll_end: AtomicU64,
}

static TASKS: Mutex<Vec<Weak<Info>>> = Mutex::new(Vec::new());

/// A registered task: identity and poll statistics, for reports and
/// [`dump`](crate::Watchdog::dump). Registration takes a lock; polling
/// through it does not.
///
/// One handle can stand for many jobs in turn (a dispatch queue's worker
/// reuses one per worker): [`begin`](TaskHandle::begin) each job,
/// [`end`](TaskHandle::end) it.
pub struct TaskHandle {
    info: Arc<Info>,
}

impl fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.info.id.load(Ordering::Relaxed))
            .field("polls", &self.info.polls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for TaskHandle {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskHandle {
    /// A registered handle, not yet running anything.
    pub fn new() -> TaskHandle {
        let info = Arc::new(Info::default());
        let mut tasks = TASKS.lock().unwrap_or_else(|e| e.into_inner());
        // Sweep out tasks that are gone, now and then.
        if tasks.len() >= 64 && tasks.len().is_power_of_two() {
            tasks.retain(|t| t.strong_count() > 0);
        }
        tasks.push(Arc::downgrade(&info));
        TaskHandle { info }
    }

    /// Starts a job (or task): its id, its label (see [`intern`]), and
    /// whether it is allowed to block its thread (then never reported).
    pub fn begin(&self, id: u64, label: u32, allow_block: bool) {
        let i = &self.info;
        i.id.store(id, Ordering::Relaxed);
        i.label.store(label, Ordering::Relaxed);
        i.allow_block.store(allow_block, Ordering::Relaxed);
        i.started.store(clock::now(), Ordering::Relaxed);
        i.polls.store(0, Ordering::Relaxed);
        i.last_poll_us.store(0, Ordering::Relaxed);
        i.last_poll_end.store(0, Ordering::Relaxed);
        i.active.store(true, Ordering::Release);
    }

    /// Ends the job: it leaves [`dump`](crate::Watchdog::dump).
    pub fn end(&self) {
        self.info.active.store(false, Ordering::Release);
    }

    /// Polls `fut` once as this task: the thread's slot says so for the
    /// duration, and the task's statistics are updated.
    #[inline]
    pub fn poll<F: Future + ?Sized>(
        &self,
        fut: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<F::Output> {
        let i = &self.info;
        let now = clock::now();
        i.poll_started.store(now.max(1), Ordering::Relaxed);
        let guard = InPoll::enter(
            i.id.load(Ordering::Relaxed),
            i.label.load(Ordering::Relaxed),
            i.allow_block.load(Ordering::Relaxed),
        );
        let out = fut.poll(cx);
        drop(guard);
        let end = clock::now();
        i.poll_started.store(0, Ordering::Relaxed);
        i.last_poll_us
            .store(end.saturating_sub(now), Ordering::Relaxed);
        i.last_poll_end.store(end, Ordering::Relaxed);
        i.polls
            .store(i.polls.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        out
    }
}

/// A future watched by the watchdog: from [`watch`].
#[must_use = "futures do nothing unless polled"]
pub struct Watched<F> {
    inner: Pin<Box<F>>,
    task: TaskHandle,
}

impl<F> fmt::Debug for Watched<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched")
            .field("task", &self.task)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for Watched<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let out = this.task.poll(this.inner.as_mut(), cx);
        if out.is_ready() {
            this.task.end();
        }
        out
    }
}

impl<F> Drop for Watched<F> {
    fn drop(&mut self) {
        self.task.end();
    }
}

/// Watches a future: while it is polled, the watchdog knows which task the
/// thread runs, and a poll that runs past the threshold is reported as a
/// stall of `label` task `id`.
pub fn watch<F: Future>(fut: F, label: &str, id: u64) -> Watched<F> {
    let task = TaskHandle::new();
    task.begin(id, intern(label), false);
    Watched {
        inner: Box::pin(fut),
        task,
    }
}

/// Like [`watch`], for a task allowed to block its thread: it shows in the
/// dump but is never reported as a stall.
pub fn watch_blocking<F: Future>(fut: F, label: &str, id: u64) -> Watched<F> {
    let task = TaskHandle::new();
    task.begin(id, intern(label), true);
    Watched {
        inner: Box::pin(fut),
        task,
    }
}

/// Spawns a watched task on the current Tokio runtime: the one-line way to
/// watch a task (`rdq_watchdog::spawn(fut, "poller", 1)` instead of
/// `tokio::spawn(fut)`).
///
/// # Panics
///
/// Outside a Tokio runtime, as `tokio::spawn` does.
pub fn spawn<F>(fut: F, label: &str, id: u64) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(watch(fut, label, id))
}

/// One watched task or job, as [`dump`](crate::Watchdog::dump) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDump {
    /// Its id (a job id, for a queue's job).
    pub id: u64,
    /// Its label (the queue), if any.
    pub label: Option<String>,
    /// Since it began.
    pub age: Duration,
    /// In a poll for this long, if it is in one now.
    pub in_poll: Option<Duration>,
    /// Since its last poll ended (waiting for a wake-up), if not in a poll.
    pub idle: Option<Duration>,
    /// Polls so far.
    pub polls: u64,
    /// How long its last poll took (tick resolution).
    pub last_poll: Duration,
    /// Whether it may block its thread.
    pub allow_block: bool,
}

/// Every active watched task, now.
pub(crate) fn dump() -> Vec<TaskDump> {
    let now = clock::now();
    let us = |from: u64| Duration::from_micros(now.saturating_sub(from));
    let tasks = TASKS.lock().unwrap_or_else(|e| e.into_inner());
    tasks
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|i| i.active.load(Ordering::Acquire))
        .map(|i| {
            let poll_started = i.poll_started.load(Ordering::Relaxed);
            let last_end = i.last_poll_end.load(Ordering::Relaxed);
            TaskDump {
                id: i.id.load(Ordering::Relaxed),
                label: label(i.label.load(Ordering::Relaxed)).map(str::to_owned),
                age: us(i.started.load(Ordering::Relaxed)),
                in_poll: (poll_started != 0).then(|| us(poll_started)),
                idle: (poll_started == 0).then(|| {
                    us(if last_end == 0 {
                        i.started.load(Ordering::Relaxed)
                    } else {
                        last_end
                    })
                }),
                polls: i.polls.load(Ordering::Relaxed),
                last_poll: Duration::from_micros(i.last_poll_us.load(Ordering::Relaxed)),
                allow_block: i.allow_block.load(Ordering::Relaxed),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_interned_once() {
        let a = intern("sms-test");
        assert_eq!(intern("sms-test"), a);
        assert_ne!(intern("email-test"), a);
        assert_eq!(label(a), Some("sms-test"));
        assert_eq!(label(0), None);
    }

    #[test]
    fn a_watched_task_is_in_the_dump_while_it_lives() {
        let fut = watch(std::future::pending::<()>(), "dump-test", 9001);
        let mut fut = Box::pin(fut);
        let waker = std::task::Waker::noop();
        assert!(fut
            .as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending());
        let mine: Vec<TaskDump> = dump().into_iter().filter(|t| t.id == 9001).collect();
        assert_eq!(mine.len(), 1);
        assert_eq!(
            (mine[0].polls, mine[0].label.as_deref()),
            (1, Some("dump-test"))
        );
        assert!(mine[0].in_poll.is_none() && mine[0].idle.is_some());
        drop(fut);
        assert!(dump().iter().all(|t| t.id != 9001));
    }
}
