//! The PostgreSQL backend: several nodes share one database.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rdq_store::StoreError> {
//! use rdq_store::postgres::{PgOptions, PgStore};
//!
//! let store = PgStore::connect(
//!     "postgres://rdq@db.example/rdq",
//!     PgOptions { application_name: "node-1".into(), ..PgOptions::default() },
//! )
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Everything lives in one schema ([`PgOptions::schema`], `rdq` by default),
//! created and migrated by [`PgStore::connect`]: versioned, in one
//! transaction under an advisory lock, so that nodes starting at once
//! migrate once; a schema a newer build migrated is refused
//! ([`StoreError::NewerSchema`]). Every connection sets `search_path` to it,
//! and `application_name`, `statement_timeout`, `lock_timeout` and
//! `idle_in_transaction_session_timeout` from the options.
//!
//! # Connections
//!
//! Two pools: the API pool ([`PgOptions::pool_size`]: puts, reads, admin)
//! and a bookkeeping pool of 4 (claims, outcomes, heartbeats, rescue,
//! promotion), so that a burst of API calls cannot starve the work of
//! running jobs. Waiting for a connection longer than
//! [`PgOptions::acquire_timeout`] fails with [`StoreError::Unavailable`].
//! Reads are single statements in autocommit: no snapshot stays open. One
//! more connection, outside the pools, LISTENs for other nodes and sends
//! this store's notifications (see `postgres/notify.rs`).
//!
//! # Batching
//!
//! Concurrent puts are coalesced by a task into one `INSERT … SELECT FROM
//! unnest(…)` per batch, committed synchronously before any caller is
//! answered. Outcomes are buffered by [`complete`](Store::complete) and
//! written by a task in one `UPDATE … FROM unnest(…)` per batch; a claim
//! writes the buffered outcomes in its own transaction, ahead of the claim,
//! so that this node's finished jobs no longer count against the width.
//!
//! # Durability
//!
//! A put is acknowledged once committed with the server's
//! `synchronous_commit` (durable on the server by default). Claims, outcomes
//! and heartbeats commit with `synchronous_commit = off` unless
//! [`PgOptions::synchronous_outcomes`]: a server crash can then lose the
//! last few hundred milliseconds of them, so a finished job may run again or
//! a claim be forgotten (at-least-once either way), never an acknowledged
//! put.
//!
//! # Time
//!
//! With [`PgClock::Server`] (the default) every time-based decision uses the
//! server's clock, so that nodes with skewed clocks agree: the `now`
//! arguments of the [`Store`] methods are ignored (explicit times, such as a
//! job's future `run_at`, a hold's end or a retry's `run_at`, are kept as
//! given). [`PgClock::Caller`] uses the `now` arguments, as SQLite does (for
//! tests on a manual clock).
//!
//! # Limits
//!
//! A claim runs the migration's `rdq_claim` function: it locks the queue's
//! `rdq_queues` row, reads `paused`, `width` and `rate` from its settings
//! and its hold, refills the queue's token bucket, counts the jobs underway
//! on every node and claims at most what the limits leave, in one statement.

mod bare;
mod completer;
mod notify;
mod queries;
mod schema;

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Config, NoTls};

use self::completer::{Batch, Outcomes};
use self::notify::{Outgoing, Signals};
use crate::error::{Result, StoreError};
use crate::row::{Completion, Finish, Inserted, JobId, JobRow, JobState, NewJob, Timestamp};
use crate::store::{
    CancelResult, ClaimParams, Claimed, HeartbeatReport, ListParams, QueueRecord,
    ReprioritizeResult, RescueParams, RescueReport, RetryResult, StateCounts, Store,
};

/// Whose clock decides leases, due times, rescue and rates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PgClock {
    /// The database server's (`clock_timestamp()`): nodes with skewed
    /// clocks agree. The `now` arguments are ignored.
    #[default]
    Server,
    /// The `now` arguments of each call, as SQLite does (for tests on a
    /// manual clock).
    Caller,
}

/// How to connect a [`PgStore`].
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The schema holding rdq's tables (created if missing). An SQL
    /// identifier: lower-case letters, digits and `_`, not starting with a
    /// digit, at most 50 characters.
    pub schema: String,
    /// Connections of the API pool (puts, reads, admin). The bookkeeping
    /// pool (claims, outcomes, heartbeats) has 4 of its own.
    pub pool_size: usize,
    /// Longest wait for a pooled connection (or a new one) before a call
    /// fails with [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// The sessions' `statement_timeout`: a statement running longer fails
    /// with [`StoreError::Timeout`].
    pub statement_timeout: Duration,
    /// The sessions' `lock_timeout`.
    pub lock_timeout: Duration,
    /// The sessions' `idle_in_transaction_session_timeout`.
    pub idle_in_transaction_timeout: Duration,
    /// The sessions' `application_name`: the node's name, as
    /// `pg_stat_activity` shows it.
    pub application_name: String,
    /// Whose clock decides; see [`PgClock`].
    pub clock: PgClock,
    /// Whether claims, outcomes and heartbeats wait for their commit to be
    /// durable on the server (`synchronous_commit` as configured) instead of
    /// committing with `synchronous_commit = off` (see the
    /// [module docs](self#durability)). Puts always wait.
    pub synchronous_outcomes: bool,
    /// How often a waiter looks again although no notification came
    /// ([`Store::poll_interval`]).
    pub poll_interval: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            schema: "rdq".to_owned(),
            pool_size: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(5),
            idle_in_transaction_timeout: Duration::from_secs(10),
            application_name: "rdq".to_owned(),
            clock: PgClock::Server,
            synchronous_outcomes: false,
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Connections of the bookkeeping pool.
const BOOKKEEPING_POOL: usize = 4;

