//! The API's one error type: every failure is
//! `{"error": {"code": "...", "message": "..."}}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rdq_store::{DurableError, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (bad JSON, a bad query or path).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// No such queue or job.
    #[error("{0}")]
    NotFound(String),
    /// No such topic: the message lists the declared ones.
    #[error("{0}")]
    UnknownTopic(String),
    /// No such consumer: the message lists the declared ones.
    #[error("{0}")]
    UnknownConsumer(String),
    /// The route exists, but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is not sent as `application/json`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The job is in a state that forbids this (finished, underway, ...).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// Well-formed but invalid (a negative width, an unknown field value).
    #[error("{0}")]
    Unprocessable(String),
    /// The store cannot take it now (full disk, locked or unreachable
    /// database, shutting down): a real outage, worth retrying later.
    #[error("{0}")]
    Unavailable(String),
    /// The database server cannot be reached (PostgreSQL down, no free
    /// connection within the pool's acquire timeout): retry later.
    #[error("{0}")]
    StoreUnavailable(String),
    /// A statement ran past the database's statement or lock timeout:
    /// retry later.
    #[error("{0}")]
    StoreTimeout(String),
    /// A bug.
    #[error("{0}")]
    Internal(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: `bad_request`, `unauthorized`,
    /// `not_found`, `unknown_topic`, `unknown_consumer`, `consumer_full`
    /// (with the delivered and rejected lists), `method_not_allowed`, `conflict`, `payload_too_large`,
    /// `uri_too_long`, `unsupported_media_type`, `unprocessable`,
    /// `headers_too_large`, `unavailable`, `store_unavailable`,
    /// `store_timeout`, `internal`.
    pub code: &'static str,
    /// What went wrong and how to fix it, for people.
    pub message: String,
}

impl ApiError {
    /// Status and code, in one place.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::UnknownTopic(_) => (StatusCode::NOT_FOUND, "unknown_topic"),
            ApiError::UnknownConsumer(_) => (StatusCode::NOT_FOUND, "unknown_consumer"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Unprocessable(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::StoreUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            ApiError::StoreTimeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ApiError::NotFound(format!("job {id} not found")),
            StoreError::Invalid(m) => ApiError::Unprocessable(m),
            e @ StoreError::Unavailable(_) => ApiError::StoreUnavailable(e.to_string()),
            e @ StoreError::Timeout(_) => ApiError::StoreTimeout(e.to_string()),
            // An outage: its text says what is down (a full disk, a locked
            // file), never a statement.
            e if e.is_unavailable() => ApiError::Unavailable(e.to_string()),
            // A bug: the details (which may quote SQL) go to the log only.
            e => {
                tracing::error!(error = %e, "a store operation failed");
                ApiError::Internal(
                    "the store failed unexpectedly; the server's log has the details".into(),
                )
            }
        }
    }
}

impl From<DurableError> for ApiError {
    fn from(e: DurableError) -> Self {
        match e {
            DurableError::Store(e) => e.into(),
            e @ DurableError::NotFound(_) => ApiError::NotFound(e.to_string()),
            e @ (DurableError::Finished(..)
            | DurableError::Underway(_)
            | DurableError::NotRetryable(..)
            | DurableError::KeyHeld(..)) => ApiError::Conflict(e.to_string()),
            e @ (DurableError::UnknownKind { .. } | DurableError::InvalidArgs(_)) => {
                ApiError::Unprocessable(e.to_string())
            }
            e @ DurableError::Stopped => {
                ApiError::Unavailable(format!("{e}: the server is shutting down"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_and_queue_errors_map_to_statuses() {
        let status = |e: ApiError| e.status_and_code().0;
        assert_eq!(
            status(StoreError::DiskFull("full".into()).into()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(StoreError::Closed.into()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(StoreError::Invalid("x".into()).into()),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let bug = ApiError::from(StoreError::Internal(
            "UNIQUE constraint failed: rdq_jobs.queue, rdq_jobs.key".into(),
        ));
        assert_eq!(bug.status_and_code().0, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !bug.to_string().contains("UNIQUE"),
            "no SQL text reaches a client: {bug}"
        );
        let id = rdq_store::JobId(7);
        assert_eq!(
            status(DurableError::NotFound(id).into()),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(DurableError::Finished(id, rdq_store::JobState::Dead).into()),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(DurableError::Underway(id).into()),
            StatusCode::CONFLICT
        );
        assert_eq!(
            status(DurableError::Stopped.into()),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(DurableError::InvalidArgs("x".into()).into()),
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
