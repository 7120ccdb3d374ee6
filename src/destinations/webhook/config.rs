//! A webhook connection's parts: the public [`WebhookConfig`] (the URL)
//! and the sealed [`WebhookSecrets`] (signing secrets and the tenant's
//! headers, which often carry credentials), and the checks on what the
//! tenant sends.

use super::signing::WebhookSecret;
use crate::destinations::net::{self, TargetError, TargetPolicy, check_url};
use crate::destinations::{Invalid, NewConnection};
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The public part of a webhook connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
}

/// The sealed part: signing secrets and the tenant's extra headers (which
/// often carry credentials). Its `Debug` shows header names only.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSecrets {
    pub signing_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousSecret>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("signing_secret", &"********")
            .field("previous", &self.previous.as_ref().map(|p| p.expires_at_ms))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A rotated-out secret that keeps signing until `expires_at_ms`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousSecret {
    pub signing_secret: String,
    pub expires_at_ms: u64,
}

/// Most custom headers on one endpoint.
pub const MAX_HEADERS: usize = 20;

/// Headers a tenant may not set: ours, or ones the HTTP stack owns.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("url: {0}")]
    Url(#[from] TargetError),
    #[error("headers: {0}")]
    Headers(String),
}

/// Checks a webhook URL and custom headers as the tenant sent them.
pub fn validate(
    url: &str,
    headers: &BTreeMap<String, String>,
    allow_private: bool,
) -> Result<WebhookConfig, WebhookConfigError> {
    check_url(url, allow_private).and_then(net::target_uri)?;
    if headers.len() > MAX_HEADERS {
        return Err(WebhookConfigError::Headers(format!(
            "at most {MAX_HEADERS} headers"
        )));
    }
    for (name, value) in headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| WebhookConfigError::Headers(format!("{name:?} is not a header name")))?;
        if RESERVED_HEADERS.contains(&parsed.as_str()) {
            return Err(WebhookConfigError::Headers(format!(
                "{name} is set by Switchyard"
            )));
        }
        HeaderValue::from_str(value)
            .map_err(|_| WebhookConfigError::Headers(format!("the value of {name} is invalid")))?;
    }
    Ok(WebhookConfig {
        url: url.to_string(),
    })
}

/// What a tenant sends as a webhook's config.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Checks a tenant's config (the URL's host resolved now as well, see
/// [`net::check_resolved`]) and returns the public part and the headers.
async fn checked_input(
    config: &Value,
    policy: &TargetPolicy,
) -> Result<(Value, BTreeMap<String, String>), Invalid> {
    let input = WebhookInput::deserialize(config).map_err(|error| Invalid::new("config", error))?;
    let public = validate(&input.url, &input.headers, policy.allow_private)
        .map_err(|error| Invalid::new("config", error))?;
    net::check_resolved(&public.url, policy)
        .await
        .map_err(|error| Invalid::new("config", WebhookConfigError::Url(error)))?;
    let public = serde_json::to_value(public).map_err(|error| Invalid::new("config", error))?;
    Ok((public, input.headers))
}

/// A new connection: the tenant's URL and headers, and a fresh signing
/// secret, shown once.
pub async fn create(config: &Value, policy: &TargetPolicy) -> Result<NewConnection, Invalid> {
    let (public, headers) = checked_input(config, policy).await?;
    let secret = WebhookSecret::generate().expose();
    let secrets = WebhookSecrets {
        signing_secret: secret.clone(),
        previous: None,
        headers,
    };
    Ok(NewConnection {
        config: public,
        secrets: serde_json::to_value(secrets).map_err(|error| Invalid::new("config", error))?,
        shown_once: Some(secret),
    })
}

/// A changed URL and headers; the signing secrets stay.
pub async fn update(
    config: &Value,
    secrets: Value,
    policy: &TargetPolicy,
) -> Result<(Value, Value), Invalid> {
    let (public, headers) = checked_input(config, policy).await?;
    let mut secrets: WebhookSecrets =
        serde_json::from_value(secrets).map_err(|error| Invalid::new("config", error))?;
    secrets.headers = headers;
    let secrets = serde_json::to_value(secrets).map_err(|error| Invalid::new("config", error))?;
    Ok((public, secrets))
}

/// The config as answers show it: custom header names with masked values.
pub fn shown(config: &Value, secrets: Option<Value>) -> Value {
    let mut config = config.clone();
    if let Some(secrets) = secrets
        && let Some(headers) = secrets.get("headers").and_then(Value::as_object)
        && !headers.is_empty()
    {
        let masked: serde_json::Map<String, Value> = headers
            .keys()
            .map(|name| (name.clone(), json!("********")))
            .collect();
        config["headers"] = Value::Object(masked);
    }
    config
}

/// Webhook rules take no target.
pub fn validate_target(target: &Value) -> Result<Value, Invalid> {
    match target {
        Value::Null => Ok(json!({})),
        Value::Object(map) if map.is_empty() => Ok(json!({})),
        _ => Err(Invalid::new("target", "webhook rules take no target")),
    }
}
