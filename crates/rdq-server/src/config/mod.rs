//! Configuration: `rdq.toml` as written ([`raw`]), then checked and complete
//! ([`resolved`]). Every error names the file, the line and what to fix.

pub mod database;
pub mod raw;
pub mod resolved;

pub use resolved::{
    load, parse, Config, ConfigError, ConsumerConfig, ExecutorConfig, QueueConfig, WatchdogConfig,
};
