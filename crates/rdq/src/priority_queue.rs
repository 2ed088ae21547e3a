//! [`AsyncPriorityQueue`]: a shared priority queue whose `pop` waits for an
//! item.
//!
//! The model (order, waiting pops, cancel safety) is documented on
//! [`AsyncPriorityQueue`] itself, where users see it: this module is private
//! and re-exported from the crate root.
//!
//! # Implementation details
//!
//! One `std::sync::Mutex` guards a binary heap ordered by (priority, push
//! sequence number), the waiting pops in arrival order (a `BTreeMap` from
//! waiter id to [`Waker`], ids growing with arrival) and the items handed to
//! pops that have not yet taken them. A push with waiters moves the item into
//! the oldest waiter's slot and wakes it after unlocking; wakers are never
//! called under the lock. Removing a cancelled waiter costs `O(log n)`.
//!
//! Invariant: the heap is empty whenever a pop waits, because a push with a
//! waiter never reaches the heap and a pop only waits after finding the heap
//! empty. So handing an item straight to the oldest waiter never bypasses a
//! better item. A handed item keeps its (priority, sequence number); a pop
//! dropped before taking it runs the push path again with the same entry,
//! which puts it back exactly where it was, or hands it to the next waiter.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use rustc_hash::FxHashMap;

use crate::queue::job::Priority;

/// A shared priority queue whose [`pop`](AsyncPriorityQueue::pop) waits for
/// an item.
///
/// It hands items from producers to consumers in priority order.
/// [`push`](AsyncPriorityQueue::push) never waits (the queue is unbounded);
/// [`pop`](AsyncPriorityQueue::pop) returns a future that waits until there is
/// an item for it.
///
/// ```
/// use rdq::AsyncPriorityQueue;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let q = AsyncPriorityQueue::new();
/// q.push("weekly news", 5);
/// q.push("your code is 1234", -1);
/// q.push("reminder", 5);
///
/// assert_eq!(q.pop().await, "your code is 1234");
/// assert_eq!(q.pop().await, "weekly news");
/// assert_eq!(q.try_pop(), Some("reminder"));
/// assert_eq!(q.try_pop(), None);
/// # }
/// ```
///
/// # Priority and FIFO
///
/// The same convention as [`DispatchQueue`](crate::DispatchQueue): a **lower**
/// [`Priority`] number pops first, and items of equal priority pop in push
/// order.
///
/// # Waiting pops
///
/// When several `pop` futures are waiting, each pushed item is handed to
/// exactly one of them, the one that has waited longest, and only that one is
/// woken. While any `pop` waits the queue holds no items (they would have been
/// handed out), so a waiting pop can never be overtaken by a later
/// [`try_pop`](AsyncPriorityQueue::try_pop) or `pop`. A `pop` starts waiting
/// at its first poll, not when it is created.
///
/// An item handed to a waiting `pop` has left the queue:
/// [`len`](AsyncPriorityQueue::len) no longer counts it, even if the popping
/// task has not run yet.
///
/// # Cancel safety
///
/// `pop` is cancel safe: dropping a `pop` future — a `select!` that took
/// another branch, an expired [`tokio::time::timeout`] — **never loses an
/// item**. If an item had already been handed to it, the drop passes that item
/// to the next waiting `pop`, or puts it back in the queue at the place its
/// priority and push order give it, exactly as if it had never left. A dropped
/// `pop` also leaves no entry behind.
///
/// ```
/// use std::time::Duration;
/// use rdq::AsyncPriorityQueue;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let q = AsyncPriorityQueue::new();
/// tokio::select! {
///     item = q.pop() => unreachable!("got {item}"),
///     () = tokio::time::sleep(Duration::from_secs(1)) => {} // gave up
/// }
/// q.push(1, 0);
/// assert_eq!(q.pop().await, 1);
/// # }
/// ```
///
/// # Sharing
///
/// Cloning an `AsyncPriorityQueue` gives another handle to the same queue. A
/// `pop` future does not borrow the queue.
pub struct AsyncPriorityQueue<T> {
    shared: Arc<Mutex<State<T>>>,
}

