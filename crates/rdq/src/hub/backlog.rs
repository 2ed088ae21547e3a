//! [`Backlog`]: the meter behind every consumer's depth, rates, catch-up
//! estimate, episodes and status.
//!
//! # Implementation details
//!
//! Counters are atomics, bumped with relaxed adds on the hot path; the
//! rates, episodes and status window each sit behind their own small mutex,
//! held for a few arithmetic operations and never across user code or
//! another lock. Time is `tokio::time::Instant`, so a paused test clock
//! drives all of it.
//!
//! **Arrival rate λ** is built from exponentially weighted rates: each
//! arrival adds `1/τ` to a sum that decays by `e^(-Δt/τ)`, so a steady
//! stream of λ per second converges to λ. Two of them: the long one (τ =
//! `arrival_horizon`, 10 s) is steady; the short one (τ = 1 s) notices a
//! burst within a second or two, where the long one would take twenty. λ is
//! the larger of the two, so a growing backlog is seen as one at once.
//!
//! Alone, such averages are slow to notice that a burst has *ended*: one
//! second after a 10 s burst of 120/s the long one still says about 70/s,
//! and a consumer that drains 20/s would be reported "not catching up" for
//! half a minute while it plainly is. So λ is also capped by the silence
//! since the last arrival: at most `2 / silence`. Under a Poisson stream of
//! rate λ a silence longer than `2/λ` has a probability of `e^-2` (14%), so
//! the cap rarely bites while arrivals go on, and it brings the estimate
//! down within a second or two once they stop. And so that one stray
//! message after a long silence does not bring the burst's rate back, each
//! arrival first lowers both averages to `4 / silence` (a silence that long
//! has a probability of 2% while a stream of that rate goes on).
//!
//! **Capacity μ** is `width / mean processing time`, the mean being an
//! exponentially weighted average over recent jobs (weight 0.1 per job):
//! what the consumer could do flat out. Not the finish rate: that equals λ
//! whenever the consumer idles, and says nothing about how fast a backlog
//! would drain.
//!
//! **Episodes** are tracked on every depth the owner observes (the hub
//! observes after each put and each start, a durable consumer once a
//! sample), so an episode's start, end and peak are as exact as those
//! observations.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::histogram::{Histogram, Recorder, EPISODE_BUCKETS, TIME_BUCKETS};
use super::status::{Sample, Status, Window};

/// Silence since the last arrival caps the arrival rate at this many
/// arrivals per silence (see the module docs).
const SILENCE_FACTOR: f64 = 2.0;

/// An arrival after a silence lowers the averages for good to this many
/// arrivals per silence (see the module docs).
const FORGET_FACTOR: f64 = 4.0;

/// Time constant of the short arrival average, seconds.
const SHORT_HORIZON: f64 = 1.0;

/// Weight of each finished job in the mean processing time.
const PROCESSING_WEIGHT: f64 = 0.1;

/// Settings of a [`Backlog`] meter: the status window, how often it is
/// sampled, the arrival rate's time constant, and how many episodes are
/// kept.
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogConfig {
    window: Duration,
    sample_every: Duration,
    arrival_horizon: Duration,
    episodes_kept: usize,
}

impl Default for BacklogConfig {
    /// A 60 s status window sampled every second, a 10 s arrival rate, the
    /// last 20 episodes.
    fn default() -> Self {
        BacklogConfig {
            window: Duration::from_secs(60),
            sample_every: Duration::from_secs(1),
            arrival_horizon: Duration::from_secs(10),
            episodes_kept: 20,
        }
    }
}

impl BacklogConfig {
    /// The status window (default 60 s); at least two samples long.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How often samples are taken (default 1 s; at least 1 ms).
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = every.max(Duration::from_millis(1));
        self
    }

    /// The arrival rate's time constant (default 10 s; at least 1 ms).
    pub fn arrival_horizon(mut self, horizon: Duration) -> Self {
        self.arrival_horizon = horizon.max(Duration::from_millis(1));
        self
    }

    /// How many finished episodes are kept (default 20).
    pub fn episodes_kept(mut self, n: usize) -> Self {
        self.episodes_kept = n;
        self
    }

    /// The sampling period.
    pub fn sample_period(&self) -> Duration {
        self.sample_every
    }

    /// Samples in one window: window ÷ period, rounded up, plus the first.
    fn window_samples(&self) -> usize {
        let n = self
            .window
            .as_nanos()
            .div_ceil(self.sample_every.as_nanos().max(1));
        usize::try_from(n).unwrap_or(usize::MAX - 1) + 1
    }
}

