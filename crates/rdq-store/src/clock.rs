//! The time a durable queue schedules by.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;

use crate::row::Timestamp;

/// Where a durable queue reads the time, and how it waits for a time.
///
/// [`Clock::System`] (the default) reads the wall clock, because `run_at`
/// times are wall-clock times stored in the database.
///
/// [`Clock::manual`] is for tests: it stands still until the test calls
/// [`advance`](Clock::advance), and everything waiting for a time wakes when
/// it moves. (Tokio's paused clock is no substitute here: it jumps ahead
/// whenever the runtime is idle, which includes every wait for the database.)
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock the test moves; see [`Clock::manual`].
    Manual(Arc<ManualClock>),
}

/// The state of a manual clock.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    moved: Notify,
}

impl Clock {
    /// A manual clock, starting at the current wall-clock time.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(ManualClock {
            now: AtomicI64::new(Timestamp::from(SystemTime::now()).0),
            moved: Notify::new(),
        }))
    }

    /// Moves a manual clock forward and wakes whatever waits on it.
    ///
    /// # Panics
    ///
    /// On the system clock, which cannot be moved.
    pub fn advance(&self, by: Duration) {
        match self {
            Clock::System => panic!("the system clock cannot be advanced; use Clock::manual()"),
            Clock::Manual(m) => {
                m.now.fetch_add(by.as_micros() as i64, Ordering::AcqRel);
                m.moved.notify_waiters();
            }
        }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::System => Timestamp::from(SystemTime::now()),
            Clock::Manual(m) => Timestamp(m.now.load(Ordering::Acquire)),
        }
    }

    /// How long until `at` (zero if it has passed).
    pub fn until(&self, at: Timestamp) -> Duration {
        at.since(self.now())
    }

    /// Waits until this clock reads `at` or later.
    pub async fn sleep_until(&self, at: Timestamp) {
        match self {
            Clock::System => tokio::time::sleep(self.until(at)).await,
            Clock::Manual(m) => loop {
                let moved = m.moved.notified();
                tokio::pin!(moved);
                moved.as_mut().enable();
                if self.now() >= at {
                    return;
                }
                moved.await;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_advanced() {
        let clock = Clock::manual();
        let t0 = clock.now();
        let target = t0.plus(Duration::from_secs(60));
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(target).await }
        });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(30));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clock.now(), target);
    }
}
