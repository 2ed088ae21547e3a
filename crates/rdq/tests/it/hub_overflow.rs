//! The hub's overflow policies, subscriptions, failures and declaration
//! errors (paused clock, one thread: deterministic).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdq::hub::{HubError, Reason, Rejection};
use rdq::{Hub, Overflow, PublishError};
use tokio::sync::Semaphore;

type Job = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A consumer job that records its message, then waits for a permit.
fn gated(
    seen: Arc<Mutex<Vec<u64>>>,
    gate: Arc<Semaphore>,
) -> impl Fn(rdq::Delivery<u64>) -> Job + Send + Sync + 'static {
    move |d| {
        let (seen, gate) = (seen.clone(), gate.clone());
        Box::pin(async move {
            seen.lock().unwrap().push(d.message);
            gate.acquire().await.unwrap().forget();
            Ok(())
        })
    }
}

fn quick(_: rdq::Delivery<u64>) -> std::future::Ready<Result<(), String>> {
    std::future::ready(Ok(()))
}

/// Lets every task that can run, run.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn reject_newest_names_the_full_consumer_and_still_delivers_to_the_others() {
    let hub: Hub<u64> = Hub::new();
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    hub.consumer("slow")
        .subscribe("t")
        .bound(2)
        .start(gated(seen.clone(), gate.clone()))
        .unwrap();
    hub.consumer("fast").subscribe("t").start(quick).unwrap();

    for m in 1..=3 {
        hub.publish("t", m).await.unwrap(); // 1 runs, 2 and 3 wait
    }
    settle().await;
    let err = hub.publish("t", 4).await.unwrap_err();
    assert_eq!(
        err,
        PublishError::Rejected {
            delivered: vec!["fast".into()],
            rejected: vec![Rejection {
                consumer: "slow".into(),
                reason: Reason::Full { bound: 2 },
            }],
        }
    );
    assert!(err.to_string().contains("\"slow\" is full"), "{err}");
    let slow = &hub.snapshot()[0].backlog;
    assert_eq!((slow.enqueued, slow.rejected, slow.depth), (3, 1, 2));

    gate.add_permits(3);
    settle().await;
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_makes_room_and_counts_the_dropped() {
    let hub: Hub<u64> = Hub::new();
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    hub.consumer("c")
        .subscribe("t")
        .bound(2)
        .overflow(Overflow::DropOldest)
        .start(gated(seen.clone(), gate.clone()))
        .unwrap();
    for m in 1..=5 {
        hub.publish("t", m).await.unwrap();
        settle().await;
    }
    // 1 runs; 2 and 3 were dropped for 4 and 5.
    let s = &hub.snapshot()[0].backlog;
    assert_eq!((s.enqueued, s.dropped, s.rejected, s.depth), (5, 2, 0, 2));
    gate.add_permits(3);
    settle().await;
    assert_eq!(*seen.lock().unwrap(), [1, 4, 5]);
    let s = &hub.snapshot()[0].backlog;
    assert_eq!((s.processed.ok, s.processed.total(), s.dropped), (3, 3, 2));
}

