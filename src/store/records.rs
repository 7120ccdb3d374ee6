//! The stored record types, separate from the domain and wire types so that
//! the disk format changes only on purpose. Version 1 bodies are frozen:
//! a change adds a `V2` body and an upgrade from `V1`.

use super::codec::{CodecError, Record, decode_body, encode_body};

/// Implements [`Record`] for a type whose only schema so far is version 1,
/// stored as the type itself. A second version replaces the invocation with
/// a hand-written `decode_version` that upgrades the V1 body.
macro_rules! single_version_record {
    ($ty:ty, $kind:literal) => {
        impl Record for $ty {
            const KIND: &'static str = $kind;
            const VERSION: u8 = 1;

            fn encode(&self) -> Vec<u8> {
                encode_body(Self::VERSION, self)
            }

            fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
                match version {
                    1 => decode_body(Self::KIND, body),
                    version => Err(CodecError::UnknownVersion {
                        kind: Self::KIND,
                        version,
                    }),
                }
            }
        }
    };
}
use crate::model::{ConnectionKind, ConnectionStatus, DeliveryStatus, KeyKind};
use serde::{Deserialize, Serialize};

/// Converts between a stored enum and its domain twin, variant by variant,
/// so renaming a domain variant never silently changes the disk format.
macro_rules! mirror_enum {
    ($stored:ident, $domain:ident { $($variant:ident),* }) => {
        impl From<$domain> for $stored {
            fn from(value: $domain) -> Self {
                match value { $($domain::$variant => Self::$variant),* }
            }
        }

        impl From<$stored> for $domain {
            fn from(value: $stored) -> Self {
                match value { $($stored::$variant => Self::$variant),* }
            }
        }
    };
}

/// A workspace, version 2: version 1 plus the hash of its Meshes-format
/// publishable key (`None` for workspaces whose keys were last made before
/// that key existed, until their next rotation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    pub name: String,
    pub created_at_ms: u64,
    pub publishable_key_hash: [u8; 32],
    pub secret_key_hash: [u8; 32],
    pub meshes_key_hash: Option<[u8; 32]>,
}

/// The frozen version-1 workspace body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WorkspaceRecordV1 {
    name: String,
    created_at_ms: u64,
    publishable_key_hash: [u8; 32],
    secret_key_hash: [u8; 32],
}

impl Record for WorkspaceRecord {
    const KIND: &'static str = "workspace";
    const VERSION: u8 = 2;

    fn encode(&self) -> Vec<u8> {
        encode_body(Self::VERSION, self)
    }

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let v1: WorkspaceRecordV1 = decode_body(Self::KIND, body)?;
                Ok(Self {
                    name: v1.name,
                    created_at_ms: v1.created_at_ms,
                    publishable_key_hash: v1.publishable_key_hash,
                    secret_key_hash: v1.secret_key_hash,
                    meshes_key_hash: None,
                })
            }
            2 => decode_body(Self::KIND, body),
            version => Err(CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub workspace_id: u128,
    pub kind: StoredKeyKind,
}

/// Stored separately from `KeyKind` so renaming the domain enum never
/// changes the disk format. New kinds are appended (postcard writes the
/// variant index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredKeyKind {
    Publishable,
    Secret,
    MeshesPublishable,
}

mirror_enum!(
    StoredKeyKind,
    KeyKind {
        Publishable,
        Secret,
        MeshesPublishable
    }
);

single_version_record!(ApiKeyRecord, "api key");

/// An event, version 2: version 1 plus its deliveries' ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub name: String,
    pub resource: Option<String>,
    pub resource_id: Option<String>,
    /// The JSON payload object exactly as received.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub received_at_ms: u64,
    /// The ids of the event's deliveries, in ascending order, all made when
    /// it was ingested. `None`: they are rows of the `event_deliveries`
    /// index (events written before version 2, and events carried over
    /// from PostgreSQL). Kept here, ingest writes one row fewer per
    /// delivery (docs/benchmarks.md, issue 13).
    pub deliveries: Option<Vec<u128>>,
}

/// The frozen version-1 event body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct EventRecordV1 {
    name: String,
    resource: Option<String>,
    resource_id: Option<String>,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    received_at_ms: u64,
}

