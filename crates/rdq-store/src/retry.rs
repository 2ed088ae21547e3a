//! When a failed job runs again: exponential backoff with jitter.

use std::time::Duration;

/// Delay before retry `n` (the `n`-th failure): `base × 2^(n-1)`, capped at
/// `max`, then spread by ± `jitter` (a fraction) so that jobs that failed
/// together do not all come back at the same moment.
///
/// The default, 1 s doubling to at most 1 hour with ±20 % jitter, retries
/// 20 attempts over about 8 hours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

/// A [`Backoff`] that cannot work as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid backoff: {0}")]
pub struct BackoffError(&'static str);

impl Backoff {
    /// `base` doubling per failure up to `max`, with the default jitter.
    pub fn exponential(base: Duration, max: Duration) -> Result<Backoff, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError("the base delay must be longer than zero"));
        }
        if max < base {
            return Err(BackoffError(
                "the longest delay must not be shorter than the base",
            ));
        }
        Ok(Backoff {
            base,
            max,
            ..Backoff::default()
        })
    }

    /// The same delay every time.
    pub fn constant(delay: Duration) -> Result<Backoff, BackoffError> {
        Backoff::exponential(delay, delay)
    }

    /// Spreads each delay by ± `fraction` (0 to 1).
    pub fn with_jitter(mut self, fraction: f64) -> Result<Backoff, BackoffError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(BackoffError("jitter must be between 0 and 1"));
        }
        self.jitter = fraction;
        Ok(self)
    }

    /// The delay before retrying after failure number `failures` (1-based),
    /// before jitter.
    pub fn nominal(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(62);
        self.base
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }

    /// The delay to use: [`nominal`](Backoff::nominal) spread by the jitter.
    pub fn delay(&self, failures: u32) -> Duration {
        let nominal = self.nominal(failures).as_secs_f64();
        let spread = 1.0 + self.jitter * (fastrand::f64() * 2.0 - 1.0);
        // Jitter can push a delay near `Duration::MAX` past it: saturate.
        Duration::try_from_secs_f64((nominal * spread).max(0.0)).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(10)).unwrap();
        let secs: Vec<u64> = (1..=6).map(|n| b.nominal(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.nominal(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let b = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(10))
            .unwrap()
            .with_jitter(0.25)
            .unwrap();
        for _ in 0..1000 {
            let d = b.delay(1).as_secs_f64();
            assert!((7.5..=12.5).contains(&d), "{d}");
        }
        let exact = b.with_jitter(0.0).unwrap();
        assert_eq!(exact.delay(3), Duration::from_secs(10));
    }

    #[test]
    fn rejects_what_cannot_work() {
        assert!(Backoff::exponential(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1)).is_err());
        assert!(Backoff::default().with_jitter(1.5).is_err());
        // ±20 % of the longest delay there is: saturates, never panics.
        let longest = Backoff::constant(Duration::MAX).unwrap();
        for _ in 0..100 {
            assert!(longest.delay(1) >= Duration::from_secs(u64::MAX / 2));
        }
        assert_eq!(
            Backoff::constant(Duration::from_secs(3))
                .unwrap()
                .nominal(9),
            Duration::from_secs(3)
        );
    }
}
