//! The coarse clock polls are stamped with.
//!
//! The monitor publishes "monitor time" in microseconds at each tick; a
//! stamp is one relaxed load, with no clock read. Its resolution is the tick,
//! which is what stall detection needs (a stall is measured in ticks). The
//! monitor time does not advance while the monitor itself could not run (a
//! paused VM, an overloaded host), so such a gap is never blamed on a job.

use std::sync::atomic::{AtomicU64, Ordering};

static NOW_US: AtomicU64 = AtomicU64::new(0);

/// Monitor time, in microseconds (0 before a monitor runs).
#[inline]
pub(crate) fn now() -> u64 {
    NOW_US.load(Ordering::Relaxed)
}

/// Publishes a new monitor time (the monitor only).
pub(crate) fn publish(us: u64) {
    NOW_US.store(us, Ordering::Relaxed);
}
