//! Power loss under load: a put acknowledged at the default sync level
//! survives losing everything that was not synced; at
//! [`SyncLevel::Normal`](rdq_store::sqlite::SyncLevel::Normal) it may not,
//! and the test sees that.
//!
//! `kill -9` (the crash test, `crash.rs`) leaves what the child wrote with
//! the kernel, which writes it out later whether or not it was synced: that
//! test would pass if the store never called `fdatasync`. This one throws
//! away what was not synced.
//!
//! # The model of a power cut
//!
//! The child (`rdq-crash-child`, as in the crash test) runs with an
//! `LD_PRELOAD` shim (`tests/powerloss/shim.c`, compiled by the test with
//! `cc` into its temporary directory) that wraps `fsync` and `fdatasync`.
//! At each such call on a file of the database's directory, before the
//! call goes on to the kernel, the shim copies the file's contents to a
//! snapshot directory; at each such call on the directory itself, it saves
//! the directory's listing (names and inodes). A kill then stands for a
//! power cut, after which:
//!
//! * the directory holds the names it held at its last sync;
//! * each of those files holds what it held at its last sync (`fsync` or
//!   `fdatasync`), or nothing if it was never synced; a file created,
//!   synced, deleted and created again under the same name counts as new
//!   (the snapshots are kept by name and inode);
//! * the shared-memory index (`-shm`) is gone (SQLite rebuilds it from the
//!   log).
//!
//! Everything in the directory when the child starts counts as synced: it
//! is the state the previous round's restart left. The copy is taken before
//! the real call (everything in it was written before the sync began, so it
//! is on disk once the sync returns); a sync cut by the kill may still count
//! (what it covers was never acknowledged).
//!
//! Bundled SQLite calls `fsync` (it maps `fdatasync` to `fsync` unless built
//! with `HAVE_FDATASYNC`, which `libsqlite3-sys` does not set), on the
//! database, the log, a rollback journal and the directory; it never calls
//! `msync` (the database is not memory-mapped; the `-shm` index is, but it
//! is never synced and is rebuilt after a crash). The store's syncer calls
//! `fdatasync` on the log, and its open `fsync` on the log and the database.
//! SQLite is linked into the binary statically, but these are calls into
//! the C library, which is linked dynamically, so they go through the
//! dynamic linker and the shim gets them. The test checks that it saw
//! syncs of the log and of the directory (only SQLite syncs the directory),
//! and prints how many it saw of each. (Checked once against `strace -f`
//! of a child run with checkpoints: 95 `fdatasync` and 64 `fsync` of the
//! log, 3 `fsync` of the database, 2 of a journal and 4 of the directory,
//! the same counts as the shim's snapshots; no `msync`, `sync_file_range`
//! or `syncfs`.)
//!
//! The directory is modelled strictly: a new file's name survives only once
//! the directory itself is synced (ext4 also keeps it after the file's own
//! `fsync`; POSIX does not promise that). The store never syncs the
//! directory: SQLite does, the first time it syncs a log or rollback
//! journal it created, and that also covers the database file the store
//! created just before. The `.lock` file is never synced; it comes back
//! empty, which the store accepts.
//!
//! What the model leaves out: a file's unsynced writes reaching the disk in
//! part or in another order than they were made (here a file is its last
//! synced state, whole); torn sectors and pages; a sync that fails; a disk
//! that acknowledges a flush it has not done. Writes made durable by other
//! means (`O_SYNC`, `sync_file_range`, `syncfs`) would count as lost: neither
//! SQLite nor the store uses them, and if one did the test would fail, not
//! pass wrongly. So the test shows that every acknowledged put (its log
//! frames and, for a new log, the log's name) was synced before it was
//! acknowledged; not that SQLite survives every state a real disk can be
//! left in (SQLite's own tests do that).
//!
//! # The test
//!
//! Each round takes a snapshot of the directory as it is (the baseline),
//! starts the child under the shim and kills it with `SIGKILL` at a random
//! point of its puts: after a random number of `ack` lines following its
//! first, or a random time after that first one, whichever comes first; so
//! most kills come right after the child printed an `ack`, when the
//! difference between committed and synced matters most. Jobs run beside
//! the puts (claims and outcomes are committed too). In even rounds the
//! child also checkpoints the log every [`CHECKPOINT_EVERY_MS`]: the store
//! checkpoints only past 16 MB of log, which a round never writes, and this
//! puts checkpoints (a sync of the log, writes to the database and a sync
//! of it) and the writer starting the log over under the cuts too.
//!
//! Then the test replaces the directory with what the model says is left,
//! opens the store (which recovers), runs SQLite's `integrity_check`, and
//! checks that every put acknowledged so far is there, with its
//! acknowledged id, and that no key is stored twice. The next round resumes
//! on that state; the child puts the keys it does not find.
//!
//! Two variants run:
//!
//! * at the default [`SyncLevel::Full`](rdq_store::sqlite::SyncLevel::Full)
//!   (a put acknowledged after its log is synced) no acknowledged put may
//!   be lost;
//! * at `SyncLevel::Normal` (acknowledged at commit, synced within
//!   `sync_interval`) the test must find acknowledged puts lost, to show it
//!   can. Its child syncs every second ([`NORMAL_SYNC_INTERVAL_MS`], not
//!   the default 100 ms), so that a kill within a few hundred milliseconds of
//!   the first `ack` is sure to fall in the unsynced window, however busy
//!   the machine is (with the default interval it finds losses too, since
//!   most kills follow an `ack` by far less than 100 ms, but not surely).
//!   Only a checkpoint's sync of the log saves some of a round's puts. A
//!   lost put's key is put again by the next round, and only its new
//!   acknowledgement counts from then on.
//!
//! Each variant reports, with `--nocapture`, per round and in total: kills
//! that landed while puts were being acknowledged, acknowledged puts,
//! acknowledged puts lost, the syncs the shim saw and the times a restored
//! log had started over. `RDQ_POWERLOSS_ROUNDS` sets the number of rounds
//! of each variant and `RDQ_POWERLOSS_SEED` the seed of the kill plans; the
//! seed is printed, so a failure's kill plans can be replayed (the child's
//! own pace still varies).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rdq_store::sqlite::{SqliteOptions, SqliteStore};

