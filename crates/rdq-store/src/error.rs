//! The store's one error type.

use std::path::PathBuf;

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
    /// The database (or its lock file) could not be opened or created.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file that failed.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process holds the database.
    #[error("{} is in use by another process{}; stop that process or use another file", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
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
    /// The disk (or quota) is full; nothing was written.
    #[error("the disk is full; nothing was written ({0})")]
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
}

impl StoreError {
    /// Whether this is an outage: trying again later may succeed (full disk,
    /// a closed, busy or locked store, a failing disk), as opposed to a
    /// request that will never succeed or a bug.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::DiskFull(_)
                | StoreError::Closed
                | StoreError::Database(_)
                | StoreError::Io { .. }
        )
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::DiskFull(e.to_string()),
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::ReadOnly
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

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
        }
    }
}
