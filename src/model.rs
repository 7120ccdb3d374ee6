//! Domain types shared by the API, the store and the engine. Wire (JSON) and
//! disk (postcard) shapes live in `api/` and `store/`; these are neither.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A map keyed by ids the server draws itself (ULIDs): hashed with
/// foldhash rather than SipHash, as no client chooses these keys.
pub type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Declares a ULID-backed id type printed as `{prefix}_{ulid}`.
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u128);

        const _: () = assert!($prefix.len() <= IdText::MAX_PREFIX, "an id prefix too long for IdText");

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            pub fn new() -> Self {
                Self(next_ulid())
            }

            /// Milliseconds since the Unix epoch at which the id was made.
            pub fn timestamp_ms(self) -> u64 {
                (self.0 >> 80) as u64
            }

            /// The id as text, `{prefix}_{ulid}`, on the stack: what
            /// `Display` writes, without going through `fmt` (ids are
            /// written several times per delivery).
            pub fn encode(self) -> IdText {
                IdText::new($prefix, self.0)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.encode().as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(text: &str) -> Result<Self, InvalidId> {
                text.strip_prefix(concat!($prefix, "_"))
                    .and_then(|rest| ulid::Ulid::from_string(rest).ok())
                    .map(|ulid| Self(ulid.0))
                    .ok_or(InvalidId)
            }
        }

        /// A string: the prefix, `_` and a ULID.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .description(Some(concat!(
                        stringify!($name),
                        ": `",
                        $prefix,
                        "_` and a ULID."
                    )))
                    .pattern(Some(concat!("^", $prefix, "_[0-9A-HJKMNP-TV-Z]{26}$")))
                    .examples([concat!($prefix, "_01ARZ3NDEKTSV4RRFFQ69G5FAV")])
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.encode().as_str())
            }
        }
    };
}

prefixed_id!(
    /// A workspace: one tenant or one environment.
    WorkspaceId,
    "ws"
);
prefixed_id!(
    /// An ingested event; time-ordered, so ids sort by arrival.
    EventId,
    "evt"
);

