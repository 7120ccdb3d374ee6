//! Slack: alerts posted with `chat.postMessage` in the tenant's workspace,
//! with the bot token from an OAuth v2 install (optionally rotating) or one
//! the tenant pasted.
//!
//! The usual destination shape:
//! - [`config`]: the stored types ([`SlackConfig`] public, [`SlackSecrets`]
//!   sealed), a connection from a pasted bot token, the rule's target;
//! - [`api`]: a thin Web API client ([`SlackApi`]); every answer's `ok` is
//!   checked, since Slack reports errors as HTTP 200 `{"ok":false}`;
//! - [`render`]: the `chat.postMessage` body, pure ([`render_message`]);
//! - [`classify`]: an answer's error class ([`classify()`]) and the engine's
//!   [`Outcome`](super::Outcome) ([`into_outcome`]).
//!
//! - [`delivery`]: the [`Destination`](super::Destination) itself ([`Slack`]):
//!   token refresh through the [`SecretsPort`](super::SecretsPort), alert
//!   threads through the [`ThreadPort`](super::ThreadPort), pacing and the
//!   channel cache.
//!
//! This file holds the channel picker's [`Channel`].

pub mod api;
pub mod classify;
pub mod config;
pub mod delivery;
pub mod render;

pub use api::{AuthTest, OAuthAccess, OAuthTeam, PostAnswer, SlackApi, SlackError};
pub use classify::{SlackVerdict, classify, into_outcome};
pub use config::{SlackConfig, SlackSecrets};
pub use delivery::Slack;
pub use render::{escape, render_message, render_update};

use serde::{Deserialize, Serialize};

/// A channel the bot can be pointed at, for the rule editor's picker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = SlackChannel)]
pub struct Channel {
    #[schema(example = "C0123456789")]
    pub id: String,
    pub name: String,
    pub is_private: bool,
}
