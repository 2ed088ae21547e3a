//! `rdq demo`: its load shows what the README's tour promises. Raised above
//! the gateway's limit (`rdq width sms 8; rdq rate sms 40/s`), the queue is
//! answered 429 during a rush and holds.

use std::time::Duration;

use rdq::Rate;
use rdq_server::app::Event;
use rdq_server::demo::{self, Load, LOAD};
use tokio::sync::broadcast::error::RecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_rush_the_gateway_holds_a_queue_sent_faster_than_it_allows() {
    // The demo's own waves, without the backlog: what is sent comes from
    // the load as it arrives, which starts with a rush.
    let load = Load { backlog: 0, ..LOAD };
    let demo = demo::start("127.0.0.1:0".parse().unwrap(), load)
        .await
        .unwrap();
    let app = demo.running.app.clone();
    let queue = &app.queues["sms"].queue;
    let mut events = app.events.subscribe();
    queue.set_width(8).await.unwrap();
    queue.set_rate(Some(Rate::per_second(40))).await.unwrap();
    // A 429 with Retry-After snoozes its job and holds the queue (the fake
    // gateway's only answer that snoozes: its other failure is a 500, which
    // retries); the first snoozed job is the signal.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match events.recv().await {
                Ok(Event::Job { event, .. }) if event == "snoozed" => return,
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => panic!("the event stream closed"),
            }
        }
    })
    .await
    .expect("within 30 s of a rush of 25 a second sent at up to 40, the gateway answers 429");
    demo.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_publishes_to_a_fast_and_a_slow_consumer() {
    let load = Load { backlog: 0, ..LOAD };
    let demo = demo::start("127.0.0.1:0".parse().unwrap(), load)
        .await
        .unwrap();
    let app = demo.running.app.clone();
    let names: Vec<&str> = app.consumers.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["receipts", "analytics"]);
    // Both consumers get the demo's messages and process them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut done = true;
        for c in &app.consumers {
            let b = c.snapshot().await.unwrap();
            done &= b.enqueued > 0 && b.processed.ok > 0;
        }
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo's consumers processed nothing in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    demo.stop().await.unwrap();
}
