//! Extractors that turn malformed requests into [`ApiError`]s (our JSON
//! error shape), instead of axum's plain-text rejections.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `axum::Json`, with errors in the API's shape: 400 for syntax, 422 for
/// well-formed JSON that does not fit, 413 for a body over the limit, 415
/// without `Content-Type: application/json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(json_error(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| json_error(e.into()))?;
        decode(&bytes).map(ApiJson)
    }
}

/// Whether the request says its body is JSON: `application/json` or
/// `application/*+json`, with any parameters.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// The body as a `T`. JSON Schema's integers include `5.0`: when a float was
/// refused, the integral ones are written as integers and it is tried again.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(v)) => Ok(v),
        Err(rejection @ JsonRejection::JsonDataError(_)) => {
            match integral_floats_as_integers(bytes) {
                Some(fixed) => axum::Json::<T>::from_bytes(&fixed)
                    .map(|axum::Json(v)| v)
                    .map_err(json_error),
                None => Err(json_error(rejection)),
            }
        }
        Err(rejection) => Err(json_error(rejection)),
    }
}

/// The body with every float that is a whole number in `i64`'s or `u64`'s
/// range (`5.0`, `1e3`) written as an integer, except inside `args` (a
/// job's own data, kept as sent); `None` if there is none.
fn integral_floats_as_integers(body: &[u8]) -> Option<axum::body::Bytes> {
    fn fix(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                // Exact bounds: -2^63 and 2^64 are powers of two.
                let whole = f.fract() == 0.0
                    && (-9.223_372_036_854_776e18..1.844_674_407_370_955_2e19).contains(&f);
                if whole {
                    *value = if f < 0.0 {
                        serde_json::Value::from(f as i64)
                    } else {
                        serde_json::Value::from(f as u64)
                    };
                }
                whole
            }
            serde_json::Value::Array(items) => items.iter_mut().fold(false, |any, v| fix(v) | any),
            serde_json::Value::Object(fields) => fields
                .iter_mut()
                .filter(|(k, _)| k.as_str() != "args")
                .fold(false, |any, (_, v)| fix(v) | any),
            _ => false,
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    if !fix(&mut value) {
        return None;
    }
    serde_json::to_vec(&value).ok().map(Into::into)
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match &rejection {
        JsonRejection::JsonDataError(e) => {
            ApiError::Unprocessable(format!("the JSON does not fit: {}", deepest(e)))
        }
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::BadRequest(format!("the body is not valid JSON: {}", deepest(e)))
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType(
            "send the body as JSON, with Content-Type: application/json".into(),
        ),
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::TooLarge("the request body is larger than the server's max_body".into())
        }
        _ => ApiError::BadRequest(rejection.body_text()),
    }
}

/// The innermost message: serde's, with its line and column.
fn deepest(e: &dyn std::error::Error) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// `axum::extract::Query`, with a 400 in the API's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::BadRequest(format!("bad query string: {}", deepest(&e)))
            })
    }
}

/// `axum::extract::Path`, with a 400 in the API's shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e: PathRejection| ApiError::BadRequest(format!("bad path: {}", deepest(&e))))
    }
}
