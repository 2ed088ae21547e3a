//! Rate and timeout, on a paused clock.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdq::{DispatchQueue, JobOptions, Outcome, Rate};
use tokio::time::Instant;

use crate::support::{settle, Gates};

type Log = Arc<Mutex<Vec<Instant>>>;

/// A queue whose jobs finish at once and record their launch time.
fn timed(width: usize, rate: Rate) -> (DispatchQueue<u64, u64, Infallible>, Log) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let q = DispatchQueue::builder(move |n: u64| {
        l.lock().unwrap().push(Instant::now());
        async move { Ok::<_, Infallible>(n) }
    })
    .width(width)
    .rate(rate)
    .build();
    (q, log)
}

fn gaps(log: &[Instant]) -> Vec<Duration> {
    log.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn rate_spaces_launches_evenly() {
    let (q, log) = timed(10, Rate::per_second(10));
    let hs: Vec<_> = (0..5).map(|k| q.put(k, 0).unwrap()).collect();
    for h in hs {
        assert!(h.await.outcome.is_ok());
    }
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 5);
    assert!(
        gaps(&log).iter().all(|g| *g == Duration::from_millis(100)),
        "{:?}",
        gaps(&log)
    );
}

#[tokio::test(start_paused = true)]
async fn burst_launches_back_to_back_then_paces() {
    let (q, log) = timed(10, Rate::per_second(10).with_burst(3).unwrap());
    let hs: Vec<_> = (0..5).map(|k| q.put(k, 0).unwrap()).collect();
    for h in hs {
        h.await;
    }
    let g = gaps(&log.lock().unwrap());
    assert_eq!(g[..2], [Duration::ZERO, Duration::ZERO]);
    assert_eq!(
        g[2..],
        [Duration::from_millis(100), Duration::from_millis(100)]
    );
}

#[tokio::test(start_paused = true)]
async fn rate_changes_at_runtime() {
    let (q, log) = timed(10, Rate::per_minute(1));
    let hs: Vec<_> = (0..3).map(|k| q.put(k, 0).unwrap()).collect();
    settle().await;
    assert_eq!(log.lock().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "still limited to one a minute"
    );
    q.set_rate(Some(Rate::per_second(100))).unwrap();
    assert_eq!(q.rate(), Some(Rate::per_second(100)));
    for h in hs {
        h.await;
    }
    let g = gaps(&log.lock().unwrap());
    assert_eq!(g[1], Duration::from_millis(10));
    q.set_rate(None).unwrap();
    assert_eq!(q.rate(), None);
}

#[tokio::test(start_paused = true)]
async fn rate_and_width_both_apply() {
    let g = Gates::new();
    let q = DispatchQueue::builder(g.job())
        .width(1)
        .rate(Rate::per_second(1000))
        .build();
    for k in 1..=3 {
        q.put(k, 0).unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        g.started(),
        [1],
        "tokens alone do not launch past the width"
    );
    g.finish(1, Ok(1));
    settle().await;
    assert_eq!(g.started(), [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_drops_the_future() {
    let g = Gates::new();
    let q = DispatchQueue::builder(g.job())
        .width(2)
        .timeout(Duration::from_secs(30))
        .build();
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    g.finish(2, Ok(2));
    assert_eq!(h2.await.outcome, Outcome::Ok(2));
    let job = h1.await;
    assert_eq!(job.outcome, Outcome::TimedOut);
    assert_eq!(job.run_time(), Some(Duration::from_secs(30)));
    assert_eq!(g.dropped(), [1]);
}

#[tokio::test(start_paused = true)]
async fn per_job_timeout_overrides_the_queue() {
    let g = Gates::new();
    let q = DispatchQueue::builder(g.job())
        .width(3)
        .timeout(Duration::from_secs(30))
        .build();
    let short = q
        .put_with(1, JobOptions::priority(0).timeout(Duration::from_secs(1)))
        .unwrap();
    let long = q
        .put_with(2, JobOptions::priority(0).timeout(Duration::from_secs(60)))
        .unwrap();
    let default = q.put(3, 0).unwrap();
    let short = short.await;
    assert_eq!(short.run_time(), Some(Duration::from_secs(1)));
    assert_eq!(default.await.run_time(), Some(Duration::from_secs(30)));
    let long = long.await;
    assert_eq!(long.outcome, Outcome::TimedOut);
    assert_eq!(long.run_time(), Some(Duration::from_secs(60)));
    q.set_timeout(None).unwrap();
    assert_eq!(q.timeout(), None);
}

#[tokio::test(start_paused = true)]
async fn a_worker_reuses_its_timer_across_jobs() {
    // Many short jobs on one worker, each with a timeout: none times out.
    let q = DispatchQueue::builder(|n: u64| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, Infallible>(n)
    })
    .width(1)
    .timeout(Duration::from_millis(10))
    .build();
    let hs: Vec<_> = (0..100).map(|k| q.put(k, 0).unwrap()).collect();
    for h in hs {
        assert!(h.await.outcome.is_ok());
    }
}
