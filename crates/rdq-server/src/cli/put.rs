//! `rdq put`: one job from the command line, or many from a JSON Lines file
//! (the rule for its lines is in the [module docs](super#jobs-files)).

use std::io::BufRead;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use super::client::Client;
use super::output::{pretty, print, progress};
use super::{millis_arg, CliError, Connection};
use crate::api::types::PutBody;
use crate::limits;

/// Most jobs in one batch request.
pub const BATCH_JOBS: usize = 1000;

/// A batch is sent once its JSON reaches this size, so that it stays under
/// the server's `max_body` (1 MiB unless configured otherwise).
pub const BATCH_BYTES: usize = 512 * 1024;

/// The fields of a line that describes a job.
const FIELDS: [&str; 7] = [
    "args",
    "priority",
    "run_at",
    "delay_ms",
    "key",
    "max_attempts",
    "timeout_ms",
];

/// `rdq put`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct PutArgs {
    /// The queue.
    pub queue: String,
    /// The job's arguments, as JSON (default null).
    #[arg(value_name = "JSON_ARGS", conflicts_with = "file")]
    pub args: Option<String>,
    /// Lower runs first (default 0).
    #[arg(long, short)]
    pub priority: Option<i32>,
    /// Idempotency key: while a live job of the queue has it, nothing is
    /// added and its id is printed.
    #[arg(long, short, conflicts_with = "file")]
    pub key: Option<String>,
    /// Run no sooner than this from now (`30s`, `5m`).
    #[arg(long, conflicts_with = "at")]
    pub delay: Option<String>,
    /// Run no sooner than this time (RFC 3339, `2030-01-02T03:04:05Z`).
    #[arg(long)]
    pub at: Option<String>,
    /// Runs allowed (default: the queue's).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: Option<u32>,
    /// Timeout of each run (default: the queue's), e.g. `10s`.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Put one job per line of this JSON Lines file (`-` for stdin).
    ///
    /// A line that is an object with an "args" key describes a job, with the
    /// fields args, priority, run_at, delay_ms, key, max_attempts and
    /// timeout_ms; any other line is the job's args. The options above apply
    /// to every line that does not set its own. The first bad line stops the
    /// run (exit 2): the lines before it are put, none from it on.
    #[arg(long, short, value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)] // Documented on its type.
    pub conn: Connection,
}

impl PutArgs {
    /// The put body the options describe, with these args.
    fn body(&self, args: Value) -> Result<PutBody, CliError> {
        Ok(PutBody {
            args,
            priority: self.priority.unwrap_or(0),
            run_at: self.at.clone(),
            delay_ms: self
                .delay
                .as_deref()
                .map(|d| millis_arg("--delay", d, limits::DELAY))
                .transpose()?,
            key: self.key.clone(),
            max_attempts: self.max_attempts,
            timeout_ms: self
                .timeout
                .as_deref()
                .map(|t| millis_arg("--timeout", t, limits::TIMEOUT))
                .transpose()?,
        })
    }
}

/// Checks what the server would refuse in a put body (the same rule:
/// [`PutBody::check`]), so that a bad job is caught before anything is sent.
pub fn check(body: &PutBody) -> Result<(), String> {
    body.check(std::time::SystemTime::now()).map(drop)
}

/// A put body as the API's JSON, without the fields left unset.
pub fn to_json(body: &PutBody) -> Value {
    let mut m = Map::new();
    m.insert("args".into(), body.args.clone());
    if body.priority != 0 {
        m.insert("priority".into(), body.priority.into());
    }
    let optional = [
        ("run_at", body.run_at.clone().map(Value::from)),
        ("delay_ms", body.delay_ms.map(Value::from)),
        ("key", body.key.clone().map(Value::from)),
        ("max_attempts", body.max_attempts.map(Value::from)),
        ("timeout_ms", body.timeout_ms.map(Value::from)),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            m.insert(name.into(), v);
        }
    }
    Value::Object(m)
}

