//! The cases, in the order they run.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdq_watchdog::{Stall, StallKind};

use crate::harness::{Culprit, Expect, Row, SeenHold, Suite, ABOUT_STALL};
use crate::sys::{me, Crowded, Throttled};
use crate::{
    burn, masked_fixture, mutex_fixture, pipe_fixture, sleep_fixture, spin_fixture,
    starved_fixture, HOLD_THRESHOLD, QUEUE, REPORT_WAIT, STALL, THRESHOLD, TICK,
};

impl Suite {
    /// Every case, one at a time.
    pub(crate) fn run_all(&mut self) {
        self.sleep();
        self.spin();
        self.mutex();
        self.pipe();
        self.timer();
        self.starved();
        self.tiny_jobs();
        self.captures();
        self.masked();
        self.hold();
        if std::env::var_os("RDQ_STALL_CGROUP").is_some_and(|v| v == "1") {
            self.throttled();
        }
    }

    fn sleep(&mut self) {
        self.stall_case(
            "1 sleep",
            Expect {
                kind: StallKind::Blocked,
                syscall: Some("clock_nanosleep"),
                blocking_call: Some("sleep"),
                culprit: Culprit::Named("stalls::sleep_fixture"),
                note: None,
                lasts: ABOUT_STALL,
            },
            sleep_fixture,
        );
    }

    fn spin(&mut self) {
        self.stall_case(
            "2 spin",
            Expect {
                kind: StallKind::Cpu,
                syscall: None,
                blocking_call: None,
                culprit: Culprit::Named("stalls::spin_fixture"),
                note: None,
                lasts: ABOUT_STALL,
            },
            spin_fixture,
        );
    }

    fn mutex(&mut self) {
        let lock = Arc::new(Mutex::new(7u64));
        let (locked, is_locked) = mpsc::channel();
        let holder = {
            let lock = lock.clone();
            std::thread::spawn(move || {
                let guard = lock.lock().unwrap();
                locked.send(()).unwrap();
                std::thread::sleep(STALL);
                drop(guard);
            })
        };
        is_locked.recv().unwrap();
        self.stall_case(
            "3 mutex",
            Expect {
                kind: StallKind::Blocked,
                syscall: Some("futex"),
                blocking_call: None,
                culprit: Culprit::Named("stalls::mutex_fixture"),
                note: None,
                lasts: ABOUT_STALL,
            },
            || mutex_fixture(&lock),
        );
        holder.join().unwrap();
    }

    fn pipe(&mut self) {
        let (mut reader, mut writer) = std::io::pipe().expect("a pipe");
        let late_writer = std::thread::spawn(move || {
            std::thread::sleep(STALL);
            writer.write_all(b"!").unwrap();
        });
        self.stall_case(
            "4 pipe read",
            Expect {
                kind: StallKind::Blocked,
                syscall: Some("read"),
                blocking_call: None,
                culprit: Culprit::Named("stalls::pipe_fixture"),
                note: None,
                lasts: ABOUT_STALL,
            },
            || pipe_fixture(&mut reader),
        );
        late_writer.join().unwrap();
    }

    fn timer(&mut self) {
        let mut row = Row::new("5 tokio timer");
        self.unexpected(&mut row);
        let before = self.watchdog.stalls().len();
        let job = self.job();
        let start = Instant::now();
        self.rt.block_on(rdq_watchdog::watch(
            async {
                tokio::time::sleep(STALL).await;
                std::hint::black_box(1);
            },
            QUEUE,
            job,
        ));
        row.duration = Some(start.elapsed());
        self.quiet(&mut row, before);
        self.finish(row);
    }

    fn starved(&mut self) {
        const RUNS: usize = 20;
        let mut row = Row::new("6 starved x20");
        self.unexpected(&mut row);
        let blamed = |suite: &Suite| {
            suite
                .watchdog
                .culprits()
                .iter()
                .map(|c| c.count)
                .sum::<u64>()
        };
        let blamed_before = blamed(self);
        let crowd = Crowded::new(3);
        self.starved_runs(&mut row, RUNS);
        let cpu = crowd.cpu;
        drop(crowd);
        let blamed_after = blamed(self);
        row.check(blamed_after == blamed_before, || {
            format!(
                "starved stalls are blamed in culprits(): {:?}",
                self.watchdog.culprits()
            )
        });
        println!("    (pinned to CPU {cpu} with 3 hogs; the worst run shown)");
        self.finish(row);
    }

