//! What an alert says, independent of where it goes: the summary that the
//! Slack and email layouts render, and per-rule templates (minijinja).

use crate::model::{AlertState, Delivery, Event, format_timestamp_ms};
use crate::rules::Severity;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};

/// The essentials of an event, read from its payload where present:
/// `resource`, `severity`, `value`, `threshold`, `account_id`,
/// `triggered_at`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertSummary {
    /// The payload's `resource`, else the event's `resource`, else its name.
    pub title: String,
    pub event_name: String,
    pub event_id: String,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    pub severity: Option<Severity>,
    pub value: Option<String>,
    pub threshold: Option<String>,
    pub account: Option<String>,
    /// The payload's `triggered_at`, else when the event was received.
    pub time: String,
    /// Other top-level scalar payload fields, in key order (at most
    /// [`MAX_EXTRA_FIELDS`]), for generic layouts.
    pub extra: Vec<(String, String)>,
    /// Deliveries of the rule suppressed by its noise control since the
    /// previous message (the delivery's `suppressed_before`).
    pub suppressed_before: u32,
}

pub const MAX_EXTRA_FIELDS: usize = 8;
const MAX_FIELD_CHARS: usize = 200;
const KNOWN_FIELDS: &[&str] = &[
    "resource",
    "severity",
    "value",
    "threshold",
    "account_id",
    "triggered_at",
];

impl AlertSummary {
    pub fn from_event(event: &Event) -> Self {
        let payload: Map<String, Value> =
            serde_json::from_slice(&event.payload).unwrap_or_default();
        let text = |key: &str| payload.get(key).and_then(scalar_text);
        let title = text("resource")
            .or_else(|| event.resource.clone())
            .unwrap_or_else(|| event.name.as_str().to_string());
        let extra = payload
            .iter()
            .filter(|(key, _)| !KNOWN_FIELDS.contains(&key.as_str()))
            .filter_map(|(key, value)| Some((key.clone(), scalar_text(value)?)))
            .take(MAX_EXTRA_FIELDS)
            .collect();
        Self {
            title,
            event_name: event.name.as_str().to_string(),
            event_id: event.id.to_string(),
            resource: event.resource.clone(),
            resource_id: event.resource_id.clone(),
            severity: payload
                .get("severity")
                .and_then(Value::as_str)
                .and_then(Severity::parse),
            value: text("value"),
            threshold: text("threshold"),
            account: text("account_id"),
            time: text("triggered_at").unwrap_or_else(|| format_timestamp_ms(event.received_at_ms)),
            extra,
            suppressed_before: 0,
        }
    }

    /// The summary of a delivery's event, with how many its rule held back
    /// before it.
    pub fn of_delivery(event: &Event, delivery: &Delivery) -> Self {
        Self {
            suppressed_before: delivery.suppressed_before,
            ..Self::from_event(event)
        }
    }

    /// `3 more were suppressed since the last message`, when any were.
    pub fn suppressed_note(&self) -> Option<String> {
        match self.suppressed_before {
            0 => None,
            1 => Some("1 more was suppressed by this rule since the last message".into()),
            count => Some(format!(
                "{count} more were suppressed by this rule since the last message"
            )),
        }
    }

    /// One line naming what fired: `[HIGH] api_latency_p95 is 1840
    /// (threshold 1000)`; for other events `deploy.finished: web`.
    pub fn headline(&self) -> String {
        let mut line = String::new();
        if let Some(severity) = self.severity {
            line.push_str(&format!("[{}] ", severity.as_str().to_uppercase()));
        }
        match (&self.value, &self.threshold) {
            (Some(value), Some(threshold)) => {
                line.push_str(&format!(
                    "{} is {value} (threshold {threshold})",
                    self.title
                ));
            }
            (Some(value), None) => line.push_str(&format!("{} is {value}", self.title)),
            _ if self.title != self.event_name => {
                line.push_str(&format!("{}: {}", self.event_name, self.title));
            }
            _ => line.push_str(&self.event_name),
        }
        line
    }

    /// The labelled facts a card or embed lists, in the Slack layout's
    /// order: Value (alerts only), Threshold, Account, Time, Severity, then
    /// the payload's other scalar fields. Values are the tenant's text,
    /// unescaped.
    pub fn facts(&self) -> Vec<(String, String)> {
        let mut facts = Vec::new();
        let mut push = |label: &str, value: &Option<String>| {
            if let Some(value) = value {
                facts.push((label.to_string(), value.clone()));
            }
        };
        if self.is_alert() {
            push("Value", &self.value);
        }
        push("Threshold", &self.threshold);
        push("Account", &self.account);
        push("Time", &Some(self.time.clone()));
        if self.is_alert()
            && let Some(severity) = self.severity
        {
            let name = severity.as_str();
            let label = name[..1].to_uppercase() + &name[1..];
            facts.push(("Severity".into(), label));
        }
        facts.extend(self.extra.iter().cloned());
        facts
    }

    /// `evt_… · alert.triggered · alert alrt_tyrion_42`: which event this
    /// is, for a footer or context line.
    pub fn context_line(&self) -> String {
        let mut parts = vec![self.event_id.clone(), self.event_name.clone()];
        let resource: Vec<&str> = [&self.resource, &self.resource_id]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if !resource.is_empty() {
            parts.push(resource.join(" "));
        }
        parts.join(" · ")
    }

    /// Whether the payload looks like a metric alert (a value or a
    /// severity), which gets the alert layout rather than the generic one.
    pub fn is_alert(&self) -> bool {
        self.value.is_some() || self.severity.is_some()
    }
}

