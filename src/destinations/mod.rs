//! One module per destination kind, each the same shape: validate its
//! config, render the request (pure, pinned by tests), send it, classify the
//! answer into an [`Outcome`]. The engine sees only [`Destinations::send`].

pub mod email;
pub mod message;
pub mod slack;
pub mod slack_delivery;
pub mod webhook;

use crate::config::Config;
use crate::crypto::{CryptoError, MasterKey};
use crate::model::{
    Connection, ConnectionId, ConnectionKind, ConnectionStatus, Delivery, Event, Rule,
};
use crate::store::Store;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How much of an answer is kept with the attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status_code: Option<u16>,
    /// The first [`RESPONSE_EXCERPT_BYTES`] of the answer.
    pub response: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt; `retry_after` replaces the schedule's delay.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed as is; `connection_status` marks the connection.
    Permanent {
        error: String,
        connection_status: Option<ConnectionStatus>,
    },
}

impl Outcome {
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            status_code: None,
            response: None,
            verdict: Verdict::Permanent {
                error: error.into(),
                connection_status: None,
            },
        }
    }

    pub fn retry(error: impl Into<String>) -> Self {
        Self {
            status_code: None,
            response: None,
            verdict: Verdict::Retry {
                error: error.into(),
                retry_after: None,
            },
        }
    }
}

/// Everything a destination needs for one attempt.
pub struct Job<'a> {
    pub delivery: &'a Delivery,
    pub event: &'a Event,
    pub rule: &'a Rule,
    pub connection: &'a Connection,
    /// The connection's decrypted secrets.
    pub secrets: &'a Value,
    pub now: SystemTime,
}

/// The destination adapters, built once from the configuration.
pub struct Destinations {
    webhook: webhook::Webhook,
    email: email::Email,
    slack: slack_delivery::SlackDelivery,
}

impl Destinations {
    pub fn new(
        config: &Config,
        store: Arc<dyn Store>,
        master_key: Arc<MasterKey>,
    ) -> reqwest::Result<Self> {
        let timeout = Duration::from_secs(config.delivery.timeout_seconds);
        let allow_private = config.delivery.allow_private_networks;
        let tenant_http = crate::delivery::net::tenant_client(allow_private, timeout)?;
        // The operator's own API bases (Slack, Resend) are trusted.
        let trusted_http = crate::delivery::net::trusted_client(timeout)?;
        let slack_client = config
            .slack
            .client_id
            .clone()
            .zip(config.slack.client_secret.clone());
        Ok(Self {
            webhook: webhook::Webhook::new(tenant_http, allow_private, timeout),
            // An SMTP setup error is logged and reported by each SMTP send
            // rather than stopping the server.
            email: email::Email::new_or_degraded(config, trusted_http.clone()),
            slack: slack_delivery::SlackDelivery::new(
                slack::SlackApi::new(trusted_http, config.slack.api_base.clone()),
                store,
                master_key,
                slack_client,
                timeout,
            ),
        })
    }

    pub async fn send(&self, job: &Job<'_>) -> Outcome {
        match job.connection.kind {
            ConnectionKind::Webhook => self.webhook.send(job).await,
            ConnectionKind::Slack => self.slack.send(job).await,
            ConnectionKind::Email => self.email.send(job).await,
        }
    }

    pub fn slack_api(&self) -> &slack::SlackApi {
        self.slack.api()
    }

    /// A Slack connection's channels (cached briefly).
    pub async fn slack_channels(
        &self,
        connection: &Connection,
    ) -> Result<Vec<slack::Channel>, String> {
        self.slack.channels(connection).await
    }
}

/// Associated data binding sealed secrets to their connection, so a sealed
/// blob copied onto another record does not open.
fn secrets_aad(id: ConnectionId) -> Vec<u8> {
    let mut aad = b"switchyard:connection-secrets:".to_vec();
    aad.extend_from_slice(&id.0.to_be_bytes());
    aad
}

pub fn seal_secrets(
    key: &MasterKey,
    id: ConnectionId,
    secrets: &Value,
) -> Result<Vec<u8>, CryptoError> {
    let plaintext = serde_json::to_vec(secrets).unwrap_or_default();
    key.seal(&plaintext, &secrets_aad(id))
}

pub fn open_secrets(key: &MasterKey, connection: &Connection) -> Result<Value, CryptoError> {
    let plaintext = key.open(&connection.sealed_secrets, &secrets_aad(connection.id))?;
    serde_json::from_slice(&plaintext).map_err(|_| CryptoError::Decrypt)
}

/// Reads at most [`RESPONSE_EXCERPT_BYTES`] of a body, never the whole of a
/// large one, as lossy UTF-8.
pub async fn response_excerpt(mut response: reqwest::Response) -> Option<String> {
    let mut bytes = Vec::new();
    while bytes.len() < RESPONSE_EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    bytes.truncate(RESPONSE_EXCERPT_BYTES);
    if bytes.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Describes a transport error for the delivery log, and whether to retry.
pub fn transport_outcome(error: &reqwest::Error, timeout: Duration) -> Outcome {
    if crate::delivery::net::is_forbidden_error(error) {
        return Outcome::permanent(
            "refused: the target resolves to a private or loopback address \
             (delivery.allow_private_networks is false)",
        );
    }
    let message = if error.is_timeout() {
        format!("timed out after {}s", timeout.as_secs())
    } else if error.is_connect() {
        format!("connection failed: {}", root_cause(error))
    } else {
        format!("request failed: {}", root_cause(error))
    };
    Outcome::retry(message)
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
