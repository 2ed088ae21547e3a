//! Integration tests of rdq-server: one test binary, one module per area.

mod api;
pub(crate) mod cli;
mod command;
mod demo;
pub(crate) mod e2e;
mod limits;
mod postgres;
mod processes;
mod support;
mod topics;
mod watch;
mod wire;
