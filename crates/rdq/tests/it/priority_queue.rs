//! `AsyncPriorityQueue`: order, hand-off to waiting pops, cancel safety.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::AsyncPriorityQueue;
use tokio::sync::Barrier;
use tokio::time::{self, Instant};

/// Guards against hangs only; every wait below is on an event.
const GUARD: Duration = Duration::from_secs(60);

/// A small deterministic generator, so failures replay.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn pops_in_priority_then_push_order() {
    let q = AsyncPriorityQueue::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15;
    let mut expected = Vec::new();
    for seq in 0..1_000 {
        let priority = (xorshift(&mut rng) % 7) as i32 - 3;
        q.push((priority, seq), priority);
        expected.push((priority, seq));
    }
    expected.sort();
    assert_eq!(q.len(), 1_000);
    let mut got = Vec::new();
    while let Some(item) = q.try_pop() {
        got.push(item);
    }
    assert_eq!(got, expected);
    assert!(q.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_pop_is_woken_by_a_push() {
    let q = AsyncPriorityQueue::new();
    let start = Instant::now();
    let consumer = tokio::spawn({
        let q = q.clone();
        async move { (q.pop().await, start.elapsed()) }
    });
    tokio::task::yield_now().await;
    time::advance(Duration::from_secs(3)).await;
    assert!(!consumer.is_finished());
    q.push("late", 0);
    let (item, waited) = time::timeout(GUARD, consumer).await.unwrap().unwrap();
    assert_eq!((item, waited), ("late", Duration::from_secs(3)));
    assert!(q.is_empty());
}

/// `# Cancel safety`: a pop that gave up never costs an item.
#[tokio::test(start_paused = true)]
async fn a_timed_out_pop_loses_nothing() {
    let q = AsyncPriorityQueue::new();
    let gave_up = time::timeout(Duration::from_secs(1), q.pop()).await;
    assert!(gave_up.is_err());
    q.push(1, 0);
    assert_eq!(q.len(), 1);
    assert_eq!(
        format!("{q:?}"),
        "AsyncPriorityQueue { len: 1, waiting_pops: 0 }"
    );
    assert_eq!(q.pop().await, 1);
}

/// `# Cancel safety`: a pop that was handed an item and then dropped before
/// it ran gives the item back, in its place.
#[tokio::test]
async fn an_aborted_consumer_gives_its_item_back() {
    let q = AsyncPriorityQueue::new();
    let consumer = tokio::spawn({
        let q = q.clone();
        async move { q.pop().await }
    });
    tokio::task::yield_now().await; // the consumer now waits
    q.push("first", 5); // handed to the consumer, which has not run yet
    q.push("second", 5);
    consumer.abort();
    assert!(consumer.await.unwrap_err().is_cancelled());
    assert_eq!(q.try_pop(), Some("first"));
    assert_eq!(q.try_pop(), Some("second"));
}

/// 4 producers × 2,500 pushes, 4 consumers on 2 threads: every item is popped
/// exactly once, and a consumer never sees one producer's items out of order
/// (all share one priority).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_items_each_popped_once() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 2_500;
    const CONSUMERS: usize = 4;
    let q: AsyncPriorityQueue<Option<(u64, u64)>> = AsyncPriorityQueue::new();
    let start = Arc::new(Barrier::new(PRODUCERS as usize + 1));

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(item) = q.pop().await {
                    got.push(item);
                }
                got
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (q, start) = (q.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                for n in 0..PER_PRODUCER {
                    q.push(Some((p, n)), 0);
                    if n % 64 == 0 {
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
    // One end marker per consumer, after every item in priority order.
    for _ in 0..CONSUMERS {
        q.push(None, i32::MAX);
    }

    let mut all = Vec::new();
    for consumer in consumers {
        let got = time::timeout(GUARD, consumer).await.unwrap().unwrap();
        for p in 0..PRODUCERS {
            let mine: Vec<u64> = got.iter().filter(|i| i.0 == p).map(|i| i.1).collect();
            assert!(
                mine.windows(2).all(|w| w[0] < w[1]),
                "producer {p} out of order"
            );
        }
        all.extend(got);
    }
    all.sort_unstable();
    let expected: Vec<_> = (0..PRODUCERS)
        .flat_map(|p| (0..PER_PRODUCER).map(move |n| (p, n)))
        .collect();
    assert_eq!(all, expected);
    assert!(q.is_empty());
}

/// Consumers keep abandoning their pops (a `select!` against `yield_now`)
/// while producers push: items handed to an abandoned pop must reach someone
/// else, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_pops_under_contention_lose_nothing() {
    const ITEMS: usize = 10_000;
    let q: AsyncPriorityQueue<usize> = AsyncPriorityQueue::new();
    let taken = Arc::new(AtomicUsize::new(0));
    let abandoned = Arc::new(AtomicUsize::new(0));

    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let (q, taken, abandoned) = (q.clone(), taken.clone(), abandoned.clone());
            tokio::spawn(async move {
                let mut got = Vec::new();
                while taken.load(Ordering::SeqCst) < ITEMS {
                    tokio::select! {
                        item = q.pop() => {
                            got.push(item);
                            taken.fetch_add(1, Ordering::SeqCst);
                        }
                        () = tokio::task::yield_now() => {
                            abandoned.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                got
            })
        })
        .collect();
    let producers: Vec<_> = (0..2)
        .map(|half| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut rng = 0x2545_F491_4F6C_DD1D + half as u64;
                for item in (half..ITEMS).step_by(2) {
                    q.push(item, (xorshift(&mut rng) % 4) as i32);
                    if item % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.unwrap();
    }
    let mut all = Vec::new();
    for consumer in consumers {
        all.extend(time::timeout(GUARD, consumer).await.unwrap().unwrap());
    }
    all.sort_unstable();
    assert_eq!(all, (0..ITEMS).collect::<Vec<_>>());
    assert!(
        abandoned.load(Ordering::Relaxed) > 0,
        "no pop was abandoned"
    );
    assert_eq!(
        format!("{q:?}"),
        "AsyncPriorityQueue { len: 0, waiting_pops: 0 }"
    );
}
