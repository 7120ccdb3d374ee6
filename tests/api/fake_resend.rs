//! A fake Resend API on loopback following Resend's documented shapes:
//! `POST /emails` with `Authorization: Bearer <key>` answers
//! `{"id":"<uuid>"}`; a missing key gets 401 `missing_api_key`, a wrong one
//! 403 `invalid_api_key`; errors are `{"statusCode","name","message"}`.
//! Custom `headers` must be an object of string values (else 422
//! `validation_error`). Every request is recorded; answers can be scripted
//! ahead.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

pub const API_KEY: &str = "re_test_0123456789abcdef";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct ResendRequest {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

impl ResendRequest {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("")
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct ResendReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl ResendReply {
    /// An error in Resend's shape.
    pub fn error(status: u16, name: &str, message: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: json!({"statusCode": status, "name": name, "message": message}),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_string()));
        self
    }
}

pub struct FakeResend {
    /// What `email.resend.api_base` should be set to.
    pub api_base: String,
    requests: mpsc::UnboundedReceiver<ResendRequest>,
    script: Arc<Mutex<VecDeque<ResendReply>>>,
}

struct Shared {
    sender: mpsc::UnboundedSender<ResendRequest>,
    script: Arc<Mutex<VecDeque<ResendReply>>>,
    sent: AtomicU64,
}

impl FakeResend {
    pub async fn start() -> Self {
        let (sender, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let shared = Arc::new(Shared {
            sender,
            script: script.clone(),
            sent: AtomicU64::new(0),
        });
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let shared = shared.clone();
                async move { answer(&shared, uri.path().to_string(), headers, &body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            api_base,
            requests,
            script,
        }
    }

    /// Queues answers for the next authorised requests, in order; then
    /// every request succeeds.
    pub fn script(&self, replies: impl IntoIterator<Item = ResendReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// The next request (waits at most 20 s).
    pub async fn next_request(&mut self) -> ResendRequest {
        tokio::time::timeout(Duration::from_secs(20), self.requests.recv())
            .await
            .expect("no request reached the fake Resend within 20 s")
            .expect("the fake Resend stopped")
    }

    /// Requests already received, without waiting.
    pub fn received(&mut self) -> Vec<ResendRequest> {
        let mut requests = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            requests.push(request);
        }
        requests
    }
}

fn answer(shared: &Shared, path: String, headers: HeaderMap, body: &[u8]) -> Response {
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let authorization = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let _ = shared.sender.send(ResendRequest {
        path: path.clone(),
        headers,
        body: json_body.clone(),
        at: Instant::now(),
    });
    let reply = match authorization.as_deref() {
        None => ResendReply::error(
            401,
            "missing_api_key",
            "Missing API key in the authorization header. Include the following header \
             in the request: Authorization: Bearer YOUR_API_KEY",
        ),
        Some(value) if value != format!("Bearer {API_KEY}") => {
            ResendReply::error(403, "invalid_api_key", "API key is invalid")
        }
        Some(_) if path != "/emails" => {
            ResendReply::error(404, "not_found", "The requested endpoint does not exist.")
        }
        Some(_) if json_body.get("from").is_none() || json_body.get("to").is_none() => {
            ResendReply::error(
                422,
                "missing_required_field",
                "Missing `from` or `to` field.",
            )
        }
        Some(_) if !headers_are_valid(json_body.get("headers")) => ResendReply::error(
            422,
            "validation_error",
            "`headers` must be an object of string values.",
        ),
        Some(_) => match shared.script.lock().unwrap().pop_front() {
            Some(reply) => reply,
            None => {
                let n = shared.sent.fetch_add(1, Ordering::SeqCst) + 1;
                ResendReply {
                    status: 200,
                    headers: Vec::new(),
                    body: json!({"id": format!("49a3999c-0ce1-4ea6-ab68-{n:012x}")}),
                }
            }
        },
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

/// Resend's `headers`: absent, or an object whose values are strings.
fn headers_are_valid(headers: Option<&Value>) -> bool {
    match headers {
        None => true,
        Some(Value::Object(headers)) => headers.values().all(Value::is_string),
        Some(_) => false,
    }
}
