//! The embedded SQLite backend: one file, nothing to install.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rdq_store::StoreError> {
//! use rdq_store::sqlite::{SqliteOptions, SqliteStore};
//!
//! let store = SqliteStore::open("rdq.db", SqliteOptions::default()).await?;
//! # Ok(()) }
//! ```
//!
//! # One process per file
//!
//! Before SQLite opens the file, the store locks the file itself (and
//! `<file>.lock`, which holds its pid), so a second process is refused with
//! an error that names the first, whatever path it came by: a symlink, a
//! hard link. The store works on the file's real path (symlinks resolved);
//! [`SqliteStore::path`] returns it. The reasons and the details are in
//! `sqlite/lock.rs`. Several nodes sharing work need the PostgreSQL backend.
//!
//! # Another program holding the file
//!
//! A program that is not rdq (a `sqlite3` shell inside a transaction, a
//! backup or migration tool) may hold SQLite's own write lock on the file.
//! The store then logs a warning at once, naming the file, and waits up to
//! [`SqliteOptions::lock_wait`] (5 s by default) for the lock; after that
//! the open (or the write) fails with [`StoreError::Busy`], which names the
//! file, the cause and the fix. A server answers such writes with 503.
//!
//! # Threads
//!
//! A writer thread runs every write in batches (group commit; the design is
//! in `sqlite/writer.rs`); a syncer thread makes them durable (`syncer.rs`,
//! which also argues why this is as safe as `synchronous = FULL`); reads
//! run on a small pool of read-only connections, beside the writer (the log
//! lets readers and the writer work at once). A read first has the writer
//! commit whatever was requested before it, so every caller reads its own
//! writes.
//!
//! # Sync levels
//!
//! * [`SyncLevel::Full`] (the default): a put is acknowledged only after the
//!   log holding it is synced to disk. An acknowledged job survives `kill -9`,
//!   an OS crash and a power cut.
//! * [`SyncLevel::Normal`]: a put is acknowledged once committed, before the
//!   disk sync, which follows within `sync_interval` (100 ms by default). An
//!   acknowledged job survives `kill -9` (the data is with the kernel), but an
//!   OS crash or power cut can take back the puts of the last
//!   `sync_interval`. Faster per put when puts come one at a time.
//!
//! At either level, outcomes (a job finished) are synced within
//! `sync_interval`: a power cut in that window can make a finished job run
//! once more (at-least-once), never lose one.
//!
//! Tested by killing a child process mid-put, twice over: with `kill -9`,
//! which keeps what the kernel holds (`tests/it/crash.rs`), and as a power
//! cut, which keeps only what was synced: the power-loss test
//! (`tests/it/powerloss.rs`) snapshots each file at every `fsync` and
//! `fdatasync` (and the directory at its syncs) and restarts from those
//! snapshots. At `Full` it finds no acknowledged put lost; at `Normal` it
//! finds the puts of the unsynced window lost. Its module docs say what its
//! model of a power cut leaves out (writes reordered or torn within a file,
//! a disk that lies about a flush).
//!
//! # Recovery
//!
//! At open, every job still `underway` belonged to a process that died (the
//! lock guarantees no live process holds this file): each goes back to
//! `pending` and runs again as its next attempt, or to `dead` if that was its
//! last one. [`SqliteStore::recovered`] tells how many.

pub(crate) mod lock;
mod queries;
mod schema;
mod syncer;
mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot, Notify};

use self::lock::LockFile;
use self::syncer::Syncer;
use self::writer::{Ack, Op, Reply, Work, Writer};
use crate::error::{Result, StoreError};
use crate::row::{Completion, Inserted, JobId, JobRow, NewJob, Timestamp};
use crate::store::{
    CancelResult, ClaimParams, Claimed, HeartbeatReport, ListParams, QueueRecord,
    ReprioritizeResult, RescueParams, RescueReport, RetryResult, StateCounts, Store,
};

/// How much must be on disk before a put is acknowledged. See the
/// [module docs](self#sync-levels).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncLevel {
    /// Synced to disk: survives power loss.
    #[default]
    Full,
    /// Committed, synced within `sync_interval`: survives `kill -9`.
    Normal,
}

