//! A Slack connection's stored parts and what a tenant may send: a pasted
//! bot token (checked with `auth.test`; OAuth installs come through
//! `api/slack.rs`) and a rule target `{"channel": "C…"}`.

use super::SlackApi;
use crate::destinations::{Invalid, NewConnection};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::fmt;

/// The public part of a Slack connection, shown in the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackConfig {
    pub team_id: String,
    pub team_name: String,
    pub bot_user_id: String,
    /// The scopes granted at install; empty for a pasted bot token.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The sealed part: the bot token and, for installs with token rotation,
/// the refresh token and when the access token expires.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlackSecrets {
    pub bot_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Milliseconds since the Unix epoch; `None` for tokens that never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl fmt::Debug for SlackSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSecrets")
            .field("bot_token", &"[redacted]")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// A connection from a bot token the tenant pasted, checked with
/// `auth.test`.
pub async fn from_bot_token(api: &SlackApi, config: &Value) -> Result<NewConnection, Invalid> {
    let token = config
        .get("bot_token")
        .and_then(Value::as_str)
        .filter(|token| token.starts_with("xox"))
        .ok_or_else(|| {
            Invalid::new("config.bot_token", "a Slack bot token (xoxb-…) is required")
        })?;
    if config.as_object().is_some_and(|map| map.len() > 1) {
        return Err(Invalid::new("config", "only bot_token is allowed"));
    }
    let identity = api.auth_test(token).await.map_err(|error| {
        Invalid::new(
            "config.bot_token",
            format!("Slack refused the token: {error}"),
        )
    })?;
    let public = SlackConfig {
        team_id: identity.team_id,
        team_name: identity.team,
        bot_user_id: identity.user_id,
        scopes: Vec::new(),
    };
    let secrets = SlackSecrets {
        bot_token: token.to_string(),
        refresh_token: None,
        expires_at_ms: None,
    };
    Ok(NewConnection {
        config: serde_json::to_value(public).map_err(|error| Invalid::new("config", error))?,
        secrets: serde_json::to_value(secrets).map_err(|error| Invalid::new("config", error))?,
        shown_once: None,
    })
}

/// A rule's target: `{"channel": "C…"}` and nothing else.
pub fn validate_target(target: &Value) -> Result<Value, Invalid> {
    let channel = target
        .get("channel")
        .and_then(Value::as_str)
        .filter(|channel| !channel.is_empty() && channel.len() <= 80)
        .ok_or_else(|| Invalid::new("target.channel", "a Slack channel id is required"))?;
    if target.as_object().is_some_and(|map| map.len() > 1) {
        return Err(Invalid::new("target", "only `channel` is allowed"));
    }
    Ok(json!({"channel": channel}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_debug_hides_tokens() {
        let secrets = SlackSecrets {
            bot_token: "xoxe.xoxb-1-secret".into(),
            refresh_token: Some("xoxe-1-refresh".into()),
            expires_at_ms: Some(42),
        };
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(!shown.contains("xoxe"), "{shown}");
        assert!(shown.contains("42"));
    }

    #[test]
    fn secrets_round_trip_and_omit_absent_fields() {
        let plain = SlackSecrets {
            bot_token: "xoxb-1".into(),
            refresh_token: None,
            expires_at_ms: None,
        };
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json, serde_json::json!({"bot_token": "xoxb-1"}));
        assert_eq!(serde_json::from_value::<SlackSecrets>(json).unwrap(), plain);
    }

    #[test]
    fn config_scopes_default_to_empty() {
        let config: SlackConfig = serde_json::from_value(serde_json::json!({
            "team_id": "T1", "team_name": "Casterly Rock", "bot_user_id": "U1"
        }))
        .unwrap();
        assert!(config.scopes.is_empty());
    }
}
