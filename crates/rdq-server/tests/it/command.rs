//! The command executor against real processes. Test programs are `sh -c`
//! scripts and coreutils (the executor itself never uses a shell). Each test
//! marks its processes with a unique environment variable, so "is anything
//! of the job still alive?" is answered from /proc without knowing pids and
//! without being confused by other tests running in parallel.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdq_server::executor::command::{CommandExecutor, CommandOutput, CommandSpec, StdinMode};
use rdq_server::executor::JobDocument;
use rdq_store::{HandlerError, JobContext, JobId, Retry, Timestamp};
use serde_json::{json, Value};

const MARK: &str = "RDQ_TEST_MARK";
const KIB: usize = 1024;

fn ctx() -> JobContext {
    JobContext {
        id: JobId(7),
        queue: "thumbs".to_owned(),
        kind: "command".to_owned(),
        attempt: 1,
        max_attempts: 3,
        priority: 0,
        queued_at: Timestamp(0),
    }
}

/// A spec for `argv`, its processes marked with a fresh marker.
fn spec(argv: &[&str]) -> (CommandSpec, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let marker = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut spec = CommandSpec {
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        ..CommandSpec::default()
    };
    spec.env.insert(MARK.to_owned(), marker.clone());
    (spec, marker)
}

async fn run(spec: CommandSpec, args: Value) -> Result<CommandOutput, HandlerError> {
    CommandExecutor::new(spec).unwrap().run(&args, &ctx()).await
}

/// A live (not zombie) process.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    pgrp: i32,
}

/// `(state, ppid, pgrp)` from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, i32, i32)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

fn pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Live processes carrying `marker` in their environment.
fn marked(marker: &str) -> Vec<Proc> {
    let needle = format!("{MARK}={marker}\0").into_bytes();
    pids()
        .into_iter()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .filter_map(|pid| match stat(pid)? {
            ('Z' | 'X' | 'x', _, _) => None,
            (_, _, pgrp) => Some(Proc { pid, pgrp }),
        })
        .collect()
}

/// Live processes in the process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|&pid| match stat(pid) {
            Some((state, _, pgrp)) => pgrp == pgid && !matches!(state, 'Z' | 'X' | 'x'),
            None => false,
        })
        .collect()
}

/// Zombie children of this process.
fn zombie_children() -> Vec<i32> {
    let me = i32::try_from(std::process::id()).unwrap();
    pids()
        .into_iter()
        .filter(|&pid| matches!(stat(pid), Some(('Z', ppid, _)) if ppid == me))
        .collect()
}

/// Waits until `done` holds; fails after a generous 5 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not within 5 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until at least `n` marked processes run; returns them.
async fn started(marker: &str, n: usize) -> Vec<Proc> {
    let mut found = Vec::new();
    eventually(&format!("{n} processes of the job started"), || {
        found = marked(marker);
        found.len() >= n
    })
    .await;
    found
}

fn marker_line(omitted: usize) -> String {
    format!("\n[... {omitted} bytes omitted ...]\n")
}

// 1
#[tokio::test]
async fn ten_mib_on_stdout_is_capped_with_a_marker() {
    let (spec, _) = spec(&["sh", "-c", "head -c 10485760 /dev/zero | tr '\\0' x"]);
    let start = Instant::now();
    let out = run(spec, json!({})).await.unwrap();
    eprintln!("10 MiB on stdout: {:?}", start.elapsed());
    assert_eq!(out.stdout_bytes, 10 * 1024 * 1024);
    let half = "x".repeat(32 * KIB);
    let want = format!("{half}{}{half}", marker_line(10 * 1024 * 1024 - 64 * KIB));
    assert_eq!(out.stdout, want);
    assert_eq!((out.stderr.as_str(), out.stderr_bytes), ("", 0));
    assert_eq!((out.exit_code, out.signal), (Some(0), None));
    assert!(start.elapsed() < Duration::from_secs(30));
}

// 2
#[tokio::test]
async fn one_mib_on_stderr_while_stdout_is_silent() {
    let (spec, _) = spec(&["sh", "-c", "head -c 1048576 /dev/zero | tr '\\0' e >&2"]);
    let out = run(spec, json!({})).await.unwrap();
    assert_eq!((out.stdout.as_str(), out.stdout_bytes), ("", 0));
    assert_eq!(out.stderr_bytes, 1024 * 1024);
    let half = "e".repeat(32 * KIB);
    assert_eq!(
        out.stderr,
        format!("{half}{}{half}", marker_line(1024 * 1024 - 64 * KIB))
    );
}