/// How to open a [`SqliteStore`].
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// See [`SyncLevel`].
    pub sync: SyncLevel,
    /// Longest a commit stays unsynced when nobody waits for it.
    pub sync_interval: Duration,
    /// Read-only connections kept for reads.
    pub readers: usize,
    /// Longest wait for a lock another program holds on the file (see
    /// [another program holding the file](self#another-program-holding-the-file)).
    pub lock_wait: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            sync: SyncLevel::Full,
            sync_interval: Duration::from_millis(100),
            readers: 4,
            lock_wait: Duration::from_secs(5),
        }
    }
}

struct Shared {
    path: PathBuf,
    ops: mpsc::Sender<Op>,
    readers: Mutex<Vec<Connection>>,
    signals: Mutex<HashMap<String, Arc<Notify>>>,
    settings: Mutex<HashMap<String, Arc<Notify>>>,
    finished: broadcast::Sender<JobId>,
    cancels: broadcast::Sender<JobId>,
    recovered: RescueReport,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Released by `close` (or when the last clone goes), after every
    /// connection is closed.
    lock: Mutex<Option<LockFile>>,
}

impl Drop for Shared {
    /// The last clone is gone without `close`: stop the writer (it commits
    /// and checkpoints) and close every connection *before* releasing the
    /// lock. Released first, another process could open the file while this
    /// one still writes; and closing the lock's descriptor drops every
    /// SQLite lock this process holds on the file (POSIX locks belong to
    /// the process, not the descriptor).
    fn drop(&mut self) {
        // Readers first: see `close`.
        self.readers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let (ops, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.ops, ops));
        for t in std::mem::take(self.threads.get_mut().unwrap_or_else(|e| e.into_inner())) {
            let _ = t.join();
        }
        self.readers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.lock
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}

/// A durable store in one SQLite file. Cheap to clone (shared).
#[derive(Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

/// Opens a read-write connection. It waits for no lock (busy timeout 0):
/// waits go through [`with_lock_wait`], which says so at once.
fn open_writable(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| StoreError::sqlite(path, e))?;
    conn.busy_timeout(Duration::ZERO)
        .map_err(|e| StoreError::sqlite(path, e))?;
    Ok(conn)
}

/// Sets up a read-write connection.
fn configure(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "{}: could not switch to write-ahead logging (journal mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA wal_autocheckpoint = 0;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -16384;",
    )
    .map_err(|e| StoreError::sqlite(path, e))?;
    Ok(())
}

