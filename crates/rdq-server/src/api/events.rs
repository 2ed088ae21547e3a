//! `GET /api/v1/events`: server-sent events of job and queue changes, for
//! live views. Each event is one JSON [`Event`]; a client that falls behind
//! gets a `lagged` event saying how many it missed, and should re-read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt as _};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::app::{App, Event};

/// One server-sent event, as the stream carries it: its name, and its data,
/// an [`Event`] as JSON (for `job` and `queue`) or how many events a client
/// that fell behind missed (for `lagged`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Only describes the stream.
pub struct SentEvent {
    /// `job`, `queue` or `lagged`.
    #[schema(pattern = "^(job|queue|lagged)$")]
    event: String,
    /// An `Event` as JSON, or for `lagged` the number of events missed.
    data: String,
}

/// The stream of changes: one event per change, and a comment every 15 s to
/// keep the connection open.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    responses((status = 200, description = "Server-sent events; each data is an Event as JSON", body = SentEvent,
        content_type = "text/event-stream")))]
pub async fn stream(
    State(app): State<Arc<App>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let events =
        tokio_stream::StreamExt::map(BroadcastStream::new(app.events.subscribe()), |item| {
            Ok(match item {
                Ok(event) => {
                    let kind = match &event {
                        Event::Job { .. } => "job",
                        Event::Queue { .. } => "queue",
                    };
                    SseEvent::default()
                        .event(kind)
                        .json_data(&event)
                        .unwrap_or_else(|_| SseEvent::default().comment("unserializable event"))
                }
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    SseEvent::default().event("lagged").data(n.to_string())
                }
            })
        });
    // End the stream when the server stops, or graceful shutdown would wait
    // for it forever.
    let stopping = Box::pin(async move { app.shutting_down().await });
    Sse::new(events.take_until(stopping))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
