//! The allowed range of every number and duration the server takes, in one
//! table: the HTTP API, `rdq.toml` and the CLI check against these same
//! constants, so a value one of them accepts the others accept too.
//!
//! | what | range | where |
//! |---|---|---|
//! | [`DELAY`] | 0 to 10 years | a job's `delay_ms`, `run_at` (from now), `rdq put --delay/--at` |
//! | [`TIMEOUT`] | 1 ms to 1 day | a job's and a queue's `timeout_ms`, `timeout`, `warn_after`, `--timeout` |
//! | [`LONG_POLL`] | 0 to 60 s | `GET /jobs/{id}/wait?timeout_ms` |
//! | [`WAIT`] | 0 to 1 day | `rdq wait --timeout` |
//! | [`WIDTH`] | 0 to 10,000 | `width` |
//! | [`RATE_COUNT`], [`RATE_BURST`] | 1 to 1,000,000 | a rate's count and burst |
//! | [`RATE_PERIOD`] | 1 ms to 1 day | a rate's period |
//! | [`MAX_ATTEMPTS`] | 1 to 1,000 | `max_attempts` |
//! | [`BACKOFF`] | 1 ms to 1 day | `backoff_base`, `backoff_max` |
//! | [`RETRY_DELAY`] | 0 to 1 day | a target's `Retry-After` (longer ones are cut to 1 day) |
//! | [`RETENTION`] | 1 s to 10 years | `retention` |
//! | [`SHUTDOWN_GRACE`], [`KILL_GRACE`] | 0 to 1 hour | `shutdown_grace`, a command's `grace` |
//! | [`MAX_BODY`] | 1 KiB to 256 MiB | `max_body` |
//! | [`OUTPUT_CAP`] | 1 B to 64 MiB | a command's `output_cap` |
//! | [`WATCHDOG`] | 1 ms to 1 hour | the watchdog's `tick`, `threshold`, `hold_threshold` |
//! | [`LEASE`] | 1 s to 1 hour | `server.lease` |
//! | [`CONNECT_TIMEOUT`] | 0 to 1 hour | `server.connect_timeout` |
//!
//! Ten years and one day are far beyond any real schedule or job, and far
//! inside what a timestamp, a timer or a millisecond count can hold, so
//! nothing downstream can overflow.

use std::fmt;
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3600);
/// Ten Julian years, as `humantime` counts them (`"10y"` is exactly this).
const TEN_YEARS: Duration = Duration::from_secs(10 * 31_557_600);

/// How far ahead a job may be scheduled.
pub const DELAY: Durations = Durations::new(Duration::ZERO, TEN_YEARS);
/// An attempt's timeout (a job's own or its queue's), and `warn_after`.
pub const TIMEOUT: Durations = Durations::new(Duration::from_millis(1), DAY);
/// One long poll for a job's outcome.
pub const LONG_POLL: Durations = Durations::new(Duration::ZERO, Duration::from_secs(60));
/// How long `rdq wait` waits in all.
pub const WAIT: Durations = Durations::new(Duration::ZERO, DAY);
/// A consumer's bound on waiting messages.
pub const BOUND: Counts = Counts::new(1, 10_000_000);
/// How long a publish may wait for room in a consumer with `overflow =
/// "block"` (the request is held that long).
pub const BLOCK_TIMEOUT: Durations =
    Durations::new(Duration::from_millis(1), Duration::from_secs(60));
/// A consumer's status window (sampled once a second).
pub const STATUS_WINDOW: Durations = Durations::new(Duration::from_secs(2), HOUR);
/// A queue's width.
pub const WIDTH: Counts = Counts::new(0, 10_000);
/// A rate's launches per period.
pub const RATE_COUNT: Counts = Counts::new(1, 1_000_000);
/// A rate's launches back to back.
pub const RATE_BURST: Counts = Counts::new(1, 1_000_000);
/// A rate's period.
pub const RATE_PERIOD: Durations = Durations::new(Duration::from_millis(1), DAY);
/// Runs allowed per job.
pub const MAX_ATTEMPTS: Counts = Counts::new(1, 1_000);
/// The first and the longest retry delay.
pub const BACKOFF: Durations = Durations::new(Duration::from_millis(1), DAY);
/// How long a target may ask the queue to wait (`Retry-After`); longer
/// requests are cut to this, not refused.
pub const RETRY_DELAY: Durations = Durations::new(Duration::ZERO, DAY);
/// How long finished jobs are kept.
pub const RETENTION: Durations = Durations::new(Duration::from_secs(1), TEN_YEARS);
/// How long underway jobs may finish at shutdown.
pub const SHUTDOWN_GRACE: Durations = Durations::new(Duration::ZERO, HOUR);
/// A command's time between SIGTERM and SIGKILL.
pub const KILL_GRACE: Durations = Durations::new(Duration::ZERO, HOUR);
/// The largest request body, in bytes.
pub const MAX_BODY: Counts = Counts::new(1024, 256 << 20);
/// Bytes kept per output stream of a command.
pub const OUTPUT_CAP: Counts = Counts::new(1, 64 << 20);
/// The watchdog's tick and thresholds.
pub const WATCHDOG: Durations = Durations::new(Duration::from_millis(1), HOUR);
/// How long a claimed job stays leased to its node without a heartbeat.
pub const LEASE: Durations = Durations::new(Duration::from_secs(1), HOUR);
/// How long the server keeps trying to reach its database at start.
pub const CONNECT_TIMEOUT: Durations = Durations::new(Duration::ZERO, HOUR);

/// An inclusive range of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durations {
    /// The shortest allowed.
    pub min: Duration,
    /// The longest allowed.
    pub max: Duration,
}

