//! One process per database file.
//!
//! A SQLite store assumes it is the only writer: at open it returns every job
//! left underway to pending, which is right only if their process is gone.
//! So the store takes an exclusive lock on `<db>.lock` and writes its pid
//! there, and a second process gets an error naming the first. The lock is
//! the kernel's (`flock`), so it disappears with its process, even after
//! `kill -9`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};

/// Held for the store's lifetime; unlocked when dropped.
#[derive(Debug)]
pub(crate) struct LockFile {
    _file: File,
}

pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl LockFile {
    pub(crate) fn acquire(db: &Path) -> Result<LockFile> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(StoreError::Locked {
                    path: db.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(source)) => return Err(StoreError::Io { path, source }),
        }
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(LockFile { _file: file })
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
}
