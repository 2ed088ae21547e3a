//! A stall watchdog for Tokio programs.
//!
//! When something blocks an async runtime's thread for longer than a
//! threshold, this crate says **which job** was running (its id and queue),
//! **which function** (a real stack trace of the blocked thread, naming the
//! blocking call and the first frame of your own code), and **why**: the
//! thread was busy on the CPU, blocked in a system call (named), or simply
//! not given a CPU by an overloaded host (*starved*, which a wall-clock
//! detector would wrongly report as a stall).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn demo() -> Result<(), rdq_watchdog::Error> {
//! let watchdog = rdq_watchdog::Watchdog::builder()
//!     .threshold(Duration::from_millis(500))
//!     .start()?;
//! // Watch a task: a poll of it that runs past the threshold is reported.
//! rdq_watchdog::spawn(async { /* ... */ }, "poller", 1);
//! // Later: what stalled, who is to blame, what runs now.
//! for stall in watchdog.stalls() {
//!     eprintln!("{stall}");
//! }
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! * Each watched poll stamps its thread's slot with a sequence
//!   number, the task's id and a coarse time: a few plain stores, no lock, no
//!   allocation, no clock read.
//! * A monitor OS thread ticks (100 ms by default), and when a
//!   poll has run longer than the threshold (500 ms), reads
//!   `/proc/self/task/TID/{syscall,wchan,schedstat}`, [classifies](classify)
//!   the stall and tells the [`on_stall`](Builder::on_stall) hooks; then it
//!   captures the thread's [stack] from a signal handler; a reporter
//!   thread resolves it and logs **one** `tracing` warning. When the poll
//!   ends it records the final duration and blames the culprit function
//!   (starved stalls blame nobody).
//! * The monitor measures its own lateness and does not count time when the
//!   whole host was paused.
//!
//! Watch futures with [`watch`] or [`spawn`]; `spawn_blocking` work is not
//! watched, and a task can be allowed to block ([`watch_blocking`]). An
//! `rdq::DispatchQueue` watches every job when built with its `watchdog`
//! feature. Pooled connections and transactions can be [hold-tracked](mod@hold).
//!
//! # Platforms
//!
//! Linux (x86-64, aarch64) gives everything. Elsewhere, stalls are still
//! detected and reported with their duration and job, with kind `unknown`
//! and a note that says what is missing.

pub mod classify;
mod clock;
pub mod hold;
mod monitor;
pub mod procfs;
mod slot;
pub mod stack;
mod stall;
mod task;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

pub use classify::StallKind;
pub use hold::{hold, Hold, HoldEvent, HoldInfo};

/// Every hold now, longest first, whether or not a watchdog runs (holds
/// are recorded by [`hold()`] either way; only a running watchdog reports
/// long ones).
pub fn holds() -> Vec<HoldInfo> {
    hold::holds()
}
pub use stack::Frame;
pub use stall::{CulpritStats, Stall};
pub use task::{intern, spawn, watch, watch_blocking, TaskDump, TaskHandle, Watched};

/// Why the watchdog could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A watchdog already runs in this process (there is one per process:
    /// the signal handler and slots are process-wide).
    AlreadyRunning,
    /// The tick or threshold cannot work.
    Config(String),
    /// The OS refused (thread, signal handler).
    Os(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::AlreadyRunning => f.write_str("a stall watchdog already runs in this process"),
            Error::Config(m) => write!(f, "invalid watchdog settings: {m}"),
            Error::Os(m) => write!(f, "the watchdog could not start: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// The watchdog's settings; see [`Builder`].
#[derive(Clone, Debug)]
pub struct Config {
    /// How often the monitor looks. Default 100 ms.
    pub tick: Duration,
    /// A poll longer than this is a stall. Default 500 ms.
    pub threshold: Duration,
    /// The signal that captures stacks. Default SIGURG (ignored by default,
    /// so a stray one does no harm).
    pub signal: i32,
    /// Longest wait for a stack capture. Default 50 ms.
    pub capture_timeout: Duration,
    /// Stalls kept for [`Watchdog::stalls`]. Default 256.
    pub history: usize,
    /// A hold longer than this is reported. Default 5 s.
    pub hold_threshold: Duration,
    /// Load the program's debug information at start and keep it. Default
    /// `false`: it is loaded for each stall whose stack names new addresses
    /// and dropped after (resolved frames are cached by address), so a
    /// program that never stalls never pays for it. Preloading makes the
    /// first report come sooner (resolving a stack without it takes a
    /// fraction of a second to a few seconds for a large binary, on the
    /// monitor thread) but keeps the parsed information in memory: about
    /// 140 MB for the `rdq` server binary with line tables.
    pub preload_symbols: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tick: Duration::from_millis(100),
            threshold: Duration::from_millis(500),
            signal: libc::SIGURG,
            capture_timeout: Duration::from_millis(50),
            history: 256,
            hold_threshold: Duration::from_secs(5),
            preload_symbols: false,
        }
    }
}

