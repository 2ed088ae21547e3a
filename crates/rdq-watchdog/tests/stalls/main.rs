//! The stall fixtures: each case makes a watched job stall its thread in one
//! known way (or makes it look like a stall, and must not be reported) and
//! checks what the watchdog says about it.
//!
//! One watchdog per process (tick 20 ms, threshold 200 ms), so this binary
//! has its own harness: the cases run one at a time, on a current-thread
//! runtime on the main thread, each printing one line (detection latency,
//! kind, duration, system call, blocking call, culprit); a summary table
//! follows, and the binary panics (exits non-zero) if any case failed.
//!
//! A stalling fixture blocks for about twice the threshold (400 ms), with a
//! little work after the blocking call so that its frame stays on the stack,
//! and notes the instant it starts to block: the detection latency is from
//! there to the `Detected` hook call, and must stay within the threshold
//! plus two ticks (240 ms).
//!
//! Set `RDQ_STALL_VERBOSE=1` to print each reported stall in full.
//! Set `RDQ_STALL_CGROUP=1` to add case 11: the runtime thread in a CPU
//! cgroup throttled to 20% (needs root and cgroup v1's `cpu` controller;
//! enabled where it cannot run, it fails, it does not skip).

use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use harness::Suite;
use sys::{block_signal, restore_signals, thread_cpu};

const TICK: Duration = Duration::from_millis(20);
const THRESHOLD: Duration = Duration::from_millis(200);
/// Every detection latency stays within this: the threshold and two ticks.
const LATENCY_BOUND: Duration =
    Duration::from_millis(THRESHOLD.as_millis() as u64 + 2 * TICK.as_millis() as u64);
/// How long a stalling fixture blocks.
const STALL: Duration = Duration::from_millis(400);
const HOLD_THRESHOLD: Duration = Duration::from_millis(300);
/// Longest wait for a report that must come.
const REPORT_WAIT: Duration = Duration::from_secs(5);
/// How long to listen, after a case, for a report that must not come.
const QUIET_WAIT: Duration = Duration::from_millis(150);
const QUEUE: &str = "fixtures";

mod cases;
mod harness;
mod sys;

// ---------------------------------------------------------------------------
// The fixtures. Each is `#[inline(never)]` so that it has a frame of its own
// for the watchdog to name, and does a little work after its blocking call.

/// When the running fixture began to block.
static BLOCKING_SINCE: Mutex<Option<Instant>> = Mutex::new(None);

fn mark_blocking() {
    *BLOCKING_SINCE.lock().unwrap() = Some(Instant::now());
}

#[inline(never)]
fn sleep_fixture() {
    mark_blocking();
    std::thread::sleep(STALL);
    std::hint::black_box(1);
}

#[inline(never)]
fn spin_fixture() {
    mark_blocking();
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < STALL {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}

#[inline(never)]
fn mutex_fixture(lock: &Mutex<u64>) {
    mark_blocking();
    let guard = lock.lock().unwrap();
    std::hint::black_box(*guard);
}

#[inline(never)]
fn pipe_fixture(reader: &mut std::io::PipeReader) {
    mark_blocking();
    let mut byte = [0u8; 1];
    reader.read_exact(&mut byte).unwrap();
    std::hint::black_box(byte);
}

/// Burns `cpu` of this thread's own CPU time, however long that takes.
#[inline(never)]
fn starved_fixture(cpu: Duration) {
    mark_blocking();
    burn(cpu);
    std::hint::black_box(cpu);
}

/// Sleeps with the watchdog's signal blocked: the stack cannot be captured.
#[inline(never)]
fn masked_fixture(signal: i32) {
    let old = block_signal(signal);
    mark_blocking();
    std::thread::sleep(STALL);
    std::hint::black_box(1);
    restore_signals(&old);
}

/// Spins until this thread has used `cpu` of CPU time.
fn burn(cpu: Duration) {
    let start = thread_cpu();
    let mut x = 1u64;
    while thread_cpu() - start < cpu {
        for _ in 0..2000 {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    std::hint::black_box(x);
}

fn main() {
    let start = Instant::now();
    let mut suite = Suite::new();
    println!(
        "stall fixtures: tick {TICK:?}, threshold {THRESHOLD:?}, latency bound {LATENCY_BOUND:?}"
    );
    suite.run_all();
    println!(
        "\n{} cases in {:.1} s",
        suite.rows.len(),
        start.elapsed().as_secs_f64()
    );
    suite.summary();
}