/// One line of a jobs file as a put body: `None` for a blank line; an error
/// says what is wrong with it. The command line's options fill what the
/// line does not set.
pub fn parse_line(line: &str, defaults: &PutBody) -> Result<Option<PutBody>, String> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let describes_job = value.as_object().is_some_and(|o| o.contains_key("args"));
    if !describes_job {
        let body = PutBody {
            args: value,
            ..defaults.clone()
        };
        check(&body)?;
        return Ok(Some(body));
    }
    let mut keys = value.as_object().into_iter().flat_map(|o| o.keys());
    if let Some(unknown) = keys.find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field {unknown:?}: a line with an \"args\" key describes a job, with the fields {}; \
             to put args that have their own \"args\" key, wrap them: {{\"args\": {{...}}}}",
            FIELDS.join(", ")
        ));
    }
    let has = |field: &str| value.get(field).is_some();
    let mut body: PutBody = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    if !has("priority") {
        body.priority = defaults.priority;
    }
    if !has("run_at") && !has("delay_ms") {
        body.run_at.clone_from(&defaults.run_at);
        body.delay_ms = defaults.delay_ms;
    }
    if !has("max_attempts") {
        body.max_attempts = defaults.max_attempts;
    }
    if !has("timeout_ms") {
        body.timeout_ms = defaults.timeout_ms;
    }
    check(&body)?;
    Ok(Some(body))
}

/// `rdq put`.
pub async fn run(client: &Client, a: &PutArgs) -> Result<(), CliError> {
    if let Some(file) = &a.file {
        return put_file(client, a, file).await;
    }
    let args = match &a.args {
        Some(text) => serde_json::from_str(text).map_err(|e| {
            CliError::Usage(format!(
                "JSON_ARGS is not JSON ({e}); quote it for the shell, e.g. '{{\"to\": \"+1555\"}}'"
            ))
        })?,
        None => Value::Null,
    };
    let body = a.body(args)?;
    check(&body).map_err(CliError::Usage)?;
    let reply = client
        .post(&["queues", &a.queue, "jobs"], Some(&to_json(&body)))
        .await?;
    if a.conn.json {
        return print(&pretty(&reply));
    }
    let id = reply.get("id").and_then(Value::as_i64).unwrap_or_default();
    if reply.get("existing").and_then(Value::as_bool) == Some(true) {
        eprintln!(
            "rdq: existing: job {id} is live with key {:?}; nothing was added",
            a.key.as_deref().unwrap_or_default()
        );
    }
    print(&format!("{id}\n"))
}

/// What a jobs file has put so far.
#[derive(Debug, Default)]
struct Tally {
    added: usize,
    existing: usize,
    replies: Vec<Value>,
}

async fn put_file(client: &Client, a: &PutArgs, path: &Path) -> Result<(), CliError> {
    let defaults = a.body(Value::Null)?;
    check(&defaults).map_err(CliError::Usage)?;
    let name = path.display().to_string();
    let stdin = path.as_os_str() == "-";
    let reader: Box<dyn BufRead> = if stdin {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| CliError::Usage(format!("cannot open {name}: {e}")))?;
        Box::new(std::io::BufReader::new(file))
    };
    let bar = progress(if stdin { None } else { count_lines(path) }, "lines");
    let mut tally = Tally::default();
    let mut batch = Batch::default();
    let mut lines = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let parsed = line
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|l| parse_line(&l, &defaults));
        match parsed {
            Ok(Some(body)) => batch.push(number, to_json(&body)),
            Ok(None) => {}
            Err(reason) => {
                let sent = batch.send(client, &a.queue, &mut tally, &name).await;
                bar.finish_and_clear();
                sent?;
                return Err(bad_line(&name, number, &reason, &tally));
            }
        }
        lines += 1;
        if batch.full() {
            batch
                .send(client, &a.queue, &mut tally, &name)
                .await
                .inspect_err(|_| bar.abandon())?;
            bar.set_position(lines);
        }
    }
    batch
        .send(client, &a.queue, &mut tally, &name)
        .await
        .inspect_err(|_| bar.abandon())?;
    bar.finish_and_clear();
    if a.conn.json {
        return print(&pretty(&json!({ "jobs": tally.replies })));
    }
    print(&format!(
        "put {} jobs into {}: {} new, {} existing\n",
        tally.added + tally.existing,
        a.queue,
        tally.added,
        tally.existing
    ))
}

fn bad_line(name: &str, number: usize, reason: &str, tally: &Tally) -> CliError {
    let done = match tally.added + tally.existing {
        0 => "nothing was put".to_owned(),
        n => format!("the {n} jobs before it were put, none from it on"),
    };
    CliError::Usage(format!("{name} line {number}: {reason}; {done}"))
}

/// Lines not yet sent, with their line numbers.
#[derive(Debug, Default)]
struct Batch {
    jobs: Vec<(usize, Value)>,
    bytes: usize,
}

impl Batch {
    fn push(&mut self, line: usize, job: Value) {
        self.bytes += job.to_string().len() + 1;
        self.jobs.push((line, job));
    }

