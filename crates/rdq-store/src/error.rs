//! The store's one error type.

use std::path::{Path, PathBuf};

use crate::row::JobId;

/// Why a store operation failed. Each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database's directory does not exist.
    #[error("cannot open {path}: directory {} does not exist; create it or choose another path", dir.display(), path = path.display())]
    NoDirectory {
        /// The database file.
        path: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// The database (or its lock file) could not be opened or created: a
    /// read-only file, directory or file system, missing permissions, or
    /// SQLite unable to create its log files beside the database.
    #[error("cannot open {}: {source}; {fix}", path.display())]
    Open {
        /// The file that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        fix: String,
    },
    /// Another program (not rdq: a second rdq is refused at start) holds a
    /// lock on the database, and did not let go within the wait.
    #[error("{} is locked by another program that holds a transaction open on it (not an rdq server: a second one is refused at start; a sqlite3 shell, a backup or a migration tool); waited {}; end that transaction or stop that program", path.display(), humantime::format_duration(*waited))]
    Busy {
        /// The database file.
        path: PathBuf,
        /// How long the store waited for the lock.
        waited: std::time::Duration,
    },
    /// Another process holds the database (or, when `pid` is this
    /// process's, another store of this process has it open).
    #[error("{}", locked_message(path, *pid))]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The holder's pid, if it wrote one.
        pid: Option<u32>,
    },
    /// The database was written by a newer rdq.
    #[error("{} has schema version {found}, newer than this build of rdq knows ({known}); upgrade rdq", path.display())]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
    /// The disk (or quota) is full; nothing was written. The text names
    /// the database file.
    #[error("the disk is full; nothing was written ({0}); free space on the disk that holds it")]
    DiskFull(String),
    /// The database cannot serve now: it is busy or locked, read-only,
    /// cannot be opened, or its disk failed. Trying again later may succeed.
    #[error("database error: {0}")]
    Database(String),
    /// The database refused a statement for a reason that is a bug in rdq,
    /// not an outage (a constraint, a type, bad SQL), or a stored value is
    /// unreadable. Its text is for the log, not for clients.
    #[error("internal store error: {0}")]
    Internal(String),
    /// I/O outside the database (syncing the log, the lock file).
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store has been closed.
    #[error("the store is closed")]
    Closed,
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// A job or setting that cannot be stored as given.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The database server cannot be reached, or refused the connection
    /// (PostgreSQL down, a pool with no free connection within its acquire
    /// timeout). Trying again later may succeed. Never holds a password.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A statement ran past the store's statement or lock timeout.
    #[error("database timeout: {0}")]
    Timeout(String),
    /// The PostgreSQL schema was migrated by a newer build of rdq: this one
    /// does not know its layout and refuses to touch it.
    #[error("the PostgreSQL schema {schema} is at version {found}, newer than this build knows ({known}): upgrade rdq")]
    NewerSchema {
        /// The schema.
        schema: String,
        /// Its recorded version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

impl StoreError {
    /// Whether this is an outage: trying again later may succeed (full disk,
    /// a closed, busy or locked store, a file that became read-only or
    /// unreadable, a failing disk), as opposed to a request that will never
    /// succeed or a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull(_)
                | StoreError::Busy { .. }
                | StoreError::Open { .. }
                | StoreError::Closed
                | StoreError::Database(_)
                | StoreError::Io { .. }
                | StoreError::Unavailable(_)
                | StoreError::Timeout(_)
        )
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            // The path is filled in where it is known (`StoreError::at`).
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
                path: PathBuf::new(),
                waited: std::time::Duration::ZERO,
            },
            Some(
                ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::PermissionDenied
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::OutOfMemory
                | ErrorCode::NoLargeFileSupport,
            ) => StoreError::Database(e.to_string()),
            // Constraints, type mismatches, bad SQL, corruption, and errors
            // of rusqlite's own (a value that does not convert): bugs.
            _ => StoreError::Internal(e.to_string()),
        }
    }
}