/// How a job ended, as a consumer's counters see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Finish {
    /// It succeeded.
    Ok,
    /// It returned an error.
    Failed,
    /// It ran past its timeout.
    TimedOut,
    /// It panicked.
    Panicked,
    /// It was cancelled.
    Cancelled,
    /// It never ran: the consumer stopped first.
    NotRun,
}

impl Finish {
    /// Every kind, in the order of [`Processed`]'s fields.
    pub const ALL: [Finish; 6] = [
        Finish::Ok,
        Finish::Failed,
        Finish::TimedOut,
        Finish::Panicked,
        Finish::Cancelled,
        Finish::NotRun,
    ];

    /// Lowercase name, for labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Ok => "ok",
            Finish::Failed => "failed",
            Finish::TimedOut => "timed_out",
            Finish::Panicked => "panicked",
            Finish::Cancelled => "cancelled",
            Finish::NotRun => "not_run",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Jobs processed, by how they ended (monotonic counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Processed {
    /// Succeeded.
    pub ok: u64,
    /// Returned an error.
    pub failed: u64,
    /// Ran past their timeout.
    pub timed_out: u64,
    /// Panicked.
    pub panicked: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Never ran because the consumer stopped.
    pub not_run: u64,
}

impl Processed {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.timed_out + self.panicked + self.cancelled + self.not_run
    }

    /// The count for one kind.
    pub fn get(&self, kind: Finish) -> u64 {
        match kind {
            Finish::Ok => self.ok,
            Finish::Failed => self.failed,
            Finish::TimedOut => self.timed_out,
            Finish::Panicked => self.panicked,
            Finish::Cancelled => self.cancelled,
            Finish::NotRun => self.not_run,
        }
    }
}

/// What the owner of a [`Backlog`] knows right now about its queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Jobs waiting (not started).
    pub depth: u64,
    /// Jobs running.
    pub in_flight: u64,
    /// The most that may run at once.
    pub width: u64,
    /// Launches are paused.
    pub paused: bool,
    /// How long the oldest waiting job has waited.
    pub oldest_pending_age: Option<Duration>,
}

/// A backlog episode: from depth leaving 0 until it returns to 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Episode {
    /// When depth left 0 (wall clock).
    pub began_at: SystemTime,
    /// When depth left 0, on the monotonic clock (Tokio's, so a paused test
    /// clock applies).
    pub began: Instant,
    /// How long it lasted (so far, for the current one).
    pub duration: Duration,
    /// The largest depth seen during it.
    pub peak_depth: u64,
}

/// Everything measured about one consumer, at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct BacklogSnapshot {
    /// Jobs waiting (not started).
    pub depth: u64,
    /// Jobs running.
    pub in_flight: u64,
    /// The most that may run at once.
    pub width: u64,
    /// Launches are paused.
    pub paused: bool,
    /// How long the oldest waiting job has waited.
    pub oldest_pending_age: Option<Duration>,
    /// Messages accepted into the queue, ever.
    pub enqueued: u64,
    /// Messages refused because the queue was full (or stopped), ever.
    pub rejected: u64,
    /// Older messages dropped to make room for newer ones, ever.
    pub dropped: u64,
    /// Jobs that started, ever.
    pub started: u64,
    /// Jobs finished, by how.
    pub processed: Processed,
    /// Arrival rate λ, per second (see [Backlog]'s module docs).
    pub arrival_rate: f64,
    /// Mean processing time of recent jobs; `None` before any finished.
    pub mean_processing_time: Option<Duration>,
    /// Capacity μ = width ÷ mean processing time, per second; 0 when
    /// paused, at width 0, or before any job finished.
    pub capacity: f64,
    /// Time to catch up, estimated as `depth / (μ − λ)`: zero when nothing
    /// waits, `None` when the consumer is not catching up (μ ≤ λ).
    pub catch_up: Option<Duration>,
    /// The status over the window.
    pub status: Status,
    /// The episode under way, if depth is above 0.
    pub current_episode: Option<Episode>,
    /// The last finished episodes, oldest first.
    pub episodes: Vec<Episode>,
    /// Durations of every finished episode.
    pub episode_seconds: Histogram,
    /// Time from enqueue to start.
    pub wait: Histogram,
    /// Time from start to finish.
    pub processing: Histogram,
}

