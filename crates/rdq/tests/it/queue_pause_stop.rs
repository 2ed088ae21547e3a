//! Pause, resume, stop, and the classic faults around them.

use std::convert::Infallible;
use std::time::Duration;

use rdq::{DispatchQueue, Outcome, StopMode, StoppedError};

use crate::support::{ids, now_or_never, settle, Gates};

#[tokio::test(start_paused = true)]
async fn pause_stops_launches_and_resolves_when_underway_drains() {
    let g = Gates::new();
    let q = g.queue(2);
    for k in 1..=4 {
        q.put(k, 0).unwrap();
    }
    settle().await;
    let mut drained = Box::pin(q.pause());
    assert!(q.is_paused());
    g.finish(1, Ok(1));
    settle().await;
    assert_eq!(g.started(), [1, 2], "no launch while paused");
    assert!(now_or_never(&mut drained).is_none(), "job 2 still underway");
    g.finish(2, Ok(2));
    settle().await;
    assert!(now_or_never(&mut drained).is_some());
    q.resume(None).unwrap();
    settle().await;
    assert_eq!(g.started(), [1, 2, 3, 4]);
    assert_eq!(q.width(), 2);
}

/// Regression (classic fault): a second pause() saved width 0 as "the width
/// before the pause", so resume() left the queue at width 0.
#[tokio::test(start_paused = true)]
async fn pause_twice_then_resume_keeps_the_width() {
    let g = Gates::new();
    let q = g.queue(3);
    q.pause().await;
    q.pause().await;
    assert_eq!(q.width(), 3);
    for k in 1..=5 {
        q.put(k, 0).unwrap();
    }
    settle().await;
    assert!(g.started().is_empty());
    q.resume(None).unwrap();
    settle().await;
    assert_eq!(g.started(), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn width_set_while_paused_or_given_to_resume_applies() {
    let g = Gates::new();
    let q = g.queue(1);
    drop(q.pause());
    q.set_width(2).unwrap();
    for k in 1..=6 {
        q.put(k, 0).unwrap();
    }
    q.resume(None).unwrap();
    settle().await;
    assert_eq!(g.started(), [1, 2]);
    drop(q.pause());
    q.resume(Some(4)).unwrap();
    settle().await;
    assert_eq!(g.started(), [1, 2, 3, 4]);
    // Resuming a queue that is not paused is harmless.
    q.resume(None).unwrap();
    assert_eq!(q.width(), 4);
}

#[tokio::test(start_paused = true)]
async fn stop_returns_unrun_jobs_in_launch_order_and_requeue_restores_it() {
    let g = Gates::new();
    let q = g.queue(1);
    let prios = [0, 4, 2, 4, -1, 2];
    let hs: Vec<_> = prios
        .iter()
        .enumerate()
        .map(|(i, p)| q.put(i as u64 + 1, *p).unwrap())
        .collect();
    settle().await;
    let order_before = ids(&q.pending());
    let stopping = q.stop(StopMode::Wait);
    // Puts are refused from the moment stop() is called.
    assert!(q.put(99, 0).is_err());
    assert!(q.is_stopped());
    assert_eq!(q.resume(None), Err(StoppedError));
    g.finish(1, Ok(1));
    let unrun = stopping.await;
    assert_eq!(
        unrun.iter().map(|j| j.arg).collect::<Vec<_>>(),
        order_before
    );
    assert!(unrun
        .iter()
        .all(|j| j.outcome == Outcome::NotRun && j.launched_at.is_none()));
    // Every handle resolved: the underway one with its result, the rest NotRun.
    let mut outcomes = Vec::new();
    for h in hs {
        outcomes.push(h.await.outcome);
    }
    assert_eq!(outcomes[0], Outcome::Ok(1));
    assert!(outcomes[1..].iter().all(|o| *o == Outcome::NotRun));

    // A new queue given the same jobs launches them in the same order.
    let g2 = Gates::new();
    let q2 = g2.queue(0);
    for job in &unrun {
        q2.put(job.arg, job.priority).unwrap();
    }
    let args_in_order: Vec<u64> = q2.pending().iter().map(|i| i.arg).collect();
    let unrun_args: Vec<u64> = unrun.iter().map(|j| j.arg).collect();
    assert_eq!(args_in_order, unrun_args);
}

/// Regression (classic fault): jobs dropped by stop() or a clear had waiters
/// that never woke.
#[tokio::test(start_paused = true)]
async fn stop_wakes_every_waiter() {
    let g = Gates::new();
    let q = g.queue(2);
    let waiters: Vec<_> = (1..=50)
        .map(|k| tokio::spawn(q.put(k, (k % 5) as i32).unwrap()))
        .collect();
    settle().await;
    let unrun = q.stop(StopMode::CancelUnderway).await;
    assert_eq!(unrun.len(), 48);
    for w in waiters {
        let job = tokio::time::timeout(Duration::from_secs(1), w)
            .await
            .expect("every waiter wakes")
            .unwrap();
        assert!(matches!(job.outcome, Outcome::NotRun | Outcome::Cancelled));
    }
    assert_eq!(g.dropped().len(), 2);
    // A second stop is harmless and returns nothing.
    assert!(q.stop(StopMode::Wait).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn stop_cancel_after_a_grace_period() {
    let g = Gates::new();
    let q = g.queue(2);
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    settle().await;
    let stopping = tokio::spawn(q.stop(StopMode::CancelAfter(Duration::from_secs(5))));
    tokio::time::sleep(Duration::from_secs(1)).await;
    g.finish(1, Ok(1)); // finishes within the grace period
    let unrun = stopping.await.unwrap();
    assert!(unrun.is_empty());
    assert_eq!(h1.await.outcome, Outcome::Ok(1));
    assert_eq!(h2.await.outcome, Outcome::Cancelled);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_last_queue_clone_resolves_pending_handles() {
    let g = Gates::new();
    let q = g.queue(1);
    let q2 = q.clone();
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    settle().await;
    drop(q);
    assert!(!q2.is_stopped(), "a clone keeps the queue alive");
    drop(q2);
    assert_eq!(h2.await.outcome, Outcome::NotRun);
    // The underway job runs to its end.
    g.finish(1, Ok(1));
    assert_eq!(h1.await.outcome, Outcome::Ok(1));
}

#[tokio::test(start_paused = true)]
async fn handles_that_were_dropped_cost_nothing_at_completion() {
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
        .width(4)
        .build();
    for k in 0..1000 {
        drop(q.put(k, 0).unwrap());
    }
    settle().await;
    assert_eq!(q.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_weak_handle_does_not_keep_the_queue_alive() {
    let g = Gates::new();
    let q = g.queue(0);
    let h = q.put(1, 0).unwrap();
    let weak = q.downgrade();
    let timer = tokio::spawn({
        let weak = weak.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            if let Some(q) = weak.upgrade() {
                q.set_width(8).unwrap();
            }
        }
    });
    weak.upgrade()
        .expect("alive while q is")
        .set_width(0)
        .unwrap();
    drop(q);
    assert!(weak.upgrade().is_none());
    assert_eq!(
        h.await.outcome,
        Outcome::NotRun,
        "dropping q stopped it at once"
    );
    timer.abort();
}

#[tokio::test(start_paused = true)]
async fn on_finish_sees_every_outcome_even_with_handles_dropped() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let g = Gates::new();
    let q = DispatchQueue::builder(g.job())
        .width(2)
        .timeout(Duration::from_secs(10))
        .on_finish(move |job: &crate::support::Finished| {
            s.lock().unwrap().push((job.arg, job.outcome.name()));
        })
        .build();
    let ids: Vec<_> = (1..=5).map(|k| q.put(k, 0).unwrap().id()).collect();
    settle().await;
    g.finish(1, Ok(1)); // ok; job 3 launches
    q.cancel(ids[3]).unwrap(); // pending: cancelled
    settle().await;
    tokio::time::sleep(Duration::from_secs(11)).await; // 2 and 3 time out; 5 launches
    drop(q.stop(StopMode::CancelUnderway)); // 5 is cancelled underway
    settle().await;
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            (1, "ok"),
            (2, "timed_out"),
            (3, "timed_out"),
            (4, "cancelled"),
            (5, "cancelled")
        ]
    );
}
