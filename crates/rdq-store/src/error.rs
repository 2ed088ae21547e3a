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
    /// The database said no.
    #[error("database error: {0}")]
    Database(String),
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
    /// Whether trying again later may succeed (full disk, a closed or busy
    /// store), as opposed to a request that will never succeed.
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
            _ => StoreError::Database(e.to_string()),
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
