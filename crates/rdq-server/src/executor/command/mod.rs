//! The `command` executor: run a program for each job, with arguments taken
//! from the job, and report how it ended.
//!
//! # Arguments, never a shell
//!
//! `argv` comes from the queue's config; each element may hold placeholders
//! filled from the job (`{args.user}`, `{args.a.b}`, `{args}`, `{id}`,
//! `{attempt}`, `{queue}`, `{kind}`; `{{` and `}}` for literal braces). A
//! string value is inserted as is, any other value as its JSON text, and each
//! element stays exactly one argument: no shell ever sees it, so
//! `$(touch pwned); rm -rf x` arrives as that text. The program (`argv[0]`)
//! is found like `execvp` does, on the `PATH` of the child's environment.
//!
//! # Input and environment
//!
//! With [`StdinMode::Job`] the child reads the job's [`JobDocument`] as JSON,
//! then end of file; with [`StdinMode::Empty`] it reads end of file at once.
//! It never inherits the server's stdin. Its environment starts empty: only
//! [`BASE_ENV`] and the names in [`CommandSpec::env_allow`] are copied from
//! the server's, then [`CommandSpec::env`] is set, so the server's secrets
//! do not leak into every job.
//!
//! # Output: drained concurrently, capped
//!
//! A pipe holds 64 KiB. A child that fills its stderr pipe blocks until
//! someone reads it; reading stdout to its end first would then wait forever
//! for a child waiting on us. So stdout, stderr, the stdin writer and the
//! wait for the exit all make progress together. Each stream keeps at most
//! [`CommandSpec::output_cap`] bytes: the first half and the last half, with
//! a line `[... N bytes omitted ...]` between; the byte counts are exact.
//! Output is decoded as lossy UTF-8.
//!
//! # Process groups and the kill sequence
//!
//! The child leads a new process group, and every signal goes to the whole
//! group: killing only the child would leave its children running, holding
//! our pipes open and doing work nobody waits for. When the executor's
//! [`timeout`](CommandSpec::timeout) passes, the group gets SIGTERM (and
//! SIGCONT, so stopped members can act on it); once everything has exited,
//! or after [`grace`](CommandSpec::grace) at the latest, SIGKILL. The job
//! fails, retryably, with "timed out after …; process group killed".
//!
//! The pipes, not the child, say when output is complete, and a grandchild
//! may keep them open after the child has exited (`daemon &`). So once the
//! child has exited the drains get [`DRAIN_AFTER_EXIT`]; then whatever is
//! left of the group is killed and the job ends with what was read. Either
//! way, when [`CommandExecutor::run`] returns nothing of the group is left
//! (a process that moved itself to another group or session has left the
//! job, and is not followed).
//!
//! # Cancellation
//!
//! Dropping the [`run`](CommandExecutor::run) future (the job was cancelled,
//! or the queue's own timeout fired) terminates the group the same way:
//! SIGTERM at once, SIGKILL after the grace from a spawned task (a `Drop`
//! cannot wait), and the child is reaped there. No zombie and no descriptor
//! outlives a job.
//!
//! # Platform
//!
//! Unix process groups and signals; the child's exit is seen, without
//! reaping it, through a pidfd (Linux 5.3 and later), else by polling
//! `waitid(WNOWAIT)`. Keeping the child unreaped until the last signal is
//! what makes signalling its group id safe from pid reuse.
//!
//! # Outcomes
//!
//! | what happened | result |
//! |---|---|
//! | exit code 0 | `Ok(`[`CommandOutput`]`)` |
//! | exit code N ≠ 0 | retryable: "exit code N; stderr: …" |
//! | killed by a signal | retryable: "killed by signal 9 (SIGKILL); stderr: …" |
//! | the timeout passed | retryable: "timed out after …; process group killed" |
//! | a placeholder names no field | permanent, naming the placeholder |
//! | program not found | permanent: "command not found: X (PATH=…)" |
//! | not executable | permanent: "permission denied: …" |
//! | working directory missing | permanent: "working directory does not exist: …" |
//! | the system is short of processes or descriptors | retryable: "could not start X: …" |

