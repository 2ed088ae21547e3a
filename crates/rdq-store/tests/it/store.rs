//! The shared store suite on SQLite: a fresh file per test.

use rdq_store::sqlite::{SqliteOptions, SqliteStore};

/// A fresh store whose directory lives as long as the test process; the
/// tempdir is leaked on purpose (the store holds the file open).
async fn fresh() -> SqliteStore {
    let dir = tempfile::tempdir().unwrap().keep();
    SqliteStore::open(dir.join("suite.db"), SqliteOptions::default())
        .await
        .unwrap()
}

rdq_store::store_suite!(fresh());
