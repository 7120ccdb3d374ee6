//! Turning request bodies into domain events, with errors that name the
//! offending field.

use crate::api::ApiError;
use crate::model::{Event, EventId, EventName, WorkspaceId, now_ms};
use axum::http::HeaderValue;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
const MAX_RESOURCE_CHARS: usize = 256;

/// One event as sent. `payload` stays raw: it is stored byte for byte.
/// Unknown fields are rejected (422).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EventInput, example = json!({
    "event": "alert.triggered",
    "resource": "alert",
    "resource_id": "alrt_tyrion_42",
    "payload": {"alert_id": "alrt_tyrion_42", "account_id": "acc_casterly", "severity": "high", "resource": "api_latency_p95", "value": 1840, "threshold": 1000, "triggered_at": "2026-04-17T16:02:00Z"}
}))]
pub struct EventBody {
    #[schema(value_type = crate::api::openapi_schemas::EventName)]
    pub(super) event: String,
    /// What the event is about, e.g. `alert`.
    #[serde(default)]
    #[schema(max_length = 256)]
    pub(super) resource: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256)]
    pub(super) resource_id: Option<String>,
    /// Any JSON object (default `{}`), stored byte for byte. `severity`,
    /// `resource`, `value` and `threshold` are used by rules and default
    /// messages.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(super) payload: Option<Box<RawValue>>,
}

/// Validates one event; `field` prefixes field names (`events[3].`).
pub fn validate_event(
    body: EventBody,
    workspace_id: WorkspaceId,
    field: &str,
) -> Result<Event, ApiError> {
    let name = EventName::parse(&body.event)
        .map_err(|problem| ApiError::invalid(&format!("{field}event"), problem))?;
    for (key, value) in [
        ("resource", &body.resource),
        ("resource_id", &body.resource_id),
    ] {
        if value
            .as_ref()
            .is_some_and(|text| text.chars().count() > MAX_RESOURCE_CHARS)
        {
            return Err(ApiError::invalid(
                &format!("{field}{key}"),
                format!("must be at most {MAX_RESOURCE_CHARS} characters"),
            ));
        }
    }
    let payload = match body.payload {
        None => b"{}".to_vec(),
        Some(raw) if raw.get().starts_with('{') => raw.get().as_bytes().to_vec(),
        Some(_) => {
            return Err(ApiError::invalid(
                &format!("{field}payload"),
                "must be a JSON object",
            ));
        }
    };
    Ok(Event {
        id: EventId::new(),
        workspace_id,
        name,
        resource: body.resource,
        resource_id: body.resource_id,
        payload,
        received_at_ms: now_ms(),
    })
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
pub fn idempotency_key(header: Option<&HeaderValue>) -> Result<Option<String>, ApiError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|key| {
            !key.is_empty()
                && key.len() <= MAX_IDEMPOTENCY_KEY_LEN
                && key.bytes().all(|b| b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::invalid(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_string()))
}