impl Record for EventRecord {
    const KIND: &'static str = "event";
    const VERSION: u8 = 2;

    fn encode(&self) -> Vec<u8> {
        encode_body(Self::VERSION, self)
    }

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let v1: EventRecordV1 = decode_body(Self::KIND, body)?;
                Ok(Self {
                    name: v1.name,
                    resource: v1.resource,
                    resource_id: v1.resource_id,
                    payload: v1.payload,
                    received_at_ms: v1.received_at_ms,
                    deliveries: None,
                })
            }
            2 => decode_body(Self::KIND, body),
            version => Err(CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
            }),
        }
    }
}

impl EventRecord {
    /// Whether `bytes` is a version-1 event record, whose deliveries go
    /// into the `event_deliveries` index: a write-ahead log left by an
    /// older release holds such records.
    pub fn is_version_one(bytes: &[u8]) -> bool {
        bytes.first() == Some(&1)
    }

    /// An `alert.triggered` event with an empty payload and the given
    /// list, for the storage tests.
    #[cfg(test)]
    pub fn for_tests(deliveries: Option<Vec<u128>>) -> Self {
        Self {
            name: "alert.triggered".into(),
            resource: None,
            resource_id: None,
            payload: b"{}".to_vec(),
            received_at_ms: 1,
            deliveries,
        }
    }

    /// The bytes an older release wrote for this event (no list).
    #[cfg(test)]
    pub fn encode_version_one(&self) -> Vec<u8> {
        let v1 = EventRecordV1 {
            name: self.name.clone(),
            resource: self.resource.clone(),
            resource_id: self.resource_id.clone(),
            payload: self.payload.clone(),
            received_at_ms: self.received_at_ms,
        };
        encode_body(1, &v1)
    }
}

/// The first answer given for an `Idempotency-Key`, replayed for 24 hours.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub created_at_ms: u64,
    pub status: u16,
    #[serde(with = "serde_bytes")]
    pub response: Vec<u8>,
}

single_version_record!(IdempotencyRecord, "idempotency");

/// A destination account. JSON parts are stored as JSON bytes: postcard
/// cannot decode a `serde_json::Value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub name: String,
    pub kind: StoredConnectionKind,
    pub status: StoredConnectionStatus,
    #[serde(with = "serde_bytes")]
    pub config_json: Vec<u8>,
    /// XChaCha20-Poly1305 sealed JSON of the connection's secrets.
    #[serde(with = "serde_bytes")]
    pub sealed_secrets: Vec<u8>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

single_version_record!(ConnectionRecord, "connection");
mirror_enum!(
    StoredConnectionKind,
    ConnectionKind {
        Webhook,
        Slack,
        Email,
        PagerDuty,
        Teams,
        Discord
    }
);
mirror_enum!(
    StoredConnectionStatus,
    ConnectionStatus {
        Active,
        NeedsReauth,
        Disabled
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredConnectionKind {
    Webhook,
    Slack,
    Email,
    // Appended: postcard writes the variant index, so never reorder.
    PagerDuty,
    Teams,
    Discord,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredConnectionStatus {
    Active,
    NeedsReauth,
    Disabled,
}

/// A routing rule, version 2: version 1 plus the noise controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    pub name: String,
    pub events: Vec<String>,
    pub connection_id: u128,
    #[serde(with = "serde_bytes")]
    pub target_json: Vec<u8>,
    pub min_severity: Option<String>,
    #[serde(with = "serde_bytes")]
    pub conditions_json: Vec<u8>,
    pub template_json: Option<Vec<u8>>,
    pub enabled: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub dedup_seconds: Option<u32>,
    pub max_per_hour: Option<u32>,
}

/// The frozen version-1 rule body: no noise controls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RuleRecordV1 {
    name: String,
    events: Vec<String>,
    connection_id: u128,
    #[serde(with = "serde_bytes")]
    target_json: Vec<u8>,
    min_severity: Option<String>,
    #[serde(with = "serde_bytes")]
    conditions_json: Vec<u8>,
    template_json: Option<Vec<u8>>,
    enabled: bool,
    created_at_ms: u64,
    updated_at_ms: u64,
}

impl Record for RuleRecord {
    const KIND: &'static str = "rule";
    const VERSION: u8 = 2;

    fn encode(&self) -> Vec<u8> {
        encode_body(Self::VERSION, self)
    }

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let v1: RuleRecordV1 = decode_body(Self::KIND, body)?;
                Ok(Self {
                    name: v1.name,
                    events: v1.events,
                    connection_id: v1.connection_id,
                    target_json: v1.target_json,
                    min_severity: v1.min_severity,
                    conditions_json: v1.conditions_json,
                    template_json: v1.template_json,
                    enabled: v1.enabled,
                    created_at_ms: v1.created_at_ms,
                    updated_at_ms: v1.updated_at_ms,
                    dedup_seconds: None,
                    max_per_hour: None,
                })
            }
            2 => decode_body(Self::KIND, body),
            version => Err(CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
            }),
        }
    }
}

