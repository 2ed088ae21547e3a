//! `rdq.toml` checked and complete: what the server runs with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rdq::hub::{Overflow, Pattern};
use rdq::Rate;
use rdq_store::sqlite::SyncLevel;
use rdq_store::Backoff;

use super::raw::{RawConfig, RawExecutor, RawQueue};
use crate::executor::command::{CommandSpec, StdinMode};
use crate::executor::http::HttpSpec;
use crate::limits;

/// A configuration error: where, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The SQLite file.
    pub db: PathBuf,
    /// The API's bearer token, if any.
    pub token: Option<String>,
    /// Largest request body in bytes.
    pub max_body: usize,
    /// How long underway jobs may finish at shutdown.
    pub shutdown_grace: Duration,
    /// How much must be on disk before a put is acknowledged (SQLite).
    pub sync: SyncLevel,
    /// A PostgreSQL URL: when set, the server keeps its jobs there (in
    /// [`database_schema`](Config::database_schema)) instead of in `db`.
    pub database_url: Option<String>,
    /// The PostgreSQL schema holding rdq's tables.
    pub database_schema: String,
    /// How long to keep trying to reach PostgreSQL at start.
    pub connect_timeout: Duration,
    /// This node's name, as leases record it and PostgreSQL's
    /// `application_name` shows it; `None`: host, pid and a random suffix.
    pub node: Option<String>,
    /// How long a claimed job stays leased to this node without a
    /// heartbeat: after a node dies, its jobs run elsewhere within about
    /// 1.5 leases.
    pub lease: Duration,
    /// The queues, by name.
    pub queues: Vec<QueueConfig>,
    /// The topics messages may be published on, as declared.
    pub topics: Vec<String>,
    /// The consumers, by name: each a queue of its own name.
    pub consumers: Vec<ConsumerConfig>,
    /// The stall watchdog.
    pub watchdog: WatchdogConfig,
}

/// `[watchdog]`: the stall watchdog's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// Watch jobs at all.
    pub enabled: bool,
    /// How often the monitor looks.
    pub tick: Duration,
    /// A poll longer than this is a stall.
    pub threshold: Duration,
    /// A database connection or transaction held longer than this is
    /// reported.
    pub hold_threshold: Duration,
    /// Load the binary's debug information at start (faster first stall
    /// report, about 140 MB more memory) instead of at each stall.
    pub preload_symbols: bool,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            enabled: true,
            tick: Duration::from_millis(100),
            threshold: Duration::from_millis(500),
            hold_threshold: Duration::from_secs(5),
            preload_symbols: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            db: PathBuf::from("rdq.db"),
            token: None,
            max_body: 1 << 20,
            shutdown_grace: Duration::from_secs(30),
            sync: SyncLevel::Full,
            database_url: None,
            database_schema: "rdq".to_owned(),
            connect_timeout: Duration::from_secs(60),
            node: None,
            lease: Duration::from_secs(30),
            queues: Vec::new(),
            topics: Vec::new(),
            consumers: Vec::new(),
            watchdog: WatchdogConfig::default(),
        }
    }
}

/// One queue's settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Its name (used in URLs).
    pub name: String,
    /// Most jobs underway at once.
    pub width: usize,
    /// Launch rate.
    pub rate: Option<Rate>,
    /// Timeout of each attempt.
    pub timeout: Option<Duration>,
    /// An attempt underway longer than this is reported as hung (in the
    /// dump, the `rdq_queue_hung` gauge and the log), before its timeout.
    pub warn_after: Option<Duration>,
    /// Attempts per job.
    pub max_attempts: u32,
    /// Delays between retries.
    pub backoff: Backoff,
    /// How long finished jobs are kept.
    pub retention: Duration,
    /// Start paused.
    pub paused: bool,
    /// What runs each job.
    pub executor: ExecutorConfig,
}

/// How long a publish waits for room in a consumer with `overflow =
/// "block"` and no `block_timeout`.
pub const DEFAULT_BLOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// A consumer's status window when it sets none.
pub const DEFAULT_STATUS_WINDOW: Duration = Duration::from_secs(60);

