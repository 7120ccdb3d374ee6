//! The load generator's pieces for `bench e2e`: request bodies stamped
//! with `sent_at_us`, and keep-alive hyper connections posting events.

use super::EXAMPLE_EVENT;
use super::receiver::now_us;
use crate::destinations::webhook::render_body;
use crate::model::{Event, EventId, EventName, WorkspaceId, now_ms};
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;

/// Request bodies with `sent_at_us` filled in per request.
pub(super) struct Bodies {
    /// `POST /v1/events`: the example event, `sent_at_us` in its payload.
    pub(super) event: BodyTemplate,
    /// What the server sends the receiver for that event.
    pub(super) webhook: BodyTemplate,
}

impl Bodies {
    pub(super) fn new() -> anyhow::Result<Self> {
        let mut event: Value =
            serde_json::from_str(EXAMPLE_EVENT).context("the example event is not JSON")?;
        event
            .get_mut("payload")
            .and_then(Value::as_object_mut)
            .context("the example event has no payload object")?
            .insert("sent_at_us".into(), json!(0));
        let text = |field: &str| event[field].as_str().map(str::to_string);
        let webhook = render_body(
            &Event {
                id: EventId::new(),
                workspace_id: WorkspaceId::new(),
                name: EventName::parse(&text("event").context("the example event has no name")?)
                    .map_err(anyhow::Error::msg)?,
                resource: text("resource"),
                resource_id: text("resource_id"),
                payload: serde_json::to_vec(&event["payload"])?,
                received_at_ms: now_ms(),
            },
            0,
        );
        Ok(Self {
            event: BodyTemplate::split(&serde_json::to_string(&event)?)?,
            webhook: BodyTemplate::split(
                std::str::from_utf8(&webhook).context("the webhook body is not UTF-8")?,
            )?,
        })
    }
}

/// A JSON body around one `"sent_at_us":N`.
#[derive(Clone)]
pub(super) struct BodyTemplate {
    prefix: String,
    suffix: String,
}

impl BodyTemplate {
    const MARKER: &str = r#""sent_at_us":0"#;

    /// Splits `text` at its `"sent_at_us":0`.
    fn split(text: &str) -> anyhow::Result<Self> {
        let (before, after) = text
            .split_once(Self::MARKER)
            .context("no sent_at_us in the body template")?;
        Ok(Self {
            prefix: format!(r#"{before}"sent_at_us":"#),
            suffix: after.to_string(),
        })
    }

    pub(super) fn render(&self, sent_at_us: u64) -> Bytes {
        let mut body = String::with_capacity(self.prefix.len() + 20 + self.suffix.len());
        body.push_str(&self.prefix);
        body.push_str(&sent_at_us.to_string());
        body.push_str(&self.suffix);
        Bytes::from(body)
    }

    /// Length with a current timestamp (16 digits).
    pub(super) fn len(&self) -> usize {
        self.prefix.len() + 16 + self.suffix.len()
    }
}

/// Where and how the load generator posts events.
#[derive(Clone)]
pub(super) struct Target {
    /// `host:port` of the server.
    pub(super) authority: String,
    /// `Bearer <publishable key>` of every workspace under load; each
    /// connection takes them in turn, one per request.
    pub(super) auths: Arc<[String]>,
    pub(super) body: Arc<BodyTemplate>,
}

/// Longest wait for the answer to one event.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// One keep-alive HTTP/1.1 connection posting events.
pub(super) struct Poster {
    target: Target,
    sender: SendRequest<Full<Bytes>>,
    /// Index into `target.auths` of the next request's key.
    next_auth: usize,
}

impl Poster {
    /// `lane` staggers where in the key rotation each connection starts.
    pub(super) async fn connect(target: &Target, lane: usize) -> anyhow::Result<Self> {
        Ok(Self {
            target: target.clone(),
            sender: handshake(&target.authority).await?,
            next_auth: lane % target.auths.len().max(1),
        })
    }

    /// Posts one event stamped now; `Ok(true)` on 202.
    async fn post(&mut self) -> anyhow::Result<bool> {
        let auth = self
            .target
            .auths
            .get(self.next_auth)
            .context("no publishable key to post with")?;
        self.next_auth = (self.next_auth + 1) % self.target.auths.len();
        let request = Request::post("/v1/events")
            .header("host", &self.target.authority)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(self.target.body.render(now_us())))?;
        let exchange = async {
            let response = self.sender.send_request(request).await?;
            let accepted = response.status() == StatusCode::ACCEPTED;
            response.into_body().collect().await?;
            anyhow::Ok(accepted)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .context("no answer in time")?
    }

    /// Posts and counts; after a transport error or a timeout, reconnects
    /// (an error if that fails).
    pub(super) async fn post_counted(&mut self, counters: &Counters) -> anyhow::Result<()> {
        match self.post().await {
            Ok(true) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                self.sender = handshake(&self.target.authority).await?;
            }
        }
        Ok(())
    }
}

async fn handshake(authority: &str) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

#[derive(Default)]
pub(super) struct Counters {
    accepted: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    pub(super) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    pub(super) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_carry_sent_at_us_where_the_receiver_reads_it() {
        let bodies = Bodies::new().unwrap();
        let event: Value = serde_json::from_slice(&bodies.event.render(42)).unwrap();
        assert_eq!(event["payload"]["sent_at_us"], 42);
        assert_eq!(event["payload"]["severity"], "high");
        let hook: Value = serde_json::from_slice(&bodies.webhook.render(7)).unwrap();
        assert_eq!(hook["data"]["sent_at_us"], 7);
        assert_eq!(hook["type"], "alert.triggered");
    }
}
