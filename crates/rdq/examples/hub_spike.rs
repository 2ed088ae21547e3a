//! A hub's backlog meter through a traffic spike: who is behind, by how
//! much, since when, and when they will have caught up.
//!
//! ```text
//! cargo run -p rdq --example hub_spike            # paused clock, about a second
//! cargo run -p rdq --example hub_spike -- --real  # the same 90 s in real time
//! ```
//!
//! One topic, `orders`, and three consumers of it, each of width 1:
//! `fast` (1 ms a message), `medium` (10 ms) and `slow` (50 ms, bound 5,000,
//! so that the whole spike fits). Traffic is a trickle of one message every
//! 15 s (4 a minute) and, from t = 20 s to t = 30 s, a spike of 120 messages
//! a second, published on absolute deadlines.
//!
//! The back of the envelope: `slow` drains 20 a second, so during the spike
//! its backlog grows by 100 a second, to about 1,000 at t = 30 s, and then
//! needs about 1,000 ÷ 20 = 50 s to drain. `medium` (100 a second) peaks near
//! 200 and drains in about 2 s; `fast` never falls behind. Tokio's timer
//! has a 1 ms resolution and rounds a sleep up to its next tick, so a job
//! started between ticks lasts up to 1 ms longer: `medium` measures about
//! 11 ms a job (peak near 290, 3 s to drain) and `slow` about 51 ms (peak
//! near 1,000, about 51 s); the example prints each one's mean.
//!
//! Each second the example prints, per consumer: depth, the oldest waiting
//! message's age, the estimated time to catch up (`-` when the consumer is
//! not catching up) and the status. The status window is 10 s here (60 s by
//! default) so that the spike shows as `WARN`. At the end it prints each
//! consumer's observed backlog episodes, and for `slow` the estimate taken
//! 1 s after the spike ended beside the time it actually took.
//!
//! **The clock.** By default the example runs on Tokio's paused clock
//! (`tokio::time::pause` on a current-thread runtime): time jumps ahead
//! whenever every task waits on a timer, so the 90 s of traffic take about a
//! second and every figure is the same on every run. The jobs, timers and
//! meter are the same code either way; `--real` runs it on the real clock
//! instead, in 90 s of wall time, where figures move by a few percent.

use std::convert::Infallible;
use std::time::Duration;

use rdq::{BacklogConfig, ConsumerSnapshot, Delivery, Hub, Overflow};
use tokio::time::{sleep, sleep_until, Instant, MissedTickBehavior};

const TOPIC: &str = "orders";
/// When the spike starts and how long it lasts.
const SPIKE_AT: Duration = Duration::from_secs(20);
const SPIKE_FOR: Duration = Duration::from_secs(10);
/// Messages a second during the spike.
const SPIKE_RATE: u32 = 120;
/// One trickle message every this long (4 a minute).
const TRICKLE_EVERY: Duration = Duration::from_secs(15);
/// How long the example runs.
const RUN_FOR: Duration = Duration::from_secs(90);

fn main() {
    let real = std::env::args().any(|a| a == "--real");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if !real {
            tokio::time::pause();
        }
        demo(real).await;
    });
}

/// Every publish time, from the start: the trickle and the spike, merged.
fn schedule() -> Vec<Duration> {
    let mut due: Vec<Duration> = (0..)
        .map(|i| TRICKLE_EVERY * i)
        .take_while(|t| *t < RUN_FOR)
        .collect();
    let spike_messages = SPIKE_RATE * SPIKE_FOR.as_secs() as u32;
    due.extend((0..spike_messages).map(|i| SPIKE_AT + Duration::from_secs(1) * i / SPIKE_RATE));
    due.sort();
    due
}

/// Declares a consumer of `orders` that spends `per_message` on each one.
fn consumer(hub: &Hub<u32>, name: &str, per_message: Duration, bound: usize) {
    hub.consumer(name)
        .subscribe(TOPIC)
        .width(1)
        .bound(bound)
        .overflow(Overflow::RejectNewest)
        .start(move |_: Delivery<u32>| async move {
            sleep(per_message).await; // stands in for the consumer's work
            Ok::<_, Infallible>(())
        })
        .expect("consumer starts");
}

/// Seconds, with one decimal, or `-`.
fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}s", d.as_secs_f64()))
}

