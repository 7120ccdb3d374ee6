//! Signed webhooks following the Standard Webhooks specification:
//! `webhook-id` (the delivery id, the same on every attempt),
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}`; body `{type, timestamp, data, event_id,
//! resource, resource_id}`. A 2xx answer is success.

use super::{Job, Outcome, Verdict, response_excerpt, transport_outcome};
use crate::delivery::net::{TargetError, check_url};
use crate::delivery::retry::parse_retry_after;
use crate::delivery::signing::{WebhookSecret, signature_header};
use crate::model::{ConnectionStatus, Event, format_timestamp_ms};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    check_url(url, allow_private)?;
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

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: String,
    data: &'a RawValue,
    event_id: String,
    resource: Option<&'a str>,
    resource_id: Option<&'a str>,
}

/// The request body of an event; pure, so tests pin it.
pub fn render_body(event: &Event) -> Vec<u8> {
    // Payloads are validated JSON objects at ingest.
    let data = serde_json::from_slice::<&RawValue>(&event.payload).unwrap_or(RawValue::NULL);
    let body = Body {
        kind: event.name.as_str(),
        timestamp: format_timestamp_ms(event.received_at_ms),
        data,
        event_id: event.id.to_string(),
        resource: event.resource.as_deref(),
        resource_id: event.resource_id.as_deref(),
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The signing secrets in force at `now_ms`: the current one, then the
/// previous one while its overlap lasts.
pub fn active_secrets(secrets: &WebhookSecrets, now_ms: u64) -> Result<Vec<WebhookSecret>, String> {
    let mut active = vec![parse_secret(&secrets.signing_secret)?];
    if let Some(previous) = &secrets.previous
        && now_ms < previous.expires_at_ms
    {
        active.push(parse_secret(&previous.signing_secret)?);
    }
    Ok(active)
}

fn parse_secret(text: &str) -> Result<WebhookSecret, String> {
    WebhookSecret::parse(text).map_err(|error| format!("stored signing secret is invalid: {error}"))
}

/// How an HTTP answer classifies; pure.
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    match status {
        StatusCode::GONE => Verdict::Permanent {
            error: "endpoint answered 410 Gone; connection disabled".into(),
            connection_status: Some(ConnectionStatus::Disabled),
        },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Verdict::Retry {
            error: format!("HTTP {status}"),
            retry_after,
        },
        _ => Verdict::Retry {
            error: format!("HTTP {status}"),
            retry_after: None,
        },
    }
}

pub struct Webhook {
    http: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl Webhook {
    /// `http` must be the guarded tenant client (no redirects, private
    /// addresses refused at connect time unless allowed).
    pub fn new(http: reqwest::Client, allow_private: bool, timeout: Duration) -> Self {
        Self {
            http,
            allow_private,
            timeout,
        }
    }

    pub async fn send(&self, job: &Job<'_>) -> Outcome {
        let config: WebhookConfig = match serde_json::from_value(job.connection.config.clone()) {
            Ok(config) => config,
            Err(error) => return Outcome::permanent(format!("invalid webhook config: {error}")),
        };
        let secrets: WebhookSecrets = match serde_json::from_value(job.secrets.clone()) {
            Ok(secrets) => secrets,
            Err(error) => return Outcome::permanent(format!("invalid webhook secrets: {error}")),
        };
        // Checked again at send time: the setting may have changed, and
        // reqwest does not consult the resolver for IP-literal hosts.
        if let Err(error) = check_url(&config.url, self.allow_private) {
            return Outcome::permanent(format!("refused: {error}"));
        }
        let now = job.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = now.as_secs() as i64;
        let body = render_body(job.event);
        let msg_id = job.delivery.id.to_string();
        let signing = match active_secrets(&secrets, now.as_millis() as u64) {
            Ok(signing) => signing,
            Err(error) => return Outcome::permanent(error),
        };
        let signing: Vec<&WebhookSecret> = signing.iter().collect();
        let mut headers = HeaderMap::new();
        for (name, value) in &secrets.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        let request = self
            .http
            .post(&config.url)
            .headers(headers)
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature_header(&signing, &msg_id, timestamp, &body),
            )
            .body(body);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                Outcome {
                    status_code: Some(status.as_u16()),
                    response: response_excerpt(response).await,
                    verdict: classify(status, retry_after),
                }
            }
            Err(error) => transport_outcome(&error, self.timeout),
        }
    }
}