impl StoreError {
    /// The same error, naming `path` if it is about a database file that it
    /// does not name yet.
    pub(crate) fn at(self, path: &Path) -> StoreError {
        match self {
            StoreError::Busy { path: p, waited } if p.as_os_str().is_empty() => StoreError::Busy {
                path: path.to_owned(),
                waited,
            },
            StoreError::DiskFull(m) if !m.contains(&*path.to_string_lossy()) => {
                StoreError::DiskFull(format!("{}: {m}", path.display()))
            }
            other => other,
        }
    }

    /// Opening (or creating) `path` failed with `source`: says what to fix.
    pub(crate) fn open(path: &Path, source: std::io::Error) -> StoreError {
        let fix = open_fix(path, &source);
        StoreError::Open {
            path: path.to_owned(),
            source,
            fix,
        }
    }

    /// A SQLite error on the database at `path`, with the path and what to
    /// fix where the error is about the file rather than the request.
    pub(crate) fn sqlite(path: &Path, e: rusqlite::Error) -> StoreError {
        use rusqlite::ffi::ErrorCode;
        let dir = directory_of(path);
        let io = |kind| std::io::Error::new(kind, e.to_string());
        match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
                path: path.to_owned(),
                waited: std::time::Duration::ZERO,
            },
            Some(ErrorCode::CannotOpen) => StoreError::Open {
                path: path.to_owned(),
                source: io(std::io::ErrorKind::PermissionDenied),
                fix: format!(
                    "SQLite keeps two files beside the database ({name}-wal and {name}-shm) and could not \
                     open or create them: the directory {dir} must be writable by the user rdq runs as \
                     (and those files, if they exist)",
                    name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                    dir = dir.display(),
                ),
            },
            Some(ErrorCode::ReadOnly | ErrorCode::PermissionDenied) => StoreError::Open {
                path: path.to_owned(),
                source: io(std::io::ErrorKind::PermissionDenied),
                fix: format!(
                    "the database, its -wal and -shm files beside it, the directory {} and its file system \
                     must all be writable by the user rdq runs as",
                    dir.display()
                ),
            },
            Some(ErrorCode::NotADatabase) => StoreError::Database(format!(
                "{} is not an rdq database (not SQLite); move that file away or choose another path",
                path.display()
            )),
            Some(ErrorCode::DiskFull) => StoreError::DiskFull(format!("{}: {e}", path.display())),
            Some(ErrorCode::SystemIoFailure) => StoreError::Io {
                path: path.to_owned(),
                source: std::io::Error::other(format!(
                    "{e}; the disk or its file system failed (see the kernel log, dmesg)"
                )),
            },
            _ => StoreError::from(e),
        }
    }
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// What to do when opening `path` for reading and writing fails.
fn open_fix(path: &Path, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let dir = directory_of(path);
    const EPERM: i32 = 1;
    match e.kind() {
        _ if e.raw_os_error() == Some(EPERM) => {
            "the file or its directory is immutable or append-only (see lsattr; chattr -i or -a \
             removes that), or another security rule forbids writing it; or choose another path"
                .to_owned()
        }
        ErrorKind::PermissionDenied if path.exists() => format!(
            "rdq needs to read and write it: give the user rdq runs as write permission on it \
             (and on the directory {}), or choose another path",
            dir.display()
        ),
        ErrorKind::PermissionDenied => format!(
            "rdq creates the file: the directory {} must be writable by the user rdq runs as; \
             or choose another path",
            dir.display()
        ),
        ErrorKind::ReadOnlyFilesystem => "its file system is mounted read-only: remount it \
             read-write, or put the database on another file system"
            .to_owned(),
        ErrorKind::IsADirectory => {
            "that is a directory: give the path of a database file".to_owned()
        }
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            "the disk (or the quota) is full: free space".to_owned()
        }
        ErrorKind::NotFound => format!(
            "check that the directory {} exists (and any symlink on the way leads somewhere)",
            dir.display()
        ),
        _ => "check the path and its permissions".to_owned(),
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

fn locked_message(path: &std::path::Path, pid: Option<u32>) -> String {
    match pid {
        Some(p) if p == std::process::id() => format!(
            "{} is already open by another store of this process (pid {p}); close that store first",
            path.display()
        ),
        Some(p) => format!(
            "{} is in use by another process (pid {p}); stop that process or use another file",
            path.display()
        ),
        None => format!(
            "{} is in use by another process; stop that process or use another file",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_error(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn only_outages_are_unavailable() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (k TEXT UNIQUE); INSERT INTO t VALUES ('a');")
            .expect("schema");
        let unique = conn
            .execute("INSERT INTO t VALUES ('a')", [])
            .expect_err("duplicate");
        let bad_sql = conn.execute("SELEC 1", []).expect_err("syntax");
        for bug in [
            unique,
            bad_sql,
            rusqlite::Error::ToSqlConversionFailure("too big".into()),
            sqlite_error(rusqlite::ffi::SQLITE_MISMATCH),
            sqlite_error(rusqlite::ffi::SQLITE_CORRUPT),
        ] {
            let text = bug.to_string();
            let e = StoreError::from(bug);
            assert!(!e.is_unavailable(), "{text} is a bug, not an outage: {e:?}");
            assert!(matches!(e, StoreError::Internal(_)), "{e:?}");
        }
        for outage in [
            rusqlite::ffi::SQLITE_BUSY,
            rusqlite::ffi::SQLITE_LOCKED,
            rusqlite::ffi::SQLITE_READONLY,
            rusqlite::ffi::SQLITE_IOERR,
            rusqlite::ffi::SQLITE_CANTOPEN,
            rusqlite::ffi::SQLITE_FULL,
        ] {
            let e = StoreError::from(sqlite_error(outage));
            assert!(e.is_unavailable(), "code {outage} is an outage: {e:?}");
            let e = StoreError::sqlite(Path::new("/q.db"), sqlite_error(outage));
            assert!(
                e.is_unavailable(),
                "code {outage} on a file is an outage: {e:?}"
            );
        }
    }

    /// Errors no test can provoke for real (a failing disk) or only as
    /// another user: each names the file and says what to do.
    #[test]
    fn file_errors_name_the_path_and_the_fix() {
        let path = Path::new("/srv/q/rdq.db");
        let io = StoreError::sqlite(path, sqlite_error(rusqlite::ffi::SQLITE_IOERR)).to_string();
        assert!(io.contains("/srv/q/rdq.db") && io.contains("dmesg"), "{io}");
        let full = StoreError::sqlite(path, sqlite_error(rusqlite::ffi::SQLITE_FULL));
        assert!(matches!(full, StoreError::DiskFull(_)));
        assert!(
            full.to_string().contains("/srv/q/rdq.db") && full.to_string().contains("free space")
        );
        let ro = StoreError::sqlite(path, sqlite_error(rusqlite::ffi::SQLITE_READONLY)).to_string();
        assert!(
            ro.contains("/srv/q/rdq.db") && ro.contains("must all be writable"),
            "{ro}"
        );
        let busy = StoreError::sqlite(path, sqlite_error(rusqlite::ffi::SQLITE_BUSY)).to_string();
        assert!(
            busy.contains("/srv/q/rdq.db") && busy.contains("stop that program"),
            "{busy}"
        );
        let erofs = StoreError::open(path, std::io::Error::from_raw_os_error(30)).to_string();
        assert!(
            erofs.contains("/srv/q/rdq.db") && erofs.contains("remount"),
            "{erofs}"
        );
        let eacces = StoreError::open(path, std::io::Error::from_raw_os_error(13)).to_string();
        assert!(
            eacces.contains("the directory /srv/q must be writable"),
            "{eacces}"
        );
        let eisdir = StoreError::open(path, std::io::Error::from_raw_os_error(21)).to_string();
        assert!(eisdir.contains("a directory"), "{eisdir}");
    }

    /// An error raised where the path is not known gets it later, once.
    #[test]
    fn busy_and_full_errors_are_given_their_path() {
        let q = Path::new("/q.db");
        let e = StoreError::from(sqlite_error(rusqlite::ffi::SQLITE_BUSY)).at(q);
        assert!(e.to_string().starts_with("/q.db is locked"), "{e}");
        let e = StoreError::from(sqlite_error(rusqlite::ffi::SQLITE_FULL))
            .at(q)
            .at(q);
        let msg = e.to_string();
        assert!(matches!(e, StoreError::DiskFull(_)));
        assert_eq!(msg.matches("/q.db").count(), 1, "{msg}");
    }
}
