//! Why a thread stalled: computing, blocked, or starved.
//!
//! From the scheduler's accounting over the stall window (`schedstat`): of
//! the wall time `w`, the thread ran `r` and waited for a CPU `q`; the rest,
//! `w - r - q`, it was asleep (blocked in the kernel).
//!
//! * **blocked** when asleep for more than half the window: a blocking system
//!   call, a lock, a sleep;
//! * else **starved** when `q > r`: it wanted to run and waited for a CPU
//!   longer than it ran. The host (or its cgroup) gave it no CPU; the code did
//!   nothing wrong. This is the false positive wall-clock detectors report as
//!   a stall;
//! * else **cpu**: it was computing.

use std::fmt;
use std::time::Duration;

use crate::procfs::SchedStat;

/// What a stalled thread was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StallKind {
    /// Busy computing.
    Cpu,
    /// Mostly off the CPU, not waiting for one: blocked in the kernel.
    Blocked,
    /// Waited for a CPU longer than it ran: the host gave it none.
    Starved,
    /// The platform gives no scheduler accounting.
    Unknown,
}

impl StallKind {
    /// `cpu`, `blocked`, `starved` or `unknown` (metric labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            StallKind::Cpu => "cpu",
            StallKind::Blocked => "blocked",
            StallKind::Starved => "starved",
            StallKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for StallKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies a window of `wall` time given the accounting at its start and
/// end.
pub fn classify(before: SchedStat, after: SchedStat, wall: Duration) -> StallKind {
    let run = after.run.saturating_sub(before.run);
    let wait = after.wait.saturating_sub(before.wait);
    let asleep = wall.saturating_sub(run + wait);
    if asleep * 2 > wall {
        StallKind::Blocked
    } else if wait > run {
        StallKind::Starved
    } else {
        StallKind::Cpu
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(run_ms: u64, wait_ms: u64) -> SchedStat {
        SchedStat {
            run: Duration::from_millis(run_ms),
            wait: Duration::from_millis(wait_ms),
        }
    }

    #[test]
    fn the_three_kinds() {
        let w = Duration::from_millis(400);
        assert_eq!(classify(at(0, 0), at(390, 5), w), StallKind::Cpu);
        assert_eq!(classify(at(10, 10), at(12, 11), w), StallKind::Blocked);
        assert_eq!(classify(at(0, 0), at(100, 300), w), StallKind::Starved);
        // A sleeping thread kept waiting a little when it woke: blocked.
        assert_eq!(classify(at(0, 0), at(5, 20), w), StallKind::Blocked);
        // Computing, but on a CPU shared with three others: starved.
        assert_eq!(classify(at(0, 0), at(100, 290), w), StallKind::Starved);
    }
}
