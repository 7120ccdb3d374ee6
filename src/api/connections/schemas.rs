//! The create body by connection type, for the API document only. The
//! handler reads `config` as JSON and each destination kind checks its own
//! (`destinations/<kind>/`), so no Rust type holds these shapes; the test
//! below keeps them in step with `ConnectionKind`.

use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A connection as created, by `type`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
#[allow(dead_code)] // read by utoipa only
pub enum CreateConnection {
    /// The answer includes `signing_secret` (`whsec_…`), shown only here.
    Webhook(CreateWebhookConnection),
    /// A Slack connection from a pasted bot token; the OAuth install
    /// (`POST /v1/connections/slack/authorize`) is the other way.
    Slack(CreateSlackConnection),
    /// An email sender; the instance holds the provider credentials.
    Email(CreateEmailConnection),
    /// PagerDuty through the Events API v2. Rules for it take no `target`;
    /// `alert.acknowledged` and `alert.resolved` acknowledge and resolve the
    /// alert `alert.triggered` opened.
    #[serde(rename = "pagerduty")]
    PagerDuty(CreatePagerDutyConnection),
    /// A Microsoft Teams channel through a Workflows flow ("post to a
    /// channel when a webhook request is received"). The URL is a
    /// credential: sealed at rest and read back as `https://host/********`.
    /// Each event is posted as an Adaptive Card message; rules take no
    /// target.
    Teams(CreateSecretUrlConnection),
    /// A Discord channel webhook
    /// (`https://discord.com/api/webhooks/{id}/{token}`). The URL is a
    /// credential: sealed at rest and read back as `https://host/********`.
    /// Each event is posted as one embed that mentions no one; rules take
    /// no target.
    Discord(CreateSecretUrlConnection),
}

macro_rules! create_bodies {
    ($($name:ident => $config:ty;)*) => {$(
        #[derive(Deserialize, ToSchema)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // read by utoipa only
        pub struct $name {
            /// 1 to 128 characters after trimming.
            #[schema(min_length = 1, max_length = 128)]
            name: String,
            config: $config,
        }
    )*};
}

create_bodies! {
    CreateWebhookConnection => WebhookConfigInput;
    CreateSlackConnection => SlackConfigInput;
    CreateEmailConnection => EmailConfigInput;
    CreatePagerDutyConnection => PagerDutyConfigInput;
    CreateSecretUrlConnection => SecretUrlConfigInput;
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by utoipa only
pub struct WebhookConfigInput {
    /// http or https. Hosts resolving to loopback, private, link-local,
    /// unique-local or metadata addresses are refused unless
    /// `delivery.allow_private_networks` is set.
    #[schema(format = "uri")]
    url: String,
    /// Extra request headers (often credentials), sealed at rest and masked
    /// as `********` when read back. `webhook-*`, `content-type`,
    /// `content-length`, `host`, `transfer-encoding` and `connection` are
    /// reserved. At most 20.
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by utoipa only
pub struct SlackConfigInput {
    /// A Slack bot token (`xoxb-…`), checked with `auth.test` (422 if Slack
    /// refuses it).
    #[schema(pattern = "^xox")]
    bot_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by utoipa only
pub struct EmailConfigInput {
    /// Must be configured on the instance (`email.resend.*` or
    /// `email.smtp.*`).
    provider: EmailProvider,
    /// A mailbox, `Name <address>` or a bare address.
    #[schema(example = "Alerts <alerts@example.com>")]
    from: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // read by utoipa only
pub enum EmailProvider {
    Resend,
    Smtp,
}

/// Sealed at rest and never returned: answers show
/// `{"routing_key": "********"}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by utoipa only
pub struct PagerDutyConfigInput {
    /// The integration key of an Events API v2 integration on the
    /// PagerDuty service.
    #[schema(min_length = 32, max_length = 32, pattern = "^[A-Za-z0-9]{32}$")]
    routing_key: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by utoipa only
pub struct SecretUrlConfigInput {
    /// http or https, pasted from Teams or Discord. Hosts resolving to
    /// loopback, private, link-local, unique-local or metadata addresses
    /// are refused unless `delivery.allow_private_networks` is set.
    #[schema(format = "uri")]
    url: String,
}

/// A new config on `PATCH /v1/connections/{id}`, for the kinds that take one.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // read by utoipa only
pub enum UpdateConfig {
    Webhook(WebhookConfigInput),
    PagerDuty(PagerDutyConfigInput),
    SecretUrl(SecretUrlConfigInput),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConnectionKind;
    use utoipa::PartialSchema;

    #[test]
    fn every_connection_type_has_a_documented_create_body() {
        let schema = serde_json::to_string(&CreateConnection::schema()).unwrap();
        for kind in ConnectionKind::ALL {
            assert!(
                schema.contains(&format!("\"{}\"", kind.as_str())),
                "CreateConnection does not document type {}: {schema}",
                kind.as_str()
            );
        }
    }
}
