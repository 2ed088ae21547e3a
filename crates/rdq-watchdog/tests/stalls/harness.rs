//! The harness: the watchdog and its hooks, one case at a time, the report.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use rdq_watchdog::{HoldEvent, HoldInfo, Stall, StallEvent, StallKind, Watchdog};

use crate::{
    BLOCKING_SINCE, HOLD_THRESHOLD, LATENCY_BOUND, QUEUE, QUIET_WAIT, REPORT_WAIT, STALL,
    THRESHOLD, TICK,
};

/// A hook call, as the hooks saw it.
pub(crate) struct Seen {
    pub(crate) at: Instant,
    pub(crate) ended: bool,
    pub(crate) stall: Stall,
}

pub(crate) struct SeenHold {
    pub(crate) at: Instant,
    pub(crate) released: bool,
    pub(crate) info: HoldInfo,
}

/// One line of the summary.
#[derive(Default)]
pub(crate) struct Row {
    pub(crate) case: &'static str,
    pub(crate) latency: Option<Duration>,
    pub(crate) kind: String,
    pub(crate) duration: Option<Duration>,
    pub(crate) syscall: String,
    pub(crate) blocking_call: String,
    pub(crate) culprit: String,
    pub(crate) failures: Vec<String>,
}

impl Row {
    pub(crate) fn new(case: &'static str) -> Row {
        Row {
            case,
            kind: "-".into(),
            syscall: "-".into(),
            blocking_call: "-".into(),
            culprit: "-".into(),
            ..Row::default()
        }
    }

    pub(crate) fn check(&mut self, ok: bool, failure: impl FnOnce() -> String) {
        if !ok {
            self.failures.push(failure());
        }
    }

    /// Fills the columns from a finished stall.
    pub(crate) fn describe(&mut self, stall: &Stall) {
        let or_dash = |s: Option<&str>| s.unwrap_or("-").to_owned();
        self.kind = stall.kind.to_string();
        self.duration = Some(stall.duration);
        self.syscall = or_dash(stall.syscall.as_deref());
        self.blocking_call = or_dash(stall.blocking_call.as_deref());
        self.culprit = or_dash(stall.culprit.as_deref());
    }
}

pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or_else(
        || "-".into(),
        |d| format!("{:.0} ms", d.as_secs_f64() * 1e3),
    )
}

/// What a stalling case expects.
pub(crate) struct Expect {
    pub(crate) kind: StallKind,
    pub(crate) syscall: Option<&'static str>,
    /// A word the blocking call's name holds.
    pub(crate) blocking_call: Option<&'static str>,
    pub(crate) culprit: Culprit,
    /// A phrase the note holds.
    pub(crate) note: Option<&'static str>,
    /// How long the stall lasts, at least and at most.
    pub(crate) lasts: (Duration, Duration),
}

pub(crate) enum Culprit {
    /// This function, by its full name.
    Named(&'static str),
    /// Whatever the stack says (or nothing).
    Any,
    /// None, and no stack either.
    Nothing,
}

/// How long a fixture that blocks for [`STALL`] is seen to stall (the
/// watchdog's clock has tick resolution, and may lag a little more on a
/// busy host).
pub(crate) const ABOUT_STALL: (Duration, Duration) = (
    Duration::from_millis(STALL.as_millis() as u64 - 4 * TICK.as_millis() as u64),
    Duration::from_millis(3 * STALL.as_millis() as u64),
);

pub(crate) struct Suite {
    pub(crate) watchdog: Watchdog,
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) stalls: Receiver<Seen>,
    pub(crate) holds: Receiver<SeenHold>,
    pub(crate) next_job: u64,
    pub(crate) rows: Vec<Row>,
    pub(crate) verbose: bool,
}

