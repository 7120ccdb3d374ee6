//! A fake Slack Web API on loopback for the Slack integration tests,
//! speaking Slack's documented shapes: errors as HTTP 200
//! `{"ok":false,"error":…}`, rate limits as 429 + `Retry-After`, cursors in
//! `response_metadata.next_cursor`.
//!
//! Point `slack.api_base` at [`FakeSlack::api_base`] and `slack.oauth_base`
//! at [`FakeSlack::oauth_base`], with `slack.client_id` / `client_secret`
//! set to [`CLIENT_ID`] / [`CLIENT_SECRET`] (or change them with
//! [`FakeSlack::set_client_credentials`]).
//!
//! What it checks, like Slack does: HTTP Basic (or form) client
//! credentials and single-use codes on `oauth.v2.access`; refresh tokens
//! that work once; bearer tokens (unknown → `invalid_auth`, revoked →
//! `token_revoked`, expired → `token_expired`); `chat.postMessage` needs a
//! channel, `text` or `blocks`, and blocks within Block Kit's limits
//! (`invalid_blocks`); a `thread_ts` is recorded with the message.
//! `chat.update` needs `channel` and the `ts` of a message posted there
//! (else `channel_not_found` / `message_not_found`), `text` or `blocks`
//! (`no_text`), blocks within the limits; updates are recorded
//! ([`FakeSlack::updates`]). Unlike Slack, it accepts a post to any channel
//! id that is not an archived channel of its list (`is_archived`); script
//! `channel_not_found` with [`FakeSlack::fail_next_post`].

// Not every helper is used by every test that includes this module.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

pub const CLIENT_ID: &str = "1111.2222";
pub const CLIENT_SECRET: &str = "fake-slack-client-secret";
pub const TEAM_ID: &str = "T0001";
pub const TEAM_NAME: &str = "Casterly Rock";
pub const BOT_USER_ID: &str = "U0BOT";
pub const BOT_ID: &str = "B0BOT";
pub const APP_ID: &str = "A0APP";
pub const SCOPES: &str = "chat:write,channels:read,groups:read";
/// Rotating access tokens live this long unless set otherwise (Slack: 12 h).
pub const DEFAULT_EXPIRES_IN: u64 = 43_200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeChannel {
    pub id: String,
    pub name: String,
    pub is_private: bool,
    pub is_archived: bool,
}

/// The default channel list: 450 channels, `C0000001` `general` first;
/// every ninth (from the fifth) private, every 25th (from the eighth)
/// archived.
pub fn default_channels() -> Vec<FakeChannel> {
    (0..450)
        .map(|i| FakeChannel {
            id: format!("C{:07}", i + 1),
            name: if i == 0 {
                "general".into()
            } else {
                format!("chan-{i:03}")
            },
            is_private: i % 9 == 4,
            is_archived: i % 25 == 7,
        })
        .collect()
}

/// A message `chat.postMessage` accepted.
#[derive(Debug, Clone)]
pub struct PostedMessage {
    pub token: String,
    pub channel: String,
    pub text: Option<String>,
    pub blocks: Option<Value>,
    /// The whole request body (form bodies as a JSON object of strings,
    /// `blocks` parsed).
    pub body: Value,
    pub at: Instant,
    /// The `ts` it was given.
    pub ts: String,
    /// The thread it was posted in, if any.
    pub thread_ts: Option<String>,
}

/// A `chat.update` that Slack accepted.
#[derive(Debug, Clone)]
pub struct UpdatedMessage {
    pub channel: String,
    pub ts: String,
    pub text: Option<String>,
    pub blocks: Option<Value>,
}

