//! `TaskPool`: what counts, and when `notify_when_empty` resolves.

use std::future::pending;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::TaskPool;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::{self, Instant};

/// Guards against hangs only; every wait below is on an event.
const GUARD: Duration = Duration::from_secs(30);

#[tokio::test(start_paused = true)]
async fn drains_after_the_slowest_task() {
    let pool = TaskPool::new();
    let start = Instant::now();
    for secs in 1..=3 {
        pool.spawn(time::sleep(Duration::from_secs(secs)));
    }
    assert_eq!(pool.len(), 3);
    let drained = pool.notify_when_empty();

    // The clock is paused: this sleep advances it without waiting.
    time::sleep_until(start + Duration::from_millis(1500)).await;
    assert_eq!(pool.len(), 2);

    drained.await;
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(pool.is_empty());
}

#[tokio::test]
async fn a_panicking_task_stops_counting() {
    let pool = TaskPool::new();
    let handle = pool.spawn(async { panic!("job exploded") });
    assert!(handle.await.unwrap_err().is_panic());
    assert!(pool.is_empty());
    pool.notify_when_empty().await;
}

#[tokio::test]
async fn an_aborted_task_stops_counting() {
    let pool = TaskPool::new();
    let handle = pool.spawn(pending::<()>());
    let drained = pool.notify_when_empty();
    assert_eq!(pool.len(), 1);
    handle.abort();
    assert!(handle.await.unwrap_err().is_cancelled());
    time::timeout(GUARD, drained).await.unwrap();
    assert!(pool.is_empty());
}

#[test]
fn runtime_shutdown_stops_counting() {
    let pool = TaskPool::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        for _ in 0..10 {
            pool.spawn(pending::<()>());
        }
    });
    assert_eq!(pool.len(), 10);
    drop(rt);
    assert!(pool.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_tracked_future_counts_until_dropped_by_select() {
    let pool = TaskPool::new();
    let work = pool.track(pending::<()>());
    assert_eq!(pool.len(), 1);
    let drained = pool.notify_when_empty();
    tokio::select! {
        () = work => unreachable!(),
        () = time::sleep(Duration::from_secs(1)) => {}
    }
    assert!(pool.is_empty());
    time::timeout(GUARD, drained).await.unwrap();
}

#[tokio::test]
async fn clones_share_one_count() {
    let pool = TaskPool::new();
    let other = pool.clone();
    let (tx, rx) = oneshot::channel::<()>();
    other.spawn(async move {
        let _ = rx.await;
    });
    assert_eq!(pool.len(), 1);
    let drained = pool.notify_when_empty();
    tx.send(()).unwrap();
    time::timeout(GUARD, drained).await.unwrap();
    assert!(other.is_empty());
}

#[tokio::test]
async fn a_waiter_made_when_empty_ignores_later_work() {
    let pool = TaskPool::new();
    let drained = pool.notify_when_empty();
    let _busy = pool.spawn(pending::<()>());
    time::timeout(GUARD, drained).await.unwrap();
    assert_eq!(pool.len(), 1);
}

/// Tasks held at a gate, released together; the wait must not resolve before
/// the last one has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_drain_only_when_all_finished() {
    const TASKS: usize = 2_000;
    let pool = TaskPool::new();
    let gate = Arc::new(Semaphore::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    for i in 0..TASKS {
        let gate = gate.clone();
        let finished = finished.clone();
        pool.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            for _ in 0..i % 5 {
                tokio::task::yield_now().await;
            }
            finished.fetch_add(1, Ordering::Relaxed);
        });
    }
    let drained = pool.notify_when_empty();
    assert_eq!(pool.len(), TASKS);
    gate.add_permits(TASKS);
    time::timeout(GUARD, drained).await.unwrap();
    assert_eq!(finished.load(Ordering::Relaxed), TASKS);
    assert!(pool.is_empty());
}

/// Parents spawn children into the pool before they finish, so the count
/// never touches zero until the whole tree is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_spawned_by_work_keeps_the_pool_busy() {
    const PARENTS: usize = 200;
    const CHILDREN: usize = 10;
    let pool = TaskPool::new();
    let finished = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    for _ in 0..PARENTS {
        let (pool2, finished, gate) = (pool.clone(), finished.clone(), gate.clone());
        pool.spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            for _ in 0..CHILDREN {
                let finished = finished.clone();
                pool2.spawn(async move {
                    tokio::task::yield_now().await;
                    finished.fetch_add(1, Ordering::Relaxed);
                });
            }
            finished.fetch_add(1, Ordering::Relaxed);
        });
    }
    let drained = pool.notify_when_empty();
    gate.add_permits(PARENTS);
    time::timeout(GUARD, drained).await.unwrap();
    assert_eq!(finished.load(Ordering::Relaxed), PARENTS * (CHILDREN + 1));
}

/// Many rounds of fill-and-drain with waiters on other tasks: no wake-up is
/// lost between a waiter's check and its sleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_drains_wake_every_waiter() {
    let pool = TaskPool::new();
    for round in 0..300 {
        let finished = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let tasks = 1 + round % 17;
        for _ in 0..tasks {
            let (finished, gate) = (finished.clone(), gate.clone());
            pool.spawn(async move {
                let _permit = gate.acquire().await.unwrap();
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let drained = pool.notify_when_empty();
                let finished = finished.clone();
                tokio::spawn(async move {
                    drained.await;
                    finished.load(Ordering::Relaxed)
                })
            })
            .collect();
        gate.add_permits(tasks);
        for waiter in waiters {
            let seen = time::timeout(GUARD, waiter).await.unwrap().unwrap();
            assert_eq!(seen, tasks, "round {round}");
        }
    }
}
