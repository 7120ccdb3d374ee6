//! Microsoft Teams through a Workflows "post to a channel when a webhook
//! request is received" flow: the tenant pastes the flow's URL, which is
//! the credential, so it is sealed whole and guarded like a webhook URL
//! ([`secret_url`]). Each event is an Adaptive Card message ([`render`]).
//!
//! [`classify()`]: Workflows accepts with 202 (the post happens later,
//! inside the flow); 429 and 5xx retry (after `Retry-After` when given);
//! any other 4xx is dead, with the answer kept.

pub mod render;

use crate::destinations::Verdict;
use crate::destinations::message::AlertSummary;
use crate::destinations::secret_url::{UrlDestination, UrlKind, classify_answer};
use crate::model::{ConnectionKind, Event};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// How a Workflows answer classifies; pure. `answer` is the excerpt of the
/// body, quoted in the error of a dead delivery.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    answer: Option<&str>,
) -> Verdict {
    classify_answer("Teams", status, retry_after, answer)
}

/// The Teams destination: the shared pasted-URL shape with this kind's
/// body and classification.
pub type Teams = UrlDestination<TeamsKind>;

pub struct TeamsKind;

impl UrlKind for TeamsKind {
    const KIND: ConnectionKind = ConnectionKind::Teams;

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
