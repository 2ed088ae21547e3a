//! The hot path: each thread's slot, stamped around every watched poll.
//!
//! # Implementation details
//!
//! A thread that polls a watched future gets a [`Slot`] on its first poll
//! (registration takes a lock, once per thread). Around each poll it then
//! does, and only does, plain atomic stores to memory no other thread writes:
//!
//! * before: the task's id and label, the coarse time, then `seq` made odd;
//! * after: `seq` made even.
//!
//! No lock, no allocation, no clock read (the coarse time is a load of a
//! value the monitor publishes each tick), no read-modify-write instruction.
//! The monitor thread reads the slots: a `seq` that is odd and unchanged
//! since its last look, with a start older than the threshold, is a stall.
//!
//! Slots are never freed: a thread that exits marks its slot dead, and the
//! next new thread reuses it, so memory stays bounded by the most threads
//! alive at once.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::clock;

/// One thread's record of the watched poll it is in, if any.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Odd while inside a watched poll; bumped on entry and exit.
    pub(crate) seq: AtomicU64,
    /// Coarse time (µs) when the current poll began.
    pub(crate) start: AtomicU64,
    /// The id of the task (or job) being polled.
    pub(crate) task: AtomicU64,
    /// Its label (an interned name, 0 for none): the queue of a job.
    pub(crate) label: AtomicU32,
    /// The task may block; do not report it.
    pub(crate) allow_block: AtomicBool,
    /// The seq of a poll the monitor reported as a stall; its end time goes
    /// to `stalled_end` (the only poll exit that does more than one store).
    pub(crate) flagged: AtomicU64,
    pub(crate) stalled_end: AtomicU64,
    /// The OS thread id (for /proc and tgkill).
    pub(crate) tid: AtomicI32,
    /// The thread's stack, for bounds-checked walks from a signal handler.
    pub(crate) stack_lo: AtomicUsize,
    pub(crate) stack_hi: AtomicUsize,
    /// The thread's name.
    pub(crate) name: Mutex<String>,
    /// False once the thread has exited (the slot may be reused).
    pub(crate) alive: AtomicBool,
}

/// Every slot ever made; the monitor walks it each tick.
pub(crate) static SLOTS: Mutex<Vec<&'static Slot>> = Mutex::new(Vec::new());

/// The calling thread's slot.
struct Mine(Cell<Option<&'static Slot>>);

impl Drop for Mine {
    fn drop(&mut self) {
        if let Some(slot) = self.0.get() {
            slot.alive.store(false, Ordering::Release);
        }
    }
}

thread_local! {
    static MINE: Mine = const { Mine(Cell::new(None)) };
}

fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The current thread's stack bounds.
fn stack_bounds() -> (usize, usize) {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which
    // is then read and destroyed; on failure the bounds stay (0, 0), which
    // makes every stack walk stop at once.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return (0, 0);
        }
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if ok {
            (addr as usize, addr as usize + size)
        } else {
            (0, 0)
        }
    }
}

#[cold]
fn register() -> &'static Slot {
    let (lo, hi) = stack_bounds();
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned();
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let reuse = slots
        .iter()
        .copied()
        .find(|s| !s.alive.load(Ordering::Acquire));
    let slot: &'static Slot = match reuse {
        Some(slot) => slot,
        None => {
            let slot = Box::leak(Box::new(Slot {
                seq: AtomicU64::new(0),
                start: AtomicU64::new(0),
                task: AtomicU64::new(0),
                label: AtomicU32::new(0),
                allow_block: AtomicBool::new(false),
                flagged: AtomicU64::new(0),
                stalled_end: AtomicU64::new(0),
                tid: AtomicI32::new(0),
                stack_lo: AtomicUsize::new(0),
                stack_hi: AtomicUsize::new(0),
                name: Mutex::new(String::new()),
                alive: AtomicBool::new(false),
            }));
            slots.push(slot);
            slot
        }
    };
    // An even seq (not in a poll) before the slot goes live again.
    let seq = slot.seq.load(Ordering::Relaxed);
    slot.seq.store(seq + (seq & 1), Ordering::Relaxed);
    slot.tid.store(gettid(), Ordering::Relaxed);
    slot.stack_lo.store(lo, Ordering::Relaxed);
    slot.stack_hi.store(hi, Ordering::Relaxed);
    *slot.name.lock().unwrap_or_else(|e| e.into_inner()) = name;
    slot.alive.store(true, Ordering::Release);
    slot
}

