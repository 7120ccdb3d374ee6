//! The one error type at the HTTP edge: `{"error":{"code","message"}}` with
//! the contract's status codes. Internal failures are logged with their
//! cause and answered with a bare 500.

use crate::store::StoreError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after: Option<u64>,
}

/// Every error answer of the API.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Error, example = json!({"error": {"code": "invalid_request", "message": "name: must be 1 to 128 characters"}}))]
pub struct ErrorBody {
    #[schema(inline)]
    error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ErrorDetail {
    /// Machine-readable code, e.g. `malformed_json`, `unauthorized`, `forbidden`, `not_found`, `conflict`, `connection_in_use`, `payload_too_large`, `invalid_request`, `rate_limited`, `not_a_webhook`, `not_slack`, `slack_not_configured`, `slack_error`, `suppressed`, `backup_running`, `unavailable`, `storage_unavailable`, `method_not_allowed`, `internal`.
    code: &'static str,
    /// Human-readable explanation; for 422 it starts with the offending field (`conditions[0].op: …`).
    message: String,
}

/// What a client is told to wait before retrying while storage is failing;
/// the store probes the disk on a backoff of 0.5 s up to 30 s meanwhile.
pub const STORAGE_RETRY_AFTER_SECONDS: u64 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header to the answer.
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn malformed_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 422: a field is present but invalid; the message names the field.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{field}: {problem}"),
        )
    }

    /// 429 with `Retry-After`: over a rate limit, fine again after `seconds`.
    pub fn rate_limited(message: impl Into<String>, seconds: u64) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).with_retry_after(seconds)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 503 `storage_unavailable` with `Retry-After`: the disk is full or
    /// failing; nothing of the request was acknowledged as stored.
    pub fn storage_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            message,
        )
        .with_retry_after(STORAGE_RETRY_AFTER_SECONDS)
    }

    pub fn internal(error: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error, cause = ?error.source(), "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The machine-readable `code` of the answer.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable `message` of the answer.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            error if error.is_unavailable() => {
                tracing::error!(%error, "storage unavailable");
                Self::storage_unavailable("storage is unavailable; retry later")
            }
            // Only while shutting down.
            StoreError::WriterStopped => {
                tracing::warn!(%error, "write refused");
                Self::unavailable("the server is shutting down; retry later")
            }
            other => Self::internal(&other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(error: StoreError) -> (StatusCode, &'static str, Option<String>) {
        let api = ApiError::from(error);
        let code = api.code;
        let response = api.into_response();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|value| value.to_str().unwrap_or_default().to_string());
        (response.status(), code, retry_after)
    }

    #[test]
    fn storage_failures_say_when_to_retry_and_shutting_down_does_not() {
        let retry = Some(STORAGE_RETRY_AFTER_SECONDS.to_string());
        let io = std::io::Error::from_raw_os_error(28);
        assert_eq!(
            answer(StoreError::backend(io, true)),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                retry.clone()
            )
        );
        assert_eq!(
            answer(StoreError::Unavailable("disk full".into())),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                retry
            )
        );
        assert_eq!(
            answer(StoreError::WriterStopped),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
        );
    }
}
