//! Fresh stores in temporary directories.

use rdq_store::sqlite::{SqliteOptions, SqliteStore};

/// A store in a fresh temporary directory, removed when dropped.
pub(crate) struct TempStore {
    pub(crate) store: SqliteStore,
    pub(crate) dir: tempfile::TempDir,
}

impl TempStore {
    pub(crate) async fn new() -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        TempStore { store, dir }
    }

    /// Closes and opens the same file again, as a restart would.
    pub(crate) async fn reopen(self) -> TempStore {
        self.store.close().await.unwrap();
        let path = self.dir.path().join("t.db");
        drop(self.store);
        let store = SqliteStore::open(path, SqliteOptions::default())
            .await
            .unwrap();
        TempStore {
            store,
            dir: self.dir,
        }
    }
}

/// A plain job of queue `q`, kind `k`.
pub(crate) fn job() -> rdq_store::NewJob {
    rdq_store::NewJob {
        queue: "q".into(),
        kind: "k".into(),
        args: "1".into(),
        priority: 0,
        run_at: None,
        max_attempts: 2,
        key: None,
        timeout: None,
    }
}

/// The wall clock as a stored timestamp.
pub(crate) fn now() -> rdq_store::Timestamp {
    rdq_store::Timestamp::from(std::time::SystemTime::now())
}

/// Whether the tests run as root (where file modes do not stop writes).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