/// The most jobs one put statement carries (callers' puts are never split).
const MAX_PUT_BATCH: usize = 5000;

/// A durable store in a PostgreSQL schema, shared by any number of nodes.
/// Cheap to clone (shared).
#[derive(Clone)]
pub struct PgStore {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.handle.core.options.schema)
            .field(
                "application_name",
                &self.handle.core.options.application_name,
            )
            .finish_non_exhaustive()
    }
}

/// What the store's tasks share.
#[derive(Debug)]
struct Core {
    options: PgOptions,
    api: Pool,
    bookkeeping: Pool,
    signals: Arc<Signals>,
    outcomes: Outcomes,
    notify: mpsc::UnboundedSender<Outgoing>,
    closed: AtomicBool,
}

/// The store's handle: its tasks stop when the last clone goes.
#[derive(Debug)]
struct Handle {
    core: Arc<Core>,
    /// Taken by `close`, which stops the put task.
    puts: Mutex<Option<mpsc::UnboundedSender<PutRequest>>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// One caller's put, waiting for its batch.
#[derive(Debug)]
struct PutRequest {
    jobs: Vec<NewJob>,
    now: Option<i64>,
    reply: oneshot::Sender<Result<Vec<Inserted>>>,
}

/// The store's error for a PostgreSQL error: timeouts, outages and the
/// rest (bugs).
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let text = db.message().to_owned();
        let class = &code.code()[..2];
        return if *code == SqlState::QUERY_CANCELED || *code == SqlState::LOCK_NOT_AVAILABLE {
            StoreError::Timeout(text)
        } else if *code == SqlState::DISK_FULL {
            StoreError::DiskFull(text)
        } else if matches!(class, "08" | "28" | "53" | "57" | "3D")
            || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        {
            // Connection problems, authentication, resources, shutdowns,
            // no such database.
            StoreError::Unavailable(text)
        } else if matches!(class, "40") || *code == SqlState::READ_ONLY_SQL_TRANSACTION {
            // Serialization failures and deadlocks; a standby.
            StoreError::Database(text)
        } else {
            StoreError::Internal(format!("{text} (SQLSTATE {})", code.code()))
        };
    }
    // The text with its causes: "error connecting to server: Connection
    // refused (os error 111)".
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    if e.is_closed() || std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()) {
        return StoreError::Unavailable(text);
    }
    if text.contains("timeout") || text.contains("connect") {
        StoreError::Unavailable(text)
    } else {
        StoreError::Internal(text)
    }
}

/// The URL with its password (in the user part, or a `password=`
/// parameter) replaced by `***`: the only form of a database URL that logs
/// and errors should show.
pub fn redact_url(url: &str) -> String {
    hide_password(url, url)
}

/// `text` (an error message about `url`) with the password `url` spells
/// out replaced by `***`.
pub fn hide_password(url: &str, text: &str) -> String {
    match password_of(url) {
        Some(pw) if !pw.is_empty() => text.replace(&pw, "***"),
        _ => text.to_owned(),
    }
}

/// The password a connection string spells out, if it has one.
fn password_of(url: &str) -> Option<String> {
    if let Some(start) = url.find("://") {
        let rest = &url[start + 3..];
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                return Some(authority[colon + 1..at].to_owned());
            }
        }
    }
    let lower = url.to_ascii_lowercase();
    let at = lower.find("password=")? + "password=".len();
    let value = &url[at..];
    let end = value.find(['&', ' ']).unwrap_or(value.len());
    Some(value[..end].trim_matches('\'').to_owned())
}

/// Removes `password` from an error's text.
fn scrub(e: StoreError, password: Option<&str>) -> StoreError {
    let Some(pw) = password.filter(|p| !p.is_empty()) else {
        return e;
    };
    let clean = |m: String| m.replace(pw, "***");
    match e {
        StoreError::Unavailable(m) => StoreError::Unavailable(clean(m)),
        StoreError::Internal(m) => StoreError::Internal(clean(m)),
        StoreError::Invalid(m) => StoreError::Invalid(clean(m)),
        StoreError::Database(m) => StoreError::Database(clean(m)),
        StoreError::Timeout(m) => StoreError::Timeout(clean(m)),
        other => other,
    }
}

fn pool_error(e: PoolError, wait: Duration) -> StoreError {
    match e {
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "no database connection within {} (the pool is exhausted or the server does not answer)",
            humantime::format_duration(wait)
        )),
        PoolError::Backend(e) => pg_error(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::NoRuntimeSpecified => StoreError::Internal("the pool has no runtime".into()),
        PoolError::PostCreateHook(e) => StoreError::Unavailable(e.to_string()),
    }
}