#[tokio::test(start_paused = true)]
async fn block_waits_for_room_then_delivers() {
    let hub: Hub<u64> = Hub::new();
    let gate = Arc::new(Semaphore::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    hub.consumer("c")
        .subscribe("t")
        .bound(1)
        .overflow(Overflow::Block(Duration::from_secs(1)))
        .start(gated(seen.clone(), gate.clone()))
        .unwrap();
    hub.publish("t", 1).await.unwrap();
    settle().await;
    hub.publish("t", 2).await.unwrap(); // waits
    let mut third = Box::pin(hub.publish("t", 3));
    // Half the timeout passes on the paused clock: still blocked.
    assert!(tokio::time::timeout(Duration::from_millis(500), &mut third)
        .await
        .is_err());
    gate.add_permits(1); // 1 finishes, 2 starts, there is room for 3
    let sent = third.await.unwrap();
    assert_eq!(sent.delivered, vec![Arc::<str>::from("c")]);
    gate.add_permits(2);
    settle().await;
    assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn block_gives_up_after_its_timeout() {
    let hub: Hub<u64> = Hub::new();
    let gate = Arc::new(Semaphore::new(0));
    hub.consumer("c")
        .subscribe("t")
        .bound(1)
        .overflow(Overflow::Block(Duration::from_secs(2)))
        .start(gated(Arc::default(), gate.clone()))
        .unwrap();
    hub.publish("t", 1).await.unwrap();
    settle().await;
    hub.publish("t", 2).await.unwrap();
    let before = tokio::time::Instant::now();
    let err = hub.publish("t", 3).await.unwrap_err();
    assert_eq!(before.elapsed(), Duration::from_secs(2));
    let PublishError::Rejected {
        delivered,
        rejected,
    } = err
    else {
        panic!("expected a rejection");
    };
    assert!(delivered.is_empty());
    assert_eq!(
        rejected[0].reason,
        Reason::TimedOut {
            waited: Duration::from_secs(2)
        }
    );
    assert_eq!(hub.snapshot()[0].backlog.rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn prefixes_match_below_the_dot_and_each_consumer_gets_a_message_once() {
    let hub: Hub<u64> = Hub::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    hub.consumer("a")
        .subscribe("a.*")
        .subscribe("a.b") // overlaps a.*: still one delivery
        .start(move |d| {
            log.lock().unwrap().push(d.topic.to_string());
            std::future::ready(Ok::<_, String>(()))
        })
        .unwrap();
    for topic in ["a.b", "ab", "a", "a.b.c", "b.a"] {
        hub.publish(topic, 0).await.unwrap();
    }
    settle().await;
    assert_eq!(*seen.lock().unwrap(), ["a.b", "a.b.c"]);
    assert_eq!(hub.subscribers("a.x"), vec![Arc::<str>::from("a")]);
    assert!(hub.subscribers("ab").is_empty());
    assert!(matches!(
        hub.publish("a.*", 0).await,
        Err(PublishError::Topic(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_jobs_are_counted_and_the_consumer_goes_on() {
    let hub: Hub<u64> = Hub::new();
    hub.consumer("c")
        .subscribe("t")
        .start(|d: rdq::Delivery<u64>| async move {
            match d.message % 3 {
                0 => Ok(()),
                1 => Err("no".to_owned()),
                _ => panic!("boom {}", d.message),
            }
        })
        .unwrap();
    for m in 0..9 {
        hub.publish("t", m).await.unwrap();
    }
    settle().await;
    let s = &hub.snapshot()[0].backlog;
    assert_eq!(
        (s.processed.ok, s.processed.failed, s.processed.panicked),
        (3, 3, 3)
    );
    assert_eq!((s.enqueued, s.started), (9, 9));
}

#[tokio::test(start_paused = true)]
async fn bad_declarations_are_refused_with_what_to_fix() {
    let hub: Hub<u64> = Hub::new();
    hub.consumer("c").subscribe("t").start(quick).unwrap();
    let dup = hub.consumer("c").subscribe("u").start(quick).unwrap_err();
    assert_eq!(dup, HubError::Duplicate("c".into()));
    assert!(matches!(
        hub.consumer("d").start(quick),
        Err(HubError::NoSubscription(_))
    ));
    assert!(matches!(
        hub.consumer("d").subscribe("t").bound(0).start(quick),
        Err(HubError::ZeroBound(_))
    ));
    let bad = hub
        .consumer("d")
        .subscribe("a.*.b")
        .start(quick)
        .unwrap_err();
    assert!(bad.to_string().contains("trailing"), "{bad}");
    assert!(matches!(
        hub.consumer(" ").subscribe("t").start(quick),
        Err(HubError::EmptyName)
    ));
    assert_eq!(hub.snapshot().len(), 1, "nothing refused was added");
}

#[tokio::test(start_paused = true)]
async fn stop_returns_what_never_ran_and_refuses_later_publishes() {
    let hub: Hub<u64> = Hub::new();
    let gate = Arc::new(Semaphore::new(0));
    hub.consumer("c")
        .subscribe("t")
        .start(gated(Arc::default(), gate.clone()))
        .unwrap();
    for m in 1..=3 {
        hub.publish("t", m).await.unwrap();
    }
    settle().await;
    let stopping = tokio::spawn({
        let hub = hub.clone();
        async move { hub.stop(rdq::StopMode::CancelUnderway).await }
    });
    let unrun = stopping.await.unwrap();
    let messages: Vec<u64> = unrun[0].1.iter().map(|d| d.message).collect();
    assert_eq!(messages, [2, 3]);
    let err = hub.publish("t", 4).await.unwrap_err();
    let PublishError::Rejected { rejected, .. } = err else {
        panic!("expected a rejection");
    };
    assert_eq!(rejected[0].reason, Reason::Stopped);
}
