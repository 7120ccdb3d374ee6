//! Discord through a channel webhook (`POST /api/webhooks/{id}/{token}`,
//! no auth header): the URL carries the token, so it is sealed whole and
//! guarded like a webhook URL ([`secret_url`]). Each event is one embed
//! ([`render`]).
//!
//! [`classify()`]: 2xx (204 without `?wait=true`) is success; 429 retries
//! after the JSON body's `retry_after` (seconds, may be fractional), else
//! the `Retry-After` header; 5xx retries; any other 4xx is dead, with
//! Discord's answer kept (`{"message","code"}`).

pub mod render;

use crate::destinations::Verdict;
use crate::destinations::message::AlertSummary;
use crate::destinations::secret_url::{UrlDestination, UrlKind, classify_answer};
use crate::model::{ConnectionKind, Event};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// The wait a 429 asks for: the body's `retry_after` (Discord's rate limit
/// answer is `{"message","retry_after","global"}`), else `header`.
pub fn rate_limit_wait(answer: Option<&str>, header: Option<Duration>) -> Option<Duration> {
    let seconds = answer
        .and_then(|answer| serde_json::from_str::<Value>(answer).ok())
        .and_then(|body| body.get("retry_after").and_then(Value::as_f64))
        .filter(|seconds| seconds.is_finite() && *seconds >= 0.0);
    match seconds {
        // Rounded up to the millisecond: never earlier than asked.
        Some(seconds) => Some(Duration::from_millis((seconds * 1000.0).ceil() as u64)),
        None => header,
    }
}

/// How an answer classifies; pure. `answer` is the excerpt of the body.
/// A 429 waits as its body says ([`rate_limit_wait`]).
pub fn classify(
    status: StatusCode,
    header_wait: Option<Duration>,
    answer: Option<&str>,
) -> Verdict {
    let retry_after = if status == StatusCode::TOO_MANY_REQUESTS {
        rate_limit_wait(answer, header_wait)
    } else {
        header_wait
    };
    classify_answer("Discord", status, retry_after, answer)
}

/// The Discord destination: the shared pasted-URL shape with this kind's
/// body and classification.
pub type Discord = UrlDestination<DiscordKind>;

pub struct DiscordKind;

impl UrlKind for DiscordKind {
    const KIND: ConnectionKind = ConnectionKind::Discord;

    fn render(event: &Event, summary: &AlertSummary) -> Value {
        render::render_message(event, summary)
    }

    fn classify(
        status: StatusCode,
        retry_after: Option<Duration>,
        answer: Option<&str>,
    ) -> Verdict {
        classify(status, retry_after, answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_wait_as_the_body_says_else_the_header() {
        let header = Some(Duration::from_secs(3));
        for (answer, expected) in [
            (
                Some(
                    r#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#,
                ),
                Some(Duration::from_millis(250)),
            ),
            (Some(r#"{"retry_after":2}"#), Some(Duration::from_secs(2))),
            (
                Some(r#"{"retry_after":0.0004}"#),
                Some(Duration::from_millis(1)),
            ),
            (Some(r#"{"retry_after":-1}"#), header),
            (Some(r#"{"retry_after":"soon"}"#), header),
            (Some("<html>"), header),
            (None, header),
        ] {
            assert_eq!(rate_limit_wait(answer, header), expected, "{answer:?}");
        }
        assert_eq!(rate_limit_wait(None, None), None);
    }

    #[test]
    fn answers_classify() {
        let header = Some(Duration::from_secs(3));
        let limited =
            r#"{"message":"You are being rate limited.","retry_after":1.5,"global":false}"#;
        let unknown = r#"{"message":"Unknown Webhook","code":10015}"#;
        for (status, answer, expected) in [
            (204, None, Verdict::Delivered),
            (200, Some("{}"), Verdict::Delivered),
            (
                429,
                Some(limited),
                Verdict::Retry {
                    error: format!("Discord answered HTTP 429 Too Many Requests: {limited}"),
                    retry_after: Some(Duration::from_millis(1500)),
                },
            ),
            (
                503,
                None,
                Verdict::Retry {
                    error: "Discord answered HTTP 503 Service Unavailable".into(),
                    retry_after: header,
                },
            ),
            (
                404,
                Some(unknown),
                Verdict::Permanent {
                    error: format!("Discord answered HTTP 404 Not Found: {unknown}"),
                    connection_status: None,
                },
            ),
            (
                400,
                None,
                Verdict::Permanent {
                    error: "Discord answered HTTP 400 Bad Request".into(),
                    connection_status: None,
                },
            ),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(classify(status, header, answer), expected, "{status}");
        }
    }
}