/// Any `chat.postMessage` request and how it was answered.
#[derive(Debug, Clone)]
pub struct PostAttempt {
    pub at: Instant,
    pub token: Option<String>,
    pub channel: Option<String>,
    pub status: u16,
    /// The `error` code, `None` when `ok`.
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
enum PostScript {
    Fail(String),
    RateLimit(u64),
    Status(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenState {
    Active,
    Revoked,
    Expired,
}

struct FakeState {
    client_id: String,
    client_secret: String,
    /// `Some(expires_in)` when token rotation is on.
    rotation: Option<u64>,
    /// Unused codes, with the `redirect_uri` they were issued for (if any).
    codes: HashMap<String, Option<String>>,
    tokens: HashMap<String, TokenState>,
    /// Refresh tokens: `true` while usable.
    refresh_tokens: HashMap<String, bool>,
    refresh_count: usize,
    /// How long a refresh answer is held back (after the refresh token
    /// is spent), so callers can overlap.
    refresh_delay: std::time::Duration,
    issued: Vec<String>,
    channels: Vec<FakeChannel>,
    post_script: VecDeque<PostScript>,
    attempts: Vec<PostAttempt>,
    calls: HashMap<String, usize>,
    deny_next_authorize: bool,
    authorize_requests: Vec<HashMap<String, String>>,
    serial: u64,
    /// (channel, ts) of every accepted message.
    posted: Vec<(String, String)>,
    updates: Vec<UpdatedMessage>,
}

struct Shared {
    state: Mutex<FakeState>,
    messages: mpsc::UnboundedSender<PostedMessage>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }
}

pub struct FakeSlack {
    /// `http://127.0.0.1:PORT/api`
    pub api_base: String,
    /// `http://127.0.0.1:PORT` (serves `/oauth/v2/authorize`)
    pub oauth_base: String,
    shared: Arc<Shared>,
    messages: tokio::sync::Mutex<mpsc::UnboundedReceiver<PostedMessage>>,
}

impl FakeSlack {
    pub async fn start() -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(FakeState {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                rotation: None,
                codes: HashMap::new(),
                tokens: HashMap::new(),
                refresh_tokens: HashMap::new(),
                refresh_count: 0,
                refresh_delay: std::time::Duration::ZERO,
                issued: Vec::new(),
                channels: default_channels(),
                post_script: VecDeque::new(),
                attempts: Vec::new(),
                calls: HashMap::new(),
                deny_next_authorize: false,
                authorize_requests: Vec::new(),
                serial: 0,
                posted: Vec::new(),
                updates: Vec::new(),
            }),
            messages: sender,
        });
        let app = axum::Router::new()
            .route("/api/{method}", get(api).post(api))
            .route("/oauth/v2/authorize", get(authorize))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            api_base: format!("http://{address}/api"),
            oauth_base: format!("http://{address}"),
            shared,
            messages: tokio::sync::Mutex::new(receiver),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.shared.state()
    }

    pub fn set_client_credentials(&self, client_id: &str, client_secret: &str) {
        let mut state = self.state();
        state.client_id = client_id.into();
        state.client_secret = client_secret.into();
    }

    /// Installs and refreshes from now on issue rotating tokens
    /// (`xoxe.xoxb-…` + `refresh_token` `xoxe-1-…` + `expires_in`).
    pub fn enable_rotation(&self, expires_in_secs: u64) {
        self.state().rotation = Some(expires_in_secs);
    }

    /// Holds each refresh answer back this long (the refresh token is
    /// spent at once), as a slow Slack would.
    pub fn delay_refreshes(&self, delay: std::time::Duration) {
        self.state().refresh_delay = delay;
    }

    /// Registers a code `oauth.v2.access` accepts once (any redirect_uri).
    pub fn issue_code(&self, code: &str) {
        self.state().codes.insert(code.into(), None);
    }

    /// Registers a bot token as valid (for connections made from a pasted
    /// token).
    pub fn add_token(&self, token: &str) {
        self.state().tokens.insert(token.into(), TokenState::Active);
    }

    /// Makes a new valid `xoxb-` token.
    pub fn issue_bot_token(&self) -> String {
        let mut state = self.state();
        state.serial += 1;
        let token = format!("xoxb-1-{:04}-fakebot", state.serial);
        state.tokens.insert(token.clone(), TokenState::Active);
        state.issued.push(token.clone());
        token
    }

    /// The token answers `token_revoked` from now on.
    pub fn revoke(&self, token: &str) {
        self.state()
            .tokens
            .insert(token.into(), TokenState::Revoked);
    }

    /// The token answers `token_expired` from now on.
    pub fn expire(&self, token: &str) {
        self.state()
            .tokens
            .insert(token.into(), TokenState::Expired);
    }

    /// Successful `grant_type=refresh_token` exchanges so far.
    pub fn refresh_count(&self) -> usize {
        self.state().refresh_count
    }

    /// Access tokens issued, oldest first.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state().issued.clone()
    }

    pub fn last_access_token(&self) -> Option<String> {
        self.state().issued.last().cloned()
    }

    pub fn set_channels(&self, channels: Vec<FakeChannel>) {
        self.state().channels = channels;
    }

    /// The channels a listing with `exclude_archived` should return.
    pub fn active_channels(&self) -> Vec<FakeChannel> {
        self.state()
            .channels
            .iter()
            .filter(|channel| !channel.is_archived)
            .cloned()
            .collect()
    }

    /// The next `chat.postMessage` (past the token check) answers HTTP 200
    /// `{"ok":false,"error":code}`. Scripts queue in order.
    pub fn fail_next_post(&self, code: &str) {
        self.state()
            .post_script
            .push_back(PostScript::Fail(code.into()));
    }

    /// The next `chat.postMessage` answers 429, `Retry-After`,
    /// `ratelimited`.
    pub fn rate_limit_next_post(&self, retry_after_secs: u64) {
        self.state()
            .post_script
            .push_back(PostScript::RateLimit(retry_after_secs));
    }

    /// The next `chat.postMessage` answers a bare HTTP `status` (e.g. 503).
    pub fn fail_next_post_with_status(&self, status: u16) {
        self.state()
            .post_script
            .push_back(PostScript::Status(status));
    }

    /// The next accepted message; panics after 15 s without one.
    pub async fn next_message(&self) -> PostedMessage {
        let mut messages = self.messages.lock().await;
        tokio::time::timeout(Duration::from_secs(15), messages.recv())
            .await
            .expect("no message reached the fake Slack within 15 s")
            .expect("fake Slack closed")
    }

    /// An accepted message not yet taken, if any.
    pub async fn try_next_message(&self) -> Option<PostedMessage> {
        self.messages.lock().await.try_recv().ok()
    }

    /// Every `chat.postMessage` request so far, accepted or not.
    pub fn post_attempts(&self) -> Vec<PostAttempt> {
        self.state().attempts.clone()
    }

    /// When each accepted message arrived, in order.
    pub fn message_times(&self) -> Vec<Instant> {
        self.state()
            .attempts
            .iter()
            .filter(|attempt| attempt.error.is_none())
            .map(|attempt| attempt.at)
            .collect()
    }

    /// Every accepted `chat.update`, in order.
    pub fn updates(&self) -> Vec<UpdatedMessage> {
        self.state().updates.clone()
    }

    /// Calls of one Web API method so far (`"conversations.list"`).
    pub fn calls(&self, method: &str) -> usize {
        self.state().calls.get(method).copied().unwrap_or(0)
    }

    /// The next visit to the install page is cancelled by the user:
    /// redirect with `error=access_denied`.
    pub fn deny_next_authorize(&self) {
        self.state().deny_next_authorize = true;
    }

    /// The query parameters of each visit to `/oauth/v2/authorize`.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        self.state().authorize_requests.clone()
    }
}

