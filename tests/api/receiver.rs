//! A recording HTTP receiver on loopback: every request is pushed into a
//! channel, and each answer comes from a script (then a default).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    WithHeader(u16, &'static str, &'static str),
    /// Never answers until the receiver is released, then answers 200.
    Hang,
    /// As `Hang`, then answers this status.
    HangThen(u16),
}

pub struct Receiver {
    pub url: String,
    requests: mpsc::UnboundedReceiver<Recorded>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    release: Arc<Notify>,
}

struct Shared {
    sender: mpsc::UnboundedSender<Recorded>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    release: Arc<Notify>,
}

impl Receiver {
    pub async fn start(default: Reply) -> Self {
        let (sender, requests) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let release = Arc::new(Notify::new());
        let default = Arc::new(Mutex::new(default));
        let shared = Arc::new(Shared {
            sender,
            script: script.clone(),
            default: default.clone(),
            release: release.clone(),
        });
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let shared = shared.clone();
            async move { answer(&shared, headers, body).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url,
            requests,
            script,
            default,
            release,
        }
    }

    /// Answers requests past the script with `reply` from now on.
    pub fn answer_by_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    /// Queues answers for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// The next request; fails the test after 15 s without one.
    pub async fn next(&mut self) -> Recorded {
        tokio::time::timeout(Duration::from_secs(15), self.requests.recv())
            .await
            .expect("no request reached the receiver within 15 s")
            .expect("receiver closed")
    }

    /// Lets every hanging request answer 200.
    pub fn release(&self) {
        self.release.notify_waiters();
    }

    pub fn try_next(&mut self) -> Option<Recorded> {
        self.requests.try_recv().ok()
    }
}

async fn answer(shared: &Shared, headers: HeaderMap, body: Bytes) -> Response {
    let recorded = Recorded {
        headers,
        body,
        at: Instant::now(),
    };
    let _ = shared.sender.send(recorded);
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| shared.default.lock().unwrap().clone());
    match reply {
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "answer body").into_response(),
        Reply::WithHeader(code, name, value) => {
            (StatusCode::from_u16(code).unwrap(), [(name, value)], "").into_response()
        }
        Reply::Hang => {
            shared.release.notified().await;
            StatusCode::OK.into_response()
        }
        Reply::HangThen(code) => {
            shared.release.notified().await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
    }
}