/// Runs `f` on `conn`; if another program holds a lock on the file, warns
/// at once (naming the file) and runs it again, this time letting SQLite
/// wait up to `wait` for the lock. A lock still held then is
/// [`StoreError::Busy`].
pub(crate) fn with_lock_wait<T>(
    conn: &mut Connection,
    path: &Path,
    wait: Duration,
    mut f: impl FnMut(&mut Connection) -> Result<T>,
) -> Result<T> {
    match f(conn) {
        Err(StoreError::Busy { .. }) => {}
        other => return other,
    }
    tracing::warn!(
        path = %path.display(),
        "the database is locked by another program (not rdq: a sqlite3 shell, a backup tool?); waiting up to {}",
        humantime::format_duration(wait)
    );
    let set = |conn: &Connection, d| {
        conn.busy_timeout(d)
            .map_err(|e| StoreError::sqlite(path, e))
    };
    set(conn, wait)?;
    let result = f(conn);
    set(conn, Duration::ZERO)?;
    match result {
        Err(StoreError::Busy { path, .. }) => Err(StoreError::Busy { path, waited: wait }),
        Ok(value) => {
            tracing::info!(path = %path.display(), "the other program let go of the database");
            Ok(value)
        }
        other => other,
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, migrates it, and
    /// recovers the jobs a dead process left underway.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<SqliteStore> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path, options))
            .await
            .map_err(|e| StoreError::Internal(format!("opening panicked: {e}")))?
    }

    fn open_blocking(given: PathBuf, options: SqliteOptions) -> Result<SqliteStore> {
        let dir = match given.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(StoreError::NoDirectory { path: given, dir });
        }
        // Locked before SQLite opens it; from here on, the real path.
        let (lock, path) = LockFile::acquire(&given)?;
        let mut conn = open_writable(&path)?;
        let recovered = with_lock_wait(&mut conn, &path, options.lock_wait, |conn| {
            configure(conn, &path)?;
            schema::migrate(conn, &path).map_err(|e| e.at(&path))?;
            let now = Timestamp::from(std::time::SystemTime::now());
            queries::rescue(conn, Timestamp(i64::MAX), None, 0, now).map_err(|e| e.at(&path))
        })?;
        if recovered.requeued + recovered.dead > 0 {
            tracing::warn!(
                path = %path.display(),
                requeued = recovered.requeued,
                dead = recovered.dead,
                "recovered jobs left underway by a process that died"
            );
        }
        // Everything so far on disk before any work starts (the log exists
        // from the first write on).
        let wal_path = {
            let mut p = path.as_os_str().to_owned();
            p.push("-wal");
            PathBuf::from(p)
        };
        // The log through a descriptor of its own (SQLite holds no lock on
        // the log file: its locks are on `-shm`); the database through the
        // lock's, because closing a descriptor of the database file would
        // drop SQLite's shared lock on it, and then another program's
        // connection, closing, would take itself for the last one and
        // delete the log under this store (see `lock.rs`).
        match std::fs::File::open(&wal_path).and_then(|f| f.sync_all()) {
            // No log yet: nothing was written since the last clean close.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(|source| StoreError::Io {
                path: wal_path.clone(),
                source,
            })?,
        }
        lock.sync_db().map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })?;

        let mut sync_conn = open_writable(&path)?;
        with_lock_wait(&mut sync_conn, &path, options.lock_wait, |c| {
            configure(c, &path)
        })?;
        let (ops_tx, ops_rx) = mpsc::channel();
        let (sync_tx, sync_rx) = mpsc::channel();
        let (finished, _) = broadcast::channel(4096);
        let writer = Writer {
            path: path.clone(),
            lock_wait: options.lock_wait,
            conn,
            ops: ops_rx,
            syncer: sync_tx,
            finished: finished.clone(),
            ack_at_commit: options.sync == SyncLevel::Normal,
        };
        let syncer = Syncer::new(wal_path, sync_conn, sync_rx, options.sync_interval);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(f)
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })
        };
        let threads = vec![
            spawn("rdq-sqlite-writer", Box::new(move || writer.run()))?,
            spawn("rdq-sqlite-syncer", Box::new(move || syncer.run()))?,
        ];
        let mut readers = Vec::new();
        for _ in 0..options.readers.max(1) {
            readers.push(Self::open_reader(&path)?);
        }
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                path,
                ops: ops_tx,
                readers: Mutex::new(readers),
                signals: Mutex::new(HashMap::new()),
                settings: Mutex::new(HashMap::new()),
                finished,
                cancels: broadcast::channel(1024).0,
                recovered,
                threads: Mutex::new(threads),
                lock: Mutex::new(Some(lock)),
            }),
        })
    }

    fn open_reader(path: &Path) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::sqlite(path, e))?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(|e| StoreError::sqlite(path, e))?;
        Ok(conn)
    }

    /// The database file: its real path (symlinks resolved), which may
    /// differ from the path it was opened by.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// What recovery at open did: jobs left underway by a dead process.
    pub fn recovered(&self) -> RescueReport {
        self.shared.recovered
    }

    /// Waits until every write requested before this call, outcomes
    /// included, is committed and synced to disk (`fdatasync` of the log),
    /// at either [`SyncLevel`]. Outcomes are otherwise synced within
    /// `sync_interval`; this is for a caller that must know they are durable
    /// now (a benchmark's clock, a test of power loss).
    pub async fn sync(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Sync(Box::new(move |r| {
            let _ = tx.send(r);
        })))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Writes everything queued, checkpoints, stops the store's threads and
    /// releases the file, even while clones of this store exist. Later calls
    /// on any clone fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<()> {
        self.flush().await?;
        // Readers first, so that the writer's connection, the only
        // read-write one, is the last to close: only then does SQLite
        // checkpoint and delete the log (`-wal`), every time.
        self.shared
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.send(Op::Shutdown)?;
        let threads = std::mem::take(
            &mut *self
                .shared
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await
        .map_err(|e| StoreError::Internal(format!("closing panicked: {e}")))?;
        // Every connection is closed (a read that raced with this close
        // put its reader back: close it too). Closing the lock's descriptor
        // drops the SQLite locks of this process on the file, so only now
        // let another process (or a reopen) have the file.
        self.shared
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.shared
            .lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        Ok(())
    }

    fn send(&self, op: Op) -> Result<()> {
        self.shared.ops.send(op).map_err(|_| StoreError::Closed)
    }

    /// Runs `f` in the writer's transaction; answers at the `ack` point.
    async fn write<T, F>(&self, ack: Ack, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let work: Work = Box::new(move |conn: Option<&Connection>| match conn.map(f) {
            Some(Ok(value)) => Reply {
                ok: true,
                done: Box::new(move |r: Result<()>| {
                    let _ = tx.send(r.map(|()| value));
                }),
            },
            Some(Err(e)) => Reply {
                ok: false,
                done: Box::new(move |_| {
                    let _ = tx.send(Err(e));
                }),
            },
            None => Reply {
                ok: false,
                done: Box::new(move |r: Result<()>| {
                    let _ = tx.send(Err(r.err().unwrap_or(StoreError::Closed)));
                }),
            },
        });
        self.send(Op::Write { ack, work })?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| e.at(&self.shared.path))
    }

    /// Runs `f` on a reader connection, off the async threads, after
    /// committing every write requested before: a caller always reads its
    /// own writes, including those answered before their commit.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.flush().await?;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let conn = shared
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let conn = match conn {
                Some(c) => c,
                None => Self::open_reader(&shared.path)?,
            };
            let result = {
                #[cfg(feature = "watchdog")]
                let _held = rdq_watchdog::hold("sqlite read connection");
                f(&conn)
            };
            shared
                .readers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Internal(format!("a read panicked: {e}")))?
        .map_err(|e| e.at(&self.shared.path))
    }
}

