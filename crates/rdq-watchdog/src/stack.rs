//! The stack of a stalled thread, captured from a signal handler.
//!
//! # Implementation details
//!
//! The monitor sends the stalled thread a signal with `tgkill` (SIGURG by
//! default, whose default action is to do nothing). The handler runs on that
//! thread and does only what is async-signal-safe: it reads the interrupted
//! registers, copies up to 4 KiB of the stack above the stack pointer, and
//! follows the frame-pointer chain, every read bounds-checked against the
//! thread's own stack (a stack pointer outside it, on a signal stack or a
//! coroutine's stack, gets the program counter only), into preallocated
//! static memory. No lock, no allocation, no unwinder: an unwinder
//! (`_Unwind_Backtrace`) can take the dynamic loader's lock, which a thread
//! that is itself unwinding a panic may hold, and then the handler would
//! deadlock that thread forever.
//!
//! The monitor waits for the capture at most `capture_timeout` (a thread
//! that blocks the signal, or sleeps uninterruptibly, never answers), then
//! rebuilds the stack on its own thread: the interrupted instruction; then
//! the return addresses found in the copied stack words below the first
//! frame-pointer frame (the callers of a library leaf function such as
//! `clock_nanosleep`, which keeps no frame pointer), each kept only if it
//! lies in executable memory right after a `call` instruction; then the
//! frame-pointer chain. Symbols are resolved with a cache, and an address
//! in code that the compiler inlined gives one frame per function inlined
//! there, innermost first (so a user's function that `std` code was inlined
//! into is still named).
//!
//! Frame pointers: this workspace compiles with `-C force-frame-pointers=yes`
//! (`.cargo/config.toml`), and Rust's standard library has them. Code built
//! without them shows fewer frames, never wrong ones.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const MAX_FP: usize = 64;
const STACK_WORDS: usize = 512;

/// The one capture in flight (the monitor captures one thread at a time).
struct Capture {
    /// The thread allowed to write; 0: none.
    target: AtomicI32,
    /// Serializes requesters (the monitor, and the test hook), so that two
    /// captures never share the buffers.
    requester: Mutex<()>,
    /// The handler writing now (its tid), so a late handler of an abandoned
    /// capture cannot interleave with the next one.
    busy: AtomicI32,
    request: AtomicU64,
    done: AtomicU64,
    /// The target's stack, `[lo, hi)`: the only memory the handler reads.
    lo: AtomicUsize,
    hi: AtomicUsize,
    pc: AtomicUsize,
    sp: AtomicUsize,
    fp0: AtomicUsize,
    nfp: AtomicUsize,
    fp: [AtomicUsize; MAX_FP],
    nstack: AtomicUsize,
    stack: [AtomicUsize; STACK_WORDS],
}

#[allow(clippy::declare_interior_mutable_const)] // Only used to build the arrays below.
const ZERO: AtomicUsize = AtomicUsize::new(0);

static CAPTURE: Capture = Capture {
    target: AtomicI32::new(0),
    requester: Mutex::new(()),
    busy: AtomicI32::new(0),
    request: AtomicU64::new(0),
    done: AtomicU64::new(0),
    lo: AtomicUsize::new(0),
    hi: AtomicUsize::new(0),
    pc: AtomicUsize::new(0),
    sp: AtomicUsize::new(0),
    fp0: AtomicUsize::new(0),
    nfp: AtomicUsize::new(0),
    fp: [ZERO; MAX_FP],
    nstack: AtomicUsize::new(0),
    stack: [ZERO; STACK_WORDS],
};

/// Registers of the interrupted code: program counter, stack pointer,
/// frame pointer.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
unsafe fn registers(ctx: *mut libc::c_void) -> (usize, usize, usize) {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let g = &uc.uc_mcontext.gregs;
    (
        g[libc::REG_RIP as usize] as usize,
        g[libc::REG_RSP as usize] as usize,
        g[libc::REG_RBP as usize] as usize,
    )
}

#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
unsafe fn registers(ctx: *mut libc::c_void) -> (usize, usize, usize) {
    // SAFETY: as above.
    let uc = unsafe { &*(ctx as *const libc::ucontext_t) };
    let m = &uc.uc_mcontext;
    (m.pc as usize, m.sp as usize, m.regs[29] as usize)
}

