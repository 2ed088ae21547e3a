//! The integration tests of `rdq`, one binary (less linking on 2 cores).

mod support;

mod model;
mod queue_cancel;
mod queue_hardening;
mod queue_limits;
mod queue_pause_stop;
mod queue_stress;
mod queue_width;

mod map;
mod pool;
mod priority_queue;

mod hub_backlog;
mod hub_overflow;
mod hub_stress;