fn parse_pairs(text: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{text}"))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn slack_ok(mut body: Value) -> Response {
    body["ok"] = Value::Bool(true);
    axum::Json(body).into_response()
}

fn slack_error(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

/// The install page: a user who approves is sent back with a fresh code.
async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = parse_pairs(query.as_deref().unwrap_or_default());
    let mut state = shared.state();
    state.authorize_requests.push(params.clone());
    if params.get("client_id") != Some(&state.client_id) {
        return (StatusCode::BAD_REQUEST, "invalid_client_id").into_response();
    }
    let Some(redirect) = params
        .get("redirect_uri")
        .and_then(|uri| reqwest::Url::parse(uri).ok())
    else {
        return (StatusCode::BAD_REQUEST, "bad_redirect_uri").into_response();
    };
    let mut target = redirect.clone();
    {
        let mut pairs = target.query_pairs_mut();
        if std::mem::take(&mut state.deny_next_authorize) {
            pairs.append_pair("error", "access_denied");
        } else {
            state.serial += 1;
            let code = format!("fake-code-{}", state.serial);
            state.codes.insert(code.clone(), Some(redirect.to_string()));
            pairs.append_pair("code", &code);
        }
        if let Some(value) = params.get("state") {
            pairs.append_pair("state", value);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, target.to_string())]).into_response()
}

async fn api(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    *shared.state().calls.entry(method.clone()).or_default() += 1;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    // Arguments: the query string, then the form body (or the JSON body).
    let mut params = parse_pairs(query.as_deref().unwrap_or_default());
    let json_body = if is_json {
        match serde_json::from_slice::<Value>(&body) {
            Ok(value) if value.is_object() => Some(value),
            Ok(_) => return slack_error("json_not_object"),
            Err(_) => return slack_error("invalid_json"),
        }
    } else {
        params.extend(parse_pairs(&String::from_utf8_lossy(&body)));
        None
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::to_string);
    // Slack takes a `token` argument in form bodies, never with JSON.
    let token = bearer.or_else(|| (!is_json).then(|| params.get("token").cloned()).flatten());
    match method.as_str() {
        "oauth.v2.access" => {
            let answer = oauth_access(&shared, &headers, &params);
            let is_refresh = params.get("grant_type").map(String::as_str) == Some("refresh_token");
            let delay = shared.state().refresh_delay;
            if is_refresh && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        }
        "auth.test" => match check_token(&shared, token.as_deref()) {
            Err(code) => slack_error(code),
            Ok(_) => slack_ok(json!({
                "url": "https://casterly-rock.slack.com/",
                "team": TEAM_NAME,
                "user": "switchyard",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": false,
            })),
        },
        "conversations.list" => match check_token(&shared, token.as_deref()) {
            Err(code) => slack_error(code),
            Ok(_) => conversations_list(&shared, &params),
        },
        "chat.postMessage" => {
            let body = json_body.unwrap_or_else(|| form_as_json(&params));
            post_message(&shared, token, body)
        }
        "chat.update" => {
            let body = json_body.unwrap_or_else(|| form_as_json(&params));
            update_message(&shared, token, body)
        }
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"ok": false, "error": "unknown_method"})),
        )
            .into_response(),
    }
}

fn check_token(shared: &Shared, token: Option<&str>) -> Result<String, &'static str> {
    let Some(token) = token.filter(|token| !token.is_empty()) else {
        return Err("not_authed");
    };
    match shared.state().tokens.get(token) {
        Some(TokenState::Active) => Ok(token.to_string()),
        Some(TokenState::Revoked) => Err("token_revoked"),
        Some(TokenState::Expired) => Err("token_expired"),
        None => Err("invalid_auth"),
    }
}

fn client_credentials(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|pair| {
            let (id, secret) = pair.split_once(':')?;
            Some((id.to_string(), secret.to_string()))
        });
    basic.or_else(|| {
        Some((
            params.get("client_id")?.clone(),
            params.get("client_secret")?.clone(),
        ))
    })
}

