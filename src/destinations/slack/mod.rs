//! Slack: alerts posted with `chat.postMessage` in the tenant's workspace,
//! with the bot token from an OAuth v2 install (optionally rotating) or one
//! the tenant pasted.
//!
//! The usual destination shape, split in four:
//! - this file: the stored types ([`SlackConfig`] public, [`SlackSecrets`]
//!   sealed) and the channel picker's [`Channel`];
//! - [`api`]: a thin Web API client ([`SlackApi`]); every answer's `ok` is
//!   checked, since Slack reports errors as HTTP 200 `{"ok":false}`;
//! - [`render`]: the `chat.postMessage` body, pure ([`render_message`]);
//! - [`classify`]: an answer's error class ([`classify()`]) and the engine's
//!   [`Outcome`](super::Outcome) ([`into_outcome`]).
//!
//! Token refresh, pacing and the channel cache live in
//! `destinations::slack_delivery`, which calls into this module.

pub mod api;
pub mod classify;
pub mod render;

pub use api::{AuthTest, OAuthAccess, OAuthTeam, PostAnswer, SlackApi, SlackError};
pub use classify::{SlackVerdict, classify, into_outcome};
pub use render::{escape, render_message};

use serde::{Deserialize, Serialize};
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

/// A channel the bot can be pointed at, for the rule editor's picker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: String,
    pub name: String,
    pub is_private: bool,
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
