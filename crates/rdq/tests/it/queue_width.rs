//! Width, priority order, size and snapshots.

use rdq::{JobOptions, Outcome, PutError, StopMode};

use crate::support::{ids, now_or_never, settle, Gates};

#[tokio::test(start_paused = true)]
async fn launches_up_to_width_in_priority_then_fifo_order() {
    let g = Gates::new();
    let q = g.queue(2);
    // Put order and priorities: ids 1..=6.
    let prios = [5, 5, 1, 9, 1, -3];
    let hs: Vec<_> = prios
        .iter()
        .enumerate()
        .map(|(i, p)| q.put(i as u64 + 1, *p).unwrap())
        .collect();
    settle().await;
    // Jobs 1 and 2 launched at their puts (width 2 free); the rest wait.
    assert_eq!(g.started(), [1, 2]);
    assert_eq!(ids(&q.pending()), [6, 3, 5, 4]);
    assert_eq!(ids(&q.underway()), [1, 2]);
    assert_eq!(q.size(), (2, 4));
    for key in [1, 2, 6, 3, 5, 4] {
        g.finish(key, Ok(key * 10));
        settle().await;
    }
    assert_eq!(g.started(), [1, 2, 6, 3, 5, 4]);
    for (i, h) in hs.into_iter().enumerate() {
        let job = h.await;
        assert_eq!(job.arg, i as u64 + 1);
        assert_eq!(job.outcome, Outcome::Ok((i as u64 + 1) * 10));
        assert_eq!(job.priority, prios[i]);
    }
    assert_eq!(q.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn growing_launches_at_once_and_shrinking_interrupts_nothing() {
    let g = Gates::new();
    let q = g.queue(1);
    for k in 1..=6 {
        q.put(k, 0).unwrap();
    }
    settle().await;
    assert_eq!(g.started(), [1]);
    q.set_width(4).unwrap();
    settle().await;
    assert_eq!(g.started(), [1, 2, 3, 4]);
    q.set_width(1).unwrap();
    settle().await;
    assert_eq!(q.size(), (4, 2), "shrinking cancels nothing");
    assert!(g.dropped().is_empty());
    // Finishing three of four launches nothing: underway (3) is not below 1.
    for k in [1, 2, 3] {
        g.finish(k, Ok(k));
    }
    settle().await;
    assert_eq!(g.started(), [1, 2, 3, 4]);
    g.finish(4, Ok(4));
    settle().await;
    assert_eq!(g.started(), [1, 2, 3, 4, 5]);
    assert_eq!(q.width(), 1);
}

#[tokio::test(start_paused = true)]
async fn width_zero_launches_nothing() {
    let g = Gates::new();
    let q = g.queue(0);
    let h = q.put(1, 0).unwrap();
    settle().await;
    assert!(g.started().is_empty());
    assert_eq!(q.size(), (0, 1));
    q.set_width(1).unwrap();
    settle().await;
    g.finish(1, Ok(7));
    assert_eq!(h.await.outcome, Outcome::Ok(7));
}

#[tokio::test(start_paused = true)]
async fn reprioritize_moves_pending_jobs_only() {
    let g = Gates::new();
    let q = g.queue(1);
    let hs: Vec<_> = (1..=4).map(|k| q.put(k, 0).unwrap()).collect();
    settle().await;
    let id = |n: usize| hs[n - 1].id();
    assert_eq!(q.reprioritize(id(4), -1), Ok(0));
    assert_eq!(ids(&q.pending()), [4, 2, 3]);
    assert_eq!(
        q.reprioritize(id(1), 5),
        Err(rdq::JobError::Underway(id(1)))
    );
    assert_eq!(
        q.reprioritize(rdq::JobId::new(0), 5),
        Err(rdq::JobError::Unknown(rdq::JobId::new(0)))
    );
    g.finish(1, Ok(1));
    settle().await;
    assert_eq!(
        q.reprioritize(id(1), 5),
        Err(rdq::JobError::Finished(id(1)))
    );
    assert_eq!(g.started(), [1, 4]);
}

#[tokio::test(start_paused = true)]
async fn bounded_queue_gives_the_argument_back() {
    let g = Gates::new();
    let q = rdq::DispatchQueue::builder(g.job())
        .width(1)
        .max_pending(2)
        .build();
    let _a = q.put(1, 0).unwrap(); // launches
    settle().await;
    let _b = q.put(2, 0).unwrap();
    let _c = q.put(3, 0).unwrap();
    match q.put(4, 0) {
        Err(PutError::Full(arg, 2)) => assert_eq!(arg, 4),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(q.size(), (1, 2));
    drop(q.stop(StopMode::CancelUnderway));
    let err = q.put(5, 0).unwrap_err();
    assert!(matches!(err, PutError::Stopped(5)));
    assert_eq!(err.to_string(), "the queue is stopped");
    assert_eq!(err.into_inner(), 5);
}

#[tokio::test(start_paused = true)]
async fn drop_oldest_drops_the_job_put_longest_ago_whatever_its_priority() {
    let g = Gates::new();
    let dropped = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = dropped.clone();
    let q = rdq::DispatchQueue::builder(g.job())
        .width(1)
        .max_pending(2)
        .drop_oldest(true)
        .on_finish(move |job| {
            if job.outcome == rdq::Outcome::Dropped {
                seen.lock().unwrap().push(job.arg);
            }
        })
        .build();
    let _a = q.put(1, 0).unwrap(); // launches
    settle().await;
    let b = q.put(2, 9).unwrap(); // the oldest pending, though it launches last
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let _c = q.put(3, 0).unwrap();
    let oldest = q.oldest_pending().unwrap();
    assert_eq!(oldest, q.pending()[1].queued_at, "job 2 was put first");
    let _d = q.put(4, 5).unwrap(); // full: job 2 goes
    let job = b.await;
    assert_eq!(job.outcome, rdq::Outcome::Dropped);
    assert_eq!((job.arg, job.launched_at), (2, None));
    assert_eq!(*dropped.lock().unwrap(), [2]);
    assert_eq!(ids(&q.pending()), [3, 4]);
    assert_eq!(q.size(), (1, 2));
    assert!(q.oldest_pending().unwrap() > oldest);
    drop(q.stop(StopMode::CancelUnderway));
    assert_eq!(q.oldest_pending(), None);
}

#[tokio::test(start_paused = true)]
async fn snapshots_carry_timestamps() {
    let g = Gates::new();
    let q = g.queue(1);
    let h1 = q.put(1, 0).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let h2 = q.put_with(2, JobOptions::priority(3)).unwrap();
    // Launching is synchronous: no need to let the worker run first.
    let running = q.underway();
    assert_eq!(running.len(), 1);
    assert!(running[0].launched_at.is_some());
    let waiting = q.pending();
    assert_eq!(waiting[0].priority, 3);
    assert!(waiting[0].launched_at.is_none());
    assert!(waiting[0].queued_at.mono > running[0].queued_at.mono);
    assert!(waiting[0].queued_at.wall > running[0].queued_at.wall);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    g.finish(1, Ok(1));
    let j1 = h1.await;
    assert_eq!(j1.run_time(), Some(std::time::Duration::from_millis(15)));
    settle().await;
    g.finish(2, Ok(2));
    let j2 = h2.await;
    assert_eq!(j2.wait_time(), std::time::Duration::from_millis(5));
    assert!(now_or_never(&mut Box::pin(async { 1 })).is_some());
}

/// Regression (classic fault): reprioritizing left a stale entry in the heap
/// that later wedged the dispatcher. Reprioritize heavily, then dispatch
/// 1,000 jobs: all of them run, in (final priority, put order). Width 1, so
/// that the order in which job functions are called is the launch order
/// (with more workers, jobs launched together start concurrently).
#[tokio::test(start_paused = true)]
async fn reprioritize_then_dispatch_a_thousand_jobs() {
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let q = rdq::DispatchQueue::builder(move |n: u64| {
        l.lock().unwrap().push(n);
        async move { Ok::<_, std::convert::Infallible>(n) }
    })
    .width(0)
    .build();
    let mut prio = std::collections::HashMap::new();
    let hs: Vec<_> = (1..=1000u64)
        .map(|k| {
            prio.insert(k, (k % 7) as i32);
            q.put(k, (k % 7) as i32).unwrap()
        })
        .collect();
    for k in (1..=1000u64).step_by(3) {
        let p = (k * 13 % 11) as i32 - 5;
        let id = hs[k as usize - 1].id();
        q.reprioritize(id, p).unwrap();
        // Away and back again: the job must not be left behind twice.
        q.reprioritize(id, p + 100).unwrap();
        q.reprioritize(id, p).unwrap();
        prio.insert(k, p);
    }
    q.set_width(1).unwrap();
    for h in hs {
        let job = tokio::time::timeout(std::time::Duration::from_secs(5), h)
            .await
            .expect("the dispatcher keeps going");
        assert!(job.outcome.is_ok());
    }
    let mut want: Vec<u64> = (1..=1000).collect();
    want.sort_by_key(|k| (prio[k], *k));
    assert_eq!(*log.lock().unwrap(), want);
    assert_eq!(q.size(), (0, 0));
}