fn oauth_access(
    shared: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Response {
    let mut state = shared.state();
    match client_credentials(headers, params) {
        Some((id, secret)) if id == state.client_id && secret == state.client_secret => {}
        _ => return slack_error("invalid_client_id"),
    }
    if params.get("grant_type").map(String::as_str) == Some("refresh_token") {
        let refresh = params.get("refresh_token").cloned().unwrap_or_default();
        if state.refresh_tokens.get(&refresh) != Some(&true) {
            return slack_error("invalid_refresh_token");
        }
        state.refresh_tokens.insert(refresh, false);
        state.refresh_count += 1;
        let expires_in = state.rotation.unwrap_or(DEFAULT_EXPIRES_IN);
        return slack_ok(issue_access(&mut state, Some(expires_in)));
    }
    let code = params.get("code").cloned().unwrap_or_default();
    let Some(expected_redirect) = state.codes.remove(&code) else {
        return slack_error("invalid_code");
    };
    if let Some(expected) = expected_redirect
        && params.get("redirect_uri") != Some(&expected)
    {
        return slack_error("bad_redirect_uri");
    }
    let rotation = state.rotation;
    slack_ok(issue_access(&mut state, rotation))
}

/// An `oauth.v2.access` answer with a new token (rotating when
/// `expires_in` is set).
fn issue_access(state: &mut FakeState, expires_in: Option<u64>) -> Value {
    state.serial += 1;
    let serial = state.serial;
    let mut answer = json!({
        "token_type": "bot",
        "scope": SCOPES,
        "bot_user_id": BOT_USER_ID,
        "app_id": APP_ID,
        "team": {"id": TEAM_ID, "name": TEAM_NAME},
        "enterprise": null,
        "is_enterprise_install": false,
        "authed_user": {"id": "U0INSTALLER"},
    });
    let access_token = match expires_in {
        Some(expires_in) => {
            let refresh = format!("xoxe-1-{serial:04}-fakerefresh");
            state.refresh_tokens.insert(refresh.clone(), true);
            answer["refresh_token"] = json!(refresh);
            answer["expires_in"] = json!(expires_in);
            format!("xoxe.xoxb-1-{serial:04}-fakebot")
        }
        None => format!("xoxb-1-{serial:04}-fakebot"),
    };
    state
        .tokens
        .insert(access_token.clone(), TokenState::Active);
    state.issued.push(access_token.clone());
    answer["access_token"] = json!(access_token);
    answer
}

fn encode_cursor(offset: usize) -> String {
    STANDARD.encode(format!("offset:{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let text = String::from_utf8(STANDARD.decode(cursor).ok()?).ok()?;
    text.strip_prefix("offset:")?.parse().ok()
}

/// Slack's paging: `limit` channels from the cursor, then the filters, so a
/// page may be short or even empty while `next_cursor` goes on.
fn conversations_list(shared: &Shared, params: &HashMap<String, String>) -> Response {
    let types = params
        .get("types")
        .cloned()
        .unwrap_or_else(|| "public_channel".into());
    let public = types.split(',').any(|kind| kind.trim() == "public_channel");
    let private = types
        .split(',')
        .any(|kind| kind.trim() == "private_channel");
    let exclude_archived = matches!(
        params.get("exclude_archived").map(String::as_str),
        Some("true" | "1")
    );
    let limit = match params.get("limit").map(|limit| limit.parse::<usize>()) {
        None => 100,
        Some(Ok(limit)) if (1..1000).contains(&limit) => limit,
        Some(_) => return slack_error("invalid_limit"),
    };
    let offset = match params.get("cursor").filter(|cursor| !cursor.is_empty()) {
        None => 0,
        Some(cursor) => match decode_cursor(cursor) {
            Some(offset) => offset,
            None => return slack_error("invalid_cursor"),
        },
    };
    let state = shared.state();
    let end = (offset + limit).min(state.channels.len());
    let page: Vec<Value> = state
        .channels
        .get(offset..end)
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter(|(_, channel)| if channel.is_private { private } else { public })
        .filter(|(_, channel)| !(exclude_archived && channel.is_archived))
        .map(|(i, channel)| {
            json!({
                "id": channel.id,
                "name": channel.name,
                "name_normalized": channel.name,
                "is_channel": true,
                "is_group": false,
                "is_im": false,
                "is_mpim": false,
                "is_private": channel.is_private,
                "is_archived": channel.is_archived,
                "is_general": channel.name == "general",
                "is_member": false,
                "created": 1_700_000_000 + offset + i,
                "num_members": 3,
            })
        })
        .collect();
    let next_cursor = if end < state.channels.len() {
        encode_cursor(end)
    } else {
        String::new()
    };
    slack_ok(json!({"channels": page, "response_metadata": {"next_cursor": next_cursor}}))
}

/// A form body's arguments as JSON (`blocks` parsed when it is JSON text).
fn form_as_json(params: &HashMap<String, String>) -> Value {
    let mut object = serde_json::Map::new();
    for (key, value) in params {
        let value = if key == "blocks" {
            serde_json::from_str(value).unwrap_or(Value::String(value.clone()))
        } else {
            Value::String(value.clone())
        };
        object.insert(key.clone(), value);
    }
    Value::Object(object)
}

fn post_message(shared: &Shared, token: Option<String>, body: Value) -> Response {
    let channel = body
        .get("channel")
        .and_then(Value::as_str)
        .map(str::to_string);
    let record = |status: u16, error: Option<&str>| {
        shared.state().attempts.push(PostAttempt {
            at: Instant::now(),
            token: token.clone(),
            channel: channel.clone(),
            status,
            error: error.map(str::to_string),
        });
    };
    let token = match check_token(shared, token.as_deref()) {
        Ok(token) => token,
        Err(code) => {
            record(200, Some(code));
            return slack_error(code);
        }
    };
    let scripted = shared.state().post_script.pop_front();
    match scripted {
        Some(PostScript::Fail(code)) => {
            record(200, Some(&code));
            return slack_error(&code);
        }
        Some(PostScript::RateLimit(seconds)) => {
            record(429, Some("ratelimited"));
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, seconds.to_string())],
                axum::Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response();
        }
        Some(PostScript::Status(status)) => {
            record(status, Some(&format!("HTTP {status}")));
            let status = StatusCode::from_u16(status).unwrap();
            return (status, "upstream trouble").into_response();
        }
        None => {}
    }
    let Some(channel_id) = channel.clone().filter(|channel| !channel.is_empty()) else {
        record(200, Some("channel_not_found"));
        return slack_error("channel_not_found");
    };
    let archived = shared
        .state()
        .channels
        .iter()
        .any(|known| known.id == channel_id && known.is_archived);
    if archived {
        record(200, Some("is_archived"));
        return slack_error("is_archived");
    }
    let text = body.get("text").and_then(Value::as_str).map(str::to_string);
    let blocks = body.get("blocks").cloned();
    if text.as_deref().is_none_or(str::is_empty) && blocks.is_none() {
        record(200, Some("no_text"));
        return slack_error("no_text");
    }
    if let Some(blocks) = &blocks
        && let Err(problem) = check_blocks(blocks)
    {
        record(200, Some("invalid_blocks"));
        return axum::Json(json!({
            "ok": false,
            "error": "invalid_blocks",
            "errors": [problem],
        }))
        .into_response();
    }
    record(200, None);
    let ts = {
        let mut state = shared.state();
        state.serial += 1;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}.{:06}", now.as_secs(), state.serial % 1_000_000)
    };
    shared.state().posted.push((channel_id.clone(), ts.clone()));
    let _ = shared.messages.send(PostedMessage {
        token,
        channel: channel_id.clone(),
        text: text.clone(),
        blocks: blocks.clone(),
        body: body.clone(),
        at: Instant::now(),
        ts: ts.clone(),
        thread_ts: body
            .get("thread_ts")
            .and_then(Value::as_str)
            .map(str::to_string),
    });
    slack_ok(json!({
        "channel": channel_id,
        "ts": ts,
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "text": text,
            "blocks": blocks,
            "bot_id": BOT_ID,
            "ts": ts,
        },
    }))
}