/// Whether stacks can be captured on this platform.
pub(crate) const SUPPORTED: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
));

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
extern "C" fn on_signal(_signal: libc::c_int, _info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: everything below is async-signal-safe: a system call without
    // side effects (gettid), atomics, and reads of this thread's own stack
    // within [sp, hi), which is mapped because lo <= sp < hi (else nothing
    // is read). errno is saved and restored.
    unsafe {
        let errno = *libc::__errno_location();
        let tid = libc::syscall(libc::SYS_gettid) as i32;
        let c = &CAPTURE;
        if tid == c.target.load(Ordering::Acquire)
            && c.busy
                .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let request = c.request.load(Ordering::Acquire);
            let lo = c.lo.load(Ordering::Relaxed);
            let mut hi = c.hi.load(Ordering::Relaxed);
            let (pc, sp, mut fp) = registers(ctx);
            c.pc.store(pc, Ordering::Relaxed);
            c.sp.store(sp, Ordering::Relaxed);
            c.fp0.store(fp, Ordering::Relaxed);
            // Interrupted on another stack (a signal handler's alternate
            // stack, a coroutine's): its extent is unknown, read nothing.
            if sp < lo || sp >= hi {
                hi = 0;
            }
            let mut n = 0;
            if sp != 0 && sp < hi {
                while n < STACK_WORDS && sp + (n + 1) * 8 <= hi {
                    c.stack[n].store(*((sp + n * 8) as *const usize), Ordering::Relaxed);
                    n += 1;
                }
            }
            c.nstack.store(n, Ordering::Relaxed);
            let mut k = 0;
            while k < MAX_FP && fp >= sp && fp % 8 == 0 && fp + 16 <= hi {
                let ret = *((fp + 8) as *const usize);
                let next = *(fp as *const usize);
                c.fp[k].store(ret, Ordering::Relaxed);
                k += 1;
                if next <= fp {
                    break;
                }
                fp = next;
            }
            c.nfp.store(k, Ordering::Relaxed);
            c.done.store(request, Ordering::Release);
            c.busy.store(0, Ordering::Release);
        }
        *libc::__errno_location() = errno;
    }
}

/// Installs the handler for `signal` (once per process).
pub(crate) fn install(signal: i32) -> Result<(), String> {
    static INSTALLED: OnceLock<Result<i32, String>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| install_handler(signal).map(|()| signal));
    match result {
        Ok(s) if *s == signal => Ok(()),
        Ok(s) => Err(format!(
            "the stack-capture handler is already installed for signal {s}"
        )),
        Err(e) => Err(e.clone()),
    }
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
fn install_handler(signal: i32) -> Result<(), String> {
    // SAFETY: a zeroed sigaction with our handler and flags, installed for a
    // signal the caller chose; the old action is not needed.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "cannot install a handler for signal {signal}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
fn install_handler(_signal: i32) -> Result<(), String> {
    Err("stack capture needs Linux on x86-64 or aarch64".into())
}

/// The raw result of a capture.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pc: usize,
    sp: usize,
    fp0: usize,
    fp: Vec<usize>,
    stack: Vec<usize>,
}

impl Raw {
    /// The frames the handler found: the interrupted instruction, and the
    /// frame-pointer chain.
    pub(crate) fn frames_found(&self) -> usize {
        usize::from(self.pc != 0) + self.fp.len()
    }
}

