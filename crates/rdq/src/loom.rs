//! Switch between `std` and [loom] for the few types that use atomics
//! directly, so `RUSTFLAGS="--cfg rdq_loom"` model-checks them.
//!
//! The cfg is `rdq_loom`, not `loom`, so that Tokio (a dependency) is not
//! compiled in its own loom mode.
//!
//! [loom]: https://docs.rs/loom

#[cfg(rdq_loom)]
pub(crate) use loom::{
    cell::UnsafeCell,
    sync::atomic::{AtomicUsize, Ordering},
};

#[cfg(not(rdq_loom))]
pub(crate) use std::sync::atomic::{AtomicUsize, Ordering};

/// `std`'s `UnsafeCell` with loom's closure-based access API.
#[cfg(not(rdq_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(rdq_loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}
