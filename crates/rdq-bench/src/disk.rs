//! Where the durable scenarios keep their databases, and what that disk
//! costs.
//!
//! The databases go on the file system a user's would be on: under
//! `RDQ_BENCH_DIR` if set, else `target/rdq-bench` below the current
//! directory (the repository, when run as the README says). Never on tmpfs
//! or ramfs, where a sync costs nothing: the scenarios refuse to run there.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory for one run, removed when dropped.
pub(crate) struct BenchDir(PathBuf);

static NEXT: AtomicU64 = AtomicU64::new(0);

impl BenchDir {
    /// A new directory under the bench base, or why there can be none.
    pub(crate) fn new(tag: &str) -> Result<BenchDir, String> {
        let base = base()?;
        let dir = base.join(format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(BenchDir(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.0.join("bench.db")
    }
}

impl Drop for BenchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The base directory, created, and checked not to be in memory.
pub(crate) fn base() -> Result<PathBuf, String> {
    let base = match std::env::var_os("RDQ_BENCH_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::current_dir()
            .map_err(|e| format!("no current directory: {e}"))?
            .join("target")
            .join("rdq-bench"),
    };
    std::fs::create_dir_all(&base)
        .map_err(|e| format!("cannot create {}: {e}; set RDQ_BENCH_DIR", base.display()))?;
    let fs = fs_type(&base);
    if matches!(fs.as_str(), "tmpfs" | "ramfs") {
        return Err(format!(
            "{} is on {fs}, where a sync costs nothing; set RDQ_BENCH_DIR to a directory on a disk",
            base.display()
        ));
    }
    Ok(base)
}

/// The type of the file system holding `path` (from `/proc/self/mountinfo`:
/// the mount with the longest mount point that contains the path).
pub(crate) fn fs_type(path: &Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let mount = mount.replace("\\040", " ");
        if path.starts_with(&mount) && best.as_ref().is_none_or(|(len, _)| mount.len() >= *len) {
            best = Some((mount.len(), (*fstype).to_owned()));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

/// Times `count` durable appends of 4 KiB (write, then `fdatasync`) to a
/// new file in `dir`: the least a durable put can cost on this disk.
pub(crate) fn fdatasync_time(dir: &Path, count: usize) -> Duration {
    let path = dir.join("fdatasync-probe");
    let file: File = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .expect("probe file");
    let page = [0x5au8; 4096];
    let start = Instant::now();
    for i in 0..count {
        file.write_all_at(&page, (i * page.len()) as u64)
            .expect("probe write");
        file.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    drop(file);
    let _ = std::fs::remove_file(&path);
    elapsed
}