/// What a stall hook is told.
#[derive(Debug, Clone, Copy)]
pub enum StallEvent<'a> {
    /// A stall was found: its job, queue, thread, duration so far, kind and
    /// system call. Told as soon as the poll is seen past the threshold,
    /// before the stack is captured and resolved (which can take long the
    /// first time, while symbol tables load), so its `frames` are empty and
    /// its `blocking_call` and `culprit` are `None` here; the recorded stall
    /// ([`Watchdog::stalls`]), [`Reported`](StallEvent::Reported) and
    /// [`Ended`](StallEvent::Ended) have them.
    Detected(&'a Stall),
    /// The same stall once its stack is captured and resolved, with its
    /// blocking call and culprit (or a note that says why they are
    /// missing), at the same time as the watchdog's `tracing` warning.
    /// Resolving runs on a thread of its own (the monitor goes on looking
    /// meanwhile): milliseconds once symbols are loaded, longer the first
    /// time (see [`Config::preload_symbols`]). Always before `Ended`.
    Reported(&'a Stall),
    /// A reported stall ended: the stall with its stack, blocking call and
    /// culprit, and its final duration.
    Ended(&'a Stall),
}

/// Builds a [`Watchdog`].
#[must_use = "call .start() to run the watchdog"]
pub struct Builder {
    config: Config,
    hooks: Vec<monitor::Hook>,
    hold_hooks: Vec<hold::HoldHook>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// How often the monitor looks.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.config.tick = tick;
        self
    }

    /// A poll longer than this is a stall.
    pub fn threshold(mut self, threshold: Duration) -> Self {
        self.config.threshold = threshold;
        self
    }

    /// The signal that captures stacks (default SIGURG).
    pub fn signal(mut self, signal: i32) -> Self {
        self.config.signal = signal;
        self
    }

    /// Longest wait for a stack capture.
    pub fn capture_timeout(mut self, timeout: Duration) -> Self {
        self.config.capture_timeout = timeout;
        self
    }

    /// Stalls kept in memory.
    pub fn history(mut self, n: usize) -> Self {
        self.config.history = n;
        self
    }

    /// A hold longer than this is reported.
    pub fn hold_threshold(mut self, threshold: Duration) -> Self {
        self.config.hold_threshold = threshold;
        self
    }

    /// Load and keep the debug information from the start (see
    /// [`Config::preload_symbols`]): faster first report, more memory.
    pub fn preload_symbols(mut self, on: bool) -> Self {
        self.config.preload_symbols = on;
        self
    }

    /// Calls `hook` when a stall is found, when its stack is resolved and
    /// when it ends (see [`StallEvent`]; for metrics and logs):
    /// `Detected` on the monitor thread, the others on the watchdog's
    /// reporter thread, in order for each stall. Keep it quick: the
    /// monitor's next look waits for `Detected` hooks.
    pub fn on_stall(mut self, hook: impl Fn(StallEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.push(Box::new(hook));
        self
    }

    /// Calls `hook` on the monitor thread when a [hold](hold()) has lasted
    /// longer than the hold threshold, and when such a hold is released
    /// (see [`HoldEvent`]; for metrics and dashboards). Keep it quick.
    pub fn on_hold(mut self, hook: impl Fn(HoldEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hold_hooks.push(Box::new(hook));
        self
    }

    /// Starts the monitor thread (one per process).
    pub fn start(self) -> Result<Watchdog, Error> {
        let c = &self.config;
        if c.tick.is_zero() || c.threshold < c.tick {
            return Err(Error::Config(format!(
                "the tick ({:?}) must be longer than zero and not longer than the threshold ({:?})",
                c.tick, c.threshold
            )));
        }
        static RUNNING: AtomicBool = AtomicBool::new(false);
        if RUNNING.swap(true, Ordering::AcqRel) {
            return Err(Error::AlreadyRunning);
        }
        let mut notes = None;
        if stack::SUPPORTED {
            if let Err(e) = stack::install(c.signal) {
                RUNNING.store(false, Ordering::Release);
                return Err(Error::Os(e));
            }
        } else {
            notes = Some("stack capture is not available on this platform");
        }
        let shared = Arc::new(monitor::Shared {
            book: Mutex::new(stall::Book::new(c.history)),
            config: self.config,
            stop: AtomicBool::new(false),
            hooks: self.hooks,
            hold_hooks: self.hold_hooks,
            base_wall: SystemTime::now(),
            monitor: OnceLock::new(),
        });
        let spawn = |name: &str, f: fn(Arc<monitor::Shared>)| {
            let s = shared.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(s))
        };
        let threads = spawn("rdq-watchdog-clock", monitor::clock)
            .and_then(|clock| Ok(vec![clock, spawn("rdq-watchdog", monitor::run)?]))
            .map_err(|e| {
                shared.stop.store(true, Ordering::Release);
                RUNNING.store(false, Ordering::Release);
                Error::Os(format!("cannot start the monitor thread: {e}"))
            })?;
        if let Some(note) = notes {
            tracing::info!("{note}: stalls are reported without stack or cause");
        }
        Ok(Watchdog {
            inner: Arc::new(Inner {
                shared,
                threads: Mutex::new(threads),
                running: &RUNNING,
            }),
        })
    }
}

struct Inner {
    shared: Arc<monitor::Shared>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    running: &'static AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
        self.running.store(false, Ordering::Release);
    }
}

/// The running watchdog. Cheap to clone; the monitor stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Watchdog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Watchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watchdog")
            .field("config", &self.inner.shared.config)
            .finish_non_exhaustive()
    }
}

