//! The hub's counters under concurrent publishers and readers, on a
//! multi-thread runtime: no count is lost, none goes backwards.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::{Hub, Overflow, PublishError};

const PUBLISHERS: u64 = 4;
const EACH: u64 = 2_500;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counters_are_exact_under_concurrent_publishers_and_readers() {
    let hub: Hub<u64> = Hub::new();
    let calls: Arc<HashMap<&str, AtomicU64>> = Arc::new(
        ["reject", "drop", "roomy"]
            .into_iter()
            .map(|n| (n, AtomicU64::new(0)))
            .collect(),
    );
    for (name, bound, overflow) in [
        ("reject", 20, Overflow::RejectNewest),
        ("drop", 20, Overflow::DropOldest),
        ("roomy", 100_000, Overflow::RejectNewest),
    ] {
        let calls = calls.clone();
        hub.consumer(name)
            .subscribe("s.*")
            .width(2)
            .bound(bound)
            .overflow(overflow)
            .start(move |d: rdq::Delivery<u64>| {
                calls[name].fetch_add(1, Ordering::Relaxed);
                async move {
                    if d.message.is_multiple_of(7) {
                        tokio::task::yield_now().await;
                    }
                    if d.message.is_multiple_of(11) {
                        return Err("eleven");
                    }
                    Ok(())
                }
            })
            .unwrap();
    }

    // Readers: every counter only grows.
    let done = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (hub, done) = (hub.clone(), done.clone());
        async move {
            let mut last: HashMap<Arc<str>, [u64; 5]> = HashMap::new();
            let mut reads = 0u64;
            while !done.load(Ordering::Acquire) {
                for c in hub.snapshot() {
                    let b = &c.backlog;
                    let now = [
                        b.enqueued,
                        b.rejected,
                        b.dropped,
                        b.started,
                        b.processed.total(),
                    ];
                    if let Some(before) = last.get(&c.name) {
                        for (a, z) in before.iter().zip(now) {
                            assert!(
                                z >= *a,
                                "{}: a counter went back: {before:?} → {now:?}",
                                c.name
                            );
                        }
                    }
                    last.insert(c.name.clone(), now);
                }
                reads += 1;
                tokio::task::yield_now().await;
            }
            reads
        }
    });

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let hub = hub.clone();
        publishers.push(tokio::spawn(async move {
            let mut delivered: HashMap<Arc<str>, u64> = HashMap::new();
            let mut rejected: HashMap<Arc<str>, u64> = HashMap::new();
            for i in 0..EACH {
                let topic = if i.is_multiple_of(2) { "s.a" } else { "s.b.c" };
                match hub.publish(topic, p * EACH + i).await {
                    Ok(sent) => {
                        for c in sent.delivered {
                            *delivered.entry(c).or_default() += 1;
                        }
                    }
                    Err(PublishError::Rejected {
                        delivered: d,
                        rejected: r,
                    }) => {
                        for c in d {
                            *delivered.entry(c).or_default() += 1;
                        }
                        for c in r {
                            *rejected.entry(c.consumer).or_default() += 1;
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            (delivered, rejected)
        }));
    }
    let mut delivered: HashMap<Arc<str>, u64> = HashMap::new();
    let mut rejected: HashMap<Arc<str>, u64> = HashMap::new();
    for p in publishers {
        let (d, r) = p.await.unwrap();
        for (k, v) in d {
            *delivered.entry(k).or_default() += v;
        }
        for (k, v) in r {
            *rejected.entry(k).or_default() += v;
        }
    }

    // Drain, then compare every count with what the publishers saw.
    tokio::time::timeout(Duration::from_secs(30), async {
        while hub
            .snapshot()
            .iter()
            .any(|c| c.backlog.processed.total() + c.backlog.dropped < c.backlog.enqueued)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the consumers drain");
    done.store(true, Ordering::Release);
    assert!(reader.await.unwrap() > 0);

    for c in hub.snapshot() {
        let b = &c.backlog;
        let name = &*c.name;
        let total = PUBLISHERS * EACH;
        assert_eq!(
            b.enqueued,
            delivered.get(name).copied().unwrap_or(0),
            "{name}"
        );
        assert_eq!(
            b.rejected,
            rejected.get(name).copied().unwrap_or(0),
            "{name}"
        );
        assert_eq!(
            b.enqueued + b.rejected,
            total,
            "{name}: every publish counted once"
        );
        assert_eq!(b.processed.total() + b.dropped, b.enqueued, "{name}");
        assert_eq!(b.started, calls[name].load(Ordering::Relaxed), "{name}");
        assert_eq!(b.processed.ok + b.processed.failed, b.started, "{name}");
        assert_eq!((b.depth, b.in_flight), (0, 0), "{name}");
        assert_eq!(b.wait.count, b.started, "{name}");
        match name {
            "roomy" => assert_eq!((b.enqueued, b.dropped), (total, 0)),
            "drop" => assert_eq!(b.rejected, 0),
            _ => assert_eq!(b.dropped, 0),
        }
    }
}
