//! Real threads: the guarantees hold while producers, cancels and width
//! changes race each other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::{DispatchQueue, Outcome, StopMode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn width_holds_and_every_handle_resolves_under_contention() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 5_000;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let q = DispatchQueue::builder(move |n: u64| {
        let (r, p) = (r.clone(), p.clone());
        async move {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            if n.is_multiple_of(7) {
                tokio::task::yield_now().await;
            }
            r.fetch_sub(1, Ordering::SeqCst);
            if n.is_multiple_of(11) {
                Err(n)
            } else {
                Ok(n)
            }
        }
    })
    .width(8)
    .build();

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            tokio::spawn(async move {
                let mut handles = Vec::new();
                for i in 0..PER_PRODUCER {
                    let n = p * PER_PRODUCER + i;
                    let h = q.put(n, (n % 5) as i32).unwrap();
                    if n.is_multiple_of(13) {
                        // Pending or underway or done: any answer is fine,
                        // but the handle must still resolve.
                        let _ = q.cancel(h.id());
                    }
                    if i % 500 == 0 {
                        tokio::task::yield_now().await;
                    }
                    handles.push(h);
                }
                handles
            })
        })
        .collect();
    // Narrow and widen while the producers run; the peak may never pass 8.
    let q2 = q.clone();
    let resizer = tokio::spawn(async move {
        for w in [2, 8, 1, 5, 8].into_iter().cycle().take(50) {
            q2.set_width(w).unwrap();
            tokio::task::yield_now().await;
        }
        q2.set_width(8).unwrap();
    });

    let mut counts = [0usize; 3];
    for p in producers {
        for h in p.await.unwrap() {
            let job = tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .expect("every handle resolves");
            match job.outcome {
                Outcome::Ok(n) => assert_eq!(n, job.arg),
                Outcome::Failed(n) => assert!(n.is_multiple_of(11)),
                Outcome::Cancelled => counts[2] += 1,
                other => panic!("unexpected {other:?}"),
            }
            counts[0] += 1;
        }
    }
    resizer.await.unwrap();
    assert_eq!(counts[0] as u64, PRODUCERS * PER_PRODUCER);
    assert!(
        peak.load(Ordering::SeqCst) <= 8,
        "peak {}",
        peak.load(Ordering::SeqCst)
    );
    assert_eq!(q.size(), (0, 0));
    assert!(q.stop(StopMode::Wait).await.is_empty());
}
