//! The stall watchdog in the server: started once per process, its metrics
//! (`rdq_stalls_total{kind}`, `rdq_stall_seconds`), and hung-job reports.
//!
//! Every job of every queue is watched ([`rdq_watchdog`], through `rdq`'s
//! `watchdog` feature) under its stored id and its queue's name. A poll that
//! blocks a runtime thread past `[watchdog] threshold` is logged (one
//! `tracing` warning with the job, queue, cause and culprit function),
//! counted, and listed by `GET /api/v1/stalls`.
//!
//! A job underway longer than its queue's `warn_after` is *hung*: it is
//! logged once per attempt with what it is doing (in a poll, or waiting and
//! since when; for a command, its child's pid, state and wait channel),
//! counted in `rdq_jobs_hung_total`, shown in `rdq_queue_hung` and flagged in
//! `GET /api/v1/dump`, all before its timeout cuts it off.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use rdq_watchdog::{StallEvent, StallKind, Watchdog};

use crate::app::App;
use crate::config::WatchdogConfig;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}

/// The stall metrics: process-wide, like the watchdog they count for.
pub(crate) struct StallMetrics {
    /// Stalls found, by kind.
    pub(crate) total: Family<KindLabel, Counter>,
    /// Final durations of stalls that ended.
    pub(crate) seconds: Histogram,
}

pub(crate) static STALLS: LazyLock<StallMetrics> = LazyLock::new(|| {
    let total: Family<KindLabel, Counter> = Family::default();
    // Every kind shows from the start, at 0: alerts need the series.
    for kind in [
        StallKind::Cpu,
        StallKind::Blocked,
        StallKind::Starved,
        StallKind::Unknown,
    ] {
        let _ = total.get_or_create(&KindLabel {
            kind: kind.as_str().to_owned(),
        });
    }
    StallMetrics {
        total,
        // 50 ms to about 3.5 minutes.
        seconds: Histogram::new(exponential_buckets(0.05, 2.0, 13)),
    }
});

/// The process's watchdog, if it runs: started by the first server that
/// wants one (there is one per process; later servers in the same process,
/// as in tests, share it with its first settings).
pub fn start(config: &WatchdogConfig) -> Option<Watchdog> {
    if !config.enabled {
        return None;
    }
    static WATCHDOG: OnceLock<Option<Watchdog>> = OnceLock::new();
    WATCHDOG
        .get_or_init(|| {
            let started = Watchdog::builder()
                .tick(config.tick)
                .threshold(config.threshold)
                .hold_threshold(config.hold_threshold)
                .preload_symbols(config.preload_symbols)
                .on_stall(|event| match event {
                    StallEvent::Detected(stall) => {
                        STALLS
                            .total
                            .get_or_create(&KindLabel {
                                kind: stall.kind.as_str().to_owned(),
                            })
                            .inc();
                    }
                    StallEvent::Ended(stall) => {
                        STALLS.seconds.observe(stall.duration.as_secs_f64());
                    }
                    StallEvent::Reported(_) => {}
                })
                .start();
            match started {
                Ok(w) => {
                    tracing::info!(
                        tick = ?config.tick,
                        threshold = ?config.threshold,
                        "stall watchdog on"
                    );
                    Some(w)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the stall watchdog could not start; stalls will not be reported");
                    None
                }
            }
        })
        .clone()
}

/// How often hung jobs are looked for.
const HUNG_CHECK: Duration = Duration::from_secs(1);

/// Logs each hung attempt once, and counts it, until the server stops.
pub(crate) async fn report_hung(app: Weak<App>) {
    if app
        .upgrade()
        .is_none_or(|a| a.queues.values().all(|q| q.config.warn_after.is_none()))
    {
        return;
    }
    let mut reported: HashSet<(i64, u32)> = HashSet::new();
    let mut tick = tokio::time::interval(HUNG_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        if app.is_shutting_down() {
            return;
        }
        let jobs = match crate::api::watch::underway(&app, None).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list underway jobs for the hung check");
                continue;
            }
        };
        let now: HashSet<(i64, u32)> = jobs.iter().map(|j| (j.id, j.attempt)).collect();
        reported.retain(|k| now.contains(k));
        for job in jobs.iter().filter(|j| j.hung) {
            if !reported.insert((job.id, job.attempt)) {
                continue;
            }
            app.metrics.job_hung(&job.queue);
            let doing = job.doing();
            tracing::warn!(
                job = job.id,
                queue = %job.queue,
                attempt = job.attempt,
                age = ?Duration::from_millis(job.age_ms),
                warn_after = ?Duration::from_millis(job.warn_after_ms.unwrap_or_default()),
                timeout = %job
                    .timeout_ms
                    .map_or_else(|| "none".to_owned(), |t| format!("{:?}", Duration::from_millis(t))),
                "job hung: underway past warn_after; {doing}"
            );
        }
    }
}

/// Starts the hung-job reporter for `app`.
pub(crate) fn spawn_hung_reporter(app: &Arc<App>) {
    tokio::spawn(report_hung(Arc::downgrade(app)));
}
