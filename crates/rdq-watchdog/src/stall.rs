//! Stall reports, and the table of culprits.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::classify::StallKind;
use crate::stack::Frame;

/// One stall: a watched poll that ran longer than the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Stall {
    /// A number for this stall, increasing.
    pub seq: u64,
    /// The task or job that was being polled.
    pub job: u64,
    /// Its label (the queue), if any.
    pub label: Option<String>,
    /// The thread's name.
    pub thread: String,
    /// The thread's OS id.
    pub tid: i32,
    /// When the poll began (wall clock, tick resolution).
    pub started_at: SystemTime,
    /// How long the poll had run when reported; the final duration once
    /// `finished`.
    pub duration: Duration,
    /// Whether the poll has ended.
    pub finished: bool,
    /// Computing, blocked, starved, or unknown.
    pub kind: StallKind,
    /// Why the kind is `unknown`, or why there is no stack.
    pub note: Option<String>,
    /// The system call the thread was in, if any.
    pub syscall: Option<String>,
    /// The kernel function it slept in (`wchan`), if any.
    pub wchan: Option<String>,
    /// Time it ran during the stall.
    pub ran: Duration,
    /// Time it waited for a CPU during the stall.
    pub waited: Duration,
    /// Its stack, innermost first (empty if it could not be captured).
    pub frames: Vec<Frame>,
    /// The call that blocked (innermost standard-library function).
    pub blocking_call: Option<String>,
    /// The first function of the user's own code on the stack.
    pub culprit: Option<String>,
}

impl fmt::Display for Stall {
    /// The report as a person reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = self
            .label
            .as_deref()
            .map(|l| format!(" of queue {l}"))
            .unwrap_or_default();
        writeln!(
            f,
            "stall: job {}{label} held thread {:?} (tid {}) for {:?}{}: {}",
            self.job,
            self.thread,
            self.tid,
            self.duration,
            if self.finished { "" } else { " and counting" },
            match self.kind {
                StallKind::Cpu => "busy on the CPU".to_owned(),
                StallKind::Blocked => format!(
                    "blocked in {}",
                    self.syscall
                        .as_deref()
                        .unwrap_or("the kernel (no system call named)")
                ),
                StallKind::Starved =>
                    "starved: runnable but given no CPU (the host, not the code)".to_owned(),
                StallKind::Unknown => "cause unknown".to_owned(),
            }
        )?;
        writeln!(
            f,
            "  ran {:?}, waited for a CPU {:?}",
            self.ran, self.waited
        )?;
        if let Some(call) = &self.blocking_call {
            writeln!(f, "  blocking call: {call}")?;
        }
        if let Some(culprit) = &self.culprit {
            writeln!(f, "  in: {culprit}")?;
        }
        if let Some(w) = &self.wchan {
            writeln!(f, "  kernel wait channel: {w}")?;
        }
        if let Some(note) = &self.note {
            writeln!(f, "  note: {note}")?;
        }
        for frame in self.frames.iter().take(24) {
            writeln!(
                f,
                "    {:#018x} {}{}",
                frame.addr,
                frame
                    .function
                    .as_deref()
                    .map(crate::stack::tidy)
                    .unwrap_or_else(|| "?".into()),
                frame
                    .location
                    .as_deref()
                    .map(|l| format!("  ({l})"))
                    .unwrap_or_default()
            )?;
        }
        Ok(())
    }
}

/// Stalls of one culprit function, summed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CulpritStats {
    /// The function.
    pub culprit: String,
    /// Stalls it caused.
    pub count: u64,
    /// Their total duration.
    pub total: Duration,
    /// The longest.
    pub max: Duration,
}

/// Recent stalls and the culprit table.
#[derive(Debug, Default)]
pub(crate) struct Book {
    recent: VecDeque<Stall>,
    capacity: usize,
    culprits: HashMap<String, CulpritStats>,
    by_kind: HashMap<StallKind, u64>,
}

