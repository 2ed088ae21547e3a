//! Handlers: the code that runs a job of a given kind.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::row::{JobId, JobRow, Timestamp};

/// What a handler knows about the job it runs.
#[derive(Clone, Debug)]
pub struct JobContext {
    /// The job's id.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Which run this is (1 for the first).
    pub attempt: u32,
    /// Runs allowed in all.
    pub max_attempts: u32,
    /// Its priority.
    pub priority: i32,
    /// When it was put.
    pub queued_at: Timestamp,
}

impl JobContext {
    pub(crate) fn of(row: &JobRow) -> Self {
        JobContext {
            id: row.id,
            queue: row.queue.clone(),
            kind: row.kind.clone(),
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            priority: row.priority,
            queued_at: row.queued_at,
        }
    }

    /// Whether a failure now makes the job dead.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// What to do after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Retry after the queue's backoff, while attempts remain.
    Backoff,
    /// Retry after this long, while attempts remain (e.g. a `Retry-After`).
    After(Duration),
    /// Do not retry: the job is dead.
    Never,
    /// Run again after this long without spending an attempt: the job did not
    /// fail, it was told to come back later.
    Snooze(Duration),
    /// As `Snooze`, and hold every launch of the queue for as long: the
    /// target said it is overloaded (HTTP 429 or 503 with `Retry-After`).
    Throttle(Duration),
}

/// A handler's failure: a message and whether to retry.
///
/// Any `std::error::Error` converts into a retryable `HandlerError`, so `?`
/// works in handlers. For failures that retrying cannot fix (bad input, a
/// refusal), use [`HandlerError::permanent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerError {
    message: String,
    retry: Retry,
}

impl HandlerError {
    /// A failure worth retrying.
    pub fn msg(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: Retry::Backoff,
        }
    }

    /// A failure that retrying will not fix: the job goes dead at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError {
            message: message.into(),
            retry: Retry::Never,
        }
    }

    /// A failure to retry after `delay` instead of the backoff.
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        HandlerError {
            message: message.into(),
            retry: Retry::After(delay),
        }
    }

    /// Not a failure: run this job again after `delay`, without spending an
    /// attempt (its `max_attempts` grows by one, so the history stays true).
    pub fn snooze(message: impl Into<String>, delay: Duration) -> Self {
        HandlerError {
            message: message.into(),
            retry: Retry::Snooze(delay),
        }
    }

    /// The target is overloaded: snooze this job for `delay` and hold every
    /// launch of the queue for as long.
    pub fn throttle(message: impl Into<String>, delay: Duration) -> Self {
        HandlerError {
            message: message.into(),
            retry: Retry::Throttle(delay),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do next.
    pub fn retry(&self) -> Retry {
        self.retry
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(e: E) -> Self {
        HandlerError::msg(e.to_string())
    }
}

pub(crate) type BoxFuture =
    Pin<Box<dyn Future<Output = Result<Option<String>, HandlerError>> + Send>>;

/// A handler with its argument type erased: JSON text in, JSON text out.
pub(crate) type Erased = Arc<dyn Fn(&str, JobContext) -> BoxFuture + Send + Sync>;

pub(crate) fn erase<T, O, F, Fut>(handler: F) -> Erased
where
    T: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
    F: Fn(T, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
{
    Arc::new(move |args: &str, ctx: JobContext| -> BoxFuture {
        let args: T = match serde_json::from_str(args) {
            Ok(args) => args,
            Err(e) => {
                let msg = format!(
                    "arguments do not fit handler {:?} ({}): {e}",
                    ctx.kind,
                    std::any::type_name::<T>()
                );
                return Box::pin(std::future::ready(Err(HandlerError::permanent(msg))));
            }
        };
        let fut = handler(args, ctx);
        Box::pin(async move {
            let out = fut.await?;
            match serde_json::to_value(&out) {
                Ok(serde_json::Value::Null) => Ok(None),
                Ok(v) => Ok(Some(v.to_string())),
                Err(e) => Err(HandlerError::permanent(format!(
                    "the handler's result is not JSON: {e}"
                ))),
            }
        })
    })
}

/// Handlers by kind.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    pub(crate) handlers: HashMap<String, Erased>,
}

impl Registry {
    pub(crate) fn run(&self, row: &JobRow) -> BoxFuture {
        match self.handlers.get(&row.kind) {
            Some(h) => h(&row.args, JobContext::of(row)),
            None => {
                // Retry: a node that knows this kind (a newer deploy) may
                // take it later.
                let known: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
                let msg = format!(
                    "no handler for kind {:?} on this node (it has {known:?})",
                    row.kind
                );
                Box::pin(std::future::ready(Err(HandlerError::msg(msg))))
            }
        }
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.handlers.keys()).finish()
    }
}
