//! `kill -9` under load: nothing acknowledged is lost, nothing finished runs
//! again.
//!
//! A child process (`rdq-crash-child`, `src/bin/crash_child.rs`) puts
//! `N` keyed jobs into a SQLite store, printing `ack <key> <id>` once a
//! put returned, and runs them, printing `start <key> <id> <attempt>` as each
//! run begins. Each round starts the child and kills it with `SIGKILL` at a
//! random point of its puts: after a random number of `ack` lines following
//! its first, or a random time after that first one, whichever comes first
//! (a run with nothing left to put is killed a random time after its
//! `puts-done`). The kills thus spread over the whole put phase, with jobs
//! running beside the puts; the report says how many landed while puts were
//! being acknowledged. Then the test opens the file (which recovers the
//! jobs left underway, and shows the dead process's lock is gone) and checks:
//!
//! * every job ever acknowledged is there, with the acknowledged id;
//! * no key is in two rows (a restart puts only the keys it does not find);
//! * nothing is left underway, and every job is pending or succeeded;
//! * no job that had succeeded by the previous check started again, and it
//!   is still succeeded;
//! * every succeeded job printed a `start` (it ran);
//! * no job ran twice in one process.
//!
//! A last round runs the child to the end: it must finish every job, and all
//! `N` keys must then be there once each, succeeded.
//!
//! Re-runs (runs of a job beyond its first) are what at-least-once costs:
//! each one's previous run was cut by a kill before its outcome was
//! committed. They are counted and reported, as are runs of jobs whose put
//! never committed (a claim can take a job the same transaction inserted,
//! before the commit; the put was never acknowledged).
//!
//! `RDQ_CRASH_ROUNDS` sets the number of kill rounds (default 20; `N` is 150
//! per round, at least 3000, and a round lets up to twice its share of puts
//! be acknowledged, so most rounds find puts to cut) and `RDQ_CRASH_SEED`
//! the seed of the kill plans; the seed is printed, so a failure's kill
//! plans can be replayed (the child's own pace still varies). No check
//! depends on timing. See the report with `--nocapture`.
//!
//! `kill -9` leaves what the child wrote with the kernel, synced or not, so
//! this test cannot tell a put acknowledged after its `fdatasync` from one
//! acknowledged at its commit: the power-loss test (`powerloss.rs`) can.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use rdq_store::{JobRow, JobState, RescueReport};

use crate::child::{self, all_rows, ChildRun, KillPlan, Rng, Running};

/// Jobs the child puts and runs (`N`): this many per kill round, so that
/// there is work left to cut in most rounds however many there are ...
const JOBS_PER_ROUND: u64 = 150;

/// ... and at least this many.
const MIN_JOBS: u64 = 3000;

/// Kill rounds unless `RDQ_CRASH_ROUNDS` says otherwise.
const DEFAULT_ROUNDS: usize = 20;

/// A round's kill comes at most this many milliseconds after the child's
/// first `ack` (or its `puts-done`).
const KILL_DELAY_MS: std::ops::RangeInclusive<u64> = 0..=150;

/// How long a killed round may take before the kill comes anyway (a child
/// that neither acknowledges a put nor says it has none to put).
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the last round, which is not killed, may take.
const FINAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Violations shown in full in a failure message.
const SHOWN: usize = 20;

/// A job as the test tells it apart: its id and its key. (An id alone is not
/// enough: the id of an insert that never committed can be given again.)
type Job = (i64, String);

/// What happened to one job (one id and key) over all rounds.
#[derive(Default)]
struct History {
    /// `(round, attempt)` of each run that started.
    runs: Vec<(usize, u32)>,
}

/// Everything the test knows, across rounds.
#[derive(Default)]
struct Ledger {
    /// `N`.
    jobs: u64,
    /// Key → id, of every acknowledged put.
    acked: HashMap<String, i64>,
    /// Jobs succeeded at the latest check.
    finished: HashSet<Job>,
    /// Runs of jobs that were in the store at the check after their round.
    history: HashMap<Job, History>,
    /// Runs of jobs whose put never committed.
    uncommitted_runs: usize,
    /// Jobs left underway that opening the store put back.
    recovered: RescueReport,
    starts: usize,
    violations: Vec<String>,
}

/// What one round's check saw.
struct RoundView {
    acks: usize,
    starts: usize,
    counts: BTreeMap<JobState, u64>,
    rows: usize,
    recovered: RescueReport,
}

impl Ledger {
    fn violation(&mut self, round: usize, what: String) {
        self.violations.push(format!("round {round}: {what}"));
    }

