//! Hold tracking: who holds a pooled connection or a transaction, and for
//! how long, the way a connection-pool leak detector does it.
//!
//! `let _held = rdq_watchdog::hold("db")` at acquire records the caller's
//! location and the job the thread is running (if it runs a watched one).
//! The monitor reports a hold older than its threshold while it is still
//! held ("held for N s"), once; when the guard of a reported hold is
//! dropped, the monitor reports that too at its next tick ("released after
//! N s"). Holds under the threshold are never reported.
//!
//! # Reports
//!
//! Each report is a `tracing` event (a warning while held, an info line at
//! release, with fields `resource`, `at`, `job`, `queue` and `held`), and a
//! call of every hook given to
//! [`Builder::on_hold`](crate::Builder::on_hold), on the monitor thread,
//! with a [`HoldEvent`]: what a program needs to count long holds in its
//! metrics or show them on a dashboard. [`holds`](crate::Watchdog::holds)
//! lists every hold now, reported or not.

use std::panic::Location;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{slot, task};

#[derive(Debug, Clone)]
struct Entry {
    key: u64,
    resource: &'static str,
    location: &'static Location<'static>,
    job: Option<(u64, u32)>,
    since: Instant,
    reported: bool,
    /// How long a reported hold was held, once dropped: the monitor reports
    /// the release, then forgets the entry.
    released: Option<Duration>,
}

static HOLDS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Whether a monitor runs to report releases (else a reported hold's
/// release is logged at once, by the thread that drops it). Read and
/// written under the `HOLDS` lock.
static MONITORED: AtomicBool = AtomicBool::new(false);

/// What a hold hook ([`Builder::on_hold`](crate::Builder::on_hold)) is
/// told.
#[derive(Debug, Clone, Copy)]
pub enum HoldEvent<'a> {
    /// A hold has lasted longer than the hold threshold and is still held
    /// (`held` is its age now). Once per hold.
    Held(&'a HoldInfo),
    /// A hold reported as [`Held`](HoldEvent::Held) was released (`held` is
    /// how long it was held in all).
    Released(&'a HoldInfo),
}

pub(crate) type HoldHook = Box<dyn Fn(HoldEvent<'_>) + Send + Sync>;

/// A resource being held, as [`holds`](crate::Watchdog::holds) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldInfo {
    /// What is held (`"db"`, `"pool:orders"`, ...).
    pub resource: &'static str,
    /// Where it was acquired (`file:line`).
    pub location: String,
    /// The job holding it, if it was acquired inside one.
    pub job: Option<u64>,
    /// The job's queue.
    pub label: Option<String>,
    /// For how long.
    pub held: Duration,
}

/// A held resource; dropping it records the release.
#[derive(Debug)]
#[must_use = "the hold ends when this guard is dropped"]
pub struct Hold {
    key: u64,
}

/// Records that the caller now holds `resource` (a pooled connection, a
/// transaction), until the returned guard is dropped.
#[track_caller]
pub fn hold(resource: &'static str) -> Hold {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    HOLDS.lock().unwrap_or_else(|e| e.into_inner()).push(Entry {
        key,
        resource,
        location: Location::caller(),
        job: slot::current(),
        since: Instant::now(),
        reported: false,
        released: None,
    });
    Hold { key }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut holds = HOLDS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = holds.iter().position(|e| e.key == self.key) {
            if holds[i].reported && MONITORED.load(Ordering::Relaxed) {
                // The monitor reports the release (and calls the hooks).
                holds[i].released = Some(holds[i].since.elapsed());
                return;
            }
            let e = holds.swap_remove(i);
            drop(holds);
            if e.reported {
                log_release(&info(&e));
            }
        }
    }
}

fn info(e: &Entry) -> HoldInfo {
    HoldInfo {
        resource: e.resource,
        location: e.location.to_string(),
        job: e.job.map(|j| j.0),
        label: e.job.and_then(|j| task::label(j.1)).map(str::to_owned),
        held: e.since.elapsed(),
    }
}

fn log_release(h: &HoldInfo) {
    tracing::info!(
        resource = h.resource, at = %h.location, job = h.job,
        queue = h.label.as_deref().unwrap_or("-"), held = ?h.held,
        "released after {:?}", h.held
    );
}

/// Every hold now, longest first.
pub(crate) fn holds() -> Vec<HoldInfo> {
    let mut v: Vec<HoldInfo> = HOLDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|e| e.released.is_none())
        .map(info)
        .collect();
    v.sort_by_key(|h| std::cmp::Reverse(h.held));
    v
}

/// Whether a monitor runs: it reports releases from then on, and when it
/// stops, each release is logged by the thread that drops the hold.
pub(crate) fn set_monitored(on: bool) {
    let _holds = HOLDS.lock().unwrap_or_else(|e| e.into_inner());
    MONITORED.store(on, Ordering::Relaxed);
}

/// Reports holds past `threshold`, once each, and the releases of holds
/// reported before (the monitor, each tick): logs, then calls `hooks`.
pub(crate) fn check(threshold: Duration, hooks: &[HoldHook]) {
    let mut released = Vec::new();
    let mut held = Vec::new();
    {
        let mut holds = HOLDS.lock().unwrap_or_else(|e| e.into_inner());
        holds.retain(|e| match e.released {
            Some(d) => {
                released.push(HoldInfo { held: d, ..info(e) });
                false
            }
            None => true,
        });
        for e in holds
            .iter_mut()
            .filter(|e| !e.reported && e.since.elapsed() > threshold)
        {
            e.reported = true;
            held.push(info(e));
        }
    }
    // Hooks run without the lock: they may take or list holds.
    for h in &released {
        log_release(h);
        for hook in hooks {
            hook(HoldEvent::Released(h));
        }
    }
    for h in &held {
        tracing::warn!(
            resource = h.resource, at = %h.location, job = h.job,
            queue = h.label.as_deref().unwrap_or("-"), held = ?h.held,
            "held for {:?} and still held", h.held
        );
        for hook in hooks {
            hook(HoldEvent::Held(h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_knows_where_and_for_how_long_until_dropped() {
        let guard = hold("test-db");
        let line = line!() - 1;
        let mine: Vec<HoldInfo> = holds()
            .into_iter()
            .filter(|h| h.resource == "test-db")
            .collect();
        assert_eq!(mine.len(), 1);
        assert!(
            mine[0].location.ends_with(&format!("hold.rs:{line}:21")),
            "{}",
            mine[0].location
        );
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let into = seen.clone();
        let hook: HoldHook = Box::new(move |event| {
            if let HoldEvent::Held(h) = event {
                into.lock().unwrap().push(h.resource);
            }
        });
        check(Duration::ZERO, std::slice::from_ref(&hook));
        assert!(
            seen.lock().unwrap().contains(&"test-db"),
            "reported once past the threshold"
        );
        drop(guard);
        assert!(holds().iter().all(|h| h.resource != "test-db"));
    }
}
