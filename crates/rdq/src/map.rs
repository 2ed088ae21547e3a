//! [`AsyncMap`]: a map whose readers can wait for a key to appear.
//!
//! The model (when a `get` registers, what it receives, cancellation) is
//! documented on [`AsyncMap`] itself, where users see it: this module is
//! private and re-exported from the crate root.
//!
//! # Implementation details
//!
//! One `std::sync::Mutex` guards two hash maps: the values, and the waiting
//! `get`s grouped by key, each a [`oneshot`] sender
//! under a waiter id. `get` registers under the lock when it is called, so an
//! insert can never fall between its look at the map and its registration.
//! `insert` takes the key's whole group of senders out under the lock (and
//! clones the value once, for the map, only if there is a group), then sends
//! each waiter its clone after unlocking: no other key's waiters are touched,
//! and no waker runs under the lock. A `get` future carries a guard that, when
//! dropped while still registered, removes its sender and, with the last one,
//! the key's group, so cancelled waits cannot accumulate.
//!
//! Should an insert panic halfway (a `Clone` that panics), the senders it had
//! not served are dropped; their `get`s see the closed channel and register
//! again instead of hanging. The lock ignores poisoning for the same reason:
//! only user code (`Hash`, `Eq`, `Clone`) can panic inside it, and it leaves
//! the maps valid.
//!
//! Keys are hashed with the standard library's randomly seeded hasher, since
//! they may come from outside (request ids); waiter ids use `FxHash`.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

/// A shared map whose [`get`](AsyncMap::get) waits for the key to be
/// inserted.
///
/// `AsyncMap` hands results from the tasks that produce them to the tasks
/// that wait for them: replies matched to requests by id, a configuration
/// loaded once and read by many, a peer's address learnt later.
///
/// ```
/// use rdq::AsyncMap;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let replies: AsyncMap<u64, String> = AsyncMap::new();
///
/// let waiter = tokio::spawn({
///     let replies = replies.clone();
///     async move { replies.get(&7).await }
/// });
/// replies.insert(7, "pong".to_owned());
/// assert_eq!(waiter.await.unwrap(), "pong");
/// # }
/// ```
///
/// # Waiting for a key
///
/// `get(&k)` looks at the map **when it is called**. If `k` is present, the
/// future resolves with a clone of its value. Otherwise the caller is
/// registered as a waiter for `k` at once, and the future resolves with a clone
/// of the value of the first `insert` of `k` after the call — even if that
/// value is removed or replaced before the waiting task runs. `get` never
/// removes anything, so any number of tasks can wait for the same key and all
/// of them receive it.
///
/// An insert wakes exactly the waiters of its own key: tasks waiting for other
/// keys are not woken to look (no thundering herd).
///
/// # Cancellation and timeouts
///
/// Dropping a `get` future (because a `select!` took another branch, or a
/// timeout fired) unregisters it at once; abandoned waits leave nothing
/// behind. There is deliberately no `get_timeout`: wrap the future in
/// [`tokio::time::timeout`] instead.
///
/// ```
/// use std::time::Duration;
/// use rdq::AsyncMap;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let map: AsyncMap<&str, u32> = AsyncMap::new();
/// let late = tokio::time::timeout(Duration::from_secs(1), map.get(&"answer")).await;
/// assert!(late.is_err()); // nobody inserted it; the waiter is gone
/// # }
/// ```
///
/// # Cost
///
/// Every operation holds one lock for a hash-map operation. A waiting `get`
/// costs one small channel. An insert clones the value once per waiter (and
/// once more for the map if anyone waits), so prefer values that are cheap to
/// clone: an `Arc`, a small `Copy` type.
///
/// # Sharing
///
/// Cloning an `AsyncMap` gives another handle to the same map. A `get` future
/// does not borrow the map and keeps working after the handle it came from is
/// dropped.
pub struct AsyncMap<K, V> {
    shared: Arc<Mutex<State<K, V>>>,
}

struct State<K, V> {
    values: HashMap<K, V>,
    /// Waiting `get`s by key, each under its waiter id. A key is present only
    /// while it has at least one waiter.
    waiters: HashMap<K, FxHashMap<u64, oneshot::Sender<V>>>,
    next_waiter: u64,
}

