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
///
/// The payload goes in as stored, not parsed again: ingest stores the exact
/// text of the JSON object it parsed (`validate_event`), and parsing it once
/// more per delivery cost about a third of rendering a small body, growing
/// with the payload (docs/benchmarks.md, issue 13). The bytes are those
/// that serializing [`Body`] gives; a test holds the two together. A
/// payload that is not an object's text (ingest never stores one) takes
/// that path and is sent as `null`, as it always was.
pub fn render_body(event: &Event, suppressed: u32) -> Vec<u8> {
    if event.payload.first() == Some(&b'{')
        && let Ok(body) = splice_body(event, suppressed)
    {
        return body;
    }
    serialize_body(event, suppressed)
}

/// `render_body` with the stored payload copied in; strings are escaped by
/// serde_json, as in [`serialize_body`].
fn splice_body(event: &Event, suppressed: u32) -> serde_json::Result<Vec<u8>> {
    // The fixed keys, a timestamp and an event id come to under 200 bytes.
    let strings = event.name.as_str().len()
        + event.resource.as_deref().map_or(0, str::len)
        + event.resource_id.as_deref().map_or(0, str::len);
    let mut out = Vec::with_capacity(200 + strings + event.payload.len());
    out.extend_from_slice(br#"{"type":"#);
    serde_json::to_writer(&mut out, event.name.as_str())?;
    out.extend_from_slice(br#","timestamp":"#);
    serde_json::to_writer(&mut out, &format_timestamp_ms(event.received_at_ms))?;
    out.extend_from_slice(br#","data":"#);
    out.extend_from_slice(&event.payload);
    out.extend_from_slice(br#","event_id":"#);
    serde_json::to_writer(&mut out, event.id.encode().as_str())?;
    out.extend_from_slice(br#","resource":"#);
    serde_json::to_writer(&mut out, &event.resource)?;
    out.extend_from_slice(br#","resource_id":"#);
    serde_json::to_writer(&mut out, &event.resource_id)?;
    if suppressed > 0 {
        out.extend_from_slice(br#","suppressed_since_last":"#);
        serde_json::to_writer(&mut out, &suppressed)?;
    }
    out.push(b'}');
    Ok(out)
}

/// The body serialized from [`Body`], the payload parsed to find its text.
fn serialize_body(event: &Event, suppressed: u32) -> Vec<u8> {
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
    use proptest::prelude::*;
    use serde_json::{Map, Value};

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

    /// JSON values as a publisher might send them: any strings (escapes,
    /// control characters, other scripts), numbers, nesting.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |x| x.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// A payload as ingest stores it: the text of an object, compact or
    /// with the whitespace a publisher's pretty printer puts inside.
    fn stored_payload() -> impl Strategy<Value = Vec<u8>> {
        (
            prop::collection::btree_map(any::<String>(), json_value(), 0..5),
            any::<bool>(),
        )
            .prop_map(|(fields, pretty)| {
                let object = Value::Object(fields.into_iter().collect::<Map<_, _>>());
                let text = if pretty {
                    serde_json::to_string_pretty(&object)
                } else {
                    serde_json::to_string(&object)
                };
                text.unwrap().into_bytes()
            })
    }

    proptest! {
        /// The stored payload copied in gives the very bytes that
        /// serializing `Body` gives (the signature covers them).
        #[test]
        fn the_spliced_body_is_the_serialized_body(
            name in "[A-Za-z0-9_.:-]{1,64}",
            resource in proptest::option::of(any::<String>()),
            resource_id in proptest::option::of(any::<String>()),
            payload in stored_payload(),
            received_at_ms in 0u64..4_102_444_800_000,
            suppressed in prop_oneof![Just(0u32), any::<u32>()],
        ) {
            let event = Event {
                id: EventId::new(),
                workspace_id: WorkspaceId::new(),
                name: EventName::parse(&name).unwrap(),
                resource,
                resource_id,
                payload,
                received_at_ms,
            };
            let spliced = render_body(&event, suppressed);
            prop_assert_eq!(&spliced, &serialize_body(&event, suppressed));
            prop_assert!(serde_json::from_slice::<Value>(&spliced).is_ok());
        }
    }

    /// Ingest stores none of these; they take the parsing path, and what
    /// does not parse goes out as `null`, as before.
    #[test]
    fn a_payload_that_is_no_object_text_is_parsed_as_before() {
        for payload in [&b""[..], b"[1,2]", b"not json", b" {}"] {
            let event = Event {
                id: EventId::new(),
                workspace_id: WorkspaceId::new(),
                name: EventName::parse("alert.triggered").unwrap(),
                resource: None,
                resource_id: None,
                payload: payload.to_vec(),
                received_at_ms: 0,
            };
            let rendered = render_body(&event, 0);
            assert_eq!(rendered, serialize_body(&event, 0), "{payload:?}");
            let body: Value = serde_json::from_slice(&rendered).unwrap();
            let parsed = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
            assert_eq!(body["data"], parsed, "{payload:?}");
        }
    }
}