struct State<T> {
    /// Items no pop has been given. Empty whenever `waiting` is not.
    heap: BinaryHeap<Entry<T>>,
    /// Sequence number of the next push.
    next_seq: u64,
    /// Pops waiting for an item, oldest (smallest id) first.
    waiting: BTreeMap<u64, Waker>,
    /// Items handed to a pop that has not taken them yet.
    handed: FxHashMap<u64, Entry<T>>,
    next_waiter: u64,
}

/// An item with its place in the order.
struct Entry<T> {
    priority: Priority,
    seq: u64,
    item: T,
}

impl<T> Entry<T> {
    fn key(&self) -> (Priority, u64) {
        (self.priority, self.seq)
    }
}

// `BinaryHeap` pops the greatest: the greatest entry is the one with the
// smallest (priority, seq).
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.key().cmp(&self.key())
    }
}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T> Eq for Entry<T> {}

impl<T> State<T> {
    /// Gives `entry` to the oldest waiting pop, or queues it. Returns the
    /// waker to call once the lock is released.
    fn deliver(&mut self, entry: Entry<T>) -> Option<Waker> {
        match self.waiting.pop_first() {
            Some((id, waker)) => {
                self.handed.insert(id, entry);
                Some(waker)
            }
            None => {
                self.heap.push(entry);
                None
            }
        }
    }
}