/// A delivery, version 3: version 2 plus its first attempt, kept in the
/// delivery's own row (most deliveries have one attempt, and its own table
/// row cost a B-tree write per delivery); later attempts are rows of the
/// `attempts` table, numbered from 2. Dumps still carry every attempt as
/// an attempt row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub event_id: u128,
    pub rule_id: u128,
    pub connection_id: u128,
    pub status: StoredDeliveryStatus,
    pub attempt_count: u32,
    /// Attempts since the delivery was last queued by hand; indexes the
    /// retry schedule.
    pub round_attempts: u32,
    /// Also the due time of its queue entry, which is keyed by it.
    pub next_attempt_at_ms: Option<u64>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// `Event::alert_key` of its event.
    pub alert: Option<String>,
    /// Deliveries of the same rule suppressed since the one before this.
    pub suppressed_before: u32,
    /// Its attempt number 1, once made (redb only: PostgreSQL keeps every
    /// attempt in its attempts table).
    pub first_attempt: Option<AttemptRecord>,
}

/// The frozen version-2 delivery body: version 1 plus its alert and the
/// count of deliveries its rule held back before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeliveryRecordV2 {
    event_id: u128,
    rule_id: u128,
    connection_id: u128,
    status: StoredDeliveryStatus,
    attempt_count: u32,
    round_attempts: u32,
    next_attempt_at_ms: Option<u64>,
    created_at_ms: u64,
    updated_at_ms: u64,
    alert: Option<String>,
    suppressed_before: u32,
}

/// The frozen version-1 delivery body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeliveryRecordV1 {
    event_id: u128,
    rule_id: u128,
    connection_id: u128,
    status: StoredDeliveryStatus,
    attempt_count: u32,
    round_attempts: u32,
    next_attempt_at_ms: Option<u64>,
    created_at_ms: u64,
    updated_at_ms: u64,
}

impl Record for DeliveryRecord {
    const KIND: &'static str = "delivery";
    const VERSION: u8 = 3;

    fn encode(&self) -> Vec<u8> {
        encode_body(Self::VERSION, self)
    }

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, CodecError> {
        match version {
            1 => {
                let v1: DeliveryRecordV1 = decode_body(Self::KIND, body)?;
                Ok(DeliveryRecordV2::from(v1).into())
            }
            2 => {
                let v2: DeliveryRecordV2 = decode_body(Self::KIND, body)?;
                Ok(v2.into())
            }
            3 => decode_body(Self::KIND, body),
            version => Err(CodecError::UnknownVersion {
                kind: Self::KIND,
                version,
            }),
        }
    }
}

impl From<DeliveryRecordV1> for DeliveryRecordV2 {
    fn from(v1: DeliveryRecordV1) -> Self {
        Self {
            event_id: v1.event_id,
            rule_id: v1.rule_id,
            connection_id: v1.connection_id,
            status: v1.status,
            attempt_count: v1.attempt_count,
            round_attempts: v1.round_attempts,
            next_attempt_at_ms: v1.next_attempt_at_ms,
            created_at_ms: v1.created_at_ms,
            updated_at_ms: v1.updated_at_ms,
            alert: None,
            suppressed_before: 0,
        }
    }
}

