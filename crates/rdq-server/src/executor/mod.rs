//! Executors: what a server queue does with each job, without any code from
//! the user. A queue declares one in `rdq.toml`:
//!
//! * [`http`]: POST the job as JSON to a URL;
//! * [`command`]: run a program with arguments taken from the job.
//!
//! Each is registered as the queue's handler (`rdq_store::DurableQueue`),
//! under the kind named by [`ExecutorConfig::kind`](crate::config::ExecutorConfig::kind); jobs put over the API run with
//! their queue's executor.

pub mod command;
pub mod http;

use rdq_store::JobContext;
use serde::Serialize;

/// The JSON document that describes a job to an executor's target: the body
/// of an http request, or a command's stdin.
#[derive(Debug, Clone, Serialize)]
pub struct JobDocument<'a> {
    /// The job's id.
    pub id: i64,
    /// Its queue.
    pub queue: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Which run this is (1 for the first).
    pub attempt: u32,
    /// Runs allowed in all.
    pub max_attempts: u32,
    /// Its arguments.
    pub args: &'a serde_json::Value,
}

impl<'a> JobDocument<'a> {
    /// The document for a job with these arguments.
    pub fn new(args: &'a serde_json::Value, ctx: &'a JobContext) -> Self {
        JobDocument {
            id: ctx.id.0,
            queue: &ctx.queue,
            kind: &ctx.kind,
            attempt: ctx.attempt,
            max_attempts: ctx.max_attempts,
            args,
        }
    }
}
