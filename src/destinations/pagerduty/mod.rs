//! PagerDuty through the Events API v2: `POST {pagerduty.events_url}/v2/enqueue`
//! with the connection's integration (routing) key in the body, no auth
//! header. The base is the operator's (trusted client, like Slack's).
//!
//! [`config`]: the sealed routing key; [`render`]: the body, pure
//! (trigger, acknowledge, resolve; the `dedup_key`; the severity mapping);
//! this file: the send and [`classify()`].

pub mod config;
pub mod render;

pub use config::PagerDutySecrets;
pub use render::{EventAction, dedup_key, render_body};

use crate::config::Config;
use crate::destinations::retry_after::parse_retry_after;
use crate::destinations::{
    BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict, response_excerpt,
    transport_outcome,
};
use crate::model::ConnectionKind;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// How PagerDuty's answer classifies; pure. `body` is the start of the
/// answer, for the message of a refused event.
///
/// | answer | verdict |
/// | --- | --- |
/// | 2xx (202 documented) | delivered |
/// | 400 | dead, with PagerDuty's `message` and `errors` |
/// | 429, 5xx | retry, after `Retry-After` when given |
/// | anything else | retry: undocumented, most likely a proxy in between |
pub fn classify(status: StatusCode, body: Option<&str>, retry_after: Option<Duration>) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    match status {
        StatusCode::BAD_REQUEST => Verdict::Permanent {
            error: format!("PagerDuty refused the event: {}", refusal(body)),
            connection_status: None,
        },
        StatusCode::TOO_MANY_REQUESTS => Verdict::Retry {
            error: "PagerDuty is throttling this integration (HTTP 429)".into(),
            retry_after,
        },
        status if status.is_server_error() => Verdict::Retry {
            error: format!("PagerDuty answered HTTP {status}"),
            retry_after,
        },
        status => Verdict::Retry {
            error: format!("unexpected answer HTTP {status}"),
            retry_after: None,
        },
    }
}

/// `message: error; error` from PagerDuty's `{"status","message","errors"}`.
fn refusal(body: Option<&str>) -> String {
    #[derive(Deserialize)]
    struct Refusal {
        message: Option<String>,
        #[serde(default)]
        errors: Vec<String>,
    }
    let Some(refusal) = body.and_then(|body| serde_json::from_str::<Refusal>(body).ok()) else {
        return "HTTP 400".into();
    };
    let message = refusal.message.unwrap_or_else(|| "HTTP 400".into());
    if refusal.errors.is_empty() {
        return message;
    }
    format!("{message}: {}", refusal.errors.join("; "))
}

pub struct PagerDuty {
    http: reqwest::Client,
    enqueue_url: String,
    timeout: Duration,
}

impl PagerDuty {
    /// `http` is the trusted client: the events URL is the operator's.
    pub fn new(config: &Config, http: reqwest::Client) -> Self {
        Self {
            http,
            enqueue_url: format!(
                "{}/v2/enqueue",
                config.pagerduty.events_url.trim_end_matches('/')
            ),
            timeout: Duration::from_secs(config.delivery.timeout_seconds),
        }
    }

    async fn enqueue(&self, job: &Job<'_>) -> Outcome {
        let secrets: PagerDutySecrets = match serde_json::from_value(job.secrets.clone()) {
            Ok(secrets) => secrets,
            Err(error) => return Outcome::permanent(format!("invalid pagerduty secrets: {error}")),
        };
        let body = render_body(job.event, &secrets.routing_key);
        let request = self
            .http
            .post(&self.enqueue_url)
            .header("content-type", "application/json")
            .body(body);
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                let excerpt = response_excerpt(response).await;
                Outcome {
                    status_code: Some(status.as_u16()),
                    verdict: classify(status, excerpt.as_deref(), retry_after),
                    response: excerpt,
                }
            }
            Err(error) => transport_outcome(&error, self.timeout),
        }
    }
}

impl Destination for PagerDuty {
    fn kind(&self) -> ConnectionKind {
        ConnectionKind::PagerDuty
    }

    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        Box::pin(async move { config::create(config) })
    }

    fn update<'a>(
        &'a self,
        config: &'a Value,
        _secrets: Value,
    ) -> BoxFuture<'a, Result<(Value, Value), Invalid>> {
        Box::pin(async move { config::update(config) })
    }

    fn shown_config(&self, _config: &Value, _secrets: &dyn Fn() -> Option<Value>) -> Value {
        config::shown()
    }

    fn validate_target(&self, target: &Value) -> Result<Value, Invalid> {
        config::validate_target(target)
    }

    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.enqueue(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_classify_as_documented() {
        let wait = Some(Duration::from_secs(30));
        assert_eq!(
            classify(StatusCode::ACCEPTED, None, None),
            Verdict::Delivered
        );
        let invalid = r#"{"status":"invalid event","message":"Event object is invalid","errors":["Length of 'routing_key' is incorrect (should be 32 characters)"]}"#;
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, Some(invalid), wait),
            Verdict::Permanent {
                error: "PagerDuty refused the event: Event object is invalid: \
                        Length of 'routing_key' is incorrect (should be 32 characters)"
                    .into(),
                connection_status: None,
            }
        );
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, Some("<html>"), None),
            Verdict::Permanent {
                error: "PagerDuty refused the event: HTTP 400".into(),
                connection_status: None,
            }
        );
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            match classify(status, None, wait) {
                Verdict::Retry { retry_after, .. } => assert_eq!(retry_after, wait, "{status}"),
                other => panic!("{status}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, None, wait),
            Verdict::Retry {
                retry_after: None,
                ..
            }
        ));
    }
}
