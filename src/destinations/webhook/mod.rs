//! Signed webhooks following the Standard Webhooks specification:
//! `webhook-id` (the delivery id, the same on every attempt),
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `{id}.{timestamp}.{body}`; body `{type, timestamp, data, event_id,
//! resource, resource_id}`. A 2xx answer is success.
//!
//! [`config`]: the URL (guarded) and the sealed secrets and headers;
//! [`render`]: the body, pure; [`signing`]: the signatures; this file: the
//! send and [`classify()`].

pub mod config;
pub mod render;
pub mod signing;

pub use config::{PreviousSecret, WebhookConfig, WebhookSecrets, validate};
pub use render::{Body as WebhookPayload, render_body};

use crate::destinations::net::check_url;
use crate::destinations::retry_after::parse_retry_after;
use crate::destinations::{
    BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict, response_excerpt,
    transport_outcome,
};
use crate::model::{ConnectionKind, ConnectionStatus};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use signing::{WebhookSecret, signature_header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

impl Destination for Webhook {
    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Webhook
    }

    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        Box::pin(config::create(config, self.allow_private))
    }

    fn update<'a>(
        &'a self,
        config: &'a Value,
        secrets: Value,
    ) -> BoxFuture<'a, Result<(Value, Value), Invalid>> {
        Box::pin(config::update(config, secrets, self.allow_private))
    }

    fn shown_config(&self, config: &Value, secrets: &dyn Fn() -> Option<Value>) -> Value {
        config::shown(config, secrets())
    }

    fn validate_target(&self, target: &Value) -> Result<Value, Invalid> {
        config::validate_target(target)
    }

    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(job))
    }
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

    async fn post(&self, job: &Job<'_>) -> Outcome {
        // Deserialized from the borrowed values: no copy of either tree.
        let config = match WebhookConfig::deserialize(&job.connection.config) {
            Ok(config) => config,
            Err(error) => return Outcome::permanent(format!("invalid webhook config: {error}")),
        };
        let secrets = match WebhookSecrets::deserialize(job.secrets) {
            Ok(secrets) => secrets,
            Err(error) => return Outcome::permanent(format!("invalid webhook secrets: {error}")),
        };
        // Checked again at send time: the setting may have changed, and
        // reqwest does not consult the resolver for IP-literal hosts. The
        // parsed URL is what is sent, so it is parsed once.
        let url = match check_url(&config.url, self.allow_private) {
            Ok(url) => url,
            Err(error) => return Outcome::permanent(format!("refused: {error}")),
        };
        let now = job.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = now.as_secs() as i64;
        let body = render_body(job.event, job.delivery.suppressed_before);
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
            .post(url)
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
