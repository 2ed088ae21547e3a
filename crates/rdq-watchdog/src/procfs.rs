//! What Linux says about a thread: `/proc/self/task/TID/{syscall,wchan,schedstat}`,
//! and about a process: `/proc/PID/{stat,wchan}`.

use std::time::Duration;

/// Scheduler accounting of a thread: time on a CPU, and time waiting for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStat {
    /// Time spent running.
    pub run: Duration,
    /// Time spent runnable but waiting for a CPU (the run queue).
    pub wait: Duration,
}

/// Reads `/proc/self/task/TID/schedstat`.
pub fn schedstat(tid: i32) -> Option<SchedStat> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let mut f = text.split_whitespace().map(|n| n.parse::<u64>());
    Some(SchedStat {
        run: Duration::from_nanos(f.next()?.ok()?),
        wait: Duration::from_nanos(f.next()?.ok()?),
    })
}

/// The system call a thread is in, from `/proc/self/task/TID/syscall`:
/// `Some(Some(name))` in a call, `Some(None)` when running in user space.
pub fn syscall(tid: i32) -> Option<Option<String>> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    let first = text.split_whitespace().next()?;
    if first == "running" {
        return Some(None);
    }
    let nr: i64 = first.parse().ok()?;
    if nr < 0 {
        // Blocked, but not in a system call (a page fault, say).
        return Some(None);
    }
    Some(Some(
        syscall_name(nr).map_or_else(|| format!("syscall {nr}"), str::to_owned),
    ))
}

/// The kernel function a thread sleeps in (`/proc/.../wchan`), if any.
pub fn wchan(tid: i32) -> Option<String> {
    wchan_at(&format!("/proc/self/task/{tid}/wchan"))
}

/// A process's wait channel.
pub fn process_wchan(pid: u32) -> Option<String> {
    wchan_at(&format!("/proc/{pid}/wchan"))
}

fn wchan_at(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty() && text != "0").then(|| text.to_owned())
}

/// A process's state letter and its meaning (`S (sleeping)`, `Z (zombie)`, ...).
pub fn process_state(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may hold spaces: the state follows the
    // last ')'.
    let state = text.rsplit_once(')')?.1.split_whitespace().next()?;
    let meaning = match state {
        "R" => "running",
        "S" => "sleeping",
        "D" => "disk sleep",
        "T" => "stopped",
        "t" => "tracing stop",
        "Z" => "zombie",
        "X" => "dead",
        "I" => "idle",
        _ => "?",
    };
    Some(format!("{state} ({meaning})"))
}

/// Names of the system calls threads usually block in (x86-64 numbers).
#[cfg(target_arch = "x86_64")]
fn syscall_name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        23 => "select",
        24 => "sched_yield",
        35 => "nanosleep",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        61 => "wait4",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        202 => "futex",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        257 => "openat",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        _ => return None,
    })
}

/// Names of the system calls threads usually block in (aarch64 numbers).
#[cfg(target_arch = "aarch64")]
fn syscall_name(nr: i64) -> Option<&'static str> {
    Some(match nr {
        63 => "read",
        64 => "write",
        67 => "pread64",
        73 => "ppoll",
        82 => "fsync",
        83 => "fdatasync",
        98 => "futex",
        101 => "nanosleep",
        115 => "clock_nanosleep",
        202 => "accept",
        203 => "connect",
        207 => "recvfrom",
        22 => "epoll_pwait",
        _ => return None,
    })
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn syscall_name(_nr: i64) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_in_a_sleep_is_in_a_sleep_call() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid cannot fail.
            tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as i32)
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let call = syscall(tid).expect("/proc is there").expect("in a call");
        assert!(call.contains("sleep"), "{call}");
        let before = schedstat(tid).unwrap();
        t.join().unwrap();
        assert!(before.run > Duration::ZERO);
    }

    #[test]
    fn process_state_of_this_process() {
        let state = process_state(std::process::id()).unwrap();
        assert!(state.starts_with('R') || state.starts_with('S'), "{state}");
        assert!(process_state(u32::MAX).is_none());
    }
}
