//! `/api/v1/topics` and `/api/v1/consumers`: publish messages, and see
//! each consumer's backlog. The model is in [`crate::consumers`].

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rdq::hub::{BacklogSnapshot, Episode, Overflow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use super::json::{ApiJson, ApiPath};
use crate::app::App;
use crate::consumers::{self, Message, Published, ServerConsumer};

/// A message to publish on a topic.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// The message: any JSON. Each subscribed consumer gets a job whose
    /// `kind` is the topic and whose `args` are this message.
    pub message: serde_json::Value,
    /// The jobs' priority: lower runs first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Idempotency key, per consumer: a consumer that has a live job with
    /// this key gets no second one (its existing job is reported).
    #[schema(min_length = 1, max_length = 255)]
    pub key: Option<String>,
}

/// A consumer that got the message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveredView {
    /// The consumer.
    pub consumer: String,
    /// Its job.
    pub job: i64,
    /// The job existed already (same key).
    pub existing: bool,
}

/// A consumer that did not get the message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectedView {
    /// The consumer.
    pub consumer: String,
    /// Why: `full` (its bound of waiting messages was reached).
    pub reason: String,
    /// Its bound.
    pub bound: u64,
    /// How long the publish waited for room (consumers with `overflow =
    /// "block"`); null otherwise.
    pub waited_seconds: Option<f64>,
}

/// The error part of a 429 answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishError {
    /// `consumer_full`.
    pub code: String,
    /// Which consumers were full.
    pub message: String,
}

/// What a publish did: written in one commit before the answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PublishReply {
    /// Present (code `consumer_full`) when a consumer was full (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PublishError>,
    /// The consumers that got it, with their jobs.
    pub delivered: Vec<DeliveredView>,
    /// The consumers that were full and did not get it.
    pub rejected: Vec<RejectedView>,
    /// Consumers (`overflow = "drop_oldest"`) that cancelled their oldest
    /// waiting message to take this one.
    #[serde(default)]
    pub dropped: Vec<String>,
}

/// A topic and who subscribes to it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicView {
    /// The topic.
    pub topic: String,
    /// The consumers whose patterns match it.
    pub subscribers: Vec<String>,
}

/// The declared topics.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TopicList {
    /// In declaration order.
    pub topics: Vec<TopicView>,
}

/// Attempts ended, by how.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
pub struct ProcessedView {
    /// Succeeded.
    pub ok: u64,
    /// Failed (retried or dead).
    pub failed: u64,
    /// Timed out (counted in `failed` by the durable queue; 0 here).
    pub timed_out: u64,
    /// Panicked (counted in `failed` by the durable queue; 0 here).
    pub panicked: u64,
    /// Cancelled while underway.
    pub cancelled: u64,
    /// Given back unfinished (snoozed, released at shutdown, lease lost).
    pub not_run: u64,
}

/// A backlog episode: from depth leaving 0 until it is 0 again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EpisodeView {
    /// When it began (RFC 3339).
    pub began_at: String,
    /// How long it lasted (so far, for the current one).
    pub duration_seconds: f64,
    /// The most messages waiting during it.
    pub peak_depth: u64,
}

impl From<&Episode> for EpisodeView {
    fn from(e: &Episode) -> Self {
        EpisodeView {
            began_at: rdq_store::Timestamp::from(e.began_at).to_string(),
            duration_seconds: e.duration.as_secs_f64(),
            peak_depth: e.peak_depth,
        }
    }
}

