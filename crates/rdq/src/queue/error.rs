//! Errors of the queue's operations. A failed `put` gives the argument back.

use super::job::JobId;

/// Why a [`put`](crate::DispatchQueue::put) was refused. Holds the argument,
/// so nothing is lost: [`into_inner`](PutError::into_inner) gives it back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError<A> {
    /// The queue was stopped (or every handle to it dropped).
    #[error("the queue is stopped")]
    Stopped(A),
    /// The queue already holds its maximum number of pending jobs.
    #[error("the queue is full ({1} pending jobs)")]
    Full(A, usize),
}

impl<A> PutError<A> {
    /// The argument that was not queued.
    pub fn into_inner(self) -> A {
        match self {
            PutError::Stopped(a) | PutError::Full(a, _) => a,
        }
    }
}

impl<A> std::fmt::Debug for PutError<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The argument may be large or secret; show only the kind.
        match self {
            PutError::Stopped(_) => f.write_str("Stopped(..)"),
            PutError::Full(_, max) => write!(f, "Full(.., {max})"),
        }
    }
}

/// Why an operation on one job by id failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The queue never issued this id.
    #[error("job {0} is unknown to this queue")]
    Unknown(JobId),
    /// The job has finished (or was dropped by `stop`); its outcome is final.
    #[error("job {0} has already finished")]
    Finished(JobId),
    /// The job is underway; only pending jobs can be reprioritized.
    #[error("job {0} is underway; only pending jobs can be reprioritized")]
    Underway(JobId),
}

/// The error of [`DispatchQueue::cancel`](crate::DispatchQueue::cancel).
pub type CancelError = JobError;

/// The queue has been stopped; the operation cannot take effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the queue is stopped")]
pub struct StoppedError;
