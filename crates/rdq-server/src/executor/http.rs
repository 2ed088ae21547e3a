//! The http executor: POST each job as JSON to a URL.
//!
//! The request body is the job's [`JobDocument`]; headers name the job
//! (`X-Rdq-Job-Id`, `X-Rdq-Attempt`) and carry an `Idempotency-Key` that is
//! the same for every attempt of a job, so the target can recognise a
//! delivery it already handled.
//!
//! # What the answer means
//!
//! | answer | the job |
//! |---|---|
//! | 2xx | succeeded; status and body (up to 16 KiB) kept as its result |
//! | 429 or 503 with `Retry-After` | comes back after that delay without spending an attempt, and **the whole queue holds its launches as long**: the target said it is overloaded |
//! | 429 without `Retry-After` | the same, for 1 s |
//! | other 4xx | dead at once: retrying the same request cannot help |
//! | 5xx, connection errors | retried with the queue's backoff |
//! | no answer within the queue's timeout | retried (the request is dropped) |

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rdq_store::{HandlerError, JobContext};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Serialize;

use super::JobDocument;

/// Body bytes kept in a job's result.
const BODY_CAP: usize = 16 * 1024;

/// A 429 without `Retry-After` holds the queue this long.
const DEFAULT_THROTTLE: Duration = Duration::from_secs(1);

/// Resolved settings of an http executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSpec {
    /// Where to POST.
    pub url: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
}

impl HttpSpec {
    /// Checks the URL and headers; the error says what to fix.
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("url = {:?} is not a URL ({e})", self.url))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "url = {:?} must start with http:// or https://",
                self.url
            ));
        }
        headers(&self.headers).map(drop)
    }
}

fn headers(map: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut out = HeaderMap::new();
    for (name, value) in map {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("header {name}: value is not valid"))?;
        out.insert(name, value);
    }
    Ok(out)
}

/// What a successful call gives back (the job's result).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpOutput {
    /// The status code.
    pub status: u16,
    /// The body: JSON if it parses, else text; cut at 16 KiB.
    pub body: serde_json::Value,
}

/// Posts jobs to one URL, reusing connections.
#[derive(Debug, Clone)]
pub struct HttpExecutor {
    url: reqwest::Url,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl HttpExecutor {
    /// An executor for these settings.
    pub fn new(spec: &HttpSpec) -> Result<Self, String> {
        spec.check()?;
        let client = reqwest::Client::builder()
            .user_agent(concat!("rdq/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(HttpExecutor {
            url: reqwest::Url::parse(&spec.url).map_err(|e| e.to_string())?,
            headers: headers(&spec.headers)?,
            client,
        })
    }

    /// Runs one job: one request.
    pub async fn run(
        &self,
        args: &serde_json::Value,
        ctx: &JobContext,
    ) -> Result<HttpOutput, HandlerError> {
        let doc = JobDocument::new(args, ctx);
        let response = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header("X-Rdq-Job-Id", ctx.id.0.to_string())
            .header("X-Rdq-Attempt", ctx.attempt.to_string())
            .header("Idempotency-Key", format!("rdq-{}-{}", ctx.queue, ctx.id.0))
            .json(&doc)
            .send()
            .await
            .map_err(|e| {
                HandlerError::msg(format!("POST {} failed: {}", self.url, error_chain(&e)))
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let bytes = response.bytes().await.unwrap_or_default();
        let body = body_value(&bytes);
        let said = || {
            let text = match &body {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let text: String = text.chars().take(200).collect();
            format!(
                "HTTP {status}{}",
                if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                }
            )
        };
        match status {
            s if s.is_success() => Ok(HttpOutput {
                status: s.as_u16(),
                body,
            }),
            StatusCode::TOO_MANY_REQUESTS => Err(HandlerError::throttle(
                said(),
                retry_after.unwrap_or(DEFAULT_THROTTLE),
            )),
            StatusCode::SERVICE_UNAVAILABLE => match retry_after {
                Some(delay) => Err(HandlerError::throttle(said(), delay)),
                None => Err(HandlerError::msg(said())),
            },
            s if s.is_client_error() => Err(HandlerError::permanent(said())),
            _ => Err(HandlerError::msg(said())),
        }
    }
}

fn body_value(bytes: &[u8]) -> serde_json::Value {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if bytes.len() <= BODY_CAP {
            return v;
        }
    }
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_CAP)]).into_owned();
    if bytes.len() > BODY_CAP {
        text.push_str(&format!(
            "\n[... {} bytes omitted ...]",
            bytes.len() - BODY_CAP
        ));
    }
    serde_json::Value::String(text)
}

/// `Retry-After`: delay-seconds or an HTTP date, cut to
/// [`RETRY_DELAY`](crate::limits::RETRY_DELAY) (a day): a target cannot hold
/// the queue for years, nor push a retry past what a timestamp holds.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(SystemTime::now()).unwrap_or_default()
        }
    };
    Some(crate::limits::RETRY_DELAY.clamp(delay))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        let day = Some(Duration::from_secs(86_400));
        assert_eq!(parse_retry_after("18446744073709551615"), day);
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT"), day);
        let later = SystemTime::now() + Duration::from_secs(30);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "in the past"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn specs_are_checked() {
        let ok = HttpSpec {
            url: "https://example.invalid/send".into(),
            headers: BTreeMap::from([("Authorization".into(), "Bearer x".into())]),
        };
        assert!(ok.check().is_ok());
        let bad_scheme = HttpSpec {
            url: "ftp://example.invalid".into(),
            ..ok.clone()
        };
        assert!(bad_scheme.check().unwrap_err().contains("http://"));
        let bad_header = HttpSpec {
            headers: BTreeMap::from([("bad header".into(), "x".into())]),
            ..ok
        };
        assert!(bad_header.check().unwrap_err().contains("not valid"));
    }

    #[test]
    fn bodies_are_json_when_they_can_be_and_capped() {
        assert_eq!(
            body_value(b"{\"ok\":true}"),
            serde_json::json!({"ok": true})
        );
        assert_eq!(body_value(b"plain"), serde_json::json!("plain"));
        let big = vec![b'x'; BODY_CAP + 10];
        let v = body_value(&big);
        assert!(v.as_str().unwrap().ends_with("[... 10 bytes omitted ...]"));
    }
}
