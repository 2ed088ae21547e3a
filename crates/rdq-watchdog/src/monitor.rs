//! The monitor: an OS thread (never a task of the runtime it watches) that
//! ticks, publishes the coarse clock, and looks at every thread's slot.
//!
//! # Each tick
//!
//! 1. **The clock.** A small thread of its own publishes monitor time each
//!    tick (so time goes on while the monitor captures a stack). If its tick
//!    came much later than asked (the host paused, or could not run it),
//!    monitor time advances by one tick only: the gap is nobody's stall.
//!    Then it wakes the monitor, which looks right after each new time (so
//!    a poll is seen past the threshold as soon as the clock says so, not up
//!    to a tick later, as two threads ticking each on its own would).
//! 2. **Every slot.** A thread in a poll it had not seen before gets a
//!    scheduler baseline (`schedstat`). A poll still running, older than the
//!    threshold, and not yet reported, is a stall: the monitor reads the
//!    thread's system call and wait channel and classifies the window since
//!    the baseline (a few reads of `/proc`), and calls the hooks with
//!    [`StallEvent::Detected`] at once; then it captures the stack (a
//!    signal to the thread, which copies its frame addresses) and records
//!    the stall. The **reporter** thread resolves the stack (which can take
//!    long the first time, while symbol tables load: neither detection nor
//!    the next tick waits for it), names the blocking call and culprit,
//!    logs **one** warning and calls `Reported` hooks. A reported poll
//!    that has ended gets its final duration, and its culprit's table
//!    entry, from the reporter too (in order, after its stack).
//! 3. **Holds** past their threshold are reported, once each, and so are
//!    their releases.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, SystemTime};

use crate::classify::{classify, StallKind};
use crate::hold::{self, HoldHook};
use crate::procfs::{self, SchedStat};
use crate::slot::{Slot, SLOTS};
use crate::stack::{self, Symbolizer};
use crate::stall::{Book, Stall};
use crate::{clock, task, Config, StallEvent};

/// What the monitor remembers of one slot between ticks.
#[derive(Debug)]
struct Track {
    seq: u64,
    baseline: Option<SchedStat>,
    baseline_at: Instant,
    /// The stall reported for this poll, if any, and when the poll began.
    reported: Option<(u64, u64)>,
}

pub(crate) type Hook = Box<dyn Fn(StallEvent<'_>) + Send + Sync>;

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) book: Mutex<Book>,
    pub(crate) stop: AtomicBool,
    pub(crate) hooks: Vec<Hook>,
    pub(crate) hold_hooks: Vec<HoldHook>,
    /// Wall-clock time at monitor time zero.
    pub(crate) base_wall: SystemTime,
    /// The monitor thread, for the clock to wake after each tick.
    pub(crate) monitor: OnceLock<Thread>,
}

/// Publishes monitor time every tick, skipping gaps when the host paused.
pub(crate) fn clock(shared: Arc<Shared>) {
    let tick = shared.config.tick;
    // A sleep that overshoots by this much is the host's delay, not a job's.
    let late = tick.max(shared.config.threshold / 2);
    let mut virtual_us: u64 = 1;
    clock::publish(virtual_us);
    while !shared.stop.load(Ordering::Acquire) {
        let asleep = Instant::now();
        std::thread::sleep(tick);
        let slept = asleep.elapsed();
        let advance = if slept > tick + late {
            tracing::debug!(late_by = ?(slept - tick), "the watchdog's clock was held up; not counting the gap");
            tick
        } else {
            slept
        };
        virtual_us += advance.as_micros() as u64;
        clock::publish(virtual_us);
        if let Some(monitor) = shared.monitor.get() {
            monitor.unpark();
        }
    }
}

/// What the monitor hands the reporter thread, in order.
enum Report {
    /// A stall's stack as captured (or why there is none), to resolve.
    Stack {
        seq: u64,
        raw: Result<stack::Raw, String>,
    },
    /// A reported stall's poll ended after `duration`.
    End { seq: u64, duration: Duration },
}

