//! Wake-ups between nodes: one connection per store, outside the pools,
//! that LISTENs on the schema's four channels and also sends this store's
//! NOTIFYs (so that it can tell its own from the others' by the backend's
//! pid, and ignore them: local effects fire the local signals directly).
//!
//! | channel | payload |
//! |---|---|
//! | `<schema>_work` | a queue that may have work |
//! | `<schema>_finished` | comma-separated ids of jobs that reached a final state |
//! | `<schema>_settings` | a queue whose settings were saved |
//! | `<schema>_cancel` | the id of an underway job someone asked to cancel |
//!
//! Work notifications are coalesced: at most one per queue per
//! [`WORK_WINDOW`]. After a reconnect every work and settings signal fires,
//! since something may have been missed while the connection was down.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_postgres::{AsyncMessage, Client, Config, NoTls};

use crate::row::JobId;

/// The shortest time between two work notifications of one queue.
pub(super) const WORK_WINDOW: Duration = Duration::from_millis(20);

/// A NOTIFY payload must stay under 8000 bytes.
const MAX_PAYLOAD: usize = 7900;

/// The store's local signals, fired by local effects and by other nodes'
/// notifications.
#[derive(Debug)]
pub(super) struct Signals {
    work: Mutex<HashMap<String, Arc<Notify>>>,
    settings: Mutex<HashMap<String, Arc<Notify>>>,
    pub(super) finished: broadcast::Sender<JobId>,
    pub(super) cancel: broadcast::Sender<JobId>,
}

impl Signals {
    pub(super) fn new() -> Signals {
        Signals {
            work: Mutex::new(HashMap::new()),
            settings: Mutex::new(HashMap::new()),
            finished: broadcast::channel(4096).0,
            cancel: broadcast::channel(1024).0,
        }
    }

    fn get(map: &Mutex<HashMap<String, Arc<Notify>>>, queue: &str) -> Arc<Notify> {
        map.lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    pub(super) fn work(&self, queue: &str) -> Arc<Notify> {
        Self::get(&self.work, queue)
    }

    pub(super) fn settings(&self, queue: &str) -> Arc<Notify> {
        Self::get(&self.settings, queue)
    }

    /// Fires every work and settings signal.
    fn fire_all(&self) {
        for map in [&self.work, &self.settings] {
            for signal in map.lock().unwrap_or_else(|e| e.into_inner()).values() {
                signal.notify_one();
            }
        }
    }
}

/// What this store tells the other nodes.
#[derive(Debug)]
pub(super) enum Outgoing {
    /// A queue may have work.
    Work(String),
    /// Jobs reached a final state.
    Finished(Vec<JobId>),
    /// A queue's settings were saved.
    Settings(String),
    /// Someone asked to cancel an underway job.
    Cancel(JobId),
}

/// The channels of a schema.
#[derive(Clone, Debug)]
struct Channels {
    work: String,
    finished: String,
    settings: String,
    cancel: String,
}

/// The listener task: connects (and reconnects, with backoff), LISTENs,
/// delivers what others notify, and sends what this store notifies. Reports
/// its first LISTEN on `ready`.
pub(super) async fn run(
    config: Config,
    schema: String,
    signals: Arc<Signals>,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    mut shutdown: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) {
    let channels = Channels {
        work: format!("{schema}_work"),
        finished: format!("{schema}_finished"),
        settings: format!("{schema}_settings"),
        cancel: format!("{schema}_cancel"),
    };
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    // Work notifications waiting for their window, kept across reconnects.
    let mut pending_work: BTreeSet<String> = BTreeSet::new();
    loop {
        if *shutdown.borrow() {
            return;
        }
        match listen(&config, &channels).await {
            Ok((client, pid, mut incoming)) => {
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(());
                    }
                    None => {
                        tracing::info!(schema, "reconnected the LISTEN connection");
                        signals.fire_all();
                    }
                }
                backoff = Duration::from_millis(100);
                let mut last_work = Instant::now() - WORK_WINDOW;
                loop {
                    let deadline = (!pending_work.is_empty()).then_some(last_work + WORK_WINDOW);
                    tokio::select! {
                        message = incoming.recv() => match message {
                            Some(n) if n.0 != pid => deliver(&signals, &channels, &n.1, &n.2),
                            Some(_) => {}
                            None => break,
                        },
                        out = outgoing.recv() => match out {
                            Some(Outgoing::Work(q)) => {
                                pending_work.insert(q);
                                if Instant::now() >= last_work + WORK_WINDOW {
                                    last_work = Instant::now();
                                    let queues = std::mem::take(&mut pending_work);
                                    send(&client, &channels.work, queues.into_iter().collect()).await;
                                }
                            }
                            Some(other) => {
                                let (channel, payloads) = payloads(&channels, other);
                                send(&client, channel, payloads).await;
                            }
                            None => return,
                        },
                        _ = sleep_until(deadline) => {
                            last_work = Instant::now();
                            let queues = std::mem::take(&mut pending_work);
                            send(&client, &channels.work, queues.into_iter().collect()).await;
                        }
                        _ = shutdown.changed() => return,
                    }
                }
                tracing::warn!(schema, "the LISTEN connection was lost; reconnecting");
            }
            Err(e) => {
                tracing::warn!(schema, error = %e, "cannot LISTEN for other nodes; retrying in {backoff:?}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A notification: the sender's pid, its channel, its payload.
type Incoming = (i32, String, String);

/// Connects, LISTENs on every channel; returns the client, its backend's
/// pid and the notifications it receives.
async fn listen(
    config: &Config,
    channels: &Channels,
) -> Result<(Client, i32, mpsc::UnboundedReceiver<Incoming>), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let _ = tx.send((
                        n.process_id(),
                        n.channel().to_owned(),
                        n.payload().to_owned(),
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "the LISTEN connection failed");
                    break;
                }
                None => break,
            }
        }
    });
    client
        .batch_execute(&format!(
            "LISTEN \"{}\"; LISTEN \"{}\"; LISTEN \"{}\"; LISTEN \"{}\";",
            channels.work, channels.finished, channels.settings, channels.cancel
        ))
        .await?;
    let pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .get(0);
    Ok((client, pid, rx))
}