    /// Reads a child run's lines, opens the store and checks it against
    /// everything seen so far.
    async fn check(&mut self, round: usize, db: &Path, run: &ChildRun) -> RoundView {
        let mut acks = 0;
        let mut started: Vec<(Job, u32)> = Vec::new();
        for line in &run.lines {
            let words: Vec<&str> = line.split(' ').collect();
            match words.as_slice() {
                ["ack", key, id] => {
                    let id: i64 = id.parse().expect("an id");
                    acks += 1;
                    if let Some(old) = self.acked.insert((*key).to_owned(), id) {
                        if old != id {
                            self.violation(
                                round,
                                format!("{key} acknowledged twice, as {old} and {id}"),
                            );
                        }
                    }
                }
                ["start", key, id, attempt] => {
                    let job = (id.parse().expect("an id"), (*key).to_owned());
                    started.push((job, attempt.parse().expect("an attempt")));
                }
                ["open"] | ["puts-done"] | ["all-done"] => {}
                _ => self.violation(round, format!("the child printed {line:?}")),
            }
        }
        let starts = started.len();
        self.starts += starts;

        let store = SqliteStore::open(db, SqliteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("round {round}: reopening after the kill failed: {e}"));
        let recovered = store.recovered();
        self.recovered.requeued += recovered.requeued;
        self.recovered.dead += recovered.dead;
        let rows = all_rows(&store).await;
        store.close().await.expect("closing the store");

        let mut by_key: HashMap<String, &JobRow> = HashMap::new();
        let mut counts = BTreeMap::new();
        let mut in_store: HashSet<Job> = HashSet::new();
        for row in &rows {
            *counts.entry(row.state).or_insert(0u64) += 1;
            let Some(key) = row.key.clone() else {
                self.violation(round, format!("job {} has no key", row.id));
                continue;
            };
            let known = key
                .strip_prefix("job-")
                .and_then(|i| i.parse::<u64>().ok())
                .is_some_and(|i| i < self.jobs);
            if !known {
                self.violation(round, format!("job {} has the unknown key {key:?}", row.id));
            }
            if !matches!(row.state, JobState::Pending | JobState::Succeeded) {
                self.violation(
                    round,
                    format!("{key} (job {}) is {} after reopening", row.id, row.state),
                );
            }
            in_store.insert((row.id.0, key.clone()));
            if let Some(other) = by_key.insert(key.clone(), row) {
                self.violation(
                    round,
                    format!("duplicate: {key} is in jobs {} and {}", other.id, row.id),
                );
            }
        }

        // Nothing acknowledged is lost.
        let mut lost = Vec::new();
        for (key, &id) in &self.acked {
            match by_key.get(key) {
                Some(row) if row.id.0 == id => {}
                Some(row) => lost.push(format!(
                    "{key} was acknowledged as job {id} but is stored as job {}",
                    row.id
                )),
                None => lost.push(format!("{key} (job {id}) was acknowledged but is gone")),
            }
        }
        for what in lost {
            self.violation(round, format!("lost: {what}"));
        }

        // Nothing finished runs again, or stops being finished.
        for (job, attempt) in &started {
            if self.finished.contains(job) {
                let what = format!(
                    "finished re-run: {} (job {}) had succeeded, yet started again (attempt {attempt})",
                    job.1, job.0
                );
                self.violation(round, what);
            }
        }
        let mut regressed = Vec::new();
        for job in &self.finished {
            match by_key.get(&job.1) {
                Some(row) if row.id.0 == job.0 && row.state == JobState::Succeeded => {}
                Some(row) => regressed.push(format!(
                    "regressed: {} (job {}) had succeeded, now job {} is {}",
                    job.1, job.0, row.id, row.state
                )),
                None => regressed.push(format!(
                    "lost: {} (job {}) had succeeded, now gone",
                    job.1, job.0
                )),
            }
        }
        for what in regressed {
            self.violation(round, what);
        }

        // Runs: of stored jobs, and of puts that never committed.
        for (job, attempt) in started {
            if in_store.contains(&job) {
                self.history
                    .entry(job)
                    .or_default()
                    .runs
                    .push((round, attempt));
            } else {
                self.uncommitted_runs += 1;
            }
        }
        let mut never_ran = Vec::new();
        for row in rows.iter().filter(|r| r.state == JobState::Succeeded) {
            let job = (row.id.0, row.key.clone().unwrap_or_default());
            if !self.history.contains_key(&job) {
                never_ran.push(format!(
                    "{} (job {}) succeeded without a start",
                    job.1, job.0
                ));
            }
        }
        for what in never_ran {
            self.violation(round, what);
        }
        self.finished = rows
            .iter()
            .filter(|r| r.state == JobState::Succeeded)
            .map(|r| (r.id.0, r.key.clone().unwrap_or_default()))
            .collect();

        RoundView {
            acks,
            starts,
            counts,
            rows: rows.len(),
            recovered,
        }
    }
}

fn state_count(counts: &BTreeMap<JobState, u64>, state: JobState) -> u64 {
    counts.get(&state).copied().unwrap_or(0)
}

