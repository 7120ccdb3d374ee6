//! A PagerDuty connection's parts: no public config, and the sealed
//! integration (routing) key, which answers show only as `********`.

use crate::destinations::{Invalid, NewConnection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Length of an Events API v2 integration key.
pub const ROUTING_KEY_CHARS: usize = 32;

/// The sealed part. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PagerDutySecrets {
    pub routing_key: String,
}

impl std::fmt::Debug for PagerDutySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutySecrets")
            .field("routing_key", &"********")
            .finish()
    }
}

/// What a tenant sends as a PagerDuty connection's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PagerDutyInput {
    routing_key: String,
}

/// Checks the tenant's config: an integration key is 32 letters and
/// digits (PagerDuty answers 400 to any other length, so refuse it now
/// rather than at the first alert).
fn checked_secrets(config: &Value) -> Result<Value, Invalid> {
    let input =
        PagerDutyInput::deserialize(config).map_err(|error| Invalid::new("config", error))?;
    let routing_key = input.routing_key.trim();
    if routing_key.len() != ROUTING_KEY_CHARS
        || !routing_key.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(Invalid::new(
            "config.routing_key",
            format!(
                "must be the integration key of an Events API v2 integration: \
                 {ROUTING_KEY_CHARS} letters and digits"
            ),
        ));
    }
    let secrets = PagerDutySecrets {
        routing_key: routing_key.to_string(),
    };
    serde_json::to_value(secrets).map_err(|error| Invalid::new("config", error))
}

/// A new connection: nothing public, the routing key sealed.
pub fn create(config: &Value) -> Result<NewConnection, Invalid> {
    Ok(NewConnection {
        config: json!({}),
        secrets: checked_secrets(config)?,
        shown_once: None,
    })
}

/// A new routing key replaces the old one.
pub fn update(config: &Value) -> Result<(Value, Value), Invalid> {
    Ok((json!({}), checked_secrets(config)?))
}

/// The config as answers show it: the key masked as webhook header values
/// are.
pub fn shown() -> Value {
    json!({"routing_key": "********"})
}

/// PagerDuty rules take no target: the routing key names the service.
pub fn validate_target(target: &Value) -> Result<Value, Invalid> {
    match target {
        Value::Null => Ok(json!({})),
        Value::Object(map) if map.is_empty() => Ok(json!({})),
        _ => Err(Invalid::new("target", "pagerduty rules take no target")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "e93facc04764012d7bfb002500d5d1a6";

    #[test]
    fn the_routing_key_is_sealed_and_never_shown() {
        let created = create(&json!({"routing_key": KEY})).unwrap();
        assert_eq!(created.config, json!({}));
        assert_eq!(created.secrets, json!({"routing_key": KEY}));
        assert_eq!(created.shown_once, None);
        assert!(!shown().to_string().contains(KEY));
        let secrets = PagerDutySecrets {
            routing_key: KEY.into(),
        };
        assert!(!format!("{secrets:?}").contains(KEY));
    }

    #[test]
    fn only_integration_keys_are_accepted() {
        for bad in [
            json!({}),
            json!({"routing_key": ""}),
            json!({"routing_key": "short"}),
            json!({"routing_key": format!("{KEY}0")}),
            json!({"routing_key": "e93facc04764012d7bfb002500d5d1a-"}),
            json!({"routing_key": KEY, "url": "https://example.com"}),
        ] {
            assert!(create(&bad).is_err(), "{bad}");
        }
        let padded = create(&json!({"routing_key": format!(" {KEY} ")})).unwrap();
        assert_eq!(padded.secrets["routing_key"], KEY);
        assert_eq!(
            update(&json!({"routing_key": KEY})).unwrap().1["routing_key"],
            KEY
        );
    }

    #[test]
    fn rules_take_no_target() {
        assert_eq!(validate_target(&Value::Null).unwrap(), json!({}));
        assert_eq!(validate_target(&json!({})).unwrap(), json!({}));
        assert!(validate_target(&json!({"channel": "C1"})).is_err());
    }
}
