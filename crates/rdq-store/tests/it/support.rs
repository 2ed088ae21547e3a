//! Fresh stores in temporary directories.

use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::{AnyStore, Store};

use crate::postgres::PgTest;

/// A fresh store, removed when dropped: a SQLite file in a temporary
/// directory, or a PostgreSQL schema of its own.
pub(crate) struct TempStore {
    pub(crate) store: AnyStore,
    place: Place,
}

enum Place {
    Sqlite(tempfile::TempDir),
    Postgres(PgTest),
}

impl TempStore {
    /// SQLite.
    pub(crate) async fn new() -> TempStore {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default())
            .await
            .unwrap();
        TempStore {
            store: store.into(),
            place: Place::Sqlite(dir),
        }
    }

    /// PostgreSQL, on the caller's clock; `None` when it is unreachable
    /// outside CI (see [`PgTest::new`]).
    pub(crate) async fn postgres() -> Option<TempStore> {
        let t = PgTest::new().await?;
        let store = t.store("durable").await;
        Some(TempStore {
            store: store.into(),
            place: Place::Postgres(t),
        })
    }

    /// Closes and opens the same store again, as a restart would.
    pub(crate) async fn reopen(self) -> TempStore {
        self.store.close().await.unwrap();
        drop(self.store);
        let store = match &self.place {
            Place::Sqlite(dir) => {
                SqliteStore::open(dir.path().join("t.db"), SqliteOptions::default())
                    .await
                    .unwrap()
                    .into()
            }
            Place::Postgres(t) => t.store("durable").await.into(),
        };
        TempStore {
            store,
            place: self.place,
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