// 3
#[tokio::test]
async fn both_streams_over_the_cap_interleaved() {
    let script =
        "o=$(head -c 4000 /dev/zero | tr '\\0' o); e=$(head -c 4000 /dev/zero | tr '\\0' e); \
                  for i in $(seq 50); do echo \"$o\"; echo \"$e\" >&2; done";
    let (spec, _) = spec(&["sh", "-c", script]);
    let out = run(spec, json!({})).await.unwrap();
    for (text, bytes, c) in [
        (&out.stdout, out.stdout_bytes, "o"),
        (&out.stderr, out.stderr_bytes, "e"),
    ] {
        let full = format!("{}\n", c.repeat(4000)).repeat(50);
        assert_eq!(bytes, full.len() as u64);
        let want = format!(
            "{}{}{}",
            &full[..32 * KIB],
            marker_line(full.len() - 64 * KIB),
            &full[full.len() - 32 * KIB..]
        );
        assert_eq!(*text, want);
    }
}

// 4
#[tokio::test]
async fn a_timeout_kills_the_grandchildren() {
    let (mut spec, marker) = spec(&["sh", "-c", "sleep 1000 & sleep 1000 & wait"]);
    spec.timeout = Some(Duration::from_secs(2));
    spec.grace = Duration::from_secs(30);
    let start = Instant::now();
    let job = tokio::spawn(run(spec, json!({})));
    let procs = started(&marker, 3).await;
    let pgid = procs[0].pgrp;
    assert!(
        procs.iter().all(|p| p.pgrp == pgid) && procs.iter().any(|p| p.pid == pgid),
        "{procs:?}"
    );

    let e = job.await.unwrap().unwrap_err();
    assert_eq!(e.message(), "timed out after 2s; process group killed");
    assert_eq!(e.retry(), Retry::Backoff);
    // Everything left on SIGTERM, so the 30 s grace was not waited out.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    eventually("the group is gone", || group_members(pgid).is_empty()).await;
    assert!(marked(&marker).is_empty());
}

