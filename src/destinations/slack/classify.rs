//! What a `chat.postMessage` answer means, from Slack's documented error
//! codes, and the engine's [`Outcome`] for it.
//!
//! | class | codes | outcome |
//! | --- | --- | --- |
//! | re-auth | `invalid_auth` `not_authed` `account_inactive` `token_revoked` `missing_scope` `no_permission` `ekm_access_denied` `not_allowed_token_type` `team_access_not_granted` | permanent, connection `needs_reauth` |
//! | bad channel | `channel_not_found` `not_in_channel` `is_archived` `restricted_action*` | permanent (the rule's channel; the connection stays active) |
//! | bad payload | `invalid_blocks*` `msg_too_long` `msg_blocks_too_long` `no_text` `invalid_arguments` `invalid_form_data` `invalid_post_type` `too_many_attachments` `invalid_attachments` `invalid_json` `json_not_object` `invalid_charset` `invalid_metadata*` `metadata_too_large` | permanent |
//! | token expired | `token_expired` | retry, after the caller refreshes |
//! | retry | `ratelimited` `rate_limited` (with `Retry-After`), `internal_error` `fatal_error` `service_unavailable` `request_timeout` `team_added_to_org` `message_limit_exceeded`, HTTP 429 and 5xx | retry |
//!
//! **Unknown codes retry.** Slack adds codes over time; a new transient one
//! classified as permanent would drop the alert, while a permanent one
//! retried costs only the (bounded) retry schedule before the delivery is
//! dead, with the code in every attempt's log. For the same reason an HTTP
//! 2xx answer whose body is not Slack's JSON retries, as does any other
//! non-2xx answer without an error code.

use super::api::PostAnswer;
use crate::destinations::{Outcome, Verdict};
use crate::model::ConnectionStatus;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackVerdict {
    Delivered,
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// The token is refused: the connection must be reinstalled.
    Reauth {
        error: String,
    },
    /// The rule's channel cannot take the message.
    BadChannel {
        error: String,
    },
    /// The message itself is refused.
    BadPayload {
        error: String,
    },
    /// A rotating token expired: refresh, then post again.
    TokenExpired,
}

const REAUTH: &[&str] = &[
    "invalid_auth",
    "not_authed",
    "account_inactive",
    "token_revoked",
    "missing_scope",
    "no_permission",
    "ekm_access_denied",
    "not_allowed_token_type",
    "team_access_not_granted",
];

const BAD_CHANNEL: &[&str] = &["channel_not_found", "not_in_channel", "is_archived"];
const BAD_CHANNEL_PREFIXES: &[&str] = &["restricted_action"];

const BAD_PAYLOAD: &[&str] = &[
    "msg_too_long",
    "msg_blocks_too_long",
    "no_text",
    "invalid_arguments",
    "invalid_form_data",
    "invalid_post_type",
    "too_many_attachments",
    "invalid_attachments",
    "invalid_json",
    "json_not_object",
    "invalid_charset",
    "metadata_too_large",
];
const BAD_PAYLOAD_PREFIXES: &[&str] = &["invalid_blocks", "invalid_metadata"];

/// The class of an error code alone (rate limits get no `retry_after`
/// here; [`classify`] adds the answer's).
pub fn classify_code(code: &str) -> SlackVerdict {
    let listed = |exact: &[&str], prefixes: &[&str]| {
        exact.contains(&code) || prefixes.iter().any(|prefix| code.starts_with(prefix))
    };
    if code == "token_expired" {
        SlackVerdict::TokenExpired
    } else if listed(REAUTH, &[]) {
        SlackVerdict::Reauth { error: code.into() }
    } else if listed(BAD_CHANNEL, BAD_CHANNEL_PREFIXES) {
        SlackVerdict::BadChannel { error: code.into() }
    } else if listed(BAD_PAYLOAD, BAD_PAYLOAD_PREFIXES) {
        SlackVerdict::BadPayload { error: code.into() }
    } else {
        // Known transient codes and unknown ones alike (see the module docs).
        SlackVerdict::Retry {
            error: code.into(),
            retry_after: None,
        }
    }
}

/// Classifies a `chat.postMessage` answer; pure.
pub fn classify(answer: &PostAnswer) -> SlackVerdict {
    let success = (200..300).contains(&answer.status);
    if answer.status == 429 {
        return SlackVerdict::Retry {
            error: answer.error_code().unwrap_or("ratelimited").to_string(),
            retry_after: answer.retry_after,
        };
    }
    if success && answer.is_ok() {
        return SlackVerdict::Delivered;
    }
    if let Some(code) = answer.error_code() {
        return match classify_code(code) {
            SlackVerdict::Retry { error, .. } => SlackVerdict::Retry {
                error,
                retry_after: answer.retry_after,
            },
            verdict => verdict,
        };
    }
    let error = if success {
        "Slack's answer was not the JSON chat.postMessage returns".to_string()
    } else {
        format!("HTTP {}", answer.status)
    };
    let retry_after = (answer.status == 503)
        .then_some(answer.retry_after)
        .flatten();
    SlackVerdict::Retry { error, retry_after }
}

