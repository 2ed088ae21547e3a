//! The completion slot shared by a job's [`JobHandle`] and the queue.
//!
//! # Implementation details
//!
//! A slot is written once (by whoever decides the job's outcome) and read once
//! (by the handle). Both sides meet in one `AtomicUsize`:
//!
//! * bits 2.. hold the address of the boxed result once it is stored (the box
//!   is 8-aligned, so the low bits are free);
//! * bit 0, `WAKER_SET`, means the reader has parked a waker in `waker` and
//!   may not touch it until it clears the bit again;
//! * bit 1, `CLOSED`, means the reader is gone (dropped or already took the
//!   value), so the writer need not build a result at all.
//!
//! The reader owns `waker` whenever `WAKER_SET` is clear; the writer may take
//! it only after its own `fetch_or` saw `WAKER_SET` set, and then the reader's
//! next compare-exchange fails, so it never touches `waker` again. That is the
//! whole protocol; `tests::loom_*` check it exhaustively under `--cfg rdq_loom`.
//!
//! A slot costs one allocation of 40 bytes per job (two reference counts, the
//! state word and an optional waker), which keeps a pending job small; the
//! result is boxed only when the job finishes.
//!
//! [`JobHandle`]: crate::JobHandle

use std::marker::PhantomData;
use std::task::{Context, Poll, Waker};

use crate::loom::{AtomicUsize, Ordering, UnsafeCell};

const WAKER_SET: usize = 0b01;
const CLOSED: usize = 0b10;
const FLAGS: usize = WAKER_SET | CLOSED;

/// Forces the boxed value's alignment so its address leaves the flag bits free.
#[repr(align(8))]
struct Aligned<T>(T);

pub(crate) struct Slot<T> {
    state: AtomicUsize,
    waker: UnsafeCell<Option<Waker>>,
    _value: PhantomData<Box<T>>,
}

// SAFETY: the value crosses threads once, from writer to reader, through the
// Release/Acquire pair on `state`; `waker` is only touched by whichever side
// owns it under the protocol above. Both need `T: Send` and nothing more.
unsafe impl<T: Send> Send for Slot<T> {}
// SAFETY: as above: shared access never hands out `&T`.
unsafe impl<T: Send> Sync for Slot<T> {}

impl<T> std::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}

impl<T> Slot<T> {
    pub(crate) fn new() -> Self {
        Slot {
            state: AtomicUsize::new(0),
            waker: UnsafeCell::new(None),
            _value: PhantomData,
        }
    }

    /// Whether the reader is gone, so a result would be thrown away.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Relaxed) & CLOSED != 0
    }

    /// Stores the value and wakes the reader. Must be called at most once.
    pub(crate) fn complete(&self, value: T) {
        let ptr = Box::into_raw(Box::new(Aligned(value))) as usize;
        debug_assert_eq!(ptr & FLAGS, 0);
        let prev = self.state.fetch_or(ptr, Ordering::AcqRel);
        debug_assert_eq!(prev & !FLAGS, 0, "slot completed twice");
        if prev & WAKER_SET != 0 {
            // SAFETY: the reader set WAKER_SET after writing the waker and
            // gives up the cell only by clearing the bit, which now fails
            // because the address bits are set.
            let waker = self.waker.with_mut(|w| unsafe { (*w).take() });
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Reader side: the value once stored, or `Pending` with `cx` registered.
    /// Must not be called again after it returned `Ready`.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.load(Ordering::Acquire);
        if state & !FLAGS != 0 {
            return Poll::Ready(self.take());
        }
        if state & WAKER_SET != 0 {
            // Take the waker cell back before looking at it.
            match self.state.compare_exchange(
                state,
                state & !WAKER_SET,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => state &= !WAKER_SET,
                Err(_) => return Poll::Ready(self.take()),
            }
        }
        // SAFETY: WAKER_SET is clear, so the writer does not touch the cell.
        self.waker.with_mut(|w| unsafe {
            match &*w {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        });
        match self.state.compare_exchange(
            state,
            state | WAKER_SET,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Poll::Pending,
            Err(_) => Poll::Ready(self.take()),
        }
    }

    /// The reader gives up: a later `complete` need not build a value.
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::Relaxed);
    }

    fn take(&self) -> T {
        let prev = self.state.swap(CLOSED, Ordering::Acquire);
        let ptr = prev & !FLAGS;
        debug_assert_ne!(ptr, 0);
        // SAFETY: `ptr` came from `Box::into_raw` in `complete`, and the swap
        // cleared it, so this is its only owner.
        unsafe { Box::from_raw(ptr as *mut Aligned<T>).0 }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        let ptr = self.state.load(Ordering::Acquire) & !FLAGS;
        if ptr != 0 {
            // SAFETY: stored by `complete` and never taken by the reader.
            drop(unsafe { Box::from_raw(ptr as *mut Aligned<T>) });
        }
    }
}

#[cfg(all(test, not(rdq_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn value_before_poll_is_ready() {
        let slot = Slot::new();
        slot.complete(String::from("done"));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(slot.poll_take(&mut cx), Poll::Ready(String::from("done")));
    }

    #[test]
    fn poll_then_complete_wakes_once() {
        let slot = Slot::new();
        let count = Arc::new(Count(Default::default()));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(slot.poll_take(&mut cx), Poll::Pending);
        assert_eq!(slot.poll_take(&mut cx), Poll::Pending);
        slot.complete(7u64);
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(slot.poll_take(&mut cx), Poll::Ready(7));
    }

    #[test]
    fn unread_value_is_dropped_with_slot() {
        let value = Arc::new(());
        let slot = Slot::new();
        slot.complete(value.clone());
        assert_eq!(Arc::strong_count(&value), 2);
        drop(slot);
        assert_eq!(Arc::strong_count(&value), 1);
    }

    #[test]
    fn close_is_visible_to_writer() {
        let slot = Slot::<u8>::new();
        assert!(!slot.is_closed());
        slot.close();
        assert!(slot.is_closed());
        slot.complete(1); // still legal; freed on drop
    }
}

#[cfg(all(test, rdq_loom))]
mod tests {
    use super::*;
    use loom::future::block_on;
    use loom::sync::Arc;

    struct Take(Arc<Slot<Box<u32>>>);
    impl std::future::Future for Take {
        type Output = Box<u32>;
        fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Box<u32>> {
            self.0.poll_take(cx)
        }
    }

    #[test]
    fn loom_complete_races_poll() {
        loom::model(|| {
            let slot = Arc::new(Slot::new());
            let writer = slot.clone();
            let t = loom::thread::spawn(move || writer.complete(Box::new(5)));
            assert_eq!(*block_on(Take(slot)), 5);
            t.join().unwrap();
        });
    }

    #[test]
    fn loom_reader_dropped_while_writing() {
        loom::model(|| {
            let slot = Arc::new(Slot::<Box<u32>>::new());
            let writer = slot.clone();
            let t = loom::thread::spawn(move || {
                if !writer.is_closed() {
                    writer.complete(Box::new(1));
                }
            });
            slot.close();
            drop(slot);
            t.join().unwrap();
        });
    }
}
