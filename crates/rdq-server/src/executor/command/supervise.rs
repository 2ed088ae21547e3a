//! One run, start to end: feed stdin, drain stdout and stderr, watch the
//! exit and the timeout, all at once; then kill what is left of the group
//! and reap. The phases and the kill sequence are described in the module
//! docs of [`super`].

use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::time::Instant;

use super::drain::{drain, Capped};
use super::group::{self, Group};
use super::{CommandSpec, DRAIN_AFTER_EXIT};

/// After the final SIGKILL, how long to wait for the pipes' end of file (only
/// a process that left the group can still hold them).
const EOF_AFTER_KILL: Duration = Duration::from_millis(100);

/// How long reaping a SIGKILLed child may take.
const REAP_LIMIT: Duration = Duration::from_secs(10);

/// Feeds stdin, drains stdout and stderr, watches the exit and the
/// timeout, all at once; kills what is left of the group; reaps.
pub(super) async fn supervise(spec: &CommandSpec, mut group: Group, input: Option<Vec<u8>>) -> End {
    let mut stdout = Capped::new(spec.output_cap);
    let mut stderr = Capped::new(spec.output_cap);
    let (pipe_in, pipe_out, pipe_err) = match group.child() {
        Some(c) => (c.stdin.take(), c.stdout.take(), c.stderr.take()),
        None => (None, None, None),
    };
    let mut timed_out = false;
    {
        let out = drain(pipe_out, &mut stdout);
        let err = drain(pipe_err, &mut stderr);
        let feed = feed(pipe_in, input);
        let exit = group::exited(group.pgid());
        let timer = tokio::time::sleep(spec.timeout.unwrap_or_default());
        tokio::pin!(out, err, feed, exit, timer);
        let (mut out_done, mut err_done, mut fed, mut exited) = (false, false, false, false);
        let mut timer_on = spec.timeout.is_some();
        let mut phase = Phase::Running;
        while !(exited && out_done && err_done) {
            tokio::select! {
                () = &mut exit, if !exited => {
                    exited = true;
                    if phase == Phase::Running {
                        phase = Phase::Draining;
                        timer.as_mut().reset(Instant::now() + DRAIN_AFTER_EXIT);
                        timer_on = true;
                    }
                }
                () = &mut out, if !out_done => out_done = true,
                () = &mut err, if !err_done => err_done = true,
                () = &mut feed, if !fed => fed = true,
                () = &mut timer, if timer_on => match phase {
                    Phase::Running => {
                        tracing::debug!(pgid = group.pgid(), "command timed out; SIGTERM");
                        timed_out = true;
                        group.signal(libc::SIGTERM);
                        group.signal(libc::SIGCONT);
                        phase = Phase::Terminating;
                        timer.as_mut().reset(Instant::now() + spec.grace);
                    }
                    Phase::Terminating | Phase::Draining => break,
                },
                else => break,
            }
        }
        group.signal(libc::SIGKILL);
        let rest = async {
            if !out_done {
                (&mut out).await;
            }
            if !err_done {
                (&mut err).await;
            }
        };
        let _ = tokio::time::timeout(EOF_AFTER_KILL, rest).await;
    } // The pipes close here.
    let status = group.reap(REAP_LIMIT).await;
    End {
        status,
        timed_out,
        stdout,
        stderr,
    }
}

/// Where [`supervise`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Until the child exits or the timeout passes.
    Running,
    /// Timed out, SIGTERM sent: until all is gone or the grace is over.
    Terminating,
    /// The child exited: until the output ends or `DRAIN_AFTER_EXIT`.
    Draining,
}

/// How a run ended.
pub(super) struct End {
    /// `None` if the child could not be reaped.
    pub(super) status: Option<ExitStatus>,
    /// Whether the timeout passed (and the group was terminated).
    pub(super) timed_out: bool,
    /// What was kept of stdout.
    pub(super) stdout: Capped,
    /// What was kept of stderr.
    pub(super) stderr: Capped,
}

/// Writes the job document and closes stdin. A child that exits without
/// reading it all is fine (the write fails with EPIPE, ignored).
async fn feed(pipe: Option<ChildStdin>, input: Option<Vec<u8>>) {
    if let (Some(mut pipe), Some(input)) = (pipe, input) {
        if pipe.write_all(&input).await.is_ok() {
            let _ = pipe.shutdown().await;
        }
    }
}
