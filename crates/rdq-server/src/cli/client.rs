//! The HTTP client of the verbs: one request, one JSON answer, and every
//! failure turned into a [`CliError`] whose message fits on one line.
//!
//! The server's error shape, `{"error": {"code", "message"}}`, becomes
//! [`CliError::Server`] with the server's own message; a server that cannot
//! be reached becomes [`CliError::Unreachable`], which says how to fix it.
//! The JSON answers are kept as [`serde_json::Value`] so `--json` prints them
//! as they came; the views below read the fields the tables need.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::Value;

use super::output::{one_line, shorten};
use super::{CliError, Connection};

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request may take, unless it says otherwise (a long poll).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A client of one rdq server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

/// An answer with a success status.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status (200, 201, 202).
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Client {
    /// A client of the server at `conn.server`: `http://host:port` (a bare
    /// `host:port` means http). A URL that cannot be one is a usage error.
    pub fn new(conn: &Connection) -> Result<Client, CliError> {
        let text = conn.server.trim();
        let with_scheme = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let base = Url::parse(&with_scheme)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                CliError::Usage(format!(
                    "--server {text:?} is not a server URL; write e.g. http://127.0.0.1:7878"
                ))
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("rdq/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Failed(format!("cannot start the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token: conn.token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// The server's URL, as shown in messages.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `/api/v1/` followed by these path segments (each percent-encoded),
    /// and a query.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        url
    }

    /// GET, expecting a success.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        Ok(self
            .send(Method::GET, url, None, REQUEST_TIMEOUT)
            .await?
            .body)
    }

    /// POST a JSON body (or none), expecting a success.
    pub async fn post(&self, segments: &[&str], body: Option<&Value>) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        Ok(self
            .send(Method::POST, url, body, REQUEST_TIMEOUT)
            .await?
            .body)
    }

    /// PATCH a JSON body, expecting a success.
    pub async fn patch(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        Ok(self
            .send(Method::PATCH, url, Some(body), REQUEST_TIMEOUT)
            .await?
            .body)
    }

    /// One request. A success status gives its JSON; an error status gives
    /// [`CliError::Server`] with the server's message.
    pub async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Reply, CliError> {
        self.send_accepting(method, url, body, timeout, &[]).await
    }

    /// Like [`send`](Client::send), but the error statuses in `accept` give
    /// their JSON too, as a [`Reply`]: for answers whose error body carries
    /// a result (a publish that some consumers refused: 429).
    pub async fn send_accepting(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        timeout: Duration,
        accept: &[u16],
    ) -> Result<Reply, CliError> {
        let mut request = self.http.request(method, url).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| self.transport(&e))?;
        if !status.is_success() && !accept.contains(&status.as_u16()) {
            return Err(server_error(status.as_u16(), &bytes));
        }
        let body = serde_json::from_slice(&bytes).map_err(|e| {
            CliError::Failed(format!(
                "the answer from {} is not JSON ({e}); is it an rdq server?",
                self.server()
            ))
        })?;
        Ok(Reply {
            status: status.as_u16(),
            body,
        })
    }

    fn transport(&self, e: &reqwest::Error) -> CliError {
        if e.is_connect() {
            CliError::Unreachable {
                url: self.server().to_owned(),
                reason: connect_reason(e),
            }
        } else if e.is_timeout() {
            CliError::Failed(format!(
                "the rdq server at {} did not answer in time",
                self.server()
            ))
        } else if hung_up(e) {
            // rdq serve reads an oversize body before it answers 413; a
            // server or proxy that does not gets here.
            CliError::Failed(format!(
                "the rdq server at {} closed the connection while the request was being sent \
                 ({}); a body over its max_body is the usual cause",
                self.server(),
                deepest(e)
            ))
        } else {
            CliError::Failed(format!(
                "the request to the rdq server at {} failed: {}",
                self.server(),
                deepest(e)
            ))
        }
    }
}

/// Whether the server hung up on the request: a broken pipe or a reset.
fn hung_up(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
        }
        source = err.source();
    }
    false
}

/// Why a connection failed, in a few words: `connection refused`.
fn connect_reason(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::TimedOut => "the connection timed out".to_owned(),
                _ => io.to_string(),
            };
        }
        source = err.source();
    }
    deepest(e)
}

fn deepest(e: &dyn std::error::Error) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// The error of an answer with an error status: the server's
/// `error.message` when the body has the API's error shape, otherwise the
/// status and the start of the body (a proxy's page, say).
pub fn server_error(status: u16, body: &[u8]) -> CliError {
    #[derive(Deserialize)]
    struct Shape {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape { error }) => CliError::Server {
            status,
            code: error.code,
            message: one_line(&error.message),
        },
        Err(_) => {
            let reason = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let text = shorten(&String::from_utf8_lossy(body), 200);
            let message = match (reason, text.is_empty()) {
                (r, true) => format!("the server answered {status} {r}"),
                (r, false) => format!("the server answered {status} {r}: {text}"),
            };
            CliError::Server {
                status,
                code: "http".to_owned(),
                message: one_line(&message),
            }
        }
    }
}

