//! Backlog measures on a paused clock: catch-up estimate against the
//! observed episode, the status through overload, hang and pause, and a
//! slow consumer next to fast ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdq::{Delivery, Hub, Overflow, Status};
use tokio::time::{sleep, sleep_until, Instant};

fn sleeper(
    per_message: Duration,
) -> impl Fn(Delivery<u64>) -> tokio::time::Sleep + Send + Sync + 'static {
    move |_| sleep(per_message)
}

/// Adapts a sleep into a consumer job.
async fn run(sleep: tokio::time::Sleep) -> Result<(), String> {
    sleep.await;
    Ok(())
}

fn status_of(hub: &Hub<u64>, name: &str) -> Status {
    hub.snapshot()
        .into_iter()
        .find(|c| &*c.name == name)
        .unwrap()
        .backlog
        .status
}

/// Publishes `n` messages at `per_second`, paced by absolute deadlines.
async fn publish_at(hub: &Hub<u64>, topic: &str, n: u64, per_second: f64) {
    let start = Instant::now();
    for i in 0..n {
        sleep_until(start + Duration::from_secs_f64(i as f64 / per_second)).await;
        hub.publish(topic, i).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_estimate_a_second_after_a_spike_is_within_a_fifth_of_the_observed_catch_up() {
    let hub: Hub<u64> = Hub::new();
    let slow = sleeper(Duration::from_millis(50));
    hub.consumer("slow")
        .subscribe("events")
        .bound(5_000)
        .start(move |d| run(slow(d)))
        .unwrap();

    // A trickle of about 4 a minute, then 10 s at 120/s, then the trickle
    // again (in its own task, so it goes on while the test watches).
    publish_at(&hub, "events", 4, 4.0 / 60.0).await;
    sleep(Duration::from_secs(15)).await;
    publish_at(&hub, "events", 1_200, 120.0).await;
    let spike_end = Instant::now();
    let trickle = tokio::spawn({
        let hub = hub.clone();
        async move {
            loop {
                sleep(Duration::from_secs(15)).await;
                if hub.publish("events", 0).await.is_err() {
                    return;
                }
            }
        }
    });

    sleep_until(spike_end + Duration::from_secs(1)).await;
    let at = hub.snapshot().remove(0).backlog;
    let estimate = at.catch_up.expect("catching up one second after the spike");
    let so_far = at
        .current_episode
        .expect("a backlog episode is under way")
        .duration;
    assert!(at.depth > 900, "depth {} at the estimate", at.depth);

    let episode = loop {
        sleep(Duration::from_millis(10)).await;
        let s = hub.snapshot().remove(0).backlog;
        if s.current_episode.is_none() {
            break *s.episodes.last().expect("the spike's episode ended");
        }
    };
    trickle.abort();
    let remaining = episode.duration - so_far;
    let error = (estimate.as_secs_f64() - remaining.as_secs_f64()) / remaining.as_secs_f64();
    println!(
        "peak {} ; episode {:?} ; estimate {:?} vs remaining {:?} ; error {:+.1}%",
        episode.peak_depth,
        episode.duration,
        estimate,
        remaining,
        error * 100.0
    );
    assert!(error.abs() <= 0.2, "error {:.1}%", error * 100.0);
    // ≈ 1,200 arrivals − 10 s × 20/s drained ≈ 1,000; ≈ 1,000 / 20/s ≈ 50 s.
    assert!((950..=1_050).contains(&episode.peak_depth), "{episode:?}");
    assert!(
        (55..=65).contains(&episode.duration.as_secs()),
        "the episode spans the spike (10 s) and the drain (≈ 50 s): {episode:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn status_goes_ok_then_warn_under_overload_then_ok_after_the_drain() {
    let hub: Hub<u64> = Hub::new();
    let job = sleeper(Duration::from_millis(100)); // capacity 10/s
    hub.consumer("c")
        .subscribe("t")
        .start(move |d| run(job(d)))
        .unwrap();

    publish_at(&hub, "t", 200, 5.0).await; // 40 s at half capacity
    assert_eq!(status_of(&hub, "c"), Status::Ok);
    publish_at(&hub, "t", 1_400, 20.0).await; // 70 s at twice capacity
    let s = hub.snapshot().remove(0).backlog;
    assert_eq!(s.status, Status::Warn, "{s:?}");
    assert_eq!(s.catch_up, None, "λ ≈ 20/s > μ = 10/s: not catching up");

    // Arrivals stop; the backlog shrinks, then empties.
    sleep(Duration::from_secs(3)).await;
    let s = hub.snapshot().remove(0).backlog;
    assert!(s.depth > 0 && s.catch_up.is_some(), "{s:?}");
    while hub.snapshot()[0].backlog.depth > 0 {
        sleep(Duration::from_secs(1)).await;
    }
    sleep(Duration::from_secs(1)).await;
    assert_eq!(status_of(&hub, "c"), Status::Ok);
}

#[tokio::test(start_paused = true)]
async fn a_hung_job_is_a_stall_and_a_paused_backlog_is_a_stop() {
    let hub: Hub<u64> = Hub::new();
    hub.consumer("hung")
        .subscribe("t")
        .start(|_| std::future::pending::<Result<(), String>>())
        .unwrap();
    let paused = hub
        .consumer("paused")
        .subscribe("t")
        .start(|_| std::future::ready(Ok::<_, String>(())))
        .unwrap();
    drop(paused.pause()); // stops launches at once; nothing to drain
    for m in 0..3 {
        hub.publish("t", m).await.unwrap();
    }
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        status_of(&hub, "hung"),
        Status::Ok,
        "half a window is no evidence"
    );
    assert_eq!(status_of(&hub, "paused"), Status::Ok);
    sleep(Duration::from_secs(31)).await;
    assert_eq!(status_of(&hub, "hung"), Status::Stall);
    assert_eq!(status_of(&hub, "paused"), Status::Stop);
    let s = hub.snapshot().remove(1).backlog;
    assert!(s.paused && s.depth == 3 && s.catch_up.is_none(), "{s:?}");
    assert_eq!(s.oldest_pending_age, Some(Duration::from_secs(61)));

    paused.resume(None).unwrap();
    sleep(Duration::from_secs(1)).await;
    assert_eq!(status_of(&hub, "paused"), Status::Ok);
}

/// The p99 queue wait of two fast consumers, with or without a consumer
/// 100× slower beside them.
async fn fast_p99(with_slow: bool) -> Duration {
    let hub: Hub<u64> = Hub::new();
    let waits = Arc::new(Mutex::new(Vec::new()));
    for name in ["fast-1", "fast-2"] {
        let waits = waits.clone();
        hub.consumer(name)
            .subscribe("t")
            .width(2)
            .start(move |d: Delivery<u64>| {
                waits.lock().unwrap().push(d.published_at.elapsed());
                run(sleep(Duration::from_millis(1)))
            })
            .map(|_| ())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    if with_slow {
        let slow = sleeper(Duration::from_millis(100));
        hub.consumer("slow")
            .subscribe("t")
            .width(2)
            .bound(100)
            .overflow(Overflow::DropOldest)
            .start(move |d| run(slow(d)))
            .unwrap();
    }
    // Bursts of 6 every 5 ms: 1,200/s against a capacity of 2,000/s, so
    // the fast consumers queue a little within each burst.
    let start = Instant::now();
    for burst in 0..200u64 {
        sleep_until(start + Duration::from_millis(5 * burst)).await;
        for m in 0..6 {
            hub.publish("t", burst * 6 + m).await.unwrap();
        }
    }
    sleep(Duration::from_millis(100)).await;
    let mut waits = waits.lock().unwrap().clone();
    assert_eq!(waits.len(), 2 * 1_200);
    waits.sort();
    waits[waits.len() * 99 / 100]
}

#[tokio::test(start_paused = true)]
async fn a_consumer_100_times_slower_does_not_delay_the_fast_ones() {
    let alone = fast_p99(false).await;
    let beside_slow = fast_p99(true).await;
    println!("fast consumers' p99 wait: {alone:?} alone, {beside_slow:?} beside a slow one");
    assert!(
        alone > Duration::ZERO,
        "the fast consumers must queue a little"
    );
    assert!(
        beside_slow.as_secs_f64() <= alone.as_secs_f64() * 1.1,
        "{beside_slow:?} vs {alone:?}"
    );
}
