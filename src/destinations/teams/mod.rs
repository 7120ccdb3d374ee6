//! Microsoft Teams through a Workflows "post to a channel when a webhook
//! request is received" flow: the tenant pastes the flow's URL, which is
//! the credential, so it is sealed whole and guarded like a webhook URL
//! ([`secret_url`]). Each event is an Adaptive Card message ([`render`]).
//!
//! [`classify()`]: Workflows accepts with 202 (the post happens later,
//! inside the flow); 429 and 5xx retry (after `Retry-After` when given);
//! any other 4xx is dead, with the answer kept.

pub mod render;

use crate::destinations::message::AlertSummary;
use crate::destinations::net::check_url;
use crate::destinations::retry_after::parse_retry_after;
use crate::destinations::{
    BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict, response_excerpt,
    secret_url, transport_outcome,
};
use crate::model::ConnectionKind;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// How a Workflows answer classifies; pure. `answer` is the excerpt of the
/// body, quoted in the error of a dead delivery.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    answer: Option<&str>,
) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    let error = match answer.map(str::trim).filter(|answer| !answer.is_empty()) {
        Some(answer) => format!("Teams answered HTTP {status}: {answer}"),
        None => format!("Teams answered HTTP {status}"),
    };
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Verdict::Retry { error, retry_after };
    }
    if status.is_client_error() {
        return Verdict::Permanent {
            error,
            connection_status: None,
        };
    }
    // 1xx and 3xx (redirects are never followed): unexpected, worth a retry.
    Verdict::Retry {
        error,
        retry_after: None,
    }
}

pub struct Teams {
    http: reqwest::Client,
    allow_private: bool,
    timeout: Duration,
}

impl Teams {
    /// `http` must be the guarded tenant client.
    pub fn new(http: reqwest::Client, allow_private: bool, timeout: Duration) -> Self {
        Self {
            http,
            allow_private,
            timeout,
        }
    }

    async fn post(&self, job: &Job<'_>) -> Outcome {
        let url = match secret_url::open(job.secrets) {
            Ok(url) => url,
            Err(error) => return Outcome::permanent(error),
        };
        // Checked again at send time: the setting may have changed, and
        // reqwest does not consult the resolver for IP-literal hosts.
        if let Err(error) = check_url(&url, self.allow_private) {
            return Outcome::permanent(format!("refused: {error}"));
        }
        let body = render::render_message(job.event, &AlertSummary::from_event(job.event));
        match self.http.post(&url).json(&body).send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                let answer = response_excerpt(response).await;
                Outcome {
                    status_code: Some(status.as_u16()),
                    verdict: classify(status, retry_after, answer.as_deref()),
                    response: answer,
                }
            }
            Err(error) => transport_outcome(&error, self.timeout),
        }
    }
}

impl Destination for Teams {
    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Teams
    }

    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        Box::pin(secret_url::create(config, self.allow_private))
    }

    fn update<'a>(
        &'a self,
        config: &'a Value,
        _secrets: Value,
    ) -> BoxFuture<'a, Result<(Value, Value), Invalid>> {
        Box::pin(secret_url::update(config, self.allow_private))
    }

    fn shown_config(&self, _config: &Value, secrets: &dyn Fn() -> Option<Value>) -> Value {
        secret_url::shown(secrets())
    }

    fn validate_target(&self, target: &Value) -> Result<Value, Invalid> {
        secret_url::validate_target(target, "teams")
    }

    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_classify() {
        let wait = Some(Duration::from_secs(7));
        for (status, answer, expected) in [
            (202, None, Verdict::Delivered),
            (200, None, Verdict::Delivered),
            (
                429,
                None,
                Verdict::Retry {
                    error: "Teams answered HTTP 429 Too Many Requests".into(),
                    retry_after: wait,
                },
            ),
            (
                502,
                Some("bad gateway"),
                Verdict::Retry {
                    error: "Teams answered HTTP 502 Bad Gateway: bad gateway".into(),
                    retry_after: wait,
                },
            ),
            (
                400,
                Some(r#"{"error":{"code":"TriggerInputSchemaMismatch"}}"#),
                Verdict::Permanent {
                    error: r#"Teams answered HTTP 400 Bad Request: {"error":{"code":"TriggerInputSchemaMismatch"}}"#.into(),
                    connection_status: None,
                },
            ),
            (
                404,
                Some(" "),
                Verdict::Permanent {
                    error: "Teams answered HTTP 404 Not Found".into(),
                    connection_status: None,
                },
            ),
            (
                302,
                None,
                Verdict::Retry {
                    error: "Teams answered HTTP 302 Found".into(),
                    retry_after: None,
                },
            ),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(classify(status, wait, answer), expected, "{status}");
        }
    }
}
