//! The Workflows request body for an event; pure, pinned by tests.
//!
//! A Teams Workflows flow ("post to a channel when a webhook request is
//! received") takes a message activity with Adaptive Card attachments:
//! `{"type":"message","attachments":[{"contentType":
//! "application/vnd.microsoft.card.adaptive","contentUrl":null,"content":
//! {AdaptiveCard}}]}`; a body without `attachments` fails inside the flow.
//! Workflows render Adaptive Cards only (no legacy MessageCard), and a card
//! posted by the flow bot mentions no one unless it carries `msteams`
//! mention entities, which this never writes.
//!
//! The card holds the Slack layout's facts: a heading (the state of an
//! alert's life, a severity marker and the title), the headline, a
//! `FactSet` (Value, Threshold, Account, Time, Severity, other fields) and
//! a subtle context line naming the event.

use crate::destinations::message::{self, AlertSummary, truncate};
use crate::model::{AlertState, Event};
use crate::rules::Severity;
use serde_json::{Value, json};

pub const CARD_CONTENT_TYPE: &str = "application/vnd.microsoft.card.adaptive";
/// Adaptive Card 1.4: what Teams renders everywhere today.
pub const CARD_VERSION: &str = "1.4";
const HEADING_MAX: usize = 200;
const TEXT_MAX: usize = 2000;

/// The request body for `event`.
pub fn render_message(event: &Event, summary: &AlertSummary) -> Value {
    let state = AlertState::of(&event.name);
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": truncate(&heading(summary, state), HEADING_MAX),
        "size": "Medium",
        "weight": "Bolder",
        "color": color(summary.severity, state),
        "wrap": true,
    })];
    if summary.is_alert() {
        body.push(json!({
            "type": "TextBlock",
            "text": truncate(&summary.headline(), TEXT_MAX),
            "wrap": true,
        }));
    }
    let facts: Vec<Value> = summary
        .facts()
        .into_iter()
        .map(|(title, value)| json!({"title": title, "value": value}))
        .collect();
    body.push(json!({"type": "FactSet", "facts": facts}));
    body.push(json!({
        "type": "TextBlock",
        "text": truncate(&summary.context_line(), TEXT_MAX),
        "size": "Small",
        "isSubtle": true,
        "wrap": true,
    }));
    json!({
        "type": "message",
        "attachments": [{
            "contentType": CARD_CONTENT_TYPE,
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": CARD_VERSION,
                "body": body,
                "msteams": {"width": "Full"},
            },
        }],
    })
}

/// `Resolved: 🟠 api_latency_p95` for alerts, `deploy.finished: web` for
/// other events.
fn heading(summary: &AlertSummary, state: Option<AlertState>) -> String {
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

/// The heading's colour: green once resolved, else by severity.
fn color(severity: Option<Severity>, state: Option<AlertState>) -> &'static str {
    if state == Some(AlertState::Resolved) {
        return "Good";
    }
    match severity {
        Some(Severity::Critical | Severity::High) => "Attention",
        Some(Severity::Medium) => "Warning",
        _ => "Default",
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
                "alert_id": "alrt_tyrion_42", "account_id": "acc_casterly", "severity": "high",
                "resource": "api_latency_p95", "value": 1840, "threshold": 1000,
                "triggered_at": "2026-04-17T16:02:00Z"
            }),
        )
    }

    fn rendered(event: &Event) -> Value {
        render_message(event, &AlertSummary::from_event(event))
    }

    #[test]
    fn the_alert_card_is_pinned() {
        assert_eq!(
            rendered(&example("alert.triggered")).to_string(),
            concat!(
                r#"{"attachments":[{"content":{"$schema":"http://adaptivecards.io/schemas/adaptive-card.json","#,
                r#""body":[{"color":"Attention","size":"Medium","text":"Triggered: 🟠 api_latency_p95","type":"TextBlock","weight":"Bolder","wrap":true},"#,
                r#"{"text":"[HIGH] api_latency_p95 is 1840 (threshold 1000)","type":"TextBlock","wrap":true},"#,
                r#"{"facts":[{"title":"Value","value":"1840"},{"title":"Threshold","value":"1000"},{"title":"Account","value":"acc_casterly"},"#,
                r#"{"title":"Time","value":"2026-04-17T16:02:00Z"},{"title":"Severity","value":"High"},{"title":"alert_id","value":"alrt_tyrion_42"}],"type":"FactSet"},"#,
                r#"{"isSubtle":true,"size":"Small","text":"evt_01JQ0000000000000000000000 · alert.triggered · alert alrt_tyrion_42","type":"TextBlock","wrap":true}],"#,
                r#""msteams":{"width":"Full"},"type":"AdaptiveCard","version":"1.4"},"#,
                r#""contentType":"application/vnd.microsoft.card.adaptive","contentUrl":null}],"type":"message"}"#,
            )
        );
    }

    #[test]
    fn lifecycle_events_name_their_state() {
        let resolved = rendered(&example("alert.resolved"));
        let heading = &resolved["attachments"][0]["content"]["body"][0];
        assert_eq!(heading["text"], "Resolved: 🟠 api_latency_p95");
        assert_eq!(heading["color"], "Good");
        let acknowledged = rendered(&example("alert.acknowledged"));
        assert_eq!(
            acknowledged["attachments"][0]["content"]["body"][0]["text"],
            "Acknowledged: 🟠 api_latency_p95"
        );
    }

    #[test]
    fn other_events_get_the_headline_and_no_state() {
        let deploy = Event {
            resource: Some("web".into()),
            resource_id: None,
            ..event(
                "deploy.finished",
                json!({"version": "1.2", "nested": {"x": 1}}),
            )
        };
        let card = rendered(&deploy);
        let body = card["attachments"][0]["content"]["body"]
            .as_array()
            .unwrap();
        assert_eq!(body[0]["text"], "deploy.finished: web");
        assert_eq!(body[0]["color"], "Default");
        assert_eq!(body[1]["type"], "FactSet");
        assert_eq!(
            body[1]["facts"],
            json!([
                {"title": "Time", "value": "2026-01-01T00:00:00.123Z"},
                {"title": "version", "value": "1.2"}
            ])
        );
    }
}