/// The calling thread's slot, registered on first use. `None` only while
/// the thread is being torn down.
#[inline]
fn slot() -> Option<&'static Slot> {
    MINE.try_with(|mine| match mine.0.get() {
        Some(slot) => slot,
        None => {
            let slot = register();
            mine.0.set(Some(slot));
            slot
        }
    })
    .ok()
}

/// Marks the calling thread as inside a watched poll until dropped (also
/// when the poll unwinds).
#[derive(Debug)]
#[must_use = "the poll counts as watched only while the guard lives"]
pub(crate) struct InPoll {
    slot: Option<&'static Slot>,
}

impl InPoll {
    /// Stamps the slot: this thread now polls `task` (labelled `label`).
    #[inline]
    pub(crate) fn enter(task: u64, label: u32, allow_block: bool) -> InPoll {
        let slot = slot();
        if let Some(s) = slot {
            s.task.store(task, Ordering::Relaxed);
            s.label.store(label, Ordering::Relaxed);
            s.allow_block.store(allow_block, Ordering::Relaxed);
            s.start.store(clock::now(), Ordering::Relaxed);
            // Only this thread writes `seq`: a load and a store, no RMW. The
            // Release orders the fields above before the odd seq.
            let seq = s.seq.load(Ordering::Relaxed);
            s.seq.store(seq | 1, Ordering::Release);
        }
        InPoll { slot }
    }
}

impl Drop for InPoll {
    #[inline]
    fn drop(&mut self) {
        if let Some(s) = self.slot {
            let seq = s.seq.load(Ordering::Relaxed);
            if s.flagged.load(Ordering::Relaxed) == seq {
                // A reported stall: when it ended, for its final duration.
                s.stalled_end.store(clock::now(), Ordering::Relaxed);
            }
            s.seq.store(seq + 1, Ordering::Release);
        }
    }
}

/// The id and label of what the calling thread is polling, if watched (for
/// holds acquired inside a job).
pub(crate) fn current() -> Option<(u64, u32)> {
    let slot = MINE.try_with(|m| m.0.get()).ok()??;
    (slot.seq.load(Ordering::Relaxed) & 1 == 1).then(|| {
        (
            slot.task.load(Ordering::Relaxed),
            slot.label.load(Ordering::Relaxed),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_makes_seq_odd_and_its_end_even() {
        let guard = InPoll::enter(42, 0, false);
        let slot = slot().unwrap();
        assert_eq!(slot.seq.load(Ordering::Relaxed) & 1, 1);
        assert_eq!(slot.task.load(Ordering::Relaxed), 42);
        assert_eq!(current(), Some((42, 0)));
        drop(guard);
        assert_eq!(slot.seq.load(Ordering::Relaxed) & 1, 0);
        assert_eq!(current(), None);
        assert_eq!(slot.tid.load(Ordering::Relaxed), gettid());
        let (lo, hi) = (
            slot.stack_lo.load(Ordering::Relaxed),
            slot.stack_hi.load(Ordering::Relaxed),
        );
        let local = 0u8;
        let here = &local as *const u8 as usize;
        assert!(lo < here && here < hi, "the stack bounds hold this frame");
    }

    #[test]
    fn an_unwinding_poll_still_leaves_the_slot() {
        let result = std::panic::catch_unwind(|| {
            let _g = InPoll::enter(7, 0, false);
            panic!("in a poll");
        });
        assert!(result.is_err());
        assert_eq!(slot().unwrap().seq.load(Ordering::Relaxed) & 1, 0);
    }

    #[test]
    fn a_dead_threads_slot_is_reused() {
        let first = std::thread::spawn(|| slot().unwrap() as *const Slot as usize)
            .join()
            .unwrap();
        let second = std::thread::spawn(|| slot().unwrap() as *const Slot as usize)
            .join()
            .unwrap();
        // Other tests' threads may take it in between; but never two live
        // threads one slot, and never a slot left in a poll.
        let slots = SLOTS.lock().unwrap();
        assert!(slots.iter().any(|s| *s as *const Slot as usize == first));
        assert!(slots.iter().any(|s| *s as *const Slot as usize == second));
        assert!(slots
            .iter()
            .all(|s| s.alive.load(Ordering::Relaxed) || s.seq.load(Ordering::Relaxed) & 1 == 0));
    }
}