impl<K, V> AsyncMap<K, V> {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        AsyncMap {
            shared: Arc::new(Mutex::new(State {
                values: HashMap::new(),
                waiters: HashMap::new(),
                next_waiter: 0,
            })),
        }
    }

    /// The number of keys present.
    pub fn len(&self) -> usize {
        lock(&self.shared).values.len()
    }

    /// Whether no key is present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K, V> AsyncMap<K, V>
where
    K: Eq + Hash,
{
    /// Inserts `value` under `key`, returning the value it replaces, and
    /// wakes every [`get`](AsyncMap::get) waiting for `key`, each with a clone
    /// of `value`.
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::AsyncMap;
    ///
    /// let map = AsyncMap::new();
    /// assert_eq!(map.insert("a", 1), None);
    /// assert_eq!(map.insert("a", 2), Some(1));
    /// assert_eq!(map.try_get(&"a"), Some(2));
    /// ```
    pub fn insert(&self, key: K, value: V) -> Option<V>
    where
        V: Clone,
    {
        let (old, waiters) = {
            let mut state = lock(&self.shared);
            match state.waiters.remove(&key) {
                None => (state.values.insert(key, value), None),
                Some(waiters) => {
                    let old = state.values.insert(key, value.clone());
                    (old, Some((waiters, value)))
                }
            }
        };
        if let Some((waiters, value)) = waiters {
            // A send fails only when the `get` was dropped meanwhile; its
            // clone is simply dropped.
            let mut waiters = waiters.into_values().peekable();
            while let Some(tx) = waiters.next() {
                if waiters.peek().is_some() {
                    let _ = tx.send(value.clone());
                } else {
                    let _ = tx.send(value);
                    break;
                }
            }
        }
        old
    }

    /// Removes `key`, returning its value.
    ///
    /// A `get` that already had the value (or was handed it by an insert)
    /// keeps it; a `get` called after the removal waits for the next insert.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        lock(&self.shared).values.remove(key)
    }

    /// A clone of the value of `key`, if present, without waiting.
    pub fn try_get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
        V: Clone,
    {
        lock(&self.shared).values.get(key).cloned()
    }

    /// Whether `key` is present.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        lock(&self.shared).values.contains_key(key)
    }

    /// Waits for `key` and resolves with a clone of its value: at once if it
    /// is present now, otherwise with the value of the first
    /// [`insert`](AsyncMap::insert) of `key` after this call.
    ///
    /// The waiter is registered by this call, not at the first poll, and the
    /// future does not borrow the map. Dropping the future unregisters it. To
    /// give up after a while, wrap it in [`tokio::time::timeout`]. See
    /// [Waiting for a key](AsyncMap#waiting-for-a-key).
    ///
    /// # Example
    ///
    /// ```
    /// use rdq::AsyncMap;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let map = AsyncMap::new();
    /// let config = map.get(&"config"); // registered now
    /// map.insert("config", 42);
    /// map.remove(&"config");
    /// assert_eq!(config.await, 42); // the insert was delivered all the same
    /// # }
    /// ```
    pub fn get(&self, key: &K) -> impl Future<Output = V> + use<K, V>
    where
        K: Clone,
        V: Clone,
    {
        let mut waiter = Waiter {
            shared: Arc::clone(&self.shared),
            key: key.clone(),
            id: None,
        };
        let first = waiter.register();
        async move {
            let mut next = first;
            loop {
                let rx = match next {
                    Ok(value) => return value,
                    Err(rx) => rx,
                };
                let received = rx.await;
                // Either way, our sender has left the waiter list.
                waiter.id = None;
                match received {
                    Ok(value) => return value,
                    // Only an insert that panicked while sending drops a sender
                    // unsent; look again.
                    Err(_) => next = waiter.register(),
                }
            }
        }
    }
}

/// One waiting `get`: unregisters itself when dropped.
struct Waiter<K: Eq + Hash, V> {
    shared: Arc<Mutex<State<K, V>>>,
    key: K,
    /// Set while a sender of ours is in the waiter list.
    id: Option<u64>,
}

impl<K, V> Waiter<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    /// The value if present; otherwise registers and returns the receiver.
    fn register(&mut self) -> Result<V, oneshot::Receiver<V>> {
        let mut state = lock(&self.shared);
        if let Some(value) = state.values.get(&self.key) {
            return Ok(value.clone());
        }
        let id = state.next_waiter;
        state.next_waiter += 1;
        let (tx, rx) = oneshot::channel();
        state
            .waiters
            .entry(self.key.clone())
            .or_default()
            .insert(id, tx);
        self.id = Some(id);
        Err(rx)
    }
}