// 5
#[tokio::test]
async fn a_grandchild_holding_the_pipe_does_not_hang_the_job() {
    let (spec, marker) = spec(&["sh", "-c", "sleep 1000 & echo done"]);
    let start = Instant::now();
    let out = run(spec, json!({})).await.unwrap();
    eprintln!(
        "grandchild holding the pipes: finished in {:?}",
        start.elapsed()
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(out.stdout, "done\n");
    assert_eq!(out.exit_code, Some(0));
    eventually("the grandchild is killed", || marked(&marker).is_empty()).await;
}

// 6
#[tokio::test]
async fn a_child_ignoring_sigterm_is_killed_after_the_grace() {
    // The whole group ignores TERM; then only a grandchild does (the child
    // exits on TERM but the grandchild keeps the pipes).
    for script in [
        "trap '' TERM; sleep 1000",
        "(trap '' TERM; sleep 1000) & wait",
    ] {
        let (mut spec, marker) = spec(&["sh", "-c", script]);
        spec.timeout = Some(Duration::from_millis(300));
        spec.grace = Duration::from_millis(300);
        let start = Instant::now();
        let e = run(spec, json!({})).await.unwrap_err();
        let took = start.elapsed();
        eprintln!("{script:?}: timed out, killed after {took:?}");
        assert_eq!(e.message(), "timed out after 300ms; process group killed");
        assert_eq!(e.retry(), Retry::Backoff);
        assert!(
            took >= Duration::from_millis(600),
            "SIGKILL before the grace: {took:?}"
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
        eventually("the group is gone", || marked(&marker).is_empty()).await;
    }
}

// 7
#[tokio::test]
async fn exit_code_and_signal_are_reported_distinctly() {
    let (spec_exit, _) = spec(&["sh", "-c", "echo oops >&2; exit 3"]);
    let e = run(spec_exit, json!({})).await.unwrap_err();
    assert_eq!(e.message(), "exit code 3; stderr: oops");
    assert_eq!(e.retry(), Retry::Backoff);

    let (spec_kill, _) = spec(&["sh", "-c", "kill -9 $$"]);
    let e = run(spec_kill, json!({})).await.unwrap_err();
    assert_eq!(e.message(), "killed by signal 9 (SIGKILL)");
    assert_eq!(e.retry(), Retry::Backoff);
}

// 8
#[tokio::test]
async fn not_found_permission_denied_and_bad_directories_are_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.sh");
    fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
    let a_file = dir.path().join("a-file");
    fs::write(&a_file, "").unwrap();
    let dir_path = dir.path().to_str().unwrap();

    let expect = |(spec, _): (CommandSpec, String), starts: String| async move {
        let e = run(spec, json!({})).await.unwrap_err();
        assert_eq!(e.retry(), Retry::Never, "{}", e.message());
        assert!(
            e.message().starts_with(&starts),
            "want {starts:?}, got {:?}",
            e.message()
        );
        e
    };

    let e = expect(
        spec(&["rdq-no-such-program"]),
        "command not found: rdq-no-such-program (PATH=".into(),
    )
    .await;
    eprintln!("{}", e.message());
    expect(spec(&["./missing"]), "command not found: ./missing".into()).await;
    let e = expect(
        spec(&[plain.to_str().unwrap()]),
        "permission denied: ".into(),
    )
    .await;
    eprintln!("{}", e.message());
    // Found on the child's PATH, but not executable.
    let (mut s, m) = spec(&["plain.sh"]);
    s.env
        .insert("PATH".into(), format!("{dir_path}:/usr/bin:/bin"));
    let e = expect((s, m), "permission denied: plain.sh (found ".into()).await;
    eprintln!("{}", e.message());
    expect(spec(&[dir_path]), "permission denied: ".into()).await;

    let (mut s, m) = spec(&["true"]);
    s.cwd = Some(dir.path().join("missing"));
    let e = expect(
        (s, m),
        format!("working directory does not exist: {dir_path}/missing"),
    )
    .await;
    eprintln!("{}", e.message());
    let (mut s, m) = spec(&["true"]);
    s.cwd = Some(a_file.clone());
    expect(
        (s, m),
        format!("working directory is not a directory: {}", a_file.display()),
    )
    .await;

    let interp = dir.path().join("interp.sh");
    fs::write(&interp, "#!/nonexistent/interpreter\n").unwrap();
    fs::set_permissions(&interp, fs::Permissions::from_mode(0o755)).unwrap();
    let e = expect(spec(&[interp.to_str().unwrap()]), "cannot run ".into()).await;
    assert!(e.message().contains("interpreter"), "{}", e.message());
    let bare = dir.path().join("bare");
    fs::write(&bare, "echo no-shebang\n").unwrap();
    fs::set_permissions(&bare, fs::Permissions::from_mode(0o755)).unwrap();
    // Run as is (never handed to /bin/sh as execvp would).
    let e = expect(spec(&[bare.to_str().unwrap()]), "cannot run ".into()).await;
    assert!(
        e.message().contains("a script needs a #! line"),
        "{}",
        e.message()
    );

    // A missing field is permanent too, and names the placeholder.
    let e = run(spec(&["echo", "{args.user.name}"]).0, json!({"user": {}}))
        .await
        .unwrap_err();
    assert_eq!(e.retry(), Retry::Never);
    assert!(e.message().contains("{args.user.name}"), "{}", e.message());

    // The program is looked up on the child's PATH, not the server's.
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o755)).unwrap();
    let (mut s, _) = spec(&["plain.sh"]);
    s.env.insert("PATH".into(), dir_path.to_owned());
    assert_eq!(run(s, json!({})).await.unwrap().stdout, "hi\n");

    // A relative program runs from the (relative) working directory.
    let (mut s, _) = spec(&["./plain.sh"]);
    s.cwd = Some(relative_to_here(dir.path()));
    assert_eq!(run(s, json!({})).await.unwrap().stdout, "hi\n");
}

/// `to` as a path relative to this process's working directory.
fn relative_to_here(to: &Path) -> PathBuf {
    let here = std::env::current_dir().unwrap();
    let common = here
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut rel: PathBuf = here.components().skip(common).map(|_| "..").collect();
    rel.extend(to.components().skip(common));
    assert!(rel.is_relative());
    rel
}

