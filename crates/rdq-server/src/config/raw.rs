//! `rdq.toml` as written: every field optional, spans kept for errors.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The file, as parsed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `topics = ["orders.created", ...]`: the topics messages may be
    /// published on (top level, before any table).
    pub topics: Option<Spanned<Vec<Spanned<String>>>>,
    /// `[server]`.
    #[serde(default)]
    pub server: RawServer,
    /// `[queues.NAME]`, one table per queue.
    #[serde(default)]
    pub queues: BTreeMap<String, Spanned<RawQueue>>,
    /// `[consumers.NAME]`: a queue (same fields as `[queues.NAME]`) fed by
    /// the topics it subscribes to.
    #[serde(default)]
    pub consumers: BTreeMap<String, Spanned<RawQueue>>,
    /// `[watchdog]`.
    #[serde(default)]
    pub watchdog: RawWatchdog,
}

/// `[watchdog]`: the stall watchdog.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatchdog {
    /// Watch jobs at all (default true).
    pub enabled: Option<bool>,
    /// How often the monitor looks, e.g. `"100ms"`.
    pub tick: Option<Spanned<String>>,
    /// A poll longer than this is a stall, e.g. `"500ms"`.
    pub threshold: Option<Spanned<String>>,
    /// A database connection or transaction held longer than this is
    /// reported, e.g. `"5s"`.
    pub hold_threshold: Option<Spanned<String>>,
    /// Load debug information at start instead of at each stall.
    pub preload_symbols: Option<bool>,
}

/// `[server]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on, e.g. `"127.0.0.1:7878"`.
    pub listen: Option<Spanned<String>>,
    /// The SQLite file.
    pub db: Option<Spanned<String>>,
    /// Bearer token for the API.
    pub token: Option<Spanned<String>>,
    /// Largest request body, e.g. `"1MiB"`.
    pub max_body: Option<Spanned<String>>,
    /// How long underway jobs may finish at shutdown, e.g. `"30s"`.
    pub shutdown_grace: Option<Spanned<String>>,
    /// `"full"` or `"normal"`.
    pub sync: Option<Spanned<String>>,
    /// A PostgreSQL URL, `postgres://user:password@host:port/database`: use
    /// PostgreSQL instead of `db`.
    pub database_url: Option<Spanned<String>>,
    /// The PostgreSQL schema holding rdq's tables (default `"rdq"`).
    pub database_schema: Option<Spanned<String>>,
    /// How long to keep trying to reach PostgreSQL at start, e.g. `"60s"`.
    pub connect_timeout: Option<Spanned<String>>,
    /// This node's name, as leases record it and PostgreSQL shows it.
    pub node: Option<Spanned<String>>,
    /// How long a claimed job stays leased without a heartbeat, e.g. `"30s"`.
    pub lease: Option<Spanned<String>>,
}

/// `[queues.NAME]` or `[consumers.NAME]`: the fields after `executor` are
/// a consumer's alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQueue {
    /// Most jobs underway at once.
    pub width: Option<Spanned<i64>>,
    /// Launch rate, e.g. `"10/s"`, `"600/min"`, `"5/2s"`.
    pub rate: Option<Spanned<String>>,
    /// Launches allowed back to back.
    pub rate_burst: Option<Spanned<i64>>,
    /// Timeout of each attempt, e.g. `"30s"`.
    pub timeout: Option<Spanned<String>>,
    /// An attempt underway longer than this is reported as hung, e.g. `"10s"`.
    pub warn_after: Option<Spanned<String>>,
    /// Attempts per job.
    pub max_attempts: Option<Spanned<i64>>,
    /// First retry delay, e.g. `"1s"`.
    pub backoff_base: Option<Spanned<String>>,
    /// Longest retry delay, e.g. `"1h"`.
    pub backoff_max: Option<Spanned<String>>,
    /// Spread of retry delays, 0 to 1.
    pub backoff_jitter: Option<Spanned<f64>>,
    /// How long finished jobs are kept, e.g. `"7d"`.
    pub retention: Option<Spanned<String>>,
    /// Start paused.
    pub paused: Option<bool>,
    /// What runs each job.
    pub executor: Option<Spanned<RawExecutor>>,
    /// A consumer's subscriptions: exact topics or `prefix.*`.
    pub subscribe: Option<Spanned<Vec<Spanned<String>>>>,
    /// A consumer's most waiting (pending) messages.
    pub bound: Option<Spanned<i64>>,
    /// `"reject_newest"`, `"drop_oldest"` or `"block"`.
    pub overflow: Option<Spanned<String>>,
    /// With `overflow = "block"`: how long a publish waits for room.
    pub block_timeout: Option<Spanned<String>>,
    /// A consumer's status window, e.g. `"60s"` (sampled every second).
    pub status_window: Option<Spanned<String>>,
}

/// `[queues.NAME.executor]`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawExecutor {
    /// POST each job to a URL.
    Http {
        /// The URL.
        url: String,
        /// Extra request headers.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
    /// Run a program for each job.
    Command {
        /// Program and arguments; placeholders like `{args.user}`.
        argv: Vec<String>,
        /// Working directory.
        cwd: Option<String>,
        /// Variables set in the child.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Variables copied from the server's environment.
        #[serde(default)]
        env_allow: Vec<String>,
        /// `"job"` (the job as JSON) or `"empty"`.
        stdin: Option<String>,
        /// Bytes kept per output stream, e.g. `"64KiB"`.
        output_cap: Option<String>,
        /// After SIGTERM, how long before SIGKILL, e.g. `"5s"`.
        grace: Option<String>,
    },
}