/// `chat.update`: `channel` (an id) and `ts` of a message posted there,
/// then `text` or `blocks`. Answers `{ok, channel, ts, text, message}`.
fn update_message(shared: &Shared, token: Option<String>, body: Value) -> Response {
    if let Err(code) = check_token(shared, token.as_deref()) {
        return slack_error(code);
    }
    let field = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
    let Some(channel) = field("channel").filter(|channel| !channel.is_empty()) else {
        return slack_error("channel_not_found");
    };
    let Some(ts) = field("ts") else {
        return slack_error("message_not_found");
    };
    if !shared
        .state()
        .posted
        .iter()
        .any(|(posted_in, posted_ts)| *posted_in == channel && *posted_ts == ts)
    {
        return slack_error("message_not_found");
    }
    let text = field("text");
    let blocks = body.get("blocks").cloned();
    if text.as_deref().is_none_or(str::is_empty) && blocks.is_none() {
        return slack_error("no_text");
    }
    if let Some(blocks) = &blocks
        && let Err(problem) = check_blocks(blocks)
    {
        return axum::Json(json!({"ok": false, "error": "invalid_blocks", "errors": [problem]}))
            .into_response();
    }
    shared.state().updates.push(UpdatedMessage {
        channel: channel.clone(),
        ts: ts.clone(),
        text: text.clone(),
        blocks: blocks.clone(),
    });
    slack_ok(json!({
        "channel": channel,
        "ts": ts,
        "text": text,
        "message": {"type": "message", "text": text, "blocks": blocks, "bot_id": BOT_ID},
    }))
}

/// Block Kit's limits for the blocks Switchyard uses.
fn check_blocks(blocks: &Value) -> Result<(), String> {
    let blocks = blocks.as_array().ok_or("blocks must be an array")?;
    if blocks.len() > 50 {
        return Err("no more than 50 items allowed [json-pointer:/blocks]".into());
    }
    let length = |text: &Value| text.as_str().map(|text| text.encode_utf16().count());
    for (i, block) in blocks.iter().enumerate() {
        let at = |what: &str| format!("{what} [json-pointer:/blocks/{i}]");
        match block.get("type").and_then(Value::as_str) {
            Some("header") => {
                let text = &block["text"];
                if text["type"] != "plain_text" {
                    return Err(at("header text must be plain_text"));
                }
                match length(&text["text"]) {
                    Some(1..=150) => {}
                    _ => return Err(at("header text must be 1 to 150 characters")),
                }
            }
            Some("section") => {
                let text = block.get("text");
                let fields = block.get("fields");
                if text.is_none() && fields.is_none() {
                    return Err(at("a section needs text or fields"));
                }
                if let Some(text) = text
                    && !matches!(length(&text["text"]), Some(1..=3000))
                {
                    return Err(at("section text must be 1 to 3000 characters"));
                }
                if let Some(fields) = fields {
                    let fields = fields
                        .as_array()
                        .ok_or_else(|| at("fields must be an array"))?;
                    if fields.is_empty() || fields.len() > 10 {
                        return Err(at("a section has 1 to 10 fields"));
                    }
                    if fields
                        .iter()
                        .any(|field| !matches!(length(&field["text"]), Some(1..=2000)))
                    {
                        return Err(at("field text must be 1 to 2000 characters"));
                    }
                }
            }
            Some("context") => {
                let elements = block["elements"]
                    .as_array()
                    .ok_or_else(|| at("context needs elements"))?;
                if elements.is_empty() || elements.len() > 10 {
                    return Err(at("context has 1 to 10 elements"));
                }
            }
            Some("divider" | "actions" | "image" | "rich_text" | "input" | "file" | "video") => {}
            _ => return Err(at("unknown block type")),
        }
    }
    Ok(())
}

