//! Body and query extractors whose rejections speak the API's error format:
//! 413 over the body limit, 400 for malformed JSON, 422 for a well-formed
//! body with a missing or mistyped field.

use super::{ApiError, AppState};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &AppState) -> Result<Self, ApiError> {
        let RawBody(bytes) = RawBody::from_request(request, app).await?;
        parse_json(&bytes).map(JsonBody)
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
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
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