/// A consumer and its backlog.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsumerView {
    /// Its name (also its queue's).
    pub name: String,
    /// Its patterns, as declared.
    pub subscribe: Vec<String>,
    /// The declared topics they match.
    pub topics: Vec<String>,
    /// Its durable queue.
    pub queue: String,
    /// The most messages that may wait.
    pub bound: u64,
    /// `reject_newest`, `drop_oldest` or `block`.
    pub overflow: String,
    /// With `block`: how long a publish waits for room.
    pub block_timeout_seconds: Option<f64>,
    /// Messages waiting (pending jobs, on every node).
    pub depth: u64,
    /// Messages being processed (underway jobs, on every node).
    pub in_flight: u64,
    /// Most processed at once.
    pub width: u64,
    /// Whether its queue is paused.
    pub paused: bool,
    /// Publishes to this server waiting for room in it now (`block`).
    #[serde(default)]
    pub blocked_publishers: u64,
    /// How long the longest-waiting message has waited; null when none.
    pub oldest_pending_age_seconds: Option<f64>,
    /// Messages delivered to it by this server process.
    pub enqueued: u64,
    /// Attempts ended, by how (this process).
    pub processed: ProcessedView,
    /// Messages it refused because it was full.
    pub rejected: u64,
    /// Waiting messages dropped for newer ones.
    pub dropped: u64,
    /// Arrivals per second (about the last 10 s).
    pub arrival_rate: f64,
    /// Messages per second it can process flat out: width ÷ mean
    /// processing time (0 while unknown or paused).
    pub capacity: f64,
    /// Mean processing time of recent messages; null before the first.
    pub mean_processing_seconds: Option<f64>,
    /// Estimated time to empty its backlog, depth ÷ (capacity − arrival
    /// rate); 0 when empty; null when it is not catching up.
    pub catch_up_seconds: Option<f64>,
    /// `ok`, `warn` (depth not falling), `stall` (in flight, nothing
    /// finishing) or `stop` (waiting work, nothing running or finishing),
    /// over its status window (`status_window`, default 60 s).
    pub status: String,
    /// The backlog episode under way, if any.
    pub current_episode: Option<EpisodeView>,
    /// The last 20 finished episodes, oldest first.
    pub episodes: Vec<EpisodeView>,
}

/// Every consumer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsumerList {
    /// In declaration order.
    pub consumers: Vec<ConsumerView>,
}

/// The view of one consumer, from its backlog snapshot.
pub fn consumer_view(c: &ServerConsumer, b: &BacklogSnapshot) -> ConsumerView {
    let p = b.processed;
    ConsumerView {
        name: c.name().to_owned(),
        subscribe: c.config.subscribe.iter().map(|p| p.to_string()).collect(),
        topics: c.config.topics.clone(),
        queue: c.name().to_owned(),
        bound: c.config.bound,
        overflow: c.config.overflow.as_str().to_owned(),
        block_timeout_seconds: match c.config.overflow {
            Overflow::Block(t) => Some(t.as_secs_f64()),
            _ => None,
        },
        depth: b.depth,
        in_flight: b.in_flight,
        width: b.width,
        paused: b.paused,
        blocked_publishers: c.blocked.load(std::sync::atomic::Ordering::Relaxed),
        oldest_pending_age_seconds: b.oldest_pending_age.map(|d| d.as_secs_f64()),
        enqueued: b.enqueued,
        processed: ProcessedView {
            ok: p.ok,
            failed: p.failed,
            timed_out: p.timed_out,
            panicked: p.panicked,
            cancelled: p.cancelled,
            not_run: p.not_run,
        },
        rejected: b.rejected,
        dropped: b.dropped,
        arrival_rate: b.arrival_rate,
        capacity: b.capacity,
        mean_processing_seconds: b.mean_processing_time.map(|d| d.as_secs_f64()),
        catch_up_seconds: b.catch_up.map(|d| d.as_secs_f64()),
        status: b.status.as_str().to_ascii_lowercase(),
        current_episode: b.current_episode.as_ref().map(EpisodeView::from),
        episodes: b.episodes.iter().map(EpisodeView::from).collect(),
    }
}

fn unknown_topic(app: &App, topic: &str) -> ApiError {
    ApiError::UnknownTopic(format!(
        "no topic named {topic:?}; the declared topics are {:?}",
        app.topics
    ))
}

fn find_consumer<'a>(app: &'a App, name: &str) -> Result<&'a ServerConsumer, ApiError> {
    app.consumers
        .iter()
        .find(|c| c.name() == name)
        .ok_or_else(|| {
            let known: Vec<&str> = app.consumers.iter().map(|c| c.name()).collect();
            ApiError::UnknownConsumer(format!(
                "no consumer named {name:?}; the consumers are {known:?}"
            ))
        })
}

