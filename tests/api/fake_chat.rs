//! Fake Microsoft Teams Workflows and Discord webhook endpoints on
//! loopback, each checking the documented request shapes before it
//! answers like the real service. Every request is recorded; answers can be
//! scripted ahead (then the service's success).
//!
//! - Teams (a Workflows "when a Teams webhook request is received" trigger,
//!   `POST /workflows/{id}/triggers/manual/paths/invoke?…&sig=…`): the body
//!   must be a message with Adaptive Card attachments
//!   (`{"type":"message","attachments":[{"contentType":
//!   "application/vnd.microsoft.card.adaptive","content":{"type":
//!   "AdaptiveCard","version","body":[…]}}]}`); a wrong `sig` is 401, a bad
//!   body 400 with `{"error":{"code","message"}}`, success 202 with no body.
//! - Discord (Execute Webhook, `POST /api/webhooks/{id}/{token}`): `content`
//!   or `embeds` (≤ 10) with the embed limits (title ≤ 256, description ≤
//!   4096, ≤ 25 fields with non-empty names ≤ 256 and values ≤ 1024, integer
//!   `color`, ISO 8601 `timestamp`); an unknown webhook is 404 `{"message":
//!   "Unknown Webhook","code":10015}`, a wrong token 401 (code 50027), a bad
//!   body 400 (code 50035), success 204. A rate limit answers 429 with
//!   `{"message","retry_after","global"}` and `Retry-After`.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One request as a fake saw it.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct ChatReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

impl ChatReply {
    pub fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }

    /// Discord's rate limit answer.
    pub fn discord_rate_limit(retry_after: f64) -> Self {
        Self::json(
            429,
            json!({"message": "You are being rate limited.", "retry_after": retry_after, "global": false}),
        )
        .with_header("x-ratelimit-limit", "5")
        .with_header("x-ratelimit-remaining", "0")
        .with_header("x-ratelimit-scope", "shared")
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }
}

/// Which service a fake plays.
#[derive(Clone, Copy)]
enum Service {
    Teams,
    Discord,
}

const TEAMS_WORKFLOW: &str = "8c1f7dd0a5e94e1e9a1c3b2f5d6e7f80";
const TEAMS_SIG: &str = "Qm9ndXNTaWduYXR1cmVGb3JUZXN0czAxMjM0NTY3ODk";
const DISCORD_ID: &str = "1234567890123456789";
const DISCORD_TOKEN: &str = "xT0k3n-For_Discord_Tests-9f8e7d6c5b4a";

pub struct FakeChat {
    /// The URL a tenant pastes (its path and query are the credential).
    pub url: String,
    /// The part of `url` that must never be stored or shown in plain text.
    pub credential: &'static str,
    base: String,
    requests: mpsc::UnboundedReceiver<ChatRequest>,
    script: Arc<Mutex<VecDeque<ChatReply>>>,
}

struct Shared {
    service: Service,
    sender: mpsc::UnboundedSender<ChatRequest>,
    script: Arc<Mutex<VecDeque<ChatReply>>>,
}

impl FakeChat {
    pub async fn teams() -> Self {
        let mut fake = Self::start(Service::Teams).await;
        fake.url = format!(
            "{}/workflows/{TEAMS_WORKFLOW}/triggers/manual/paths/invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig={TEAMS_SIG}",
            fake.base
        );
        fake.credential = TEAMS_SIG;
        fake
    }

    pub async fn discord() -> Self {
        let mut fake = Self::start(Service::Discord).await;
        fake.url = format!("{}/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}", fake.base);
        fake.credential = DISCORD_TOKEN;
        fake
    }