use crate::child::{self, all_rows, KillPlan, Rng, Running};

/// Rounds of the `full` variant unless `RDQ_POWERLOSS_ROUNDS` says otherwise.
const FULL_ROUNDS: usize = 20;

/// Rounds of the `normal` variant unless `RDQ_POWERLOSS_ROUNDS` says
/// otherwise.
const NORMAL_ROUNDS: usize = 8;

/// The `normal` child's `sync_interval`; see the [module docs](self).
const NORMAL_SYNC_INTERVAL_MS: u64 = 1000;

/// Jobs the child puts (`N`), per round: more than the rounds acknowledge,
/// so that every round is killed while putting.
const JOBS_PER_ROUND: u64 = 1200;

/// A round is killed after this many `ack` lines beyond the first ...
const KILL_ACKS: std::ops::RangeInclusive<u64> = 0..=1000;

/// ... or this many milliseconds after the first, whichever comes first.
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 0..=500;

/// Even rounds checkpoint the log this often (see the [module docs](self)).
const CHECKPOINT_EVERY_MS: u64 = 20;

/// How long a round may take before the kill comes anyway (a child that
/// never acknowledges a put).
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// The database file's name.
const DB: &str = "power.db";

/// Problems shown in full in a failure message.
const SHOWN: usize = 20;

/// Compiles the shim into `dir`; the path of the shared object.
fn build_shim(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/powerloss/shim.c");
    let out = dir.join("powerloss-shim.so");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let built = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&source)
        .args(["-ldl", "-lpthread"])
        .output()
        .unwrap_or_else(|e| panic!("running {cc:?} to build the power-loss shim: {e}"));
    assert!(
        built.status.success(),
        "{cc:?} failed to build {}: {}",
        source.display(),
        String::from_utf8_lossy(&built.stderr)
    );
    out
}

/// The regular files of `dir`, as `(inode, name)`.
fn listing(dir: &Path) -> Vec<(u64, String)> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("reading the database directory") {
        let entry = entry.expect("a directory entry");
        let meta = entry.metadata().expect("a file's metadata");
        if meta.is_file() {
            let name = entry.file_name().into_string().expect("a UTF-8 name");
            files.push((meta.ino(), name));
        }
    }
    files
}