impl Suite {
    pub(crate) fn new() -> Suite {
        let (stall_tx, stalls) = mpsc::channel();
        let (hold_tx, holds) = mpsc::channel();
        let watchdog = Watchdog::builder()
            .tick(TICK)
            .threshold(THRESHOLD)
            .hold_threshold(HOLD_THRESHOLD)
            .on_stall(move |event| {
                let at = Instant::now();
                let (ended, stall) = match event {
                    StallEvent::Detected(s) => (false, s),
                    StallEvent::Ended(s) => (true, s),
                    // Detection latency is measured at `Detected`; the
                    // stack is checked on the finished stall.
                    StallEvent::Reported(_) => return,
                };
                let _ = stall_tx.send(Seen {
                    at,
                    ended,
                    stall: stall.clone(),
                });
            })
            .on_hold(move |event| {
                let at = Instant::now();
                let (released, info) = match event {
                    HoldEvent::Held(h) => (false, h),
                    HoldEvent::Released(h) => (true, h),
                };
                let _ = hold_tx.send(SeenHold {
                    at,
                    released,
                    info: info.clone(),
                });
            })
            .start()
            .expect("the watchdog starts");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Suite {
            watchdog,
            rt,
            stalls,
            holds,
            next_job: 1,
            rows: Vec::new(),
            verbose: std::env::var_os("RDQ_STALL_VERBOSE").is_some_and(|v| v == "1"),
        }
    }

    pub(crate) fn job(&mut self) -> u64 {
        self.next_job += 1;
        self.next_job
    }

    /// Runs `fixture` as watched job `job` on the runtime thread.
    pub(crate) fn run_job(&self, job: u64, fixture: impl FnOnce()) {
        *BLOCKING_SINCE.lock().unwrap() = None;
        self.rt
            .block_on(rdq_watchdog::watch(async move { fixture() }, QUEUE, job));
    }

    /// Reports that came although none was due.
    pub(crate) fn unexpected(&self, row: &mut Row) {
        while let Ok(seen) = self.stalls.try_recv() {
            row.failures.push(format!(
                "unexpected report ({}): {}",
                if seen.ended { "ended" } else { "detected" },
                seen.stall
            ));
        }
    }