/// How a message names an alert's state (`Resolved: …`), for events that
/// are part of an alert's life.
pub fn state_label(state: AlertState) -> &'static str {
    match state {
        AlertState::Triggered => "Triggered",
        AlertState::Acknowledged => "Acknowledged",
        AlertState::Resolved => "Resolved",
    }
}

/// A scalar payload value as text (strings as is, numbers and booleans
/// printed), truncated; objects, arrays and null give `None`.
fn scalar_text(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        _ => return None,
    };
    Some(truncate(&text, MAX_FIELD_CHARS))
}

/// At most `max` characters, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Escaping applied to values a template prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Plain text (email text bodies and subjects).
    None,
    /// HTML (email HTML bodies).
    Html,
}

/// Instructions one template render may execute.
const TEMPLATE_FUEL: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
#[error("template error: {0}")]
pub struct TemplateError(String);

/// The variables a per-rule template sees: `event` (`id`, `name`,
/// `resource`, `resource_id`, `received_at`), `payload` (the event's JSON
/// object) and `alert` (the [`AlertSummary`] plus `headline`).
pub fn template_context(event: &Event, summary: &AlertSummary) -> Value {
    let payload: Value = serde_json::from_slice(&event.payload).unwrap_or(Value::Null);
    let mut alert = serde_json::to_value(summary).unwrap_or(Value::Null);
    alert["headline"] = Value::String(summary.headline());
    serde_json::json!({
        "event": {
            "id": event.id.to_string(),
            "name": event.name.as_str(),
            "resource": event.resource,
            "resource_id": event.resource_id,
            "received_at": format_timestamp_ms(event.received_at_ms),
        },
        "payload": payload,
        "alert": alert,
    })
}

/// Renders one template source. Undefined variables print as empty (a
/// payload field that is sometimes absent must not fail the delivery);
/// syntax errors are reported (rules validate templates when saved).
pub fn render(source: &str, escape: Escape, context: &Value) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    // Templates are tenant input: bound the work one render may do.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_auto_escape_callback(move |_| match escape {
        Escape::None => AutoEscape::None,
        Escape::Html => AutoEscape::Html,
    });
    env.render_str(source, minijinja::value::Serde(context))
        .map_err(|error| TemplateError(error.to_string()))
}

/// Checks that a template compiles, for validation when a rule is saved.
pub fn check(source: &str) -> Result<(), TemplateError> {
    let env = Environment::new();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|error| TemplateError(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventId, EventName, WorkspaceId};

    fn event(payload: Value) -> Event {
        Event {
            id: EventId(1),
            workspace_id: WorkspaceId(1),
            name: EventName::parse("alert.triggered").unwrap(),
            resource: Some("alert".into()),
            resource_id: Some("alrt_tyrion_42".into()),
            payload: serde_json::to_vec(&payload).unwrap(),
            received_at_ms: 0,
        }
    }

    fn example() -> Event {
        event(serde_json::json!({
            "alert_id": "alrt_tyrion_42", "account_id": "acc_casterly", "severity": "high",
            "resource": "api_latency_p95", "value": 1840, "threshold": 1000,
            "triggered_at": "2026-04-17T16:02:00Z"
        }))
    }

    #[test]
    fn the_example_alert_summarises() {
        let summary = AlertSummary::from_event(&example());
        assert_eq!(summary.title, "api_latency_p95");
        assert_eq!(summary.severity, Some(Severity::High));
        assert_eq!(summary.value.as_deref(), Some("1840"));
        assert_eq!(summary.threshold.as_deref(), Some("1000"));
        assert_eq!(summary.account.as_deref(), Some("acc_casterly"));
        assert_eq!(summary.time, "2026-04-17T16:02:00Z");
        assert_eq!(
            summary.extra,
            vec![("alert_id".into(), "alrt_tyrion_42".into())]
        );
        assert_eq!(
            summary.headline(),
            "[HIGH] api_latency_p95 is 1840 (threshold 1000)"
        );
        assert!(summary.is_alert());
    }

    #[test]
    fn other_events_get_a_plain_headline() {
        let deploy = Event {
            name: EventName::parse("deploy.finished").unwrap(),
            resource: Some("web".into()),
            ..event(serde_json::json!({"version": "1.2", "nested": {"x": 1}}))
        };
        let summary = AlertSummary::from_event(&deploy);
        assert_eq!(summary.headline(), "deploy.finished: web");
        assert!(!summary.is_alert());
        assert_eq!(summary.extra, vec![("version".into(), "1.2".into())]);
        let bare = Event {
            resource: None,
            ..event(serde_json::json!({}))
        };
        assert_eq!(
            AlertSummary::from_event(&bare).headline(),
            "alert.triggered"
        );
    }

    #[test]
    fn templates_render_with_escaping_and_lenient_undefined() {
        let summary = AlertSummary::from_event(&example());
        let context = template_context(&example(), &summary);
        let text = render(
            "{{ alert.title }} hit {{ payload.value }}{{ payload.missing }}",
            Escape::None,
            &context,
        )
        .unwrap();
        assert_eq!(text, "api_latency_p95 hit 1840");
        let hostile = event(serde_json::json!({"resource": "<script>x</script>"}));
        let context = template_context(&hostile, &AlertSummary::from_event(&hostile));
        assert_eq!(
            render("<b>{{ alert.title }}</b>", Escape::Html, &context).unwrap(),
            "<b>&lt;script&gt;x&lt;&#x2f;script&gt;</b>"
        );
        assert!(check("{% if %}").is_err());
        assert!(check("{{ alert.headline }}").is_ok());
    }

    #[test]
    fn long_values_are_truncated() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
