//! The signals that stop the server.
//!
//! # One request to stop, then "now"
//!
//! The first SIGTERM or SIGINT (Ctrl-C) asks for a graceful stop. Signals
//! that follow it within [`SAME_REQUEST`] (one second) are the *same*
//! request, not a second one: GNU `timeout` sends SIGTERM to the process and
//! then to its whole process group a fraction of a millisecond later, a
//! supervisor may signal both a process and its group, a terminal sends
//! Ctrl-C to every process of the foreground group. Only a signal later than
//! that forces the stop (the server exits at once with status 130, and the
//! store's recovery at the next start returns whatever was underway to
//! pending).
//!
//! [`Signals`] listens from its creation on, so a signal arriving while the
//! server handles the previous one is never missed.

use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

/// How long after the first signal another one is still the same request
/// to stop. See the [module docs](self).
pub const SAME_REQUEST: Duration = Duration::from_secs(1);

/// SIGTERM and SIGINT, from creation on.
#[derive(Debug)]
pub struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
}

impl Signals {
    /// Starts listening. Where a signal cannot be listened to, says so; the
    /// other one still works.
    pub fn new() -> Signals {
        let listen = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}: it will not stop the server");
                None
            }
        };
        Signals {
            terminate: listen(SignalKind::terminate(), "SIGTERM"),
            interrupt: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// The next SIGTERM or SIGINT (never, if neither can be listened to).
    pub async fn recv(&mut self) {
        async fn next(s: &mut Option<Signal>) {
            match s {
                Some(s) => {
                    if s.recv().await.is_none() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            () = next(&mut self.terminate) => {}
            () = next(&mut self.interrupt) => {}
        }
    }

    /// After the first request to stop (made at `first`): resolves at the
    /// first signal later than [`SAME_REQUEST`] after it, the one that
    /// forces the stop. Signals before that are logged and otherwise
    /// ignored.
    pub async fn forced(&mut self, first: Instant) {
        loop {
            self.recv().await;
            if first.elapsed() >= SAME_REQUEST {
                return;
            }
            tracing::info!(
                "another signal within {SAME_REQUEST:?} of the first: the same request to stop \
                 (a signal after that forces the stop)"
            );
        }
    }
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}
