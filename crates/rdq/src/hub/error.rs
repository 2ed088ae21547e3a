//! Errors of the hub: declaring consumers, and publishing.

use std::sync::Arc;
use std::time::Duration;

use super::pattern::TopicError;

/// Why a consumer could not be declared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The name is empty.
    #[error("a consumer needs a name")]
    EmptyName,
    /// Another consumer has this name.
    #[error("there is already a consumer named {0:?}; give each consumer its own name")]
    Duplicate(String),
    /// The consumer subscribes to nothing.
    #[error("consumer {0:?} subscribes to nothing; subscribe it to a topic or a \"prefix.*\"")]
    NoSubscription(String),
    /// A bound of 0 would refuse every message.
    #[error("consumer {0:?} has a bound of 0, which would refuse every message; use at least 1")]
    ZeroBound(String),
    /// A subscription pattern is not valid.
    #[error("consumer {0:?}: {1}")]
    Pattern(String, TopicError),
}

/// Why one consumer did not take a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Its queue holds `bound` waiting messages (overflow: reject newest).
    Full {
        /// The consumer's bound.
        bound: usize,
    },
    /// Its queue stayed full for the whole block timeout.
    TimedOut {
        /// How long the publisher waited.
        waited: Duration,
    },
    /// The consumer has stopped.
    Stopped,
}

/// A consumer that did not take a message, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The consumer's name.
    pub consumer: Arc<str>,
    /// Why.
    pub reason: Reason,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reason {
            Reason::Full { bound } => write!(
                f,
                "consumer {:?} is full ({bound} messages waiting)",
                self.consumer
            ),
            Reason::TimedOut { waited } => {
                write!(f, "consumer {:?} stayed full for {waited:?}", self.consumer)
            }
            Reason::Stopped => write!(f, "consumer {:?} has stopped", self.consumer),
        }
    }
}

/// Why a [`publish`](crate::Hub::publish) did not reach every subscribed
/// consumer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The topic is not a valid topic name; nothing was delivered.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Some consumers refused the message. Those in `delivered` have it.
    #[error("{}", rejected_text(.rejected))]
    Rejected {
        /// The consumers that took it.
        delivered: Vec<Arc<str>>,
        /// The consumers that did not, and why.
        rejected: Vec<Rejection>,
    },
}

fn rejected_text(rejected: &[Rejection]) -> String {
    let parts: Vec<String> = rejected.iter().map(ToString::to_string).collect();
    parts.join("; ")
}
