//! Prometheus metrics (`GET /metrics`), named as DESIGN.md §8 says: prefix
//! `rdq_`, base units, `_total` only on counters, a `queue` label, never a
//! job id.
//!
//! Counters and histograms are updated as attempts end; gauges (depth,
//! underway, width, oldest pending age) are read from the queues when
//! scraped.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use rdq::hub::{BacklogSnapshot, Finish, Histogram as HubHistogram};

use crate::app::App;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    queue: String,
    outcome: String,
}

type Seconds = Gauge<f64, AtomicU64>;
type Buckets = fn() -> Histogram;

fn seconds_buckets() -> Histogram {
    // 1 ms to about 4.4 minutes.
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    jobs: Family<OutcomeLabel, Counter>,
    wait: Family<QueueLabel, Histogram, Buckets>,
    run: Family<QueueLabel, Histogram, Buckets>,
    depth: Family<QueueLabel, Gauge>,
    scheduled: Family<QueueLabel, Gauge>,
    underway: Family<QueueLabel, Gauge>,
    width: Family<QueueLabel, Gauge>,
    oldest: Family<QueueLabel, Seconds>,
    held: Family<QueueLabel, Seconds>,
    hung: Family<QueueLabel, Gauge>,
    hung_total: Family<QueueLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            jobs: Family::default(),
            wait: Family::new_with_constructor(seconds_buckets as Buckets),
            run: Family::new_with_constructor(seconds_buckets as Buckets),
            depth: Family::default(),
            scheduled: Family::default(),
            underway: Family::default(),
            width: Family::default(),
            oldest: Family::default(),
            held: Family::default(),
            hung: Family::default(),
            hung_total: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "rdq_jobs",
            "Attempts ended, by outcome: succeeded, failed (will retry), dead, cancelled, snoozed, released",
            m.jobs.clone(),
        );
        registry.register_with_unit(
            "rdq_job_wait",
            "Time from when a job could run to its launch",
            Unit::Seconds,
            m.wait.clone(),
        );
        registry.register_with_unit(
            "rdq_job_run",
            "Time an attempt ran",
            Unit::Seconds,
            m.run.clone(),
        );
        registry.register(
            "rdq_queue_depth",
            "Jobs pending (ready to run)",
            m.depth.clone(),
        );
        registry.register(
            "rdq_queue_scheduled",
            "Jobs waiting for a later time (scheduled or awaiting a retry)",
            m.scheduled.clone(),
        );
        registry.register("rdq_queue_underway", "Jobs underway", m.underway.clone());
        registry.register(
            "rdq_queue_width",
            "Most jobs underway at once",
            m.width.clone(),
        );
        registry.register_with_unit(
            "rdq_queue_oldest_pending_age",
            "How long the longest-waiting pending job has been ready",
            Unit::Seconds,
            m.oldest.clone(),
        );
        registry.register_with_unit(
            "rdq_queue_held",
            "How much longer launches are held because the target throttled the queue",
            Unit::Seconds,
            m.held.clone(),
        );
        registry.register(
            "rdq_queue_hung",
            "Jobs underway longer than their queue's warn_after",
            m.hung.clone(),
        );
        registry.register(
            "rdq_jobs_hung",
            "Attempts that ran past their queue's warn_after (each counted once)",
            m.hung_total.clone(),
        );
        let stalls = &crate::watch::STALLS;
        registry.register(
            "rdq_stalls",
            "Polls that held a runtime thread past the watchdog's threshold, by kind: cpu, blocked, starved, unknown",
            stalls.total.clone(),
        );
        registry.register_with_unit(
            "rdq_stall",
            "How long stalls held their thread (observed when they end)",
            Unit::Seconds,
            stalls.seconds.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records an attempt's end.
    pub fn attempt_ended(&self, queue: &str, outcome: &str, wait: Duration, run: Option<Duration>) {
        let q = QueueLabel {
            queue: queue.to_owned(),
        };
        self.jobs
            .get_or_create(&OutcomeLabel {
                queue: queue.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(run) = run {
            self.wait.get_or_create(&q).observe(wait.as_secs_f64());
            self.run.get_or_create(&q).observe(run.as_secs_f64());
        }
    }

    /// Counts a hung attempt (once per attempt).
    pub fn job_hung(&self, queue: &str) {
        self.hung_total
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .inc();
    }

    /// Refreshes the gauges from the queues and renders the text format.
    pub async fn render(&self, app: &App) -> Result<String, rdq_store::DurableError> {
        let underway = crate::api::watch::underway(app, None).await?;
        for (name, q) in &app.queues {
            let hung = underway
                .iter()
                .filter(|j| j.hung && &j.queue == name)
                .count();
            let label = QueueLabel {
                queue: name.clone(),
            };
            let counts = q.queue.counts().await?;
            let count = |s| counts.get(&s).copied().unwrap_or(0) as i64;
            self.depth
                .get_or_create(&label)
                .set(count(rdq_store::JobState::Pending));
            self.scheduled
                .get_or_create(&label)
                .set(count(rdq_store::JobState::Scheduled) + count(rdq_store::JobState::Failed));
            self.underway
                .get_or_create(&label)
                .set(count(rdq_store::JobState::Underway));
            self.width
                .get_or_create(&label)
                .set(q.queue.settings().width as i64);
            let now = q.queue.clock().now();
            let oldest = q
                .queue
                .oldest_pending()
                .await?
                .map(|t| now.since(t).as_secs_f64());
            self.oldest.get_or_create(&label).set(oldest.unwrap_or(0.0));
            let held = q.queue.held_until().map(|t| t.since(now).as_secs_f64());
            self.held.get_or_create(&label).set(held.unwrap_or(0.0));
            self.hung.get_or_create(&label).set(hung as i64);
            let _ = self.hung_total.get_or_create(&label);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        if !app.consumers.is_empty() {
            let mut snapshots = Vec::with_capacity(app.consumers.len());
            for c in &app.consumers {
                snapshots.push((c.name(), c.snapshot().await?));
            }
            // The consumers' families go before the closing `# EOF`.
            let body_end = text.rfind("# EOF").unwrap_or(text.len());
            text.truncate(body_end);
            consumer_metrics(&mut text, &snapshots);
            text.push_str("# EOF\n");
        }
        Ok(text)
    }
}

/// A consumer gauge: name, whether in seconds, help, and its value.
type GaugeRow = (
    &'static str,
    bool,
    &'static str,
    fn(&BacklogSnapshot) -> f64,
);
/// A consumer counter: name (without `_total`), help, and its value.
type CounterRow = (&'static str, &'static str, fn(&BacklogSnapshot) -> u64);
/// A consumer histogram: name, help, and which of the snapshot's.
type HistogramRow = (
    &'static str,
    &'static str,
    fn(&BacklogSnapshot) -> &HubHistogram,
);

/// Writes the consumers' families (label `consumer`) in the OpenMetrics
/// text format, from their backlog snapshots: the gauges as of now, the
/// counters and histograms as the meters hold them (monotonic, never reset).
fn consumer_metrics(out: &mut String, snaps: &[(&str, BacklogSnapshot)]) {
    use std::fmt::Write as _;
    let family = |out: &mut String, name: &str, kind: &str, unit: bool, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if unit {
            let _ = writeln!(out, "# UNIT {name} seconds");
        }
    };
    let gauges: [GaugeRow; 6] = [
        ("rdq_consumer_depth", false, "Messages waiting in the consumer's queue (pending jobs, every node)", |b| b.depth as f64),
        ("rdq_consumer_in_flight", false, "Messages being processed (underway jobs, every node)", |b| b.in_flight as f64),
        ("rdq_consumer_width", false, "Most messages the consumer processes at once", |b| b.width as f64),
        ("rdq_consumer_oldest_pending_age_seconds", true, "How long the consumer's longest-waiting message has waited (0 when none)", |b| {
            b.oldest_pending_age.map_or(0.0, |d| d.as_secs_f64())
        }),
        ("rdq_consumer_catch_up_seconds", true, "Estimated time to empty the backlog, depth / (capacity - arrival rate); +Inf when not catching up", |b| {
            b.catch_up.map_or(f64::INFINITY, |d| d.as_secs_f64())
        }),
        ("rdq_consumer_arrival_rate", false, "Messages arriving per second (about the last 10 s)", |b| b.arrival_rate),
    ];
    for (name, unit, help, value) in gauges {
        family(out, name, "gauge", unit, help);
        for (consumer, b) in snaps {
            let _ = writeln!(
                out,
                "{name}{{consumer=\"{consumer}\"}} {}",
                number(value(b))
            );
        }
    }
    family(
        out,
        "rdq_consumer_status",
        "gauge",
        false,
        "The consumer's status over its status window: 1 for the current one (ok, warn, stall, stop), 0 for the others",
    );
    for (consumer, b) in snaps {
        for status in ["ok", "warn", "stall", "stop"] {
            let on = b.status.as_str().eq_ignore_ascii_case(status);
            let _ = writeln!(
                out,
                "rdq_consumer_status{{consumer=\"{consumer}\",status=\"{status}\"}} {}",
                u8::from(on)
            );
        }
    }
    let counters: [CounterRow; 3] = [
        (
            "rdq_consumer_enqueued",
            "Messages delivered to the consumer by this process",
            |b| b.enqueued,
        ),
        (
            "rdq_consumer_rejected",
            "Messages the consumer refused because it was full",
            |b| b.rejected,
        ),
        (
            "rdq_consumer_dropped",
            "Waiting messages dropped for newer ones (overflow = drop_oldest)",
            |b| b.dropped,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", false, help);
        for (consumer, b) in snaps {
            let _ = writeln!(out, "{name}_total{{consumer=\"{consumer}\"}} {}", value(b));
        }
    }
    family(
        out,
        "rdq_consumer_processed",
        "counter",
        false,
        "Attempts of the consumer's jobs ended in this process, by outcome: ok, failed, timed_out, panicked, cancelled, not_run",
    );
    for (consumer, b) in snaps {
        for kind in Finish::ALL {
            let _ = writeln!(
                out,
                "rdq_consumer_processed_total{{consumer=\"{consumer}\",outcome=\"{}\"}} {}",
                kind.as_str(),
                b.processed.get(kind)
            );
        }
    }
    let histograms: [HistogramRow; 3] = [
        (
            "rdq_backlog_episode_seconds",
            "How long the consumer's backlog episodes lasted (depth leaving 0 until it is 0 again)",
            |b| &b.episode_seconds,
        ),
        (
            "rdq_consumer_wait_seconds",
            "Time the consumer's messages waited before processing",
            |b| &b.wait,
        ),
        (
            "rdq_consumer_processing_seconds",
            "Time the consumer took per message",
            |b| &b.processing,
        ),
    ];
    for (name, help, value) in histograms {
        family(out, name, "histogram", true, help);
        for (consumer, b) in snaps {
            let h = value(b);
            let cumulative = h.cumulative();
            for (i, count) in cumulative.iter().enumerate() {
                let le = h
                    .bounds
                    .get(i)
                    .map_or("+Inf".to_owned(), |b| format!("{b:?}"));
                let _ = writeln!(
                    out,
                    "{name}_bucket{{consumer=\"{consumer}\",le=\"{le}\"}} {count}"
                );
            }
            let _ = writeln!(out, "{name}_count{{consumer=\"{consumer}\"}} {}", h.count);
            let _ = writeln!(
                out,
                "{name}_sum{{consumer=\"{consumer}\"}} {}",
                number(h.sum.as_secs_f64())
            );
        }
    }
}

/// A sample value as OpenMetrics writes it: `+Inf`, `NaN`, or the number
/// in plain decimal (`3`, `0.25`; never an exponent).
fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}
