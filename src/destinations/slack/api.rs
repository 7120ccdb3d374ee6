//! A thin client for the Slack Web API methods Switchyard uses. Method `M`
//! is POSTed to `{api_base}/M`, authenticated with `Authorization: Bearer`
//! (or HTTP Basic client credentials for `oauth.v2.access`).
//!
//! Slack reports most errors as HTTP 200 with `{"ok":false,"error":"…"}`,
//! so every answer's `ok` is checked; rate limits come as HTTP 429 with
//! `Retry-After` (seconds).

use super::Channel;
use crate::destinations::RESPONSE_EXCERPT_BYTES;
use crate::destinations::retry_after::parse_retry_after;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::time::{Duration, SystemTime};

/// Channels asked for per `conversations.list` page (Slack advises ≤ 200).
pub const CHANNEL_PAGE_LIMIT: u32 = 200;
/// Most `conversations.list` pages walked for one listing.
pub const MAX_CHANNEL_PAGES: usize = 50;
/// Answers larger than this are not read further (and do not decode).
const MAX_ANSWER_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `{"ok":false,"error":…}`.
    #[error("{error}")]
    Api { error: String },
    /// HTTP 429.
    #[error("rate limited by Slack{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    /// A non-2xx answer without a Slack error code.
    #[error("Slack answered HTTP {status}")]
    Http { status: u16 },
    #[error("request to Slack failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// An answer that is not the JSON the method documents.
    #[error("unreadable answer from Slack: {0}")]
    Decode(String),
}

/// `auth.test`: who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuthTest {
    pub team_id: String,
    pub team: String,
    pub user_id: String,
    #[serde(default)]
    pub bot_id: Option<String>,
}

/// `oauth.v2.access`, for both a code exchange and a token refresh. With
/// token rotation the access token starts `xoxe.xoxb-` and comes with
/// `refresh_token` and `expires_in` (seconds).
#[derive(Clone, PartialEq, Eq, Deserialize)]
pub struct OAuthAccess {
    pub access_token: String,
    #[serde(default)]
    pub token_type: String,
    /// Comma-separated scopes granted.
    #[serde(default)]
    pub scope: String,
    #[serde(default)]
    pub bot_user_id: String,
    #[serde(default)]
    pub app_id: String,
    #[serde(default)]
    pub team: OAuthTeam,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for OAuthAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthAccess")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("bot_user_id", &self.bot_user_id)
            .field("app_id", &self.app_id)
            .field("team", &self.team)
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct OAuthTeam {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
}

/// A `chat.postMessage` answer as received, unclassified, so the caller can
/// refresh a token before deciding (see [`classify`](super::classify())).
#[derive(Debug, Clone, PartialEq)]
pub struct PostAnswer {
    pub status: u16,
    /// `Retry-After`, when the answer had one.
    pub retry_after: Option<Duration>,
    /// The answer's JSON, when it was JSON.
    pub body: Option<Value>,
    /// The first [`RESPONSE_EXCERPT_BYTES`] of the answer, for the log.
    pub excerpt: Option<String>,
    /// The channel the message was addressed to (from the request).
    pub channel: Option<String>,
}

impl PostAnswer {
    /// The answer's `error` code when `ok` is not true.
    pub fn error_code(&self) -> Option<&str> {
        let body = self.body.as_ref()?;
        if body.get("ok") == Some(&Value::Bool(true)) {
            return None;
        }
        body.get("error").and_then(Value::as_str)
    }

    /// Whether the answer says `"ok": true`.
    pub fn is_ok(&self) -> bool {
        self.body
            .as_ref()
            .is_some_and(|body| body.get("ok") == Some(&Value::Bool(true)))
    }
}

#[derive(Deserialize)]
struct ChannelPage {
    #[serde(default)]
    channels: Vec<RawChannel>,
    #[serde(default)]
    response_metadata: Option<ResponseMetadata>,
}

#[derive(Deserialize)]
struct RawChannel {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    is_private: bool,
    #[serde(default)]
    is_archived: bool,
}

#[derive(Deserialize)]
struct ResponseMetadata {
    #[serde(default)]
    next_cursor: String,
}

/// The Slack Web API at one base URL (the operator's, so trusted).
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
    api_base: String,
}