    fn full(&self) -> bool {
        self.jobs.len() >= BATCH_JOBS || self.bytes >= BATCH_BYTES
    }

    /// Sends what is waiting. When the server refuses one job of the batch
    /// (which then puts none), the jobs before it are sent again, so that
    /// every line before a bad one is put.
    async fn send(
        &mut self,
        client: &Client,
        queue: &str,
        tally: &mut Tally,
        name: &str,
    ) -> Result<(), CliError> {
        let jobs = std::mem::take(&mut self.jobs);
        self.bytes = 0;
        if jobs.is_empty() {
            return Ok(());
        }
        match put_batch(client, queue, &jobs, tally).await {
            Err(CliError::Server {
                status: 422,
                message,
                ..
            }) => {
                let Some((index, reason)) = refused_job(&message).filter(|(i, _)| *i < jobs.len())
                else {
                    return Err(CliError::Usage(format!(
                        "{name} lines {} to {}: {message}",
                        jobs[0].0,
                        jobs[jobs.len() - 1].0
                    )));
                };
                if index > 0 {
                    put_batch(client, queue, &jobs[..index], tally).await?;
                }
                Err(bad_line(name, jobs[index].0, reason, tally))
            }
            other => other,
        }
    }
}

async fn put_batch(
    client: &Client,
    queue: &str,
    jobs: &[(usize, Value)],
    tally: &mut Tally,
) -> Result<(), CliError> {
    let body = json!({ "jobs": jobs.iter().map(|(_, j)| j).collect::<Vec<_>>() });
    let reply = client
        .post(&["queues", queue, "jobs", "batch"], Some(&body))
        .await?;
    for r in reply
        .get("jobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if r.get("existing").and_then(Value::as_bool) == Some(true) {
            tally.existing += 1;
        } else {
            tally.added += 1;
        }
        tally.replies.push(r.clone());
    }
    Ok(())
}

/// The index and reason in a batch refusal: `jobs[12]: key must be ...`.
pub fn refused_job(message: &str) -> Option<(usize, &str)> {
    let rest = message.strip_prefix("jobs[")?;
    let (index, reason) = rest.split_once("]: ")?;
    Some((index.parse().ok()?, reason))
}