/// A consumer: a durable queue of its own name, fed with one job per
/// message published on a topic it subscribes to (kind: the topic; args:
/// the message).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Its queue: name, width, rate, timeout, retries, executor.
    pub queue: QueueConfig,
    /// What it subscribes to: exact topics or prefixes (`orders.*`).
    pub subscribe: Vec<Pattern>,
    /// The declared topics its patterns match, in declaration order.
    pub topics: Vec<String>,
    /// The most messages that may wait (pending) in its queue.
    pub bound: u64,
    /// What a publish finding it full does.
    pub overflow: Overflow,
    /// The window its status is judged over (sampled every second).
    pub status_window: Duration,
}

/// A queue's executor.
#[derive(Debug, Clone)]
pub enum ExecutorConfig {
    /// POST each job to a URL.
    Http(HttpSpec),
    /// Run a program for each job.
    Command(CommandSpec),
}

impl ExecutorConfig {
    /// The executor's kind name, which is also the kind of the queue's jobs.
    pub fn kind(&self) -> &'static str {
        match self {
            ExecutorConfig::Http(_) => "http",
            ExecutorConfig::Command(_) => "command",
        }
    }
}

/// Parses a byte size: `4096`, `64KiB`, `1MiB`, `1.5MB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 65536, \"64KiB\" or \"1MiB\""))?;
    let scale = match unit.trim() {
        "" | "B" => 1.0,
        "KB" | "kB" => 1e3,
        "KiB" => 1024.0,
        "MB" => 1e6,
        "MiB" => 1024.0 * 1024.0,
        "GB" => 1e9,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?}; use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    Ok((number * scale) as usize)
}

/// Parses a duration: `30s`, `5m`, `2h`, `7d`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("{text:?} is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"5m\" or \"7d\"")
    })
}

/// Parses a rate: `10/s`, `600/min`, `5/2s`, `100/1h`.
pub fn parse_rate(text: &str, burst: Option<u32>) -> Result<Rate, String> {
    let help = "write it as COUNT/PERIOD, e.g. \"10/s\", \"600/min\" or \"5/2s\"";
    let (count, period) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a rate; {help}"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: the count must be a whole number; {help}"))?;
    let period_text = period.trim();
    let period = if period_text.starts_with(|c: char| c.is_ascii_digit()) {
        parse_duration(period_text)?
    } else {
        parse_duration(&format!("1{period_text}"))?
    };
    limits::RATE_COUNT
        .check("the count", count)
        .and_then(|_| limits::RATE_PERIOD.check("the period", period_text, period))
        .map_err(|e| format!("rate {text:?}: {e}"))?;
    let rate = Rate::new(count, period).map_err(|e| format!("{text:?}: {e}"))?;
    match burst {
        Some(b) => {
            limits::RATE_BURST.check("rate_burst", b)?;
            rate.with_burst(b).map_err(|e| e.to_string())
        }
        None => Ok(rate),
    }
}

/// The shortest API token the server takes.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Whether `token` may guard the API: at least [`MIN_TOKEN_CHARS`]
/// characters, with no whitespace at either end (a token pasted with a
/// stray space or newline would match no client, and a blank one guards
/// nothing). The one rule for `server.token` and `RDQ_TOKEN`.
pub fn check_token(token: &str) -> Result<(), String> {
    let chars = token.chars().count();
    if chars < MIN_TOKEN_CHARS || token.trim() != token {
        return Err(format!(
            "the token must be at least {MIN_TOKEN_CHARS} characters, with no whitespace at either end \
             (this one has {chars} characters{}); generate one with e.g. `openssl rand -hex 24`",
            if token.trim() != token { ", with whitespace at an end" } else { "" }
        ));
    }
    Ok(())
}

/// Whether a queue name is usable in a URL and a metric label.
pub fn check_queue_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "queue name {name:?} must be 1 to 64 characters of letters, digits, '_', '-' or '.'"
        ))
    }
}

/// Reads and checks a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        line: None,
        message: format!("cannot read the configuration file: {e}"),
    })?;
    parse(path, &text)
}

