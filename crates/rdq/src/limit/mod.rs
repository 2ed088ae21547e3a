//! Limits on launching: the rate.

pub(crate) mod rate;