/// Where the snapshot of the file `name` with inode `ino` is kept (the
/// shim's naming).
fn snapshot_of(snap: &Path, name: &str, ino: u64) -> PathBuf {
    snap.join(format!("f-{name}@{ino}"))
}

/// Starts a round's snapshots: everything in `db_dir` counts as synced.
fn baseline(db_dir: &Path, snap: &Path) {
    if snap.exists() {
        fs::remove_dir_all(snap).expect("clearing the snapshots");
    }
    fs::create_dir(snap).expect("creating the snapshot directory");
    let files = listing(db_dir);
    let mut dir = String::new();
    for (ino, name) in &files {
        fs::copy(db_dir.join(name), snapshot_of(snap, name, *ino)).expect("copying a file");
        dir.push_str(&format!("{ino} {name}\n"));
    }
    fs::write(snap.join("dir"), dir).expect("writing the listing");
}

/// What a power cut left: the files put back, with their sizes, and those
/// whose name was synced but never their contents.
struct Restored {
    files: Vec<(String, u64)>,
    empty: Vec<String>,
    /// The restored log's checkpoint sequence number (in its header): how
    /// many times the log started over since it was created.
    log_generation: Option<u32>,
}

/// Replaces `db_dir`'s files with what the model says a power cut leaves.
fn restore(snap: &Path, db_dir: &Path) -> Restored {
    let dir = fs::read_to_string(snap.join("dir")).expect("reading the listing");
    for (_, name) in listing(db_dir) {
        fs::remove_file(db_dir.join(name)).expect("removing a file");
    }
    let mut restored = Restored {
        files: Vec::new(),
        empty: Vec::new(),
        log_generation: None,
    };
    for line in dir.lines() {
        let (ino, name) = line.split_once(' ').expect("an `<inode> <name>` line");
        if name.ends_with("-shm") {
            continue;
        }
        let ino: u64 = ino.parse().expect("an inode number");
        let from = snapshot_of(snap, name, ino);
        let to = db_dir.join(name);
        if from.exists() {
            let bytes = fs::copy(&from, &to).expect("restoring a file");
            restored.files.push((name.to_owned(), bytes));
        } else {
            fs::File::create(&to).expect("creating an empty file");
            restored.empty.push(name.to_owned());
        }
    }
    restored.files.sort();
    let log = fs::read(db_dir.join(format!("{DB}-wal"))).unwrap_or_default();
    restored.log_generation = log
        .get(12..16)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    restored
}

/// The syncs the shim saw in one round.
#[derive(Default)]
struct Syncs {
    files: usize,
    /// Of the log (`-wal`).
    log: usize,
    /// Of the database file (after a checkpoint wrote to it, or at open).
    db: usize,
    dirs: usize,
    errors: Vec<String>,
}

fn read_log(snap: &Path) -> Syncs {
    let mut syncs = Syncs::default();
    let log = fs::read_to_string(snap.join("log")).unwrap_or_default();
    for line in log.lines() {
        match line.split(' ').next() {
            Some("file") => {
                syncs.files += 1;
                syncs.log += usize::from(line.contains("-wal "));
                syncs.db += usize::from(line.starts_with(&format!("file {DB} ")));
            }
            Some("dir") => syncs.dirs += 1,
            _ => syncs.errors.push(line.to_owned()),
        }
    }
    syncs
}

/// A variant's results.
#[derive(Default)]
struct Report {
    kills: usize,
    kills_during_puts: usize,
    /// `ack` lines, over all rounds.
    acks: usize,
    /// Acknowledged puts found lost.
    lost: Vec<String>,
    /// Anything else wrong.
    violations: Vec<String>,
    syncs: Syncs,
    /// Times the log started over, as the restored logs' headers count.
    log_restarts: usize,
}