/// Checks configuration text; `file` is named in errors.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let error = |span: Option<std::ops::Range<usize>>, message: String| ConfigError {
        file: file.to_owned(),
        line: span.map(|s| line_of(s.start)),
        message,
    };
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| error(e.span(), e.message().to_owned()))?;
    let mut config = Config::default();
    let server = raw.server;
    if let Some(listen) = server.listen {
        config.listen = listen.get_ref().parse().map_err(|_| {
            error(
                Some(listen.span()),
                format!(
                    "listen = {:?} is not an address; write e.g. \"127.0.0.1:7878\"",
                    listen.get_ref()
                ),
            )
        })?;
    }
    if let Some(db) = server.db {
        config.db = PathBuf::from(db.into_inner());
    }
    if let Some(token) = server.token {
        check_token(token.get_ref())
            .map_err(|m| error(Some(token.span()), format!("server.token: {m}")))?;
        config.token = Some(token.into_inner());
    }
    if let Some(size) = server.max_body {
        let text = size.get_ref();
        config.max_body = parse_size(text)
            .map_err(|m| format!("server.max_body: {m}"))
            .and_then(|n| limits::MAX_BODY.check_as("server.max_body", text, n as u64))
            .map_err(|m| error(Some(size.span()), m))? as usize;
    }
    if let Some(grace) = server.shutdown_grace {
        config.shutdown_grace = limits::SHUTDOWN_GRACE
            .parse("server.shutdown_grace", grace.get_ref())
            .map_err(|m| error(Some(grace.span()), m))?;
    }
    if let Some(sync) = server.sync {
        config.sync = match sync.get_ref().as_str() {
            "full" => SyncLevel::Full,
            "normal" => SyncLevel::Normal,
            other => {
                return Err(error(
                    Some(sync.span()),
                    format!("sync = {other:?}; use \"full\" (survives power loss) or \"normal\" (survives kill -9)"),
                ))
            }
        };
    }
    if let Some(url) = server.database_url {
        super::database::check_url(url.get_ref())
            .map_err(|m| error(Some(url.span()), format!("server.database_url: {m}")))?;
        config.database_url = Some(url.into_inner());
    }
    if let Some(schema) = server.database_schema {
        super::database::check_schema(schema.get_ref())
            .map_err(|m| error(Some(schema.span()), format!("server.database_schema: {m}")))?;
        config.database_schema = schema.into_inner();
    }
    if let Some(node) = server.node {
        super::database::check_node(node.get_ref())
            .map_err(|m| error(Some(node.span()), format!("server.node: {m}")))?;
        config.node = Some(node.into_inner());
    }
    if let Some(lease) = server.lease {
        config.lease = limits::LEASE
            .parse("server.lease", lease.get_ref())
            .map_err(|m| error(Some(lease.span()), m))?;
    }
    if let Some(t) = server.connect_timeout {
        config.connect_timeout = limits::CONNECT_TIMEOUT
            .parse("server.connect_timeout", t.get_ref())
            .map_err(|m| error(Some(t.span()), m))?;
    }
    let wd = raw.watchdog;
    let mut watchdog = WatchdogConfig {
        enabled: wd.enabled.unwrap_or(true),
        preload_symbols: wd.preload_symbols.unwrap_or(false),
        ..WatchdogConfig::default()
    };
    for (field, value, target) in [
        ("tick", wd.tick, &mut watchdog.tick),
        ("threshold", wd.threshold, &mut watchdog.threshold),
        (
            "hold_threshold",
            wd.hold_threshold,
            &mut watchdog.hold_threshold,
        ),
    ] {
        if let Some(v) = value {
            *target = limits::WATCHDOG
                .parse(&format!("watchdog.{field}"), v.get_ref())
                .map_err(|m| error(Some(v.span()), m))?;
        }
    }
    if watchdog.tick > watchdog.threshold {
        return Err(error(
            None,
            format!(
                "watchdog.tick ({:?}) is longer than watchdog.threshold ({:?}); the tick must be shorter (a tenth or less is best)",
                watchdog.tick, watchdog.threshold
            ),
        ));
    }
    config.watchdog = watchdog;
    for (name, queue) in raw.queues {
        let span = queue.span();
        check_queue_name(&name).map_err(|m| error(Some(span.clone()), m))?;
        let queue = queue.into_inner();
        for (field, given) in [
            ("subscribe", queue.subscribe.as_ref().map(|s| s.span())),
            ("bound", queue.bound.as_ref().map(|s| s.span())),
            ("overflow", queue.overflow.as_ref().map(|s| s.span())),
            (
                "block_timeout",
                queue.block_timeout.as_ref().map(|s| s.span()),
            ),
            (
                "status_window",
                queue.status_window.as_ref().map(|s| s.span()),
            ),
        ] {
            if let Some(at) = given {
                return Err(error(
                    Some(at),
                    format!("queues.{name}.{field}: only a consumer takes {field}; declare it as [consumers.{name}] instead"),
                ));
            }
        }
        config.queues.push(
            resolve_queue("queues", &name, queue)
                .map_err(|(s, m)| error(Some(s.unwrap_or(span)), m))?,
        );
    }
    for topic in raw.topics.map(|t| t.into_inner()).unwrap_or_default() {
        let at = topic.span();
        let topic = topic.into_inner();
        rdq::hub::check_topic(&topic).map_err(|e| {
            error(
                Some(at.clone()),
                format!(
                    "topics: {e}; write topics as dot-separated words, e.g. \"orders.created\""
                ),
            )
        })?;
        if config.topics.contains(&topic) {
            return Err(error(
                Some(at),
                format!("topics: {topic:?} is declared twice; remove one"),
            ));
        }
        config.topics.push(topic);
    }
    for (name, consumer) in raw.consumers {
        let span = consumer.span();
        check_queue_name(&name).map_err(|m| error(Some(span.clone()), m))?;
        if config.queues.iter().any(|q| q.name == name) {
            return Err(error(
                Some(span),
                format!(
                    "consumers.{name}: a queue is named {name:?} too; a consumer is a queue of its own name, so rename one of them"
                ),
            ));
        }
        let consumer = resolve_consumer(&name, consumer.into_inner(), &config.topics)
            .map_err(|(s, m)| error(Some(s.unwrap_or(span)), m))?;
        config.consumers.push(consumer);
    }
    Ok(config)
}

