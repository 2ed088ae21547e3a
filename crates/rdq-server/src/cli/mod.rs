//! The client verbs of `rdq`: they talk to a running server over its HTTP
//! API (`--server URL` or `RDQ_SERVER`, default `http://127.0.0.1:7878`;
//! `--token` or `RDQ_TOKEN` for a server that has one).
//!
//! | verb | does |
//! |---|---|
//! | `put QUEUE [ARGS]` | puts a job; prints its id |
//! | `put QUEUE --file F` | puts one job per line of a JSON Lines file, in batches |
//! | `jobs` | lists jobs, newest first (`--queue`, `--state`, `--limit`, `--all`) |
//! | `job ID` | shows one job in full |
//! | `cancel ID`, `prio ID N`, `retry ID` | change a job |
//! | `wait ID...` | waits until the jobs are final |
//! | `queues` | lists the queues and their counts |
//! | `width`, `rate`, `pause`, `resume` | change a queue, now and after restarts |
//! | `publish TOPIC JSON` | publishes a message (`-`: from stdin); prints where it went; exit 1 when a consumer was full |
//! | `consumers [NAME]` | each consumer's backlog: depth, running/width, oldest, catch-up, status (`--watch` redraws each second) |
//! | `stalls` | what blocked the server's runtime: culprits and recent stalls (`--full` for stacks) |
//! | `dump` | what every underway job is doing now (in a poll, waiting; a command's child) |
//!
//! # Output
//!
//! People get aligned tables and relative times (`3s ago`, `in 2m`); with
//! `--json` (after the verb) a verb prints the server's JSON answer, indented,
//! for `jq`. Progress bars go to stderr, and only when it is a terminal.
//!
//! # Exit status
//!
//! * 0: done;
//! * 1: the server answered with an error, cannot be reached, or a waited job
//!   ended dead or cancelled or did not end in time;
//! * 2: a usage error: a bad argument, or a bad line in a jobs file.
//!
//! An error is one line on stderr, `rdq: ` and the server's own message.
//!
//! # Jobs files
//!
//! `rdq put QUEUE --file jobs.jsonl` (or `--file -` for stdin) reads one JSON
//! value per line; blank lines are skipped. **A line that is an object with
//! an `"args"` key describes a job** in the shape of the API's put body:
//! `args`, `priority`, `run_at`, `delay_ms`, `key`, `max_attempts`,
//! `timeout_ms`, and no other field. **Any other line is the job's args**.
//! So `{"to": "+1555"}` is args, and `{"args": {"to": "+1555"}, "priority":
//! -1}` is a job; args that have an `"args"` key of their own are written
//! wrapped: `{"args": {"args": 1}}`. Options given on the command line
//! (`--priority`, `--delay`/`--at`, `--max-attempts`, `--timeout`) apply to
//! every line that does not set its own.
//!
//! Lines go in batches of at most [`put::BATCH_JOBS`] jobs, in order. The
//! first bad line stops the run with its number and what is wrong (exit 2):
//! every line before it is put, none from it on.

pub mod client;
pub mod jobs;
pub mod output;
pub mod put;
pub mod queues;
pub mod topics;
pub mod wait;
pub mod watch;

use clap::{Args, Subcommand};

use self::client::Client;

/// Where the server is when neither `--server` nor `RDQ_SERVER` says.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// The options every client verb takes.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The rdq server's URL.
    #[arg(long, env = "RDQ_SERVER", value_name = "URL", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token, for a server that has one.
    #[arg(long, env = "RDQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The client verbs, as `rdq VERB ...`.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Put a job into a queue (or many, from a JSON Lines file); print its id.
    Put(put::PutArgs),
    /// List jobs, newest first.
    Jobs(jobs::JobsArgs),
    /// Show one job in full.
    Job(jobs::IdArgs),
    /// Cancel a job (an underway one has its work dropped).
    Cancel(jobs::IdArgs),
    /// Change a waiting job's priority (lower runs first).
    Prio(jobs::PrioArgs),
    /// Run a failed, dead or cancelled job again now.
    Retry(jobs::IdArgs),
    /// Wait until jobs are final; exit 1 unless all succeeded.
    Wait(wait::WaitArgs),
    /// List the queues: settings and jobs per state.
    Queues(queues::QueuesArgs),
    /// Set how many jobs of a queue may be underway at once.
    Width(queues::WidthArgs),
    /// Set a queue's launch rate (`10/s`, `600/min`, `5/2s`) or `none`.
    Rate(queues::RateArgs),
    /// Stop launching a queue's jobs (underway ones finish).
    Pause(queues::QueueArgs),
    /// Launch a paused queue's jobs again.
    Resume(queues::QueueArgs),
    /// Publish a message on a topic, to every subscribed consumer; exit 1
    /// when a consumer was full.
    Publish(topics::PublishArgs),
    /// Show each consumer's backlog: depth, running, oldest, catch-up,
    /// status.
    Consumers(topics::ConsumersArgs),
    /// Show what blocked the server's runtime: culprit functions and recent
    /// stalls.
    Stalls(watch::StallsArgs),
    /// Show what every underway job is doing now.
    Dump(watch::DumpArgs),
}

/// Why a verb failed; [`CliError::exit_code`] is the process's exit status.
/// The message is one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something that cannot be (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The server answered with an error status (exit 1).
    #[error("{message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The API's error code (`not_found`, `conflict`, ...), or `http`
        /// when the body was not the API's error shape.
        code: String,
        /// The server's message.
        message: String,
    },
    /// No connection to the server (exit 1).
    #[error("cannot reach the rdq server at {url}: {reason} — is `rdq serve` running? (set --server or RDQ_SERVER)")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// Why, in a few words.
        reason: String,
    },
    /// Anything else that failed, including waited jobs that did not
    /// succeed (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    /// The process exit status for this error: 2 for usage, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs a verb against its server, printing its output on stdout.