// ---- self-tests: the fake behaves like the Slack documentation says ----

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard::destinations::slack::{
        SlackApi, SlackError, SlackVerdict, classify, render_message,
    };

    async fn call(fake: &FakeSlack, method: &str, token: &str, form: &[(&str, &str)]) -> Value {
        reqwest::Client::new()
            .post(format!("{}/{method}", fake.api_base))
            .bearer_auth(token)
            .form(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn exchange(fake: &FakeSlack, form: &[(&str, &str)], secret: &str) -> Value {
        reqwest::Client::new()
            .post(format!("{}/oauth.v2.access", fake.api_base))
            .basic_auth(CLIENT_ID, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn fake_slack_pagination_walks_all_pages() {
        let fake = FakeSlack::start().await;
        let token = fake.issue_bot_token();
        let mut cursor = String::new();
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut short_page = false;
        loop {
            let mut form = vec![
                ("types", "public_channel,private_channel"),
                ("exclude_archived", "true"),
                ("limit", "200"),
            ];
            if !cursor.is_empty() {
                form.push(("cursor", &cursor));
            }
            let page = call(&fake, "conversations.list", &token, &form).await;
            assert_eq!(page["ok"], true, "{page}");
            pages += 1;
            let channels = page["channels"].as_array().unwrap();
            short_page |= channels.len() < 200 && page["response_metadata"]["next_cursor"] != "";
            for channel in channels {
                assert_eq!(channel["is_archived"], false);
                seen.push(channel["id"].as_str().unwrap().to_string());
            }
            cursor = page["response_metadata"]["next_cursor"]
                .as_str()
                .unwrap()
                .to_string();
            if cursor.is_empty() {
                break;
            }
        }
        assert_eq!(pages, 3);
        assert!(
            short_page,
            "filters apply after the limit, so pages are short"
        );
        let expected: Vec<String> = fake.active_channels().into_iter().map(|c| c.id).collect();
        assert_eq!(seen, expected);
        assert!(expected.len() > 400 && expected.len() < 450);

        // Slack's defaults: public channels only, archived included, 100 a page.
        let page = call(&fake, "conversations.list", &token, &[]).await;
        let channels = page["channels"].as_array().unwrap();
        assert!(
            channels
                .iter()
                .all(|channel| channel["is_private"] == false)
        );
        assert!(
            channels
                .iter()
                .any(|channel| channel["is_archived"] == true)
        );
        assert!(channels.len() <= 100);
        let bad = call(
            &fake,
            "conversations.list",
            &token,
            &[("cursor", "nonsense")],
        )
        .await;
        assert_eq!(bad["error"], "invalid_cursor");
        let unknown = call(&fake, "conversations.list", "xoxb-nope", &[]).await;
        assert_eq!(unknown["error"], "invalid_auth");
        assert_eq!(fake.calls("conversations.list"), 6);
    }

    #[tokio::test]
    async fn fake_slack_codes_are_single_use_and_need_the_client() {
        let fake = FakeSlack::start().await;
        fake.issue_code("code-1");
        let wrong = exchange(&fake, &[("code", "code-1")], "wrong-secret").await;
        assert_eq!(wrong, json!({"ok": false, "error": "invalid_client_id"}));
        let first = exchange(
            &fake,
            &[("code", "code-1"), ("redirect_uri", "http://x/cb")],
            CLIENT_SECRET,
        )
        .await;
        assert_eq!(first["ok"], true, "{first}");
        let token = first["access_token"].as_str().unwrap();
        assert!(token.starts_with("xoxb-"), "{token}");
        assert!(first.get("refresh_token").is_none());
        assert_eq!(first["team"], json!({"id": TEAM_ID, "name": TEAM_NAME}));
        assert_eq!(first["bot_user_id"], BOT_USER_ID);
        let again = exchange(&fake, &[("code", "code-1")], CLIENT_SECRET).await;
        assert_eq!(again, json!({"ok": false, "error": "invalid_code"}));
        let unknown = exchange(&fake, &[("code", "never-issued")], CLIENT_SECRET).await;
        assert_eq!(unknown["error"], "invalid_code");
        let who = call(&fake, "auth.test", token, &[]).await;
        assert_eq!(who["team_id"], TEAM_ID);
        assert_eq!(who["user_id"], BOT_USER_ID);
        fake.revoke(token);
        assert_eq!(
            call(&fake, "auth.test", token, &[]).await["error"],
            "token_revoked"
        );
    }

    #[tokio::test]
    async fn fake_slack_refresh_rotates() {
        let fake = FakeSlack::start().await;
        fake.enable_rotation(600);
        fake.issue_code("code-1");
        let install = exchange(&fake, &[("code", "code-1")], CLIENT_SECRET).await;
        let first_token = install["access_token"].as_str().unwrap().to_string();
        let first_refresh = install["refresh_token"].as_str().unwrap().to_string();
        assert!(first_token.starts_with("xoxe.xoxb-"), "{first_token}");
        assert!(first_refresh.starts_with("xoxe-1-"), "{first_refresh}");
        assert_eq!(install["expires_in"], 600);
        let refresh_form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", first_refresh.as_str()),
        ];
        let refreshed = exchange(&fake, &refresh_form, CLIENT_SECRET).await;
        assert_eq!(refreshed["ok"], true, "{refreshed}");
        assert_ne!(refreshed["access_token"], first_token.as_str());
        assert_ne!(refreshed["refresh_token"], first_refresh.as_str());
        assert_eq!(fake.refresh_count(), 1);
        // The old refresh token is spent.
        let reused = exchange(&fake, &refresh_form, CLIENT_SECRET).await;
        assert_eq!(reused["error"], "invalid_refresh_token");
        assert_eq!(fake.refresh_count(), 1);
        assert_eq!(
            fake.last_access_token().as_deref(),
            refreshed["access_token"].as_str()
        );
    }

    #[tokio::test]
    async fn fake_slack_post_message_scripting() {
        let fake = FakeSlack::start().await;
        let token = fake.issue_bot_token();
        let post = |token: String, body: Value| {
            let url = format!("{}/chat.postMessage", fake.api_base);
            async move {
                let response = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .map(|value| value.to_str().unwrap().to_string());
                (status, retry_after, response.json::<Value>().await.unwrap())
            }
        };
        let message = json!({"channel": "C0000002", "text": "hello", "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}
        ]});
        let (status, _, answer) = post(token.clone(), message.clone()).await;
        assert_eq!(
            (status, &answer["ok"], &answer["channel"]),
            (200, &json!(true), &json!("C0000002"))
        );
        let received = fake.next_message().await;
        assert_eq!(received.channel, "C0000002");
        assert_eq!(received.text.as_deref(), Some("hello"));
        assert_eq!(received.token, token);

        fake.fail_next_post("channel_not_found");
        fake.rate_limit_next_post(3);
        let (status, _, answer) = post(token.clone(), message.clone()).await;
        assert_eq!(
            (status, answer),
            (200, json!({"ok": false, "error": "channel_not_found"}))
        );
        let (status, retry_after, answer) = post(token.clone(), message.clone()).await;
        assert_eq!(
            (status, retry_after.as_deref(), &answer["error"]),
            (429, Some("3"), &json!("ratelimited"))
        );

        let (_, _, answer) = post(token.clone(), json!({"channel": "C0000002"})).await;
        assert_eq!(answer["error"], "no_text");
        let long_header = json!({"channel": "C0000002", "text": "x", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "x".repeat(151)}}
        ]});
        assert_eq!(
            post(token.clone(), long_header).await.2["error"],
            "invalid_blocks"
        );
        let archived = fake
            .state()
            .channels
            .iter()
            .find(|c| c.is_archived)
            .unwrap()
            .id
            .clone();
        let (_, _, answer) = post(token.clone(), json!({"channel": archived, "text": "x"})).await;
        assert_eq!(answer["error"], "is_archived");

        fake.expire(&token);
        assert_eq!(
            post(token.clone(), message.clone()).await.2["error"],
            "token_expired"
        );
        fake.revoke(&token);
        assert_eq!(
            post(token.clone(), message.clone()).await.2["error"],
            "token_revoked"
        );
        assert_eq!(
            post("xoxb-unknown".into(), message.clone()).await.2["error"],
            "invalid_auth"
        );

        let attempts = fake.post_attempts();
        assert_eq!(attempts.len(), 9);
        assert_eq!(attempts[0].error, None);
        assert_eq!(attempts[2].status, 429);
        assert_eq!(fake.message_times().len(), 1);
        assert!(fake.try_next_message().await.is_none());
    }

    #[tokio::test]
    async fn fake_slack_updates_only_messages_it_posted() {
        let fake = FakeSlack::start().await;
        let token = fake.issue_bot_token();
        let call = |method: &'static str, body: Value| {
            let url = format!("{}/{method}", fake.api_base);
            let token = token.clone();
            async move {
                reqwest::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json::<Value>()
                    .await
                    .unwrap()
            }
        };
        let posted = call(
            "chat.postMessage",
            json!({"channel": "C0000002", "text": "first"}),
        )
        .await;
        let ts = posted["ts"].as_str().unwrap().to_string();
        let reply = call(
            "chat.postMessage",
            json!({"channel": "C0000002", "text": "reply", "thread_ts": ts}),
        )
        .await;
        assert_eq!(reply["ok"], true);
        fake.next_message().await;
        assert_eq!(
            fake.next_message().await.thread_ts.as_deref(),
            Some(ts.as_str())
        );

        let update = json!({"channel": "C0000002", "ts": ts, "text": "resolved"});
        let answer = call("chat.update", update).await;
        assert_eq!(
            (&answer["ok"], &answer["ts"], &answer["channel"]),
            (&json!(true), &json!(ts), &json!("C0000002"))
        );
        for (body, error) in [
            (
                json!({"channel": "C0000003", "ts": ts, "text": "x"}),
                "message_not_found",
            ),
            (
                json!({"channel": "C0000002", "ts": "1.000001", "text": "x"}),
                "message_not_found",
            ),
            (json!({"ts": ts, "text": "x"}), "channel_not_found"),
            (json!({"channel": "C0000002", "ts": ts}), "no_text"),
        ] {
            assert_eq!(call("chat.update", body).await["error"], error);
        }
        let updates = fake.updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].text.as_deref(), Some("resolved"));
    }

    #[tokio::test]
    async fn fake_slack_authorize_redirects_with_a_code() {
        let fake = FakeSlack::start().await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let authorize = |state: &str| {
            let mut url =
                reqwest::Url::parse(&format!("{}/oauth/v2/authorize", fake.oauth_base)).unwrap();
            url.query_pairs_mut()
                .append_pair("client_id", CLIENT_ID)
                .append_pair("scope", SCOPES)
                .append_pair("redirect_uri", "http://app.example/oauth/slack/callback")
                .append_pair("state", state);
            http.get(url).send()
        };
        let response = authorize("s1").await.unwrap();
        assert_eq!(response.status(), 302);
        let location =
            reqwest::Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        let params: HashMap<String, String> = location.query_pairs().into_owned().collect();
        assert_eq!(location.path(), "/oauth/slack/callback");
        assert_eq!(params["state"], "s1");
        let code = params["code"].clone();
        // The code is bound to the redirect_uri it was issued for.
        let wrong = exchange(
            &fake,
            &[("code", &code), ("redirect_uri", "http://evil/cb")],
            CLIENT_SECRET,
        )
        .await;
        assert_eq!(wrong["error"], "bad_redirect_uri");

        fake.deny_next_authorize();
        let response = authorize("s2").await.unwrap();
        let location = response.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.contains("error=access_denied") && location.contains("state=s2"),
            "{location}"
        );
        assert_eq!(fake.authorize_requests()[0]["scope"], SCOPES);
    }

    /// The real client against the fake: both sides of the same shapes.
    #[tokio::test]
    async fn slack_api_speaks_to_the_fake() {
        let fake = FakeSlack::start().await;
        fake.enable_rotation(DEFAULT_EXPIRES_IN);
        let api = SlackApi::new(reqwest::Client::new(), fake.api_base.clone());
        fake.issue_code("code-1");
        let access = api
            .oauth_access(CLIENT_ID, CLIENT_SECRET, "code-1", "http://x/cb")
            .await
            .unwrap();
        assert_eq!(access.team.id, TEAM_ID);
        assert_eq!(access.team.name, TEAM_NAME);
        assert_eq!(access.bot_user_id, BOT_USER_ID);
        assert_eq!(access.scope, SCOPES);
        assert_eq!(access.expires_in, Some(DEFAULT_EXPIRES_IN));
        let again = api
            .oauth_access(CLIENT_ID, CLIENT_SECRET, "code-1", "http://x/cb")
            .await;
        assert!(
            matches!(again, Err(SlackError::Api { ref error }) if error == "invalid_code"),
            "{again:?}"
        );

        let refresh = access.refresh_token.clone().unwrap();
        let fresh = api
            .refresh(CLIENT_ID, CLIENT_SECRET, &refresh)
            .await
            .unwrap();
        assert_ne!(fresh.access_token, access.access_token);
        assert_eq!(fake.refresh_count(), 1);
        let spent = api.refresh(CLIENT_ID, CLIENT_SECRET, &refresh).await;
        assert!(
            matches!(spent, Err(SlackError::Api { ref error }) if error == "invalid_refresh_token")
        );

        let token = fresh.access_token;
        let who = api.auth_test(&token).await.unwrap();
        assert_eq!(
            (who.team_id.as_str(), who.team.as_str()),
            (TEAM_ID, TEAM_NAME)
        );
        assert_eq!(who.bot_id.as_deref(), Some(BOT_ID));

        let channels = api.conversations_list(&token).await.unwrap();
        let mut expected: Vec<String> = fake.active_channels().into_iter().map(|c| c.id).collect();
        let mut got: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert!(channels.iter().any(|c| c.is_private));
        assert_eq!(channels[0].name, "chan-001");

        // A rendered alert passes the fake's Block Kit checks.
        let event = switchyard::model::Event {
            id: switchyard::model::EventId::new(),
            workspace_id: switchyard::model::WorkspaceId::new(),
            name: switchyard::model::EventName::parse("alert.triggered").unwrap(),
            resource: Some("alert".into()),
            resource_id: Some("alrt_tyrion_42".into()),
            payload: crate::helpers::example_event()["payload"]
                .to_string()
                .into_bytes(),
            received_at_ms: 0,
        };
        let summary = switchyard::destinations::message::AlertSummary::from_event(&event);
        let body = render_message(&event, &summary, "C0000002", None).unwrap();
        let answer = api.post_message(&token, &body).await.unwrap();
        assert_eq!(classify(&answer), SlackVerdict::Delivered, "{answer:?}");
        let message = fake.next_message().await;
        assert!(
            message
                .text
                .unwrap()
                .contains("api_latency_p95 is 1840 (threshold 1000)")
        );
        assert_eq!(message.body["unfurl_links"], false);

        fake.rate_limit_next_post(2);
        let answer = api.post_message(&token, &body).await.unwrap();
        assert_eq!(
            classify(&answer),
            SlackVerdict::Retry {
                error: "ratelimited".into(),
                retry_after: Some(Duration::from_secs(2))
            }
        );
        fake.expire(&token);
        let answer = api.post_message(&token, &body).await.unwrap();
        assert_eq!(classify(&answer), SlackVerdict::TokenExpired);
        fake.revoke(&token);
        let answer = api.post_message(&token, &body).await.unwrap();
        assert_eq!(
            classify(&answer),
            SlackVerdict::Reauth {
                error: "token_revoked".into()
            }
        );
        assert!(matches!(
            api.conversations_list(&token).await,
            Err(SlackError::Api { ref error }) if error == "token_revoked"
        ));
    }
}