/// Resolves stacks and finishes stalls, off the monitor thread: resolving
/// can take long (the first time, or each time when symbols are not kept
/// loaded), and the monitor must go on ticking meanwhile, or it would miss
/// the next stall. Stalls are told in order: a stall's `Reported` always
/// comes before its `Ended`.
fn report(shared: Arc<Shared>, reports: std::sync::mpsc::Receiver<Report>) {
    let symbolizer = Symbolizer::new(shared.config.preload_symbols);
    for report in reports {
        match report {
            Report::Stack { seq, raw } => {
                let (frames, note) = match raw {
                    Ok(raw) => (symbolizer.frames(&raw), None),
                    Err(note) => (Vec::new(), Some(note)),
                };
                let (blocking_call, culprit) = stack::name_frames(&frames);
                let stall = shared
                    .book
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .update(seq, frames, blocking_call, culprit, note);
                let Some(stall) = stall else { continue };
                tracing::warn!(
                    job = stall.job,
                    queue = stall.label.as_deref().unwrap_or("-"),
                    kind = %stall.kind,
                    thread = %stall.thread,
                    syscall = stall.syscall.as_deref().unwrap_or("-"),
                    blocking_call = stall.blocking_call.as_deref().unwrap_or("-"),
                    culprit = stall.culprit.as_deref().unwrap_or("-"),
                    "event loop stalled for {:?}",
                    stall.duration
                );
                for hook in &shared.hooks {
                    hook(StallEvent::Reported(&stall));
                }
            }
            Report::End { seq, duration } => {
                let done = shared
                    .book
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .finish(seq, duration);
                if let Some(stall) = done {
                    tracing::info!(
                        job = stall.job, queue = stall.label.as_deref().unwrap_or("-"), kind = %stall.kind,
                        duration = ?stall.duration, culprit = stall.culprit.as_deref().unwrap_or("-"),
                        "stall ended"
                    );
                    for hook in &shared.hooks {
                        hook(StallEvent::Ended(&stall));
                    }
                }
            }
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>) {
    let config = shared.config.clone();
    let (reports, inbox) = std::sync::mpsc::channel();
    let reporter = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("rdq-watchdog-report".into())
            .spawn(move || report(shared, inbox))
    };
    let reporter = match reporter {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "the watchdog cannot start its reporter thread; stalls are not reported");
            return;
        }
    };
    let mut tracks: HashMap<usize, Track> = HashMap::new();
    let mut next_stall = 1u64;
    if config.preload_symbols {
        // Load symbol tables now, on a thread of their own (the monitor must
        // tick meanwhile), not at the first stall.
        let _ = std::thread::Builder::new()
            .name("rdq-watchdog-symbols".into())
            .spawn(stack::warm_up);
    }
    hold::set_monitored(true);
    let _ = shared.monitor.set(std::thread::current());
    while !shared.stop.load(Ordering::Acquire) {
        // Until the clock's next tick (a wake-up saved while the monitor was
        // busy returns at once); a clock held up does not hold up the rest.
        std::thread::park_timeout(config.tick * 2);
        let now = Instant::now();
        let virtual_us = clock::now();

        let slots: Vec<&'static Slot> = SLOTS.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for slot in slots {
            let key = slot as *const Slot as usize;
            let seq = slot.seq.load(Ordering::Acquire);
            let alive = slot.alive.load(Ordering::Acquire);
            let in_poll = alive && seq & 1 == 1;
            let track = tracks.get(&key);
            // A reported poll that ended (or whose thread died): final word.
            if let Some(t) = track {
                if t.seq != seq || !in_poll {
                    if let Some((stall_seq, start)) = t.reported {
                        // The poll wrote its end time if it saw the flag;
                        // one that ended as the flag was set did not (the
                        // value left is an earlier poll's, before `start`):
                        // then it ended since the last tick.
                        let stamped = slot.stalled_end.load(Ordering::Relaxed);
                        let end = if alive && stamped > start {
                            stamped
                        } else {
                            virtual_us
                        };
                        let duration = Duration::from_micros(end.max(start).saturating_sub(start));
                        let _ = reports.send(Report::End {
                            seq: stall_seq,
                            duration,
                        });
                    }
                    tracks.remove(&key);
                }
            }
            if !in_poll {
                continue;
            }
            let tid = slot.tid.load(Ordering::Relaxed);
            let track = tracks.entry(key).or_insert_with(|| Track {
                seq,
                baseline: procfs::schedstat(tid),
                baseline_at: now,
                reported: None,
            });
            if track.reported.is_some() || slot.allow_block.load(Ordering::Relaxed) {
                continue;
            }
            let start = slot.start.load(Ordering::Relaxed);
            let running = Duration::from_micros(virtual_us.saturating_sub(start));
            if running <= config.threshold {
                continue;
            }
            // Ask the thread to note when this poll ends.
            slot.flagged.store(seq, Ordering::Relaxed);
            // Who, for how long, and why: known at once, and told at once.
            let stall = examine(&shared, slot, track, running, next_stall);
            for hook in &shared.hooks {
                hook(StallEvent::Detected(&stall));
            }
            // Where: the stack, captured while the poll still runs, and
            // resolved by the reporter thread.
            let raw = capture(&config, slot, track, stall.tid);
            shared
                .book
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(stall);
            let _ = reports.send(Report::Stack {
                seq: next_stall,
                raw,
            });
            track.reported = Some((next_stall, start));
            next_stall += 1;
        }
        hold::check(config.hold_threshold, &shared.hold_hooks);
    }
    // Releases from now on are logged by the threads that drop the holds;
    // the ones dropped until now are reported here.
    hold::set_monitored(false);
    hold::check(config.hold_threshold, &shared.hold_hooks);
    // The reporter finishes what it was handed, then stops.
    drop(reports);
    let _ = reporter.join();
}

