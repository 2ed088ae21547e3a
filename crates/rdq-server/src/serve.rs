//! `rdq serve`: open the store, start the queues, serve HTTP, and shut down
//! cleanly on SIGTERM or SIGINT.
//!
//! # Shutdown
//!
//! On the first signal: long polls and event streams end, the listener stops
//! accepting, requests in flight finish (at most [`HTTP_DRAIN`]); meanwhile
//! every queue stops launching and gives its underway jobs the configured
//! grace period, then returns the rest to pending; every outcome is written
//! and the store closed. Exit status 0. A restart resumes in priority order.
//! A second signal, later than [`SAME_REQUEST`](crate::shutdown::SAME_REQUEST)
//! (one second) after the first, exits at once (status 130); the store's
//! recovery at the next start returns whatever was underway to pending.
//! Signals within that second are the same request to stop (GNU `timeout`
//! signals the process and then its process group, a fraction of a
//! millisecond apart): see [`shutdown`](crate::shutdown).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;

/// Longest wait for HTTP requests in flight at shutdown.
pub const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// Why serving failed, and the exit status that says so.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot work (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Something failed at run time (exit 1).
    #[error("{0}")]
    Failed(String),
}

impl ServeError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Usage(_) => 2,
            ServeError::Failed(_) => 1,
        }
    }
}

/// Refuses what must not start: a weak token (from `RDQ_TOKEN` or the
/// file: one rule, [`check_token`](crate::config::resolved::check_token)),
/// or a non-loopback address without a token.
pub fn check(config: &Config) -> Result<(), ServeError> {
    if let Some(token) = &config.token {
        crate::config::resolved::check_token(token).map_err(|m| {
            ServeError::Usage(format!("the API token (RDQ_TOKEN or server.token): {m}"))
        })?;
    }
    if let Some(url) = &config.database_url {
        crate::config::database::check_url(url)
            .map_err(|m| ServeError::Usage(format!("--database-url: {m}")))?;
    }
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        return Err(ServeError::Usage(format!(
            "refusing to listen on {} without a token: anyone who can reach it could change your queues; \
             set RDQ_TOKEN (or server.token in rdq.toml), or listen on 127.0.0.1",
            config.listen
        )));
    }
    Ok(())
}

/// A server that is up: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The application, for whatever runs beside it (the demo).
    pub app: Arc<App>,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<Result<(), ServeError>>,
}

impl Running {
    /// Stops it as a signal would, and waits until it has.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(());
        self.done
            .await
            .map_err(|e| ServeError::Failed(format!("the server task failed: {e}")))?
    }

    /// Waits until it stops (after a signal).
    pub async fn wait(self) -> Result<(), ServeError> {
        let _keep = self.stop;
        self.done
            .await
            .map_err(|e| ServeError::Failed(format!("the server task failed: {e}")))?
    }
}

/// Opens the store, starts the queues, binds, and serves until a signal (or
/// [`Running::stop`]).
pub async fn start(config: Config) -> Result<Running, ServeError> {
    check(&config)?;
    let node = config
        .node
        .clone()
        .unwrap_or_else(crate::config::database::default_node);
    let store = crate::open::open(&config, &node).await?;
    // From here on a signal stops the server gracefully, even one that
    // arrives before it serves (until here, the default action: nothing
    // needs cleaning up yet). Installed later, a SIGTERM right after the
    // "listening" line killed the process outright.
    let signals = crate::shutdown::Signals::new();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Failed(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Failed(format!("cannot read the bound address: {e}")))?;
    let app = App::start(&config, store, &node)
        .await
        .map_err(|e| ServeError::Failed(e.to_string()))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let grace = config.shutdown_grace;
    let done = tokio::spawn(serve(listener, app.clone(), signals, stopped, grace));
    Ok(Running {
        addr,
        app,
        stop,
        done,
    })
}

async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    mut signals: crate::shutdown::Signals,
    stopped: tokio::sync::oneshot::Receiver<()>,
    grace: Duration,
) -> Result<(), ServeError> {
    let router = crate::api::router(app.clone());
    let (begin, begun) = tokio::sync::oneshot::channel::<()>();
    let signal_app = app.clone();
    let signals = async move {
        tokio::select! {
            () = signals.recv() => tracing::info!("signal received: shutting down"),
            _ = stopped => tracing::info!("shutting down"),
        }
        let first = std::time::Instant::now();
        signal_app.begin_shutdown();
        let _ = begin.send(());
        // A later signal: leave now.
        signals.forced(first).await;
        tracing::warn!("second signal: exiting without waiting");
        #[allow(clippy::exit)]
        // A second signal means "now"; recovery at the next start is the cleanup.
        std::process::exit(130);
    };
    tokio::spawn(signals);
    let listener = crate::api::JsonErrorListener::new(listener);
    let http = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = begun.await;
    });
    let http = tokio::spawn(async move { http.await });
    app.shutting_down().await;
    let queues = app.shutdown(grace);
    let drain = async {
        match tokio::time::timeout(HTTP_DRAIN, http).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the HTTP server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server task failed"),
            Err(_) => {
                tracing::warn!("requests still in flight after {HTTP_DRAIN:?}; dropping them")
            }
        }
    };
    let (report, ()) = tokio::join!(queues, drain);
    let report = report.map_err(|e| ServeError::Failed(e.to_string()))?;
    tracing::info!(
        released = report.released,
        interrupted = report.interrupted,
        "stopped: unfinished jobs are back to pending"
    );
    Ok(())
}