impl fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackApi")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl SlackApi {
    /// `api_base` is e.g. `https://slack.com/api` (a trailing `/` is fine).
    pub fn new(http: reqwest::Client, api_base: String) -> Self {
        let api_base = api_base.trim_end_matches('/').to_string();
        Self { http, api_base }
    }

    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The URL of method `method`.
    pub fn method_url(&self, method: &str) -> String {
        format!("{}/{method}", self.api_base)
    }

    fn post(&self, method: &str) -> RequestBuilder {
        self.http.post(self.method_url(method))
    }

    /// `auth.test`: checks a token and says whose it is.
    pub async fn auth_test(&self, token: &str) -> Result<AuthTest, SlackError> {
        let request = self
            .post("auth.test")
            .bearer_auth(token)
            .form(&[] as &[(&str, &str)]);
        call(request).await
    }

    /// Every public and private channel the token can see, archived ones
    /// left out, sorted by name. Follows `response_metadata.next_cursor`
    /// until it is empty (pages may be short or empty: Slack filters after
    /// paging), at most [`MAX_CHANNEL_PAGES`] pages.
    pub async fn conversations_list(&self, token: &str) -> Result<Vec<Channel>, SlackError> {
        let mut channels: Vec<Channel> = Vec::new();
        let mut cursor = String::new();
        let limit = CHANNEL_PAGE_LIMIT.to_string();
        let mut complete = false;
        for _ in 0..MAX_CHANNEL_PAGES {
            let mut form = vec![
                ("types", "public_channel,private_channel"),
                ("exclude_archived", "true"),
                ("limit", limit.as_str()),
            ];
            if !cursor.is_empty() {
                form.push(("cursor", cursor.as_str()));
            }
            let request = self
                .post("conversations.list")
                .bearer_auth(token)
                .form(&form);
            let page: ChannelPage = call(request).await?;
            channels.extend(
                page.channels
                    .into_iter()
                    .filter(|channel| !channel.is_archived)
                    .map(|channel| Channel {
                        id: channel.id,
                        name: channel.name,
                        is_private: channel.is_private,
                    }),
            );
            cursor = page
                .response_metadata
                .map(|metadata| metadata.next_cursor)
                .unwrap_or_default();
            if cursor.is_empty() {
                complete = true;
                break;
            }
        }
        if !complete {
            tracing::warn!(
                pages = MAX_CHANNEL_PAGES,
                "Slack channel list cut short after the page limit"
            );
        }
        channels.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then_with(|| a.id.cmp(&b.id))
        });
        channels.dedup_by(|a, b| a.id == b.id);
        Ok(channels)
    }

    /// `oauth.v2.access` with an install's `code`; the client credentials go
    /// as HTTP Basic. `redirect_uri` must be the one the install used.
    pub async fn oauth_access(
        &self,
        client_id: &str,
        client_secret: &str,
        code: &str,
        redirect_uri: &str,
    ) -> Result<OAuthAccess, SlackError> {
        let request = self
            .post("oauth.v2.access")
            .basic_auth(client_id, Some(client_secret))
            .form(&[("code", code), ("redirect_uri", redirect_uri)]);
        call(request).await
    }

    /// `oauth.v2.access` with `grant_type=refresh_token`: a new access token
    /// and a new refresh token (the old refresh token stops working).
    pub async fn refresh(
        &self,
        client_id: &str,
        client_secret: &str,
        refresh_token: &str,
    ) -> Result<OAuthAccess, SlackError> {
        let request = self
            .post("oauth.v2.access")
            .basic_auth(client_id, Some(client_secret))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ]);
        call(request).await
    }

    /// `chat.postMessage` with a JSON body. The answer comes back raw (any
    /// HTTP status, `ok` true or false); only a failure to reach Slack or to
    /// read its answer is an error ([`SlackError::Transport`]).
    pub async fn post_message(&self, token: &str, body: &Value) -> Result<PostAnswer, SlackError> {
        self.send_message("chat.postMessage", token, body).await
    }

    /// `chat.update` with a JSON body (`channel`, `ts`, the new `text` and
    /// `blocks`); the answer comes back raw, as with [`Self::post_message`].
    pub async fn update_message(
        &self,
        token: &str,
        body: &Value,
    ) -> Result<PostAnswer, SlackError> {
        self.send_message("chat.update", token, body).await
    }

    async fn send_message(
        &self,
        method: &str,
        token: &str,
        body: &Value,
    ) -> Result<PostAnswer, SlackError> {
        let payload =
            serde_json::to_vec(body).map_err(|error| SlackError::Decode(error.to_string()))?;
        let response = self
            .post(method)
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .body(payload)
            .send()
            .await?;
        let status = response.status().as_u16();
        let retry_after = retry_after(&response);
        let bytes = read_capped(response).await?;
        let mut cut = bytes.clone();
        cut.truncate(RESPONSE_EXCERPT_BYTES);
        Ok(PostAnswer {
            status,
            retry_after,
            body: serde_json::from_slice(&bytes).ok(),
            excerpt: (!cut.is_empty()).then(|| String::from_utf8_lossy(&cut).into_owned()),
            channel: body
                .get("channel")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }
}

/// Sends a request and decodes an `ok:true` answer into `T`.
async fn call<T: DeserializeOwned>(request: RequestBuilder) -> Result<T, SlackError> {
    let response = request.send().await?;
    let status = response.status();
    if status == StatusCode::TOO_MANY_REQUESTS {
        return Err(SlackError::RateLimited {
            retry_after: retry_after(&response),
        });
    }
    let bytes = read_capped(response).await?;
    let answer: Value = match serde_json::from_slice(&bytes) {
        Ok(answer) => answer,
        Err(_) if !status.is_success() => {
            return Err(SlackError::Http {
                status: status.as_u16(),
            });
        }
        Err(error) => return Err(SlackError::Decode(error.to_string())),
    };
    if answer.get("ok") != Some(&Value::Bool(true)) {
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error")
            .to_string();
        return Err(SlackError::Api { error });
    }
    if !status.is_success() {
        return Err(SlackError::Http {
            status: status.as_u16(),
        });
    }
    serde_json::from_value(answer).map_err(|error| SlackError::Decode(error.to_string()))
}

fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()))
}