// 9
#[tokio::test]
async fn stdin_is_empty_or_exactly_the_job_json() {
    let args = json!({"user": "ann", "n": [1, 2]});

    let (mut s, _) = spec(&["wc", "-c"]);
    s.stdin = StdinMode::Empty;
    s.timeout = Some(Duration::from_secs(5)); // were stdin left open, wc would wait
    assert_eq!(run(s, args.clone()).await.unwrap().stdout.trim(), "0");

    let (mut s, _) = spec(&["cat"]);
    s.timeout = Some(Duration::from_secs(5));
    let out = run(s, args.clone()).await.unwrap();
    let ctx = ctx();
    assert_eq!(
        out.stdout,
        serde_json::to_string(&JobDocument::new(&args, &ctx)).unwrap()
    );

    // A document larger than a pipe, read slowly through a pipeline.
    let big = json!({"blob": "b".repeat(300 * KIB)});
    let doc_len = serde_json::to_vec(&JobDocument::new(&big, &ctx))
        .unwrap()
        .len();
    let (mut s, _) = spec(&["sh", "-c", "cat | wc -c"]);
    s.timeout = Some(Duration::from_secs(10));
    assert_eq!(
        run(s, big.clone()).await.unwrap().stdout.trim(),
        doc_len.to_string()
    );

    // A child that never reads stdin is not blocked by it, nor are we.
    let (mut s, _) = spec(&["true"]);
    s.timeout = Some(Duration::from_secs(10));
    assert_eq!(run(s, big).await.unwrap().exit_code, Some(0));
}

// 10
#[tokio::test]
async fn the_environment_is_clean_except_the_allowlist() {
    // SAFETY of set_var (a safe fn in edition 2021): std's env lock guards
    // these against the spawns of other tests, and no other thread here
    // reads the environment through libc.
    std::env::set_var("RDQ_TEST_SECRET_VAR", "hunter2");
    std::env::set_var("RDQ_TEST_ALLOWED_VAR", "fine");
    let (mut s, marker) = spec(&["env"]);
    s.env_allow = vec!["RDQ_TEST_ALLOWED_VAR".into(), "RDQ_TEST_UNSET_VAR".into()];
    s.env.insert("RDQ_SET".into(), "a b=c".into());
    s.env.insert("LANG".into(), "C.UTF-8".into()); // env wins over copied names
    let out = run(s, json!({})).await.unwrap();

    let vars: Vec<(&str, &str)> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    let names: BTreeSet<&str> = vars.iter().map(|(k, _)| *k).collect();
    let allowed: BTreeSet<&str> = [
        "PATH",
        "LANG",
        "LC_ALL",
        "TZ",
        "HOME",
        "RDQ_TEST_ALLOWED_VAR",
        "RDQ_SET",
        MARK,
    ]
    .into();
    assert!(
        names.is_subset(&allowed),
        "unexpected: {:?}",
        names.difference(&allowed)
    );
    assert!(!out.stdout.contains("hunter2"));
    assert!(vars.contains(&("RDQ_TEST_ALLOWED_VAR", "fine")));
    assert!(vars.contains(&("RDQ_SET", "a b=c")));
    assert!(vars.contains(&("LANG", "C.UTF-8")));
    assert!(vars.contains(&(MARK, marker.as_str())));
    if let Ok(path) = std::env::var("PATH") {
        assert!(vars.contains(&("PATH", path.as_str())));
    }
}

// 11
/// Runs [`leak_probe`] in a process of its own: other tests of this binary
/// (and other modules) open pipes and have children while they run.
#[test]
fn many_jobs_leave_no_zombies_or_descriptors() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "command::leak_probe",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "the probe did not run: {text}");
}

/// Descriptors a job could leak: pipes, pidfds, /dev/null.
fn job_fds() -> BTreeSet<(String, String)> {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let target = fs::read_link(e.path()).ok()?.to_string_lossy().into_owned();
            let kind =
                target.starts_with("pipe:") || target.contains("pidfd") || target == "/dev/null";
            kind.then(|| (e.file_name().to_string_lossy().into_owned(), target))
        })
        .collect()
}

