//! The `chat.postMessage` body for an event; pure, pinned by tests.
//!
//! # Layouts
//!
//! - **Alerts** ([`AlertSummary::is_alert`]): a `header` with a severity
//!   marker (🔴 critical, 🟠 high, 🟡 medium, 🔵 low, ⚪ info, 🔔 none) and
//!   the title; a `section` of `fields` (Value, Threshold, Account, Time,
//!   Severity, then the payload's other scalar fields); a `context` with the
//!   event name, resource and ids.
//! - **Other events**: a `header` with the headline (`deploy.finished:
//!   web`), a `section` of the scalar fields, the same `context`.
//! - The fallback `text` (notifications, clients without blocks) carries the
//!   headline, the account and the time on one line.
//! - `alert.acknowledged` and `alert.resolved` name the state first
//!   (`✅ Resolved: api_latency_p95`, fallback `Resolved: …`); they reply in
//!   the alert's thread and [`render_update`] rewrites its first message to
//!   show the state and when it changed.
//!
//! # Escaping
//!
//! Slack reads `<…>` in `text` and `mrkdwn` as links, mentions and commands
//! (`<!channel>`, `<https://evil|bank>`), so `&`, `<`, `>` in every
//! tenant-provided string placed there become `&amp;`, `&lt;`, `&gt;`
//! ([`escape`]). `mrkdwn` objects also set `verbatim: true`, so a bare
//! `@channel` or `#channel` is not parsed either. `plain_text` (the header)
//! is never parsed for links or mentions and is left as is.
//!
//! # Per-rule templates
//!
//! `rule.template.text` is a minijinja template (see
//! [`message::template_context`] for its variables). It replaces both the
//! fallback `text` and the blocks, which become one `mrkdwn` section.
//! **Values are escaped before rendering**: every string in the context
//! (keys included) goes through [`escape`], then the template renders
//! without further escaping. So payload data cannot ping or link, while the
//! template's own text may use Slack syntax on purpose (`<!here>`,
//! `<https://runbook|Runbook>`, `*bold*`); a template comparing or measuring
//! strings sees them escaped (`a &amp; b`). A template that renders to
//! nothing falls back to the default layout. `template.blocks` (raw Block
//! Kit) is **not supported**; other template keys (email's `subject`,
//! `html`) are ignored here.
//!
//! # Limits
//!
//! Block Kit's limits hold for any payload: header ≤ 150 characters, section
//! text ≤ 3000, ≤ 10 fields of ≤ 2000, ≤ 50 blocks; context text and the
//! fallback text are kept under [`CONTEXT_TEXT_MAX`] and
//! [`FALLBACK_TEXT_MAX`]. Lengths are counted in UTF-16 units (as Slack
//! counts), cut text ends in `…`, and a cut never splits an escape.

use crate::destinations::message::{self, AlertSummary, Escape, TemplateError};
use crate::model::{AlertState, Event, format_timestamp_ms};
use crate::rules::Severity;
use serde_json::{Map, Value, json};
use std::time::UNIX_EPOCH;

pub const HEADER_MAX: usize = 150;
pub const SECTION_TEXT_MAX: usize = 3000;
pub const MAX_FIELDS: usize = 10;
pub const FIELD_MAX: usize = 2000;
pub const MAX_BLOCKS: usize = 50;
pub const CONTEXT_TEXT_MAX: usize = 2000;
pub const FALLBACK_TEXT_MAX: usize = 3000;

