//! The child process of the `kill -9` crash test (`tests/it/crash.rs`) and
//! of the power-loss test (`tests/it/powerloss.rs`); not a tool.
//!
//! ```text
//! rdq-crash-child <db path> <total jobs N>
//!     [--sync full|normal] [--sync-interval-ms <ms>] [--checkpoint-every-ms <ms>]
//! ```
//!
//! It opens the SQLite store with the given sync level and `sync_interval`
//! (by default those of [`SqliteOptions::default`]), runs the queue
//! `crash` (width 8) and makes sure it holds the jobs `job-0` .. `job-<N-1>`
//! of kind `work`: it lists the keys already stored, in any state, and puts
//! the missing ones in order, in paced batches of 25. (An idempotency key only dedupes
//! *live* jobs, so putting again a key whose job has finished would add a
//! second job; hence the listing.) Then it waits until all `N` have
//! succeeded, stops the queue, closes the store and exits 0. A run of a job
//! sleeps 8 to 16 ms, the same for the job on every run.
//!
//! With `--checkpoint-every-ms`, a thread of its own checkpoints the log
//! that often, as the store's syncer does once the log passes 16 MB
//! (`PASSIVE`, on a connection of its own at `synchronous = NORMAL`): the
//! power-loss test's rounds are too short to reach that size, and this puts
//! checkpoints, and the writer starting the log over, under its cuts.
//!
//! The test kills it with `SIGKILL` at random points and checks the file
//! against what it printed. Lines go out whole, in one write each (a batch's
//! `ack` lines in one), flushed:
//!
//! * `open`, once the store is open;
//! * `ack <key> <id>`, once a put that holds the job has returned (at `full`,
//!   the job is committed and synced; at `normal`, committed);
//! * `start <key> <id> <attempt>`, when the handler begins a run of the job,
//!   before it does anything else;
//! * `puts-done`, once every missing job is put (at once if none was);
//! * `all-done`, last, after the store is closed.
//!
//! Bad arguments: a one-line message on stderr and exit code 2.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdq_store::sqlite::{SqliteOptions, SqliteStore, SyncLevel};
use rdq_store::{
    DurableQueue, HandlerError, JobContext, JobId, JobSpec, JobState, ListParams, PutOptions, Store,
};

/// The queue the test reads.
const QUEUE: &str = "crash";

/// The kind of every job.
const KIND: &str = "work";

/// Jobs per `put_many`.
const BATCH: u64 = 25;

/// Rows per page when listing the keys already stored.
const PAGE: usize = 1000;

/// Pause between two batches of puts, so that putting spans several of the
/// test's rounds and kills often land in the middle of it.
const PUT_PACE: Duration = Duration::from_millis(4);

/// How often the count of succeeded jobs is polled.
const POLL: Duration = Duration::from_millis(20);

/// The key of job `i`.
fn key(i: u64) -> String {
    format!("job-{i}")
}

/// Writes `text` (whole lines) to stdout in one write and flushes it, so a
/// kill leaves only whole lines behind. Errors are ignored: they mean the
/// test is gone, and the child will still finish and exit.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// What the arguments ask for.
struct Args {
    path: String,
    total: u64,
    options: SqliteOptions,
    checkpoint_every: Option<Duration>,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rdq-crash-child: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdq-crash-child: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Args, String> {
    const USAGE: &str = "usage: rdq-crash-child <db path> <total jobs N> [--sync full|normal] \
                         [--sync-interval-ms <ms>] [--checkpoint-every-ms <ms>] \
                         (the crash tests' child)";
    let [path, n, flags @ ..] = args else {
        return Err(USAGE.to_owned());
    };
    let total = n
        .parse::<u64>()
        .map_err(|e| format!("bad job count {n:?}: {e}"))?;
    let mut parsed = Args {
        path: path.clone(),
        total,
        options: SqliteOptions::default(),
        checkpoint_every: None,
    };
    let ms = |flag: &str, value: &str| {
        value
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|e| format!("bad {flag} {value:?}: {e}"))
    };
    for pair in flags.chunks(2) {
        match pair {
            [flag, level] if flag == "--sync" => {
                parsed.options.sync = match level.as_str() {
                    "full" => SyncLevel::Full,
                    "normal" => SyncLevel::Normal,
                    other => return Err(format!("bad sync level {other:?} (full or normal)")),
                };
            }
            [flag, value] if flag == "--sync-interval-ms" => {
                parsed.options.sync_interval = ms(flag, value)?;
            }
            [flag, value] if flag == "--checkpoint-every-ms" => {
                parsed.checkpoint_every = Some(ms(flag, value)?);
            }
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(parsed)
}

/// The `--checkpoint-every-ms` thread; stopped and joined when dropped.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: PathBuf, every: Duration) -> Result<Checkpointer, rusqlite::Error> {
        let conn = rusqlite::Connection::open(path)?;
        conn.execute_batch("PRAGMA busy_timeout = 0; PRAGMA synchronous = NORMAL;")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                // A busy log is checkpointed next time, as in the syncer.
                let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
            }
        });
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        path,
        total,
        options,
        checkpoint_every,
    } = args;
    let store = SqliteStore::open(&path, options).await?;
    say("open\n");
    let checkpointer = checkpoint_every
        .map(|every| Checkpointer::start(store.path().to_owned(), every))
        .transpose()?;
    let stored = stored_keys(&store).await?;

    let q = DurableQueue::builder(store.clone(), QUEUE)
        .width(8)
        .max_attempts(1000)
        .handler(KIND, |i: u64, ctx: JobContext| async move {
            say(&format!("start {} {} {}\n", key(i), ctx.id, ctx.attempt));
            // A little work, 8 to 16 ms, the same for a job on every run.
            let ms = 8 + i.wrapping_mul(7919) % 9;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, HandlerError>(())
        })
        .build()
        .await?;

    let missing: Vec<u64> = (0..total).filter(|&i| !stored.contains(&key(i))).collect();
    for batch in missing.chunks(BATCH as usize) {
        let specs = batch
            .iter()
            .map(|&i| JobSpec::new(KIND, &i, PutOptions::default().key(key(i))))
            .collect::<Result<Vec<_>, _>>()?;
        let done = q.put_many(specs).await?;
        let mut lines = String::new();
        for (&i, inserted) in batch.iter().zip(&done) {
            lines.push_str(&format!("ack {} {}\n", key(i), inserted.id));
        }
        say(&lines);
        tokio::time::sleep(PUT_PACE).await;
    }
    say("puts-done\n");

    loop {
        let counts = q.counts().await?;
        if counts.get(&JobState::Succeeded).copied().unwrap_or(0) >= total {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    q.stop(Duration::from_secs(5)).await?;
    drop(q);
    // Its connection closed first, so that the store's is the last and
    // removes the log.
    drop(checkpointer);
    store.close().await?;
    say("all-done\n");
    Ok(())
}

/// The keys of every job of the queue, in any state.
async fn stored_keys(store: &SqliteStore) -> Result<HashSet<String>, rdq_store::StoreError> {
    let mut keys = HashSet::new();
    let mut before: Option<JobId> = None;
    loop {
        let page = store
            .list(ListParams {
                queue: Some(QUEUE.to_owned()),
                state: None,
                before,
                limit: PAGE,
            })
            .await?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        keys.extend(page.into_iter().filter_map(|row| row.key));
    }
    Ok(keys)
}
