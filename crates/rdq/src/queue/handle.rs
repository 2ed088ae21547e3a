//! The future a `put` returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::dispatcher::Core;
use super::error::CancelError;
use super::job::{Job, JobId};
use super::slot::Slot;

/// A job in the queue: a future that resolves to the finished [`Job`].
///
/// Every handle resolves, whatever happens to its job: with its result, or as
/// [`Cancelled`](crate::Outcome::Cancelled), [`TimedOut`](crate::Outcome::TimedOut),
/// [`Panicked`](crate::Outcome::Panicked), or [`NotRun`](crate::Outcome::NotRun)
/// when the queue stops first.
///
/// Dropping a handle does **not** cancel the job (as with
/// [`tokio::task::JoinHandle`]); call [`cancel`](JobHandle::cancel) for that.
pub struct JobHandle<A, R, E> {
    id: JobId,
    slot: Arc<Slot<Job<A, R, E>>>,
    core: Arc<Core<A, R, E>>,
    done: bool,
}

impl<A, R, E> JobHandle<A, R, E> {
    pub(crate) fn new(id: JobId, slot: Arc<Slot<Job<A, R, E>>>, core: Arc<Core<A, R, E>>) -> Self {
        JobHandle {
            id,
            slot,
            core,
            done: false,
        }
    }

    /// The job's id.
    pub fn id(&self) -> JobId {
        self.id
    }
}

impl<A, R, E> JobHandle<A, R, E>
where
    A: Clone + Send + 'static,
    R: Send + 'static,
    E: Send + 'static,
{
    /// Cancels the job: same as [`DispatchQueue::cancel`](crate::DispatchQueue::cancel)
    /// with this handle's id.
    pub fn cancel(&self) -> Result<(), CancelError> {
        self.core.cancel(self.id)
    }
}

impl<A, R, E> Future for JobHandle<A, R, E> {
    type Output = Job<A, R, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        assert!(!self.done, "JobHandle polled after it resolved");
        let job = std::task::ready!(self.slot.poll_take(cx));
        self.done = true;
        Poll::Ready(job)
    }
}

impl<A, R, E> Drop for JobHandle<A, R, E> {
    fn drop(&mut self) {
        if !self.done {
            self.slot.close();
        }
    }
}

impl<A, R, E> fmt::Debug for JobHandle<A, R, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
