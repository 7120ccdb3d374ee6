//! The request body of a webhook, pure: `{type, timestamp, data, event_id,
//! resource, resource_id}` (Standard Webhooks).

use crate::model::{Event, format_timestamp_ms};
use serde::Serialize;
use serde_json::value::RawValue;

/// The body of a webhook delivery (Standard Webhooks); the API document
/// shows it as `WebhookPayload`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = WebhookPayload, example = json!({
    "type": "alert.triggered",
    "timestamp": "2026-04-17T16:02:00.123Z",
    "data": {"alert_id": "alrt_tyrion_42", "severity": "high", "resource": "api_latency_p95", "value": 1840, "threshold": 1000},
    "event_id": "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "resource": "alert",
    "resource_id": "alrt_tyrion_42"
}))]
pub struct Body<'a> {
    #[serde(rename = "type")]
    #[schema(value_type = crate::api::openapi_schemas::EventName)]
    kind: &'a str,
    /// When the event was received.
    #[schema(value_type = crate::api::openapi_schemas::Timestamp)]
    timestamp: String,
    /// The event's payload as sent.
    #[schema(value_type = Object)]
    data: &'a RawValue,
    #[schema(value_type = crate::model::EventId)]
    event_id: String,
    #[schema(required = true)]
    resource: Option<&'a str>,
    #[schema(required = true)]
    resource_id: Option<&'a str>,
    /// Present only when the rule's noise control held deliveries back
    /// since the previous one, so the body is otherwise unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed_since_last: Option<u32>,
}

/// The request body of an event; pure, so tests pin it. `suppressed` is
/// the delivery's `suppressed_before`.
pub fn render_body(event: &Event, suppressed: u32) -> Vec<u8> {
    // Payloads are validated JSON objects at ingest.
    let data = serde_json::from_slice::<&RawValue>(&event.payload).unwrap_or(RawValue::NULL);
    let body = Body {
        kind: event.name.as_str(),
        timestamp: format_timestamp_ms(event.received_at_ms),
        data,
        event_id: event.id.to_string(),
        resource: event.resource.as_deref(),
        resource_id: event.resource_id.as_deref(),
        suppressed_since_last: (suppressed > 0).then_some(suppressed),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventId, EventName, WorkspaceId};

    #[test]
    fn the_body_is_pinned() {
        let event = Event {
            id: "evt_01JQ0000000000000000000000".parse::<EventId>().unwrap(),
            workspace_id: WorkspaceId::new(),
            name: EventName::parse("alert.triggered").unwrap(),
            resource: Some("checkout-api".into()),
            resource_id: None,
            payload: br#"{"severity":"high","value":1875}"#.to_vec(),
            received_at_ms: 1_767_225_600_123,
        };
        assert_eq!(
            String::from_utf8(render_body(&event, 0)).unwrap(),
            r#"{"type":"alert.triggered","timestamp":"2026-01-01T00:00:00.123Z","data":{"severity":"high","value":1875},"event_id":"evt_01JQ0000000000000000000000","resource":"checkout-api","resource_id":null}"#
        );
        // After suppressed deliveries: one added field, the rest unchanged.
        assert_eq!(
            String::from_utf8(render_body(&event, 3)).unwrap(),
            r#"{"type":"alert.triggered","timestamp":"2026-01-01T00:00:00.123Z","data":{"severity":"high","value":1875},"event_id":"evt_01JQ0000000000000000000000","resource":"checkout-api","resource_id":null,"suppressed_since_last":3}"#
        );
    }
}
