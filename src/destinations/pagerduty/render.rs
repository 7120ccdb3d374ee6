//! The Events API v2 body of an event, pure.
//!
//! `alert.acknowledged` and `alert.resolved` become `acknowledge` and
//! `resolve` (only `routing_key`, `event_action` and `dedup_key`, as the API
//! takes them); anything else is a `trigger` with a `payload`. The
//! `dedup_key` is the workspace plus the event's alert key, so every event
//! of one alert's life reaches the same PagerDuty alert.
//!
//! Severity, from the payload's `severity`:
//!
//! | event            | PagerDuty  |
//! | ---------------- | ---------- |
//! | `critical`       | `critical` |
//! | `high`           | `error`    |
//! | `medium`, `low`  | `warning`  |
//! | `info`, none     | `info`     |

use crate::destinations::message::{AlertSummary, truncate};
use crate::model::{AlertState, Event, format_timestamp_ms};
use crate::rules::Severity;
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// PagerDuty's limits on these fields, in characters.
const MAX_DEDUP_KEY: usize = 255;
const MAX_SUMMARY: usize = 1024;
const MAX_SOURCE: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventAction {
    Trigger,
    Acknowledge,
    Resolve,
}

impl EventAction {
    pub fn of(event: &Event) -> Self {
        match AlertState::of(&event.name) {
            Some(AlertState::Acknowledged) => Self::Acknowledge,
            Some(AlertState::Resolved) => Self::Resolve,
            Some(AlertState::Triggered) | None => Self::Trigger,
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    routing_key: &'a str,
    event_action: EventAction,
    dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Payload<'a>>,
}

#[derive(Serialize)]
struct Payload<'a> {
    summary: String,
    source: String,
    severity: &'static str,
    timestamp: String,
    custom_details: &'a RawValue,
}

/// The request body of an event for the integration `routing_key`.
pub fn render_body(event: &Event, routing_key: &str) -> Vec<u8> {
    let event_action = EventAction::of(event);
    let payload = (event_action == EventAction::Trigger).then(|| {
        let summary = AlertSummary::from_event(event);
        Payload {
            summary: truncate(&summary.headline(), MAX_SUMMARY),
            source: truncate(&summary.title, MAX_SOURCE),
            severity: severity(summary.severity),
            timestamp: timestamp(event),
            // Payloads are validated JSON objects at ingest.
            custom_details: serde_json::from_slice::<&RawValue>(&event.payload)
                .unwrap_or(RawValue::NULL),
        }
    });
    let body = Body {
        routing_key,
        event_action,
        dedup_key: dedup_key(event),
        payload,
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `{workspace}:{alert key}`, stable across the alert's life; an event that
/// names no alert is its own (`{workspace}:{event id}`). A key past
/// PagerDuty's 255 characters is replaced by its SHA-256.
pub fn dedup_key(event: &Event) -> String {
    let alert = event.alert_key().unwrap_or_else(|| event.id.to_string());
    let key = format!("{}:{alert}", event.workspace_id);
    if key.chars().count() <= MAX_DEDUP_KEY {
        return key;
    }
    let digest: String = Sha256::digest(alert.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{}:sha256:{digest}", event.workspace_id)
}

/// PagerDuty's four severities from the event's five (table above).
pub fn severity(severity: Option<Severity>) -> &'static str {
    match severity {
        Some(Severity::Critical) => "critical",
        Some(Severity::High) => "error",
        Some(Severity::Medium | Severity::Low) => "warning",
        Some(Severity::Info) | None => "info",
    }
}

/// The payload's `triggered_at` when it is an RFC 3339 time, else when the
/// event was received.
fn timestamp(event: &Event) -> String {
    #[derive(serde::Deserialize)]
    struct TriggeredAt {
        triggered_at: String,
    }
    serde_json::from_slice::<TriggeredAt>(&event.payload)
        .ok()
        .filter(|found| humantime::parse_rfc3339_weak(&found.triggered_at).is_ok())
        .map(|found| found.triggered_at)
        .unwrap_or_else(|| format_timestamp_ms(event.received_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventId, EventName};
    use serde_json::{Value, json};

    const KEY: &str = "e93facc04764012d7bfb002500d5d1a6";

    fn event(name: &str, payload: Value) -> Event {
        Event {
            id: "evt_01JQ0000000000000000000000".parse::<EventId>().unwrap(),
            workspace_id: "ws_01JQ0000000000000000000001".parse().unwrap(),
            name: EventName::parse(name).unwrap(),
            resource: Some("alert".into()),
            resource_id: Some("alrt_tyrion_42".into()),
            payload: serde_json::to_vec(&payload).unwrap(),
            received_at_ms: 1_767_225_600_123,
        }
    }

    fn example(name: &str) -> Event {
        event(
            name,
            json!({"severity": "high", "resource": "api_latency_p95", "value": 1840,
                   "threshold": 1000, "triggered_at": "2026-04-17T16:02:00Z"}),
        )
    }

    #[test]
    fn a_trigger_is_pinned() {
        assert_eq!(
            String::from_utf8(render_body(&example("alert.triggered"), KEY)).unwrap(),
            r#"{"routing_key":"e93facc04764012d7bfb002500d5d1a6","event_action":"trigger","dedup_key":"ws_01JQ0000000000000000000001:5:alert:alrt_tyrion_42","payload":{"summary":"[HIGH] api_latency_p95 is 1840 (threshold 1000)","source":"api_latency_p95","severity":"error","timestamp":"2026-04-17T16:02:00Z","custom_details":{"resource":"api_latency_p95","severity":"high","threshold":1000,"triggered_at":"2026-04-17T16:02:00Z","value":1840}}}"#
        );
    }

    #[test]
    fn acknowledge_and_resolve_carry_only_the_action_and_the_same_key() {
        for (name, action) in [
            ("alert.acknowledged", "acknowledge"),
            ("alert.resolved", "resolve"),
        ] {
            let body: Value = serde_json::from_slice(&render_body(&example(name), KEY)).unwrap();
            assert_eq!(
                body,
                json!({"routing_key": KEY, "event_action": action,
                       "dedup_key": "ws_01JQ0000000000000000000001:5:alert:alrt_tyrion_42"})
            );
        }
    }

    #[test]
    fn other_events_trigger_with_their_own_key_and_received_time() {
        let deploy = Event {
            resource: None,
            resource_id: None,
            ..event("deploy.finished", json!({"triggered_at": "yesterday"}))
        };
        let body: Value = serde_json::from_slice(&render_body(&deploy, KEY)).unwrap();
        assert_eq!(body["event_action"], "trigger");
        assert_eq!(
            body["dedup_key"],
            "ws_01JQ0000000000000000000001:evt_01JQ0000000000000000000000"
        );
        assert_eq!(body["payload"]["source"], "deploy.finished");
        assert_eq!(body["payload"]["severity"], "info");
        assert_eq!(body["payload"]["timestamp"], "2026-01-01T00:00:00.123Z");
    }

    #[test]
    fn severities_map_onto_pagerduty_s_four() {
        let table = [
            (Some(Severity::Critical), "critical"),
            (Some(Severity::High), "error"),
            (Some(Severity::Medium), "warning"),
            (Some(Severity::Low), "warning"),
            (Some(Severity::Info), "info"),
            (None, "info"),
        ];
        for (from, to) in table {
            assert_eq!(severity(from), to, "{from:?}");
        }
    }

    #[test]
    fn long_alert_keys_are_hashed_within_the_limit() {
        let long = Event {
            resource_id: Some("x".repeat(400)),
            ..example("alert.triggered")
        };
        let key = dedup_key(&long);
        assert!(key.len() <= MAX_DEDUP_KEY, "{key}");
        assert!(key.starts_with("ws_01JQ0000000000000000000001:sha256:"));
        assert_eq!(key, dedup_key(&long), "stable");
        let other = Event {
            resource_id: Some("y".repeat(400)),
            ..long.clone()
        };
        assert_ne!(dedup_key(&other), key);
    }
}