/// Whether `name` can name rdq's schema: lower-case letters, digits and
/// `_`, not starting with a digit, at most 50 characters (it is written
/// into statements unquoted).
pub fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 50
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn millis(d: Duration) -> u128 {
    d.as_millis().max(1)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn sql_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host/db`
    /// or `host=… user=…`), creates and migrates the schema, and starts the
    /// store's tasks.
    ///
    /// A malformed URL is [`StoreError::Invalid`]; a server that cannot be
    /// reached, refuses the login or has no such database is
    /// [`StoreError::Unavailable`] with the server's message. No error text
    /// holds the password.
    pub async fn connect(url: &str, options: PgOptions) -> Result<PgStore> {
        let password = password_of(url);
        Self::connect_inner(url, options)
            .await
            .map_err(|e| scrub(e, password.as_deref()))
    }

    async fn connect_inner(url: &str, options: PgOptions) -> Result<PgStore> {
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::Invalid(format!("malformed database URL {}: {e}", redact_url(url)))
        })?;
        if !valid_schema_name(&options.schema) {
            return Err(StoreError::Invalid(format!(
                "schema {:?}: use lower-case letters, digits and _, not starting with a digit, at most 50 characters",
                options.schema
            )));
        }
        let session = format!(
            "-c search_path={} -c statement_timeout={} -c lock_timeout={} -c idle_in_transaction_session_timeout={}",
            options.schema,
            millis(options.statement_timeout),
            millis(options.lock_timeout),
            millis(options.idle_in_transaction_timeout),
        );
        let all = match config.get_options() {
            Some(given) if !given.trim().is_empty() => format!("{given} {session}"),
            _ => session,
        };
        config
            .options(all)
            .application_name(options.application_name.clone())
            .connect_timeout(options.acquire_timeout);

        // Migrate on a connection of its own: it reports a refused login or
        // a missing database as the server's message.
        {
            let (mut client, connection) = config.connect(NoTls).await.map_err(pg_error)?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            let migrated = schema::migrate(&mut client, &options.schema).await;
            drop(client);
            let _ = driver.await;
            migrated?;
        }

        let pool = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .wait_timeout(Some(options.acquire_timeout))
                .create_timeout(Some(options.acquire_timeout))
                .recycle_timeout(Some(options.acquire_timeout))
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|e| StoreError::Internal(format!("building the connection pool: {e}")))
        };
        let api = pool(options.pool_size)?;
        let bookkeeping = pool(BOOKKEEPING_POOL)?;

        let signals = Arc::new(Signals::new());
        let (notify_tx, notify_rx) = mpsc::unbounded_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = oneshot::channel();
        let listener = tokio::spawn(notify::run(
            config.clone(),
            options.schema.clone(),
            signals.clone(),
            notify_rx,
            shutdown_rx.clone(),
            ready_tx,
        ));
        let acquire_timeout = options.acquire_timeout;
        let core = Arc::new(Core {
            options,
            api,
            bookkeeping,
            signals,
            outcomes: Outcomes::new(),
            notify: notify_tx,
            closed: AtomicBool::new(false),
        });
        let (puts_tx, puts_rx) = mpsc::unbounded_channel();
        let putter = tokio::spawn(run_puts(core.clone(), puts_rx));
        let completer = tokio::spawn(run_completer(core.clone(), shutdown_rx));
        let handle = Arc::new(Handle {
            core,
            puts: Mutex::new(Some(puts_tx)),
            shutdown,
            tasks: Mutex::new(vec![listener, putter, completer]),
        });
        // Listening before the first call, so no notification of another
        // node is missed from here on.
        match tokio::time::timeout(acquire_timeout, ready_rx).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(StoreError::Unavailable(format!(
                    "could not LISTEN for other nodes within {}",
                    humantime::format_duration(acquire_timeout)
                )))
            }
        }
        Ok(PgStore { handle })
    }

    /// The schema holding the store's tables.
    pub fn schema(&self) -> &str {
        &self.handle.core.options.schema
    }

    /// One `SELECT 1` on the API pool: whether the database answers (for a
    /// readiness probe).
    pub async fn ping(&self) -> Result<()> {
        let client = self.core().api_client().await?;
        client.simple_query("SELECT 1").await.map_err(pg_error)?;
        Ok(())
    }

    /// One time of a queue (`sql` takes the queue as `$1` and returns one
    /// nullable bigint): its next due job, its oldest pending one.
    async fn queue_time(&self, sql: &str, queue: &str) -> Result<Option<Timestamp>> {
        let client = self.core().api_client().await?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_error)?;
        let row = client.query_one(&stmt, &[&queue]).await.map_err(pg_error)?;
        Ok(row
            .try_get::<_, Option<i64>>(0)
            .map_err(pg_error)?
            .map(Timestamp))
    }

    fn core(&self) -> &Core {
        &self.handle.core
    }

    /// `now` as the statements take it: NULL for the server's clock.
    fn now(&self, now: Timestamp) -> Option<i64> {
        match self.core().options.clock {
            PgClock::Server => None,
            PgClock::Caller => Some(now.0),
        }
    }

    /// The time for a decision the caller gave no `now` for: the server's,
    /// or with [`PgClock::Caller`] this machine's.
    fn own_now(&self) -> Option<i64> {
        self.now(Timestamp::from(std::time::SystemTime::now()))
    }
}

impl Core {
    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    async fn api_client(&self) -> Result<deadpool_postgres::Object> {
        self.check_open()?;
        self.api
            .get()
            .await
            .map_err(|e| pool_error(e, self.options.acquire_timeout))
    }

    async fn bookkeeping_client(&self) -> Result<deadpool_postgres::Object> {
        self.bookkeeping
            .get()
            .await
            .map_err(|e| pool_error(e, self.options.acquire_timeout))
    }

    fn async_commit(&self) -> bool {
        !self.options.synchronous_outcomes
    }

    /// Tells the other nodes that `queue` may have work, and wakes this
    /// node's waiters.
    fn work(&self, queue: &str) {
        self.signals.work(queue).notify_one();
        let _ = self.notify.send(Outgoing::Work(queue.to_owned()));
    }

    /// After a batch of outcomes committed: final ids to everyone's
    /// `finished_events`, and the queues that may launch again (a job given
    /// back, width freed) to the other nodes.
    fn announce(&self, done: Vec<(JobId, String, String)>) {
        let mut finals = Vec::new();
        let mut queues = BTreeSet::new();
        let mut requeued = BTreeSet::new();
        for (id, state, queue) in done {
            if matches!(state.as_str(), "succeeded" | "dead" | "cancelled") {
                let _ = self.signals.finished.send(id);
                finals.push(id);
            }
            if state == "pending" {
                requeued.insert(queue.clone());
            }
            queues.insert(queue);
        }
        if !finals.is_empty() {
            let _ = self.notify.send(Outgoing::Finished(finals));
        }
        for q in requeued {
            self.signals.work(&q).notify_one();
        }
        for q in queues {
            let _ = self.notify.send(Outgoing::Work(q));
        }
    }
}

/// The arrays of a batch of outcomes, in `COMPLETE`'s parameter order.
struct OutcomeArrays {
    ids: Vec<i64>,
    attempts: Vec<i32>,
    kinds: Vec<&'static str>,
    results: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    run_ats: Vec<Option<i64>>,
    ats: Vec<Option<i64>>,
}

impl OutcomeArrays {
    fn of(batch: &Batch, clock: PgClock) -> OutcomeArrays {
        let n = batch.outcomes().count();
        let mut a = OutcomeArrays {
            ids: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
            ats: Vec::with_capacity(n),
        };
        for c in batch.outcomes() {
            let (kind, result, error, run_at) = match &c.finish {
                Finish::Succeeded { result } => ("succeeded", result.clone(), None, None),
                Finish::Retry { error, run_at } => {
                    ("failed", None, Some(error.clone()), Some(run_at.0))
                }
                Finish::Dead { error } => ("dead", None, Some(error.clone()), None),
                Finish::Snooze { error, run_at } => {
                    ("snooze", None, Some(error.clone()), Some(run_at.0))
                }
                Finish::Cancelled => ("cancelled", None, None, None),
                Finish::Released {
                    launched: false, ..
                } => ("unlaunched", None, None, None),
                Finish::Released {
                    launched: true,
                    error,
                } => ("interrupted", None, error.clone(), None),
            };
            a.ids.push(c.id.0);
            a.attempts
                .push(i32::try_from(c.attempt).unwrap_or(i32::MAX));
            a.kinds.push(kind);
            a.results.push(result);
            a.errors.push(error);
            a.run_ats.push(run_at);
            a.ats.push(match clock {
                PgClock::Server => None,
                PgClock::Caller => Some(c.at.0),
            });
        }
        a
    }
}

/// The changed jobs of a `COMPLETE`: id, new state, queue.
fn outcome_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<(JobId, String, String)>> {
    rows.iter()
        .map(|r| {
            Ok((
                JobId(r.try_get(0).map_err(pg_error)?),
                r.try_get(1).map_err(pg_error)?,
                r.try_get(2).map_err(pg_error)?,
            ))
        })
        .collect()
}

/// Runs `body` (one request, or requests joined: each must send on its first
/// poll) between BEGIN and COMMIT, pipelined: one round trip. With
/// `async_commit`, the transaction commits with `synchronous_commit = off`.
/// A failed body rolls the transaction back (COMMIT of a failed transaction
/// rolls back).
async fn pipelined<T>(
    client: &tokio_postgres::Client,
    async_commit: bool,
    body: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
) -> Result<T> {
    let begin = client.batch_execute(if async_commit {
        "BEGIN; SET LOCAL synchronous_commit = off"
    } else {
        "BEGIN"
    });
    let commit = client.batch_execute("COMMIT");
    let (begun, value, committed) = tokio::join!(begin, body, commit);
    begun.map_err(pg_error)?;
    let value = value.map_err(pg_error)?;
    committed.map_err(pg_error)?;
    Ok(value)
}

/// Writes one batch of outcomes; returns the changed jobs.
async fn write_outcomes(core: &Core, batch: &Batch) -> Result<Vec<(JobId, String, String)>> {
    let client = core.bookkeeping_client().await?;
    let stmt = client
        .prepare_cached(queries::COMPLETE)
        .await
        .map_err(pg_error)?;
    let a = OutcomeArrays::of(batch, core.options.clock);
    let rows = pipelined(
        &client,
        core.async_commit(),
        client.query(
            &stmt,
            &[
                &a.ids,
                &a.attempts,
                &a.kinds,
                &a.results,
                &a.errors,
                &a.run_ats,
                &a.ats,
            ],
        ),
    )
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => {
            drop_if_broken(client);
            return Err(e);
        }
    };
    outcome_rows(&rows)
}

/// A connection whose pipelined transaction failed may be left inside it:
/// take it out of the pool rather than hand it to the next caller.
fn drop_if_broken(client: deadpool_postgres::Object) {
    drop(deadpool_postgres::Object::take(client));
}

/// How long the completer lets outcomes wait for a claim to carry them.
///
/// A node's claims write the outcomes buffered before them in their own
/// transaction (their jobs must not count against the width). A completer
/// that wrote each outcome as it came would race those claims with a
/// transaction of its own per few outcomes: claims then waited for its
/// batch, or counted jobs it was still recording, and came back short
/// (B5 measured claims of 8 at width 16). So it writes what claims left
/// behind after this long, or at once when someone flushes.
const COMPLETER_LINGER: Duration = Duration::from_millis(5);

/// The completer task: writes buffered outcomes, batch after batch, until
/// shutdown (when it writes what is left once more).
async fn run_completer(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut stopping = tokio::select! {
            _ = core.outcomes.wake.notified() => false,
            _ = shutdown.changed() => true,
        };
        if !stopping {
            tokio::select! {
                _ = tokio::time::sleep(COMPLETER_LINGER) => {}
                _ = core.outcomes.hurry.notified() => {}
                _ = shutdown.changed() => stopping = true,
            }
        }
        while let Some(batch) = core.outcomes.take() {
            match write_outcomes(&core, &batch).await {
                Ok(done) => {
                    core.outcomes.committed(batch);
                    core.announce(done);
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing outcomes failed; retrying in {backoff:?}");
                    core.outcomes.failed(batch, e);
                    if stopping {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// The put task: takes every put waiting, writes them as one statement,
/// answers each caller with its ids.
async fn run_puts(core: Arc<Core>, mut requests: mpsc::UnboundedReceiver<PutRequest>) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        let mut jobs = batch[0].jobs.len();
        while jobs < MAX_PUT_BATCH {
            match requests.try_recv() {
                Ok(r) => {
                    jobs += r.jobs.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        match insert_batch(&core, &batch).await {
            Ok(mut answers) => {
                let mut queues = BTreeSet::new();
                for r in &batch {
                    queues.extend(r.jobs.iter().map(|j| j.queue.clone()));
                }
                // Committed: wake this node's waiters, tell the others.
                for q in &queues {
                    core.work(q);
                }
                for r in batch.into_iter().rev() {
                    let mine = answers.split_off(answers.len() - r.jobs.len());
                    let _ = r.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for r in batch {
                    let _ = r.reply.send(Err(completer::copy(&e)));
                }
            }
        }
    }
}

/// Inserts the jobs of every request, in order, in one statement; returns
/// what each job became, in the same order.
async fn insert_batch(core: &Core, batch: &[PutRequest]) -> Result<Vec<Inserted>> {
    let n: usize = batch.iter().map(|r| r.jobs.len()).sum();
    let mut queue = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    let mut priority = Vec::with_capacity(n);
    let mut run_at = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut key = Vec::with_capacity(n);
    let mut timeout_ms = Vec::with_capacity(n);
    let mut now = Vec::with_capacity(n);
    for r in batch {
        for j in &r.jobs {
            queue.push(j.queue.as_str());
            kind.push(j.kind.as_str());
            args.push(j.args.as_str());
            priority.push(j.priority);
            run_at.push(j.run_at.map(|t| t.0));
            max_attempts.push(i32::try_from(j.max_attempts).unwrap_or(i32::MAX));
            key.push(j.key.as_deref());
            timeout_ms.push(
                j.timeout
                    .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
            );
            now.push(r.now);
        }
    }
    let client = core.api_client().await?;
    let stmt = client
        .prepare_cached(queries::INSERT)
        .await
        .map_err(pg_error)?;
    let rows = client
        .query(
            &stmt,
            &[
                &queue,
                &kind,
                &args,
                &priority,
                &run_at,
                &max_attempts,
                &key,
                &timeout_ms,
                &now,
            ],
        )
        .await
        .map_err(pg_error)?;
    // Inserted rows, by id: the arrays' order. Keyed ones by their key.
    let mut inserted: Vec<(i64, String, Option<String>)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<std::result::Result<_, tokio_postgres::Error>>()
        .map_err(pg_error)?;
    inserted.sort_by_key(|r| r.0);
    let mut by_key: HashMap<(&str, &str), i64> = HashMap::new();
    let mut unkeyed = Vec::new();
    for (id, q, k) in &inserted {
        match k {
            Some(k) => {
                by_key.insert((q.as_str(), k.as_str()), *id);
            }
            None => unkeyed.push(*id),
        }
    }
    // Keys that were not inserted: held by a live job from before.
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for i in 0..n {
        if let Some(k) = key[i] {
            if !by_key.contains_key(&(queue[i], k)) && !missing.contains(&(queue[i], k)) {
                missing.push((queue[i], k));
            }
        }
    }
    let mut holders: HashMap<(String, String), i64> = HashMap::new();
    if !missing.is_empty() {
        let stmt = client
            .prepare_cached(&queries::key_holders())
            .await
            .map_err(pg_error)?;
        let qs: Vec<&str> = missing.iter().map(|m| m.0).collect();
        let ks: Vec<&str> = missing.iter().map(|m| m.1).collect();
        for r in client.query(&stmt, &[&qs, &ks]).await.map_err(pg_error)? {
            holders.insert(
                (
                    r.try_get(1).map_err(pg_error)?,
                    r.try_get(2).map_err(pg_error)?,
                ),
                r.try_get(0).map_err(pg_error)?,
            );
        }
    }
    let mut out = Vec::with_capacity(n);
    let mut next_unkeyed = unkeyed.into_iter();
    let mut claimed_keys: BTreeSet<(&str, &str)> = BTreeSet::new();
    for i in 0..n {
        let answer = match key[i] {
            None => Inserted {
                id: JobId(next_unkeyed.next().ok_or_else(|| {
                    StoreError::Internal("the put returned fewer rows than it inserted".into())
                })?),
                existing: false,
            },
            Some(k) => match by_key.get(&(queue[i], k)) {
                // The first job of the batch with this key is the one
                // inserted; later ones get its id.
                Some(id) => Inserted {
                    id: JobId(*id),
                    existing: !claimed_keys.insert((queue[i], k)),
                },
                None => match holders.get(&(queue[i].to_owned(), k.to_owned())) {
                    Some(id) => Inserted {
                        id: JobId(*id),
                        existing: true,
                    },
                    None => {
                        return Err(StoreError::Database(format!(
                            "the live job holding key {k:?} of queue {} finished during the put; put it again",
                            queue[i]
                        )))
                    }
                },
            },
        };
        out.push(answer);
    }
    Ok(out)
}

impl Store for PgStore {
    async fn insert_many(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Inserted>> {
        self.core().check_open()?;
        for job in &jobs {
            job.validate()?;
        }
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let puts = self
            .handle
            .puts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        puts.send(PutRequest {
            jobs,
            now: self.now(now),
            reply,
        })
        .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn claim(&self, params: ClaimParams) -> Result<Claimed> {
        let core = self.core();
        core.check_open()?;
        if params.max == 0 {
            return Ok(Claimed::default());
        }
        // The outcomes enqueued so far are committed first, so that their
        // jobs no longer count against the width: the buffered ones go in
        // this claim's transaction, ahead of it; those another writer is
        // writing now are waited for (holding no connection meanwhile: the
        // writer may need one).
        let batch = core.outcomes.take();
        core.outcomes
            .settle_in_flight(batch.as_ref().map(Batch::lowest))
            .await;
        let prepared = async {
            let client = core.bookkeeping_client().await?;
            let claim = client
                .prepare_cached(queries::CLAIM)
                .await
                .map_err(pg_error)?;
            let complete = client
                .prepare_cached(queries::COMPLETE)
                .await
                .map_err(pg_error)?;
            Ok::<_, StoreError>((client, claim, complete))
        };
        let (client, claim, complete) = match prepared.await {
            Ok(p) => p,
            Err(e) => {
                if let Some(batch) = batch {
                    core.outcomes.failed(batch, completer::copy(&e));
                    core.outcomes.wake.notify_one();
                }
                return Err(e);
            }
        };
        let now = self.now(params.now);
        let max = sql_i32(params.max);
        let lease = micros(params.lease);
        let async_commit = core.async_commit();
        let arrays = batch
            .as_ref()
            .map(|b| OutcomeArrays::of(b, core.options.clock));
        let claim_args: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &params.queue,
            &max,
            &params.node,
            &now,
            &lease,
            &async_commit,
        ];
        let claim_query = client.query(&claim, &claim_args);
        let result = match &arrays {
            Some(a) => {
                let outcome_args: [&(dyn tokio_postgres::types::ToSql + Sync); 7] = [
                    &a.ids,
                    &a.attempts,
                    &a.kinds,
                    &a.results,
                    &a.errors,
                    &a.run_ats,
                    &a.ats,
                ];
                let outcomes = client.query(&complete, &outcome_args);
                pipelined(&client, async_commit, async {
                    let (o, c) = tokio::join!(outcomes, claim_query);
                    Ok((Some(o?), c?))
                })
                .await
            }
            None => {
                pipelined(&client, async_commit, async {
                    Ok((None, claim_query.await?))
                })
                .await
            }
        };
        let (done, rows) = match result {
            Ok(r) => r,
            Err(e) => {
                if let Some(batch) = batch {
                    core.outcomes.failed(batch, completer::copy(&e));
                    core.outcomes.wake.notify_one();
                }
                drop_if_broken(client);
                return Err(e);
            }
        };
        drop(client);
        if let Some(batch) = batch {
            let done = outcome_rows(done.as_deref().unwrap_or_default())?;
            core.outcomes.committed(batch);
            core.announce(done);
        }
        let (jobs, limited) = queries::claimed(&rows)?;
        Ok(Claimed { jobs, limited })
    }

    fn complete(&self, done: Completion) {
        self.core().outcomes.push(done);
    }

    async fn flush(&self) -> Result<()> {
        self.core().outcomes.flush().await
    }

    async fn heartbeat(
        &self,
        node: &str,
        ids: Vec<JobId>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatReport> {
        let core = self.core();
        core.check_open()?;
        if ids.is_empty() {
            return Ok(HeartbeatReport::default());
        }
        let client = core.bookkeeping_client().await?;
        let stmt = client
            .prepare_cached(queries::HEARTBEAT)
            .await
            .map_err(pg_error)?;
        let raw: Vec<i64> = ids.iter().map(|i| i.0).collect();
        let lease = micros(lease);
        let now = self.now(now);
        let rows = if core.async_commit() {
            match pipelined(
                &client,
                true,
                client.query(&stmt, &[&raw, &node, &lease, &now]),
            )
            .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    drop_if_broken(client);
                    return Err(e);
                }
            }
        } else {
            client
                .query(&stmt, &[&raw, &node, &lease, &now])
                .await
                .map_err(pg_error)?
        };
        let mut held = BTreeSet::new();
        let mut cancel = Vec::new();
        for r in rows {
            let id = JobId(r.try_get(0).map_err(pg_error)?);
            if r.try_get::<_, bool>(1).map_err(pg_error)? {
                cancel.push(id);
            }
            held.insert(id);
        }
        let mut report = HeartbeatReport {
            cancel,
            ..HeartbeatReport::default()
        };
        for id in ids {
            if held.contains(&id) {
                report.held.push(id);
            } else {
                report.lost.push(id);
            }
        }
        Ok(report)
    }

    async fn rescue(&self, params: RescueParams) -> Result<RescueReport> {
        let core = self.core();
        core.check_open()?;
        let client = core.bookkeeping_client().await?;
        let stmt = client
            .prepare_cached(queries::RESCUE)
            .await
            .map_err(pg_error)?;
        let expired_before = params.expired_before.map(|t| t.0);
        let now = self.own_now();
        let limit = (params.limit > 0).then(|| i64::try_from(params.limit).unwrap_or(i64::MAX));
        let rows = client
            .query(&stmt, &[&expired_before, &now, &params.queue, &limit])
            .await
            .map_err(pg_error)?;
        drop(client);
        let done = outcome_rows(&rows)?;
        let mut report = RescueReport::default();
        for (_, state, _) in &done {
            if state == "dead" {
                report.dead += 1;
            } else {
                report.requeued += 1;
            }
        }
        // Jobs dead on their last attempt are final: announced like outcomes.
        core.announce(done);
        Ok(report)
    }

    async fn hold(&self, queue: &str, until: Timestamp) -> Result<()> {
        let core = self.core();
        let client = core.api_client().await?;
        let stmt = client
            .prepare_cached(queries::HOLD)
            .await
            .map_err(pg_error)?;
        let now = self.own_now();
        client
            .execute(&stmt, &[&queue, &until.0, &now])
            .await
            .map_err(pg_error)?;
        Ok(())
    }

    async fn promote_due(&self, queue: &str, now: Timestamp) -> Result<u64> {
        let core = self.core();
        core.check_open()?;
        let client = core.bookkeeping_client().await?;
        let stmt = client
            .prepare_cached(&queries::promote_due())
            .await
            .map_err(pg_error)?;
        let n = client
            .execute(&stmt, &[&queue, &self.now(now)])
            .await
            .map_err(pg_error)?;
        drop(client);
        if n > 0 {
            let _ = core.notify.send(Outgoing::Work(queue.to_owned()));
        }
        Ok(n)
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Timestamp>> {
        self.queue_time(queries::NEXT_DUE, queue).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelResult> {
        let core = self.core();
        let client = core.api_client().await?;
        let waiting = client
            .prepare_cached(&queries::cancel_waiting())
            .await
            .map_err(pg_error)?;
        let underway = client
            .prepare_cached(&queries::cancel_underway())
            .await
            .map_err(pg_error)?;
        let get = client
            .prepare_cached(&queries::get())
            .await
            .map_err(pg_error)?;
        let now = self.now(now);
        // Each step is one statement; a job that changes state between them
        // is looked at again.
        for _ in 0..8 {
            if client
                .query_opt(&waiting, &[&id.0, &now])
                .await
                .map_err(pg_error)?
                .is_some()
            {
                let _ = core.signals.finished.send(id);
                let _ = core.notify.send(Outgoing::Finished(vec![id]));
                return Ok(CancelResult::Cancelled);
            }
            if let Some(row) = client
                .query_opt(&underway, &[&id.0])
                .await
                .map_err(pg_error)?
            {
                let job = queries::job(&row)?;
                let _ = core.signals.cancel.send(id);
                let _ = core.notify.send(Outgoing::Cancel(id));
                return Ok(CancelResult::Underway(Box::new(job)));
            }
            match client.query_opt(&get, &[&id.0]).await.map_err(pg_error)? {
                None => return Ok(CancelResult::NotFound),
                Some(row) => {
                    let job = queries::job(&row)?;
                    if job.state.is_final() {
                        return Ok(CancelResult::Finished(job.state));
                    }
                }
            }
        }
        Err(StoreError::Database(format!(
            "job {id} kept changing state; cancel it again"
        )))
    }

    async fn reprioritize(&self, id: JobId, priority: i32) -> Result<ReprioritizeResult> {
        let client = self.core().api_client().await?;
        let stmt = client
            .prepare_cached(&queries::reprioritize())
            .await
            .map_err(pg_error)?;
        if let Some(row) = client
            .query_opt(&stmt, &[&id.0, &priority])
            .await
            .map_err(pg_error)?
        {
            return Ok(ReprioritizeResult::Changed(
                row.try_get(0).map_err(pg_error)?,
            ));
        }
        let get = client
            .prepare_cached(&queries::get())
            .await
            .map_err(pg_error)?;
        match client.query_opt(&get, &[&id.0]).await.map_err(pg_error)? {
            None => Ok(ReprioritizeResult::NotFound),
            Some(row) => Ok(ReprioritizeResult::NotWaiting(queries::job(&row)?.state)),
        }
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> Result<RetryResult> {
        let core = self.core();
        let client = core.api_client().await?;
        let stmt = client
            .prepare_cached(queries::RETRY)
            .await
            .map_err(pg_error)?;
        match client.query_opt(&stmt, &[&id.0, &self.now(now)]).await {
            Ok(Some(row)) => {
                let queue: String = row.try_get(0).map_err(pg_error)?;
                core.work(&queue);
                return Ok(RetryResult::Retried);
            }
            Ok(None) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                let holder = client
                    .prepare_cached(&queries::key_holder_of())
                    .await
                    .map_err(pg_error)?;
                if let Some(row) = client
                    .query_opt(&holder, &[&id.0])
                    .await
                    .map_err(pg_error)?
                {
                    return Ok(RetryResult::KeyHeld(JobId(
                        row.try_get(0).map_err(pg_error)?,
                    )));
                }
                return Err(StoreError::Database(format!(
                    "job {id}: its key was taken and given up meanwhile; retry it again"
                )));
            }
            Err(e) => return Err(pg_error(e)),
        }
        let get = client
            .prepare_cached(&queries::get())
            .await
            .map_err(pg_error)?;
        match client.query_opt(&get, &[&id.0]).await.map_err(pg_error)? {
            None => Ok(RetryResult::NotFound),
            Some(row) => Ok(RetryResult::NotRetryable(queries::job(&row)?.state)),
        }
    }

    async fn cancel_oldest_pending(&self, queue: &str, now: Timestamp) -> Result<Option<JobId>> {
        let core = self.core();
        let client = core.api_client().await?;
        let stmt = client
            .prepare_cached(queries::CANCEL_OLDEST_PENDING)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&stmt, &[&queue, &self.now(now)])
            .await
            .map_err(pg_error)?;
        let Some(row) = row else { return Ok(None) };
        let id = JobId(row.try_get(0).map_err(pg_error)?);
        let _ = core.signals.finished.send(id);
        let _ = core.notify.send(Outgoing::Finished(vec![id]));
        Ok(Some(id))
    }

    async fn oldest_pending(&self, queue: &str) -> Result<Option<Timestamp>> {
        self.queue_time(queries::OLDEST_PENDING, queue).await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRow>> {
        let client = self.core().api_client().await?;
        let stmt = client
            .prepare_cached(&queries::get())
            .await
            .map_err(pg_error)?;
        client
            .query_opt(&stmt, &[&id.0])
            .await
            .map_err(pg_error)?
            .map(|r| queries::job(&r))
            .transpose()
    }

    async fn list(&self, params: ListParams) -> Result<Vec<JobRow>> {
        let client = self.core().api_client().await?;
        let sql = queries::list(
            params.queue.is_some(),
            params.state.is_some(),
            params.before.is_some(),
        );
        let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let state = params.state.map(JobState::as_str);
        let before = params.before.map(|b| b.0);
        let limit = i64::try_from(params.limit.max(1)).unwrap_or(i64::MAX);
        let mut args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
        if let Some(q) = &params.queue {
            args.push(q);
        }
        if let Some(s) = &state {
            args.push(s);
        }
        if let Some(b) = &before {
            args.push(b);
        }
        args.push(&limit);
        client
            .query(&stmt, &args)
            .await
            .map_err(pg_error)?
            .iter()
            .map(queries::job)
            .collect()
    }

    async fn pending_count(&self, queue: &str) -> Result<u64> {
        let client = self.core().api_client().await?;
        let stmt = client
            .prepare_cached(queries::PENDING_COUNT)
            .await
            .map_err(pg_error)?;
        let row = client.query_one(&stmt, &[&queue]).await.map_err(pg_error)?;
        let n: i64 = row.try_get(0).map_err(pg_error)?;
        Ok(n.max(0) as u64)
    }

    async fn counts(&self, queue: &str) -> Result<StateCounts> {
        let client = self.core().api_client().await?;
        let stmt = client
            .prepare_cached(queries::COUNTS)
            .await
            .map_err(pg_error)?;
        let mut counts = StateCounts::new();
        for r in client.query(&stmt, &[&queue]).await.map_err(pg_error)? {
            let state: String = r.try_get(0).map_err(pg_error)?;
            let n: i64 = r.try_get(1).map_err(pg_error)?;
            if let Ok(state) = state.parse::<JobState>() {
                counts.insert(state, n.max(0) as u64);
            }
        }
        Ok(counts)
    }

    async fn prune(&self, queue: &str, before: Timestamp, limit: u64) -> Result<u64> {
        let client = self.core().api_client().await?;
        let stmt = client
            .prepare_cached(&queries::prune())
            .await
            .map_err(pg_error)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        client
            .execute(&stmt, &[&queue, &before.0, &limit])
            .await
            .map_err(pg_error)
    }

    async fn load_queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        let client = self.core().api_client().await?;
        let stmt = client
            .prepare_cached(queries::LOAD_QUEUE)
            .await
            .map_err(pg_error)?;
        let Some(row) = client.query_opt(&stmt, &[&name]).await.map_err(pg_error)? else {
            return Ok(None);
        };
        let parse = |i: usize| -> Result<serde_json::Value> {
            let text: String = row.try_get(i).map_err(pg_error)?;
            serde_json::from_str(&text).map_err(|e| {
                StoreError::Internal(format!("queue {name}: stored settings are not JSON: {e}"))
            })
        };
        Ok(Some(QueueRecord {
            name: name.to_owned(),
            declared: parse(0)?,
            settings: parse(1)?,
        }))
    }

    async fn save_queue(&self, record: QueueRecord) -> Result<()> {
        let core = self.core();
        let client = core.api_client().await?;
        let stmt = client
            .prepare_cached(queries::SAVE_QUEUE)
            .await
            .map_err(pg_error)?;
        let declared = record.declared.to_string();
        let settings = record.settings.to_string();
        client
            .execute(
                &stmt,
                &[&record.name, &declared, &settings, &self.own_now()],
            )
            .await
            .map_err(pg_error)?;
        drop(client);
        core.signals.settings(&record.name).notify_waiters();
        let _ = core.notify.send(Outgoing::Settings(record.name));
        Ok(())
    }

    fn work_signal(&self, queue: &str) -> Arc<Notify> {
        self.core().signals.work(queue)
    }

    fn finished_events(&self) -> broadcast::Receiver<JobId> {
        self.core().signals.finished.subscribe()
    }

    fn settings_signal(&self, queue: &str) -> Arc<Notify> {
        self.core().signals.settings(queue)
    }

    fn cancel_events(&self) -> broadcast::Receiver<JobId> {
        self.core().signals.cancel.subscribe()
    }

    fn poll_interval(&self) -> Option<Duration> {
        Some(self.core().options.poll_interval)
    }

    async fn close(&self) -> Result<()> {
        let core = self.core();
        if core.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let flushed = core.outcomes.flush().await;
        core.closed.store(true, Ordering::Release);
        // Puts already queued are answered before the put task stops: it
        // stops once every sender is gone.
        self.handle
            .puts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let _ = self.handle.shutdown.send(true);
        let tasks =
            std::mem::take(&mut *self.handle.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .is_err()
            {
                tracing::warn!("a store task did not stop within 5 s");
            }
        }
        core.api.close();
        core.bookkeeping.close();
        if !core.outcomes.is_idle() {
            tracing::warn!("closing the store with outcomes not written");
        }
        flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_and_redacted_in_every_url_form() {
        for (url, password) in [
            ("postgres://u:pw1@h:5432/db", Some("pw1")),
            ("postgresql://u:p%40ss@h/db?sslmode=disable", Some("p%40ss")),
            ("postgres://u@h/db?password=pw2&x=1", Some("pw2")),
            ("host=h user=u password=pw3 dbname=db", Some("pw3")),
            ("host=h user=u password='pw4' dbname=db", Some("pw4")),
            ("postgres://u@h/db", None),
        ] {
            assert_eq!(password_of(url).as_deref(), password, "{url}");
            if let Some(pw) = password {
                let shown = redact_url(url);
                assert!(!shown.contains(pw) && shown.contains("***"), "{shown}");
            }
        }
        let e = scrub(
            StoreError::Unavailable("no luck with pw5 today".into()),
            Some("pw5"),
        );
        assert_eq!(
            e.to_string(),
            "database unavailable: no luck with *** today"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for good in ["rdq", "rdq_t_0123abcd", "_x"] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in [
            "",
            "1rdq",
            "Rdq",
            "rdq-x",
            "rdq;drop",
            "a\"b",
            &"x".repeat(51),
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
