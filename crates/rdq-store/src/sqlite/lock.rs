//! One process per database *file*, whatever path leads to it.
//!
//! A SQLite store assumes it is the only writer: at open it returns every job
//! left underway to pending, which is right only if their process is gone.
//! So before SQLite opens the file, the store takes two exclusive kernel
//! locks (`flock`), held for its lifetime and gone with its process, even
//! after `kill -9`:
//!
//! * **On the database file itself.** A lock follows the file, not the path:
//!   a symlink, a hard link, `..` or a bind mount all meet it. A lock keyed
//!   by a path would let a hard link through, and SQLite keeps its log
//!   (`-wal`) beside the *name* it opened: a second server through a hard
//!   link would get a log of its own, hand out the same ids as the first,
//!   and the jobs it acknowledged would vanish. So the refusal must come
//!   before SQLite ever opens the file, and it does.
//! * **On `<file>.lock`**, beside the file's real path (symlinks resolved),
//!   which holds the pid. Earlier versions of rdq lock only this one, so a
//!   server of either version refuses the other during an upgrade.
//!
//! A refused opener names the holder's pid: from `/proc/locks` (Linux; the
//! holder of the lock on the database file), else from `<file>.lock`.
//!
//! `flock` locks and SQLite's own locks (POSIX `fcntl` byte-range locks) are
//! different kinds that Linux keeps apart, so this lock does not disturb
//! SQLite's, in this process or another. (Except on NFS, where the kernel
//! emulates `flock` with `fcntl`; SQLite's write-ahead log does not work
//! over NFS anyway.) One rule follows from POSIX locks: closing *any*
//! descriptor of the file drops every `fcntl` lock this process holds on it,
//! so the store keeps its descriptor open until every SQLite connection of
//! the store is closed (see `Shared`'s `Drop` in `sqlite/mod.rs`), and
//! never opens another one while they are open: it syncs the file through
//! this one ([`LockFile::sync_db`]). (Until the power-loss test's work
//! found it, the store's open synced the file through a descriptor of its
//! own and closed it, dropping SQLite's shared lock on the file for the
//! store's whole life. Another program's connection that then read the
//! file and closed took itself for the last one and deleted the log under
//! the running store: seen with the `sqlite3` of Python, SQLite 3.40;
//! newer SQLite, the bundled one included, refuses to, seeing the locks on
//! `-shm`.)
//!
//! # Within one process
//!
//! A `flock` belongs to an open file description, and a child process
//! holds a copy of every descriptor of its parent between its `fork` and
//! its `exec` (even close-on-exec ones). So a store closed by a process
//! that spawns children (the command executor does) can stay locked for
//! that instant after `close`. The process keeps its own table of the files
//! it holds locked: a file in that table is refused at once (another store
//! of this process has it open); a file locked, per the kernel, by this very
//! process but not in the table is such a leftover copy, and the lock is
//! tried again for up to [`LEFTOVER_WAIT`].
//!
//! # Creating the file
//!
//! When the file does not exist yet, the store creates it (empty: SQLite
//! treats an empty file as an empty database) and then locks it. Two
//! processes racing to create it both open the same file (`O_CREAT` without
//! `O_EXCL` creates at most once) and then race for its lock: one wins, the
//! other is refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Result, StoreError};

/// Held for the store's lifetime; unlocked when dropped.
#[derive(Debug)]
pub(crate) struct LockFile {
    // Fields drop in order: the locks go before the table entry.
    db: File,
    _sidecar: File,
    _registered: Registered,
}

/// This process's entry for a locked file in [`HELD`], removed when dropped.
#[derive(Debug)]
struct Registered((u64, u64));

impl Drop for Registered {
    fn drop(&mut self) {
        held().retain(|k| *k != self.0);
    }
}

/// The files this process holds locked, by (device, inode).
static HELD: Mutex<Vec<(u64, u64)>> = Mutex::new(Vec::new());