impl Watchdog {
    /// Starts building a watchdog.
    pub fn builder() -> Builder {
        Builder {
            config: Config::default(),
            hooks: Vec::new(),
            hold_hooks: Vec::new(),
        }
    }

    /// Its settings.
    pub fn config(&self) -> &Config {
        &self.inner.shared.config
    }

    /// Recent stalls, oldest first (at most `history`).
    pub fn stalls(&self) -> Vec<Stall> {
        self.inner
            .shared
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .recent()
    }

    /// Stalls per culprit function (finished stalls; starved ones excluded),
    /// most total time first.
    pub fn culprits(&self) -> Vec<CulpritStats> {
        self.inner
            .shared
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .culprits()
    }

    /// Stalls so far, per kind.
    pub fn counts(&self) -> std::collections::HashMap<StallKind, u64> {
        self.inner
            .shared
            .book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_kind()
    }

    /// Every watched task and job now: in a poll for how long, or waiting
    /// since when; polls; last poll's duration.
    pub fn dump(&self) -> Vec<TaskDump> {
        task::dump()
    }

    /// Every hold now, longest first.
    pub fn holds(&self) -> Vec<HoldInfo> {
        hold::holds()
    }

    /// **A test hook, not part of the API** (hidden from the docs; it may
    /// change or go at any time): captures the stack of thread `tid` of this
    /// process exactly as the monitor captures a stalled thread's (this
    /// watchdog's signal and capture timeout; one capture at a time, shared
    /// with the monitor), and returns how many frames the signal handler
    /// found (the interrupted instruction and the frame-pointer chain).
    /// The stall fixtures (`tests/stalls.rs`) race it against panics,
    /// allocation and sleeps.
    ///
    /// # Safety
    ///
    /// `tid` must be a thread of this process that stays alive until this
    /// returns, and `[stack_lo, stack_hi)` must be its stack, mapped: the
    /// signal handler reads that memory (as `pthread_attr_getstack` gives
    /// it for the thread).
    #[doc(hidden)]
    pub unsafe fn __capture_stack_for_tests(
        &self,
        tid: i32,
        stack_lo: usize,
        stack_hi: usize,
    ) -> Result<usize, String> {
        let config = &self.inner.shared.config;
        stack::capture(
            tid,
            (stack_lo, stack_hi),
            config.signal,
            config.capture_timeout,
        )
        .map(|raw| raw.frames_found())
    }
}