mod drain;
mod group;
mod spawn;
mod supervise;
mod template;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rdq_store::{HandlerError, JobContext};
use serde::Serialize;
use tokio::time::Instant;

use self::group::Group;
use self::template::Template;
use super::JobDocument;

/// Names always copied from the server's environment into the child's, when
/// set there.
pub const BASE_ENV: [&str; 5] = ["PATH", "LANG", "LC_ALL", "TZ", "HOME"];

/// The default of [`CommandSpec::output_cap`]: 64 KiB per stream.
pub const DEFAULT_OUTPUT_CAP: usize = 64 * 1024;

/// The default of [`CommandSpec::grace`]: 5 s between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// How long the output may still flow once the child has exited, before the
/// rest of its group is killed.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

/// How much of stderr an error message quotes.
const STDERR_TAIL: usize = 400;

/// Resolved settings of a command executor (built by the config loader).
#[derive(Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The program and its arguments; placeholders are allowed in every
    /// element (see the [module docs](self)).
    pub argv: Vec<String>,
    /// The child's working directory; the server's when `None`.
    pub cwd: Option<PathBuf>,
    /// Variables set in the child (they win over copied ones).
    pub env: BTreeMap<String, String>,
    /// Names copied from the server's environment, besides [`BASE_ENV`].
    pub env_allow: Vec<String>,
    /// What the child reads on stdin.
    pub stdin: StdinMode,
    /// Bytes kept per stream (first half and last half).
    pub output_cap: usize,
    /// The executor's own timeout: SIGTERM to the group, then the grace,
    /// then SIGKILL. `None` for no limit (the queue's may still apply).
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
}

impl Default for CommandSpec {
    /// No argv (which [`CommandExecutor::new`] refuses), stdin
    /// [`StdinMode::Job`], [`DEFAULT_OUTPUT_CAP`], no timeout,
    /// [`DEFAULT_GRACE`].
    fn default() -> Self {
        CommandSpec {
            argv: Vec::new(),
            cwd: None,
            env: BTreeMap::new(),
            env_allow: Vec::new(),
            stdin: StdinMode::Job,
            output_cap: DEFAULT_OUTPUT_CAP,
            timeout: None,
            grace: DEFAULT_GRACE,
        }
    }
}

impl fmt::Debug for CommandSpec {
    /// Shows the names in `env`, not the values (they may be secrets).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandSpec")
            .field("argv", &self.argv)
            .field("cwd", &self.cwd)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("env_allow", &self.env_allow)
            .field("stdin", &self.stdin)
            .field("output_cap", &self.output_cap)
            .field("timeout", &self.timeout)
            .field("grace", &self.grace)
            .finish()
    }
}

/// What a command reads on stdin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdinMode {
    /// The job's [`JobDocument`] as JSON, then end of file.
    #[default]
    Job,
    /// Nothing: end of file at once.
    Empty,
}

/// How a command that exited with code 0 ran: the result of a successful
/// job.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code (`Some(0)` on success).
    pub exit_code: Option<i32>,
    /// The signal that killed the process, if one did (`None` on success).
    pub signal: Option<i32>,
    /// Stdout as kept (see [`CommandSpec::output_cap`]), lossy UTF-8.
    pub stdout: String,
    /// Stderr as kept, lossy UTF-8.
    pub stderr: String,
    /// Bytes written to stdout in all.
    pub stdout_bytes: u64,
    /// Bytes written to stderr in all.
    pub stderr_bytes: u64,
    /// From start to exit and end of output, in milliseconds.
    pub duration_ms: u64,
}

/// The children of command jobs running now, by job id, for the dump
/// (`GET /api/v1/dump`): which process each job waits on.
#[derive(Debug, Default)]
pub struct Children(std::sync::Mutex<std::collections::HashMap<i64, i32>>);

impl Children {
    /// The pid of job `id`'s child, if it runs one now.
    pub fn get(&self, id: i64) -> Option<i32> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    fn register(self: &Arc<Self>, id: i64, pid: i32) -> ChildEntry {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, pid);
        ChildEntry {
            children: self.clone(),
            id,
        }
    }
}

