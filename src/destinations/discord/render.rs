//! The Execute Webhook body for an event; pure, pinned by tests.
//!
//! One embed: `title` (the state of an alert's life, a severity marker and
//! the title), `description` (the headline), `color` by severity (green
//! once resolved), inline `fields` (Value, Threshold, Account, Time,
//! Severity, other fields), a `footer` naming the event and a `timestamp`
//! (when it was received). `allowed_mentions: {"parse": []}` so nothing in
//! the payload (`@everyone`, `<@id>`, `<@&role>`) pings anyone.
//!
//! Discord's embed limits hold for any payload: title ≤ 256 characters,
//! description ≤ 4096, ≤ 25 fields with names ≤ 256 and non-empty values
//! ≤ 1024, footer ≤ 2048, and 6000 over all of them (the facts are few and
//! each at most 200 characters, so the sum stays far below).

use crate::destinations::message::{self, AlertSummary, truncate};
use crate::model::{AlertState, Event, format_timestamp_ms};
use crate::rules::Severity;
use serde_json::{Value, json};

pub const TITLE_MAX: usize = 256;
pub const DESCRIPTION_MAX: usize = 4096;
pub const MAX_FIELDS: usize = 25;
pub const FIELD_NAME_MAX: usize = 256;
pub const FIELD_VALUE_MAX: usize = 1024;
pub const FOOTER_MAX: usize = 2048;

/// Embed colours (RGB as an integer, as Discord takes them).
pub const RESOLVED_COLOR: u32 = 0x2EB67D;

/// The request body for `event`.
pub fn render_message(event: &Event, summary: &AlertSummary) -> Value {
    let state = AlertState::of(&event.name);
    let fields: Vec<Value> = summary
        .facts()
        .into_iter()
        .take(MAX_FIELDS)
        .map(|(name, value)| {
            // Discord refuses an empty name or value.
            let value = if value.is_empty() {
                "—".into()
            } else {
                value
            };
            json!({
                "name": truncate(&name, FIELD_NAME_MAX),
                "value": truncate(&value, FIELD_VALUE_MAX),
                "inline": true,
            })
        })
        .collect();
    let mut embed = json!({
        "title": truncate(&title(summary, state), TITLE_MAX),
        "color": color(summary.severity, state),
        "fields": fields,
        "footer": {"text": truncate(&summary.context_line(), FOOTER_MAX)},
        "timestamp": format_timestamp_ms(event.received_at_ms),
    });
    if summary.is_alert() {
        embed["description"] = json!(truncate(&summary.headline(), DESCRIPTION_MAX));
    }
    json!({
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    })
}

/// `Resolved: 🟠 api_latency_p95` for alerts, `deploy.finished: web` for
/// other events.
fn title(summary: &AlertSummary, state: Option<AlertState>) -> String {
    let mut text = String::new();
    if let Some(state) = state {
        text.push_str(message::state_label(state));
        text.push_str(": ");
    }
    if summary.is_alert() {
        text.push_str(marker(summary.severity));
        text.push(' ');
        text.push_str(&summary.title);
    } else {
        text.push_str(&summary.headline());
    }
    text
}

fn marker(severity: Option<Severity>) -> &'static str {
    match severity {
        Some(Severity::Critical) => "🔴",
        Some(Severity::High) => "🟠",
        Some(Severity::Medium) => "🟡",
        Some(Severity::Low) => "🔵",
        Some(Severity::Info) => "⚪",
        None => "🔔",
    }
}

fn color(severity: Option<Severity>, state: Option<AlertState>) -> u32 {
    if state == Some(AlertState::Resolved) {
        return RESOLVED_COLOR;
    }
    match severity {
        Some(Severity::Critical) => 0xD0021B,
        Some(Severity::High) => 0xF5A623,
        Some(Severity::Medium) => 0xF8E71C,
        Some(Severity::Low) => 0x4A90E2,
        Some(Severity::Info) => 0x9B9B9B,
        None => 0x5865F2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventId, EventName, WorkspaceId};

    fn event(name: &str, payload: Value) -> Event {
        Event {
            id: "evt_01JQ0000000000000000000000".parse::<EventId>().unwrap(),
            workspace_id: WorkspaceId(1),
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
            json!({
                "alert_id": "alrt_tyrion_42", "account_id": "acc_casterly", "severity": "critical",
                "resource": "api_latency_p95", "value": 1840, "threshold": 1000,
                "triggered_at": "2026-04-17T16:02:00Z"
            }),
        )
    }

    fn rendered(event: &Event) -> Value {
        render_message(event, &AlertSummary::from_event(event))
    }

    #[test]
    fn the_alert_embed_is_pinned() {
        assert_eq!(
            rendered(&example("alert.triggered")).to_string(),
            concat!(
                r#"{"allowed_mentions":{"parse":[]},"embeds":[{"color":13632027,"#,
                r#""description":"[CRITICAL] api_latency_p95 is 1840 (threshold 1000)","#,
                r#""fields":[{"inline":true,"name":"Value","value":"1840"},{"inline":true,"name":"Threshold","value":"1000"},"#,
                r#"{"inline":true,"name":"Account","value":"acc_casterly"},{"inline":true,"name":"Time","value":"2026-04-17T16:02:00Z"},"#,
                r#"{"inline":true,"name":"Severity","value":"Critical"},{"inline":true,"name":"alert_id","value":"alrt_tyrion_42"}],"#,
                r#""footer":{"text":"evt_01JQ0000000000000000000000 · alert.triggered · alert alrt_tyrion_42"},"#,
                r#""timestamp":"2026-01-01T00:00:00.123Z","title":"Triggered: 🔴 api_latency_p95"}]}"#,
            )
        );
    }

    #[test]
    fn lifecycle_events_name_their_state() {
        let resolved = rendered(&example("alert.resolved"));
        assert_eq!(
            resolved["embeds"][0]["title"],
            "Resolved: 🔴 api_latency_p95"
        );
        assert_eq!(resolved["embeds"][0]["color"], RESOLVED_COLOR);
        let acknowledged = rendered(&example("alert.acknowledged"));
        assert_eq!(
            acknowledged["embeds"][0]["title"],
            "Acknowledged: 🔴 api_latency_p95"
        );
        assert_eq!(acknowledged["embeds"][0]["color"], 0xD0021B);
    }

    #[test]
    fn mentions_never_ping_and_limits_hold() {
        let hostile = event(
            "deploy.finished",
            json!({
                "note": "@everyone <@&123> look",
                "empty": "",
                "resource": "x".repeat(300),
            }),
        );
        let body = rendered(&hostile);
        assert_eq!(body["allowed_mentions"], json!({"parse": []}));
        let embed = &body["embeds"][0];
        let title = embed["title"].as_str().unwrap();
        assert!(title.chars().count() <= TITLE_MAX && title.ends_with('…'));
        assert!(embed.get("description").is_none());
        assert_eq!(embed["color"], 0x5865F2);
        let fields = embed["fields"].as_array().unwrap();
        assert!(fields.contains(&json!({"inline": true, "name": "empty", "value": "—"})));
        assert!(
            fields.contains(
                &json!({"inline": true, "name": "note", "value": "@everyone <@&123> look"})
            )
        );
    }
}