/// Runs `rounds` power cuts of a child at sync level `level` (`full` or
/// `normal`), with the given `sync_interval`.
fn power_cuts(level: &str, interval_ms: Option<u64>, default_rounds: usize) -> (u64, Report) {
    let rounds: usize = child::env_or("RDQ_POWERLOSS_ROUNDS", || default_rounds);
    let seed = child::seed("RDQ_POWERLOSS_SEED");
    let jobs = JOBS_PER_ROUND * rounds.max(1) as u64;
    let interval = interval_ms.map_or("default".to_owned(), |ms| format!("{ms} ms"));
    println!(
        "power-loss test, sync level {level}, sync_interval {interval}: seed {seed} \
         (RDQ_POWERLOSS_SEED={seed} replays the kill plans), {rounds} rounds, {jobs} jobs"
    );
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let shim = build_shim(tmp.path());
    let db_dir = tmp.path().join("db");
    fs::create_dir(&db_dir).unwrap();
    // The shim compares the real paths the kernel reports.
    let db_dir = db_dir.canonicalize().unwrap();
    let db = db_dir.join(DB);
    let snap = tmp.path().join("snapshots");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut report = Report::default();
    // Key → id, of every acknowledged put not found lost.
    let mut acked: HashMap<String, i64> = HashMap::new();

    for round in 1..=rounds {
        baseline(&db_dir, &snap);
        let mut cmd = child::command(&db, jobs);
        cmd.args(["--sync", level]);
        if let Some(ms) = interval_ms {
            cmd.args(["--sync-interval-ms", &ms.to_string()]);
        }
        let checkpoints = round % 2 == 0;
        if checkpoints {
            cmd.args(["--checkpoint-every-ms", &CHECKPOINT_EVERY_MS.to_string()]);
        }
        cmd.env("LD_PRELOAD", &shim)
            .env("RDQ_POWERLOSS_DIR", &db_dir)
            .env("RDQ_POWERLOSS_SNAP", &snap);
        let plan = KillPlan {
            acks_after_first: rng.in_range(&KILL_ACKS),
            delay: Duration::from_millis(rng.in_range(&KILL_DELAY_MS)),
        };
        let run = Running::spawn(cmd).run(Some(plan), ROUND_TIMEOUT);
        let violation = |report: &mut Report, what: String| {
            report.violations.push(format!("round {round}: {what}"));
        };
        if run.killed {
            report.kills += 1;
            report.kills_during_puts += usize::from(run.killed_during_puts());
        } else {
            violation(&mut report, format!("the child exited: {}", run.describe()));
        }
        for line in &run.lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["ack", key, id] => {
                    let id: i64 = id.parse().expect("an id");
                    report.acks += 1;
                    if let Some(old) = acked.insert((*key).to_owned(), id) {
                        if old != id {
                            violation(
                                &mut report,
                                format!("{key} acknowledged twice, as {old} and {id}"),
                            );
                        }
                    }
                }
                ["open"] | ["puts-done"] | ["start", ..] => {}
                _ => violation(&mut report, format!("the child printed {line:?}")),
            }
        }
        let syncs = read_log(&snap);
        for e in &syncs.errors {
            violation(&mut report, format!("the shim: {e}"));
        }
        let restored = restore(&snap, &db_dir);

        let (lost, problems) = runtime.block_on(check(&db, &mut acked));
        for what in problems {
            violation(&mut report, what);
        }
        let files: Vec<String> = restored
            .files
            .iter()
            .map(|(name, bytes)| format!("{name} {bytes} B"))
            .chain(restored.empty.iter().map(|name| format!("{name} empty")))
            .collect();
        println!(
            "{level} round {round:>2}{}: {} after {:>3} ms, {:>4} acked; syncs: {:>2} log, {} db, {} dir; \
             restored: {}{}; {} acknowledged puts lost",
            if checkpoints { " (checkpoints)" } else { "" },
            if run.killed_during_puts() {
                "killed during puts"
            } else if run.killed {
                "killed, not putting"
            } else {
                "exited"
            },
            run.ran.as_millis(),
            run.acks(),
            syncs.log,
            syncs.db,
            syncs.dirs,
            files.join(", "),
            match restored.log_generation {
                Some(n) if n > 0 => format!(" (log restarts: {n})"),
                _ => String::new(),
            },
            lost.len(),
        );
        report.syncs.files += syncs.files;
        report.syncs.log += syncs.log;
        report.syncs.db += syncs.db;
        report.syncs.dirs += syncs.dirs;
        report.log_restarts += restored.log_generation.unwrap_or(0) as usize;
        report
            .lost
            .extend(lost.into_iter().map(|l| format!("round {round}: {l}")));
    }
    println!("power-loss report, sync level {level} (seed {seed}):");
    println!(
        "  rounds                 {rounds}; {} killed the child",
        report.kills
    );
    println!(
        "  kills during puts      {} (after the run's first ack, before its puts-done)",
        report.kills_during_puts
    );
    println!("  puts acknowledged      {}", report.acks);
    println!("  acknowledged puts lost {}", report.lost.len());
    println!(
        "  syncs seen by the shim {} of files ({} of the log, {} of the database), {} of the directory",
        report.syncs.files, report.syncs.log, report.syncs.db, report.syncs.dirs
    );
    println!(
        "  log restarts           {} (in the restored logs: checkpoints that let the writer start the log over)",
        report.log_restarts
    );
    println!("  other violations       {}", report.violations.len());

    assert!(
        report.violations.is_empty(),
        "seed {seed}: {} violations; first ones:\n{:#?}",
        report.violations.len(),
        report.violations.iter().take(SHOWN).collect::<Vec<_>>()
    );
    // The store syncs the log (`fdatasync`); only SQLite syncs the
    // directory (`fsync`, when it creates a log or a journal).
    assert!(
        report.syncs.log > 0 && report.syncs.dirs > 0,
        "the shim saw {} syncs of the log and {} of the directory: it does not intercept \
         the child's fdatasync (the store's) or fsync (SQLite's)",
        report.syncs.log,
        report.syncs.dirs
    );
    assert!(
        report.kills_during_puts * 2 >= rounds,
        "seed {seed}: only {} of {rounds} kills landed while puts were being acknowledged",
        report.kills_during_puts
    );
    (seed, report)
}

