//! Pending jobs in launch order: priority first, then put order.
//!
//! # Implementation details
//!
//! One FIFO bucket per distinct priority, in a `BTreeMap` keyed by priority.
//! Job ids grow with put order, so every bucket is sorted by id: a put appends
//! to its bucket, and a reprioritized job is inserted where its id belongs
//! (found by binary search), which keeps put order among equals exactly.
//!
//! Removal from the middle (cancel, reprioritize) leaves a tombstone instead of
//! shifting the bucket, so it costs `O(log n)`; tombstones are skipped by `pop`
//! and swept out once they outnumber the live entries of their bucket. The
//! live count is kept exactly, so `len()` never counts a tombstone, and a
//! bucket is removed as soon as it holds no live job: no stale entry can stay
//! behind to confuse the dispatcher later (the classic fault this type avoids).
//!
//! Finding a job by id (cancel, reprioritize) searches each bucket by binary
//! search, `O(b log n)` for `b` distinct priorities, which is a handful in
//! practice. Only a queue with many distinct priorities (more than
//! `INDEX_ABOVE`) keeps an id → priority index, built when it gets there and
//! dropped when it falls back to `INDEX_BELOW`: a million pending jobs at a
//! few priorities pay neither the index's memory (17–35 bytes a job, with
//! the hash table's growth) nor its cost on every put and launch (a profile
//! of B1 put a fifth of the queue's time in that table).
//!
//! Memory per job: the bucket entry (id, payload), with the bucket's
//! capacity doubling.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::FxHashMap;

use super::job::Priority;

/// Distinct priorities beyond which an id index is kept ...
const INDEX_ABOVE: usize = 64;

/// ... and at or below which it is dropped again.
const INDEX_BELOW: usize = 16;

/// Tombstones tolerated in a bucket before it is swept, at the least.
const SWEEP_MIN: usize = 32;

#[derive(Debug)]
struct Bucket<T> {
    /// Sorted by id; `None` marks a removed job.
    slots: VecDeque<(u64, Option<T>)>,
    live: usize,
}

impl<T> Bucket<T> {
    fn new() -> Self {
        Bucket {
            slots: VecDeque::new(),
            live: 0,
        }
    }

    /// Whether a live job with this id is here.
    fn holds(&self, id: u64) -> bool {
        match (self.slots.front(), self.slots.back()) {
            (Some((first, _)), Some((last, _))) if (*first..=*last).contains(&id) => self
                .position(id)
                .is_ok_and(|pos| self.slots[pos].1.is_some()),
            _ => false,
        }
    }

    fn position(&self, id: u64) -> Result<usize, usize> {
        self.slots
            .binary_search_by_key(&id, |(slot_id, _)| *slot_id)
    }

    /// Removes a live job by id.
    fn take(&mut self, id: u64) -> Option<T> {
        let pos = self.position(id).ok()?;
        let value = self.slots[pos].1.take()?;
        self.live -= 1;
        // Tombstones at the front go at once: `oldest` (drop-oldest, on
        // every put to a full queue) then finds a live job first.
        while matches!(self.slots.front(), Some((_, None))) {
            self.slots.pop_front();
        }
        let dead = self.slots.len() - self.live;
        if dead > SWEEP_MIN && dead > self.live {
            self.slots.retain(|(_, v)| v.is_some());
        }
        Some(value)
    }

    fn insert_sorted(&mut self, id: u64, value: T) {
        match self.slots.back() {
            None => self.slots.push_back((id, Some(value))),
            Some((last, _)) if *last < id => self.slots.push_back((id, Some(value))),
            _ => {
                let pos = match self.position(id) {
                    Ok(pos) | Err(pos) => pos,
                };
                // A tombstone of this very id can exist if the job left this
                // bucket and comes back: reuse it.
                if self.slots.get(pos).is_some_and(|(i, _)| *i == id) {
                    self.slots[pos].1 = Some(value);
                } else {
                    self.slots.insert(pos, (id, Some(value)));
                }
            }
        }
        self.live += 1;
    }

