//! Launch rate: a token bucket with burst.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use tokio::time::Instant;

/// At most `count` launches per `period`, with bursts of up to `burst`.
///
/// Launches are spread evenly: with the default burst of 1, `Rate::per_second(10)`
/// allows one launch every 100 ms, which is what a provider that says "10
/// requests per second" usually means. A larger burst lets that many launch
/// back to back after an idle spell, while the long-run rate stays the same.
///
/// A `Rate` is always valid: the constructors refuse a zero count, period or
/// burst.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
}

/// Why a [`Rate`] could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The count was zero (use a paused queue or width 0 to stop launches).
    #[error("rate count must be at least 1")]
    ZeroCount,
    /// The period was zero.
    #[error("rate period must be longer than zero")]
    ZeroPeriod,
    /// The burst was zero.
    #[error("rate burst must be at least 1")]
    ZeroBurst,
}

impl Rate {
    /// `count` launches per `period`, burst 1.
    pub fn new(count: u32, period: Duration) -> Result<Rate, RateError> {
        let count = NonZeroU32::new(count).ok_or(RateError::ZeroCount)?;
        if period.is_zero() {
            return Err(RateError::ZeroPeriod);
        }
        Ok(Rate {
            count,
            period,
            burst: NonZeroU32::MIN,
        })
    }

    /// `count` launches per second.
    ///
    /// # Panics
    ///
    /// If `count` is zero; use [`Rate::new`] for values that come from input.
    pub fn per_second(count: u32) -> Rate {
        Rate::new(count, Duration::from_secs(1)).expect("Rate::per_second(0)")
    }

    /// `count` launches per minute.
    ///
    /// # Panics
    ///
    /// If `count` is zero; use [`Rate::new`] for values that come from input.
    pub fn per_minute(count: u32) -> Rate {
        Rate::new(count, Duration::from_secs(60)).expect("Rate::per_minute(0)")
    }

    /// Allows up to `burst` launches back to back.
    pub fn with_burst(self, burst: u32) -> Result<Rate, RateError> {
        let burst = NonZeroU32::new(burst).ok_or(RateError::ZeroBurst)?;
        Ok(Rate { burst, ..self })
    }

    /// Launches per period.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The burst.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Time between launches in the long run.
    pub fn interval(&self) -> Duration {
        self.period / self.count.get()
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Rate({}/{:?}, burst {})",
            self.count, self.period, self.burst
        )
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:?}", self.count, self.period)?;
        if self.burst.get() > 1 {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

/// The state of a [`Rate`]: who may go now, and when the next may.
///
/// [`DispatchQueue`](crate::DispatchQueue) uses one internally; it is public
/// for layers that must take a token *before* they commit to a launch (a
/// durable queue takes tokens before claiming jobs from its store, so that a
/// claimed job never waits for a token).
///
/// This is the generic cell rate algorithm: a token bucket kept as one
/// instant (the "theoretical arrival time") instead of a token count and a
/// refill timer.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    rate: Rate,
    interval: Duration,
    tolerance: Duration,
    /// The earliest time the next launch could happen if no burst were
    /// allowed. Never before the last launch.
    tat: Option<Instant>,
}

impl RateLimiter {
    /// A limiter with a full burst available.
    pub fn new(rate: Rate) -> Self {
        let interval = rate.interval();
        RateLimiter {
            rate,
            interval,
            tolerance: interval * (rate.burst.get() - 1),
            tat: None,
        }
    }

    /// The rate it enforces.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes a token if one is available at `now`; otherwise says when the
    /// next one will be.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        let allowed_at = tat.checked_sub(self.tolerance).unwrap_or(now);
        if allowed_at <= now {
            self.tat = Some(tat + self.interval);
            Ok(())
        } else {
            Err(allowed_at)
        }
    }

    /// Gives back `n` tokens taken but not used (most recent first).
    pub fn refund(&mut self, n: u32) {
        if let Some(tat) = self.tat {
            self.tat = tat.checked_sub(self.interval * n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_validate() {
        assert_eq!(
            Rate::new(0, Duration::from_secs(1)),
            Err(RateError::ZeroCount)
        );
        assert_eq!(Rate::new(1, Duration::ZERO), Err(RateError::ZeroPeriod));
        assert_eq!(Rate::per_second(1).with_burst(0), Err(RateError::ZeroBurst));
        assert_eq!(Rate::per_second(4).interval(), Duration::from_millis(250));
        assert_eq!(Rate::per_minute(2).to_string(), "2/60s");
    }

    #[test]
    fn burst_one_spaces_launches_evenly() {
        let mut l = RateLimiter::new(Rate::per_second(10));
        let t0 = Instant::now();
        assert_eq!(l.try_acquire(t0), Ok(()));
        assert_eq!(l.try_acquire(t0), Err(t0 + Duration::from_millis(100)));
        assert_eq!(
            l.try_acquire(t0 + Duration::from_millis(99)),
            Err(t0 + Duration::from_millis(100))
        );
        assert_eq!(l.try_acquire(t0 + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn refunded_tokens_can_be_taken_again() {
        let mut l = RateLimiter::new(Rate::per_second(10));
        let t0 = Instant::now();
        assert_eq!(l.try_acquire(t0), Ok(()));
        l.refund(1);
        assert_eq!(l.try_acquire(t0), Ok(()), "the refunded token is back");
        assert!(l.try_acquire(t0).is_err());
    }

    #[test]
    fn burst_allows_back_to_back_then_paces() {
        let mut l = RateLimiter::new(Rate::per_second(10).with_burst(3).unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.try_acquire(t0), Ok(()));
        }
        assert_eq!(l.try_acquire(t0), Err(t0 + Duration::from_millis(100)));
        // After a long idle spell the burst is available again, not more.
        let later = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            assert_eq!(l.try_acquire(later), Ok(()));
        }
        assert!(l.try_acquire(later).is_err());
    }
}