/// Removes a job's child from [`Children`] when the run ends (or is dropped).
struct ChildEntry {
    children: Arc<Children>,
    id: i64,
}

impl Drop for ChildEntry {
    fn drop(&mut self) {
        self.children
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// Runs a program per job: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct CommandExecutor {
    spec: CommandSpec,
    argv: Vec<Template>,
    children: Option<Arc<Children>>,
}

impl CommandExecutor {
    /// Checks `spec` (argv non-empty, placeholders well formed, cap above
    /// zero, a timeout above zero, names and values a process can hold);
    /// the error says what to fix.
    pub fn new(spec: CommandSpec) -> Result<Self, String> {
        if spec.argv.is_empty() {
            return Err("argv is empty: give the program and its arguments, \
                        e.g. argv = [\"/usr/local/bin/resize\", \"{args.path}\"]"
                .to_owned());
        }
        let argv = spec
            .argv
            .iter()
            .enumerate()
            .map(|(i, a)| Template::parse(a).map_err(|e| format!("argv[{i}] = {a:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        if spec.output_cap == 0 {
            return Err(format!(
                "output_cap is 0; give the bytes to keep per stream (default {DEFAULT_OUTPUT_CAP})"
            ));
        }
        if spec.timeout == Some(Duration::ZERO) {
            return Err("timeout is 0; give a positive duration, or none for no limit".to_owned());
        }
        if let Some(cwd) = &spec.cwd {
            if cwd.as_os_str().as_bytes().contains(&0) {
                return Err(format!("cwd {cwd:?} contains a NUL byte"));
            }
        }
        for name in spec.env.keys().chain(&spec.env_allow) {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!(
                    "environment name {name:?} is not valid: \
                     it must be non-empty, without '=' or NUL"
                ));
            }
        }
        if let Some((name, _)) = spec.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(format!("the value of env {name:?} contains a NUL byte"));
        }
        Ok(CommandExecutor {
            spec,
            argv,
            children: None,
        })
    }

    /// Records each job's child in `children` while it runs.
    pub fn with_children(mut self, children: Arc<Children>) -> Self {
        self.children = Some(children);
        self
    }

    /// The settings this executor runs with.
    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }

    /// Runs the command for one job. `Ok` when it exits with code 0;
    /// otherwise a [`HandlerError`], permanent when retrying cannot help
    /// (see the outcomes in the [module docs](self)). Dropping the future
    /// kills the command's process group.
    pub async fn run(
        &self,
        args: &serde_json::Value,
        ctx: &JobContext,
    ) -> Result<CommandOutput, HandlerError> {
        let argv = self.fill(args, ctx)?;
        let Some((program, rest)) = argv.split_first() else {
            return Err(HandlerError::permanent("argv is empty"));
        };
        let cwd = self.spec.cwd.as_deref();
        if let Some(dir) = cwd {
            spawn::check_cwd(dir)?;
        }
        let env = spawn::child_env(&self.spec);
        let path = env.get(OsStr::new("PATH")).map(|p| p.as_os_str());
        let file = spawn::resolve(program, path, cwd)?;
        let input = match self.spec.stdin {
            StdinMode::Job => Some(serde_json::to_vec(&JobDocument::new(args, ctx)).map_err(
                |e| HandlerError::permanent(format!("the job document is not JSON: {e}")),
            )?),
            StdinMode::Empty => None,
        };

        let mut command = tokio::process::Command::new(&file);
        command
            .arg0(program)
            .args(rest)
            .env_clear()
            .envs(&env)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // Only a backstop: `Group` kills the whole group and reaps.
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            command.current_dir(dir);
        }
        let started = Instant::now();
        let child = command
            .spawn()
            .map_err(|e| spawn::spawn_error(program, &file, cwd, &e))?;
        let Some(group) = Group::new(child, self.spec.grace) else {
            return Err(HandlerError::msg(format!(
                "{program} started without a pid"
            )));
        };
        tracing::debug!(pid = group.pgid(), program = %program, "command started");
        let _child = self
            .children
            .as_ref()
            .map(|c| c.register(ctx.id.0, group.pgid()));

        let end = supervise::supervise(&self.spec, group, input).await;
        let output = CommandOutput {
            exit_code: end.status.and_then(|s| s.code()),
            signal: end.status.and_then(|s| s.signal()),
            stdout: end.stdout.text(),
            stderr: end.stderr.text(),
            stdout_bytes: end.stdout.total(),
            stderr_bytes: end.stderr.total(),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let tail = stderr_tail(&output.stderr);
        if end.timed_out {
            let after = self.spec.timeout.unwrap_or_default();
            return Err(HandlerError::msg(format!(
                "timed out after {after:?}; process group killed{tail}"
            )));
        }
        match end.status {
            Some(status) if status.success() => Ok(output),
            Some(status) => Err(HandlerError::msg(format!("{}{tail}", describe(status)))),
            None => Err(HandlerError::msg(format!(
                "{program} did not go away after SIGKILL to its process group{tail}"
            ))),
        }
    }

    /// The argv for this job.
    fn fill(
        &self,
        args: &serde_json::Value,
        ctx: &JobContext,
    ) -> Result<Vec<String>, HandlerError> {
        self.argv
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.fill(args, ctx)
                    .map_err(|e| HandlerError::permanent(format!("argv[{i}]: {e}")))
            })
            .collect()
    }
}

