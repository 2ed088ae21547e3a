//! Every handle resolves, whatever user code or the runtime does (issue 9,
//! part A). Each test is on the paused clock, and every await is bounded, so
//! a regression fails instead of hanging CI.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdq::{DispatchQueue, JobError, Outcome, PutError, Rate, StopMode, StoppedError};

/// Awaits `fut`, failing the test if it takes more than a minute (of the
/// paused clock: it auto-advances only when every task is idle, so this
/// fires exactly when nothing else could make progress).
async fn bounded<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} never resolved"),
    }
}

/// Panics when dropped, if armed.
struct Bomb(bool);

impl Drop for Bomb {
    fn drop(&mut self) {
        if self.0 {
            panic!("boom in Drop");
        }
    }
}

/// A job function whose job 1 never ends and panics when its future is
/// dropped; other jobs succeed at once.
async fn bomb_job(n: u64) -> Result<u64, Infallible> {
    let _bomb = Bomb(n == 1);
    if n == 1 {
        std::future::pending::<()>().await;
    }
    Ok(n)
}

/// A.1: the slot freed by a future that panics while dropped (after a
/// cancel) is filled at once; nothing else has to happen first.
#[tokio::test(start_paused = true)]
async fn a_future_panicking_in_drop_after_cancel_frees_its_slot_at_once() {
    let q = DispatchQueue::builder(bomb_job).width(1).build();
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    tokio::task::yield_now().await;
    h1.cancel().unwrap();
    assert_eq!(bounded("job 1", h1).await.outcome, Outcome::Cancelled);
    assert_eq!(bounded("job 2", h2).await.outcome, Outcome::Ok(2));
    assert_eq!(q.stray_panics(), 1);
    assert_eq!(q.size(), (0, 0));
}

/// A.1, the timeout path.
#[tokio::test(start_paused = true)]
async fn a_future_panicking_in_drop_after_a_timeout_frees_its_slot_at_once() {
    let q = DispatchQueue::builder(bomb_job)
        .width(1)
        .timeout(Duration::from_secs(1))
        .build();
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    assert_eq!(bounded("job 1", h1).await.outcome, Outcome::TimedOut);
    assert_eq!(bounded("job 2", h2).await.outcome, Outcome::Ok(2));
    assert_eq!(q.stray_panics(), 1);
}

/// A.2: a panicking `on_finish` hook costs no handle, no launch and no width,
/// and `stop(Wait)` returns.
#[tokio::test(start_paused = true)]
async fn a_panicking_on_finish_hook_is_caught_and_the_queue_goes_on() {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
        .width(1)
        .on_finish(move |_job| {
            seen.fetch_add(1, Ordering::SeqCst);
            panic!("hook panics");
        })
        .build();
    let hs: Vec<_> = (1..=3).map(|n| q.put(n, 0).unwrap()).collect();
    for (n, h) in (1..=3).zip(hs) {
        assert_eq!(bounded("a job", h).await.outcome, Outcome::Ok(n));
    }
    assert_eq!(q.width(), 1, "no width lost");
    let late = q.put(4, 0).unwrap();
    assert_eq!(bounded("job 4", late).await.outcome, Outcome::Ok(4));
    // A pending job at stop goes through the hook too.
    q.set_width(0).unwrap();
    let unrun = q.put(5, 0).unwrap();
    let left = bounded("stop", q.stop(StopMode::Wait)).await;
    assert_eq!(left.len(), 1);
    assert_eq!(bounded("job 5", unrun).await.outcome, Outcome::NotRun);
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(q.stray_panics(), 5);
}

/// A.2, same class: a result whose `Drop` panics, for a job nobody waits for.
#[tokio::test(start_paused = true)]
async fn a_result_panicking_in_drop_with_no_one_waiting_is_caught() {
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(Bomb(n == 1)) })
        .width(1)
        .build();
    drop(q.put(1, 0).unwrap());
    let h2 = q.put(2, 0).unwrap();
    assert!(bounded("job 2", h2).await.outcome.is_ok());
    assert_eq!(q.stray_panics(), 1);
}

/// An argument whose `Clone` panics when asked to.
#[derive(Debug)]
struct Touchy(u64, bool);

impl Clone for Touchy {
    fn clone(&self) -> Self {
        if self.1 {
            panic!("clone of {} refused", self.0);
        }
        Touchy(self.0, self.1)
    }
}