/// Opens the restored store and checks it against `acked`; removes the
/// acknowledged puts it finds lost from `acked` and returns them, with any
/// other problem.
async fn check(db: &Path, acked: &mut HashMap<String, i64>) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let store = SqliteStore::open(db, SqliteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("reopening after the power cut failed: {e}"));
    let integrity: Vec<String> = {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("a read-only connection");
        let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    };
    if integrity != ["ok"] {
        problems.push(format!("integrity check: {integrity:?}"));
    }
    let rows = all_rows(&store).await;
    store.close().await.expect("closing the store");

    let mut by_key: HashMap<String, i64> = HashMap::new();
    for row in &rows {
        let Some(key) = row.key.clone() else {
            problems.push(format!("job {} has no key", row.id));
            continue;
        };
        if let Some(other) = by_key.insert(key.clone(), row.id.0) {
            problems.push(format!(
                "duplicate: {key} is in jobs {other} and {}",
                row.id
            ));
        }
    }
    let mut lost = Vec::new();
    acked.retain(|key, id| match by_key.get(key) {
        Some(stored) if stored == id => true,
        Some(stored) => {
            lost.push(format!(
                "{key} was acknowledged as job {id} but is stored as job {stored}"
            ));
            false
        }
        None => {
            lost.push(format!("{key} (job {id}) was acknowledged but is gone"));
            false
        }
    });
    lost.sort();
    (lost, problems)
}

#[test]
fn power_loss_at_full_loses_no_acknowledged_put() {
    let (seed, report) = power_cuts("full", None, FULL_ROUNDS);
    assert!(
        report.lost.is_empty(),
        "seed {seed}: {} acknowledged puts lost at SyncLevel::Full; first ones:\n{:#?}",
        report.lost.len(),
        report.lost.iter().take(SHOWN).collect::<Vec<_>>()
    );
}

#[test]
fn power_loss_at_normal_loses_acknowledged_puts() {
    let (seed, report) = power_cuts("normal", Some(NORMAL_SYNC_INTERVAL_MS), NORMAL_ROUNDS);
    assert!(
        !report.lost.is_empty(),
        "seed {seed}: no acknowledged put was lost at SyncLevel::Normal in {} kills during puts: \
         the test cannot tell a put acknowledged before its sync",
        report.kills_during_puts
    );
}