    async fn start(service: Service) -> Self {
        let (sender, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let shared = Arc::new(Shared {
            service,
            sender,
            script: script.clone(),
        });
        let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { answer(&shared, &uri, headers, &body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: String::new(),
            credential: "",
            base,
            requests,
            script,
        }
    }

    /// The fake's origin, as answers show a masked URL (`{origin}/********`).
    pub fn origin(&self) -> &str {
        &self.base
    }

    /// Queues answers for the next well-formed, authorised requests.
    pub fn script(&self, replies: impl IntoIterator<Item = ChatReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// The next request (waits at most 20 s).
    pub async fn next_request(&mut self) -> ChatRequest {
        tokio::time::timeout(Duration::from_secs(20), self.requests.recv())
            .await
            .expect("no request reached the fake within 20 s")
            .expect("the fake stopped")
    }

    /// Requests already received, without waiting.
    pub fn received(&mut self) -> Vec<ChatRequest> {
        let mut requests = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            requests.push(request);
        }
        requests
    }
}

fn answer(shared: &Shared, uri: &Uri, headers: HeaderMap, body: &[u8]) -> Response {
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let _ = shared.sender.send(ChatRequest {
        headers: headers.clone(),
        body: json_body.clone(),
        at: Instant::now(),
    });
    let json_content = headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let refusal = match shared.service {
        Service::Teams => teams_refusal(uri, json_content, &json_body),
        Service::Discord => discord_refusal(uri, json_content, &json_body),
    };
    let reply = match refusal {
        Some(refusal) => refusal,
        None => match shared.script.lock().unwrap().pop_front() {
            Some(reply) => reply,
            None => match shared.service {
                Service::Teams => ChatReply::empty(202),
                Service::Discord => ChatReply::empty(204),
            },
        },
    };
    let status = StatusCode::from_u16(reply.status).unwrap();
    let mut response = match reply.body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    };
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn teams_refusal(uri: &Uri, json_content: bool, body: &Value) -> Option<ChatReply> {
    let expected_path = format!("/workflows/{TEAMS_WORKFLOW}/triggers/manual/paths/invoke");
    if uri.path() != expected_path {
        return Some(teams_error(
            404,
            "WorkflowNotFound",
            "The workflow was not found.",
        ));
    }
    let signed = uri
        .query()
        .unwrap_or("")
        .split('&')
        .any(|pair| pair == format!("sig={TEAMS_SIG}"));
    if !signed {
        return Some(teams_error(
            401,
            "DirectApiInvalidAuthorizationSignature",
            "The provided request has an invalid authorization signature.",
        ));
    }
    let problem = if !json_content {
        Some("the request must be JSON")
    } else if body["type"] != "message" {
        Some("`type` must be \"message\"")
    } else {
        match body["attachments"].as_array() {
            None => Some("Send_each_adaptive_card: `attachments` is Null"),
            Some(attachments) if attachments.is_empty() => Some("`attachments` is empty"),
            Some(attachments) => attachments.iter().find_map(card_problem),
        }
    };
    problem.map(|problem| teams_error(400, "InvalidTemplate", problem))
}

fn card_problem(attachment: &Value) -> Option<&'static str> {
    let card = &attachment["content"];
    if attachment["contentType"] != "application/vnd.microsoft.card.adaptive" {
        Some("an attachment is not an Adaptive Card")
    } else if card["type"] != "AdaptiveCard" {
        Some("`content.type` must be \"AdaptiveCard\"")
    } else if !card["version"].is_string() {
        Some("`content.version` is required")
    } else if !card["body"].as_array().is_some_and(|body| {
        body.iter()
            .all(|element| element["type"].is_string() && element_ok(element))
    }) {
        Some("`content.body` must be a list of typed elements")
    } else {
        None
    }
}

fn element_ok(element: &Value) -> bool {
    match element["type"].as_str() {
        Some("TextBlock") => element["text"].is_string(),
        Some("FactSet") => element["facts"].as_array().is_some_and(|facts| {
            facts
                .iter()
                .all(|fact| fact["title"].is_string() && fact["value"].is_string())
        }),
        _ => true,
    }
}

fn teams_error(status: u16, code: &str, message: &str) -> ChatReply {
    ChatReply::json(status, json!({"error": {"code": code, "message": message}}))
}

fn discord_refusal(uri: &Uri, json_content: bool, body: &Value) -> Option<ChatReply> {
    let Some(rest) = uri.path().strip_prefix("/api/webhooks/") else {
        return Some(discord_error(404, 0, "404: Not Found"));
    };
    let (id, token) = rest.split_once('/').unwrap_or((rest, ""));
    if id != DISCORD_ID {
        return Some(discord_error(404, 10015, "Unknown Webhook"));
    }
    if token != DISCORD_TOKEN {
        return Some(discord_error(401, 50027, "Invalid Webhook Token"));
    }
    let problem = if !json_content {
        Some("the request must be JSON")
    } else if body.get("content").is_none() && body.get("embeds").is_none() {
        Some("Cannot send an empty message")
    } else if body
        .get("allowed_mentions")
        .is_some_and(|mentions| !mentions["parse"].is_array())
    {
        Some("allowed_mentions.parse must be a list")
    } else {
        match body.get("embeds").map(Value::as_array) {
            None => None,
            Some(None) => Some("embeds must be a list"),
            Some(Some(embeds)) if embeds.len() > 10 => Some("at most 10 embeds"),
            Some(Some(embeds)) => embeds.iter().find_map(embed_problem),
        }
    };
    problem.map(|problem| {
        let mut reply = discord_error(400, 50035, "Invalid Form Body");
        if let Some(body) = reply.body.as_mut() {
            body["errors"] = json!({"embeds": {"_errors": [{"message": problem}]}});
        }
        reply
    })
}

fn embed_problem(embed: &Value) -> Option<&'static str> {
    let chars = |key: &str| embed[key].as_str().map_or(0, |text| text.chars().count());
    if chars("title") > 256 {
        return Some("title longer than 256");
    }
    if chars("description") > 4096 {
        return Some("description longer than 4096");
    }
    if embed.get("color").is_some_and(|color| !color.is_u64()) {
        return Some("color must be an integer");
    }
    if let Some(timestamp) = embed.get("timestamp")
        && timestamp
            .as_str()
            .is_none_or(|text| humantime::parse_rfc3339_weak(text).is_err())
    {
        return Some("timestamp must be ISO 8601");
    }
    let fields = embed["fields"].as_array().cloned().unwrap_or_default();
    if fields.len() > 25 {
        return Some("at most 25 fields");
    }
    let bad_field = fields.iter().any(|field| {
        let name = field["name"]
            .as_str()
            .map_or(0, |text| text.chars().count());
        let value = field["value"]
            .as_str()
            .map_or(0, |text| text.chars().count());
        !(1..=256).contains(&name) || !(1..=1024).contains(&value)
    });
    bad_field.then_some("field names must be 1–256 characters and values 1–1024")
}