/// How long a lock this process let go of, but a child's leftover copy of
/// its descriptor still holds, is tried again. A child execs within
/// microseconds, milliseconds on a loaded machine.
pub(crate) const LEFTOVER_WAIT: Duration = Duration::from_secs(2);

fn held() -> std::sync::MutexGuard<'static, Vec<(u64, u64)>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// `try_lock`, tried again for up to [`LEFTOVER_WAIT`] unless the kernel
/// names another process as the holder: a holder that is this very process
/// is a child's leftover copy of a descriptor this process closed (see
/// "Within one process"). Where `/proc/locks` cannot tell, every refusal
/// takes that long.
/// `key`, the database file's: once another store of this process has
/// registered it, waiting is pointless.
fn try_lock_patiently(
    file: &File,
    key: Option<(u64, u64)>,
) -> std::result::Result<(), TryLockError> {
    let deadline = std::time::Instant::now() + LEFTOVER_WAIT;
    loop {
        match file.try_lock() {
            // Another process's lock is final; ours, or one already gone
            // when the kernel's table was read (the leftover copy closed in
            // between), is worth another try.
            Err(TryLockError::WouldBlock)
                if flock_holder(file).is_none_or(|pid| pid == std::process::id())
                    && key.is_none_or(|key| !held().contains(&key))
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

/// `<db>.lock`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl LockFile {
    /// Creates the database file at `db` if it is missing, and locks it.
    /// Returns the lock and the file's real path (symlinks resolved), the
    /// path SQLite must be given so that its log is where the syncer looks.
    pub(crate) fn acquire(db: &Path) -> Result<(LockFile, PathBuf)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(db)
            .map_err(|source| StoreError::open(db, source))?;
        let real = std::fs::canonicalize(db).map_err(|source| StoreError::open(db, source))?;
        // SQLite opens `real`: it must be the file locked here, not one
        // that replaced it in between.
        let same =
            |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        let (ours, theirs) = (file.metadata(), std::fs::metadata(&real));
        if !matches!((&ours, &theirs), (Ok(a), Ok(b)) if same(a, b)) {
            return Err(StoreError::open(
                db,
                std::io::Error::other("the file was replaced while rdq opened it; try again"),
            ));
        }
        let sidecar_path = lock_path(&real);
        let key = match &ours {
            Ok(m) => (m.dev(), m.ino()),
            Err(_) => unreachable!("checked above"),
        };
        if held().contains(&key) {
            return Err(StoreError::Locked {
                path: db.to_owned(),
                pid: Some(std::process::id()),
            });
        }
        match try_lock_patiently(&file, Some(key)) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: db.to_owned(),
                    pid: flock_holder(&file).or_else(|| pid_in(&sidecar_path)),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    path: db.to_owned(),
                    source,
                })
            }
        }
        held().push(key);
        let registered = Registered(key);
        let mut sidecar = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&sidecar_path)
            .map_err(|source| StoreError::open(&sidecar_path, source))?;
        match try_lock_patiently(&sidecar, None) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = sidecar.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path: db.to_owned(),
                    pid: text.trim().parse().ok().or_else(|| flock_holder(&sidecar)),
                });
            }
            Err(TryLockError::Error(source)) => {
                return Err(StoreError::Io {
                    path: sidecar_path,
                    source,
                })
            }
        }
        let io = |source| StoreError::Io {
            path: sidecar_path.clone(),
            source,
        };
        sidecar.set_len(0).map_err(io)?;
        sidecar.rewind().map_err(io)?;
        write!(sidecar, "{}", std::process::id()).map_err(io)?;
        Ok((
            LockFile {
                db: file,
                _sidecar: sidecar,
                _registered: registered,
            },
            real,
        ))
    }

    /// `fsync` of the database file, through this lock's descriptor. The
    /// store must not open a descriptor of its own for that: closing it
    /// would drop every POSIX lock this process holds on the file, SQLite's
    /// shared lock included (see the [module docs](self)).
    pub(crate) fn sync_db(&self) -> std::io::Result<()> {
        self.db.sync_all()
    }
}