#[test]
fn kill_9_loses_nothing_and_never_reruns_finished_jobs() {
    let rounds: usize = child::env_or("RDQ_CRASH_ROUNDS", || DEFAULT_ROUNDS);
    let seed = child::seed("RDQ_CRASH_SEED");
    let jobs = (JOBS_PER_ROUND * rounds as u64).max(MIN_JOBS);
    // Up to twice a round's share of the puts: they last about all rounds.
    let kill_acks = 0..=2 * jobs / rounds.max(1) as u64;
    println!("crash test: seed {seed} (RDQ_CRASH_SEED={seed} replays the kill plans), {rounds} kill rounds, {jobs} jobs");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut ledger = Ledger {
        jobs,
        ..Ledger::default()
    };
    let mut done_in_round: Option<usize> = None;
    let mut kills = 0;
    let mut kills_during_puts = 0;

    for round in 1..=rounds + 1 {
        let last = round == rounds + 1;
        let run = if last {
            Running::spawn(child::command(&db, jobs)).run(None, FINAL_TIMEOUT)
        } else {
            let plan = KillPlan {
                acks_after_first: rng.in_range(&kill_acks),
                delay: Duration::from_millis(rng.in_range(&KILL_DELAY_MS)),
            };
            Running::spawn(child::command(&db, jobs)).run(Some(plan), ROUND_TIMEOUT)
        };
        if last {
            assert!(
                !run.killed,
                "round {round}: the last run did not finish within {FINAL_TIMEOUT:?} \
                 (seed {seed}); {} lines, {}",
                run.lines.len(),
                run.describe()
            );
        }
        if run.killed {
            kills += 1;
            kills_during_puts += usize::from(run.killed_during_puts());
        } else {
            let finished =
                run.status.success() && run.lines.last().is_some_and(|l| l == "all-done");
            if finished {
                done_in_round.get_or_insert(round);
            } else {
                ledger.violation(round, format!("the child failed: {}", run.describe()));
            }
        }
        let view = runtime.block_on(ledger.check(round, &db, &run));
        println!(
            "round {round:>2}: {} after {:>3} ms; {:>4} acked, {:>4} started; \
             {:>4} of {jobs} succeeded, {:>4} pending; {} recovered",
            match (run.killed, run.killed_during_puts()) {
                (true, true) => "killed during puts",
                (true, false) => "killed           ",
                (false, _) => "exited           ",
            },
            run.ran.as_millis(),
            view.acks,
            view.starts,
            state_count(&view.counts, JobState::Succeeded),
            state_count(&view.counts, JobState::Pending),
            view.recovered.requeued + view.recovered.dead,
        );
        if last {
            let succeeded = state_count(&view.counts, JobState::Succeeded);
            if view.rows as u64 != jobs || succeeded != jobs {
                ledger.violation(
                    round,
                    format!(
                        "at the end {} jobs are stored and {succeeded} succeeded; expected {jobs} of each ({:?})",
                        view.rows, view.counts
                    ),
                );
            }
        }
    }

    // Re-runs: every run of a job beyond its first.
    let distinct = ledger.history.len();
    let runs: usize = ledger.history.values().map(|h| h.runs.len()).sum();
    let mut after_kill = 0;
    let mut same_attempt = 0;
    let mut twice = Vec::new();
    for (job, h) in &ledger.history {
        for pair in h.runs.windows(2) {
            let ((r0, a0), (r1, a1)) = (pair[0], pair[1]);
            if r0 < r1 {
                after_kill += 1;
            } else {
                let what = format!(
                    "{} (job {}) ran twice in one process (attempts {a0} and {a1})",
                    job.1, job.0
                );
                twice.push((r1, what));
            }
            if a1 <= a0 {
                same_attempt += 1;
            }
        }
    }
    for (round, what) in twice {
        ledger.violation(round, what);
    }
    let reruns = runs - distinct;
    let violations = &ledger.violations;
    let count = |word: &str| violations.iter().filter(|v| v.contains(word)).count();
    let lost = count("lost:");
    let duplicates = count("duplicate:");
    let finished_reruns = count("finished re-run:");
    println!("crash test report (seed {seed}):");
    println!("  kill rounds        {rounds} (+1 run to the end); {kills} killed the child, the others found all done");
    println!("  kills during puts  {kills_during_puts} of {kills} (after the run's first ack, before its puts-done)");
    match done_in_round {
        Some(r) => println!("  all jobs done in   round {r}"),
        None => println!("  all jobs done in   never"),
    }
    println!(
        "  jobs acknowledged  {} of {jobs} (the rest committed, their ack cut by a kill)",
        ledger.acked.len()
    );
    println!("  lost               {lost}");
    println!("  duplicates         {duplicates}");
    println!("  finished re-run    {finished_reruns}");
    println!("  start lines        {}", ledger.starts);
    println!("  jobs started       {distinct}");
    println!("  re-runs            {reruns} ({after_kill} after their run was cut by a kill; {same_attempt} under the same attempt number, the claim not yet committed)");
    println!(
        "  runs of puts never committed (never acknowledged) {}",
        ledger.uncommitted_runs
    );
    println!(
        "  recovered at open  {} back to pending, {} dead",
        ledger.recovered.requeued, ledger.recovered.dead
    );
    println!("  violations         {}", violations.len());

    let shown: Vec<&String> = violations.iter().take(SHOWN).collect();
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations ({lost} lost, {duplicates} duplicates, {finished_reruns} finished re-runs); first ones:\n{shown:#?}",
        violations.len()
    );
    assert_eq!(ledger.recovered.dead, 0, "no job may run out of attempts");
}
