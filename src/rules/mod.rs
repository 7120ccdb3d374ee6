//! Rule matching: does this event fire this rule? Pure (rules/ does no I/O),
//! so `POST /v1/rules/test` and the delivery fan-out give the same answer.
//!
//! A [`RuleFilter`] matches an event when any of its event patterns matches
//! the event name, the payload clears `min_severity` (when set), and every
//! condition holds.
//!
//! # Event patterns
//!
//! - an exact name (1–128 characters of `A-Za-z0-9_.:-`): `alert.triggered`;
//! - a prefix wildcard `prefix.*`: matches names that start with `prefix.` and
//!   go on, so `alert.*` matches `alert.triggered` but neither `alert` nor
//!   `alerts.x`;
//! - `*`: every name.
//!
//! Any other `*` (`al*rt`, `*.x`, `alert*`) is refused.
//!
//! # Severity
//!
//! `info < low < medium < high < critical`, read from the payload's top-level
//! `severity` string, case-insensitively. When a rule sets `min_severity`, an
//! event whose `severity` is absent, not a string, or not one of the five
//! never matches.
//!
//! # Conditions
//!
//! `{"path":"value","op":"gt","value":1500}`; all of a rule's conditions must
//! hold.
//!
//! - **Paths** split on `.` and walk objects by key; a segment of ASCII digits
//!   also indexes arrays (`items.0.id`). A path that cannot be followed is
//!   *missing*; a field holding `null` is present.
//! - **Missing fields** make every op false except `ne` (true) and `exists`.
//! - **Equality** (`eq`, `ne`, `in`, and `contains` on arrays) is JSON
//!   equality in which numbers compare by value (`1500 == 1500.0`), also
//!   inside arrays and objects. `ne` is always the negation of `eq`.
//! - **`gt gte lt lte`**: two numbers compare numerically; two strings compare
//!   lexicographically by bytes (so UTC RFC 3339 timestamps order by time);
//!   any other pair, `null` included, is false.
//! - **`in`**: the field equals some element of the value array.
//! - **`contains`**: a string field contains the string value as a substring;
//!   an array field has an element equal to the value; anything else is false.
//! - **`exists`**: the path resolves (even to `null`). With `"value": false`
//!   it means the path is missing; `"value": true` is the same as no value.
//!
//! [`validate_conditions`] refuses values that do not fit their op. A
//! [`Condition`] built or deserialized without it may carry one anyway (an
//! `in` without an array, a missing value); such a condition never holds.

mod condition;
#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;

pub use condition::{
    Condition, MAX_CONDITIONS, MAX_IN_VALUES, MAX_PATH_CHARS, Op, validate_conditions,
};

use crate::model::EventName;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// At most this many patterns in a rule's `events`.
pub const MAX_EVENT_PATTERNS: usize = 50;

/// A rule's filter, validated: what decides whether an event fires the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleFilter {
    pub events: Vec<EventPattern>,
    pub min_severity: Option<Severity>,
    pub conditions: Vec<Condition>,
}

impl RuleFilter {
    /// Whether an event named `event_name` with this `payload` fires the rule.
    pub fn matches(&self, event_name: &str, payload: &Value) -> bool {
        self.events
            .iter()
            .any(|pattern| pattern.matches(event_name))
            && self.severity_allows(payload)
            && self
                .conditions
                .iter()
                .all(|condition| condition.holds(payload))
    }

    fn severity_allows(&self, payload: &Value) -> bool {
        let Some(min) = self.min_severity else {
            return true;
        };
        payload
            .get("severity")
            .and_then(Value::as_str)
            .and_then(Severity::parse)
            .is_some_and(|severity| severity >= min)
    }
}

/// An invalid rule field, named the way the request spells it
/// (`conditions[2].value`, `events[0]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

impl RuleError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Severity scale, low to high; the derived order is the scale's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// Case-insensitive: payloads say `HIGH` as often as `high`.
    pub fn parse(text: &str) -> Option<Severity> {
        Self::ALL
            .into_iter()
            .find(|severity| severity.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a rule's `events`: an exact name, `prefix.*`, or `*`.
///
/// Parsing guarantees that `*` appears only as the whole pattern or as the
/// final character after a `.`, which is what [`EventPattern::matches`]
/// relies on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventPattern(String);

impl EventPattern {
    pub fn parse(text: &str) -> Result<EventPattern, &'static str> {
        if text == "*" {
            return Ok(EventPattern(text.to_string()));
        }
        // The whole pattern obeys the event-name length limit: a longer
        // prefix could only match names that are too long to exist.
        if text.is_empty() || text.len() > EventName::MAX_LEN {
            return Err("must be 1 to 128 characters");
        }
        let name = text.strip_suffix(".*").unwrap_or(text);
        if name.is_empty() {
            return Err("a wildcard needs a prefix, as in `alert.*`, or is `*` alone");
        }
        if EventName::parse(name).is_err() {
            return Err(
                "must be an event name (A-Z a-z 0-9 _ . : -), a prefix ending in `.*`, or `*`",
            );
        }
        Ok(EventPattern(text.to_string()))
    }

    pub fn matches(&self, event_name: &str) -> bool {
        match self.0.strip_suffix('*') {
            None => event_name == self.0,
            Some("") => true,
            // `prefix` keeps its trailing dot; the name must go on past it.
            Some(prefix) => event_name.len() > prefix.len() && event_name.starts_with(prefix),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EventPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EventPattern::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Validates a rule's `events`: an array of 1 to 50 pattern strings.
pub fn validate_events(raw: &Value) -> Result<Vec<EventPattern>, RuleError> {
    let items = raw
        .as_array()
        .ok_or_else(|| RuleError::new("events", "must be an array of event patterns"))?;
    if items.is_empty() || items.len() > MAX_EVENT_PATTERNS {
        return Err(RuleError::new(
            "events",
            format!("must have 1 to {MAX_EVENT_PATTERNS} entries"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let field = format!("events[{index}]");
            let text = item
                .as_str()
                .ok_or_else(|| RuleError::new(&field, "must be a string"))?;
            EventPattern::parse(text).map_err(|message| RuleError::new(&field, message))
        })
        .collect()
}

/// Reads a rule's `min_severity`; pass `Value::Null` when the field is absent.
pub fn parse_min_severity(raw: &Value) -> Result<Option<Severity>, RuleError> {
    match raw {
        Value::Null => Ok(None),
        Value::String(text) => Severity::parse(text).map(Some).ok_or_else(|| {
            RuleError::new(
                "min_severity",
                "must be one of info, low, medium, high, critical",
            )
        }),
        _ => Err(RuleError::new(
            "min_severity",
            "must be a string: info, low, medium, high or critical",
        )),
    }
}