/// The fields of a job (`JobView`) that the tables show.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)] // The server's `JobView` documents each field.
pub struct JobRecord {
    pub id: i64,
    pub queue: String,
    #[serde(default)]
    pub kind: String,
    pub state: String,
    pub priority: i32,
    pub attempt: u32,
    pub max_attempts: u32,
    #[serde(default)]
    pub args: Value,
    #[serde(default)]
    pub run_at: Option<String>,
    pub queued_at: String,
    #[serde(default)]
    pub launched_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

/// A queue's rate (`RateBody`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RateView {
    /// Launches per period.
    pub count: u32,
    /// The period in milliseconds.
    pub period_ms: u64,
    /// Launches allowed back to back.
    pub burst: u32,
}

/// The fields of a queue (`QueueView`) that the tables show.
#[derive(Debug, Clone, Deserialize)]
#[allow(missing_docs)] // The server's `QueueView` documents each field.
pub struct QueueRecord {
    pub name: String,
    pub executor: String,
    pub width: usize,
    #[serde(default)]
    pub rate: Option<RateView>,
    pub paused: bool,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub held_until: Option<String>,
    #[serde(default)]
    pub counts: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub oldest_pending_age_seconds: Option<f64>,
}

impl QueueRecord {
    /// Jobs in this state.
    pub fn count(&self, state: &str) -> u64 {
        self.counts.get(state).copied().unwrap_or(0)
    }
}

/// Reads an answer as `T`; a mismatch means the server speaks another
/// version of the API.
pub fn decode<T: serde::de::DeserializeOwned>(value: &Value) -> Result<T, CliError> {
    T::deserialize(value).map_err(|e| {
        CliError::Failed(format!(
            "the server's answer does not have the expected shape ({e}); are client and server the same version?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(server: &str) -> Connection {
        Connection {
            server: server.to_owned(),
            token: None,
            json: false,
        }
    }

    #[test]
    fn error_bodies_give_the_servers_message() {
        let e = server_error(
            409,
            br#"{"error":{"code":"conflict","message":"job 3 is finished\n(succeeded)"}}"#,
        );
        assert_eq!(e.to_string(), "job 3 is finished (succeeded)");
        assert_eq!(e.exit_code(), 1);
        assert!(matches!(e, CliError::Server { status: 409, ref code, .. } if code == "conflict"));
    }

    #[test]
    fn other_error_bodies_give_the_status_and_the_start_of_the_body() {
        let e = server_error(502, b"<html>\n<h1>Bad gateway</h1></html>");
        assert_eq!(
            e.to_string(),
            "the server answered 502 Bad Gateway: <html> <h1>Bad gateway</h1></html>"
        );
        assert_eq!(
            server_error(500, b"").to_string(),
            "the server answered 500 Internal Server Error"
        );
        let long = "x".repeat(1000);
        assert!(server_error(503, long.as_bytes()).to_string().len() < 300);
    }

    #[test]
    fn urls_are_built_under_api_v1_with_encoded_segments() {
        let c = Client::new(&conn("http://127.0.0.1:7878")).unwrap();
        assert_eq!(
            c.url(&["queues", "sms"], &[]).as_str(),
            "http://127.0.0.1:7878/api/v1/queues/sms"
        );
        assert_eq!(
            c.url(&["queues", "a b/c"], &[("limit", "5".into())])
                .as_str(),
            "http://127.0.0.1:7878/api/v1/queues/a%20b%2Fc?limit=5"
        );
        let c = Client::new(&conn("localhost:9000/rdq/")).unwrap();
        assert_eq!(
            c.url(&["jobs"], &[]).as_str(),
            "http://localhost:9000/rdq/api/v1/jobs"
        );
        assert_eq!(c.server(), "http://localhost:9000/rdq");
    }

    #[test]
    fn a_server_that_is_not_a_url_is_a_usage_error() {
        for bad in ["ftp://x", "http://", "::"] {
            let e = Client::new(&conn(bad)).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
            assert!(e.to_string().contains("not a server URL"), "{e}");
        }
    }

    #[test]
    fn the_unreachable_message_says_what_to_do() {
        let e = CliError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the rdq server at http://127.0.0.1:1: connection refused — is `rdq serve` running? \
             (set --server or RDQ_SERVER)"
        );
        assert_eq!(e.exit_code(), 1);
    }
}
