//! Durable rdq queues.
//!
//! Jobs put into a [`DurableQueue`] are committed to a [`Store`] before the
//! put returns, run with at-least-once semantics (a job underway when its
//! process dies runs again after restart; a finished job never runs again),
//! are retried with exponential backoff and jitter, can be scheduled for
//! later and deduplicated by key, and keep their queue's settings across
//! restarts. Execution is an [`rdq::DispatchQueue`], so width, rate,
//! priorities, pause and cancel behave as they do in memory.
//!
//! The default store is [`sqlite::SqliteStore`]: one file, nothing to
//! install, group commit, and a crash-safe default sync level. The [`Store`]
//! trait is shaped for several nodes sharing a PostgreSQL database too
//! (claims with leases, heartbeats, rescue, batched outcomes).

mod any;
mod clock;
mod durable;
mod error;
pub mod postgres;
mod retry;
mod row;
pub mod sqlite;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use any::AnyStore;
pub use clock::Clock;
pub use durable::{
    AttemptEnd, AttemptHook, Builder, DurableError, DurableQueue, HandlerError, JobContext,
    JobSpec, KindOptions, ProducerStats, PutOptions, QueueSettings, RateSetting, Retry, StopReport,
};
pub use error::{Result, StoreError};
pub use retry::{Backoff, BackoffError};
pub use row::{
    Completion, Finish, Inserted, JobId, JobRow, JobState, NewJob, Timestamp, UnknownState,
};
pub use store::{
    CancelResult, ClaimParams, Claimed, HeartbeatReport, Limit, ListParams, QueueRecord,
    ReprioritizeResult, RescueParams, RescueReport, RetryResult, StateCounts, Store,
};

/// The workspace README's examples, compiled as doc tests so they cannot rot
/// (here, where both `rdq` and `rdq_store` are in reach).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