/// Fires the local signal another node's notification names.
fn deliver(signals: &Signals, channels: &Channels, channel: &str, payload: &str) {
    if channel == channels.work {
        signals.work(payload).notify_one();
    } else if channel == channels.settings {
        signals.settings(payload).notify_waiters();
    } else if channel == channels.finished {
        for id in payload.split(',').filter_map(|s| s.trim().parse().ok()) {
            let _ = signals.finished.send(JobId(id));
        }
    } else if channel == channels.cancel {
        if let Ok(id) = payload.trim().parse() {
            let _ = signals.cancel.send(JobId(id));
        }
    }
}

/// The channel and payloads of a notification (finished ids in chunks under
/// the payload limit).
fn payloads(channels: &Channels, out: Outgoing) -> (&str, Vec<String>) {
    match out {
        Outgoing::Work(q) => (&channels.work, vec![q]),
        Outgoing::Settings(q) => (&channels.settings, vec![q]),
        Outgoing::Cancel(id) => (&channels.cancel, vec![id.to_string()]),
        Outgoing::Finished(ids) => {
            let mut chunks = Vec::new();
            let mut chunk = String::new();
            for id in ids {
                let text = id.to_string();
                if !chunk.is_empty() && chunk.len() + 1 + text.len() > MAX_PAYLOAD {
                    chunks.push(std::mem::take(&mut chunk));
                }
                if !chunk.is_empty() {
                    chunk.push(',');
                }
                chunk.push_str(&text);
            }
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            (&channels.finished, chunks)
        }
    }
}

/// Sends notifications (best effort: a lost one is made up for by the
/// waiters' poll interval).
async fn send(client: &Client, channel: &str, payloads: Vec<String>) {
    if payloads.is_empty() {
        return;
    }
    if let Err(e) = client
        .execute(
            "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
            &[&channel, &payloads],
        )
        .await
    {
        tracing::debug!(error = %e, channel, "a notification was not sent");
    }
}