fn resolve_consumer(
    name: &str,
    mut raw: RawQueue,
    topics: &[String],
) -> Result<ConsumerConfig, Located> {
    let field = |f: &str| format!("consumers.{name}.{f}");
    let Some(subscribe) = raw.subscribe.take() else {
        return Err((
            None,
            format!("consumers.{name} subscribes to nothing; add e.g. subscribe = [\"orders.*\"]"),
        ));
    };
    let list_span = subscribe.span();
    let subscribe = subscribe.into_inner();
    if subscribe.is_empty() {
        return Err((
            Some(list_span),
            format!(
                "{}: the list is empty, so the consumer subscribes to nothing; name a topic or a prefix such as \"orders.*\"",
                field("subscribe")
            ),
        ));
    }
    let mut patterns: Vec<Pattern> = Vec::new();
    let mut matched: Vec<String> = Vec::new();
    for p in subscribe {
        let at = p.span();
        let pattern = Pattern::parse(p.get_ref()).map_err(|e| {
            (
                Some(at.clone()),
                format!(
                    "{}: {e}; write an exact topic (\"orders.created\") or a prefix ending in \".*\" (\"orders.*\")",
                    field("subscribe")
                ),
            )
        })?;
        let hits: Vec<&String> = topics.iter().filter(|t| pattern.matches(t)).collect();
        if hits.is_empty() {
            let declared = if topics.is_empty() {
                "no topics are declared; add topics = [...] at the top of the file".to_owned()
            } else {
                format!("the declared topics are {topics:?}")
            };
            return Err((
                Some(at),
                format!(
                    "{}: {:?} matches no declared topic (a typo?); {declared}",
                    field("subscribe"),
                    pattern.as_str()
                ),
            ));
        }
        for t in hits {
            if !matched.contains(t) {
                matched.push(t.clone());
            }
        }
        if !patterns.contains(&pattern) {
            patterns.push(pattern);
        }
    }
    let bound = match raw.bound.take() {
        None => 10_000,
        Some(b) if *b.get_ref() == 0 => {
            return Err((
                Some(b.span()),
                format!(
                    "{}: a bound of 0 would refuse every message; give the most messages that may wait ({} to {}; default 10000)",
                    field("bound"),
                    limits::BOUND.min,
                    limits::BOUND.max
                ),
            ))
        }
        Some(b) => limits::BOUND
            .check(&field("bound"), *b.get_ref())
            .map_err(|m| (Some(b.span()), m))?,
    };
    let block_timeout = match raw.block_timeout.take() {
        Some(t) => Some((
            t.span(),
            limits::BLOCK_TIMEOUT
                .parse(&field("block_timeout"), t.get_ref())
                .map_err(|m| (Some(t.span()), m))?,
        )),
        None => None,
    };
    let overflow = match raw.overflow.take() {
        None => Overflow::RejectNewest,
        Some(o) => match o.get_ref().as_str() {
            "reject_newest" => Overflow::RejectNewest,
            "drop_oldest" => Overflow::DropOldest,
            "block" => Overflow::Block(
                block_timeout
                    .as_ref()
                    .map_or(DEFAULT_BLOCK_TIMEOUT, |(_, t)| *t),
            ),
            other => {
                return Err((
                    Some(o.span()),
                    format!(
                        "{}: {other:?} is not a policy; use \"reject_newest\", \"drop_oldest\" or \"block\"",
                        field("overflow")
                    ),
                ))
            }
        },
    };
    if let (Some((at, _)), false) = (&block_timeout, matches!(overflow, Overflow::Block(_))) {
        return Err((
            Some(at.clone()),
            format!(
                "{}: only a consumer with overflow = \"block\" waits; set overflow = \"block\" or remove block_timeout",
                field("block_timeout")
            ),
        ));
    }
    let status_window = match raw.status_window.take() {
        Some(w) => limits::STATUS_WINDOW
            .parse(&field("status_window"), w.get_ref())
            .map_err(|m| (Some(w.span()), m))?,
        None => DEFAULT_STATUS_WINDOW,
    };
    let queue = resolve_queue("consumers", name, raw)?;
    Ok(ConsumerConfig {
        queue,
        subscribe: patterns,
        topics: matched,
        bound,
        overflow,
        status_window,
    })
}