/// One consumer's columns of the per-second line.
fn columns(c: &ConsumerSnapshot) -> String {
    let b = &c.backlog;
    format!(
        "{:>5} {:>7} {:>7} {:<4}",
        b.depth,
        secs(b.oldest_pending_age),
        secs(b.catch_up),
        b.status.to_string()
    )
}

async fn demo(real: bool) {
    let hub: Hub<u32> = Hub::with_config(BacklogConfig::default().window(Duration::from_secs(10)));
    consumer(&hub, "fast", Duration::from_millis(1), 10_000);
    consumer(&hub, "medium", Duration::from_millis(10), 10_000);
    consumer(&hub, "slow", Duration::from_millis(50), 5_000);

    let start = Instant::now();
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for (seq, due) in schedule().into_iter().enumerate() {
                sleep_until(start + due).await;
                hub.publish(TOPIC, seq as u32)
                    .await
                    .expect("every consumer has room");
            }
        })
    };

    println!(
        "{} clock; per consumer: depth, oldest age, catch-up estimate, status",
        if real { "real" } else { "paused" }
    );
    println!(
        "{:>4} | {:^26} | {:^26} | {:^26}",
        "t", "fast", "medium", "slow"
    );
    let spike_end = SPIKE_AT + SPIKE_FOR;
    // The slow consumer's estimate 1 s after the spike, and when its
    // episode then under way began (both on the example's clock).
    let mut estimate: Option<(Duration, Option<Duration>, Duration)> = None;
    let mut tick = tokio::time::interval_at(start, Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        let t = start.elapsed();
        let snapshot = hub.snapshot();
        let line: Vec<String> = snapshot.iter().map(columns).collect();
        println!("{:>3.0}s | {}", t.as_secs_f64(), line.join(" | "));
        if estimate.is_none() && t >= spike_end + Duration::from_secs(1) {
            let slow = &snapshot[2].backlog;
            if let Some(current) = slow.current_episode {
                estimate = Some((t, slow.catch_up, t - current.duration));
            }
        }
        if t >= RUN_FOR {
            break;
        }
    }
    publisher.await.expect("publisher");

    println!("\nobserved backlog episodes (depth leaving 0 until back at 0):");
    let snapshot = hub.snapshot();
    for c in &snapshot {
        let episodes: Vec<String> = c
            .backlog
            .episodes
            .iter()
            .filter(|e| e.peak_depth > 1)
            .map(|e| format!("{:.1}s peak {}", e.duration.as_secs_f64(), e.peak_depth))
            .collect();
        let brief = c
            .backlog
            .episodes
            .iter()
            .filter(|e| e.peak_depth <= 1)
            .count();
        println!(
            "  {:<6} mean job {:>6}, {}{}",
            c.name,
            c.backlog
                .mean_processing_time
                .map_or_else(|| "-".into(), |d| format!("{:.1}ms", d.as_secs_f64() * 1e3)),
            if episodes.is_empty() {
                "none above depth 1".into()
            } else {
                episodes.join(", ")
            },
            if brief > 0 {
                format!(" (and {brief} of depth 1)")
            } else {
                String::new()
            }
        );
    }

    let slow = &snapshot[2].backlog;
    let Some(spike) = slow.episodes.iter().max_by_key(|e| e.peak_depth) else {
        println!("slow: no episode recorded");
        return;
    };
    println!(
        "\nslow: peak depth {} (envelope: about 1,000); the episode lasted {:.1}s",
        spike.peak_depth,
        spike.duration.as_secs_f64()
    );
    if let Some((at, estimated, began)) = estimate {
        let ended = began + spike.duration;
        let drained = ended.saturating_sub(spike_end);
        let remaining = ended.saturating_sub(at);
        println!(
            "slow: caught up {:.1}s after the spike ended (envelope: about 50 s)",
            drained.as_secs_f64()
        );
        match estimated {
            Some(e) => println!(
                "slow: at t = {:.0}s the estimate was {:.1}s; it took {:.1}s more (error {:+.1}%)",
                at.as_secs_f64(),
                e.as_secs_f64(),
                remaining.as_secs_f64(),
                (e.as_secs_f64() / remaining.as_secs_f64() - 1.0) * 100.0
            ),
            None => println!(
                "slow: at t = {:.0}s the estimate said not catching up; it took {:.1}s more",
                at.as_secs_f64(),
                remaining.as_secs_f64()
            ),
        }
    }
}