impl Durations {
    /// `min` to `max`, both included.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Durations { min, max }
    }

    /// The shortest, in whole milliseconds.
    pub const fn min_ms(&self) -> u64 {
        self.min.as_millis() as u64
    }

    /// The longest, in whole milliseconds.
    pub const fn max_ms(&self) -> u64 {
        self.max.as_millis() as u64
    }

    /// Whether `d` is allowed.
    pub fn contains(&self, d: Duration) -> bool {
        (self.min..=self.max).contains(&d)
    }

    /// `ms` milliseconds (as the API takes them), or what is wrong:
    /// `"timeout_ms 0 is out of range; allowed: 1 to 86400000 (1ms to
    /// 1day)"`.
    pub fn check_ms(&self, field: &str, ms: u64) -> Result<Duration, String> {
        let d = Duration::from_millis(ms);
        if self.contains(d) {
            Ok(d)
        } else {
            Err(format!(
                "{field} {ms} is out of range; allowed: {} to {} ({self})",
                self.min_ms(),
                self.max_ms()
            ))
        }
    }

    /// `d`, written as `text` in `field`, or what is wrong: `"--delay
    /// \"1000000y\" is out of range; allowed: 0s to 10years"`.
    pub fn check(&self, field: &str, text: &str, d: Duration) -> Result<Duration, String> {
        if self.contains(d) {
            Ok(d)
        } else {
            Err(format!("{field} {text:?} is out of range; allowed: {self}"))
        }
    }

    /// Parses `text` as a duration (`"250ms"`, `"30s"`, `"7d"`) and checks
    /// it; the error names `field`.
    pub fn parse(&self, field: &str, text: &str) -> Result<Duration, String> {
        let d =
            crate::config::resolved::parse_duration(text).map_err(|e| format!("{field}: {e}"))?;
        self.check(field, text, d)
    }

    /// `d`, cut to this range.
    pub fn clamp(&self, d: Duration) -> Duration {
        d.clamp(self.min, self.max)
    }
}

impl fmt::Display for Durations {
    /// `1ms to 1day`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Duration| {
            if d.is_zero() {
                "0s".to_owned()
            } else {
                humantime::format_duration(d).to_string()
            }
        };
        write!(f, "{} to {}", show(self.min), show(self.max))
    }
}

/// An inclusive range of whole numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// The smallest allowed.
    pub min: u64,
    /// The largest allowed.
    pub max: u64,
}

impl Counts {
    /// `min` to `max`, both included.
    pub const fn new(min: u64, max: u64) -> Self {
        Counts { min, max }
    }

    /// Whether `n` is allowed.
    pub fn contains(&self, n: i128) -> bool {
        (i128::from(self.min)..=i128::from(self.max)).contains(&n)
    }

    /// `n`, or what is wrong: `"width 20000 is out of range; allowed: 0 to
    /// 10000"`. Takes any integer type, negative ones included.
    pub fn check<N: Into<i128> + Copy + fmt::Display>(
        &self,
        field: &str,
        n: N,
    ) -> Result<u64, String> {
        if self.contains(n.into()) {
            Ok(n.into() as u64)
        } else {
            Err(format!("{field} {n} is out of range; allowed: {self}"))
        }
    }
}

impl Counts {
    /// `n`, written as `text` in `field`, or what is wrong: `"max_body
    /// \"0\" is out of range; allowed: 1024 to 268435456"`.
    pub fn check_as(&self, field: &str, text: &str, n: u64) -> Result<u64, String> {
        if self.contains(n.into()) {
            Ok(n)
        } else {
            Err(format!("{field} {text:?} is out of range; allowed: {self}"))
        }
    }
}

impl fmt::Display for Counts {
    /// `0 to 10000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} to {}", self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rdq_store::Timestamp;

    #[test]
    fn messages_name_the_field_and_the_range() {
        assert_eq!(
            TIMEOUT.check_ms("timeout_ms", 0).unwrap_err(),
            "timeout_ms 0 is out of range; allowed: 1 to 86400000 (1ms to 1day)"
        );
        assert_eq!(
            DELAY.parse("--delay", "1000000y").unwrap_err(),
            "--delay \"1000000y\" is out of range; allowed: 0s to 10years"
        );
        assert_eq!(DELAY.parse("--delay", "10y"), Ok(DELAY.max));
        assert_eq!(
            WIDTH.check("width", -1i64).unwrap_err(),
            "width -1 is out of range; allowed: 0 to 10000"
        );
        assert_eq!(WIDTH.check("width", 10_000usize as u64), Ok(10_000));
        assert!(WIDTH.check("width", u64::MAX).is_err());
    }

    proptest! {
        /// Whatever a client sends, an accepted delay or timeout can be
        /// added to any writable time, stored and rendered.
        #[test]
        fn accepted_durations_fit_every_conversion(
            ms in prop_oneof![any::<u64>(), 0..=DELAY.max_ms() + 1],
            now in Timestamp::MIN.0..=Timestamp(4_102_444_800_000_000).0, // up to 2100
        ) {
            for range in [DELAY, TIMEOUT, LONG_POLL, WAIT, RATE_PERIOD, BACKOFF, RETENTION] {
                match range.check_ms("x", ms) {
                    Ok(d) => {
                        prop_assert!(range.contains(d) && d.as_millis() == u128::from(ms));
                        let at = Timestamp(now).plus(d);
                        prop_assert_eq!(at.since(Timestamp(now)), d);
                        prop_assert!(at < Timestamp::MAX);
                        prop_assert!(std::time::SystemTime::now().checked_add(d).is_some());
                        prop_assert!(tokio::time::Instant::now().checked_add(d).is_some());
                    }
                    Err(m) => {
                        prop_assert!(!range.contains(Duration::from_millis(ms)));
                        prop_assert!(m.contains(&range.to_string()), "{}", m);
                    }
                }
            }
        }
    }
}
