//! `AsyncMap`: waiting for keys, across tasks and threads.

use std::sync::Arc;
use std::time::Duration;

use rdq::AsyncMap;
use tokio::sync::Barrier;
use tokio::time;

/// Guards against hangs only; every wait below is on an event.
const GUARD: Duration = Duration::from_secs(30);

#[tokio::test]
async fn get_waits_for_the_insert() {
    let map: AsyncMap<u64, String> = AsyncMap::new();
    let waiter = tokio::spawn({
        let map = map.clone();
        async move { map.get(&7).await }
    });
    tokio::task::yield_now().await; // let the waiter start waiting
    assert!(!waiter.is_finished());
    assert_eq!(map.insert(7, "seven".to_owned()), None);
    assert_eq!(
        time::timeout(GUARD, waiter).await.unwrap().unwrap(),
        "seven"
    );
}

#[tokio::test]
async fn present_key_needs_no_wait() {
    let map = AsyncMap::new();
    map.insert("k", 1);
    assert_eq!(map.get(&"k").await, 1);
    assert_eq!(map.get(&"k").await, 1); // get never removes
    assert!(map.contains_key("k"));
    assert_eq!(map.len(), 1);
}

#[tokio::test]
async fn remove_and_reinsert() {
    let map = AsyncMap::new();
    map.insert(1, 'a');
    assert_eq!(map.remove(&1), Some('a'));
    assert_eq!(map.remove(&1), None);
    assert!(map.is_empty());
    assert_eq!(map.try_get(&1), None);
    let again = map.get(&1);
    map.insert(1, 'b');
    assert_eq!(again.await, 'b');
}

#[tokio::test]
async fn borrowed_lookups() {
    let map: AsyncMap<String, u8> = AsyncMap::new();
    map.insert("x".to_owned(), 1);
    assert!(map.contains_key("x"));
    assert_eq!(map.try_get("x"), Some(1));
    assert_eq!(map.remove("x"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn timeout_gives_up_and_leaves_nothing_behind() {
    let map: AsyncMap<&str, u32> = AsyncMap::new();
    let slow = tokio::spawn({
        let map = map.clone();
        async move { time::timeout(Duration::from_secs(5), map.get(&"late")).await }
    });
    tokio::task::yield_now().await;
    time::advance(Duration::from_secs(4)).await;
    assert!(!slow.is_finished());
    time::advance(Duration::from_secs(1)).await;
    assert!(slow.await.unwrap().is_err());
    assert_eq!(
        format!("{map:?}"),
        "AsyncMap { len: 0, keys_waited_for: 0 }"
    );

    // A later insert is not affected by the abandoned wait.
    map.insert("late", 1);
    assert_eq!(map.get(&"late").await, 1);
}

#[tokio::test]
async fn a_wait_outlives_the_map_handle_it_came_from() {
    let map = AsyncMap::new();
    let other = map.clone();
    let get = map.get(&1);
    drop(map);
    other.insert(1, "still delivered");
    assert_eq!(time::timeout(GUARD, get).await.unwrap(), "still delivered");
}

/// 500 keys, 4 waiters each, inserted by 2 tasks on 2 threads: every waiter
/// gets its own key's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_many_keys() {
    const KEYS: u64 = 500;
    const PER_KEY: u64 = 4;
    let map: AsyncMap<u64, u64> = AsyncMap::new();
    let start = Arc::new(Barrier::new(3));

    let mut waiters = Vec::new();
    for key in 0..KEYS {
        for _ in 0..PER_KEY {
            let map = map.clone();
            waiters.push((key, tokio::spawn(async move { map.get(&key).await })));
        }
    }
    let producers: Vec<_> = (0..2)
        .map(|half| {
            let (map, start) = (map.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for key in (half..KEYS).step_by(2) {
                    map.insert(key, key * 10);
                    if key % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    start.wait().await;
    for producer in producers {
        producer.await.unwrap();
    }
    for (key, waiter) in waiters {
        let value = time::timeout(GUARD, waiter).await.unwrap().unwrap();
        assert_eq!(value, key * 10);
    }
    assert_eq!(map.len(), KEYS as usize);
    assert_eq!(
        format!("{map:?}"),
        "AsyncMap { len: 500, keys_waited_for: 0 }"
    );
}

/// Gets that are cancelled while inserts race with them: the survivors are
/// all served, and no waiter entry is left over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_gets_race_with_inserts() {
    const KEYS: u64 = 300;
    let map: AsyncMap<u64, u64> = AsyncMap::new();
    let mut kept = Vec::new();
    let mut cancelled = Vec::new();
    for key in 0..KEYS {
        for n in 0..4 {
            let map = map.clone();
            let task = tokio::spawn(async move { map.get(&key).await });
            if n % 2 == 0 {
                kept.push((key, task));
            } else {
                cancelled.push(task);
            }
        }
    }
    let producer = tokio::spawn({
        let map = map.clone();
        async move {
            for key in 0..KEYS {
                map.insert(key, key + 1);
                tokio::task::yield_now().await;
            }
        }
    });
    for task in &cancelled {
        task.abort();
    }
    producer.await.unwrap();
    for (key, task) in kept {
        assert_eq!(time::timeout(GUARD, task).await.unwrap().unwrap(), key + 1);
    }
    for task in cancelled {
        // Either outcome is fine; what matters is what is left behind.
        let _ = task.await;
    }
    assert_eq!(
        format!("{map:?}"),
        "AsyncMap { len: 300, keys_waited_for: 0 }"
    );
}