    /// Opt-in (`RDQ_STALL_CGROUP=1`, needs root and cgroup v1's `cpu`
    /// controller): the runtime thread alone in a cgroup throttled to 20% of
    /// a CPU, the job burning 150 ms of its own CPU time (about 750 ms of
    /// wall time): `starved` (the cgroup gave it no CPU), never `cpu`, in 5
    /// of 5 runs. Enabled and unable to run, it fails.
    fn throttled(&mut self) {
        const RUNS: usize = 5;
        let mut row = Row::new("11 cgroup throttled x5");
        self.unexpected(&mut row);
        let throttled = match Throttled::new(20) {
            Ok(t) => t,
            Err(e) => {
                row.failures
                    .push(format!("RDQ_STALL_CGROUP=1 but the case cannot run: {e}"));
                self.finish(row);
                return;
            }
        };
        self.starved_runs(&mut row, RUNS);
        drop(throttled);
        println!(
            "    (the runtime thread alone in a cgroup with 20% of a CPU; the worst run shown)"
        );
        self.finish(row);
    }

    /// Runs the starved fixture (150 ms of its own CPU time) `runs` times
    /// and checks each is reported `starved`; `row` shows the run with the
    /// worst detection latency and the count.
    fn starved_runs(&mut self, row: &mut Row, runs: usize) {
        let mut kinds = Vec::new();
        let mut worst: Option<(Duration, Stall)> = None;
        for run in 0..runs {
            let job = self.job();
            self.run_job(job, || starved_fixture(Duration::from_millis(150)));
            let mut run_row = Row::new("");
            let stall = self.check_stall(
                &mut run_row,
                job,
                &Expect {
                    kind: StallKind::Starved,
                    syscall: None,
                    blocking_call: None,
                    culprit: Culprit::Any,
                    note: None,
                    // 150 ms of CPU time at a quarter or a fifth of a CPU.
                    lasts: (THRESHOLD, Duration::from_secs(3)),
                },
            );
            for f in run_row.failures {
                row.failures.push(format!("run {run}: {f}"));
            }
            if let Some(stall) = stall {
                kinds.push(stall.kind);
                let latency = run_row.latency.unwrap_or_default();
                if worst.as_ref().is_none_or(|(w, _)| latency > *w) {
                    worst = Some((latency, stall));
                }
            }
        }
        let starved = kinds.iter().filter(|k| **k == StallKind::Starved).count();
        row.check(starved == runs, || {
            format!("{starved} of {runs} runs starved: {kinds:?}")
        });
        if let Some((latency, stall)) = worst {
            row.describe(&stall);
            row.latency = Some(latency);
        }
        row.kind = format!("{} {starved}/{runs}", row.kind);
    }

    fn tiny_jobs(&mut self) {
        const JOBS: u64 = 300;
        let mut row = Row::new("7 300 x 1 ms jobs");
        self.unexpected(&mut row);
        let before = self.watchdog.stalls().len();
        let first = self.next_job + 1;
        self.next_job += JOBS;
        let crowd = Crowded::new(4);
        let longest = self.rt.block_on(async {
            let mut longest = Duration::ZERO;
            for job in first..first + JOBS {
                let start = Instant::now();
                rdq_watchdog::watch(async { burn(Duration::from_millis(1)) }, QUEUE, job).await;
                longest = longest.max(start.elapsed());
                tokio::task::yield_now().await;
            }
            longest
        });
        drop(crowd);
        row.duration = Some(longest);
        self.quiet(&mut row, before);
        println!("    (4 hogs on the same CPU; the longest job shown as duration)");
        self.finish(row);
    }