/// The pid written in a lock file, if any.
fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The pid of the process holding an exclusive `flock` on `file`, from
/// `/proc/locks` (Linux only; `None` elsewhere or if it cannot tell).
fn flock_holder(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino())
}

/// The holder of an exclusive `FLOCK` on the file `(dev, ino)` in the text
/// of `/proc/locks`. The device must match too, unless the file system
/// reports another device to `stat` than to `/proc/locks` (overlayfs,
/// btrfs subvolumes): then one holder of a lock on that inode is taken.
fn holder_in(locks: &str, dev: u64, ino: u64) -> Option<u32> {
    // The user-space encoding of a device number (glibc's major/minor).
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0000_0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x0000_00ff);
    let mut same_inode = Vec::new();
    for line in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 4242 fe:00:5333005 0 EOF"; a waiter's
        // line has "->" after the number.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, "FLOCK", _, "WRITE", pid, id, ..] = fields.as_slice() else {
            continue;
        };
        // 0: a holder outside this pid namespace (another container).
        let Ok(pid @ 1..) = pid.parse::<u32>() else {
            continue;
        };
        let mut parts = id.split(':');
        let (Some(maj), Some(min), Some(i)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if i.parse::<u64>().ok() != Some(ino) {
            continue;
        }
        let same_dev = u64::from_str_radix(maj, 16).ok() == Some(major)
            && u64::from_str_radix(min, 16).ok() == Some(minor);
        if same_dev {
            return Some(pid);
        }
        same_inode.push(pid);
    }
    same_inode.dedup();
    match same_inode.as_slice() {
        [pid] => Some(*pid),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let held = LockFile::acquire(&db).unwrap();
        let err = LockFile::acquire(&db).unwrap_err();
        let pid = std::process::id();
        assert!(
            matches!(err, StoreError::Locked { pid: Some(p), .. } if p == pid),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {pid}")));
        drop(held);
        LockFile::acquire(&db).unwrap();
    }

    /// The holder comes from the kernel's table even when the lock file
    /// says nothing (a hard link elsewhere, or a holder that has not yet
    /// written its pid).
    #[test]
    fn the_holder_is_found_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let _held = LockFile::acquire(&db).unwrap();
        std::fs::write(lock_path(&db), "").unwrap();
        let err = LockFile::acquire(&db).unwrap_err();
        assert!(
            matches!(err, StoreError::Locked { pid: Some(p), .. } if p == std::process::id()),
            "{err:?}"
        );
    }

    #[test]
    fn proc_locks_lines_are_read_for_the_right_file() {
        let dev = (0xfe << 8) | 0x01; // fe:01
        let locks = "1: POSIX  ADVISORY  WRITE 11 fe:01:77 0 EOF\n\
                     2: FLOCK  ADVISORY  READ 12 fe:01:77 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 13 fe:01:78 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 14 fe:01:77 0 EOF\n\
                     4: -> FLOCK  ADVISORY  WRITE 15 fe:01:77 0 EOF\n";
        // A holder in another pid namespace shows as pid 0: unknown.
        assert_eq!(
            holder_in("1: FLOCK  ADVISORY  WRITE 0 fe:01:77 0 EOF\n", dev, 77),
            None
        );
        assert_eq!(holder_in(locks, dev, 77), Some(14));
        assert_eq!(holder_in(locks, dev, 79), None);
        // Another device number than stat's (overlayfs): one holder of a
        // lock on that inode is taken; two are ambiguous.
        assert_eq!(holder_in(locks, 0x0801, 77), Some(14));
        let two = format!("{locks}5: FLOCK  ADVISORY  WRITE 16 00:2a:77 0 EOF\n");
        assert_eq!(holder_in(&two, 0x0801, 77), None);
    }
}
