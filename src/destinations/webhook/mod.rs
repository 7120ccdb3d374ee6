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

use crate::destinations::net::{check_url, host_header, target_uri};
use crate::destinations::opened::PerConnection;
use crate::destinations::retry_after::parse_retry_after;
use crate::destinations::tenant_http::TenantHttp;
use crate::destinations::{BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict};
use crate::model::{ConnectionKind, ConnectionStatus};
use http::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use serde::Deserialize;
use serde_json::Value;
use signing::{SigningKey, WebhookSecret, signature_header_keyed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What every attempt of a connection sends the same way, made once per
/// config and sealed secrets ([`PerConnection`]): the checked URL, the
/// tenant's headers and the HMAC keys.
struct Prepared {
    uri: Uri,
    /// The tenant's headers and the content type.
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
        // the connection was saved, and the client does not consult the
        // resolver for IP-literal hosts). The parsed URL is what is sent.
        let uri = check_url(&config.url, allow_private)
            .and_then(target_uri)
            .map_err(|error| format!("refused: {error}"))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &secrets.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(host) = host_header(&uri) {
            headers.insert(HOST, host);
        }
        Ok(Self {
            uri,
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

const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

pub struct Webhook {
    http: TenantHttp,
    prepared: PerConnection<Prepared>,
}

impl Destination for Webhook {
    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Webhook
    }

    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        Box::pin(config::create(config, self.http.policy()))
    }

    fn update<'a>(
        &'a self,
        config: &'a Value,
        secrets: Value,
    ) -> BoxFuture<'a, Result<(Value, Value), Invalid>> {
        Box::pin(config::update(config, secrets, self.http.policy()))
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
    /// Targets are judged by `http`'s policy, when saved and when sent.
    pub fn new(http: TenantHttp) -> Self {
        Self {
            http,
            prepared: PerConnection::default(),
        }
    }

    async fn post(&self, job: &Job<'_>) -> Outcome {
        let prepared = match self.prepared.get_or_make(job.connection, || {
            Prepared::new(
                &job.connection.config,
                job.secrets,
                self.http.policy().allow_private,
            )
        }) {
            Ok(prepared) => prepared,
            Err(error) => return Outcome::permanent(error),
        };
        let now = job.now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let timestamp = now.as_secs() as i64;
        let body = render_body(job.event, job.delivery.suppressed_before);
        let msg_id = job.delivery.id.encode();
        let keys = match prepared.signing_keys(now.as_millis() as u64) {
            Ok(keys) => keys,
            Err(error) => return Outcome::permanent(error),
        };
        let signature = signature_header_keyed(&keys, msg_id.as_str(), timestamp, &body);
        let mut headers = prepared.headers.clone();
        // Ids, digits and base64: always valid header values.
        for (name, value) in [
            (WEBHOOK_ID, msg_id.as_str()),
            (WEBHOOK_TIMESTAMP, itoa::Buffer::new().format(timestamp)),
            (WEBHOOK_SIGNATURE, &signature),
        ] {
            match HeaderValue::from_str(value) {
                Ok(value) => headers.insert(name, value),
                Err(error) => return Outcome::permanent(format!("invalid {name} header: {error}")),
            };
        }
        match self.http.post(prepared.uri.clone(), headers, body).await {
            Ok(answer) => {
                let retry_after = answer
                    .headers
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                Outcome {
                    status_code: Some(answer.status.as_u16()),
                    response: answer.excerpt,
                    verdict: classify(answer.status, retry_after),
                }
            }
            Err(error) => error.outcome(),
        }
    }
}
