//! Before the child runs: its environment, its working directory, and the
//! program found on its PATH, each failure as a clear, permanent error.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rdq_store::HandlerError;

use super::{CommandSpec, BASE_ENV};

/// The search path when the child's environment has no `PATH` (glibc's
/// default for `execvp`).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// The child's whole environment: the base allowlist and `env_allow` copied
/// from ours (where set), then `env`, which wins.
pub(super) fn child_env(spec: &CommandSpec) -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    let allowed = BASE_ENV
        .iter()
        .copied()
        .chain(spec.env_allow.iter().map(String::as_str));
    for name in allowed {
        if let Some(value) = std::env::var_os(name) {
            env.insert(OsString::from(name), value);
        }
    }
    for (name, value) in &spec.env {
        env.insert(OsString::from(name), OsString::from(value));
    }
    env
}

/// Checks that `dir` exists and is a directory.
pub(super) fn check_cwd(dir: &Path) -> Result<(), HandlerError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(HandlerError::permanent(format!(
            "working directory is not a directory: {}",
            dir.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(HandlerError::permanent(format!(
            "working directory does not exist: {}",
            dir.display()
        ))),
        Err(e) => Err(HandlerError::permanent(format!(
            "working directory {} cannot be used: {e}",
            dir.display()
        ))),
    }
}

/// Finds `program` as `execvp` would, on the child's `PATH` (relative
/// entries and paths taken from the child's working directory `cwd`).
pub(super) fn resolve(
    program: &str,
    path: Option<&OsStr>,
    cwd: Option<&Path>,
) -> Result<PathBuf, HandlerError> {
    if program.is_empty() {
        return Err(HandlerError::permanent(
            "argv[0] is empty once filled: there is no program to run",
        ));
    }
    // The child changes directory before it executes the program, so the
    // path handed over must be absolute.
    let server_dir = std::env::current_dir().ok();
    let in_cwd = |p: PathBuf| {
        let p = match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        };
        match &server_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p,
        }
    };
    if program.contains('/') {
        let file = in_cwd(PathBuf::from(program));
        return match probe(&file) {
            Probe::Runnable => Ok(file),
            Probe::Missing => Err(HandlerError::permanent(format!(
                "command not found: {program} (no such file)"
            ))),
            Probe::Unusable(why) => Err(HandlerError::permanent(format!(
                "permission denied: {program} {why}"
            ))),
        };
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut unusable = None;
    for dir in std::env::split_paths(path) {
        let file = in_cwd(dir.join(program));
        match probe(&file) {
            Probe::Runnable => return Ok(file),
            Probe::Missing => {}
            Probe::Unusable(why) => {
                unusable.get_or_insert((file, why));
            }
        }
    }
    Err(HandlerError::permanent(match unusable {
        Some((file, why)) => {
            format!(
                "permission denied: {program} (found {}, which {why})",
                file.display()
            )
        }
        None => format!(
            "command not found: {program} (PATH={})",
            path.to_string_lossy()
        ),
    }))
}

enum Probe {
    Runnable,
    Missing,
    /// Why not, worded to follow the file's name.
    Unusable(&'static str),
}

fn probe(file: &Path) -> Probe {
    match std::fs::metadata(file) {
        Ok(m) if m.is_dir() => Probe::Unusable("is a directory"),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Probe::Unusable("is not executable"),
        Ok(_) => Probe::Runnable,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            Probe::Unusable("is in a directory we may not search")
        }
        Err(_) => Probe::Missing,
    }
}

/// What a failed spawn of `program` (found at `file`) means for the job:
/// permanent when retrying cannot help, retryable when the system is short
/// of something (processes, descriptors, memory).
pub(super) fn spawn_error(
    program: &str,
    file: &Path,
    cwd: Option<&Path>,
    e: &io::Error,
) -> HandlerError {
    let in_dir = cwd
        .map(|d| format!(" in {}", d.display()))
        .unwrap_or_default();
    if let Some(dir) = cwd.filter(|d| !d.is_dir()) {
        // It went away after `check_cwd`.
        return HandlerError::permanent(format!(
            "working directory does not exist: {}",
            dir.display()
        ));
    }
    match e.raw_os_error() {
        Some(libc::ENOENT) if file.exists() => HandlerError::permanent(format!(
            "cannot run {program}{in_dir}: its interpreter (#! line) \
             or a library it needs is missing ({e})"
        )),
        Some(libc::ENOENT) => {
            HandlerError::permanent(format!("command not found: {program}{in_dir} ({e})"))
        }
        Some(libc::EACCES | libc::EPERM) => {
            let m = format!("permission denied: cannot run {program}{in_dir} ({e})");
            HandlerError::permanent(m)
        }
        Some(libc::ENOEXEC) => HandlerError::permanent(format!(
            "cannot run {program}: not an executable format (a script needs a #! line)"
        )),
        Some(libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG | libc::E2BIG | libc::EISDIR) => {
            HandlerError::permanent(format!("cannot run {program}{in_dir}: {e}"))
        }
        _ if e.kind() == io::ErrorKind::InvalidInput => {
            HandlerError::permanent(format!("cannot run {program}: {e}"))
        }
        _ => HandlerError::msg(format!("could not start {program}: {e}")),
    }
}