/// The answer's bytes, at most a little over [`MAX_ANSWER_BYTES`].
async fn read_capped(mut response: Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: Option<Value>) -> PostAnswer {
        PostAnswer {
            status,
            retry_after: None,
            body,
            excerpt: None,
            channel: None,
        }
    }

    #[test]
    fn method_urls_join_the_base() {
        let api = SlackApi::new(reqwest::Client::new(), "http://x/api/".into());
        assert_eq!(
            api.method_url("chat.postMessage"),
            "http://x/api/chat.postMessage"
        );
    }

    #[test]
    fn oauth_access_parses_a_rotating_install_and_hides_tokens() {
        let access: OAuthAccess = serde_json::from_value(serde_json::json!({
            "ok": true, "access_token": "xoxe.xoxb-1-abc", "token_type": "bot",
            "scope": "chat:write,channels:read", "bot_user_id": "U0BOT", "app_id": "A0APP",
            "team": {"id": "T0001", "name": "Casterly Rock"}, "enterprise": null,
            "is_enterprise_install": false, "authed_user": {"id": "U1"},
            "expires_in": 43200, "refresh_token": "xoxe-1-def"
        }))
        .unwrap();
        assert_eq!(access.team.name, "Casterly Rock");
        assert_eq!(access.expires_in, Some(43200));
        assert_eq!(access.refresh_token.as_deref(), Some("xoxe-1-def"));
        let shown = format!("{access:?}");
        assert!(!shown.contains("abc") && !shown.contains("def"), "{shown}");
    }

    #[test]
    fn error_codes_are_read_only_from_failed_answers() {
        let failed = answer(
            200,
            Some(serde_json::json!({"ok": false, "error": "not_in_channel"})),
        );
        assert_eq!(failed.error_code(), Some("not_in_channel"));
        assert!(!failed.is_ok());
        let ok = answer(
            200,
            Some(serde_json::json!({"ok": true, "error": "ignored"})),
        );
        assert_eq!(ok.error_code(), None);
        assert!(ok.is_ok());
        assert_eq!(answer(502, None).error_code(), None);
    }

    #[test]
    fn errors_display_usefully() {
        assert_eq!(
            SlackError::Api {
                error: "invalid_auth".into()
            }
            .to_string(),
            "invalid_auth"
        );
        assert_eq!(
            SlackError::RateLimited {
                retry_after: Some(Duration::from_secs(3))
            }
            .to_string(),
            "rate limited by Slack (retry after 3s)"
        );
        assert_eq!(
            SlackError::Http { status: 502 }.to_string(),
            "Slack answered HTTP 502"
        );
    }
}
