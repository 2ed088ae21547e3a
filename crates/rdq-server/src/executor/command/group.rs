//! The child's process group: signals to it, the child's exit seen without
//! reaping it, and the kill that still happens when the run is dropped.
//!
//! # Why the leader stays unreaped
//!
//! A process group id is the pid of its first member (our child, the
//! leader). The kernel does not hand that number to a new process while the
//! leader is unreaped or any member lives, so signalling `-pgid` is safe
//! exactly until the leader is reaped and the group is empty. Hence the
//! order: see the exit without reaping (pidfd readiness, or `waitid` with
//! `WNOWAIT`), signal the group for the last time, *then* reap. Once tokio
//! has reaped the child (`Child::id` is `None`) nothing here signals again.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;

/// How often to look when the kernel cannot tell us (no pidfd).
const POLL: Duration = Duration::from_millis(10);

/// A running child that leads its own process group. Dropping it while the
/// child is unreaped terminates the group: SIGTERM now, SIGKILL after the
/// grace (from a spawned task, since `Drop` cannot wait), then the child is
/// reaped.
#[derive(Debug)]
pub(super) struct Group {
    child: Option<Child>,
    pgid: i32,
    grace: Duration,
}

impl Group {
    /// Takes charge of a child spawned with `process_group(0)`; `None` if it
    /// has no pid (it was already reaped, which a fresh child never is).
    pub(super) fn new(child: Child, grace: Duration) -> Option<Group> {
        let pid = i32::try_from(child.id()?).ok().filter(|&p| p > 1)?;
        Some(Group {
            child: Some(child),
            pgid: pid,
            grace,
        })
    }

    /// The group id, which is also the leader's pid.
    pub(super) fn pgid(&self) -> i32 {
        self.pgid
    }

    /// The child, to take its pipes.
    pub(super) fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Sends `signal` to every process of the group (the leader is unreaped
    /// while `self` holds it, so the id is still ours).
    pub(super) fn signal(&self, signal: libc::c_int) {
        if self.child.as_ref().and_then(Child::id).is_some() {
            kill_group(self.pgid, signal);
        }
    }

    /// Reaps the leader, waiting at most `limit` (it has been sent SIGKILL,
    /// so only an uninterruptible sleep delays it). On time out the child is
    /// left to tokio's orphan reaping and `None` is returned.
    pub(super) async fn reap(mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        match tokio::time::timeout(limit, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            Ok(Err(e)) => {
                tracing::warn!(pgid = self.pgid, error = %e, "could not reap a command");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(child) = self.child.take() else {
            return;
        };
        if child.id().is_none() {
            return; // Reaped: the id may be someone else's now.
        }
        tracing::debug!(
            pgid = self.pgid,
            "command dropped; terminating its process group"
        );
        kill_group(self.pgid, libc::SIGTERM);
        kill_group(self.pgid, libc::SIGCONT); // a stopped process handles TERM only once resumed
        let killer = Killer {
            pgid: self.pgid,
            child: Some(child),
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let grace = self.grace;
                // If the runtime shuts down first, the task is dropped and
                // `Killer::drop` sends the SIGKILL at once.
                drop(runtime.spawn(async move {
                    tokio::time::sleep(grace).await;
                    killer.finish().await;
                }));
            }
            Err(_) => drop(killer), // no runtime to wait in: SIGKILL now
        }
    }
}

/// The rest of a cancellation: SIGKILL to the group, then reap the leader.
struct Killer {
    pgid: i32,
    child: Option<Child>,
}

impl Killer {
    async fn finish(mut self) {
        kill_group(self.pgid, libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            let _ = child.wait().await;
        }
    }
}

impl Drop for Killer {
    fn drop(&mut self) {
        if self.child.as_ref().and_then(Child::id).is_some() {
            kill_group(self.pgid, libc::SIGKILL);
        }
    }
}

/// Sends `signal` to the process group `pgid`. Never to 0 (our own group)
/// or 1 and below (`-1` would mean every process we may signal).
fn kill_group(pgid: i32, signal: libc::c_int) {
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg(2) takes two integers and touches none of our memory.
    let rc = unsafe { libc::killpg(pgid, signal) };
    if rc == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::warn!(pgid, signal, error = %e, "could not signal a command's process group");
        }
    }
}

/// Returns once the process `pid` (our unreaped child) has exited, without
/// reaping it.
pub(super) async fn exited(pid: i32) {
    if let Some(fd) = pidfd_open(pid) {
        // SAFETY: the `OwnedFd` is open and moves into the `AsyncFd`, which
        // closes it only when dropped; its raw fd never changes.
        let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
        if let Ok(fd) = registered {
            while let Ok(mut ready) = fd.readable().await {
                if has_exited(pid) {
                    return;
                }
                ready.clear_ready();
            }
        }
    }
    while !has_exited(pid) {
        tokio::time::sleep(POLL).await;
    }
}

/// A pidfd for `pid`: readable once the process has exited.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just gave us this fd and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether our child `pid` has exited; it stays unreaped (`WNOWAIT`).
fn has_exited(pid: i32) -> bool {
    let Ok(id) = libc::id_t::try_from(pid) else {
        return true;
    };
    // SAFETY: siginfo_t is plain data, for which all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOWAIT | libc::WNOHANG;
    // SAFETY: `info` is a valid, writable siginfo_t for the whole call.
    let rc = unsafe { libc::waitid(libc::P_PID, id, &mut info, flags) };
    if rc == -1 {
        // ECHILD: nothing left to wait for; EINTR: look again later.
        return io::Error::last_os_error().kind() != io::ErrorKind::Interrupted;
    }
    // SAFETY: waitid filled `info` for a child event, or left it zeroed
    // (si_pid 0) when the child has not changed state.
    unsafe { info.si_pid() != 0 }
}