#[derive(Debug)]
struct Rates {
    /// Decayed arrival sums, in arrivals per second, as of `last_arrival`:
    /// over `arrival_horizon`, and over [`SHORT_HORIZON`].
    arrival: f64,
    arrival_short: f64,
    last_arrival: Option<Instant>,
    /// Mean processing time of recent jobs, seconds.
    processing: Option<f64>,
}

#[derive(Debug)]
struct Current {
    began: Instant,
    began_at: SystemTime,
    peak: u64,
}

#[derive(Debug)]
struct Episodes {
    current: Option<Current>,
    recent: VecDeque<Episode>,
}

/// The meter of one consumer (or any queue): counters that only grow,
/// wait and processing histograms, the arrival rate and capacity, the
/// catch-up estimate, backlog episodes and the status window.
///
/// The owner reports events ([`enqueued`](Backlog::enqueued),
/// [`started`](Backlog::started), [`finished`](Backlog::finished), …),
/// observes depth when it changes ([`observe_depth`](Backlog::observe_depth))
/// and takes a [`sample`](Backlog::sample) once per period; a
/// [`snapshot`](Backlog::snapshot) combines all of it with the queue's
/// current [`Gauges`]. [`Hub`](crate::Hub) does all of this for its
/// consumers; a durable consumer (in `rdq-server`) feeds one from the store.
///
/// Nothing is reset on read, and no count is lost under concurrent owners
/// and readers. Counters are read in the reverse of the order a job passes
/// them (finished, then started, then enqueued), so a snapshot does not show
/// a job finished that it has not seen started. (The hub counts a message
/// enqueued right after its put succeeds, so for that instant a job may
/// already show as started: `started` can lead `enqueued` by at most the
/// number of concurrent publishers.)
#[derive(Debug)]
pub struct Backlog {
    config: BacklogConfig,
    enqueued: AtomicU64,
    rejected: AtomicU64,
    dropped: AtomicU64,
    started: AtomicU64,
    processed: [AtomicU64; 6],
    wait: Recorder,
    processing: Recorder,
    episode_seconds: Recorder,
    rates: Mutex<Rates>,
    episodes: Mutex<Episodes>,
    window: Mutex<Window>,
}

impl Default for Backlog {
    fn default() -> Self {
        Backlog::new(BacklogConfig::default())
    }
}