/// A.2, same class: `A::clone` runs under the queue's lock at launch; a panic
/// there must not lose the job or wedge the queue.
#[tokio::test(start_paused = true)]
async fn an_argument_panicking_in_clone_fails_its_job_only() {
    let q = DispatchQueue::builder(|t: Touchy| async move { Ok::<_, Infallible>(t.0) })
        .width(1)
        .paused(true)
        .build();
    let h1 = q.put(Touchy(1, true), 0).unwrap();
    let h2 = q.put(Touchy(2, false), 0).unwrap();
    q.resume(None).unwrap();
    let job1 = bounded("job 1", h1).await;
    assert!(
        matches!(&job1.outcome, Outcome::Panicked(m) if m.contains("clone of 1 refused")),
        "{:?}",
        job1.outcome
    );
    assert!(job1.launched_at.is_none());
    assert_eq!(bounded("job 2", h2).await.outcome, Outcome::Ok(2));
}

/// Runs `fut` on a fresh runtime with a paused clock: for the checks made
/// after the runtime a queue was built on is gone.
fn afterwards(fut: impl Future<Output = ()>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(fut);
}

/// A.3: a queue outliving its runtime. The running job resolves `Cancelled`,
/// the pending one `NotRun`; later puts are refused and `stop` returns the
/// job that never ran.
#[test]
fn a_queue_outliving_its_runtime_resolves_every_handle() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let q = DispatchQueue::builder(move |n: u64| {
        let s = s.clone();
        async move {
            s.store(true, Ordering::SeqCst);
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(n)
        }
    })
    .width(1)
    .build_on(rt.handle().clone());
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    rt.block_on(async {
        while !started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    });
    drop(rt);
    afterwards(async move {
        assert_eq!(bounded("job 1", h1).await.outcome, Outcome::Cancelled);
        assert_eq!(bounded("job 2", h2).await.outcome, Outcome::NotRun);
        assert!(q.is_stopped());
        assert!(matches!(q.put(3, 0), Err(PutError::Stopped(3))));
        let grace = StopMode::CancelAfter(Duration::from_secs(1));
        let unrun = bounded("stop", q.stop(grace)).await;
        assert_eq!(unrun.iter().map(|j| j.arg).collect::<Vec<_>>(), [2]);
    });
}

/// A.3: the runtime died while the queue was idle; the next put finds out.
#[test]
fn a_put_after_the_runtime_died_resolves_not_run() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
        .width(2)
        .build_on(rt.handle().clone());
    drop(rt);
    afterwards(async move {
        let h = q.put(1, 0).unwrap();
        let job = bounded("job 1", h).await;
        assert_eq!(job.outcome, Outcome::NotRun);
        assert!(job.launched_at.is_none(), "it never started");
        assert!(matches!(q.put(2, 0), Err(PutError::Stopped(2))));
        let unrun = bounded("stop", q.stop(StopMode::Wait)).await;
        assert_eq!(unrun.iter().map(|j| j.arg).collect::<Vec<_>>(), [1]);
    });
}

/// A.3: jobs waiting only for the rate pacer when the runtime goes.
#[test]
fn jobs_waiting_on_the_rate_resolve_when_the_runtime_goes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
        .width(5)
        .rate(Rate::per_minute(1))
        .build_on(rt.handle().clone());
    let h1 = q.put(1, 0).unwrap();
    let h2 = q.put(2, 0).unwrap();
    let h3 = q.put(3, 1).unwrap();
    let first = rt.block_on(h1);
    assert_eq!(first.outcome, Outcome::Ok(1));
    drop(rt);
    afterwards(async move {
        assert_eq!(bounded("job 2", h2).await.outcome, Outcome::NotRun);
        assert_eq!(bounded("job 3", h3).await.outcome, Outcome::NotRun);
        let unrun = bounded("stop", q.stop(StopMode::Wait)).await;
        assert_eq!(unrun.iter().map(|j| j.arg).collect::<Vec<_>>(), [2, 3]);
    });
}