/// Lines in a file, for the progress bar; `None` if it cannot be read.
fn count_lines(path: &Path) -> Option<u64> {
    let mut reader = std::io::BufReader::new(std::fs::File::open(path).ok()?);
    let mut count = 0u64;
    let mut last = b'\n';
    loop {
        let buf = reader.fill_buf().ok()?;
        if buf.is_empty() {
            break;
        }
        count += buf.iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[buf.len() - 1];
        let n = buf.len();
        reader.consume(n);
    }
    Some(count + u64::from(last != b'\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Result<Option<Value>, String> {
        parse_line(text, &PutBody::default()).map(|b| b.as_ref().map(to_json))
    }

    #[test]
    fn a_line_without_an_args_key_is_the_args() {
        assert_eq!(
            line(r#"{"to": "+1555"}"#),
            Ok(Some(json!({"args": {"to": "+1555"}})))
        );
        assert_eq!(
            line(r#"{"priority": 5}"#),
            Ok(Some(json!({"args": {"priority": 5}})))
        );
        assert_eq!(line("[1, 2]"), Ok(Some(json!({"args": [1, 2]}))));
        assert_eq!(line("\"hello\""), Ok(Some(json!({"args": "hello"}))));
        assert_eq!(line("   "), Ok(None));
    }

    #[test]
    fn a_line_with_an_args_key_describes_a_job() {
        assert_eq!(
            line(r#"{"args": {"to": 1}, "priority": -2, "key": "k", "delay_ms": 500}"#),
            Ok(Some(
                json!({"args": {"to": 1}, "priority": -2, "key": "k", "delay_ms": 500})
            ))
        );
        assert_eq!(
            line(r#"{"args": {"args": 1}}"#),
            Ok(Some(json!({"args": {"args": 1}})))
        );
    }

    #[test]
    fn a_job_line_with_an_unknown_field_says_how_to_wrap() {
        let e = line(r#"{"args": 1, "priorty": 3}"#).unwrap_err();
        assert!(
            e.starts_with("unknown field \"priorty\": a line with an \"args\" key describes a job"),
            "{e}"
        );
        assert!(e.contains("wrap them"), "{e}");
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(line("{nope").unwrap_err().starts_with("not JSON: "));
        assert!(line(r#"{"args": 1, "priority": "high"}"#)
            .unwrap_err()
            .contains("invalid type"));
        assert!(line(r#"{"args": 1, "key": ""}"#)
            .unwrap_err()
            .contains("key must be"));
        assert!(line(r#"{"args": 1, "max_attempts": 0}"#)
            .unwrap_err()
            .contains("max_attempts 0 is out of range; allowed: 1 to 1000"));
        assert!(line(r#"{"args": 1, "delay_ms": 1000000000000000}"#)
            .unwrap_err()
            .contains("allowed: 0 to 315576000000"));
        assert!(line(r#"{"args": 1, "run_at": "tomorrow"}"#)
            .unwrap_err()
            .contains("RFC 3339"));
        let both = r#"{"args": 1, "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5}"#;
        assert!(line(both).unwrap_err().contains("not both"));
    }

    #[test]
    fn a_key_is_counted_in_characters_as_the_server_does() {
        let key = |n: usize| format!(r#"{{"args": 1, "key": "{}"}}"#, "é".repeat(n));
        assert!(line(&key(255)).is_ok());
        assert!(line(&key(256)).unwrap_err().contains("key must be"));
    }

    #[test]
    fn command_line_options_fill_what_a_line_does_not_set() {
        let defaults = PutBody {
            priority: 7,
            delay_ms: Some(1000),
            max_attempts: Some(2),
            timeout_ms: Some(300),
            ..PutBody::default()
        };
        let parse = |text| to_json(&parse_line(text, &defaults).unwrap().unwrap());
        assert_eq!(
            parse(r#"{"a": 1}"#),
            json!({"args": {"a": 1}, "priority": 7, "delay_ms": 1000, "max_attempts": 2, "timeout_ms": 300})
        );
        assert_eq!(
            parse(
                r#"{"args": 1, "priority": 0, "run_at": "2030-01-01T00:00:00Z", "timeout_ms": 5}"#
            ),
            json!({"args": 1, "run_at": "2030-01-01T00:00:00Z", "max_attempts": 2, "timeout_ms": 5})
        );
    }

    #[test]
    fn batch_refusals_name_the_job() {
        assert_eq!(
            refused_job("jobs[12]: key must be 1 to 255 characters"),
            Some((12, "key must be 1 to 255 characters"))
        );
        assert_eq!(refused_job("the batch has no jobs"), None);
        assert_eq!(refused_job("jobs[x]: y"), None);
    }

    /// A batch the server refuses because of its third job: the two before
    /// it are sent again, and the error names the third job's line.
    #[tokio::test]
    async fn a_refused_batch_puts_the_jobs_before_the_bad_one() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/api/v1/queues/q/jobs/batch",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let record = record.clone();
                async move {
                    let n = body["jobs"].as_array().map_or(0, Vec::len);
                    record.lock().unwrap().push(body);
                    if n == 3 {
                        let error = json!({"error": {"code": "unprocessable", "message": "jobs[2]: too odd"}});
                        (axum::http::StatusCode::UNPROCESSABLE_ENTITY, axum::Json(error))
                    } else {
                        let jobs: Vec<Value> = (0..n).map(|i| json!({"id": i, "existing": false})).collect();
                        (axum::http::StatusCode::CREATED, axum::Json(json!({ "jobs": jobs })))
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Client::new(&Connection {
            server,
            token: None,
            json: false,
        })
        .unwrap();

        let mut batch = Batch::default();
        for (line, n) in [(1, 10), (3, 30), (4, 40)] {
            batch.push(line, json!({ "args": n }));
        }
        let mut tally = Tally::default();
        let e = batch
            .send(&client, "q", &mut tally, "f.jsonl")
            .await
            .unwrap_err();
        assert_eq!(
            e,
            CliError::Usage(
                "f.jsonl line 4: too odd; the 2 jobs before it were put, none from it on".into()
            )
        );
        assert_eq!(tally.added, 2);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1], json!({"jobs": [{"args": 10}, {"args": 30}]}));
    }

    #[test]
    fn lines_are_counted_with_or_without_a_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        for (text, n) in [("", 0), ("{}\n", 1), ("{}\n{}", 2), ("{}\n\n{}\n", 3)] {
            std::fs::write(&path, text).unwrap();
            assert_eq!(count_lines(&path), Some(n), "{text:?}");
        }
        assert_eq!(count_lines(&dir.path().join("missing")), None);
    }
}
