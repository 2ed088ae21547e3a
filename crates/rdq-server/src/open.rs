//! Opening the store at start: the SQLite file, or the PostgreSQL schema,
//! waiting for a database server that is not up yet.
//!
//! # PostgreSQL at start
//!
//! | the database server | what `rdq serve` does |
//! |---|---|
//! | answers | migrates the schema (once, whoever starts first), serves |
//! | cannot be reached (refused, timed out, starting up) | tries again after 0.2 s, 0.4 s, … at most 5 s apart, logging each failure, for up to `server.connect_timeout`; then exit 1 saying what to start |
//! | refuses the login, or has no such database | exit 1 with the server's message |
//! | has a schema migrated by a newer rdq | exit 1: upgrade rdq |
//! | — (the URL is malformed) | exit 2, naming it |
//!
//! No message shows the password: URLs are shown with `***` in its place.

use std::time::Duration;

use rdq_store::postgres::{PgOptions, PgStore};
use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::StoreError;

use crate::config::database::redact;
use crate::config::Config;
use crate::serve::ServeError;
use crate::store::AnyStore;

/// The first wait between attempts to reach PostgreSQL at start.
pub const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between attempts.
pub const LAST_RETRY: Duration = Duration::from_secs(5);

/// Opens the store `config` names, as node `node`.
pub async fn open(config: &Config, node: &str) -> Result<AnyStore, ServeError> {
    match &config.database_url {
        Some(url) => connect(url, config, node).await.map(AnyStore::Postgres),
        None => open_sqlite(config).await.map(AnyStore::Sqlite),
    }
}

async fn open_sqlite(config: &Config) -> Result<SqliteStore, ServeError> {
    let options = SqliteOptions {
        sync: config.sync,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&config.db, options)
        .await
        .map_err(|e| ServeError::Failed(format!("cannot open the database: {e}")))?;
    let recovered = store.recovered();
    if recovered.requeued + recovered.dead > 0 {
        tracing::warn!(
            requeued = recovered.requeued,
            dead = recovered.dead,
            "jobs left underway by a previous run went back to pending (or dead on their last attempt)"
        );
    }
    Ok(store)
}

/// Connects to PostgreSQL, trying again while it cannot be reached.
async fn connect(url: &str, config: &Config, node: &str) -> Result<PgStore, ServeError> {
    crate::config::database::check_url(url).map_err(ServeError::Usage)?;
    let options = PgOptions {
        schema: config.database_schema.clone(),
        application_name: node.to_owned(),
        ..PgOptions::default()
    };
    let shown = redact(url);
    let started = tokio::time::Instant::now();
    let mut delay = FIRST_RETRY;
    let mut attempt = 1u32;
    loop {
        let error = match PgStore::connect(url, options.clone()).await {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(attempt, "reached PostgreSQL at {shown}");
                }
                return Ok(store);
            }
            Err(e) => e,
        };
        match classify(error) {
            Failure::Usage(m) => return Err(ServeError::Usage(m)),
            Failure::Fatal(m) => {
                return Err(ServeError::Failed(format!(
                    "cannot use the PostgreSQL database at {shown}: {m}"
                )))
            }
            Failure::Unreachable(m) => {
                let waited = started.elapsed();
                if waited >= config.connect_timeout {
                    return Err(ServeError::Failed(format!(
                        "cannot reach PostgreSQL at {shown} (tried {attempt} times in {}): {m}; \
                         start PostgreSQL (e.g. `sudo service postgresql start`) or fix \
                         --database-url / server.database_url (server.connect_timeout sets how long to wait)",
                        humantime::format_duration(Duration::from_millis(waited.as_millis() as u64)),
                    )));
                }
                // The last wait ends at the deadline, for one last try.
                let wait = delay.min(config.connect_timeout - waited);
                let shown_wait = Duration::from_millis(wait.as_millis() as u64);
                tracing::warn!(
                    attempt,
                    retry_in = %humantime::format_duration(shown_wait),
                    "cannot reach PostgreSQL at {shown}: {m}"
                );
                tokio::time::sleep(wait).await;
                delay = (delay * 2).min(LAST_RETRY);
                attempt += 1;
            }
        }
    }
}

/// What a failed connection means for the start.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// The configuration is wrong (exit 2).
    Usage(String),
    /// The server is not there (yet): try again.
    Unreachable(String),
    /// The server answered, and said no (exit 1).
    Fatal(String),
}

/// Sorts a connection error. The store reports a server that cannot be
/// reached and one that refuses the login alike ([`StoreError::Unavailable`]
/// with the server's message); only the first is worth waiting for. The
/// server's own refusals (a wrong password, no such role or database, no
/// `pg_hba.conf` entry) come as its message; the driver's failures to reach
/// it as "error connecting to server: …", a timeout, or a closed connection.
fn classify(e: StoreError) -> Failure {
    match e {
        StoreError::Invalid(m) => Failure::Usage(m),
        StoreError::Unavailable(m) if unreachable(&m) => Failure::Unreachable(m),
        e @ StoreError::Timeout(_) => Failure::Unreachable(e.to_string()),
        StoreError::Unavailable(m) => Failure::Fatal(m),
        e => Failure::Fatal(e.to_string()),
    }
}

fn unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "error connecting to server",
        "timed out",
        "timeout",
        "connection closed",
        "connection refused",
        "connection reset",
        // 57P03, 57P01: the server is starting or shutting down.
        "starting up",
        "shutting down",
        "not yet accepting connections",
        // 53300: too many clients; another node may let go.
        "too many clients",
        "remaining connection slots",
        "could not listen",
        "no database connection within",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_server_out_of_reach_is_waited_for() {
        let un = |m: &str| classify(StoreError::Unavailable(m.into()));
        assert!(matches!(
            un("error connecting to server: Connection refused (os error 111)"),
            Failure::Unreachable(_)
        ));
        assert!(matches!(
            un("error connecting to server: connection timed out"),
            Failure::Unreachable(_)
        ));
        assert!(matches!(
            un("the database system is starting up"),
            Failure::Unreachable(_)
        ));
        assert!(matches!(
            un("password authentication failed for user \"rdq\""),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            un("database \"nope\" does not exist"),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            classify(StoreError::Invalid("malformed database URL".into())),
            Failure::Usage(_)
        ));
    }
}