/// Captures the stack of thread `tid`, whose stack is `[lo, hi)`.
pub(crate) fn capture(
    tid: i32,
    (lo, hi): (usize, usize),
    signal: i32,
    timeout: Duration,
) -> Result<Raw, String> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let c = &CAPTURE;
    let _one_at_a_time = c.requester.lock().unwrap_or_else(|e| e.into_inner());
    let start = Instant::now();
    // A late handler of an abandoned capture may still be writing.
    while c.busy.load(Ordering::Acquire) != 0 {
        if start.elapsed() > timeout {
            return Err("an earlier capture is still being written".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let request = NEXT.fetch_add(1, Ordering::Relaxed);
    c.lo.store(lo, Ordering::Relaxed);
    c.hi.store(hi, Ordering::Relaxed);
    c.request.store(request, Ordering::Release);
    c.target.store(tid, Ordering::Release);
    // SAFETY: tgkill to a thread of this process, with a signal whose
    // handler is installed.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, signal) };
    if sent != 0 {
        c.target.store(0, Ordering::Release);
        return Err(format!(
            "cannot signal thread {tid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    loop {
        if c.done.load(Ordering::Acquire) == request {
            break;
        }
        if start.elapsed() > timeout {
            c.target.store(0, Ordering::Release);
            return Err(format!(
                "the thread did not answer within {timeout:?} (it blocks the signal, or sleeps uninterruptibly)"
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    c.target.store(0, Ordering::Release);
    let nfp = c.nfp.load(Ordering::Relaxed);
    let nstack = c.nstack.load(Ordering::Relaxed);
    Ok(Raw {
        pc: c.pc.load(Ordering::Relaxed),
        sp: c.sp.load(Ordering::Relaxed),
        fp0: c.fp0.load(Ordering::Relaxed),
        fp: c.fp[..nfp]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
        stack: c.stack[..nstack]
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect(),
    })
}

/// Resolves every frame of the calling thread's own stack, which loads the
/// symbol tables and debug information the first stall's stack would need
/// (this program's, the standard library's, the C library's: hundreds of
/// milliseconds for a large debug binary) into the resolver's cache, so the
/// first report does not wait for them. Run on a thread of its own (a
/// spawned one: its stack reaches into the C library's thread start).
pub(crate) fn warm_up() {
    let mut ips = Vec::with_capacity(32);
    backtrace::trace(|frame| {
        ips.push(frame.ip());
        ips.len() < 64
    });
    for ip in ips {
        backtrace::resolve(ip, |_| {});
    }
}

/// One frame of a stack, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The code address.
    pub addr: usize,
    /// The function, demangled, if known.
    pub function: Option<String>,
    /// Source file and line, if known.
    pub location: Option<String>,
}

/// Executable mappings of this process, from `/proc/self/maps`.
#[derive(Default)]
struct Text {
    ranges: Vec<(usize, usize)>,
}

impl Text {
    fn load() -> Text {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let ranges = maps
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let range = parts.next()?;
                let perms = parts.next()?;
                // Executable and readable: `is_return_address` reads the
                // code (execute-only memory exists, with protection keys).
                if !(perms.starts_with('r') && perms.contains('x')) {
                    return None;
                }
                let (a, b) = range.split_once('-')?;
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            })
            .collect();
        Text { ranges }
    }

    fn contains(&self, addr: usize, len: usize) -> bool {
        self.ranges
            .iter()
            .any(|(a, b)| addr >= *a && addr + len <= *b)
    }

    /// Whether `ret` is a return address: in executable memory, right after
    /// a call instruction.
    fn is_return_address(&self, ret: usize) -> bool {
        if ret < 8 || !self.contains(ret - 7, 7) {
            return false;
        }
        // SAFETY: the 7 bytes before `ret` are in an executable (hence
        // readable, for the text mappings of ordinary binaries) mapping.
        let b = unsafe { std::slice::from_raw_parts((ret - 7) as *const u8, 7) };
        if cfg!(target_arch = "x86_64") {
            // call rel32 (e8 + 4 bytes), or call r/m (ff /2, 2 to 7 bytes).
            b[2] == 0xe8 || (2..=7).any(|k| b[7 - k] == 0xff && ((b[8 - k] >> 3) & 7) == 2)
        } else {
            // aarch64: bl / blr before the return address.
            let word = u32::from_le_bytes([b[3], b[4], b[5], b[6]]);
            word & 0xfc00_0000 == 0x9400_0000 || word & 0xffff_fc1f == 0xd63f_0000
        }
    }
}

/// Resolves addresses to functions, once each.
pub(crate) struct Symbolizer {
    /// The frames of each address: more than one where code was inlined.
    cache: Mutex<HashMap<usize, Vec<Frame>>>,
    text: Mutex<Text>,
    /// Keep the debug information loaded between stalls (else it is
    /// dropped after each resolution that needed it: see
    /// [`Config::preload_symbols`](crate::Config::preload_symbols)).
    keep_loaded: bool,
}

impl Symbolizer {
    pub(crate) fn new(keep_loaded: bool) -> Self {
        Symbolizer {
            cache: Mutex::new(HashMap::new()),
            text: Mutex::new(Text::load()),
            keep_loaded,
        }
    }

    /// The frames at `addr`: the functions inlined there, innermost first,
    /// then the function the code belongs to (one frame when nothing was
    /// inlined, or nothing is known).
    fn resolve(&self, addr: usize, is_return: bool, loaded: &mut bool) -> Vec<Frame> {
        if let Some(f) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&addr)
        {
            return f.clone();
        }
        // `backtrace::resolve` looks up the byte before the address it is
        // given, as for a return address (which points after its call
        // instruction): give it the address after an exact one, such as
        // the interrupted instruction (else the first instruction of a
        // function would be named for the function before it).
        let probe = if is_return { addr } else { addr + 1 };
        let mut frames = Vec::new();
        *loaded = true;
        backtrace::resolve(probe as *mut std::ffi::c_void, |symbol| {
            frames.push(Frame {
                addr,
                function: symbol.name().map(|n| format!("{n:#}")),
                location: match (symbol.filename(), symbol.lineno()) {
                    (Some(f), Some(l)) => Some(format!("{}:{l}", f.display())),
                    (Some(f), None) => Some(f.display().to_string()),
                    _ => None,
                },
            });
        });
        if frames.is_empty() {
            frames.push(Frame {
                addr,
                function: None,
                location: None,
            });
        }
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr, frames.clone());
        frames
    }

    /// Rebuilds and resolves the frames of a capture, innermost first.
    pub(crate) fn frames(&self, raw: &Raw) -> Vec<Frame> {
        let mut addrs = vec![(raw.pc, false)];
        {
            let mut text = self.text.lock().unwrap_or_else(|e| e.into_inner());
            if !text.contains(raw.pc, 1) {
                *text = Text::load(); // a library loaded since
            }
            // Callers of frames without a frame pointer: return addresses in
            // the stack words below the first frame-pointer frame.
            let limit = if raw.fp0 > raw.sp {
                (raw.fp0 - raw.sp) / 8
            } else {
                raw.stack.len()
            };
            for &word in raw.stack.iter().take(limit.min(raw.stack.len())) {
                if text.is_return_address(word) {
                    addrs.push((word, true));
                }
            }
        }
        // A zero return address ends a frame-pointer chain (or is garbage
        // in one): it names nothing.
        addrs.extend(raw.fp.iter().filter(|&&a| a != 0).map(|&a| (a, true)));
        // The same return address from the scan and from the chain is one
        // frame.
        addrs.dedup_by(|b, a| a.0 == b.0);
        let mut loaded = false;
        let frames = addrs
            .into_iter()
            .flat_map(|(a, r)| self.resolve(a, r, &mut loaded))
            .collect();
        if loaded && !self.keep_loaded {
            // The parsed debug information of every library it looked in
            // (often more than 100 MB for a large binary); this stall's
            // frames stay in our own cache.
            backtrace::clear_symbol_cache();
        }
        frames
    }
}

/// A function name without generic arguments' noise or crate hashes:
/// `std[e28293b1aa0f68bd]::thread::sleep` becomes `std::thread::sleep`.
pub(crate) fn tidy(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut skip = false;
    for c in name.chars() {
        match c {
            '[' => skip = true,
            ']' if skip => skip = false,
            _ if !skip => out.push(c),
            _ => {}
        }
    }
    out
}

/// Code that is not the user's: the runtime, the libraries, the watchdog.
/// `location` is the frame's source file, if known.
fn is_infrastructure(name: &str, location: Option<&str>) -> bool {
    const PREFIXES: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "<std::",
        "<core::",
        "<alloc::",
        "tokio::",
        "<tokio::",
        "futures",
        "<futures",
        "rdq_watchdog::",
        "<rdq_watchdog::",
        "rdq::queue",
        "<rdq::queue",
        "backtrace::",
        "__rust",
        "rust_",
        "_start",
        "start_thread",
        "clone",
        "<F as core::future",
        "<&mut F as core::future",
        "<core::pin::Pin",
        "<core::panic::unwind_safe",
        "<std::panic::AssertUnwindSafe",
    ];
    // The standard library's own source (`/rustc/<commit>/library/...`):
    // also where std code inlined into a user's function comes from.
    const STD_SOURCE: &[&str] = &[
        "/library/std/src/",
        "/library/core/src/",
        "/library/alloc/src/",
    ];
    if location
        .is_some_and(|l| l.starts_with("/rustc/") || STD_SOURCE.iter().any(|s| l.contains(s)))
    {
        return true;
    }
    // `<i32 as core::iter::Step>::forward`: a standard trait implemented for a
    // type that is not the user's (a primitive, a generic parameter; a
    // user's type would be a path, `my_crate::Job`).
    if let Some((ty, tr)) = name.strip_prefix('<').and_then(|n| n.split_once(" as ")) {
        let standard_trait = ["core::", "std::", "alloc::"]
            .iter()
            .any(|p| tr.starts_with(p));
        if standard_trait && !ty.contains("::") {
            return true;
        }
    }
    !name.contains("::") || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Names the first frame of the user's own code (the culprit) and the call
/// it blocked in: the innermost standard-library function it called, else
/// the innermost function (none when the culprit's own code was running).
pub(crate) fn name_frames(frames: &[Frame]) -> (Option<String>, Option<String>) {
    let named: Vec<(String, Option<&str>)> = frames
        .iter()
        .filter_map(|f| Some((tidy(f.function.as_deref()?), f.location.as_deref())))
        .collect();
    let culprit = named
        .iter()
        .position(|(n, location)| !is_infrastructure(n, *location))
        .or_else(|| {
            named.iter().position(|(n, _)| {
                n.contains("::") && !n.starts_with("std::") && !n.starts_with("core::")
            })
        });
    // Calls made by the culprit (everything, without one): not the runtime
    // or the standard library that called it.
    let called = &named[..culprit.unwrap_or(named.len())];
    let blocking = called
        .iter()
        .find(|(n, _)| n.starts_with("std::") || n.starts_with("<std::"))
        .or_else(|| called.first());
    (
        blocking.map(|(n, _)| n.clone()),
        culprit.map(|i| named[i].0.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_drops_crate_hashes() {
        assert_eq!(
            tidy("std[e28293b1aa0f68bd]::thread::functions::sleep"),
            "std::thread::functions::sleep"
        );
        assert_eq!(
            tidy("<std[ab]::fs::File as std[ab]::io::Read>::read"),
            "<std::fs::File as std::io::Read>::read"
        );
    }

    #[test]
    fn a_zero_return_address_names_nothing() {
        // A frame-pointer chain through garbage can hold a zero "return
        // address": it names nothing. And an exact address (the
        // interrupted instruction) at a function's first byte names that
        // function, as does a return address just after it.
        let here = a_zero_return_address_names_nothing as *const () as usize;
        let raw = Raw {
            pc: here,
            sp: 0,
            fp0: 0,
            fp: vec![0, here + 1, 0],
            stack: Vec::new(),
        };
        let frames = Symbolizer::new(true).frames(&raw);
        assert!(frames.iter().all(|f| f.addr == here || f.addr == here + 1));
        assert!(frames.iter().any(|f| f
            .function
            .as_deref()
            .is_some_and(|n| n.contains("a_zero_return_address_names_nothing"))));
    }

    #[test]
    fn blocking_call_and_culprit() {
        let f = |n: &str| Frame {
            addr: 0,
            function: Some(n.to_owned()),
            location: None,
        };
        let frames = [
            f("__GI___clock_nanosleep"),
            f("std[e2]::thread::functions::sleep"),
            f("<i32 as core[e3]::iter::range::Step>::forward_unchecked"),
            // Generic standard code, for a user's type: where it comes from
            // tells.
            Frame {
                location: Some("/rustc/abc/library/alloc/src/slice.rs:200".into()),
                ..f("<[my_service::Job] as alloc[e4]::slice::hack::ConvertVec>::to_vec")
            },
            f("my_service::jobs::send_report"),
            f("<core::pin::Pin<P> as core::future::future::Future>::poll"),
            f("tokio::runtime::task::raw::poll"),
        ];
        let (blocking, culprit) = name_frames(&frames);
        assert_eq!(blocking.as_deref(), Some("std::thread::functions::sleep"));
        assert_eq!(culprit.as_deref(), Some("my_service::jobs::send_report"));
        // Computing in its own code: no call blocked (the runtime's use of
        // std further out is not the culprit's).
        let frames = [
            f("my_service::jobs::crunch"),
            f("std[e2]::thread::local::LocalKey<T>::try_with"),
            f("tokio::runtime::task::raw::poll"),
        ];
        assert_eq!(
            name_frames(&frames),
            (None, Some("my_service::jobs::crunch".to_owned()))
        );
    }
}