/// The engine's outcome for a classified answer, with the answer's status
/// and excerpt for the delivery log.
pub fn into_outcome(verdict: SlackVerdict, answer: &PostAnswer) -> Outcome {
    let channel = answer.channel.as_deref().unwrap_or("(none)");
    let verdict = match verdict {
        SlackVerdict::Delivered => Verdict::Delivered,
        SlackVerdict::Retry { error, retry_after } => Verdict::Retry {
            error: format!("Slack answered {error}"),
            retry_after,
        },
        SlackVerdict::TokenExpired => Verdict::Retry {
            error: "token expired".into(),
            retry_after: None,
        },
        SlackVerdict::Reauth { error } => Verdict::Permanent {
            error: format!("Slack refused the token ({error}); reconnect Slack"),
            connection_status: Some(ConnectionStatus::NeedsReauth),
        },
        SlackVerdict::BadChannel { error } => {
            let advice = match error.as_str() {
                "is_archived" => "the channel is archived; pick another channel",
                "channel_not_found" | "not_in_channel" => {
                    "invite the app to the channel or pick another channel"
                }
                _ => "the workspace does not let the app post there; pick another channel",
            };
            Verdict::Permanent {
                error: format!("channel {channel}: {error} — {advice}"),
                connection_status: None,
            }
        }
        SlackVerdict::BadPayload { error } => Verdict::Permanent {
            error: format!("Slack refused the message ({error})"),
            connection_status: None,
        },
    };
    Outcome {
        status_code: Some(answer.status),
        response: answer.excerpt.clone(),
        verdict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failed(code: &str) -> PostAnswer {
        let body = json!({"ok": false, "error": code});
        PostAnswer {
            status: 200,
            retry_after: None,
            excerpt: Some(body.to_string()),
            body: Some(body),
            channel: Some("C0123".into()),
        }
    }

    fn retry(code: &str) -> SlackVerdict {
        SlackVerdict::Retry {
            error: code.into(),
            retry_after: None,
        }
    }

    #[test]
    fn every_error_class() {
        let table: Vec<(&str, SlackVerdict)> = vec![
            (
                "invalid_auth",
                SlackVerdict::Reauth {
                    error: "invalid_auth".into(),
                },
            ),
            (
                "not_authed",
                SlackVerdict::Reauth {
                    error: "not_authed".into(),
                },
            ),
            (
                "account_inactive",
                SlackVerdict::Reauth {
                    error: "account_inactive".into(),
                },
            ),
            (
                "token_revoked",
                SlackVerdict::Reauth {
                    error: "token_revoked".into(),
                },
            ),
            (
                "missing_scope",
                SlackVerdict::Reauth {
                    error: "missing_scope".into(),
                },
            ),
            (
                "no_permission",
                SlackVerdict::Reauth {
                    error: "no_permission".into(),
                },
            ),
            (
                "ekm_access_denied",
                SlackVerdict::Reauth {
                    error: "ekm_access_denied".into(),
                },
            ),
            (
                "not_allowed_token_type",
                SlackVerdict::Reauth {
                    error: "not_allowed_token_type".into(),
                },
            ),
            (
                "channel_not_found",
                SlackVerdict::BadChannel {
                    error: "channel_not_found".into(),
                },
            ),
            (
                "not_in_channel",
                SlackVerdict::BadChannel {
                    error: "not_in_channel".into(),
                },
            ),
            (
                "is_archived",
                SlackVerdict::BadChannel {
                    error: "is_archived".into(),
                },
            ),
            (
                "restricted_action",
                SlackVerdict::BadChannel {
                    error: "restricted_action".into(),
                },
            ),
            (
                "restricted_action_read_only_channel",
                SlackVerdict::BadChannel {
                    error: "restricted_action_read_only_channel".into(),
                },
            ),
            (
                "invalid_blocks",
                SlackVerdict::BadPayload {
                    error: "invalid_blocks".into(),
                },
            ),
            (
                "invalid_blocks_format",
                SlackVerdict::BadPayload {
                    error: "invalid_blocks_format".into(),
                },
            ),
            (
                "msg_too_long",
                SlackVerdict::BadPayload {
                    error: "msg_too_long".into(),
                },
            ),
            (
                "msg_blocks_too_long",
                SlackVerdict::BadPayload {
                    error: "msg_blocks_too_long".into(),
                },
            ),
            (
                "no_text",
                SlackVerdict::BadPayload {
                    error: "no_text".into(),
                },
            ),
            (
                "invalid_arguments",
                SlackVerdict::BadPayload {
                    error: "invalid_arguments".into(),
                },
            ),
            (
                "invalid_form_data",
                SlackVerdict::BadPayload {
                    error: "invalid_form_data".into(),
                },
            ),
            (
                "invalid_post_type",
                SlackVerdict::BadPayload {
                    error: "invalid_post_type".into(),
                },
            ),
            (
                "too_many_attachments",
                SlackVerdict::BadPayload {
                    error: "too_many_attachments".into(),
                },
            ),
            ("token_expired", SlackVerdict::TokenExpired),
            ("ratelimited", retry("ratelimited")),
            ("rate_limited", retry("rate_limited")),
            ("internal_error", retry("internal_error")),
            ("fatal_error", retry("fatal_error")),
            ("service_unavailable", retry("service_unavailable")),
            ("request_timeout", retry("request_timeout")),
            ("team_added_to_org", retry("team_added_to_org")),
            ("message_limit_exceeded", retry("message_limit_exceeded")),
            (
                "some_code_slack_adds_next_year",
                retry("some_code_slack_adds_next_year"),
            ),
        ];
        for (code, expected) in table {
            assert_eq!(classify(&failed(code)), expected, "{code}");
        }
    }

    #[test]
    fn http_answers() {
        let ok = PostAnswer {
            body: Some(json!({"ok": true, "channel": "C0123", "ts": "1.2"})),
            ..failed("x")
        };
        assert_eq!(classify(&ok), SlackVerdict::Delivered);
        let limited = PostAnswer {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            ..failed("ratelimited")
        };
        assert_eq!(
            classify(&limited),
            SlackVerdict::Retry {
                error: "ratelimited".into(),
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let bare_429 = PostAnswer {
            body: None,
            ..limited.clone()
        };
        assert_eq!(classify(&bare_429), classify(&limited));
        let bad_gateway = PostAnswer {
            status: 502,
            body: None,
            ..failed("x")
        };
        assert_eq!(classify(&bad_gateway), retry("HTTP 502"));
        let unavailable = PostAnswer {
            status: 503,
            body: None,
            retry_after: Some(Duration::from_secs(30)),
            ..failed("x")
        };
        assert_eq!(
            classify(&unavailable),
            SlackVerdict::Retry {
                error: "HTTP 503".into(),
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let garbled = PostAnswer {
            body: None,
            ..failed("x")
        };
        assert!(matches!(classify(&garbled), SlackVerdict::Retry { .. }));
        // An error code wins over a non-2xx status.
        let coded_500 = PostAnswer {
            status: 500,
            ..failed("invalid_auth")
        };
        assert_eq!(
            classify(&coded_500),
            SlackVerdict::Reauth {
                error: "invalid_auth".into()
            }
        );
    }

    #[test]
    fn outcomes() {
        let answer = failed("token_revoked");
        let outcome = into_outcome(classify(&answer), &answer);
        assert_eq!(outcome.status_code, Some(200));
        assert_eq!(
            outcome.response.as_deref(),
            Some(r#"{"error":"token_revoked","ok":false}"#)
        );
        assert_eq!(
            outcome.verdict,
            Verdict::Permanent {
                error: "Slack refused the token (token_revoked); reconnect Slack".into(),
                connection_status: Some(ConnectionStatus::NeedsReauth),
            }
        );
        let answer = failed("channel_not_found");
        assert_eq!(
            into_outcome(classify(&answer), &answer).verdict,
            Verdict::Permanent {
                error: "channel C0123: channel_not_found — invite the app to the channel or pick another channel".into(),
                connection_status: None,
            }
        );
        let answer = failed("msg_too_long");
        assert_eq!(
            into_outcome(classify(&answer), &answer).verdict,
            Verdict::Permanent {
                error: "Slack refused the message (msg_too_long)".into(),
                connection_status: None
            }
        );
        let answer = failed("token_expired");
        assert_eq!(
            into_outcome(classify(&answer), &answer).verdict,
            Verdict::Retry {
                error: "token expired".into(),
                retry_after: None
            }
        );
        let answer = PostAnswer {
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            ..failed("ratelimited")
        };
        assert_eq!(
            into_outcome(classify(&answer), &answer).verdict,
            Verdict::Retry {
                error: "Slack answered ratelimited".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        let answer = PostAnswer {
            body: Some(json!({"ok": true})),
            ..failed("x")
        };
        assert_eq!(
            into_outcome(classify(&answer), &answer).verdict,
            Verdict::Delivered
        );
    }
}