    /// The `Detected` and `Ended` calls for `job`.
    pub(crate) fn reports_of(&self, job: u64, row: &mut Row) -> Option<(Seen, Seen)> {
        let mut detected = None;
        let deadline = Instant::now() + REPORT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stalls.recv_timeout(left) {
                Ok(seen) if seen.stall.job != job => row.failures.push(format!(
                    "a report for another job ({}): {}",
                    seen.stall.job, seen.stall
                )),
                Ok(seen) if !seen.ended => {
                    if detected.is_some() {
                        row.failures.push(format!("detected twice: {}", seen.stall));
                    }
                    detected = Some(seen);
                }
                Ok(seen) => match detected {
                    Some(d) => return Some((d, seen)),
                    None => {
                        row.failures
                            .push(format!("ended without being detected: {}", seen.stall));
                        return None;
                    }
                },
                Err(RecvTimeoutError::Timeout) => {
                    row.failures.push(format!(
                        "no {} report within {REPORT_WAIT:?}",
                        if detected.is_some() {
                            "Ended"
                        } else {
                            "Detected"
                        }
                    ));
                    return None;
                }
                Err(RecvTimeoutError::Disconnected) => unreachable!("the watchdog lives"),
            }
        }
    }

    /// Checks one reported stall: its latency, and what the report says.
    pub(crate) fn check_stall(&self, row: &mut Row, job: u64, expect: &Expect) -> Option<Stall> {
        let since = *BLOCKING_SINCE.lock().unwrap();
        let (detected, ended) = self.reports_of(job, row)?;
        let since = since.expect("the fixture marked when it began to block");
        let latency = detected.at.saturating_duration_since(since);
        row.latency = Some(latency);
        let stall = ended.stall;
        row.describe(&stall);
        if self.verbose {
            println!("{stall}");
        }
        row.check(latency <= LATENCY_BOUND, || {
            format!("detected after {latency:?}, more than {LATENCY_BOUND:?}")
        });
        row.check(detected.stall.kind == stall.kind, || {
            "Detected and Ended disagree on the kind".into()
        });
        row.check(
            stall.job == job && stall.label.as_deref() == Some(QUEUE),
            || {
                format!(
                    "job {} of {:?}, not job {job} of {QUEUE}",
                    stall.job, stall.label
                )
            },
        );
        row.check(stall.kind == expect.kind, || {
            format!("kind {}, not {}", stall.kind, expect.kind)
        });
        if let Some(call) = expect.syscall {
            row.check(stall.syscall.as_deref() == Some(call), || {
                format!("system call {:?}, not {call}", stall.syscall)
            });
        }
        if let Some(word) = expect.blocking_call {
            row.check(
                stall
                    .blocking_call
                    .as_deref()
                    .is_some_and(|c| c.contains(word)),
                || {
                    format!(
                        "blocking call {:?} does not name {word}",
                        stall.blocking_call
                    )
                },
            );
        }
        match expect.culprit {
            Culprit::Named(name) => row.check(stall.culprit.as_deref() == Some(name), || {
                format!("culprit {:?}, not {name}", stall.culprit)
            }),
            Culprit::Any => {}
            Culprit::Nothing => row
                .check(stall.culprit.is_none() && stall.frames.is_empty(), || {
                    format!("a stack without a capture? culprit {:?}", stall.culprit)
                }),
        }
        if let Some(phrase) = expect.note {
            row.check(
                stall.note.as_deref().is_some_and(|n| n.contains(phrase)),
                || format!("the note {:?} does not say {phrase:?}", stall.note),
            );
        }
        row.check(stall.finished, || "not finished after Ended".into());
        let (shortest, longest) = expect.lasts;
        row.check(
            stall.duration >= shortest && stall.duration <= longest,
            || {
                format!(
                    "lasted {:?}, not {shortest:?} to {longest:?}",
                    stall.duration
                )
            },
        );
        let recorded = self
            .watchdog
            .stalls()
            .into_iter()
            .find(|s| s.seq == stall.seq);
        row.check(recorded.as_ref() == Some(&stall), || {
            "stalls() does not hold the stall as Ended told it".into()
        });
        if let Culprit::Named(name) = expect.culprit {
            row.check(
                self.watchdog.culprits().iter().any(|c| c.culprit == name),
                || format!("{name} is not in culprits()"),
            );
        }
        Some(stall)
    }

    /// A case whose fixture stalls once.
    pub(crate) fn stall_case(
        &mut self,
        case: &'static str,
        expect: Expect,
        fixture: impl FnOnce(),
    ) {
        let mut row = Row::new(case);
        self.unexpected(&mut row);
        let job = self.job();
        self.run_job(job, fixture);
        self.check_stall(&mut row, job, &expect);
        self.finish(row);
    }

    /// Checks that nothing was reported since `before` stalls.
    pub(crate) fn quiet(&self, row: &mut Row, before: usize) {
        std::thread::sleep(QUIET_WAIT);
        self.unexpected(row);
        let now = self.watchdog.stalls().len();
        row.check(now == before, || {
            format!("{} stall(s) recorded", now.saturating_sub(before))
        });
        row.kind = "no report".into();
    }

    pub(crate) fn finish(&mut self, row: Row) {
        println!(
            "{:<22} latency {:>7}  {:<9}  duration {:>7}  syscall {:<15}  blocking call {}  culprit {}  {}",
            row.case,
            ms(row.latency),
            row.kind,
            ms(row.duration),
            row.syscall,
            row.blocking_call,
            row.culprit,
            if row.failures.is_empty() { "ok" } else { "FAILED" }
        );
        for f in &row.failures {
            println!("    failure: {f}");
        }
        self.rows.push(row);
    }

    pub(crate) fn summary(self) {
        println!();
        println!(
            "{:<22} {:>9} {:<13} {:>9} {:<16} {:<44} {:<30} result",
            "case", "latency", "kind", "duration", "syscall", "blocking call", "culprit"
        );
        let mut failed = Vec::new();
        for row in &self.rows {
            println!(
                "{:<22} {:>9} {:<13} {:>9} {:<16} {:<44} {:<30} {}",
                row.case,
                ms(row.latency),
                row.kind,
                ms(row.duration),
                row.syscall,
                row.blocking_call,
                row.culprit,
                if row.failures.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                }
            );
            if !row.failures.is_empty() {
                failed.push(row.case);
            }
        }
        println!();
        assert!(
            failed.is_empty(),
            "stall fixtures failed: {failed:?} (see above)"
        );
        println!("all {} stall fixtures passed", self.rows.len());
    }
}
