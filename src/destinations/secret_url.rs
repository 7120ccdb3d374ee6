//! The config of kinds whose whole connection is one pasted URL that is
//! itself the credential (a Teams Workflows URL, a Discord webhook URL):
//! `{"url"}`, checked by the address guard, sealed whole, and shown only as
//! its origin with the rest masked. Rules for these kinds take no target.
//!
//! Such a kind differs from the next only in its body and in how its
//! answers classify ([`UrlKind`]); [`UrlDestination`] is the rest: the
//! config above, the guarded POST and the `Destination` impl.

use crate::destinations::message::AlertSummary;
use crate::destinations::net::{self, TargetError, TargetPolicy, check_url, target_uri};
use crate::destinations::retry_after::parse_retry_after;
use crate::destinations::tenant_http::TenantHttp;
use crate::destinations::{BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Verdict};
use crate::model::{ConnectionKind, Event};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::marker::PhantomData;
use std::time::{Duration, SystemTime};

/// What sets one pasted-URL kind apart from another.
pub trait UrlKind: Send + Sync + 'static {
    const KIND: ConnectionKind;
    /// The JSON body posted for one event; pure.
    fn render(event: &Event, summary: &AlertSummary) -> Value;
    /// How an answer classifies; pure. `retry_after` is the parsed
    /// `Retry-After` header, `answer` the excerpt of the body.
    fn classify(status: StatusCode, retry_after: Option<Duration>, answer: Option<&str>)
    -> Verdict;
}

/// How a chat service's answer classifies, the same for each pasted-URL
/// kind; pure. 2xx is delivered; 429 and 5xx retry after `retry_after`;
/// any other 4xx is dead, with the answer (`answer`, an excerpt of the
/// body) quoted; 1xx and 3xx (redirects are never followed) are
/// unexpected, worth a retry.
pub fn classify_answer(
    service: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    answer: Option<&str>,
) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    let error = match answer.map(str::trim).filter(|answer| !answer.is_empty()) {
        Some(answer) => format!("{service} answered HTTP {status}: {answer}"),
        None => format!("{service} answered HTTP {status}"),
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
    Verdict::Retry {
        error,
        retry_after: None,
    }
}

/// A pasted-URL destination of kind `K`.
pub struct UrlDestination<K> {
    http: TenantHttp,
    kind: PhantomData<K>,
}

impl<K: UrlKind> UrlDestination<K> {
    /// Targets are judged by `http`'s policy, when saved and when sent.
    pub fn new(http: TenantHttp) -> Self {
        Self {
            http,
            kind: PhantomData,
        }
    }

    async fn post(&self, job: &Job<'_>) -> Outcome {
        let url = match open(job.secrets) {
            Ok(url) => url,
            Err(error) => return Outcome::permanent(error),
        };
        // Checked again at send time: the setting may have changed, and
        // the client does not consult the resolver for IP-literal hosts.
        let uri = match check_url(&url, self.http.policy().allow_private).and_then(target_uri) {
            Ok(uri) => uri,
            Err(error) => return Outcome::permanent(format!("refused: {error}")),
        };
        let summary = AlertSummary::of_delivery(job.event, job.delivery);
        let body = match serde_json::to_vec(&K::render(job.event, &summary)) {
            Ok(body) => body,
            Err(error) => return Outcome::permanent(format!("cannot encode the body: {error}")),
        };
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self.http.post(uri, headers, body).await {
            Ok(answer) => {
                let retry_after = answer
                    .headers
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| parse_retry_after(value, SystemTime::now()));
                Outcome {
                    status_code: Some(answer.status.as_u16()),
                    verdict: K::classify(answer.status, retry_after, answer.excerpt.as_deref()),
                    response: answer.excerpt,
                }
            }
            Err(error) => error.outcome(),
        }
    }
}

impl<K: UrlKind> Destination for UrlDestination<K> {
    fn kind(&self) -> ConnectionKind {
        K::KIND
    }

    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        Box::pin(create(config, self.http.policy()))
    }

    fn update<'a>(
        &'a self,
        config: &'a Value,
        _secrets: Value,
    ) -> BoxFuture<'a, Result<(Value, Value), Invalid>> {
        Box::pin(update(config, self.http.policy()))
    }

    fn shown_config(&self, _config: &Value, secrets: &dyn Fn() -> Option<Value>) -> Value {
        shown(secrets())
    }

    fn validate_target(&self, target: &Value) -> Result<Value, Invalid> {
        validate_target(target, K::KIND.as_str())
    }

    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(job))
    }
}

/// What the tenant sends, and what is sealed.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretUrl {
    pub url: String,
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretUrl")
            .field("url", &masked(&self.url))
            .finish()
    }
}

/// What answers show instead of the path, which carries the credential.
pub const MASK: &str = "********";

