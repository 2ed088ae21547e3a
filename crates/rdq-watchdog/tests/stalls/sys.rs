//! Threads, CPUs and signals, through libc.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

pub(crate) fn affinity() -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is an empty set; sched_getaffinity fills
    // it for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        assert_eq!(
            rc,
            0,
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        );
        set
    }
}

pub(crate) fn set_affinity(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t; this changes the calling thread
    // only.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    assert_eq!(
        rc,
        0,
        "sched_setaffinity: {}",
        std::io::Error::last_os_error()
    );
}

pub(crate) fn cpus(set: &libc::cpu_set_t) -> Vec<usize> {
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .collect()
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; `cpu` is below CPU_SETSIZE (it
    // came from `cpus`).
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    };
    set_affinity(&set);
}

/// Threads spinning on one CPU until dropped.
pub(crate) struct Hogs {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Hogs {
    pub(crate) fn start(n: usize, cpu: usize) -> Hogs {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready, pinned) = mpsc::channel();
        let threads = (0..n)
            .map(|i| {
                let stop = stop.clone();
                let ready = ready.clone();
                std::thread::Builder::new()
                    .name(format!("fixture-hog-{i}"))
                    .spawn(move || {
                        pin(cpu);
                        ready.send(()).unwrap();
                        let mut x = 1u64;
                        while !stop.load(Ordering::Relaxed) {
                            for _ in 0..1000 {
                                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                            }
                        }
                    })
                    .unwrap()
            })
            .collect();
        for _ in 0..n {
            pinned.recv().unwrap();
        }
        // Let them settle into the CPU's run queue.
        std::thread::sleep(Duration::from_millis(30));
        Hogs { stop, threads }
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The calling thread (the runtime's) pinned to one CPU of its affinity
/// mask, the last, with `hogs` CPU hogs; until dropped, when the thread
/// gets its mask back. The watchdog's threads, started before, are not
/// pinned: the monitor keeps a CPU of its own on a machine with two.
pub(crate) struct Crowded {
    original: libc::cpu_set_t,
    pub(crate) cpu: usize,
    hogs: Option<Hogs>,
}

impl Crowded {
    pub(crate) fn new(hogs: usize) -> Crowded {
        let original = affinity();
        let cpu = *cpus(&original).last().expect("a CPU to run on");
        pin(cpu);
        Crowded {
            original,
            cpu,
            hogs: Some(Hogs::start(hogs, cpu)),
        }
    }
}

impl Drop for Crowded {
    fn drop(&mut self) {
        drop(self.hogs.take());
        set_affinity(&self.original);
    }
}

pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The calling thread's id and stack, `(tid, lo, hi)`.
pub(crate) fn me() -> (i32, usize, usize) {
    // SAFETY: pthread_getattr_np fills `attr` for the calling thread, which
    // is then read and destroyed.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        assert_eq!(libc::pthread_getattr_np(libc::pthread_self(), &mut attr), 0);
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        assert_eq!(libc::pthread_attr_getstack(&attr, &mut addr, &mut size), 0);
        libc::pthread_attr_destroy(&mut attr);
        (gettid(), addr as usize, addr as usize + size)
    }
}

/// Blocks `signal` in the calling thread; returns the mask to restore.
pub(crate) fn block_signal(signal: i32) -> libc::sigset_t {
    // SAFETY: both sets are valid sigset_t values, initialized by
    // sigemptyset / filled by pthread_sigmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old), 0);
        old
    }
}

pub(crate) fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: `old` came from pthread_sigmask.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}

/// The calling thread in a CPU cgroup of its own, throttled to `percent`
/// of one CPU (cgroup v1's `cpu` controller, which moves single threads:
/// `cfs_quota_us` per `cfs_period_us`); until dropped, when it goes back to
/// the cgroup it came from and the new one is removed. Needs the controller
/// mounted at `/sys/fs/cgroup/cpu` and the right to write there (root).
pub(crate) struct Throttled {
    dir: std::path::PathBuf,
    home: std::path::PathBuf,
    tid: i32,
}

impl Throttled {
    pub(crate) fn new(percent: u32) -> Result<Throttled, String> {
        let root = std::path::Path::new("/sys/fs/cgroup/cpu");
        let tid = gettid();
        let ours = std::fs::read_to_string(format!("/proc/self/task/{tid}/cgroup"))
            .map_err(|e| format!("cannot read this thread's cgroups: {e}"))?;
        let here = ours
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "cpu")
                    .then(|| path.to_owned())
            })
            .ok_or_else(|| {
                "no cgroup v1 `cpu` controller for this thread (cgroup v2 cannot move one \
                 thread without a threaded subtree); this case needs cgroup v1"
                    .to_owned()
            })?;
        let home = root.join(here.trim_start_matches('/'));
        let dir = home.join(format!("rdq-stall-fixture-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create the cgroup {}: {e}", dir.display()))?;
        let throttled = Throttled { dir, home, tid };
        let period = 100_000u32;
        let write = |file: &str, value: String| {
            std::fs::write(throttled.dir.join(file), &value)
                .map_err(|e| format!("cannot write {value} to {file}: {e}"))
        };
        write("cpu.cfs_period_us", period.to_string())?;
        write("cpu.cfs_quota_us", (period / 100 * percent).to_string())?;
        write("tasks", tid.to_string())?;
        Ok(throttled)
    }
}

impl Drop for Throttled {
    fn drop(&mut self) {
        let _ = std::fs::write(self.home.join("tasks"), self.tid.to_string());
        let _ = std::fs::remove_dir(&self.dir);
    }
}