/// A.4: an id from one queue names nothing in another.
#[tokio::test(start_paused = true)]
async fn an_id_from_another_queue_is_unknown_and_cancels_nothing() {
    let job = |n: u64| async move { Ok::<_, Infallible>(n) };
    let a = DispatchQueue::builder(job).width(0).build();
    let b = DispatchQueue::builder(job).width(0).build();
    let ha = a.put(1, 0).unwrap();
    let hb = b.put(1, 0).unwrap();
    assert_ne!(ha.id(), hb.id(), "ids are unique in the process");
    assert_eq!(b.cancel(ha.id()), Err(JobError::Unknown(ha.id())));
    assert_eq!(b.reprioritize(ha.id(), 3), Err(JobError::Unknown(ha.id())));
    assert_eq!(b.size(), (0, 1), "b's job is still pending");
    assert_eq!(a.size(), (0, 1), "a's job too");
}

/// A.5: launch order (what `launched_at` and `underway()` show) is priority
/// then put order, even when a multi-thread runtime starts the jobs of one
/// launch in another order.
#[test]
fn launched_at_follows_priority_then_put_order_on_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
            .width(3)
            .paused(true)
            .build();
        let prios = [3, 1, 2, 1, 0, 3, 2, 0, 1, 2, 3, 0];
        let hs: Vec<_> = prios
            .iter()
            .enumerate()
            .map(|(i, p)| q.put(i as u64, *p).unwrap())
            .collect();
        q.resume(None).unwrap();
        let mut jobs = Vec::new();
        for h in hs {
            jobs.push(bounded("a job", h).await);
        }
        jobs.sort_by_key(|j| (j.priority, j.id));
        for pair in jobs.windows(2) {
            assert!(
                pair[0].launched_at <= pair[1].launched_at,
                "job {} launched after job {}",
                pair[0].arg,
                pair[1].arg
            );
        }
    });
}

/// A.6: a job cancelled before its worker started it never starts, whether
/// by `stop(CancelUnderway)` or by `cancel` right after the put.
#[tokio::test(start_paused = true)]
async fn a_job_cancelled_before_it_starts_never_calls_the_job_function() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let q = DispatchQueue::builder(move |n: u64| {
        c.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(n) }
    })
    .width(2)
    .build();
    let h1 = q.put(1, 0).unwrap();
    h1.cancel().unwrap();
    let h2 = q.put(2, 0).unwrap();
    let unrun = bounded("stop", q.stop(StopMode::CancelUnderway)).await;
    assert!(unrun.is_empty());
    let (j1, j2) = (bounded("job 1", h1).await, bounded("job 2", h2).await);
    assert_eq!(
        (j1.outcome, j2.outcome),
        (Outcome::Cancelled, Outcome::Cancelled)
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the job function was called"
    );
}

/// A.7: a stopped queue refuses every change and reports what it had.
#[tokio::test(start_paused = true)]
async fn a_stopped_queue_refuses_changes_and_keeps_its_settings() {
    let q = DispatchQueue::builder(|n: u64| async move { Ok::<_, Infallible>(n) })
        .width(3)
        .build();
    bounded("stop", q.stop(StopMode::Wait)).await;
    assert_eq!(q.set_width(7), Err(StoppedError));
    assert_eq!(q.width(), 3);
    assert_eq!(q.set_rate(Some(Rate::per_second(1))), Err(StoppedError));
    assert_eq!(q.rate(), None);
    assert_eq!(
        q.set_timeout(Some(Duration::from_secs(1))),
        Err(StoppedError)
    );
    assert_eq!(q.timeout(), None);
    bounded("pause", q.pause()).await;
    assert!(!q.is_paused());
    assert_eq!(q.resume(Some(9)), Err(StoppedError));
    assert_eq!(q.width(), 3);
}

/// A.7: `max_pending(0)` means "run now or refuse".
#[tokio::test(start_paused = true)]
async fn max_pending_zero_runs_now_or_refuses() {
    let q = DispatchQueue::builder(|n: u64| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(n)
    })
    .width(1)
    .max_pending(0)
    .build();
    let h1 = q.put(1, 0).expect("a free slot takes the job at once");
    assert!(matches!(q.put(2, 0), Err(PutError::Full(2, 0))));
    assert_eq!(q.size(), (1, 0));
    assert_eq!(bounded("job 1", h1).await.outcome, Outcome::Ok(1));
    let h3 = q.put(3, 0).expect("free again");
    assert_eq!(bounded("job 3", h3).await.outcome, Outcome::Ok(3));
}
