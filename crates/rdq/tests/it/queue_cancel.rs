//! Cancel: pending, underway, finished, unknown; and panics.

use std::convert::Infallible;

use rdq::{CancelError, DispatchQueue, JobId, Outcome};

use crate::support::{ids, settle, Gates};

#[tokio::test(start_paused = true)]
async fn cancel_pending_removes_it_and_resolves_cancelled() {
    let g = Gates::new();
    let q = g.queue(1);
    let _h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    let _h3 = q.put(3, 0).unwrap();
    settle().await;
    h2.cancel().unwrap();
    assert_eq!(ids(&q.pending()), [3]);
    assert_eq!(q.size(), (1, 1));
    let job = h2.await;
    assert_eq!(job.outcome, Outcome::Cancelled);
    assert_eq!(job.launched_at, None);
    g.finish(1, Ok(1));
    settle().await;
    assert_eq!(g.started(), [1, 3], "a cancelled job never launches");
}

#[tokio::test(start_paused = true)]
async fn cancel_underway_drops_the_future_and_frees_the_slot() {
    let g = Gates::new();
    let q = g.queue(1);
    let h1 = q.put(1, 0).unwrap();
    let _h2 = q.put(2, 0).unwrap();
    settle().await;
    q.cancel(h1.id()).unwrap();
    // Cancelling again before the worker noticed is still fine.
    assert_eq!(q.cancel(h1.id()), Ok(()));
    let job = h1.await;
    assert_eq!(job.outcome, Outcome::Cancelled);
    assert!(job.launched_at.is_some());
    assert_eq!(g.dropped(), [1], "the job's future was dropped");
    settle().await;
    assert_eq!(g.started(), [1, 2], "the freed slot launched the next job");
}

/// Regression (classic fault): cancel() on a finished job rewrote its outcome
/// and stop time.
#[tokio::test(start_paused = true)]
async fn cancel_of_finished_job_is_an_error_and_changes_nothing() {
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
        .width(1)
        .build();
    let h = q.put(5, 0).unwrap();
    let id = h.id();
    let job = h.await;
    assert_eq!(job.outcome, Outcome::Ok(5));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(q.cancel(id), Err(CancelError::Finished(id)));
    assert_eq!(
        q.cancel(JobId::new(77)),
        Err(CancelError::Unknown(JobId::new(77)))
    );
    assert_eq!(
        q.cancel(JobId::new(0)),
        Err(CancelError::Unknown(JobId::new(0)))
    );
    assert_eq!(
        CancelError::Finished(id).to_string(),
        format!("job {id} has already finished")
    );
    // The outcome we hold is the one the job produced; nothing else exists
    // to rewrite, and the queue does not resurrect the job.
    assert_eq!(q.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn cancel_through_a_dropped_handle_still_works_by_id() {
    let g = Gates::new();
    let q = g.queue(1);
    let id = q.put(1, 0).unwrap().id(); // handle dropped: the job still runs
    settle().await;
    assert_eq!(g.started(), [1]);
    q.cancel(id).unwrap();
    settle().await;
    assert_eq!(g.dropped(), [1]);
    assert_eq!(q.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_is_an_outcome_not_a_crash() {
    let q = DispatchQueue::builder(|n: u64| async move {
        if n == 2 {
            panic!("boom on {n}");
        }
        Ok::<_, Infallible>(n)
    })
    .width(1)
    .build();
    let hs: Vec<_> = (1..=3).map(|n| q.put(n, 0).unwrap()).collect();
    let mut outcomes = Vec::new();
    for h in hs {
        outcomes.push(h.await.outcome);
    }
    assert_eq!(
        outcomes,
        [
            Outcome::Ok(1),
            Outcome::Panicked("boom on 2".into()),
            Outcome::Ok(3)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_function_that_panics_before_its_future_exists() {
    let q = DispatchQueue::builder(|n: u64| {
        assert!(n != 1, "refused {n}");
        async move { Ok::<_, Infallible>(n) }
    })
    .width(1)
    .build();
    assert_eq!(
        q.put(1, 0).unwrap().await.outcome,
        Outcome::Panicked("refused 1".into())
    );
    assert_eq!(q.put(2, 0).unwrap().await.outcome, Outcome::Ok(2));
}

#[tokio::test(start_paused = true)]
async fn failed_jobs_keep_their_error() {
    let g = Gates::new();
    let q = g.queue(1);
    let h = q.put(1, 0).unwrap();
    settle().await;
    g.finish(1, Err("gateway busy".into()));
    assert_eq!(h.await.outcome, Outcome::Failed("gateway busy".into()));
}