/// "exit code 3", or "killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    if let Some(signal) = status.signal() {
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        return match signal_name(signal) {
            Some(name) => format!("killed by signal {signal} ({name}{core})"),
            None => format!("killed by signal {signal}{core}"),
        };
    }
    format!("ended abnormally ({status})")
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

/// `"; stderr: …"` with the end of stderr, or nothing when it is empty.
fn stderr_tail(stderr: &str) -> String {
    let trimmed = stderr.trim_end();
    if trimmed.is_empty() {
        return String::new();
    }
    let mut start = trimmed.len().saturating_sub(STDERR_TAIL);
    while !trimmed.is_char_boundary(start) {
        start += 1;
    }
    let more = if start > 0 { "…" } else { "" };
    format!("; stderr: {more}{}", trimmed[start..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> CommandSpec {
        CommandSpec {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            ..CommandSpec::default()
        }
    }

    #[test]
    fn new_says_what_to_fix() {
        let cases = [
            (spec(&[]), "argv is empty"),
            (spec(&["echo", "{args.x"]), "argv[1]"),
            (
                CommandSpec {
                    output_cap: 0,
                    ..spec(&["true"])
                },
                "output_cap",
            ),
            (
                CommandSpec {
                    timeout: Some(Duration::ZERO),
                    ..spec(&["true"])
                },
                "timeout",
            ),
            (
                CommandSpec {
                    env_allow: vec!["A=B".to_owned()],
                    ..spec(&["true"])
                },
                "\"A=B\"",
            ),
        ];
        for (spec, hint) in cases {
            let e = CommandExecutor::new(spec).unwrap_err();
            assert!(e.contains(hint), "{hint}: {e}");
        }
        assert!(CommandExecutor::new(spec(&["{args.prog}", "{{literal}}"])).is_ok());
    }

    #[test]
    fn debug_hides_env_values() {
        let mut s = spec(&["true"]);
        s.env.insert("TOKEN".to_owned(), "hunter2".to_owned());
        let shown = format!("{s:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn stderr_tail_is_short_and_on_a_char_boundary() {
        assert_eq!(stderr_tail(" \n"), "");
        assert_eq!(stderr_tail("oops\n"), "; stderr: oops");
        let long = "é".repeat(1000);
        let tail = stderr_tail(&long);
        assert!(
            tail.len() <= STDERR_TAIL + 20 && tail.contains('…'),
            "{tail}"
        );
    }

    #[test]
    fn run_future_is_send() {
        fn send<T: Send>(_: &T) {}
        let exec = CommandExecutor::new(spec(&["true"])).unwrap();
        let ctx = JobContext {
            id: rdq_store::JobId(1),
            queue: "q".to_owned(),
            kind: "command".to_owned(),
            attempt: 1,
            max_attempts: 1,
            priority: 0,
            queued_at: rdq_store::Timestamp(0),
        };
        let args = serde_json::json!({});
        send(&exec.run(&args, &ctx));
    }
}