impl Backlog {
    /// A meter with nothing recorded.
    pub fn new(config: BacklogConfig) -> Self {
        Backlog {
            window: Mutex::new(Window::new(config.window_samples())),
            config,
            enqueued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            started: AtomicU64::new(0),
            processed: Default::default(),
            wait: Recorder::new(TIME_BUCKETS),
            processing: Recorder::new(TIME_BUCKETS),
            episode_seconds: Recorder::new(EPISODE_BUCKETS),
            rates: Mutex::new(Rates {
                arrival: 0.0,
                arrival_short: 0.0,
                last_arrival: None,
                processing: None,
            }),
            episodes: Mutex::new(Episodes {
                current: None,
                recent: VecDeque::new(),
            }),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &BacklogConfig {
        &self.config
    }

    /// `n` messages were accepted into the queue now.
    pub fn enqueued(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.enqueued.fetch_add(n, Ordering::Release);
        let now = Instant::now();
        let tau = self.config.arrival_horizon.as_secs_f64();
        let mut r = lock(&self.rates);
        let mut long = decayed(r.arrival, r.last_arrival, now, tau);
        let mut short = decayed(r.arrival_short, r.last_arrival, now, SHORT_HORIZON);
        if let Some(last) = r.last_arrival.filter(|last| now > *last) {
            let floor = FORGET_FACTOR / now.duration_since(last).as_secs_f64();
            long = long.min(floor);
            short = short.min(floor);
        }
        r.arrival = long + n as f64 / tau;
        r.arrival_short = short + n as f64 / SHORT_HORIZON;
        r.last_arrival = Some(now);
    }

    /// `n` messages were refused (the queue was full or stopped).
    pub fn rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` waiting messages were dropped to make room for newer ones.
    pub fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// A job started after waiting `wait` since it was enqueued.
    pub fn started(&self, wait: Duration) {
        self.started.fetch_add(1, Ordering::Release);
        self.wait.observe(wait);
    }

    /// A job ended; `run` is how long it ran, if it started.
    pub fn finished(&self, how: Finish, run: Option<Duration>) {
        if let Some(run) = run {
            self.processing.observe(run);
            let secs = run.as_secs_f64();
            let mut r = lock(&self.rates);
            r.processing = Some(match r.processing {
                Some(mean) => mean + PROCESSING_WEIGHT * (secs - mean),
                None => secs,
            });
        }
        self.processed[how.index()].fetch_add(1, Ordering::Release);
    }

    /// The queue's depth is now `depth`: starts, grows or ends an episode.
    pub fn observe_depth(&self, depth: u64) {
        self.observe_depth_with(|| depth);
    }

    /// Like [`observe_depth`](Backlog::observe_depth), reading the depth
    /// under the episode lock, so that concurrent observers are recorded in
    /// the order they read. `read` must be quick and must not call back
    /// into this meter.
    pub fn observe_depth_with(&self, read: impl FnOnce() -> u64) {
        let mut e = lock(&self.episodes);
        let depth = read();
        let now = Instant::now();
        match (&mut e.current, depth) {
            (None, 0) => {}
            (None, peak) => {
                e.current = Some(Current {
                    began: now,
                    began_at: SystemTime::now(),
                    peak,
                });
            }
            (Some(current), 0) => {
                let episode = Episode {
                    began_at: current.began_at,
                    began: current.began,
                    duration: now.saturating_duration_since(current.began),
                    peak_depth: current.peak,
                };
                e.current = None;
                self.episode_seconds.observe(episode.duration);
                if self.config.episodes_kept > 0 {
                    if e.recent.len() == self.config.episodes_kept {
                        e.recent.pop_front();
                    }
                    e.recent.push_back(episode);
                }
            }
            (Some(current), depth) => current.peak = current.peak.max(depth),
        }
    }

    /// Takes the periodic sample (once per [`sample_period`]): feeds the
    /// status window and observes the depth.
    ///
    /// [`sample_period`]: BacklogConfig::sample_period
    pub fn sample(&self, depth: u64, in_flight: u64) {
        let finished = self.processed_now().total();
        lock(&self.window).push(Sample {
            depth,
            in_flight,
            finished,
        });
        self.observe_depth(depth);
    }

    /// The status over the window.
    pub fn status(&self) -> Status {
        lock(&self.window).status()
    }

    fn processed_now(&self) -> Processed {
        let [ok, failed, timed_out, panicked, cancelled, not_run] =
            std::array::from_fn(|i| self.processed[i].load(Ordering::Acquire));
        Processed {
            ok,
            failed,
            timed_out,
            panicked,
            cancelled,
            not_run,
        }
    }

    /// The arrival rate now, per second.
    pub fn arrival_rate(&self) -> f64 {
        let now = Instant::now();
        let tau = self.config.arrival_horizon.as_secs_f64();
        let r = lock(&self.rates);
        let rate = decayed(r.arrival, r.last_arrival, now, tau).max(decayed(
            r.arrival_short,
            r.last_arrival,
            now,
            SHORT_HORIZON,
        ));
        match r.last_arrival {
            Some(last) if now > last => {
                rate.min(SILENCE_FACTOR / now.duration_since(last).as_secs_f64())
            }
            _ => rate,
        }
    }

    /// Everything, combined with the queue's gauges now.
    pub fn snapshot(&self, gauges: Gauges) -> BacklogSnapshot {
        // Read in the reverse of the order the owner bumps them.
        let processed = self.processed_now();
        let started = self.started.load(Ordering::Acquire);
        let enqueued = self.enqueued.load(Ordering::Acquire);
        let arrival_rate = self.arrival_rate();
        let mean = lock(&self.rates).processing;
        let capacity = match mean {
            Some(mean) if !gauges.paused && gauges.width > 0 => {
                gauges.width as f64 / mean.max(1e-9)
            }
            _ => 0.0,
        };
        let catch_up = if gauges.depth == 0 {
            Some(Duration::ZERO)
        } else if capacity > arrival_rate {
            Duration::try_from_secs_f64(gauges.depth as f64 / (capacity - arrival_rate)).ok()
        } else {
            None
        };
        let now = Instant::now();
        let (current_episode, episodes) = {
            let e = lock(&self.episodes);
            let current = e.current.as_ref().map(|c| Episode {
                began_at: c.began_at,
                began: c.began,
                duration: now.saturating_duration_since(c.began),
                peak_depth: c.peak,
            });
            (current, e.recent.iter().copied().collect())
        };
        BacklogSnapshot {
            depth: gauges.depth,
            in_flight: gauges.in_flight,
            width: gauges.width,
            paused: gauges.paused,
            oldest_pending_age: gauges.oldest_pending_age,
            enqueued,
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            started,
            processed,
            arrival_rate,
            mean_processing_time: mean.and_then(|m| Duration::try_from_secs_f64(m).ok()),
            capacity,
            catch_up,
            status: self.status(),
            current_episode,
            episodes,
            episode_seconds: self.episode_seconds.snapshot(),
            wait: self.wait.snapshot(),
            processing: self.processing.snapshot(),
        }
    }
}

/// An exponentially decayed sum as of `now`.
fn decayed(value: f64, since: Option<Instant>, now: Instant, tau: f64) -> f64 {
    match since {
        Some(since) => value * (-now.saturating_duration_since(since).as_secs_f64() / tau).exp(),
        None => 0.0,
    }
}

/// Locks, ignoring poison: the state behind these locks is plain numbers,
/// valid after any panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    fn gauges(depth: u64, width: u64) -> Gauges {
        Gauges {
            depth,
            in_flight: 0,
            width,
            paused: false,
            oldest_pending_age: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_converges_to_its_rate() {
        let b = Backlog::default();
        for _ in 0..600 {
            b.enqueued(1);
            advance(Duration::from_millis(100)).await; // 10/s for 60 s
        }
        let rate = b.arrival_rate();
        assert!((rate - 10.0).abs() < 0.5, "rate {rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_brings_the_rate_down_fast() {
        let b = Backlog::default();
        for _ in 0..1200 {
            b.enqueued(1);
            advance(Duration::from_micros(8333)).await; // 120/s for 10 s
        }
        assert!(b.arrival_rate() > 60.0);
        advance(Duration::from_secs(1)).await;
        let rate = b.arrival_rate();
        assert!(
            rate <= 2.0,
            "one silent second caps the rate at 2/s, got {rate}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_seen_within_two_seconds() {
        let b = Backlog::default();
        for _ in 0..240 {
            b.enqueued(1);
            advance(Duration::from_micros(8333)).await; // 120/s for 2 s
        }
        let rate = b.arrival_rate();
        assert!(rate > 100.0, "two seconds into 120/s, got {rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn one_message_after_a_long_silence_does_not_bring_a_burst_back() {
        let b = Backlog::default();
        for _ in 0..1200 {
            b.enqueued(1);
            advance(Duration::from_micros(8333)).await; // 120/s for 10 s
        }
        advance(Duration::from_secs(15)).await;
        b.enqueued(1);
        let rate = b.arrival_rate();
        assert!(rate < 1.5, "15 s of silence, then one message: got {rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_is_depth_over_spare_capacity() {
        let b = Backlog::default();
        b.finished(Finish::Ok, Some(Duration::from_millis(50)));
        let s = b.snapshot(gauges(100, 1));
        assert_eq!(s.capacity, 20.0);
        assert_eq!(s.catch_up, Some(Duration::from_secs(5)));
        assert_eq!(b.snapshot(gauges(0, 1)).catch_up, Some(Duration::ZERO));
        // Arrivals at 40/s outrun a capacity of 20/s.
        for _ in 0..400 {
            b.enqueued(1);
            advance(Duration::from_millis(25)).await;
        }
        assert_eq!(b.snapshot(gauges(100, 1)).catch_up, None);
        let paused = Gauges {
            paused: true,
            ..gauges(100, 1)
        };
        assert_eq!(b.snapshot(paused).capacity, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_episode_runs_from_depth_leaving_zero_to_its_return() {
        let b = Backlog::new(BacklogConfig::default().episodes_kept(2));
        b.observe_depth(0);
        b.observe_depth(3);
        advance(Duration::from_secs(2)).await;
        b.observe_depth(9);
        b.observe_depth(4);
        let s = b.snapshot(gauges(4, 1));
        let current = s.current_episode.unwrap();
        assert_eq!(
            (current.duration, current.peak_depth),
            (Duration::from_secs(2), 9)
        );
        advance(Duration::from_secs(1)).await;
        b.observe_depth(0);
        for _ in 0..2 {
            b.observe_depth(1);
            b.observe_depth(0);
        }
        let s = b.snapshot(gauges(0, 1));
        assert!(s.current_episode.is_none());
        assert_eq!(s.episodes.len(), 2, "only the last two are kept");
        assert_eq!(s.episode_seconds.count, 3);
        assert_eq!(s.episode_seconds.sum, Duration::from_secs(3));
    }
}
