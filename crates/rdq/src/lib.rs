//! rdq runs work at a controlled pace.
//!
//! The centre of this crate is [`DispatchQueue`]: put jobs with a priority,
//! at most `width` run at once, and the width, rate and priorities can change
//! while it runs. Jobs can be cancelled pending or underway; the queue can be
//! paused, resumed, and stopped cleanly, handing back every job that did not
//! run so it can be saved and re-queued after a restart. Every job records
//! when it was queued, launched and stopped, and how it ended.
//!
//! Around it, three small primitives for graceful shutdown and hand-offs
//! between tasks: [`TaskPool`], [`AsyncMap`] and [`AsyncPriorityQueue`].
//!
//! This crate is in-process only: no HTTP, no SQL. Durable queues build on it
//! in `rdq-store`, the server in `rdq-server`.
//!
//! # Example: an SMS sender that a provider limits to 10 calls per second
//!
//! ```
//! use std::time::Duration;
//! use rdq::{DispatchQueue, Rate, StopMode};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! async fn send_sms(to: u64, text: &str) -> Result<(), std::io::Error> {
//!     # let _ = (to, text);
//!     Ok(())
//! }
//!
//! let q = DispatchQueue::builder(|(to, text): (u64, String)| async move {
//!     send_sms(to, &text).await
//! })
//! .width(5)
//! .rate(Rate::per_second(10))
//! .timeout(Duration::from_secs(30))
//! .build();
//!
//! let urgent = q.put((2127399921, "Your code is 1234".into()), -1).unwrap();
//! q.put((2127399922, "Weekly news".into()), 5).unwrap();
//! q.set_width(10).unwrap(); // takes effect at once (Err once stopped)
//! assert!(urgent.await.outcome.is_ok());
//!
//! // Shut down: whatever did not run comes back, in launch order.
//! let unsent = q.stop(StopMode::Wait).await;
//! # let _ = unsent;
//! # }
//! ```

pub mod hub;
mod limit;
#[allow(dead_code)] // Some re-exports are used only under `--cfg rdq_loom`.
mod loom;
mod map;
mod pool;
mod priority_queue;
mod queue;

pub use hub::{
    Backlog, BacklogConfig, BacklogSnapshot, ConsumerSnapshot, Delivery, Hub, HubError, Overflow,
    PublishError, Published, Status,
};
pub use limit::rate::{Rate, RateError, RateLimiter};
pub use map::AsyncMap;
pub use pool::{TaskPool, Tracked};
pub use priority_queue::AsyncPriorityQueue;
pub use queue::job::{Job, JobId, JobInfo, JobOptions, Outcome, Priority, Stamp};
pub use queue::{
    Builder, CancelError, DispatchQueue, JobError, JobHandle, PutError, StopMode, StoppedError,
    WeakDispatchQueue,
};

/// The stall watchdog (feature `watchdog`): the `rdq-watchdog` crate, so a
/// program that depends on `rdq` with the feature needs no second
/// dependency. Start one with `rdq::watchdog::Watchdog::builder()`; every
/// job of every [`DispatchQueue`] is then watched.
#[cfg(feature = "watchdog")]
pub use rdq_watchdog as watchdog;