fn fd_count() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in a process of its own by many_jobs_leave_no_zombies_or_descriptors"]
async fn leak_probe() {
    use std::sync::Arc;
    let ok = Arc::new(CommandExecutor::new(spec(&["true"]).0).unwrap());
    let mut cat = spec(&["sh", "-c", "cat; echo to-stderr >&2"]).0;
    cat.timeout = Some(Duration::from_secs(10));
    let cat = Arc::new(CommandExecutor::new(cat).unwrap());
    let mut empty = spec(&["cat"]).0;
    empty.stdin = StdinMode::Empty;
    let empty = Arc::new(CommandExecutor::new(empty).unwrap());
    let fail = Arc::new(CommandExecutor::new(spec(&["sh", "-c", "exit 7"]).0).unwrap());
    let killed = Arc::new(CommandExecutor::new(spec(&["sh", "-c", "kill -9 $$"]).0).unwrap());
    let holder =
        Arc::new(CommandExecutor::new(spec(&["sh", "-c", "sleep 1000 & echo x"]).0).unwrap());
    let mut slow = spec(&["sleep", "1000"]).0;
    slow.timeout = Some(Duration::from_millis(50));
    slow.grace = Duration::from_millis(50);
    let slow = Arc::new(CommandExecutor::new(slow).unwrap());
    let missing = Arc::new(CommandExecutor::new(spec(&["rdq-no-such-program"]).0).unwrap());

    // Warm up: the runtime's process and signal machinery opens its own
    // descriptors once.
    ok.run(&json!({}), &ctx()).await.unwrap();
    let fds_before = job_fds();
    let count_before = fd_count();

    let start = Instant::now();
    for batch in 0..25 {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            let n = batch * 20 + i;
            let exec = match n % 10 {
                0..=2 => ok.clone(),
                3 | 4 => cat.clone(),
                5 => empty.clone(),
                6 => fail.clone(),
                7 => killed.clone(),
                8 => missing.clone(),
                _ if n % 50 == 9 => holder.clone(),
                _ if n % 50 == 19 => slow.clone(),
                _ => ok.clone(),
            };
            set.spawn(async move { exec.run(&json!({"n": n}), &ctx()).await.is_ok() });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap();
        }
    }
    let took = start.elapsed();

    let mut zombies = Vec::new();
    eventually("no zombie children", || {
        zombies = zombie_children();
        zombies.is_empty()
    })
    .await;
    let fds_after = job_fds();
    let count_after = fd_count();
    println!(
        "500 jobs in {took:?}; descriptors before {count_before}, after {count_after}; \
         pipes/pidfds/null before {}, after {}",
        fds_before.len(),
        fds_after.len()
    );
    let leaked: Vec<_> = fds_after.difference(&fds_before).collect();
    assert!(leaked.is_empty(), "leaked descriptors: {leaked:?}");
    assert_eq!(count_after, count_before);
}

// 12
#[tokio::test]
async fn cancelling_a_job_kills_its_group() {
    // Once a group that dies on TERM, once a group that ignores it (SIGKILL
    // after the grace).
    for script in [
        "sleep 1000 & sleep 1000 & wait",
        "trap '' TERM; sleep 1000 & sleep 1000 & wait",
    ] {
        let (mut spec, marker) = spec(&["sh", "-c", script]);
        spec.grace = Duration::from_millis(200);
        let exec = CommandExecutor::new(spec).unwrap();
        let (args, ctx) = (json!({}), ctx());
        let procs = tokio::select! {
            r = exec.run(&args, &ctx) => panic!("the job ended by itself: {r:?}"),
            p = started(&marker, 3) => p,
        }; // The run future is dropped here.
        let leader = procs.iter().find(|p| p.pid == p.pgrp).copied().unwrap();
        eventually("the group is gone", || {
            group_members(leader.pgrp).is_empty()
        })
        .await;
        assert!(marked(&marker).is_empty());
        eventually("the child is reaped", || {
            !zombie_children().contains(&leader.pid)
        })
        .await;
    }
}

// 13
#[tokio::test]
async fn no_argument_passes_through_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("x")).unwrap();
    let args = json!({
        "evil": "$(touch pwned); rm -rf x",
        "tick": "`touch pwned2`",
        "glob": "*",
        "spaced": "a b\tc\nd",
        "quotes": "'\"\\",
        "empty": "",
    });
    let (mut s, _) = spec(&[
        "printf",
        "[%s]\\n",
        "{args.evil}",
        "{args.tick}",
        "{args.glob}",
        "{args.spaced}",
        "{args.quotes}",
        "{args.empty}",
        "--{args.evil}--",
    ]);
    s.cwd = Some(dir.path().to_owned());
    let out = run(s, args).await.unwrap();
    assert_eq!(
        out.stdout,
        "[$(touch pwned); rm -rf x]\n[`touch pwned2`]\n[*]\n[a b\tc\nd]\n['\"\\]\n[]\n\
         [--$(touch pwned); rm -rf x--]\n"
    );
    assert!(!Path::new(&dir.path().join("pwned")).exists());
    assert!(!Path::new(&dir.path().join("pwned2")).exists());
    assert!(dir.path().join("x").is_dir());
}