/// Checks the URL as the guard will at send time, and its host resolved
/// now (see [`net::check_resolved`]). The public config is empty: the
/// whole URL is sealed.
pub async fn create(config: &Value, policy: &TargetPolicy) -> Result<NewConnection, Invalid> {
    let input = checked(config, policy).await?;
    Ok(NewConnection {
        config: json!({}),
        secrets: serde_json::to_value(input).map_err(|error| Invalid::new("config", error))?,
        shown_once: None,
    })
}

/// A new URL replaces the old one.
pub async fn update(config: &Value, policy: &TargetPolicy) -> Result<(Value, Value), Invalid> {
    let input = checked(config, policy).await?;
    let secrets = serde_json::to_value(input).map_err(|error| Invalid::new("config", error))?;
    Ok((json!({}), secrets))
}

async fn checked(config: &Value, policy: &TargetPolicy) -> Result<SecretUrl, Invalid> {
    let input = SecretUrl::deserialize(config).map_err(|error| Invalid::new("config", error))?;
    let url = input.url.trim().to_string();
    net::check_url(&url, policy.allow_private)
        .and_then(net::target_uri)
        .map_err(url_problem)?;
    net::check_resolved(&url, policy)
        .await
        .map_err(url_problem)?;
    Ok(SecretUrl { url })
}

fn url_problem(error: TargetError) -> Invalid {
    Invalid::new("config", format!("url: {error}"))
}

/// The config as answers show it: `{"url": "https://host/********"}`, so
/// a tenant can tell connections apart without the credential showing.
pub fn shown(secrets: Option<Value>) -> Value {
    let url = secrets
        .and_then(|secrets| serde_json::from_value::<SecretUrl>(secrets).ok())
        .map(|secret| masked(&secret.url))
        .unwrap_or_else(|| MASK.to_string());
    json!({ "url": url })
}

/// `https://host[:port]/********`; anything unparsable is all mask.
pub fn masked(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) if parsed.host_str().is_some() => {
            format!("{}/{MASK}", parsed.origin().ascii_serialization())
        }
        _ => MASK.to_string(),
    }
}

/// These kinds take no target.
pub fn validate_target(target: &Value, kind: &str) -> Result<Value, Invalid> {
    match target {
        Value::Null => Ok(json!({})),
        Value::Object(map) if map.is_empty() => Ok(json!({})),
        _ => Err(Invalid::new(
            "target",
            format!("{kind} rules take no target"),
        )),
    }
}

/// The sealed URL of a connection, for the send.
pub fn open(secrets: &Value) -> Result<String, String> {
    serde_json::from_value::<SecretUrl>(secrets.clone())
        .map(|secret| secret.url)
        .map_err(|error| format!("invalid connection secrets: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_show_only_the_origin() {
        let secrets = json!({"url": "https://discord.com/api/webhooks/123/tok-en_SECRET"});
        assert_eq!(
            shown(Some(secrets)),
            json!({"url": "https://discord.com/********"})
        );
        assert_eq!(
            masked("http://127.0.0.1:8080/workflows/abc?sig=SECRET"),
            "http://127.0.0.1:8080/********"
        );
        assert_eq!(shown(None), json!({"url": "********"}));
        assert_eq!(masked("not a url"), "********");
        let debug = format!(
            "{:?}",
            SecretUrl {
                url: "https://x.test/SECRET".into()
            }
        );
        assert!(!debug.contains("SECRET"), "{debug}");
    }

    #[tokio::test]
    async fn private_and_malformed_urls_are_refused() {
        for config in [
            json!({"url": "http://127.0.0.1:9/hook"}),
            json!({"url": "http://10.0.0.1/hook"}),
            json!({"url": "ftp://example.com/hook"}),
            json!({"url": "https://user:pw@example.com/hook"}),
            json!({}),
            json!({"url": "https://example.com/", "extra": 1}),
        ] {
            let error = create(&config, &TargetPolicy::new(false))
                .await
                .unwrap_err();
            assert_eq!(error.field, "config", "{config}");
        }
        let created = create(
            &json!({"url": " http://127.0.0.1:9/hook "}),
            &TargetPolicy::new(true),
        )
        .await
        .unwrap();
        assert_eq!(created.config, json!({}));
        assert_eq!(created.secrets, json!({"url": "http://127.0.0.1:9/hook"}));
        assert!(created.shown_once.is_none());
    }

    #[test]
    fn no_target() {
        assert_eq!(validate_target(&Value::Null, "teams").unwrap(), json!({}));
        assert_eq!(validate_target(&json!({}), "teams").unwrap(), json!({}));
        let error = validate_target(&json!({"channel": "C1"}), "discord").unwrap_err();
        assert_eq!(error.problem, "discord rules take no target");
    }
}
