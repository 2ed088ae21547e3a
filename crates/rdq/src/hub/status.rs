//! The status of a consumer over a sliding window of samples.

use std::collections::VecDeque;
use std::fmt;

/// How a consumer is doing over the status window, from the samples taken
/// once a period (see [`BacklogConfig`](crate::BacklogConfig)). The rules
/// are tried in this order; the first that matches wins.
///
/// | status | every sample of the window shows |
/// |---|---|
/// | `Stop` | depth > 0, nothing in flight, and nothing finished over the window |
/// | `Stall` | jobs in flight, and nothing finished over the window |
/// | `Warn` | jobs finished, but depth > 0 throughout and the last depth ≥ the first |
/// | `Ok` | anything else: the backlog emptied, or shrank, or there was none |
///
/// Until samples cover a whole window (a consumer younger than the window)
/// the status is `Ok`: there is not yet the evidence for anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Keeping up, or catching up.
    Ok,
    /// Working, but the backlog never emptied and did not shrink.
    Warn,
    /// Jobs are in flight but none finished for the whole window: hung.
    Stall,
    /// Work is waiting, but nothing runs and nothing finished: a paused,
    /// zero-width or dead consumer.
    Stop,
}

impl Status {
    /// Every status, in severity order.
    pub const ALL: [Status; 4] = [Status::Ok, Status::Warn, Status::Stall, Status::Stop];

    /// Lowercase name (`ok`, `warn`, `stall`, `stop`), for labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Stall => "stall",
            Status::Stop => "stop",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Stall => "STALL",
            Status::Stop => "STOP",
        })
    }
}

/// One sample: depth, in flight, and the finished count so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sample {
    pub(crate) depth: u64,
    pub(crate) in_flight: u64,
    pub(crate) finished: u64,
}

/// The last `len` samples.
#[derive(Debug)]
pub(crate) struct Window {
    samples: VecDeque<Sample>,
    len: usize,
}

impl Window {
    /// A window of `len` samples (at least 2: a first and a last).
    pub(crate) fn new(len: usize) -> Self {
        let len = len.max(2);
        Window {
            samples: VecDeque::with_capacity(len),
            len,
        }
    }

    pub(crate) fn push(&mut self, sample: Sample) {
        if self.samples.len() == self.len {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub(crate) fn status(&self) -> Status {
        if self.samples.len() < self.len {
            return Status::Ok;
        }
        let (Some(first), Some(last)) = (self.samples.front(), self.samples.back()) else {
            return Status::Ok;
        };
        let finished = last.finished > first.finished;
        let all = |f: fn(&Sample) -> bool| self.samples.iter().all(f);
        if !finished && all(|s| s.depth > 0) && all(|s| s.in_flight == 0) {
            Status::Stop
        } else if !finished && all(|s| s.in_flight > 0) {
            Status::Stall
        } else if finished && all(|s| s.depth > 0) && last.depth >= first.depth {
            Status::Warn
        } else {
            Status::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(samples: &[(u64, u64, u64)]) -> Status {
        let mut w = Window::new(samples.len());
        for &(depth, in_flight, finished) in samples {
            w.push(Sample {
                depth,
                in_flight,
                finished,
            });
        }
        w.status()
    }

    #[test]
    fn first_matching_rule_wins() {
        assert_eq!(window(&[(5, 0, 3), (5, 0, 3), (6, 0, 3)]), Status::Stop);
        assert_eq!(window(&[(5, 1, 3), (5, 1, 3), (6, 1, 3)]), Status::Stall);
        assert_eq!(window(&[(0, 1, 3), (0, 1, 3)]), Status::Stall);
        assert_eq!(window(&[(5, 1, 3), (2, 1, 9), (5, 1, 12)]), Status::Warn);
        assert_eq!(window(&[(5, 1, 3), (4, 1, 9), (4, 1, 12)]), Status::Ok);
        assert_eq!(window(&[(5, 1, 3), (0, 1, 9), (7, 1, 12)]), Status::Ok);
        assert_eq!(window(&[(0, 0, 3), (0, 0, 3)]), Status::Ok);
    }

    #[test]
    fn a_window_not_yet_full_is_ok() {
        let mut w = Window::new(3);
        w.push(Sample {
            depth: 4,
            in_flight: 0,
            finished: 0,
        });
        w.push(Sample {
            depth: 4,
            in_flight: 0,
            finished: 0,
        });
        assert_eq!(w.status(), Status::Ok);
        w.push(Sample {
            depth: 4,
            in_flight: 0,
            finished: 0,
        });
        assert_eq!(w.status(), Status::Stop);
    }
}
