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
use crate::destinations::opened::PerConnection;
use crate::destinations::retry_after::parse_retry_after;
use crate::destinations::{
    BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict, response_excerpt,
    transport_outcome,
};
use crate::model::{ConnectionKind, ConnectionStatus};
use reqwest::StatusCode;
use reqwest::Url;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;
use signing::{SigningKey, WebhookSecret, signature_header_keyed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What every attempt of a connection sends the same way, made once per
/// config and sealed secrets ([`PerConnection`]): the checked URL, the
/// tenant's headers and the HMAC keys.
struct Prepared {
    url: Url,
    headers: HeaderMap,
    current: SigningKey,
    /// The secret before a rotation, signing beside the current one until
    /// it expires; an invalid one is an error only while it would sign.
    previous: Option<(Result<SigningKey, String>, u64)>,
}

impl Prepared {
    fn new(config: &Value, secrets: &Value, allow_private: bool) -> Result<Self, String> {
        // Deserialized from the borrowed values: no copy of either tree.
        let config = WebhookConfig::deserialize(config)
            .map_err(|error| format!("invalid webhook config: {error}"))?;
        let secrets = WebhookSecrets::deserialize(secrets)
            .map_err(|error| format!("invalid webhook secrets: {error}"))?;
        // Checked again before sending (the setting may have changed since
        // the connection was saved, and reqwest does not consult the
        // resolver for IP-literal hosts). The parsed URL is what is sent.
        let url =
            check_url(&config.url, allow_private).map_err(|error| format!("refused: {error}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &secrets.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        Ok(Self {
            url,
            headers,
            current: signing_key(&secrets.signing_secret)?,
            previous: secrets.previous.map(|previous| {
                (
                    signing_key(&previous.signing_secret),
                    previous.expires_at_ms,
                )
            }),
        })
    }

    /// The keys signing at `now_ms`: the current one, then the previous one
    /// while its overlap lasts.
    fn signing_keys(&self, now_ms: u64) -> Result<Vec<&SigningKey>, String> {
        let mut keys = vec![&self.current];
        if let Some((previous, expires_at_ms)) = &self.previous
            && now_ms < *expires_at_ms
        {
            keys.push(previous.as_ref().map_err(Clone::clone)?);
        }
        Ok(keys)
    }
}

fn signing_key(text: &str) -> Result<SigningKey, String> {
    WebhookSecret::parse(text)
        .map(|secret| SigningKey::new(&secret))
        .map_err(|error| format!("stored signing secret is invalid: {error}"))
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
    prepared: PerConnection<Prepared>,
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
            prepared: PerConnection::default(),
        }
    }

    async fn post(&self, job: &Job<'_>) -> Outcome {
        let prepared = match self.prepared.get_or_make(job.connection, || {
            Prepared::new(&job.connection.config, job.secrets, self.allow_private)
        }) {
            Ok(prepared) => prepared,
            Err(error) => return Outcome::permanent(error),
        };
        let now = job.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = now.as_secs() as i64;
        let body = render_body(job.event, job.delivery.suppressed_before);
        let msg_id = job.delivery.id.to_string();
        let keys = match prepared.signing_keys(now.as_millis() as u64) {
            Ok(keys) => keys,
            Err(error) => return Outcome::permanent(error),
        };
        let request = self
            .http
            .post(prepared.url.clone())
            .headers(prepared.headers.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature_header_keyed(&keys, &msg_id, timestamp, &body),
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
