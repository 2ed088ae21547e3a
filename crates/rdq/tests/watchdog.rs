//! A `DispatchQueue` under the stall watchdog (feature `watchdog`): a job
//! that blocks its thread is reported with its id and its queue's name; a job
//! allowed to block is not; a job that awaits is not.

use std::time::Duration;

use rdq::{DispatchQueue, JobOptions};

#[inline(never)]
fn blocking_send(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
    std::hint::black_box(ms);
}

#[test]
fn blocking_jobs_are_reported_with_their_id_and_queue() {
    let watchdog = rdq_watchdog::Watchdog::builder()
        .tick(Duration::from_millis(10))
        .threshold(Duration::from_millis(100))
        .start()
        .expect("the watchdog starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let queue: DispatchQueue<u64, (), ()> = DispatchQueue::builder(|ms: u64| async move {
            if ms >= 1000 {
                tokio::time::sleep(Duration::from_millis(ms - 1000)).await;
            } else {
                blocking_send(ms);
            }
            Ok(())
        })
        .name("sms-watched")
        .width(2)
        .build();
        // Blocks 300 ms: reported.
        let blocker = queue.put(300, 0).unwrap();
        let blocker_id = blocker.id().get();
        // Blocks too, but is allowed to.
        let allowed = queue
            .put_with(300, JobOptions::priority(0).allow_block())
            .unwrap();
        let allowed_id = allowed.id().get();
        blocker.await;
        allowed.await;
        // Awaits a 300 ms timer: never reported.
        let awaiter = queue.put(1300, 0).unwrap();
        let awaiter_id = awaiter.id().get();
        awaiter.await;
        // Reported under the id the caller chose.
        queue
            .put_with(250, JobOptions::priority(0).report_id(777_000))
            .unwrap()
            .await;
        // Stacks are resolved, and ends recorded, on the watchdog's
        // reporter thread: the first time symbols load, which takes a while
        // in a debug build.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut stalls = watchdog.stalls();
        while stalls.iter().filter(|s| s.finished).count() < 2
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stalls = watchdog.stalls();
        }
        let ids: Vec<u64> = stalls.iter().map(|s| s.job).collect();
        assert!(
            ids.contains(&blocker_id),
            "the blocking job is reported: {stalls:#?}"
        );
        assert!(ids.contains(&777_000), "under the id it was given: {ids:?}");
        assert!(
            !ids.contains(&allowed_id),
            "a job allowed to block is not: {ids:?}"
        );
        assert!(
            !ids.contains(&awaiter_id),
            "a job awaiting a timer is not: {ids:?}"
        );
        let stall = stalls.iter().find(|s| s.job == blocker_id).unwrap();
        assert_eq!(stall.label.as_deref(), Some("sms-watched"));
        assert_eq!(stall.kind, rdq_watchdog::StallKind::Blocked, "{stall}");
        assert_eq!(stall.syscall.as_deref(), Some("clock_nanosleep"), "{stall}");
        assert!(stall.finished, "its end was recorded: {stall}");
        assert!(
            stall.duration >= Duration::from_millis(200)
                && stall.duration < Duration::from_millis(600),
            "{stall}"
        );
        assert!(
            stall
                .culprit
                .as_deref()
                .is_some_and(|c| c.contains("blocking_send")),
            "the job's own function is named: {stall}"
        );
        // And between jobs, the dump shows no job of this queue.
        assert!(watchdog
            .dump()
            .iter()
            .all(|t| t.label.as_deref() != Some("sms-watched")));
    });
}