prefixed_id!(
    /// A destination account of a workspace (webhook endpoint, Slack team, email sender).
    ConnectionId,
    "con"
);
prefixed_id!(
    /// A routing rule.
    RuleId,
    "rul"
);
prefixed_id!(
    /// One event going to one connection through one rule; also the
    /// `webhook-id` and the email idempotency key.
    DeliveryId,
    "dlv"
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

/// A prefixed id's text (see `encode` on the id types).
#[derive(Clone, Copy)]
pub struct IdText {
    bytes: [u8; IdText::CAPACITY],
    len: usize,
}

impl IdText {
    const MAX_PREFIX: usize = 3;
    /// The prefix, `_` and the ULID's 26 characters.
    const CAPACITY: usize = Self::MAX_PREFIX + 1 + ulid::ULID_LEN;

    fn new(prefix: &'static str, id: u128) -> Self {
        let mut bytes = [0; Self::CAPACITY];
        let prefix = prefix.as_bytes();
        bytes[..prefix.len()].copy_from_slice(prefix);
        bytes[prefix.len()] = b'_';
        let start = prefix.len() + 1;
        let mut ulid = [0; ulid::ULID_LEN];
        ulid::Ulid(id).array_to_str(&mut ulid);
        bytes[start..start + ulid::ULID_LEN].copy_from_slice(&ulid);
        Self {
            bytes,
            len: start + ulid::ULID_LEN,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written: a prefix literal, `_` and Crockford
        // base32. The fallback is unreachable.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// Monotonic ULIDs: ids made in the same millisecond still sort in the order
/// they were made, which keeps event listings and cursors stable.
fn next_ulid() -> u128 {
    static GENERATOR: Mutex<Option<ulid::Generator>> = Mutex::new(None);
    let mut guard = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    match generator.generate() {
        Ok(ulid) => ulid.0,
        // 2^80 ids in one millisecond: fall back to a fresh random one.
        Err(_) => ulid::Ulid::generate().0,
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// An RFC 3339 UTC timestamp with millisecond precision.
pub fn format_timestamp_ms(ms: u64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyKind {
    /// `pk_…`: emit events, nothing else.
    Publishable,
    /// `sk_…`: manage everything in its workspace.
    Secret,
    /// `mesh_pub_…`: emit events through the Meshes-compatible
    /// `/api/v1/events`, nothing else (not even `/v1/events`).
    MeshesPublishable,
}

impl KeyKind {
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Publishable => "pk_",
            KeyKind::Secret => "sk_",
            KeyKind::MeshesPublishable => "mesh_pub_",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    pub id: WorkspaceId,
    pub name: String,
    pub created_at_ms: u64,
}

/// An event type name: 1–128 characters of `A-Za-z0-9_.:-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName(String);

impl EventName {
    pub const MAX_LEN: usize = 128;

    pub fn parse(text: &str) -> Result<Self, &'static str> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err("must be 1 to 128 characters");
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        if !text.chars().all(allowed) {
            return Err("may contain only A-Z a-z 0-9 _ . : -");
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An event as ingested. `payload` is the raw JSON object exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: EventId,
    pub workspace_id: WorkspaceId,
    pub name: EventName,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    pub payload: Vec<u8>,
    pub received_at_ms: u64,
}

/// Where an alert is in its life, from the event's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Triggered,
    Acknowledged,
    Resolved,
}

impl AlertState {
    /// `alert.triggered`, `alert.acknowledged`, `alert.resolved`; other
    /// events are not part of an alert's life.
    pub fn of(name: &EventName) -> Option<Self> {
        match name.as_str() {
            "alert.triggered" => Some(Self::Triggered),
            "alert.acknowledged" => Some(Self::Acknowledged),
            "alert.resolved" => Some(Self::Resolved),
            _ => None,
        }
    }
}

impl Event {
    /// Which alert this event belongs to, the same for every event of the
    /// alert's life: `resource` + `resource_id` when both are present, else
    /// the payload's `alert_id`. `None` for events that name no alert.
    pub fn alert_key(&self) -> Option<String> {
        if let (Some(resource), Some(id)) = (&self.resource, &self.resource_id) {
            // The length prefix keeps ("a:b", "c") and ("a", "b:c") apart.
            let mut digits = itoa::Buffer::new();
            let length = digits.format(resource.len());
            let mut key = String::with_capacity(length.len() + resource.len() + id.len() + 2);
            for part in [length, ":", resource, ":", id] {
                key.push_str(part);
            }
            return Some(key);
        }
        #[derive(Deserialize)]
        struct WithAlertId {
            alert_id: serde_json::Value,
        }
        let found: WithAlertId = serde_json::from_slice(&self.payload).ok()?;
        match found.alert_id {
            serde_json::Value::String(id) if !id.is_empty() => Some(format!("alert_id:{id}")),
            serde_json::Value::Number(id) => Some(format!("alert_id:{id}")),
            _ => None,
        }
    }
}

/// How an alert key reads in the delivery log: `resource:resource_id`
/// (without the length prefix that keeps keys unambiguous), or
/// `alert_id:…`.
pub fn alert_label(key: &str) -> &str {
    match key.split_once(':') {
        Some((length, rest)) if length.bytes().all(|b| b.is_ascii_digit()) => rest,
        _ => key,
    }
}

/// The destination kind of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ConnectionType)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionKind {
    Webhook,
    Slack,
    Email,
    PagerDuty,
    /// A Microsoft Teams Workflows webhook.
    Teams,
    /// A Discord channel webhook.
    Discord,
}

impl ConnectionKind {
    pub const ALL: [Self; 6] = [
        Self::Webhook,
        Self::Slack,
        Self::Email,
        Self::PagerDuty,
        Self::Teams,
        Self::Discord,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Slack => "slack",
            Self::Email => "email",
            Self::PagerDuty => "pagerduty",
            Self::Teams => "teams",
            Self::Discord => "discord",
        }
    }
}

/// `needs_reauth`: Slack refused the token (reinstall to fix); `disabled`:
/// switched off by the tenant or by the engine (an endpoint answered 410).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    /// The destination refused the credentials (Slack revoked the token).
    NeedsReauth,
    /// Switched off by the tenant or by the engine (an endpoint answered 410).
    Disabled,
}

/// A destination account. `config` is the public part (URL, team name,
/// sender) as JSON; `sealed_secrets` is the encrypted JSON of its secrets.
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    pub id: ConnectionId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub kind: ConnectionKind,
    pub status: ConnectionStatus,
    pub config: serde_json::Value,
    pub sealed_secrets: Vec<u8>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// A routing rule as stored. The filter parts are kept as validated JSON and
/// compiled into matchers by `rules::RuleIndex`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: RuleId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub events: Vec<String>,
    pub connection_id: ConnectionId,
    pub target: serde_json::Value,
    pub min_severity: Option<String>,
    pub conditions: serde_json::Value,
    pub template: Option<serde_json::Value>,
    pub enabled: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Noise control: an `alert.triggered` for an alert this rule delivered
    /// within this many seconds is suppressed.
    pub dedup_seconds: Option<u32>,
    /// Noise control: at most this many deliveries per hour window.
    pub max_per_hour: Option<u32>,
}

/// `pending`: queued, not attempted yet; `succeeded`: a 2xx (or the
/// destination's success); `retrying`: at least one attempt failed, queued
/// again; `dead`: failed permanently or out of attempts; `suppressed`: held
/// back by its rule's `dedup_seconds` or `max_per_hour`, never sent, queued
/// or retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Queued, not attempted yet.
    Pending,
    Succeeded,
    /// At least one attempt failed; queued again.
    Retrying,
    /// Permanently failed or out of attempts.
    Dead,
    /// Held back by the rule's noise control; never sent or retried.
    Suppressed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
            Self::Suppressed => "suppressed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "succeeded" => Some(Self::Succeeded),
            "retrying" => Some(Self::Retrying),
            "dead" => Some(Self::Dead),
            "suppressed" => Some(Self::Suppressed),
            _ => None,
        }
    }
}