fn discord_error(status: u16, code: u32, message: &str) -> ChatReply {
    ChatReply::json(status, json!({"message": message, "code": code}))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(url: &str, body: Value) -> (u16, String) {
        let response = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    fn card() -> Value {
        json!({"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null,
            "content": {"type": "AdaptiveCard", "version": "1.4", "body": [
                {"type": "TextBlock", "text": "hello"},
                {"type": "FactSet", "facts": [{"title": "a", "value": "b"}]}
            ]}
        }]})
    }

    #[tokio::test]
    async fn fake_teams_checks_the_documented_shape() {
        let mut fake = FakeChat::teams().await;
        assert_eq!(post(&fake.url, card()).await, (202, String::new()));
        assert_eq!(fake.next_request().await.body, card());

        let unsigned = fake.url.replace(TEAMS_SIG, "forged");
        assert_eq!(post(&unsigned, card()).await.0, 401);
        let (status, answer) = post(&fake.url, json!({"text": "legacy MessageCard"})).await;
        assert_eq!(status, 400);
        assert!(answer.contains("InvalidTemplate"), "{answer}");
        let mut bad = card();
        bad["attachments"][0]["content"]["body"][1]["facts"][0]["value"] = json!(1);
        assert_eq!(post(&fake.url, bad).await.0, 400);

        fake.script([
            teams_error(503, "ServiceUnavailable", "busy").with_header("retry-after", "2")
        ]);
        assert_eq!(post(&fake.url, card()).await.0, 503);
        assert_eq!(post(&fake.url, card()).await.0, 202);
        assert_eq!(fake.received().len(), 5);
    }

    #[tokio::test]
    async fn fake_discord_checks_the_documented_shape() {
        let mut fake = FakeChat::discord().await;
        let embed = json!({"embeds": [{"title": "t", "color": 5793266, "timestamp": "2026-01-01T00:00:00.123Z",
            "fields": [{"name": "a", "value": "b", "inline": true}]}], "allowed_mentions": {"parse": []}});
        assert_eq!(post(&fake.url, embed.clone()).await, (204, String::new()));
        assert_eq!(fake.next_request().await.body, embed);

        let (status, answer) = post(&fake.url.replace(DISCORD_TOKEN, "nope"), embed.clone()).await;
        assert_eq!((status, answer.contains("50027")), (401, true), "{answer}");
        let (status, answer) = post(&fake.url.replace(DISCORD_ID, "42"), embed.clone()).await;
        assert_eq!((status, answer.contains("10015")), (404, true), "{answer}");
        for bad in [
            json!({}),
            json!({"embeds": [{"title": "x".repeat(257)}]}),
            json!({"embeds": [{"fields": [{"name": "a", "value": ""}]}]}),
            json!({"embeds": [{"timestamp": "yesterday"}]}),
            json!({"content": "x", "allowed_mentions": {"parse": "all"}}),
        ] {
            let (status, answer) = post(&fake.url, bad.clone()).await;
            assert_eq!(status, 400, "{bad}");
            assert!(answer.contains("50035"), "{answer}");
        }

        fake.script([ChatReply::discord_rate_limit(0.5).with_header("retry-after", "1")]);
        let response = reqwest::Client::new()
            .post(&fake.url)
            .json(&embed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 429);
        assert_eq!(response.headers()["retry-after"], "1");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["retry_after"], 0.5);
        assert_eq!(post(&fake.url, embed).await.0, 204);
    }
}