/// Slack's escaping: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// The `chat.postMessage` body for `event` posted to `channel`, with the
/// rule's `template` when it has a `text`. Fails only when that template
/// does.
pub fn render_message(
    event: &Event,
    summary: &AlertSummary,
    channel: &str,
    template: Option<&Value>,
) -> Result<Value, TemplateError> {
    let source = template
        .and_then(|template| template.get("text"))
        .and_then(Value::as_str);
    if let Some(source) = source {
        let context = escape_strings(message::template_context(event, summary));
        let rendered = message::render(source, Escape::None, &context)?;
        let rendered = rendered.trim();
        if !rendered.is_empty() {
            let text = fit(rendered, SECTION_TEXT_MAX, true);
            let blocks = vec![json!({"type": "section", "text": mrkdwn(&text)})];
            return Ok(body(channel, text, blocks));
        }
    }
    let mut blocks = if summary.is_alert() {
        alert_blocks(summary)
    } else {
        generic_blocks(summary)
    };
    let mut text = fallback_text(summary);
    if let Some(state) = later_state(event) {
        blocks[0] = header_block(&state_heading(state, summary));
        text = fit(
            &format!("{}: {text}", message::state_label(state)),
            FALLBACK_TEXT_MAX,
            true,
        );
    }
    if let Some(note) = summary.suppressed_note() {
        // First, so `body`'s cap on blocks never cuts it.
        blocks.insert(
            0,
            json!({"type": "context", "elements": [mrkdwn(&escape(&note))]}),
        );
    }
    Ok(body(channel, text, blocks))
}

/// The `chat.update` body that rewrites an alert's first message (`ts` in
/// `channel`) once `event` acknowledged or resolved it: a heading with the
/// state, when it changed, then the alert's fields as this event has them.
/// `None` for events that change no alert's state.
pub fn render_update(
    event: &Event,
    summary: &AlertSummary,
    channel: &str,
    ts: &str,
) -> Option<Value> {
    let state = later_state(event)?;
    let label = message::state_label(state);
    let at = format_timestamp_ms(event.received_at_ms);
    let mut blocks = vec![
        header_block(&state_heading(state, summary)),
        json!({"type": "section", "text": mrkdwn(&format!("*{label}* {}", time_mrkdwn(&at)))}),
    ];
    let mut facts = if summary.is_alert() {
        alert_blocks(summary)
    } else {
        generic_blocks(summary)
    };
    blocks.extend(facts.drain(1..));
    blocks.truncate(MAX_BLOCKS);
    let text = fit(
        &format!("{label}: {}", fallback_text(summary)),
        FALLBACK_TEXT_MAX,
        true,
    );
    Some(json!({"channel": channel, "ts": ts, "text": text, "blocks": blocks}))
}

/// The state a later message of an alert names; `None` for its first
/// message (`alert.triggered`) and for other events.
pub fn later_state(event: &Event) -> Option<AlertState> {
    AlertState::of(&event.name).filter(|state| *state != AlertState::Triggered)
}

/// `✅ Resolved: api_latency_p95`.
fn state_heading(state: AlertState, summary: &AlertSummary) -> String {
    let marker = match state {
        AlertState::Resolved => "✅",
        AlertState::Acknowledged => "👀",
        AlertState::Triggered => marker(summary.severity),
    };
    format!(
        "{marker} {}: {}",
        message::state_label(state),
        summary.title
    )
}

fn body(channel: &str, text: String, mut blocks: Vec<Value>) -> Value {
    blocks.truncate(MAX_BLOCKS);
    json!({
        "channel": channel,
        "text": text,
        "blocks": blocks,
        "unfurl_links": false,
        "unfurl_media": false,
    })
}

/// `[HIGH] api_latency_p95 is 1840 (threshold 1000) · account acc_casterly
/// · 2026-04-17T16:02:00Z`, escaped.
fn fallback_text(summary: &AlertSummary) -> String {
    let mut text = summary.headline();
    if let Some(account) = &summary.account {
        text.push_str(&format!(" · account {account}"));
    }
    text.push_str(&format!(" · {}", summary.time));
    if let Some(note) = summary.suppressed_note() {
        text.push_str(&format!(" · {note}"));
    }
    fit(&escape(&text), FALLBACK_TEXT_MAX, true)
}

fn alert_blocks(summary: &AlertSummary) -> Vec<Value> {
    let header = format!("{} {}", marker(summary.severity), summary.title);
    let mut fields = Vec::new();
    if let Some(value) = &summary.value {
        fields.push(field("Value", &escape(value)));
    }
    if let Some(threshold) = &summary.threshold {
        fields.push(field("Threshold", &escape(threshold)));
    }
    if let Some(account) = &summary.account {
        fields.push(field("Account", &escape(account)));
    }
    fields.push(field("Time", &time_mrkdwn(&summary.time)));
    if let Some(severity) = summary.severity {
        fields.push(field("Severity", severity_label(severity)));
    }
    extra_fields(summary, &mut fields);
    vec![
        header_block(&header),
        fields_block(fields),
        context_block(summary),
    ]
}

