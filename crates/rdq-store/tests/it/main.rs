//! Integration tests of `rdq-store`, one binary, against real SQLite files.

mod child;
mod support;

mod cluster;
mod crash;
mod durable;
mod open;
mod postgres;
mod powerloss;
mod sqlite;
mod state_machine;
mod store;
