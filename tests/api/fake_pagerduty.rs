//! A fake PagerDuty Events API v2 on loopback, following its documented
//! shapes (PagerDuty/api-schema `reference/events-v2/openapiv3.json`):
//! `POST /v2/enqueue` with no auth header and a JSON body `{routing_key
//! (32 characters), event_action: trigger|acknowledge|resolve, dedup_key
//! (required unless trigger, at most 255 characters), payload: {summary,
//! source, severity: critical|error|warning|info, timestamp?, component?,
//! group?, class?, custom_details?}}` (payload required for a trigger).
//! Success is 202 `{"status":"success","message":"Event processed",
//! "dedup_key"}`; an invalid event is 400 `{"status":"invalid event",
//! "message":"Event object is invalid","errors":[…]}`. Every request is
//! recorded; answers can be scripted ahead. The fake tests itself first
//! (`the_fake_follows_the_documented_shapes`).

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An integration key in PagerDuty's shape (32 characters).
pub const ROUTING_KEY: &str = "R0ut1ngKeyOfTheOnCallService0001";

const TOP_LEVEL_FIELDS: &[&str] = &[
    "routing_key",
    "event_action",
    "dedup_key",
    "payload",
    "client",
    "client_url",
    "links",
    "images",
];
const PAYLOAD_FIELDS: &[&str] = &[
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
];
const SEVERITIES: &[&str] = &["critical", "error", "warning", "info"];

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct PagerDutyRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

impl PagerDutyRequest {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct PagerDutyReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl PagerDutyReply {
    /// An invalid-event answer in PagerDuty's shape.
    pub fn invalid(errors: &[&str]) -> Self {
        Self {
            status: 400,
            headers: Vec::new(),
            body: json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors}),
        }
    }

    /// A 429 or 5xx answer.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: json!({"status": "error", "message": "try again later"}),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

pub struct FakePagerDuty {
    /// What `pagerduty.events_url` should be set to.
    pub events_url: String,
    requests: mpsc::UnboundedReceiver<PagerDutyRequest>,
    script: Arc<Mutex<VecDeque<PagerDutyReply>>>,
}

struct Shared {
    sender: mpsc::UnboundedSender<PagerDutyRequest>,
    script: Arc<Mutex<VecDeque<PagerDutyReply>>>,
    generated: AtomicU64,
}

