//! Job ids: unique in the whole process, so that an id from one queue can
//! never name a job of another.
//!
//! # Implementation details
//!
//! Each queue takes ids in blocks of [`BLOCK`] from one process-wide counter
//! and hands them out in order, so ids still grow with put order within a
//! queue (the pending order relies on it) and a program with one queue sees
//! 1, 2, 3, … as before. A queue remembers the blocks it took (one `u64` per
//! 1,024 jobs), which is how it tells one of its own finished jobs from an id
//! it never issued. The shared counter is touched once per block, not per
//! put.

use std::sync::atomic::{AtomicU64, Ordering};

/// Ids per block.
const BLOCK: u64 = 1024;

/// The next block not yet taken by any queue of this process.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(0);

/// One queue's ids.
#[derive(Debug, Default)]
pub(super) struct Ids {
    /// The next id to hand out, if below `end`.
    next: u64,
    /// The end of the current block.
    end: u64,
    /// The blocks this queue took, in increasing order.
    blocks: Vec<u64>,
}

impl Ids {
    /// A new, unused id, greater than every id this queue issued before.
    pub(super) fn issue(&mut self) -> u64 {
        if self.next == self.end {
            let block = NEXT_BLOCK.fetch_add(1, Ordering::Relaxed);
            self.blocks.push(block);
            // Id 0 is never issued.
            self.next = (block * BLOCK).max(1);
            self.end = (block + 1) * BLOCK;
        }
        let id = self.next;
        self.next += 1;
        id
    }

    /// Whether this queue issued `id`.
    pub(super) fn issued(&self, id: u64) -> bool {
        id != 0 && id < self.next && self.blocks.binary_search(&(id / BLOCK)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_two_queues_never_meet_and_each_grows() {
        let (mut a, mut b) = (Ids::default(), Ids::default());
        let mut seen = std::collections::HashSet::new();
        let (mut last_a, mut last_b) = (0, 0);
        for k in 0..5 * BLOCK {
            let id = if k % 3 == 0 { a.issue() } else { b.issue() };
            assert!(seen.insert(id), "id {id} issued twice");
            if k % 3 == 0 {
                assert!(id > last_a);
                last_a = id;
                assert!(a.issued(id) && !b.issued(id));
            } else {
                assert!(id > last_b);
                last_b = id;
                assert!(b.issued(id) && !a.issued(id));
            }
        }
        assert!(!a.issued(0) && !a.issued(last_a + 1));
    }
}