type Located = (Option<std::ops::Range<usize>>, String);

fn resolve_queue(section: &str, name: &str, q: RawQueue) -> Result<QueueConfig, Located> {
    let at = |s: std::ops::Range<usize>, field: &str, m: String| {
        (Some(s), format!("{section}.{name}.{field}: {m}"))
    };
    // A range error names the setting itself: `queues.NAME.width 20000 is
    // out of range; allowed: 0 to 10000`.
    let field = |f: &str| format!("{section}.{name}.{f}");
    let counted = |n: &Option<toml::Spanned<i64>>, f: &str, range: limits::Counts| {
        n.as_ref()
            .map(|n| {
                range
                    .check(&field(f), *n.get_ref())
                    .map_err(|m| (Some(n.span()), m))
            })
            .transpose()
    };
    let width = counted(&q.width, "width", limits::WIDTH)?.map_or(1, |w| w as usize);
    let burst = counted(&q.rate_burst, "rate_burst", limits::RATE_BURST)?.map(|b| b as u32);
    let rate = match q.rate {
        Some(r) => Some(parse_rate(r.get_ref(), burst).map_err(|m| at(r.span(), "rate", m))?),
        None => None,
    };
    let duration = |d: Option<toml::Spanned<String>>,
                    f: &str,
                    range: limits::Durations|
     -> Result<Option<Duration>, Located> {
        d.map(|d| {
            range
                .parse(&field(f), d.get_ref())
                .map_err(|m| (Some(d.span()), m))
        })
        .transpose()
    };
    let timeout = duration(q.timeout, "timeout", limits::TIMEOUT)?;
    let warn_span = q.warn_after.as_ref().map(|w| w.span());
    let warn_after = duration(q.warn_after, "warn_after", limits::TIMEOUT)?;
    if let (Some(warn), Some(t), Some(span)) = (warn_after, timeout, warn_span) {
        if warn >= t {
            return Err(at(
                span,
                "warn_after",
                format!("{warn:?} is not shorter than the timeout ({t:?}): the timeout would cut the job off before it is reported as hung"),
            ));
        }
    }
    let max_attempts =
        counted(&q.max_attempts, "max_attempts", limits::MAX_ATTEMPTS)?.map_or(20, |n| n as u32);
    let base = duration(q.backoff_base, "backoff_base", limits::BACKOFF)?
        .unwrap_or(Duration::from_secs(1));
    let max = duration(q.backoff_max, "backoff_max", limits::BACKOFF)?
        .unwrap_or(Duration::from_secs(3600).max(base));
    let mut backoff =
        Backoff::exponential(base, max).map_err(|e| (None, format!("{section}.{name}: {e}")))?;
    if let Some(j) = q.backoff_jitter {
        backoff = backoff
            .with_jitter(*j.get_ref())
            .map_err(|e| at(j.span(), "backoff_jitter", e.to_string()))?;
    }
    let retention = duration(q.retention, "retention", limits::RETENTION)?
        .unwrap_or(Duration::from_secs(7 * 24 * 3600));
    let Some(executor) = q.executor else {
        return Err((
            None,
            format!("{section}.{name} has no executor; add [{section}.{name}.executor] with type = \"http\" or \"command\""),
        ));
    };
    let executor_span = executor.span();
    let executor = resolve_executor(executor.into_inner(), timeout).map_err(|m| {
        (
            Some(executor_span),
            format!("{section}.{name}.executor: {m}"),
        )
    })?;
    Ok(QueueConfig {
        name: name.to_owned(),
        width,
        rate,
        timeout,
        warn_after,
        max_attempts,
        backoff,
        retention,
        paused: q.paused.unwrap_or(false),
        executor,
    })
}