impl Store for SqliteStore {
    async fn insert_many(&self, jobs: Vec<NewJob>, now: Timestamp) -> Result<Vec<Inserted>> {
        for job in &jobs {
            job.validate()?;
        }
        let queues: Vec<String> = {
            let mut q: Vec<String> = jobs.iter().map(|j| j.queue.clone()).collect();
            q.sort();
            q.dedup();
            q
        };
        let inserted = self
            .write(Ack::Sync, move |conn| queries::insert(conn, &jobs, now))
            .await?;
        for q in queues {
            self.work_signal(&q).notify_one();
        }
        Ok(inserted)
    }

    async fn claim(&self, params: ClaimParams) -> Result<Claimed> {
        if params.max == 0 {
            return Ok(Claimed::default());
        }
        // Answered between the select and the updates, so the jobs start
        // while the writer marks them (the updates are most of a claim's
        // time: ~130 of 170 µs for 28 jobs in W2). The writer runs nothing
        // else in between, so no request sees them pending meanwhile; and
        // if the updates fail, SQLite has failed the transaction, whose
        // claims are void anyway (see `writer.rs`, "Answers"): the jobs are
        // still pending and run again, at least once as ever.
        let (tx, rx) = oneshot::channel::<Result<Claimed>>();
        let work: Work = Box::new(move |conn: Option<&Connection>| {
            let Some(conn) = conn else {
                return Reply {
                    ok: false,
                    done: Box::new(move |r: Result<()>| {
                        let _ = tx.send(Err(r.err().unwrap_or(StoreError::Closed)));
                    }),
                };
            };
            let allowance = match queries::allowance(conn, &params) {
                Ok(a) => a,
                Err(e) => {
                    return Reply {
                        ok: false,
                        done: Box::new(move |_| {
                            let _ = tx.send(Err(e));
                        }),
                    }
                }
            };
            let limited = allowance.limited;
            let asked = ClaimParams {
                max: allowance.max,
                ..params.clone()
            };
            let selected = if asked.max == 0 {
                Ok(Vec::new())
            } else {
                queries::claim_select(conn, &asked)
            };
            match selected {
                Ok(jobs) if jobs.is_empty() => {
                    let _ = tx.send(Ok(Claimed { jobs, limited }));
                    Reply {
                        ok: true,
                        done: Box::new(|_| {}),
                    }
                }
                Ok(jobs) => {
                    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
                    // Fewer than allowed: the queue ran dry, whatever the limit.
                    let limited = if jobs.len() < asked.max {
                        None
                    } else {
                        limited
                    };
                    let _ = tx.send(Ok(Claimed { jobs, limited }));
                    let marked = queries::claim_mark(conn, &ids, &params)
                        .and_then(|()| queries::spend_tokens(conn, &params, &allowance, ids.len()));
                    if let Err(e) = &marked {
                        tracing::error!(error = %e, "marking claimed jobs underway failed; they will run again");
                    }
                    Reply {
                        ok: marked.is_ok(),
                        done: Box::new(|_| {}),
                    }
                }
                Err(e) => Reply {
                    ok: false,
                    done: Box::new(move |_| {
                        let _ = tx.send(Err(e));
                    }),
                },
            }
        });
        self.send(Op::Write {
            ack: Ack::Now,
            work,
        })?;
        rx.await
            .map_err(|_| StoreError::Closed)?
            .map_err(|e| e.at(&self.shared.path))
    }