impl Book {
    pub(crate) fn new(capacity: usize) -> Book {
        Book {
            capacity: capacity.max(1),
            ..Book::default()
        }
    }

    pub(crate) fn add(&mut self, stall: Stall) {
        *self.by_kind.entry(stall.kind).or_default() += 1;
        if self.recent.len() == self.capacity {
            self.recent.pop_front();
        }
        self.recent.push_back(stall);
    }

    /// Fills in a stall's stack, blocking call and culprit (and a note on
    /// why they are missing, added to any earlier note).
    pub(crate) fn update(
        &mut self,
        seq: u64,
        frames: Vec<crate::Frame>,
        blocking_call: Option<String>,
        culprit: Option<String>,
        note: Option<String>,
    ) -> Option<Stall> {
        let stall = self.recent.iter_mut().rev().find(|s| s.seq == seq)?;
        stall.frames = frames;
        stall.blocking_call = blocking_call;
        stall.culprit = culprit;
        if let Some(note) = note {
            stall.note = Some(match stall.note.take() {
                Some(earlier) => format!("{earlier}; {note}"),
                None => note,
            });
        }
        Some(stall.clone())
    }

    /// Records a stall's end: its final duration, and the culprit's share
    /// (starved stalls blame nobody).
    pub(crate) fn finish(&mut self, seq: u64, duration: Duration) -> Option<Stall> {
        let stall = self.recent.iter_mut().rev().find(|s| s.seq == seq)?;
        stall.duration = duration;
        stall.finished = true;
        if stall.kind != StallKind::Starved {
            let name = stall.culprit.clone().unwrap_or_else(|| "(unknown)".into());
            let stats = self
                .culprits
                .entry(name.clone())
                .or_insert_with(|| CulpritStats {
                    culprit: name,
                    ..CulpritStats::default()
                });
            stats.count += 1;
            stats.total += duration;
            stats.max = stats.max.max(duration);
        }
        Some(stall.clone())
    }

    pub(crate) fn recent(&self) -> Vec<Stall> {
        self.recent.iter().cloned().collect()
    }

    pub(crate) fn culprits(&self) -> Vec<CulpritStats> {
        let mut v: Vec<CulpritStats> = self.culprits.values().cloned().collect();
        v.sort_by(|a, b| {
            b.total
                .cmp(&a.total)
                .then_with(|| a.culprit.cmp(&b.culprit))
        });
        v
    }

    pub(crate) fn by_kind(&self) -> HashMap<StallKind, u64> {
        self.by_kind.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stall(seq: u64, kind: StallKind, culprit: &str) -> Stall {
        Stall {
            seq,
            job: 1,
            label: None,
            thread: "t".into(),
            tid: 1,
            started_at: SystemTime::UNIX_EPOCH,
            duration: Duration::from_millis(600),
            finished: false,
            kind,
            note: None,
            syscall: None,
            wchan: None,
            ran: Duration::ZERO,
            waited: Duration::ZERO,
            frames: Vec::new(),
            blocking_call: None,
            culprit: Some(culprit.into()),
        }
    }

    #[test]
    fn culprits_sum_their_stalls_but_starved_ones_blame_nobody() {
        let mut book = Book::new(2);
        book.add(stall(1, StallKind::Blocked, "a::f"));
        book.finish(1, Duration::from_secs(1));
        book.add(stall(2, StallKind::Cpu, "a::f"));
        book.finish(2, Duration::from_secs(3));
        book.add(stall(3, StallKind::Starved, "b::g"));
        book.finish(3, Duration::from_secs(9));
        let culprits = book.culprits();
        assert_eq!(culprits.len(), 1);
        assert_eq!(
            (culprits[0].count, culprits[0].total, culprits[0].max),
            (2, Duration::from_secs(4), Duration::from_secs(3))
        );
        assert_eq!(book.recent().len(), 2, "only the last two are kept");
        assert_eq!(book.by_kind()[&StallKind::Starved], 1);
    }
}
