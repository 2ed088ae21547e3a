//! A global allocator that counts live heap bytes, for B3 only.
//!
//! Counting costs an atomic add on one shared counter per allocation, which
//! would slow every other scenario. So it is off unless [`start`] turns it
//! on, which only the B3 child process does (`rdq-bench --b3-child N`, run
//! by B3): in every other process each allocation reads a flag that is
//! never written (it stays in every core's cache) and goes straight to the
//! system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static ON: AtomicBool = AtomicBool::new(false);

/// Turns counting on for the rest of this process (the B3 child).
pub(crate) fn start() {
    ON.store(true, Ordering::SeqCst);
}

pub(crate) struct Counting;

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Bytes currently allocated through this allocator.
pub(crate) fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}