    fn complete(&self, done: Completion) {
        if let Err(e) = self.send(Op::Complete(done)) {
            tracing::error!(error = %e, "a job's outcome could not be queued for writing");
        }
    }

    async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(Box::new(move |r| {
            let _ = tx.send(r);
        })))?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn heartbeat(
        &self,
        node: &str,
        ids: Vec<JobId>,
        lease: Duration,
        now: Timestamp,
    ) -> Result<HeartbeatReport> {
        let node = node.to_owned();
        self.write(Ack::Now, move |conn| {
            queries::heartbeat(conn, &node, &ids, now.plus(lease))
        })
        .await
    }

    async fn rescue(&self, params: RescueParams) -> Result<RescueReport> {
        let now = Timestamp::from(std::time::SystemTime::now());
        let before = params.expired_before.unwrap_or(now);
        let report = self
            .write(Ack::Now, move |conn| {
                queries::rescue(conn, before, params.queue.as_deref(), params.limit, now)
            })
            .await?;
        if report.requeued > 0 {
            for signal in self
                .shared
                .signals
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
            {
                signal.notify_one();
            }
        }
        Ok(report)
    }

    async fn promote_due(&self, queue: &str, now: Timestamp) -> Result<u64> {
        let queue = queue.to_owned();
        self.write(Ack::Now, move |conn| {
            queries::promote_due(conn, &queue, now)
        })
        .await
    }

    async fn next_due(&self, queue: &str) -> Result<Option<Timestamp>> {
        let queue = queue.to_owned();
        self.read(move |conn| queries::next_due(conn, &queue)).await
    }

    async fn cancel(&self, id: JobId, now: Timestamp) -> Result<CancelResult> {
        let result = self
            .write(Ack::Sync, move |conn| queries::cancel(conn, id, now))
            .await?;
        match result {
            CancelResult::Cancelled => {
                let _ = self.shared.finished.send(id);
            }
            CancelResult::Underway(_) => {
                let _ = self.shared.cancels.send(id);
            }
            _ => {}
        }
        Ok(result)
    }

    async fn hold(&self, queue: &str, until: Timestamp) -> Result<()> {
        let queue = queue.to_owned();
        let now = Timestamp::from(std::time::SystemTime::now());
        self.write(Ack::Now, move |conn| {
            queries::hold(conn, &queue, until, now)
        })
        .await?;
        Ok(())
    }

    async fn reprioritize(&self, id: JobId, priority: i32) -> Result<ReprioritizeResult> {
        self.write(Ack::Sync, move |conn| {
            queries::reprioritize(conn, id, priority)
        })
        .await
    }

    async fn retry(&self, id: JobId, now: Timestamp) -> Result<RetryResult> {
        let result = self
            .write(Ack::Sync, move |conn| queries::retry(conn, id, now))
            .await?;
        if result == RetryResult::Retried {
            if let Some(job) = self.get(id).await? {
                self.work_signal(&job.queue).notify_one();
            }
        }
        Ok(result)
    }

    async fn cancel_oldest_pending(&self, queue: &str, now: Timestamp) -> Result<Option<JobId>> {
        let queue = queue.to_owned();
        let id = self
            .write(Ack::Sync, move |conn| {
                queries::cancel_oldest_pending(conn, &queue, now)
            })
            .await?;
        if let Some(id) = id {
            let _ = self.shared.finished.send(id);
        }
        Ok(id)
    }

    async fn oldest_pending(&self, queue: &str) -> Result<Option<Timestamp>> {
        let queue = queue.to_owned();
        self.read(move |conn| queries::oldest_pending(conn, &queue))
            .await
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRow>> {
        self.read(move |conn| queries::get(conn, id)).await
    }

    async fn list(&self, params: ListParams) -> Result<Vec<JobRow>> {
        self.read(move |conn| queries::list(conn, &params)).await
    }

    async fn pending_count(&self, queue: &str) -> Result<u64> {
        let queue = queue.to_owned();
        self.read(move |conn| queries::pending_count(conn, &queue))
            .await
    }

    async fn counts(&self, queue: &str) -> Result<StateCounts> {
        let queue = queue.to_owned();
        self.read(move |conn| queries::counts(conn, &queue)).await
    }

    async fn prune(&self, queue: &str, before: Timestamp, limit: u64) -> Result<u64> {
        let queue = queue.to_owned();
        self.write(Ack::Now, move |conn| {
            queries::prune(conn, &queue, before, limit)
        })
        .await
    }

    async fn load_queue(&self, name: &str) -> Result<Option<QueueRecord>> {
        let name = name.to_owned();
        self.read(move |conn| queries::load_queue(conn, &name))
            .await
    }

    async fn save_queue(&self, record: QueueRecord) -> Result<()> {
        let now = Timestamp::from(std::time::SystemTime::now());
        let name = record.name.clone();
        self.write(Ack::Sync, move |conn| {
            queries::save_queue(conn, &record, now)
        })
        .await?;
        signal(&self.shared.settings, &name).notify_waiters();
        Ok(())
    }

    fn work_signal(&self, queue: &str) -> Arc<Notify> {
        signal(&self.shared.signals, queue)
    }

    fn finished_events(&self) -> broadcast::Receiver<JobId> {
        self.shared.finished.subscribe()
    }

    fn settings_signal(&self, queue: &str) -> Arc<Notify> {
        signal(&self.shared.settings, queue)
    }

    fn cancel_events(&self) -> broadcast::Receiver<JobId> {
        self.shared.cancels.subscribe()
    }

    /// `None`: one process owns the file, so every signal is exact.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }

    async fn close(&self) -> Result<()> {
        SqliteStore::close(self).await
    }
}

/// The signal for `queue` in `map`, made on first use.
fn signal(map: &Mutex<HashMap<String, Arc<Notify>>>, queue: &str) -> Arc<Notify> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(queue.to_owned())
        .or_default()
        .clone()
}

#[cfg(all(test, feature = "watchdog"))]
mod tests {
    use super::*;

    fn held(resource: &str) -> bool {
        rdq_watchdog::holds().iter().any(|h| h.resource == resource)
    }

    /// The write transaction and a read connection are holds while they
    /// are in use, and not after: the stall watchdog reports one that lasts.
    /// (The only test in this binary that opens a store.)
    #[tokio::test]
    async fn transactions_and_reads_are_holds_while_they_last() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("holds.db"), SqliteOptions::default())
            .await
            .expect("open");
        let in_write = store
            .write(Ack::Now, |_| Ok(held("sqlite write transaction")))
            .await
            .expect("write");
        let in_read = store
            .read(|_| Ok(held("sqlite read connection")))
            .await
            .expect("read");
        assert!(in_write && in_read, "write {in_write}, read {in_read}");
        store.close().await.expect("close");
        assert!(!held("sqlite read connection"));
        assert!(!held("sqlite write transaction"));
    }
}