impl<K: Eq + Hash, V> Drop for Waiter<K, V> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut state = lock(&self.shared);
        if let Some(waiters) = state.waiters.get_mut(&self.key) {
            waiters.remove(&id);
            if waiters.is_empty() {
                state.waiters.remove(&self.key);
            }
        }
    }
}

/// Locks, ignoring poison: every critical section leaves the state valid, and
/// a panic there comes from user code (`Hash`, `Eq`, `Clone`).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, V> Clone for AsyncMap<K, V> {
    fn clone(&self) -> Self {
        AsyncMap {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K, V> Default for AsyncMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for AsyncMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.shared);
        f.debug_struct("AsyncMap")
            .field("len", &state.values.len())
            .field("keys_waited_for", &state.waiters.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::{pin, Pin};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    /// Counts its wake-ups.
    #[derive(Default)]
    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waiting<K: Eq + Hash, V>(map: &AsyncMap<K, V>) -> usize {
        lock(&map.shared).waiters.values().map(|w| w.len()).sum()
    }

    #[test]
    fn present_key_resolves_at_first_poll() {
        let map = AsyncMap::new();
        map.insert(1, "one");
        let waker = Waker::noop();
        let mut get = pin!(map.get(&1));
        let poll = get.as_mut().poll(&mut Context::from_waker(waker));
        assert_eq!(poll, Poll::Ready("one"));
        assert_eq!(waiting(&map), 0);
    }

    fn poll_with<F: Future>(f: Pin<&mut F>, waker: &Arc<CountingWaker>) -> Poll<F::Output> {
        f.poll(&mut Context::from_waker(&Waker::from(waker.clone())))
    }

    #[test]
    fn insert_wakes_only_waiters_of_its_key() {
        let map = AsyncMap::new();
        let wa = Arc::new(CountingWaker::default());
        let wb = Arc::new(CountingWaker::default());
        let mut a = pin!(map.get(&"a"));
        let mut b = pin!(map.get(&"b"));
        assert!(poll_with(a.as_mut(), &wa).is_pending());
        assert!(poll_with(b.as_mut(), &wb).is_pending());

        map.insert("b", 2);
        assert_eq!(wa.0.load(Ordering::SeqCst), 0);
        assert_eq!(wb.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll_with(b.as_mut(), &wb), Poll::Ready(2));
        assert!(poll_with(a.as_mut(), &wa).is_pending());
        assert_eq!(waiting(&map), 1);
    }

    #[test]
    fn dropped_get_leaves_no_waiter() {
        let map: AsyncMap<u32, u32> = AsyncMap::new();
        let gets: Vec<_> = (0..100).map(|i| map.get(&(i % 7))).collect();
        assert_eq!(waiting(&map), 100);
        drop(gets);
        assert_eq!(waiting(&map), 0);
        assert!(lock(&map.shared).waiters.is_empty());
    }

    #[test]
    fn dropped_after_delivery_is_harmless() {
        let map = AsyncMap::new();
        let get = map.get(&1);
        map.insert(1, 10);
        drop(get);
        assert_eq!(waiting(&map), 0);
        assert_eq!(map.try_get(&1), Some(10));
    }

    #[test]
    fn registered_at_call_sees_insert_then_remove() {
        let map = AsyncMap::new();
        let mut get = pin!(map.get(&"k"));
        map.insert("k", 5);
        assert_eq!(map.remove(&"k"), Some(5));
        let poll = get.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert_eq!(poll, Poll::Ready(5));
    }

    #[test]
    fn every_waiter_of_a_key_gets_a_clone() {
        let map = AsyncMap::new();
        let mut gets: Vec<_> = (0..5).map(|_| Box::pin(map.get(&0))).collect();
        map.insert(0, Arc::new("shared"));
        for get in &mut gets {
            let poll = get.as_mut().poll(&mut Context::from_waker(Waker::noop()));
            assert!(matches!(poll, Poll::Ready(v) if *v == "shared"));
        }
        assert_eq!(waiting(&map), 0);
    }
}