fn reply(published: Published) -> PublishReply {
    PublishReply {
        error: None,
        delivered: published
            .delivered
            .into_iter()
            .map(|d| DeliveredView {
                consumer: d.consumer,
                job: d.job,
                existing: d.existing,
            })
            .collect(),
        rejected: published
            .rejected
            .into_iter()
            .map(|r| RejectedView {
                consumer: r.consumer,
                reason: "full".into(),
                bound: r.bound,
                waited_seconds: r.waited.map(|w| w.as_secs_f64()),
            })
            .collect(),
        dropped: published.dropped,
    }
}

/// Publishes a message on a declared topic: one durable job per subscribed
/// consumer (kind: the topic; args: the message), all in one commit, before
/// the answer. 201 when every subscriber got it (200 when every job existed
/// already, by key, or nobody subscribes); 429 `consumer_full` when a
/// consumer was full: the others still got it, and the answer lists both.
#[utoipa::path(post, path = "/api/v1/topics/{topic}/messages", tag = "topics",
    params(("topic" = String, Path, description = "A declared topic")),
    request_body = PublishBody,
    responses((status = 201, body = PublishReply, description = "every subscriber got it"),
        (status = 200, body = PublishReply, description = "every subscriber had it already (same key), or none subscribes"),
        (status = 404, body = ErrorBody, description = "unknown_topic: the message lists the declared topics"),
        (status = 429, body = PublishReply, description = "consumer_full: some consumers were full; the others got it")))]
pub async fn publish(
    State(app): State<Arc<App>>,
    ApiPath(topic): ApiPath<String>,
    ApiJson(body): ApiJson<PublishBody>,
) -> Result<Response, ApiError> {
    if !app.topics.contains(&topic) {
        return Err(unknown_topic(&app, &topic));
    }
    if let Some(key) = &body.key {
        let chars = key.chars().count();
        if !(1..=255).contains(&chars) {
            return Err(ApiError::Unprocessable(format!(
                "key is {chars} characters; it must be 1 to 255"
            )));
        }
    }
    let published = consumers::publish(
        &app,
        &topic,
        Message {
            body: body.message,
            priority: body.priority,
            key: body.key,
        },
    )
    .await?;
    let mut out = reply(published);
    if !out.rejected.is_empty() {
        let full: Vec<String> = out
            .rejected
            .iter()
            .map(|r| format!("{} (bound {})", r.consumer, r.bound))
            .collect();
        out.error = Some(PublishError {
            code: "consumer_full".into(),
            message: format!(
                "full, did not get the message: {}; {} other consumer(s) got it",
                full.join(", "),
                out.delivered.len()
            ),
        });
        return Ok((StatusCode::TOO_MANY_REQUESTS, axum::Json(out)).into_response());
    }
    let status = if out.delivered.iter().any(|d| !d.existing) {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(out)).into_response())
}

/// The declared topics and their subscribers.
#[utoipa::path(get, path = "/api/v1/topics", tag = "topics",
    responses((status = 200, body = TopicList)))]
pub async fn list_topics(State(app): State<Arc<App>>) -> axum::Json<TopicList> {
    axum::Json(TopicList {
        topics: app
            .topics
            .iter()
            .map(|t| TopicView {
                topic: t.clone(),
                subscribers: consumers::subscribers(&app, t)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
            .collect(),
    })
}

/// Every consumer and its backlog.
#[utoipa::path(get, path = "/api/v1/consumers", tag = "topics",
    responses((status = 200, body = ConsumerList)))]
pub async fn list_consumers(
    State(app): State<Arc<App>>,
) -> Result<axum::Json<ConsumerList>, ApiError> {
    let mut out = Vec::with_capacity(app.consumers.len());
    for c in &app.consumers {
        out.push(consumer_view(c, &c.snapshot().await?));
    }
    Ok(axum::Json(ConsumerList { consumers: out }))
}

/// One consumer and its backlog; 404 `unknown_consumer`.
#[utoipa::path(get, path = "/api/v1/consumers/{name}", tag = "topics",
    params(("name" = String, Path, description = "The consumer")),
    responses((status = 200, body = ConsumerView),
        (status = 404, body = ErrorBody, description = "unknown_consumer: the message lists the consumers")))]
pub async fn get_consumer(
    State(app): State<Arc<App>>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<ConsumerView>, ApiError> {
    let c = find_consumer(&app, &name)?;
    Ok(axum::Json(consumer_view(c, &c.snapshot().await?)))
}