impl FakePagerDuty {
    pub async fn start() -> Self {
        let (sender, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let shared = Arc::new(Shared {
            sender,
            script: script.clone(),
            generated: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: HeaderMap,
                  body: axum::body::Bytes| {
                let shared = shared.clone();
                async move { answer(&shared, &method, uri.path().to_string(), headers, &body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let events_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            events_url,
            requests,
            script,
        }
    }

    /// Queues answers for the next valid requests, in order; then every
    /// valid request is accepted.
    pub fn script(&self, replies: impl IntoIterator<Item = PagerDutyReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// The next request (waits at most 20 s).
    pub async fn next_request(&mut self) -> PagerDutyRequest {
        tokio::time::timeout(Duration::from_secs(20), self.requests.recv())
            .await
            .expect("no request reached the fake PagerDuty within 20 s")
            .expect("the fake PagerDuty stopped")
    }

    /// Requests already received, without waiting.
    pub fn received(&mut self) -> Vec<PagerDutyRequest> {
        let mut requests = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            requests.push(request);
        }
        requests
    }
}

/// What is wrong with an event by the documented schema; empty if nothing.
pub fn problems(body: &Value) -> Vec<String> {
    let Some(event) = body.as_object() else {
        return vec!["Event object format is unrecognized".into()];
    };
    let mut problems = Vec::new();
    for key in event.keys() {
        if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
            problems.push(format!("Unknown field '{key}'"));
        }
    }
    match event.get("routing_key").and_then(Value::as_str) {
        Some(key) if key.len() == 32 => {}
        Some(_) => {
            problems.push("Length of 'routing_key' is incorrect (should be 32 characters)".into())
        }
        None => problems.push("'routing_key' is missing or blank".into()),
    }
    let action = event.get("event_action").and_then(Value::as_str);
    match event.get("dedup_key") {
        None if action != Some("trigger") => {
            problems.push("'dedup_key' is required unless 'event_action' is trigger".into())
        }
        None => {}
        Some(Value::String(key)) if !key.is_empty() && key.chars().count() <= 255 => {}
        Some(_) => problems.push("'dedup_key' must be a string of 1 to 255 characters".into()),
    }
    match action {
        Some("trigger") => problems.extend(payload_problems(event.get("payload"))),
        Some("acknowledge" | "resolve") => {}
        _ => problems
            .push("'event_action' is invalid (must be trigger, acknowledge or resolve)".into()),
    }
    problems
}

fn payload_problems(payload: Option<&Value>) -> Vec<String> {
    let Some(payload) = payload.and_then(Value::as_object) else {
        return vec!["'payload' is missing or not an object".into()];
    };
    let mut problems = Vec::new();
    for key in payload.keys() {
        if !PAYLOAD_FIELDS.contains(&key.as_str()) {
            problems.push(format!("Unknown field 'payload.{key}'"));
        }
    }
    for required in ["summary", "source"] {
        match payload.get(required).and_then(Value::as_str) {
            Some(text) if !text.trim().is_empty() => {}
            _ => problems.push(format!("'payload.{required}' is missing or blank")),
        }
    }
    match payload.get("severity").and_then(Value::as_str) {
        Some(severity) if SEVERITIES.contains(&severity) => {}
        _ => problems.push(
            "'payload.severity' is invalid (must be critical, error, warning or info)".into(),
        ),
    }
    if let Some(timestamp) = payload.get("timestamp") {
        let parses = timestamp
            .as_str()
            .is_some_and(|text| humantime::parse_rfc3339_weak(text).is_ok());
        if !parses {
            problems.push("'payload.timestamp' is not an ISO 8601 date-time".into());
        }
    }
    if let Some(details) = payload.get("custom_details")
        && !details.is_object()
    {
        problems.push("'payload.custom_details' must be an object".into());
    }
    problems
}

fn answer(
    shared: &Shared,
    method: &axum::http::Method,
    path: String,
    headers: HeaderMap,
    body: &[u8],
) -> Response {
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let _ = shared.sender.send(PagerDutyRequest {
        path: path.clone(),
        headers,
        body: json_body.clone(),
        at: Instant::now(),
    });
    let reply = if method != axum::http::Method::POST || path != "/v2/enqueue" {
        PagerDutyReply {
            status: 404,
            headers: Vec::new(),
            body: json!({"status": "not found", "message": "Not Found"}),
        }
    } else {
        let problems = problems(&json_body);
        if !problems.is_empty() {
            let problems: Vec<&str> = problems.iter().map(String::as_str).collect();
            PagerDutyReply::invalid(&problems)
        } else {
            match shared.script.lock().unwrap().pop_front() {
                Some(reply) => reply,
                None => {
                    let dedup_key = match json_body.get("dedup_key").and_then(Value::as_str) {
                        Some(key) => key.to_string(),
                        None => {
                            let n = shared.generated.fetch_add(1, Ordering::SeqCst);
                            format!("c5a1e2b0d3f44e0a8b9c{n:012x}")
                        }
                    };
                    PagerDutyReply {
                        status: 202,
                        headers: Vec::new(),
                        body: json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key}),
                    }
                }
            }
        }
    };
    let mut response = (
        StatusCode::from_u16(reply.status).unwrap(),
        axum::Json(reply.body),
    )
        .into_response();
    for (name, value) in reply.headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

#[tokio::test]
async fn the_fake_follows_the_documented_shapes() {
    let mut fake = FakePagerDuty::start().await;
    let http = reqwest::Client::new();
    let enqueue = format!("{}/v2/enqueue", fake.events_url);
    let post = |body: Value| http.post(&enqueue).json(&body).send();

    // The documented example trigger is accepted; a dedup key is made up.
    let example = json!({
        "payload": {
            "summary": "DISK at 99% on machine prod-datapipe03.example.com",
            "timestamp": "2015-07-17T08:42:58.315Z",
            "severity": "critical",
            "source": "prod-datapipe03.example.com",
            "component": "mysql",
            "group": "prod-datapipe",
            "class": "disk",
            "custom_details": {"free space": "1%", "ping time": "1500ms", "load avg": 0.75}
        },
        "routing_key": "e93facc04764012d7bfb002500d5d1a6",
        "event_action": "trigger",
        "client": "Sample Monitoring Service",
        "client_url": "https://monitoring.service.com"
    });
    let response = post(example).await.unwrap();
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(accepted["status"], "success");
    assert_eq!(accepted["message"], "Event processed");
    assert!(accepted["dedup_key"].as_str().is_some());

    // Acknowledge and resolve need the dedup key, and nothing else.
    let resolve =
        json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": "srv01/HTTP"});
    let response = post(resolve).await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap()["dedup_key"],
        "srv01/HTTP"
    );

    for (invalid, expected) in [
        (
            json!({"routing_key": "short", "event_action": "resolve", "dedup_key": "k"}),
            "Length of 'routing_key' is incorrect (should be 32 characters)",
        ),
        (
            json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge"}),
            "'dedup_key' is required unless 'event_action' is trigger",
        ),
        (
            json!({"routing_key": ROUTING_KEY, "event_action": "trigger",
                   "payload": {"summary": "s", "source": "x", "severity": "high"}}),
            "'payload.severity' is invalid (must be critical, error, warning or info)",
        ),
        (
            json!({"routing_key": ROUTING_KEY, "event_action": "trigger"}),
            "'payload' is missing or not an object",
        ),
        (
            json!({"routing_key": ROUTING_KEY, "event_action": "snooze", "dedup_key": "k"}),
            "'event_action' is invalid (must be trigger, acknowledge or resolve)",
        ),
    ] {
        let response = post(invalid.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{invalid}");
        let refused: Value = response.json().await.unwrap();
        assert_eq!(refused["status"], "invalid event");
        assert_eq!(refused["message"], "Event object is invalid");
        assert_eq!(refused["errors"], json!([expected]), "{invalid}");
    }

    // Scripted answers come next, in order, with their headers.
    fake.script([PagerDutyReply::status(429).with_header("retry-after", "7")]);
    let valid =
        json!({"routing_key": ROUTING_KEY, "event_action": "acknowledge", "dedup_key": "k"});
    let response = post(valid.clone()).await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(post(valid).await.unwrap().status(), 202);

    let wrong_path = http
        .post(format!("{}/v2/enqueue/extra", fake.events_url))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_path.status(), 404);
    assert_eq!(fake.received().len(), 10);
}