fn generic_blocks(summary: &AlertSummary) -> Vec<Value> {
    let mut fields = Vec::new();
    if let Some(threshold) = &summary.threshold {
        fields.push(field("Threshold", &escape(threshold)));
    }
    if let Some(account) = &summary.account {
        fields.push(field("Account", &escape(account)));
    }
    fields.push(field("Time", &time_mrkdwn(&summary.time)));
    extra_fields(summary, &mut fields);
    vec![
        header_block(&summary.headline()),
        fields_block(fields),
        context_block(summary),
    ]
}

fn extra_fields(summary: &AlertSummary, fields: &mut Vec<Value>) {
    for (key, value) in &summary.extra {
        if fields.len() >= MAX_FIELDS {
            break;
        }
        fields.push(field(&escape(key), &escape(value)));
    }
}

fn header_block(text: &str) -> Value {
    json!({
        "type": "header",
        "text": {"type": "plain_text", "text": fit(text, HEADER_MAX, false), "emoji": true},
    })
}

fn fields_block(mut fields: Vec<Value>) -> Value {
    fields.truncate(MAX_FIELDS);
    json!({"type": "section", "fields": fields})
}

/// `evt_… · alert.triggered · alert alrt_tyrion_42`.
fn context_block(summary: &AlertSummary) -> Value {
    let mut parts = vec![summary.event_id.clone(), summary.event_name.clone()];
    let resource: Vec<&str> = [&summary.resource, &summary.resource_id]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if !resource.is_empty() {
        parts.push(resource.join(" "));
    }
    let text = fit(&escape(&parts.join(" · ")), CONTEXT_TEXT_MAX, true);
    json!({"type": "context", "elements": [mrkdwn(&text)]})
}

/// `*Label*\nvalue`; both parts already escaped.
fn field(label: &str, value: &str) -> Value {
    mrkdwn(&fit(&format!("*{label}*\n{value}"), FIELD_MAX, true))
}

fn mrkdwn(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

/// A UTC RFC 3339 time as Slack's date token (shown in each reader's time
/// zone, the original as fallback); anything else as escaped text.
fn time_mrkdwn(time: &str) -> String {
    let seconds = humantime::parse_rfc3339_weak(time)
        .ok()
        .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
        .map(|since| since.as_secs());
    match seconds {
        Some(seconds) => format!(
            "<!date^{seconds}^{{date_short_pretty}} at {{time}}|{}>",
            escape(time)
        ),
        None => escape(time),
    }
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

fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "Critical",
        Severity::High => "High",
        Severity::Medium => "Medium",
        Severity::Low => "Low",
        Severity::Info => "Info",
    }
}

/// At most `max` UTF-16 units, ending in `…` when cut. With `escaped`, a
/// cut that would split `&amp;`, `&lt;` or `&gt;` drops the whole escape.
fn fit(text: &str, max: usize, escaped: bool) -> String {
    if text.encode_utf16().count() <= max {
        return text.to_string();
    }
    let budget = max.saturating_sub(1);
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        used += c.len_utf16();
        if used > budget {
            break;
        }
        out.push(c);
    }
    if escaped
        && let Some(amp) = out.rfind('&')
        && !out[amp..].contains(';')
    {
        out.truncate(amp);
    }
    out.push('…');
    out
}

