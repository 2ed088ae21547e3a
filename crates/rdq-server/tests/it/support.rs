//! A server in-process (its router, driven with `oneshot`) on a temporary
//! database, and a scriptable HTTP target for its http executor.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use rdq_server::app::App;
use rdq_server::config::{Config, ExecutorConfig, QueueConfig};
use rdq_server::executor::http::HttpSpec;
use rdq_server::store::AnyStore;
use rdq_store::sqlite::{SqliteOptions, SqliteStore};
use tower::ServiceExt;

/// One scripted answer of the target.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<&'static str>,
    pub(crate) body: &'static str,
    /// Wait this long before answering.
    pub(crate) delay: Duration,
}

impl Answer {
    pub(crate) fn status(status: u16) -> Answer {
        Answer {
            status,
            retry_after: None,
            body: "",
            delay: Duration::ZERO,
        }
    }
}

/// What the target received: each job document and its idempotency key.
type Seen = Arc<Mutex<Vec<(serde_json::Value, Option<String>)>>>;

/// An HTTP target on loopback: answers from a script, then 200 `{"ok":true}`.
#[derive(Clone, Default)]
pub(crate) struct Target {
    pub(crate) url: String,
    script: Arc<Mutex<VecDeque<Answer>>>,
    seen: Seen,
    /// When each request arrived, in order.
    arrived: Arc<Mutex<Vec<SystemTime>>>,
}

impl Target {
    pub(crate) async fn start() -> Target {
        let mut target = Target::default();
        let t = target.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let t = t.clone();
                    async move {
                        let doc = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        let key = headers
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        t.arrived.lock().unwrap().push(SystemTime::now());
                        t.seen.lock().unwrap().push((doc, key));
                        let answer = t.script.lock().unwrap().pop_front();
                        let answer = answer.unwrap_or(Answer {
                            body: "{\"ok\":true}",
                            ..Answer::status(200)
                        });
                        tokio::time::sleep(answer.delay).await;
                        let mut response =
                            axum::response::Response::builder().status(answer.status);
                        if let Some(ra) = answer.retry_after {
                            response = response.header("retry-after", ra);
                        }
                        response.body(Body::from(answer.body)).unwrap()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        target.url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        target
    }

    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }

    /// The job documents received, with their idempotency keys.
    pub(crate) fn seen(&self) -> Vec<(serde_json::Value, Option<String>)> {
        self.seen.lock().unwrap().clone()
    }

    /// When each request arrived (system time), in order.
    pub(crate) fn arrived(&self) -> Vec<SystemTime> {
        self.arrived.lock().unwrap().clone()
    }
}

/// A server (router and app) on a fresh database, with queue `sms` (http,
/// to the target) and whatever `tweak` changes.
pub(crate) struct TestServer {
    pub(crate) app: Arc<App>,
    pub(crate) router: axum::Router,
    pub(crate) target: Target,
    pub(crate) token: Option<String>,
    _dir: tempfile::TempDir,
}

pub(crate) fn sms_queue(url: &str) -> QueueConfig {
    QueueConfig {
        name: "sms".into(),
        width: 2,
        rate: None,
        timeout: Some(Duration::from_secs(5)),
        warn_after: None,
        max_attempts: 3,
        backoff: rdq_store::Backoff::constant(Duration::from_millis(50))
            .unwrap()
            .with_jitter(0.0)
            .unwrap(),
        retention: Duration::from_secs(3600),
        paused: false,
        executor: ExecutorConfig::Http(HttpSpec {
            url: url.to_owned(),
            headers: Default::default(),
        }),
    }
}

impl TestServer {
    pub(crate) async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        Self::start_on(None, tweak).await
    }

    /// The same on `store` (on a SQLite file of its own when `None`).
    pub(crate) async fn start_on(
        store: Option<AnyStore>,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::start().await;
        let mut config = Config {
            db: dir.path().join("t.db"),
            max_body: 64 * 1024,
            queues: vec![sms_queue(&target.url)],
            ..Config::default()
        };
        tweak(&mut config);
        let store = match store {
            Some(store) => store,
            None => SqliteStore::open(&config.db, SqliteOptions::default())
                .await
                .unwrap()
                .into(),
        };
        let app = App::start(&config, store, "test-node").await.unwrap();
        TestServer {
            router: rdq_server::api::router(app.clone()),
            app,
            target,
            token: config.token.clone(),
            _dir: dir,
        }
    }

    /// One request; the status and the body parsed as JSON (or as a string).
    pub(crate) async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
    ) -> (StatusCode, serde_json::Value) {
        self.call_with(method, uri, body, self.token.as_deref(), true)
            .await
    }

    pub(crate) async fn call_with(
        &self,
        method: &str,
        uri: &str,
        body: Option<&str>,
        token: Option<&str>,
        json: bool,
    ) -> (StatusCode, serde_json::Value) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() && json {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(
                body.map(|b| Body::from(b.to_owned()))
                    .unwrap_or_else(Body::empty),
            )
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        });
        (status, value)
    }

    /// Puts a job into `sms`; returns its id.
    pub(crate) async fn put(&self, body: &str) -> i64 {
        let (status, reply) = self
            .call("POST", "/api/v1/queues/sms/jobs", Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{reply}");
        reply["id"].as_i64().unwrap()
    }

    /// Waits (long poll) until the job is final; returns it.
    pub(crate) async fn finished(&self, id: i64) -> serde_json::Value {
        let (status, job) = self
            .call(
                "GET",
                &format!("/api/v1/jobs/{id}/wait?timeout_ms=10000"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "job {id} did not finish: {job}");
        job
    }

    /// Jobs of `sms` per state.
    pub(crate) async fn counts(&self) -> serde_json::Value {
        self.call("GET", "/api/v1/queues/sms", None).await.1["counts"].clone()
    }
}

/// Polls until `check` holds, failing after 10 s.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
