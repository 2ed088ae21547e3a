//! The rdq server: durable queues over HTTP, with http and command
//! executors, Prometheus metrics, and a CLI client. The binary is `rdq`.
//!
//! * [`config`]: `rdq.toml`, checked, with errors that name the line;
//! * [`app`]: the queues and their executors;
//! * [`consumers`]: topics and consumers (publish, overflow, backlog);
//! * [`api`]: the HTTP API ([`api::router`], also for tests);
//! * [`executor`]: http and command;
//! * [`serve`]: starting, and stopping cleanly on SIGTERM/SIGINT;
//! * [`store`]: the store, SQLite or PostgreSQL;
//! * [`watch`]: the stall watchdog, its metrics, and hung-job reports;
//! * [`demo`]: `rdq demo`, a server with a fake SMS gateway to try it on.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod demo;
pub mod executor;
pub mod limits;
pub mod metrics;
pub mod open;
pub mod serve;
pub mod shutdown;
pub mod store;
pub mod watch;