pub async fn run(verb: Verb) -> Result<(), CliError> {
    match verb {
        Verb::Put(a) => put::run(&connect(&a.conn)?, &a).await,
        Verb::Jobs(a) => jobs::list(&connect(&a.conn)?, &a).await,
        Verb::Job(a) => jobs::show(&connect(&a.conn)?, &a).await,
        Verb::Cancel(a) => jobs::cancel(&connect(&a.conn)?, &a).await,
        Verb::Prio(a) => jobs::prio(&connect(&a.conn)?, &a).await,
        Verb::Retry(a) => jobs::retry(&connect(&a.conn)?, &a).await,
        Verb::Wait(a) => wait::run(&connect(&a.conn)?, &a).await,
        Verb::Queues(a) => queues::list(&connect(&a.conn)?, &a).await,
        Verb::Width(a) => queues::width(&connect(&a.conn)?, &a).await,
        Verb::Rate(a) => queues::rate(&connect(&a.conn)?, &a).await,
        Verb::Pause(a) => queues::pause(&connect(&a.conn)?, &a, true).await,
        Verb::Resume(a) => queues::pause(&connect(&a.conn)?, &a, false).await,
        Verb::Publish(a) => topics::publish(&connect(&a.conn)?, &a).await,
        Verb::Consumers(a) => topics::consumers(&connect(&a.conn)?, &a).await,
        Verb::Stalls(a) => watch::stalls(&connect(&a.conn)?, &a).await,
        Verb::Dump(a) => watch::dump(&connect(&a.conn)?, &a).await,
    }
}

fn connect(conn: &Connection) -> Result<Client, CliError> {
    Client::new(conn)
}

/// Parses a duration argument (`30s`, `5m`, `250ms`) as the configuration
/// does; the error names the option.
pub fn duration_arg(option: &str, text: &str) -> Result<std::time::Duration, CliError> {
    crate::config::resolved::parse_duration(text)
        .map_err(|e| CliError::Usage(format!("{option}: {e}")))
}

/// Whole milliseconds of a duration argument in `range`, for the API's
/// `*_ms` fields; the error names the option and the range.
pub fn millis_arg(
    option: &str,
    text: &str,
    range: crate::limits::Durations,
) -> Result<u64, CliError> {
    let d = duration_arg(option, text)?;
    let d = range.check(option, text, d).map_err(CliError::Usage)?;
    // Whole milliseconds: "1500us" is 1 ms, and must still be in range.
    let ms = d.as_millis() as u64;
    range.check_ms(option, ms).map_err(CliError::Usage)?;
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The verbs as `main` mounts them.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        verb: Verb,
    }

    fn parse(args: &[&str]) -> Result<Verb, clap::Error> {
        Cli::try_parse_from(std::iter::once("rdq").chain(args.iter().copied())).map(|c| c.verb)
    }

    #[test]
    fn verbs_parse_with_their_options() {
        let Verb::Put(p) = parse(&[
            "put",
            "sms",
            r#"{"to":1}"#,
            "--priority",
            "-3",
            "--delay",
            "30s",
            "--json",
        ])
        .unwrap() else {
            panic!("not put")
        };
        assert_eq!(
            (p.queue.as_str(), p.priority, p.delay.as_deref()),
            ("sms", Some(-3), Some("30s"))
        );
        assert!(p.conn.json);
        assert!(
            matches!(parse(&["prio", "7", "-2"]).unwrap(), Verb::Prio(a) if a.id == 7 && a.priority == -2)
        );
        assert!(
            matches!(parse(&["wait", "1", "2", "--timeout", "5s"]).unwrap(), Verb::Wait(a) if a.ids == [1, 2])
        );
        assert!(
            matches!(parse(&["jobs", "--state", "dead", "--all"]).unwrap(), Verb::Jobs(a) if a.all)
        );
        assert!(
            matches!(parse(&["rate", "sms", "none"]).unwrap(), Verb::Rate(a) if a.rate == "none")
        );
    }

    #[test]
    fn bad_usage_is_a_clap_error_with_exit_status_2() {
        for args in [
            &[
                "put",
                "sms",
                "{}",
                "--delay",
                "1s",
                "--at",
                "2030-01-01T00:00:00Z",
            ][..],
            &["put", "sms", "{}", "--file", "x.jsonl"],
            &["put", "sms", "--file", "x.jsonl", "--key", "k"],
            &["jobs", "--all", "--limit", "5"],
            &["jobs", "--state", "asleep"],
            &["width", "sms", "-1"],
            &["wait"],
            &["job", "seven"],
            &["publish", "t"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn durations_are_checked_and_name_the_option() {
        use crate::limits::{DELAY, TIMEOUT};
        assert_eq!(millis_arg("--timeout", "1500ms", TIMEOUT), Ok(1500));
        assert_eq!(millis_arg("--delay", "2m", DELAY), Ok(120_000));
        assert_eq!(millis_arg("--delay", "0s", DELAY), Ok(0));
        let e = millis_arg("--timeout", "soon", TIMEOUT).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string()
                .starts_with("--timeout: \"soon\" is not a duration"),
            "{e}"
        );
        for (option, text, range) in [
            ("--timeout", "0s", TIMEOUT),
            ("--timeout", "500us", TIMEOUT),
            ("--timeout", "2days", TIMEOUT),
            ("--delay", "1000000y", DELAY),
        ] {
            let e = millis_arg(option, text, range).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(
                e.to_string().contains(&format!("allowed: {range}"))
                    || e.to_string().contains(&range.to_string()),
                "{e}"
            );
        }
    }
}