/// Where one alert's Slack thread lives: a channel of a connection. Its
/// first message's `ts` is remembered under this key so later events of
/// the alert reply in that thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThreadKey {
    pub workspace: WorkspaceId,
    pub connection: ConnectionId,
    pub channel: String,
    /// `Event::alert_key`.
    pub alert: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub workspace_id: WorkspaceId,
    pub event_id: EventId,
    pub rule_id: RuleId,
    pub connection_id: ConnectionId,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at_ms: Option<u64>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Which alert its event belongs to (`Event::alert_key`).
    pub alert: Option<String>,
    /// Deliveries of its rule suppressed since the one before this one went
    /// out; messages say so.
    pub suppressed_before: u32,
}

/// One try at delivering, as shown in the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    /// The first 4 KiB of the answer.
    pub response: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(resource: Option<&str>, resource_id: Option<&str>, payload: &str) -> Event {
        Event {
            id: EventId::new(),
            workspace_id: WorkspaceId::new(),
            name: EventName::parse("alert.triggered").unwrap(),
            resource: resource.map(str::to_string),
            resource_id: resource_id.map(str::to_string),
            payload: payload.as_bytes().to_vec(),
            received_at_ms: 1,
        }
    }

    #[test]
    fn an_alert_is_its_resource_and_id_else_its_alert_id() {
        let both = event(Some("alert"), Some("alrt_42"), r#"{"alert_id":"other"}"#);
        assert_eq!(both.alert_key().as_deref(), Some("5:alert:alrt_42"));
        let split_differently = event(Some("alert:alrt"), Some("42"), "{}");
        assert_ne!(split_differently.alert_key(), both.alert_key());
        let by_id = event(Some("alert"), None, r#"{"alert_id":"alrt_42"}"#);
        assert_eq!(by_id.alert_key().as_deref(), Some("alert_id:alrt_42"));
        assert_eq!(alert_label("5:alert:alrt_42"), "alert:alrt_42");
        assert_eq!(alert_label("alert_id:alrt_42"), "alert_id:alrt_42");
        let numeric = event(None, None, r#"{"alert_id":42}"#);
        assert_eq!(numeric.alert_key().as_deref(), Some("alert_id:42"));
        for payload in [r#"{}"#, r#"{"alert_id":""}"#, r#"{"alert_id":null}"#] {
            assert_eq!(event(None, None, payload).alert_key(), None, "{payload}");
        }
        let name = |text| EventName::parse(text).unwrap();
        assert_eq!(
            AlertState::of(&name("alert.resolved")),
            Some(AlertState::Resolved)
        );
        assert_eq!(
            AlertState::of(&name("alert.acknowledged")),
            Some(AlertState::Acknowledged)
        );
        assert_eq!(
            AlertState::of(&name("alert.triggered")),
            Some(AlertState::Triggered)
        );
        assert_eq!(AlertState::of(&name("deploy.finished")), None);
    }

    #[test]
    fn ids_round_trip_through_text_and_sort_by_creation() {
        let first = EventId::new();
        let second = EventId::new();
        assert!(first < second);
        assert_eq!(first.to_string().parse::<EventId>(), Ok(first));
        assert!(first.to_string().starts_with("evt_"));
        assert_eq!(
            first
                .to_string()
                .replacen("evt_", "ws_", 1)
                .parse::<EventId>(),
            Err(InvalidId)
        );
        assert!("evt_not-a-ulid".parse::<EventId>().is_err());
    }

    proptest::proptest! {
        /// The text written without `fmt` is the prefix, `_` and the ULID's
        /// own text, in `Display`, JSON and `encode` alike.
        #[test]
        fn an_id_is_its_prefix_and_its_ulid(raw in proptest::prelude::any::<u128>()) {
            let expected = format!("dlv_{}", ulid::Ulid(raw));
            let id = DeliveryId(raw);
            let text = id.encode();
            proptest::prop_assert_eq!(text.as_str(), expected.as_str());
            proptest::prop_assert_eq!(id.to_string(), expected.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&id).unwrap(), format!("\"{expected}\""));
            proptest::prop_assert_eq!(expected.parse::<DeliveryId>(), Ok(id));
            proptest::prop_assert_eq!(WorkspaceId(raw).to_string(), format!("ws_{}", ulid::Ulid(raw)));
        }
    }

    #[test]
    fn event_names_follow_the_contract() {
        assert!(EventName::parse("alert.triggered").is_ok());
        assert!(EventName::parse("a:b-c_d.E9").is_ok());
        assert!(EventName::parse(&"x".repeat(128)).is_ok());
        assert!(EventName::parse(&"x".repeat(129)).is_err());
        assert!(EventName::parse("").is_err());
        assert!(EventName::parse("alert triggered").is_err());
        assert!(EventName::parse("alert/triggered").is_err());
        assert!(EventName::parse("alerté").is_err());
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(format_timestamp_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp_ms(1_776_441_720_123),
            "2026-04-17T16:02:00.123Z"
        );
        assert_eq!(
            format_timestamp_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