impl From<DeliveryRecordV2> for DeliveryRecord {
    fn from(v2: DeliveryRecordV2) -> Self {
        Self {
            event_id: v2.event_id,
            rule_id: v2.rule_id,
            connection_id: v2.connection_id,
            status: v2.status,
            attempt_count: v2.attempt_count,
            round_attempts: v2.round_attempts,
            next_attempt_at_ms: v2.next_attempt_at_ms,
            created_at_ms: v2.created_at_ms,
            updated_at_ms: v2.updated_at_ms,
            alert: v2.alert,
            suppressed_before: v2.suppressed_before,
            first_attempt: None,
        }
    }
}

/// Noise control of one rule (`max_per_hour`): its current hour window
/// and what it held back since its last delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleNoiseRecord {
    /// When the current window began: at the first delivery after the
    /// previous window ended.
    pub window_start_ms: u64,
    /// Deliveries sent (queued) in the current window.
    pub sent_in_window: u32,
    /// Deliveries suppressed since the last one that went out.
    pub suppressed_since_sent: u32,
}

single_version_record!(RuleNoiseRecord, "rule noise");
mirror_enum!(
    StoredDeliveryStatus,
    DeliveryStatus {
        Pending,
        Succeeded,
        Retrying,
        Dead,
        Suppressed
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredDeliveryStatus {
    Pending,
    Succeeded,
    Retrying,
    Dead,
    /// Appended: never renumber the variants above.
    Suppressed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at_ms: u64,
    pub duration_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub response: Option<String>,
}

single_version_record!(AttemptRecord, "attempt");

/// The value of a queue entry: enough to schedule it without more reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub workspace_id: u128,
    pub connection_id: u128,
}

single_version_record!(QueueRecord, "queue entry");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sample_event() -> EventRecord {
        EventRecord {
            name: "alert.triggered".into(),
            resource: Some("alert".into()),
            resource_id: None,
            payload: br#"{"value":1840}"#.to_vec(),
            received_at_ms: 1_776_441_720_000,
            deliveries: None,
        }
    }

    fn sample_event_v2() -> EventRecord {
        EventRecord {
            deliveries: Some(vec![1, u128::MAX]),
            ..sample_event()
        }
    }

    fn sample_connection() -> ConnectionRecord {
        ConnectionRecord {
            name: "ops".into(),
            kind: StoredConnectionKind::Slack,
            status: StoredConnectionStatus::NeedsReauth,
            config_json: br#"{"team_id":"T1"}"#.to_vec(),
            sealed_secrets: vec![9, 8, 7],
            created_at_ms: 1000,
            updated_at_ms: 2000,
        }
    }

    fn sample_rule() -> RuleRecord {
        RuleRecord {
            name: "hot".into(),
            events: vec!["alert.*".into(), "deploy.done".into()],
            connection_id: 7,
            target_json: br#"{"channel":"C1"}"#.to_vec(),
            min_severity: Some("high".into()),
            conditions_json: b"[]".to_vec(),
            template_json: Some(br#"{"text":"x"}"#.to_vec()),
            enabled: true,
            created_at_ms: 1000,
            updated_at_ms: 2000,
            dedup_seconds: None,
            max_per_hour: None,
        }
    }

    fn sample_rule_v2() -> RuleRecord {
        RuleRecord {
            dedup_seconds: Some(600),
            max_per_hour: Some(20),
            ..sample_rule()
        }
    }

    fn sample_delivery() -> DeliveryRecord {
        DeliveryRecord {
            event_id: 1,
            rule_id: 2,
            connection_id: 3,
            status: StoredDeliveryStatus::Retrying,
            attempt_count: 2,
            round_attempts: 1,
            next_attempt_at_ms: Some(5000),
            created_at_ms: 1000,
            updated_at_ms: 2000,
            alert: None,
            suppressed_before: 0,
            first_attempt: None,
        }
    }

    fn sample_delivery_v2() -> DeliveryRecord {
        DeliveryRecord {
            status: StoredDeliveryStatus::Suppressed,
            next_attempt_at_ms: None,
            alert: Some("5:alert:a1".into()),
            suppressed_before: 3,
            ..sample_delivery()
        }
    }

    fn sample_rule_noise() -> RuleNoiseRecord {
        RuleNoiseRecord {
            window_start_ms: 1_776_441_720_000,
            sent_in_window: 20,
            suppressed_since_sent: 7,
        }
    }

    fn sample_attempt() -> AttemptRecord {
        AttemptRecord {
            at_ms: 1000,
            duration_ms: 15,
            status_code: Some(503),
            error: Some("busy".into()),
            response: None,
        }
    }

    fn sample_queue_entry() -> QueueRecord {
        QueueRecord {
            workspace_id: 1,
            connection_id: u128::MAX,
        }
    }

    // Version-1 bytes as written by the first release. If one of these fails,
    // the disk format changed: add a new version instead of editing V1.
    const EVENT_V1: &str = "010f616c6572742e7472696767657265640105616c657274000e7b2276616c7565223a313834307dc0f9b5e1d933";
    const WORKSPACE_V1: &str = "010461636d65e80701010101010101010101010101010101010101010101010101010101010101010202020202020202020202020202020202020202020202020202020202020202";
    const API_KEY_V1: &str = "012a01";
    const IDEMPOTENCY_V1: &str = "0101ca01027b7d";
    const CONNECTION_V1: &str = "01036f70730101107b227465616d5f6964223a225431227d03090807e807d00f";
    const RULE_V1: &str = "0103686f740207616c6572742e2a0b6465706c6f792e646f6e6507107b226368616e6e656c223a224331227d010468696768025b5d010c7b2274657874223a2278227d01e807d00f";
    const DELIVERY_V1: &str = "01010203020201018827e807d00f";
    const ATTEMPT_V1: &str = "01e8070f01f70301046275737900";
    const QUEUE_V1: &str = "0101ffffffffffffffffffffffffffffffffffff03";
    // Version-2 bytes, frozen the same way once released.
    const RULE_V2: &str = "0203686f740207616c6572742e2a0b6465706c6f792e646f6e6507107b226368616e6e656c223a224331227d010468696768025b5d010c7b2274657874223a2278227d01e807d00f01d8040114";
    // Version-2 bytes: an event listing its deliveries.
    const EVENT_V2: &str = "020f616c6572742e7472696767657265640105616c657274000e7b2276616c7565223a313834307dc0f9b5e1d933010201ffffffffffffffffffffffffffffffffffff03";
    const DELIVERY_V2: &str = "0201020304020100e807d00f010a353a616c6572743a613103";
    // Version-3 bytes: a delivery with its first attempt in its own row.
    const DELIVERY_V3: &str =
        "0301020304020100e807d00f010a353a616c6572743a61310301e8070f01f70301046275737900";
    const RULE_NOISE_V1: &str = "01c0f9b5e1d9331407";
    const WORKSPACE_V2: &str = "020461636d65e80701010101010101010101010101010101010101010101010101010101010101010202020202020202020202020202020202020202020202020202020202020202010303030303030303030303030303030303030303030303030303030303030303";
    /// An API key record of the kind appended for Meshes keys (index 2).
    const MESHES_API_KEY_V1: &str = "012a02";

    #[test]
    fn version_one_records_still_decode() {
        assert_eq!(
            EventRecord::decode(&unhex(EVENT_V1)).unwrap(),
            sample_event()
        );
        assert_eq!(
            WorkspaceRecord::decode(&unhex(WORKSPACE_V1)).unwrap(),
            WorkspaceRecord {
                name: "acme".into(),
                created_at_ms: 1000,
                publishable_key_hash: [1; 32],
                secret_key_hash: [2; 32],
                meshes_key_hash: None,
            }
        );
        assert_eq!(
            ApiKeyRecord::decode(&unhex(API_KEY_V1)).unwrap(),
            ApiKeyRecord {
                workspace_id: 42,
                kind: StoredKeyKind::Secret,
            }
        );
        assert_eq!(
            IdempotencyRecord::decode(&unhex(IDEMPOTENCY_V1)).unwrap(),
            IdempotencyRecord {
                created_at_ms: 1,
                status: 202,
                response: b"{}".to_vec(),
            }
        );
    }

    #[test]
    fn current_encoding_of_version_one_is_pinned() {
        assert_eq!(hex(&sample_connection().encode()), CONNECTION_V1);
        assert_eq!(hex(&sample_attempt().encode()), ATTEMPT_V1);
        assert_eq!(hex(&sample_queue_entry().encode()), QUEUE_V1);
    }

    #[test]
    fn current_encoding_of_version_two_is_pinned() {
        assert_eq!(hex(&sample_rule_v2().encode()), RULE_V2);
        assert_eq!(hex(&sample_rule_noise().encode()), RULE_NOISE_V1);
        assert_eq!(
            RuleRecord::decode(&unhex(RULE_V2)).unwrap(),
            sample_rule_v2()
        );
        assert_eq!(
            DeliveryRecord::decode(&unhex(DELIVERY_V2)).unwrap(),
            sample_delivery_v2()
        );
        assert_eq!(
            RuleNoiseRecord::decode(&unhex(RULE_NOISE_V1)).unwrap(),
            sample_rule_noise()
        );
        // The statuses before `Suppressed` kept their numbers.
        let dead = DeliveryRecord {
            status: StoredDeliveryStatus::Dead,
            ..sample_delivery_v2()
        };
        assert_eq!(dead.encode()[4], 3);
    }

    #[test]
    fn event_version_two_is_pinned_and_a_version_one_event_lists_no_deliveries() {
        assert_eq!(hex(&sample_event_v2().encode()), EVENT_V2);
        assert_eq!(
            EventRecord::decode(&unhex(EVENT_V2)).unwrap(),
            sample_event_v2()
        );
        // Version 1 had no list: its deliveries are in the index.
        assert_eq!(
            EventRecord::decode(&unhex(EVENT_V1)).unwrap().deliveries,
            None
        );
        assert!(EventRecord::is_version_one(&unhex(EVENT_V1)));
        assert_eq!(hex(&sample_event_v2().encode_version_one()), EVENT_V1);
        assert!(!EventRecord::is_version_one(&unhex(EVENT_V2)));
        let no_list = EventRecord {
            deliveries: None,
            ..sample_event_v2()
        };
        assert_eq!(EventRecord::decode(&no_list.encode()).unwrap(), no_list);
    }

    #[test]
    fn delivery_version_three_is_pinned_and_keeps_the_first_attempt() {
        let delivery = DeliveryRecord {
            first_attempt: Some(sample_attempt()),
            ..sample_delivery_v2()
        };
        assert_eq!(hex(&delivery.encode()), DELIVERY_V3);
        assert_eq!(
            DeliveryRecord::decode(&unhex(DELIVERY_V3)).unwrap(),
            delivery
        );
        // Version 3 is version 2's body with the attempt appended.
        let without = sample_delivery_v2().encode();
        assert_eq!(
            without[1..],
            unhex(DELIVERY_V2)[1..]
                .iter()
                .copied()
                .chain([0])
                .collect::<Vec<u8>>()
        );
    }

    #[test]
    fn workspace_version_two_and_the_meshes_key_kind_are_pinned() {
        let workspace = WorkspaceRecord {
            name: "acme".into(),
            created_at_ms: 1000,
            publishable_key_hash: [1; 32],
            secret_key_hash: [2; 32],
            meshes_key_hash: Some([3; 32]),
        };
        assert_eq!(hex(&workspace.encode()), WORKSPACE_V2);
        assert_eq!(
            WorkspaceRecord::decode(&unhex(WORKSPACE_V2)).unwrap(),
            workspace
        );
        let key = ApiKeyRecord {
            workspace_id: 42,
            kind: StoredKeyKind::MeshesPublishable,
        };
        assert_eq!(hex(&key.encode()), MESHES_API_KEY_V1);
        assert_eq!(
            ApiKeyRecord::decode(&unhex(MESHES_API_KEY_V1)).unwrap(),
            key
        );
        assert_eq!(
            ApiKeyRecord::decode(&unhex(API_KEY_V1)).unwrap().kind,
            StoredKeyKind::Secret
        );
    }

    #[test]
    fn version_one_engine_records_still_decode() {
        assert_eq!(
            ConnectionRecord::decode(&unhex(CONNECTION_V1)).unwrap(),
            sample_connection()
        );
        assert_eq!(RuleRecord::decode(&unhex(RULE_V1)).unwrap(), sample_rule());
        assert_eq!(
            DeliveryRecord::decode(&unhex(DELIVERY_V1)).unwrap(),
            sample_delivery()
        );
        assert_eq!(
            AttemptRecord::decode(&unhex(ATTEMPT_V1)).unwrap(),
            sample_attempt()
        );
        assert_eq!(
            QueueRecord::decode(&unhex(QUEUE_V1)).unwrap(),
            sample_queue_entry()
        );
    }

    /// Kinds appended after the first release keep their variant index.
    const PAGERDUTY_CONNECTION_V1: &str = "01036f70730300027b7d03090807e807d00f";

    #[test]
    fn appended_connection_kinds_are_pinned() {
        let pagerduty = ConnectionRecord {
            kind: StoredConnectionKind::PagerDuty,
            status: StoredConnectionStatus::Active,
            config_json: b"{}".to_vec(),
            ..sample_connection()
        };
        assert_eq!(hex(&pagerduty.encode()), PAGERDUTY_CONNECTION_V1);
        assert_eq!(
            ConnectionRecord::decode(&unhex(PAGERDUTY_CONNECTION_V1)).unwrap(),
            pagerduty
        );
    }

    /// Postcard writes a kind as its variant index (one varint byte), so
    /// these must never move. A kind appended later takes the next index.
    #[test]
    fn connection_kind_indices_are_pinned() {
        for (kind, index) in [
            (StoredConnectionKind::Webhook, 0u8),
            (StoredConnectionKind::Slack, 1),
            (StoredConnectionKind::Email, 2),
            (StoredConnectionKind::PagerDuty, 3),
            (StoredConnectionKind::Teams, 4),
            (StoredConnectionKind::Discord, 5),
        ] {
            let record = ConnectionRecord {
                kind,
                ..sample_connection()
            };
            let mut expected = unhex(CONNECTION_V1);
            // Version byte, then the name ("ops", length-prefixed), then the kind.
            expected[5] = index;
            assert_eq!(record.encode(), expected, "{kind:?}");
            assert_eq!(ConnectionRecord::decode(&expected).unwrap(), record);
            assert_eq!(StoredConnectionKind::from(ConnectionKind::from(kind)), kind);
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors_not_panics() {
        let mut bytes = sample_event().encode();
        bytes[0] = 99;
        assert!(matches!(
            EventRecord::decode(&bytes),
            Err(CodecError::UnknownVersion { version: 99, .. })
        ));
        assert!(matches!(
            EventRecord::decode(&[]),
            Err(CodecError::Empty { .. })
        ));
        assert!(matches!(
            EventRecord::decode(&[1, 0xff]),
            Err(CodecError::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn event_records_round_trip(
            name in "[A-Za-z0-9_.:-]{1,128}",
            resource in proptest::option::of(".{0,64}"),
            resource_id in proptest::option::of(".{0,64}"),
            payload in proptest::collection::vec(any::<u8>(), 0..2048),
            received_at_ms in any::<u64>(),
            deliveries in proptest::option::of(proptest::collection::vec(any::<u128>(), 0..8)),
        ) {
            let record = EventRecord {
                name, resource, resource_id, payload, received_at_ms, deliveries,
            };
            prop_assert_eq!(EventRecord::decode(&record.encode()).unwrap(), record);
        }

        #[test]
        fn workspace_records_round_trip(
            name in ".{0,128}",
            created_at_ms in any::<u64>(),
            pk in any::<[u8; 32]>(),
            sk in any::<[u8; 32]>(),
            meshes in proptest::option::of(any::<[u8; 32]>()),
        ) {
            let record = WorkspaceRecord {
                name,
                created_at_ms,
                publishable_key_hash: pk,
                secret_key_hash: sk,
                meshes_key_hash: meshes,
            };
            prop_assert_eq!(WorkspaceRecord::decode(&record.encode()).unwrap(), record);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = EventRecord::decode(&bytes);
            let _ = WorkspaceRecord::decode(&bytes);
            let _ = ApiKeyRecord::decode(&bytes);
            let _ = IdempotencyRecord::decode(&bytes);
        }
    }
}