/// What a stall is, read now: everything but its stack.
fn examine(shared: &Shared, slot: &Slot, track: &Track, running: Duration, seq: u64) -> Stall {
    let tid = slot.tid.load(Ordering::Relaxed);
    let start = slot.start.load(Ordering::Relaxed);
    let job = slot.task.load(Ordering::Relaxed);
    let label = task::label(slot.label.load(Ordering::Relaxed)).map(str::to_owned);
    let thread = slot.name.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let syscall = procfs::syscall(tid).flatten();
    let wchan = procfs::wchan(tid);
    let mut notes = Vec::new();
    let (kind, ran, waited) = match (track.baseline, procfs::schedstat(tid)) {
        (Some(before), Some(after)) => (
            classify(before, after, track.baseline_at.elapsed()),
            after.run.saturating_sub(before.run),
            after.wait.saturating_sub(before.wait),
        ),
        _ => {
            notes.push(
                "no scheduler accounting (/proc/self/task/TID/schedstat) on this system".to_owned(),
            );
            (StallKind::Unknown, Duration::ZERO, Duration::ZERO)
        }
    };
    Stall {
        seq,
        job,
        label,
        thread,
        tid,
        started_at: shared.base_wall + Duration::from_micros(start),
        duration: running,
        finished: false,
        kind,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        syscall,
        wchan,
        ran,
        waited,
        frames: Vec::new(),
        blocking_call: None,
        culprit: None,
    }
}

/// Captures the stalled thread's stack (the raw addresses), or says why
/// there is none.
fn capture(config: &Config, slot: &Slot, track: &Track, tid: i32) -> Result<stack::Raw, String> {
    if !stack::SUPPORTED {
        return Err("stack capture needs Linux on x86-64 or aarch64".to_owned());
    }
    let bounds = (
        slot.stack_lo.load(Ordering::Relaxed),
        slot.stack_hi.load(Ordering::Relaxed),
    );
    match stack::capture(tid, bounds, config.signal, config.capture_timeout) {
        // The stack is this poll's only if the poll was still running
        // after the capture.
        Ok(_) if slot.seq.load(Ordering::Acquire) != track.seq => {
            Err("the poll ended before its stack was captured".to_owned())
        }
        Ok(raw) => Ok(raw),
        Err(e) => Err(format!("no stack: {e}")),
    }
}