impl<T> AsyncPriorityQueue<T> {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        AsyncPriorityQueue {
            shared: Arc::new(Mutex::new(State {
                heap: BinaryHeap::new(),
                next_seq: 0,
                waiting: BTreeMap::new(),
                handed: FxHashMap::default(),
                next_waiter: 0,
            })),
        }
    }

    /// Adds `item` with `priority` (lower pops first; equal priorities in push
    /// order). If a [`pop`](AsyncPriorityQueue::pop) is waiting, the item goes
    /// straight to the one that has waited longest. Never waits.
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::AsyncPriorityQueue;
    ///
    /// let q = AsyncPriorityQueue::new();
    /// q.push('b', 1);
    /// q.push('a', 0);
    /// q.push('c', 1);
    /// let order: Vec<char> = std::iter::from_fn(|| q.try_pop()).collect();
    /// assert_eq!(order, ['a', 'b', 'c']);
    /// ```
    pub fn push(&self, item: T, priority: Priority) {
        let waker = {
            let mut state = lock(&self.shared);
            let seq = state.next_seq;
            state.next_seq += 1;
            state.deliver(Entry {
                priority,
                seq,
                item,
            })
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits for an item and returns it: the first in priority order if any
    /// is queued at the first poll, otherwise the first pushed after.
    ///
    /// The future does not borrow the queue. It is cancel safe: see
    /// [Cancel safety](AsyncPriorityQueue#cancel-safety).
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::AsyncPriorityQueue;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let q = AsyncPriorityQueue::new();
    /// let consumer = tokio::spawn({
    ///     let q = q.clone();
    ///     async move { q.pop().await }
    /// });
    /// q.push("job", 0);
    /// assert_eq!(consumer.await.unwrap(), "job");
    /// # }
    /// ```
    pub fn pop(&self) -> impl Future<Output = T> + use<T> {
        Pop {
            shared: Arc::clone(&self.shared),
            id: None,
        }
    }

    /// The first item in priority order, if any, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        lock(&self.shared).heap.pop().map(|entry| entry.item)
    }

    /// The number of items queued: pushed and not yet handed to a pop.
    pub fn len(&self) -> usize {
        lock(&self.shared).heap.len()
    }

    /// Whether no item is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The future of [`AsyncPriorityQueue::pop`].
struct Pop<T> {
    shared: Arc<Mutex<State<T>>>,
    /// Set while this pop waits or holds a handed item.
    id: Option<u64>,
}

impl<T> Future for Pop<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        // `Pop` is `Unpin`: it holds no future.
        let this = self.get_mut();
        let mut state = lock(&this.shared);
        match this.id {
            None => {
                if let Some(entry) = state.heap.pop() {
                    return Poll::Ready(entry.item);
                }
                let id = state.next_waiter;
                state.next_waiter += 1;
                state.waiting.insert(id, cx.waker().clone());
                this.id = Some(id);
                Poll::Pending
            }
            Some(id) => {
                if let Some(entry) = state.handed.remove(&id) {
                    this.id = None;
                    return Poll::Ready(entry.item);
                }
                if let Some(waker) = state.waiting.get_mut(&id) {
                    if !waker.will_wake(cx.waker()) {
                        waker.clone_from(cx.waker());
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<T> Drop for Pop<T> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let waker = {
            let mut state = lock(&self.shared);
            if state.waiting.remove(&id).is_some() {
                return;
            }
            // An item was handed to us: pass it on, keeping its place.
            let entry = state.handed.remove(&id);
            entry.and_then(|entry| state.deliver(entry))
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Locks, ignoring poison: no user code runs under the lock, and every
/// critical section leaves the state valid.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T> Clone for AsyncPriorityQueue<T> {
    fn clone(&self) -> Self {
        AsyncPriorityQueue {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Default for AsyncPriorityQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for AsyncPriorityQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("AsyncPriorityQueue")
            .field("len", &state.heap.len())
            .field("waiting_pops", &state.waiting.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;

    fn poll<F: Future + ?Sized>(f: Pin<&mut F>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn shape<T>(q: &AsyncPriorityQueue<T>) -> (usize, usize, usize) {
        let s = lock(&q.shared);
        (s.heap.len(), s.waiting.len(), s.handed.len())
    }

    #[test]
    fn priority_then_push_order() {
        let q = AsyncPriorityQueue::new();
        for (item, prio) in [(0, 3), (1, -2), (2, 3), (3, 0), (4, -2), (5, i32::MIN)] {
            q.push(item, prio);
        }
        let order: Vec<_> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(order, [5, 1, 4, 3, 0, 2]);
    }

    #[test]
    fn pop_waits_from_first_poll_not_creation() {
        let q = AsyncPriorityQueue::new();
        let unpolled = q.pop();
        q.push('x', 0);
        assert_eq!(shape(&q), (1, 0, 0));
        drop(unpolled);
        assert_eq!(q.try_pop(), Some('x'));
    }

    #[test]
    fn oldest_waiter_is_served_first() {
        let q = AsyncPriorityQueue::new();
        let mut a = pin!(q.pop());
        let mut b = pin!(q.pop());
        assert!(poll(a.as_mut()).is_pending());
        assert!(poll(b.as_mut()).is_pending());
        q.push("first", 9);
        q.push("second", 0);
        assert_eq!(shape(&q), (0, 0, 2));
        assert_eq!(poll(b.as_mut()), Poll::Ready("second"));
        assert_eq!(poll(a.as_mut()), Poll::Ready("first"));
        assert_eq!(shape(&q), (0, 0, 0));
    }

    #[test]
    fn dropped_waiting_pop_leaves_nothing() {
        let q = AsyncPriorityQueue::<u8>::new();
        for _ in 0..50 {
            let mut p = pin!(q.pop());
            assert!(poll(p.as_mut()).is_pending());
        }
        assert_eq!(shape(&q), (0, 0, 0));
    }

    #[test]
    fn dropped_pop_passes_its_item_to_the_next_waiter() {
        let q = AsyncPriorityQueue::new();
        let mut a = Box::pin(q.pop());
        let mut b = pin!(q.pop());
        assert!(poll(a.as_mut()).is_pending());
        assert!(poll(b.as_mut()).is_pending());
        q.push(7, 0);
        drop(a);
        assert_eq!(shape(&q), (0, 0, 1));
        assert_eq!(poll(b.as_mut()), Poll::Ready(7));
    }

    #[test]
    fn dropped_pop_puts_its_item_back_in_place() {
        let q = AsyncPriorityQueue::new();
        let mut a = Box::pin(q.pop());
        assert!(poll(a.as_mut()).is_pending());
        q.push("first", 1); // handed to `a`
        q.push("second", 1);
        q.push("urgent", 0);
        drop(a);
        let order: Vec<_> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(order, ["urgent", "first", "second"]);
        assert_eq!(shape(&q), (0, 0, 0));
    }
}
