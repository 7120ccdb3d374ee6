//! Body and query extractors whose rejections speak the API's error format:
//! 413 over the body limit, 400 for malformed JSON, 422 for a well-formed
//! body with a missing or mistyped field; and the `Idempotency-Key`
//! header, which never rejects (the handlers check it).

use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(request, app).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// The request's `Idempotency-Key` header, if it has one, taken without
/// copying the whole header map (as a `HeaderMap` argument would, on every
/// ingest). Never rejects: the handlers check the value where their
/// order of checks says (`ingest::validate::idempotency_key`).
pub struct IdempotencyHeader(pub Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyHeader {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get("idempotency-key").cloned()))
    }
}

/// The body as bytes, within `limits.max_body_bytes`.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, app)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(app.config().limits.max_body_bytes)
                } else {
                    ApiError::malformed_json(rejection.body_text())
                }
            })?;
        Ok(RawBody(bytes))
    }
}

/// Parses JSON, telling syntax errors (400) from shape errors (422).
/// Every body is an object: serde would otherwise read a struct from an
/// array by position and answer `[1,2]` with "expected a string".
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let starts_an_object = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    if !starts_an_object {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "the body must be a JSON object",
                ),
                Err(error) => {
                    ApiError::malformed_json(format!("request body is not valid JSON: {error}"))
                }
            },
        );
    }
    serde_json::from_slice(bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid("body", error),
        _ => ApiError::malformed_json(format!("request body is not valid JSON: {error}")),
    })
}

pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, app)
            .await
            .map(|query| ApiQuery(query.0))
            .map_err(|rejection: QueryRejection| ApiError::invalid("query", rejection.body_text()))
    }
}