    fn captures(&mut self) {
        const ROUNDS: usize = 1000;
        const SLEEPS: usize = 1000;
        let mut row = Row::new("8 captures x3000");
        self.unexpected(&mut row);
        let quiet_panics = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some("fixture-panicker") {
                quiet_panics(info);
            }
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let panics = Arc::new(AtomicU64::new(0));
        let allocations = Arc::new(AtomicU64::new(0));
        let (who, targets) = mpsc::channel();
        let (finished, done) = mpsc::channel::<&'static str>();
        let spawn = |name: &'static str, body: Box<dyn FnOnce() + Send>| {
            let who = who.clone();
            let finished = finished.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    who.send((name, me())).unwrap();
                    body();
                    let _ = finished.send(name);
                })
                .unwrap();
        };
        {
            let (stop, panics) = (stop.clone(), panics.clone());
            spawn(
                "fixture-panicker",
                Box::new(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            panic!("a fixture's panic, caught");
                        }));
                        assert!(r.is_err());
                        panics.fetch_add(1, Ordering::Relaxed);
                    }
                }),
            );
        }
        {
            let (stop, allocations) = (stop.clone(), allocations.clone());
            spawn(
                "fixture-allocator",
                Box::new(move || {
                    let mut n = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        let v: Vec<u8> = vec![n as u8; 16 + n % 65_536];
                        let s = format!("{n}");
                        std::hint::black_box((v, s));
                        allocations.fetch_add(1, Ordering::Relaxed);
                    }
                }),
            );
        }
        let short = Arc::new(Mutex::new((0usize, Duration::MAX, 0usize)));
        {
            let (stop, short) = (stop.clone(), short.clone());
            spawn(
                "fixture-sleeper",
                Box::new(move || {
                    let asked = Duration::from_millis(1);
                    let mut n = 0;
                    while n < SLEEPS || !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        std::thread::sleep(asked);
                        let slept = start.elapsed();
                        let mut s = short.lock().unwrap();
                        s.0 += 1;
                        s.1 = s.1.min(slept);
                        if slept < asked {
                            s.2 += 1;
                        }
                        n += 1;
                    }
                }),
            );
        }
        drop((who, finished));
        let targets: Vec<(&'static str, (i32, usize, usize))> =
            (0..3).map(|_| targets.recv().unwrap()).collect();
        // The captures run on a thread of their own, so that a hang (a
        // handler that deadlocks) is seen as a timeout here.
        let (results, result) = mpsc::channel();
        let watchdog = self.watchdog.clone();
        let start = Instant::now();
        std::thread::spawn(move || {
            let mut ok = 0usize;
            let mut errors = Vec::new();
            for _ in 0..ROUNDS {
                for (name, (tid, lo, hi)) in &targets {
                    // SAFETY: each target thread lives until `stop`, set
                    // after this loop, and [lo, hi) is its stack.
                    match unsafe { watchdog.__capture_stack_for_tests(*tid, *lo, *hi) } {
                        Ok(frames) if frames > 0 => ok += 1,
                        Ok(_) => errors.push(format!("{name}: no frame")),
                        Err(e) => errors.push(format!("{name}: {e}")),
                    }
                }
            }
            let _ = results.send((ok, errors));
        });
        match result.recv_timeout(Duration::from_secs(30)) {
            Ok((ok, errors)) => {
                row.duration = Some(start.elapsed());
                // A target the scheduler did not run within the capture
                // timeout (two busy threads on two cores, and whatever else
                // the host runs) answers late: that capture times out, the
                // next ones of the same thread succeed. Rare, and not a
                // deadlock; anything else is a failure.
                let (late, errors): (Vec<String>, Vec<String>) = errors
                    .into_iter()
                    .partition(|e| e.contains("did not answer"));
                row.kind = if late.is_empty() {
                    format!("{ok} ok")
                } else {
                    format!("{ok} ok, {} late", late.len())
                };
                row.check(errors.is_empty(), || {
                    format!(
                        "{} capture(s) failed, first: {:?}",
                        errors.len(),
                        errors.first()
                    )
                });
                row.check(late.len() <= ROUNDS * 3 / 1000, || {
                    format!(
                        "{} of {} captures timed out (at most 0.1% may), first: {:?}",
                        late.len(),
                        ROUNDS * 3,
                        late.first()
                    )
                });
                row.check(ok + late.len() == ROUNDS * 3, || {
                    format!("{ok} of {} captured", ROUNDS * 3)
                });
            }
            Err(_) => {
                // The threads are left as they are: the captures may still
                // signal them (and the process ends soon, failed).
                row.failures
                    .push("the captures hang (30 s): a deadlock".into());
                self.finish(row);
                return;
            }
        }
        // Every thread still makes progress, then stops.
        let (p, a) = (
            panics.load(Ordering::Relaxed),
            allocations.load(Ordering::Relaxed),
        );
        std::thread::sleep(Duration::from_millis(50));
        row.check(
            panics.load(Ordering::Relaxed) > p && allocations.load(Ordering::Relaxed) > a,
            || "the panicking or the allocating thread no longer runs".into(),
        );
        stop.store(true, Ordering::Relaxed);
        let mut stopped = Vec::new();
        while stopped.len() < 3 {
            match done.recv_timeout(Duration::from_secs(10)) {
                Ok(name) => stopped.push(name),
                Err(_) => {
                    row.failures
                        .push(format!("a thread hangs: only {stopped:?} stopped"));
                    break;
                }
            }
        }
        let _ = std::panic::take_hook(); // The quiet hook; the default is back.
        let (sleeps, shortest, short_sleeps) = *short.lock().unwrap();
        row.check(sleeps >= SLEEPS, || format!("only {sleeps} sleeps"));
        row.check(short_sleeps == 0, || {
            format!("{short_sleeps} of {sleeps} sleeps were short (shortest {shortest:?})")
        });
        row.check(panics.load(Ordering::Relaxed) > 0, || "no panic".into());
        row.syscall = format!("{sleeps} sleeps");
        row.blocking_call = format!("shortest {shortest:?}");
        row.culprit = format!(
            "{} panics, {} allocations",
            panics.load(Ordering::Relaxed),
            allocations.load(Ordering::Relaxed)
        );
        self.finish(row);
    }

    fn masked(&mut self) {
        let signal = self.watchdog.config().signal;
        self.stall_case(
            "9 signal blocked",
            Expect {
                kind: StallKind::Blocked,
                syscall: Some("clock_nanosleep"),
                blocking_call: None,
                culprit: Culprit::Nothing,
                note: Some("no stack: the thread did not answer"),
                lasts: ABOUT_STALL,
            },
            move || masked_fixture(signal),
        );
    }

    fn hold(&mut self) {
        let mut row = Row::new("10 hold db");
        self.unexpected(&mut row);
        let before = self.watchdog.stalls().len();
        let job = self.job();
        let held_at = Arc::new(Mutex::new(None));
        let at = held_at.clone();
        let (line, dropped_at) = self.rt.block_on(rdq_watchdog::watch(
            async move {
                let held = rdq_watchdog::hold("db");
                let line = line!() - 1;
                *at.lock().unwrap() = Some(Instant::now());
                tokio::time::sleep(STALL).await;
                drop(held);
                (line, Instant::now())
            },
            QUEUE,
            job,
        ));
        let held_at = held_at.lock().unwrap().expect("held");
        let at = format!("{}:{line}:", file!());
        let mut reports = Vec::new();
        while reports.len() < 2 {
            match self.holds.recv_timeout(REPORT_WAIT) {
                Ok(seen) => reports.push(seen),
                Err(_) => {
                    row.failures
                        .push(format!("{} hold report(s), not 2", reports.len()));
                    break;
                }
            }
        }
        let check = |row: &mut Row, seen: &SeenHold, released: bool| {
            let h = &seen.info;
            row.check(
                seen.released == released
                    && h.resource == "db"
                    && h.job == Some(job)
                    && h.label.as_deref() == Some(QUEUE)
                    && h.location.starts_with(&at),
                || {
                    format!(
                        "report {h:?} (released: {}), not of db held by job {job} of {QUEUE} at {at}",
                        seen.released
                    )
                },
            );
        };
        if let Some(held) = reports.first() {
            check(&mut row, held, false);
            row.latency = Some(held.at.saturating_duration_since(held_at));
            row.check(held.at < dropped_at, || {
                "reported after it was released".into()
            });
            row.check(
                held.info.held > HOLD_THRESHOLD && held.info.held <= HOLD_THRESHOLD + 4 * TICK,
                || format!("reported when held for {:?}", held.info.held),
            );
        }
        if let Some(released) = reports.get(1) {
            check(&mut row, released, true);
            row.duration = Some(released.info.held);
            row.check(
                released.info.held >= STALL && released.info.held < STALL + 10 * TICK,
                || {
                    format!(
                        "released after {:?}, not about {STALL:?}",
                        released.info.held
                    )
                },
            );
        }
        row.check(
            self.watchdog.holds().iter().all(|h| h.resource != "db"),
            || "still listed by holds() after its release".into(),
        );
        self.quiet(&mut row, before);
        row.kind = "hold".into();
        row.culprit = reports
            .first()
            .map_or_else(|| "-".into(), |h| h.info.location.clone());
        self.finish(row);
    }
}
