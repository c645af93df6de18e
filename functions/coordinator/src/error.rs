//! [`ApiError`]: the one mapping from failures to HTTP answers. Bodies are
//! `{"error": {"code", "message"}}`; internal and SDK messages go to the log, never to the
//! caller, who gets a reference to find them.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use barge_jobs::{
    LogError, Rejection, SpecError, StoreError,
    api::{ErrorBody, ErrorDetail},
    lifecycle::ApplyError,
};

/// Everything the API answers with other than success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request: not JSON, bad header, bad query (400).
    #[error("{0}")]
    BadRequest(String),
    /// No or invalid credentials (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such job, route or job of the caller's (404).
    #[error("{0}")]
    NotFound(String),
    /// The method does not apply to the route (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The job's state does not allow it, or an idempotency key was reused (409).
    #[error("{0}")]
    Conflict(String),
    /// The body is too large (413).
    #[error("the request body is larger than {0} KiB")]
    TooLarge(usize),
    /// A well-formed request that cannot run: the field and what to fix (422).
    #[error("{0}")]
    Invalid(String),
    /// The account's active-job limit is reached (429).
    #[error("{0}")]
    LimitReached(String),
    /// A dependency (the store, KMS) is unavailable; try again (503).
    #[error("the job service is unavailable; try again shortly")]
    Unavailable(String),
    /// A bug or an unreadable item (500). The detail is logged only.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::LimitReached(_) => (StatusCode::TOO_MANY_REQUESTS, "limit_reached"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The job id in a path was not a job of the caller's.
    pub(crate) fn no_job() -> ApiError {
        ApiError::NotFound("no such job; `barge jobs list` shows yours".into())
    }
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> Self {
        ApiError::Invalid(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::LimitReached { limit } => ApiError::LimitReached(format!(
                "{limit} jobs are already active, the most this deployment runs at once; wait for one to finish or cancel one (`barge jobs list`)"
            )),
            StoreError::KeyExpired => ApiError::Conflict(e.to_string()),
            StoreError::BadCursor => ApiError::BadRequest(e.to_string()),
            StoreError::Conflict => ApiError::Unavailable("the job kept changing concurrently".into()),
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::Corrupt { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::BadCursor => ApiError::BadRequest(e.to_string()),
            LogError::Unavailable(detail) => ApiError::Unavailable(detail),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::NotFound => ApiError::no_job(),
            ApplyError::Rejected(Rejection::Conflict(message)) => ApiError::Conflict(message),
            ApplyError::Rejected(Rejection::NotYourJob(message)) => ApiError::Forbidden(message),
            ApplyError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            ApiError::Internal(detail) | ApiError::Unavailable(detail) => {
                let reference = barge_jobs::JobId::random();
                tracing::error!(%reference, status = status.as_u16(), detail = %detail, "request failed");
                format!("{self} (reference {reference})")
            }
            _ => self.to_string(),
        };
        let body = ErrorBody { error: ErrorDetail { code: code.into(), message } };
        (status, Json(body)).into_response()
    }
}