fn resolve_executor(raw: RawExecutor, timeout: Option<Duration>) -> Result<ExecutorConfig, String> {
    match raw {
        RawExecutor::Http { url, headers } => {
            let spec = HttpSpec { url, headers };
            spec.check()?;
            Ok(ExecutorConfig::Http(spec))
        }
        RawExecutor::Command {
            argv,
            cwd,
            env,
            env_allow,
            stdin,
            output_cap,
            grace,
        } => {
            let defaults = CommandSpec::default();
            let spec = CommandSpec {
                argv,
                cwd: cwd.map(PathBuf::from),
                env,
                env_allow,
                stdin: match stdin.as_deref() {
                    None | Some("job") => StdinMode::Job,
                    Some("empty") => StdinMode::Empty,
                    Some(other) => {
                        return Err(format!("stdin = {other:?}; use \"job\" or \"empty\""))
                    }
                },
                output_cap: match output_cap {
                    Some(c) => parse_size(&c)
                        .map_err(|m| format!("output_cap: {m}"))
                        .and_then(|n| limits::OUTPUT_CAP.check_as("output_cap", &c, n as u64))?
                        as usize,
                    None => defaults.output_cap,
                },
                // The executor runs its own timeout (TERM, grace, KILL); the
                // queue's is set above it (see `crate::app`).
                timeout,
                grace: match grace {
                    Some(g) => limits::KILL_GRACE.parse("grace", &g)?,
                    None => defaults.grace,
                },
            };
            crate::executor::command::CommandExecutor::new(spec.clone())?;
            Ok(ExecutorConfig::Command(spec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("rdq.toml"), text)
    }

    #[test]
    fn sizes_durations_and_rates() {
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1 parsec")
            .unwrap_err()
            .contains("unknown size unit"));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("soon")
            .unwrap_err()
            .contains("not a duration"));
        assert_eq!(parse_rate("10/s", None), Ok(Rate::per_second(10)));
        assert_eq!(parse_rate("600/min", None), Ok(Rate::per_minute(600)));
        assert_eq!(
            parse_rate("5/2s", None).ok(),
            Rate::new(5, Duration::from_secs(2)).ok()
        );
        assert_eq!(parse_rate("10/s", Some(5)).unwrap().burst(), 5);
        assert!(parse_rate("ten/s", None).is_err());
        assert!(parse_rate("0/s", None)
            .unwrap_err()
            .contains("the count 0 is out of range; allowed: 1 to 1000000"));
        assert!(parse_rate("1/2d", None)
            .unwrap_err()
            .contains("the period \"2d\" is out of range; allowed: 1ms to 1day"));
        assert!(parse_rate("1/s", Some(0))
            .unwrap_err()
            .contains("1 to 1000000"));
        assert!(parse_rate("10", None).unwrap_err().contains("COUNT/PERIOD"));
    }

    #[test]
    fn a_full_file() {
        let c = check(
            r#"
[server]
listen = "0.0.0.0:9000"
db = "/var/lib/rdq/rdq.db"
token = "0123456789abcdef0123"
max_body = "2MiB"
shutdown_grace = "10s"
sync = "normal"
database_url = "postgres://rdq:pw@db.example:5432/jobs"
database_schema = "rdq_prod"
connect_timeout = "2m"
node = "web-1"
lease = "10s"

[watchdog]
tick = "50ms"
threshold = "250ms"
hold_threshold = "2s"
preload_symbols = true

[queues.sms]
width = 5
rate = "10/s"
rate_burst = 2
timeout = "30s"
warn_after = "10s"
max_attempts = 8
backoff_base = "2s"
backoff_max = "10m"
backoff_jitter = 0.1
retention = "3d"
paused = true
[queues.sms.executor]
type = "http"
url = "https://gateway.example/send"
headers = { Authorization = "Bearer x" }

[queues.report.executor]
type = "command"
argv = ["/usr/bin/env", "echo", "{args.user}"]
stdin = "empty"
output_cap = "16KiB"
grace = "2s"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_body, 2 << 20);
        assert_eq!(c.sync, SyncLevel::Normal);
        assert_eq!(
            c.database_url.as_deref(),
            Some("postgres://rdq:pw@db.example:5432/jobs")
        );
        assert_eq!(c.database_schema, "rdq_prod");
        assert_eq!(c.connect_timeout, Duration::from_secs(120));
        assert_eq!(c.node.as_deref(), Some("web-1"));
        assert_eq!(c.lease, Duration::from_secs(10));
        assert_eq!(c.queues.len(), 2);
        let report = &c.queues[0];
        assert_eq!(
            (report.name.as_str(), report.width, report.max_attempts),
            ("report", 1, 20)
        );
        assert_eq!(report.executor.kind(), "command");
        let sms = &c.queues[1];
        assert_eq!(sms.rate, Some(Rate::per_second(10).with_burst(2).unwrap()));
        assert_eq!((sms.width, sms.paused, sms.max_attempts), (5, true, 8));
        assert_eq!(sms.retention, Duration::from_secs(3 * 86400));
        assert_eq!(sms.warn_after, Some(Duration::from_secs(10)));
        assert_eq!(
            c.watchdog,
            WatchdogConfig {
                enabled: true,
                tick: Duration::from_millis(50),
                threshold: Duration::from_millis(250),
                hold_threshold: Duration::from_secs(2),
                preload_symbols: true,
            }
        );
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let cases = [
            ("[queues.sms]\nwidth = -3\n[queues.sms.executor]\ntype = \"http\"\nurl = \"http://x\"\n", 2, "width -3 is out of range; allowed: 0 to 10000"),
            ("[server]\nlisten = \"nowhere\"\n", 2, "not an address"),
            ("[queues.sms]\nrate = \"fast\"\n", 2, "COUNT/PERIOD"),
            ("[queues.sms]\nwidth = 1\n", 1, "has no executor"),
            ("[server]\nport = 1\n", 2, "unknown field"),
            ("[queues.sms.executor]\ntype = \"fax\"\n", 2, "unknown variant"),
            ("[queues.\"bad name\".executor]\ntype = \"http\"\nurl = \"http://x\"\n", 1, "letters, digits"),
            ("[server]\nsync = \"maybe\"\n", 2, "survives power loss"),
            ("[queues.q.executor]\ntype = \"http\"\nurl = \"ftp://x\"\n", 1, "http"),
            ("[queues.q]\ntimeout = \"5s\"\nwarn_after = \"10s\"\n[queues.q.executor]\ntype = \"http\"\nurl = \"http://x\"\n", 3, "not shorter than the timeout"),
            ("[watchdog]\nthreshold = \"0ms\"\n", 2, "allowed: 1ms to 1h"),
            ("[server]\ntoken = \" padded-sixteen-chars\"\n", 2, "no whitespace at either end"),
            ("[server]\ntoken = \"short\"\n", 2, "at least 16 characters"),
            ("[watchdog]\nspeed = 1\n", 2, "unknown field"),
            ("[server]\ndatabase_url = \"mysql://u:hunter2@h/db\"\n", 2, "server.database_url: database URL \"mysql://u:***@h/db\" is not a PostgreSQL URL"),
            ("[server]\ndatabase_url = \"postgres://u:pw@h:port/db\"\n", 2, "malformed database URL"),
            ("[server]\n\ndatabase_schema = \"Rdq\"\n", 3, "server.database_schema"),
            ("[server]\nnode = \"\"\n", 2, "server.node"),
            ("[server]\nlease = \"10ms\"\n", 2, "server.lease \"10ms\" is out of range"),
            ("[server]\nconnect_timeout = \"soon\"\n", 2, "server.connect_timeout"),
            ("x = [", 1, ""),
        ];
        for (text, line, words) in cases {
            let err = check(text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text:?} -> {err}");
            assert!(err.message.contains(words), "{text:?} -> {err}");
            assert!(
                err.to_string().starts_with(&format!("rdq.toml:{line}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let c = check("").unwrap();
        assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], 7878)));
        assert!(c.queues.is_empty() && c.token.is_none());
    }

    const TOPICS: &str = "topics = [\"orders.created\", \"orders.paid\", \"users.new\"]\n";
    const EXEC: &str = "[consumers.audit.executor]\ntype = \"http\"\nurl = \"http://x\"\n";

    #[test]
    fn topics_and_consumers() {
        let c = check(&format!(
            "{TOPICS}[consumers.audit]\nsubscribe = [\"orders.*\", \"orders.paid\"]\nwidth = 4\nbound = 50\n\
             overflow = \"block\"\nblock_timeout = \"2s\"\n{EXEC}\
             [consumers.billing]\nsubscribe = [\"orders.paid\"]\n[consumers.billing.executor]\ntype = \"http\"\nurl = \"http://y\"\n"
        ))
        .unwrap();
        assert_eq!(c.topics, ["orders.created", "orders.paid", "users.new"]);
        let audit = &c.consumers[0];
        assert_eq!(audit.queue.name, "audit");
        assert_eq!(audit.queue.width, 4);
        assert_eq!(audit.bound, 50);
        assert_eq!(audit.overflow, Overflow::Block(Duration::from_secs(2)));
        assert_eq!(audit.topics, ["orders.created", "orders.paid"]);
        assert_eq!(audit.subscribe.len(), 2);
        let billing = &c.consumers[1];
        assert_eq!(
            (billing.bound, billing.overflow),
            (10_000, Overflow::RejectNewest)
        );
        assert_eq!(billing.topics, ["orders.paid"]);
    }

    #[test]
    fn consumer_errors_name_the_line_and_the_fix() {
        let cases = [
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"orders.*.paid\"]\n{EXEC}"), 3, "only an exact topic or a trailing \".*\""),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"ord*\"]\n{EXEC}"), 3, "prefix ending in \".*\""),
            (format!("{TOPICS}[consumers.audit]\nwidth = 1\n{EXEC}"), 2, "subscribes to nothing"),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = []\n{EXEC}"), 3, "subscribes to nothing"),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"orders.*\"]\n{EXEC}[consumers.audit]\nwidth = 2\n"), 7, "duplicate key"),
            (format!("{TOPICS}[queues.audit]\n[queues.audit.executor]\ntype = \"http\"\nurl = \"http://x\"\n[consumers.audit]\nsubscribe = [\"orders.*\"]\n{EXEC}"), 6, "a queue is named \"audit\" too"),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"orders.*\"]\nbound = 0\n{EXEC}"), 4, "a bound of 0 would refuse every message"),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"order.*\"]\n{EXEC}"), 3, "matches no declared topic (a typo?); the declared topics are"),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"orders.*\"]\nblock_timeout = \"1s\"\n{EXEC}"), 4, "set overflow = \"block\" or remove block_timeout"),
            (format!("{TOPICS}[consumers.audit]\nsubscribe = [\"orders.*\"]\noverflow = \"drop_newest\"\n{EXEC}"), 4, "not a policy"),
            ("topics = [\"a..b\"]\n".to_owned(), 1, "empty segment"),
            ("[queues.q]\nsubscribe = [\"a\"]\n".to_owned(), 2, "declare it as [consumers.q]"),
        ];
        for (text, line, words) in cases {
            let err = check(&text).unwrap_err();
            assert_eq!(err.line, Some(line), "{text:?} -> {err}");
            assert!(err.message.contains(words), "{text:?} -> {err}");
        }
    }
}

#[cfg(test)]
mod example {
    /// The example in the repository root is a valid configuration.
    #[test]
    fn the_example_config_parses() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../rdq.example.toml"
        ));
        let config = super::load(path).unwrap();
        assert_eq!(config.queues.len(), 2);
        assert_eq!(config.queues[1].name.as_str(), "sms");
        assert_eq!(config.queues[1].executor.kind(), "http");
        assert_eq!(config.queues[0].executor.kind(), "command");
        assert_eq!(config.topics, ["orders.created", "orders.paid"]);
        assert_eq!(config.consumers[0].topics, config.topics);
    }
}