    fn pop_front(&mut self) -> Option<(u64, T)> {
        while let Some((id, value)) = self.slots.pop_front() {
            if let Some(value) = value {
                self.live -= 1;
                return Some((id, value));
            }
        }
        None
    }
}

/// Pending jobs ordered by (priority, id).
#[derive(Debug)]
pub(crate) struct Pending<T> {
    buckets: BTreeMap<Priority, Bucket<T>>,
    len: usize,
    /// id → priority, kept only while there are many buckets (see the
    /// module docs).
    index: Option<FxHashMap<u64, Priority>>,
}

impl<T> Pending<T> {
    pub(crate) fn new() -> Self {
        Pending {
            buckets: BTreeMap::new(),
            len: 0,
            index: None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a job. Ids must be unique; a job put after every job here (the
    /// common case) is appended in `O(1)`.
    pub(crate) fn push(&mut self, id: u64, priority: Priority, value: T) {
        debug_assert!(self.find(id).is_none(), "job {id} pushed twice");
        self.insert(id, priority, value);
        self.len += 1;
        match &mut self.index {
            Some(index) => {
                index.insert(id, priority);
            }
            None if self.buckets.len() > INDEX_ABOVE => self.build_index(),
            None => {}
        }
    }

    fn insert(&mut self, id: u64, priority: Priority, value: T) {
        self.buckets
            .entry(priority)
            .or_insert_with(Bucket::new)
            .insert_sorted(id, value);
    }

    fn build_index(&mut self) {
        let mut index = FxHashMap::default();
        index.reserve(self.len);
        index.extend(self.iter().map(|(id, priority, _)| (id, priority)));
        self.index = Some(index);
    }

    /// Drops the index once few buckets are left.
    fn shrink_index(&mut self) {
        if self.index.is_some() && self.buckets.len() <= INDEX_BELOW {
            self.index = None;
        }
    }

    /// The priority of a pending job.
    fn find(&self, id: u64) -> Option<Priority> {
        match &self.index {
            Some(index) => index.get(&id).copied(),
            None => self
                .buckets
                .iter()
                .find(|(_, bucket)| bucket.holds(id))
                .map(|(priority, _)| *priority),
        }
    }

    /// Removes and returns the job that launches next.
    pub(crate) fn pop(&mut self) -> Option<(u64, Priority, T)> {
        let mut entry = self.buckets.first_entry()?;
        let priority = *entry.key();
        let bucket = entry.get_mut();
        let popped = bucket.pop_front();
        if bucket.live == 0 {
            entry.remove();
        }
        let (id, value) = popped.expect("a bucket in the map holds a live job");
        self.len -= 1;
        if let Some(index) = &mut self.index {
            index.remove(&id);
            self.shrink_index();
        }
        Some((id, priority, value))
    }

    /// Removes a job by id.
    pub(crate) fn remove(&mut self, id: u64) -> Option<(Priority, T)> {
        let priority = self.find(id)?;
        let value = self.take_from_bucket(id, priority);
        self.len -= 1;
        if let Some(index) = &mut self.index {
            index.remove(&id);
            self.shrink_index();
        }
        Some((priority, value))
    }

    /// Moves a job to another priority, keeping its put order among equals.
    /// Returns the old priority, or `None` if the job is not pending.
    pub(crate) fn reprioritize(&mut self, id: u64, priority: Priority) -> Option<Priority> {
        let old = self.find(id)?;
        if old != priority {
            let value = self.take_from_bucket(id, old);
            self.insert(id, priority, value);
            match &mut self.index {
                Some(index) => {
                    index.insert(id, priority);
                    self.shrink_index();
                }
                None if self.buckets.len() > INDEX_ABOVE => self.build_index(),
                None => {}
            }
        }
        Some(old)
    }

    fn take_from_bucket(&mut self, id: u64, priority: Priority) -> T {
        let std::collections::btree_map::Entry::Occupied(mut entry) = self.buckets.entry(priority)
        else {
            unreachable!("find named a bucket that does not exist");
        };
        let value = entry
            .get_mut()
            .take(id)
            .expect("find named a job its bucket does not hold");
        if entry.get().live == 0 {
            entry.remove();
        }
        value
    }

    /// The job put longest ago (the smallest id): the first live entry of
    /// some bucket, so this looks at one entry per priority (after skipping
    /// tombstones at the fronts, which `take` sweeps out in bulk).
    pub(crate) fn oldest(&self) -> Option<(u64, &T)> {
        self.buckets
            .values()
            .filter_map(|bucket| {
                bucket
                    .slots
                    .iter()
                    .find_map(|(id, v)| v.as_ref().map(|v| (*id, v)))
            })
            .min_by_key(|(id, _)| *id)
    }

    /// Jobs in launch order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, Priority, &T)> + '_ {
        self.buckets.iter().flat_map(|(priority, bucket)| {
            bucket
                .slots
                .iter()
                .filter_map(move |(id, v)| v.as_ref().map(|v| (*id, *priority, v)))
        })
    }

    /// Removes every job, in launch order.
    pub(crate) fn drain(&mut self) -> Vec<(u64, Priority, T)> {
        let mut out = Vec::with_capacity(self.len());
        for (priority, bucket) in std::mem::take(&mut self.buckets) {
            out.extend(
                bucket
                    .slots
                    .into_iter()
                    .filter_map(|(id, v)| v.map(|v| (id, priority, v))),
            );
        }
        self.len = 0;
        self.index = None;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids<T>(p: &Pending<T>) -> Vec<u64> {
        p.iter().map(|(id, _, _)| id).collect()
    }

    #[test]
    fn lower_priority_first_then_put_order() {
        let mut p = Pending::new();
        p.push(1, 5, ());
        p.push(2, 1, ());
        p.push(3, 5, ());
        p.push(4, -1, ());
        assert_eq!(ids(&p), [4, 2, 1, 3]);
        assert_eq!(p.pop().map(|(id, pr, _)| (id, pr)), Some((4, -1)));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn reprioritized_job_keeps_put_order_among_equals() {
        let mut p = Pending::new();
        for id in 1..=5 {
            p.push(id, if id == 3 { 9 } else { 0 }, ());
        }
        assert_eq!(p.reprioritize(3, 0), Some(9));
        assert_eq!(ids(&p), [1, 2, 3, 4, 5]);
        assert_eq!(p.reprioritize(1, 1), Some(0));
        assert_eq!(ids(&p), [2, 3, 4, 5, 1]);
        assert_eq!(p.reprioritize(99, 1), None);
    }

    #[test]
    fn oldest_is_the_smallest_id_whatever_its_priority() {
        let mut p = Pending::new();
        assert!(p.oldest().is_none());
        p.push(3, 5, ());
        p.push(4, 1, ());
        p.push(5, 5, ());
        assert_eq!(p.oldest().map(|(id, _)| id), Some(3));
        p.remove(3);
        assert_eq!(p.oldest().map(|(id, _)| id), Some(4));
        p.reprioritize(4, 9);
        assert_eq!(p.oldest().map(|(id, _)| id), Some(4));
        p.pop();
        assert_eq!(p.oldest().map(|(id, _)| id), Some(4));
    }

    #[test]
    fn removal_leaves_nothing_that_pop_can_see() {
        let mut p = Pending::new();
        for id in 1..=100 {
            p.push(id, (id % 3) as Priority, id);
        }
        for id in (1..=100).step_by(2) {
            assert_eq!(p.remove(id).map(|(_, v)| v), Some(id));
        }
        assert_eq!(p.remove(1), None);
        let mut popped = Vec::new();
        while let Some((id, _, v)) = p.pop() {
            assert_eq!(id, v);
            popped.push(id);
        }
        assert_eq!(popped.len(), 50);
        assert!(popped.iter().all(|id| id % 2 == 0));
        assert!(p.is_empty());
        assert!(p.buckets.is_empty(), "empty buckets must not linger");
    }

    #[test]
    fn job_returning_to_its_old_bucket_reuses_its_tombstone() {
        let mut p = Pending::new();
        for id in 1..=3 {
            p.push(id, 0, id);
        }
        p.reprioritize(2, 1);
        p.reprioritize(2, 0);
        assert_eq!(ids(&p), [1, 2, 3]);
        assert_eq!(p.len(), 3);
        assert_eq!(p.drain().len(), 3);
        assert!(p.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push(Priority),
        Pop,
        Remove(usize),
        Reprioritize(usize, Priority),
    }

    /// Operations over priorities drawn from `priorities`: a few (the
    /// common case, no index) or many (the index is built and dropped as the
    /// bucket count crosses its thresholds).
    fn op(priorities: std::ops::Range<i32>) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => priorities.clone().prop_map(Op::Push),
            2 => Just(Op::Pop),
            2 => any::<usize>().prop_map(Op::Remove),
            2 => (any::<usize>(), priorities).prop_map(|(i, p)| Op::Reprioritize(i, p)),
        ]
    }

    #[test]
    fn the_index_comes_and_goes_with_the_number_of_priorities() {
        let mut p = Pending::new();
        for id in 0..=INDEX_ABOVE as u64 {
            assert!(p.index.is_none());
            p.push(id, id as Priority, id);
        }
        assert_eq!(p.index.as_ref().map(|i| i.len()), Some(INDEX_ABOVE + 1));
        assert_eq!(p.remove(40), Some((40, 40)));
        assert_eq!(p.reprioritize(41, 0), Some(41));
        assert_eq!(p.index.as_ref().map(|i| i[&41]), Some(0));
        while p.buckets.len() > INDEX_BELOW {
            assert!(p.index.is_some());
            p.pop();
        }
        assert!(p.index.is_none());
        let left = p.len();
        assert_eq!(p.drain().len(), left);
    }

    proptest! {
        /// Against a plain vector sorted by (priority, id) after each step.
        #[test]
        fn matches_sorted_vec(
            ops in prop_oneof![
                proptest::collection::vec(op(-3..4), 1..300),
                proptest::collection::vec(op(0..150), 1..400),
            ]
        ) {
            let mut p = Pending::new();
            let mut model: Vec<(Priority, u64)> = Vec::new();
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Push(pr) => { p.push(next, pr, next); model.push((pr, next)); next += 1; }
                    Op::Pop => {
                        let got = p.pop().map(|(id, pr, v)| { assert_eq!(id, v); (pr, id) });
                        let want = if model.is_empty() { None } else { Some(model.remove(0)) };
                        prop_assert_eq!(got, want);
                    }
                    Op::Remove(i) if !model.is_empty() => {
                        let (pr, id) = model.remove(i % model.len());
                        prop_assert_eq!(p.remove(id).map(|(pr, _)| pr), Some(pr));
                    }
                    Op::Reprioritize(i, new) if !model.is_empty() => {
                        let i = i % model.len();
                        let old = model[i].0;
                        model[i].0 = new;
                        prop_assert_eq!(p.reprioritize(model[i].1, new), Some(old));
                    }
                    _ => {}
                }
                model.sort();
                prop_assert_eq!(p.len(), model.len());
                let got: Vec<_> = p.iter().map(|(id, pr, _)| (pr, id)).collect();
                prop_assert_eq!(&got, &model);
                if let Some(index) = &p.index {
                    prop_assert_eq!(index.len(), model.len());
                    prop_assert!(model.iter().all(|(pr, id)| index.get(id) == Some(pr)));
                }
            }
        }
    }
}