/// Every string in `value`, object keys included, through [`escape`].
fn escape_strings(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(escape(&text)),
        Value::Array(items) => Value::Array(items.into_iter().map(escape_strings).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (escape(&key), escape_strings(value)))
                .collect::<Map<String, Value>>(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventId, EventName, WorkspaceId};

    fn event(name: &str, payload: Value) -> Event {
        Event {
            id: EventId(1),
            workspace_id: WorkspaceId(1),
            name: EventName::parse(name).unwrap(),
            resource: Some("alert".into()),
            resource_id: Some("alrt_tyrion_42".into()),
            payload: serde_json::to_vec(&payload).unwrap(),
            received_at_ms: 1_776_441_720_000,
        }
    }

    fn example() -> Event {
        event(
            "alert.triggered",
            json!({
                "alert_id": "alrt_tyrion_42", "account_id": "acc_casterly", "severity": "high",
                "resource": "api_latency_p95", "value": 1840, "threshold": 1000,
                "triggered_at": "2026-04-17T16:02:00Z"
            }),
        )
    }

    fn render(event: &Event, template: Option<&Value>) -> Value {
        render_message(
            event,
            &AlertSummary::from_event(event),
            "C0ALERTS",
            template,
        )
        .unwrap()
    }

    const EVENT_ID: &str = "evt_00000000000000000000000001";

    fn resolved() -> Event {
        Event {
            name: EventName::parse("alert.resolved").unwrap(),
            ..example()
        }
    }

    #[test]
    fn a_later_event_of_an_alert_names_its_state() {
        let body = render(&resolved(), None);
        assert_eq!(
            body["blocks"][0]["text"]["text"],
            "✅ Resolved: api_latency_p95"
        );
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .starts_with("Resolved: [HIGH] api_latency_p95 is 1840"),
            "{body}"
        );
        let triggered = render(&example(), None);
        assert_eq!(body["blocks"][1], triggered["blocks"][1]);
    }

    #[test]
    fn the_update_shows_the_state_and_when_it_changed() {
        let event = resolved();
        let summary = AlertSummary::from_event(&event);
        let update = render_update(&event, &summary, "C0ALERTS", "1776441720.000100").unwrap();
        assert_eq!(update["channel"], "C0ALERTS");
        assert_eq!(update["ts"], "1776441720.000100");
        assert!(update["text"].as_str().unwrap().starts_with("Resolved: "));
        let blocks = update["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["text"]["text"], "✅ Resolved: api_latency_p95");
        assert_eq!(
            blocks[1]["text"]["text"],
            "*Resolved* <!date^1776441720^{date_short_pretty} at {time}|2026-04-17T16:02:00.000Z>"
        );
        // Then the alert's fields and context, as the first message has them.
        assert_eq!(blocks[2], render(&example(), None)["blocks"][1]);
        assert_eq!(blocks[3]["type"], "context");
        let acknowledged = Event {
            name: EventName::parse("alert.acknowledged").unwrap(),
            ..example()
        };
        let update = render_update(&acknowledged, &summary, "C0ALERTS", "1.2").unwrap();
        assert_eq!(
            update["blocks"][0]["text"]["text"],
            "👀 Acknowledged: api_latency_p95"
        );
        assert_eq!(render_update(&example(), &summary, "C0ALERTS", "1.2"), None);
    }

    #[test]
    fn the_example_alert() {
        assert_eq!(
            render(&example(), None),
            json!({
                "channel": "C0ALERTS",
                "text": "[HIGH] api_latency_p95 is 1840 (threshold 1000) · account acc_casterly · 2026-04-17T16:02:00Z",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "🟠 api_latency_p95", "emoji": true}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Value*\n1840", "verbatim": true},
                        {"type": "mrkdwn", "text": "*Threshold*\n1000", "verbatim": true},
                        {"type": "mrkdwn", "text": "*Account*\nacc_casterly", "verbatim": true},
                        {"type": "mrkdwn", "text": "*Time*\n<!date^1776441720^{date_short_pretty} at {time}|2026-04-17T16:02:00Z>", "verbatim": true},
                        {"type": "mrkdwn", "text": "*Severity*\nHigh", "verbatim": true},
                        {"type": "mrkdwn", "text": "*alert_id*\nalrt_tyrion_42", "verbatim": true},
                    ]},
                    {"type": "context", "elements": [
                        {"type": "mrkdwn", "text": format!("{EVENT_ID} · alert.triggered · alert alrt_tyrion_42"), "verbatim": true},
                    ]},
                ],
                "unfurl_links": false,
                "unfurl_media": false,
            })
        );
    }

    #[test]
    fn a_generic_event() {
        let deploy = Event {
            resource: Some("web".into()),
            resource_id: Some("dep_77".into()),
            ..event(
                "deploy.finished",
                json!({"version": "1.2.3", "environment": "production", "duration_s": 184, "ok": true, "nested": {"x": 1}}),
            )
        };
        assert_eq!(
            render(&deploy, None),
            json!({
                "channel": "C0ALERTS",
                "text": "deploy.finished: web · 2026-04-17T16:02:00.000Z",
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": "deploy.finished: web", "emoji": true}},
                    {"type": "section", "fields": [
                        {"type": "mrkdwn", "text": "*Time*\n<!date^1776441720^{date_short_pretty} at {time}|2026-04-17T16:02:00.000Z>", "verbatim": true},
                        // Payload keys come in serde_json's (sorted) order.
                        {"type": "mrkdwn", "text": "*duration_s*\n184", "verbatim": true},
                        {"type": "mrkdwn", "text": "*environment*\nproduction", "verbatim": true},
                        {"type": "mrkdwn", "text": "*ok*\ntrue", "verbatim": true},
                        {"type": "mrkdwn", "text": "*version*\n1.2.3", "verbatim": true},
                    ]},
                    {"type": "context", "elements": [
                        {"type": "mrkdwn", "text": format!("{EVENT_ID} · deploy.finished · web dep_77"), "verbatim": true},
                    ]},
                ],
                "unfurl_links": false,
                "unfurl_media": false,
            })
        );
    }

    #[test]
    fn severity_markers() {
        for (severity, expected) in [
            ("critical", "🔴 disk"),
            ("HIGH", "🟠 disk"),
            ("medium", "🟡 disk"),
            ("low", "🔵 disk"),
            ("info", "⚪ disk"),
        ] {
            let body = render(
                &event(
                    "alert.triggered",
                    json!({"resource": "disk", "severity": severity}),
                ),
                None,
            );
            assert_eq!(body["blocks"][0]["text"]["text"], expected);
        }
        let body = render(
            &event("alert.triggered", json!({"resource": "disk", "value": 3})),
            None,
        );
        assert_eq!(body["blocks"][0]["text"]["text"], "🔔 disk");
    }

    /// Every text a Slack client renders, in order.
    fn texts(body: &Value) -> Vec<String> {
        let mut texts = vec![body["text"].as_str().unwrap().to_string()];
        for block in body["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                texts.push(text.into());
            }
            for item in block["fields"]
                .as_array()
                .into_iter()
                .chain(block["elements"].as_array())
                .flatten()
            {
                texts.push(item["text"].as_str().unwrap().into());
            }
        }
        texts
    }

    #[test]
    fn tenant_text_cannot_ping_or_link() {
        let hostile = "<!channel> & <https://evil|x>";
        let mut evil = event(
            "alert.triggered",
            json!({"resource": hostile, "severity": "critical", "value": hostile, "threshold": hostile,
                   "account_id": hostile, "triggered_at": hostile, hostile: hostile}),
        );
        evil.resource = Some(hostile.into());
        evil.resource_id = Some(hostile.into());
        let body = render(&evil, None);
        let escaped = "&lt;!channel&gt; &amp; &lt;https://evil|x&gt;";
        assert_eq!(
            body["text"],
            format!(
                "[CRITICAL] {escaped} is {escaped} (threshold {escaped}) · account {escaped} · {escaped}"
            )
        );
        assert_eq!(
            body["blocks"][1]["fields"][0]["text"],
            format!("*Value*\n{escaped}")
        );
        assert_eq!(
            body["blocks"][1]["fields"][3]["text"],
            format!("*Time*\n{escaped}")
        );
        assert_eq!(
            body["blocks"][1]["fields"][5]["text"],
            format!("*{escaped}*\n{escaped}")
        );
        // The header is plain_text, which Slack never parses.
        assert_eq!(body["blocks"][0]["text"]["type"], "plain_text");
        for text in texts(&body)
            .iter()
            .skip(1)
            .filter(|text| !text.starts_with('🔴'))
        {
            assert!(
                !text.contains("<!channel>") && !text.contains("<https"),
                "{text}"
            );
        }
        assert!(!body["text"].as_str().unwrap().contains('<'));
        // The generic layout too.
        let mut deploy = evil.clone();
        deploy.payload = serde_json::to_vec(&json!({"note": hostile})).unwrap();
        deploy.name = EventName::parse("deploy.finished").unwrap();
        let body = render(&deploy, None);
        for text in texts(&body)
            .iter()
            .skip(1)
            .filter(|text| !text.starts_with("deploy"))
        {
            assert!(!text.contains('<') || text.contains("<!date^"), "{text}");
            assert!(!text.contains("<!channel>"), "{text}");
        }
        assert!(body["text"].as_str().unwrap().contains(escaped));
    }

    #[test]
    fn limits_hold_for_huge_payloads() {
        let huge = "x".repeat(10_000);
        let mut payload = Map::new();
        payload.insert("resource".into(), json!(huge));
        payload.insert("severity".into(), json!("high"));
        payload.insert("value".into(), json!(huge));
        payload.insert("account_id".into(), json!("&".repeat(5_000)));
        for i in 0..30 {
            payload.insert(format!("extra_{i}"), json!(huge));
        }
        let mut big = event("alert.triggered", Value::Object(payload));
        big.resource = Some(huge.clone());
        big.resource_id = Some("<".repeat(10_000));
        let summary = AlertSummary::from_event(&big);
        let body = render_message(&big, &summary, "C1", None).unwrap();
        assert_limits(&body);
        // A summary built by hand, beyond what from_event keeps: a 10,000
        // character title and 30 extra fields of 10,000.
        let mut summary = AlertSummary::from_event(&big);
        summary.title = huge.clone();
        summary.value = Some(huge.clone());
        summary.extra = (0..30).map(|i| (format!("k{i}"), huge.clone())).collect();
        let body = render_message(&big, &summary, "C1", None).unwrap();
        assert_limits(&body);
        let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.encode_utf16().count(), HEADER_MAX);
        assert!(header.ends_with('…'));
        assert_eq!(
            body["blocks"][1]["fields"].as_array().unwrap().len(),
            MAX_FIELDS
        );
        let value = body["blocks"][1]["fields"][0]["text"].as_str().unwrap();
        assert_eq!(value.encode_utf16().count(), FIELD_MAX);
        summary.value = None;
        summary.severity = None;
        let body = render_message(&big, &summary, "C1", None).unwrap();
        assert_limits(&body);
        assert_eq!(
            body["blocks"][1]["fields"].as_array().unwrap().len(),
            MAX_FIELDS
        );
    }

    fn assert_limits(body: &Value) {
        let count = |text: &Value| text.as_str().unwrap().encode_utf16().count();
        assert!(count(&body["text"]) <= FALLBACK_TEXT_MAX);
        let blocks = body["blocks"].as_array().unwrap();
        assert!(blocks.len() <= MAX_BLOCKS);
        for block in blocks {
            match block["type"].as_str().unwrap() {
                "header" => assert!(count(&block["text"]["text"]) <= HEADER_MAX),
                "section" => {
                    if let Some(text) = block.get("text") {
                        assert!(count(&text["text"]) <= SECTION_TEXT_MAX);
                    }
                    let fields = block["fields"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    assert!(fields.len() <= MAX_FIELDS);
                    for field in fields {
                        assert!(count(&field["text"]) <= FIELD_MAX);
                    }
                }
                "context" => {
                    let elements = block["elements"].as_array().unwrap();
                    assert!(elements.len() <= 10);
                    for element in elements {
                        let text = element["text"].as_str().unwrap();
                        assert!(text.encode_utf16().count() <= CONTEXT_TEXT_MAX);
                        // No escape is cut in half.
                        assert!(!text.trim_end_matches('…').ends_with("&l"), "{text}");
                    }
                }
                other => panic!("unexpected block {other}"),
            }
        }
    }

    #[test]
    fn fit_counts_utf16_and_keeps_escapes_whole() {
        assert_eq!(fit("abcdef", 4, false), "abc…");
        assert_eq!(fit("abc", 3, false), "abc");
        assert_eq!(fit("🟠🟠🟠", 4, false), "🟠…");
        assert_eq!(fit("ab&amp;cd", 6, true), "ab…");
        assert_eq!(fit("ab&amp;cd", 8, true), "ab&amp;…");
        assert_eq!(fit("ab&cdefg", 5, false), "ab&c…");
    }

    #[test]
    fn a_text_template_becomes_the_whole_message() {
        let template = json!({"text": "<!here> *{{ alert.title }}* at {{ payload.value }} for {{ payload.account_id }} <https://runbook.example/{{ alert.title }}|runbook>"});
        assert_eq!(
            render(&example(), Some(&template)),
            json!({
                "channel": "C0ALERTS",
                "text": "<!here> *api_latency_p95* at 1840 for acc_casterly <https://runbook.example/api_latency_p95|runbook>",
                "blocks": [{"type": "section", "text": {
                    "type": "mrkdwn",
                    "text": "<!here> *api_latency_p95* at 1840 for acc_casterly <https://runbook.example/api_latency_p95|runbook>",
                    "verbatim": true,
                }}],
                "unfurl_links": false,
                "unfurl_media": false,
            })
        );
    }

    #[test]
    fn template_values_are_escaped_but_its_own_text_is_not() {
        let hostile = event(
            "alert.triggered",
            json!({"resource": "<!channel> & <https://evil|x>", "tags": ["<!here>"], "<k>": 1}),
        );
        let template =
            json!({"text": "<!here> {{ alert.title }} {{ payload.tags[0] }} {{ alert.headline }}"});
        let body = render(&hostile, Some(&template));
        let escaped = "&lt;!channel&gt; &amp; &lt;https://evil|x&gt;";
        assert_eq!(
            body["text"],
            format!("<!here> {escaped} &lt;!here&gt; alert.triggered: {escaped}")
        );
        assert_eq!(body["blocks"][0]["text"]["text"], body["text"]);
    }

    #[test]
    fn a_message_after_suppressed_deliveries_says_how_many() {
        let event = example();
        let summary = AlertSummary {
            suppressed_before: 2,
            ..AlertSummary::from_event(&event)
        };
        let body = render_message(&event, &summary, "C1", None).unwrap();
        let note = "2 more were suppressed by this rule since the last message";
        assert!(body["text"].as_str().unwrap().ends_with(note), "{body}");
        assert_eq!(body["blocks"][0]["type"], "context");
        assert_eq!(body["blocks"][0]["elements"][0]["text"], note);
        let quiet = render_message(&event, &AlertSummary::from_event(&event), "C1", None).unwrap();
        assert!(!quiet["text"].as_str().unwrap().contains("suppressed"));
    }

    #[test]
    fn template_edge_cases() {
        // Empty output falls back to the default layout.
        let blank = json!({"text": "  {{ payload.missing }}  "});
        assert_eq!(render(&example(), Some(&blank)), render(&example(), None));
        // Only `text` is used; `blocks` and email keys are ignored.
        let other = json!({"subject": "x", "blocks": [{"type": "divider"}]});
        assert_eq!(render(&example(), Some(&other)), render(&example(), None));
        // Long output is cut to the section limit.
        let long = json!({"text": "{% for i in range(5000) %}x{% endfor %}"});
        let body = render(&example(), Some(&long));
        assert_eq!(
            body["text"].as_str().unwrap().encode_utf16().count(),
            SECTION_TEXT_MAX
        );
        // Broken templates fail the render.
        let summary = AlertSummary::from_event(&example());
        let broken = json!({"text": "{% if %}"});
        assert!(render_message(&example(), &summary, "C1", Some(&broken)).is_err());
    }

    #[test]
    fn escape_replaces_exactly_three_characters() {
        assert_eq!(escape("a<b>&c*_~`"), "a&lt;b&gt;&amp;c*_~`");
    }
}
