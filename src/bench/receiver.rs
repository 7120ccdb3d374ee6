//! `switchyard bench receiver` (hidden): the webhook receiver of
//! `bench e2e`. Answers 200 to every POST and, when the body is a webhook
//! whose `data` carries `sent_at_us` (Unix µs stamped by the load
//! generator), records `now - sent_at_us` in a histogram.
//!
//! - `GET /stats`: [`ReceiverStats`] as JSON;
//! - `POST /reset`: clears the count and the histogram.

use super::new_histogram;
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;

/// What `GET /stats` answers. Latencies are event → receiver in µs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ReceiverStats {
    /// POSTs received (other than `/reset`) since the last reset.
    pub count: u64,
    /// Of those, how many carried `data.sent_at_us`.
    pub recorded: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl ReceiverStats {
    /// One line: `p50 … ms  p99 … ms  p99.9 … ms  max … ms`.
    pub fn latency_line(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!(
            "p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>8.2} ms",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

/// Only the field the receiver needs; serde skips everything else.
#[derive(Deserialize)]
struct Webhook {
    data: Stamp,
}

#[derive(Deserialize)]
struct Stamp {
    sent_at_us: u64,
}

struct State {
    count: u64,
    histogram: Histogram<u64>,
}

type Shared = Arc<Mutex<State>>;

pub async fn receiver(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let state: Shared = Arc::new(Mutex::new(State {
        count: 0,
        histogram: new_histogram()?,
    }));
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(state.clone(), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

async fn handle(
    state: Shared,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let answer = match (method, path.as_str()) {
        (Method::GET, "/stats") => match serde_json::to_vec(&stats(&state)) {
            Ok(body) => respond(StatusCode::OK, Bytes::from(body)),
            Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
        },
        (Method::POST, "/reset") => {
            if let Ok(mut state) = state.lock() {
                state.count = 0;
                state.histogram.reset();
            }
            respond(StatusCode::NO_CONTENT, Bytes::new())
        }
        (Method::POST, _) => match request.into_body().collect().await {
            Ok(body) => {
                let body = body.to_bytes();
                // Stamp the arrival before parsing, as a real receiver would.
                let arrived = now_us();
                let latency = serde_json::from_slice::<Webhook>(&body)
                    .ok()
                    .map(|hook| arrived.saturating_sub(hook.data.sent_at_us).max(1));
                if let Ok(mut state) = state.lock() {
                    state.count += 1;
                    if let Some(latency) = latency {
                        state.histogram.saturating_record(latency);
                    }
                }
                respond(StatusCode::OK, Bytes::new())
            }
            Err(_) => respond(StatusCode::BAD_REQUEST, Bytes::new()),
        },
        _ => respond(StatusCode::NOT_FOUND, Bytes::new()),
    };
    Ok(answer)
}

fn stats(state: &Shared) -> ReceiverStats {
    let Ok(state) = state.lock() else {
        return ReceiverStats::default();
    };
    let h = &state.histogram;
    let at = |quantile: f64| {
        if h.is_empty() {
            0
        } else {
            h.value_at_quantile(quantile)
        }
    };
    ReceiverStats {
        count: state.count,
        recorded: h.len(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: h.max(),
    }
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let json = !body.is_empty();
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if json {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    response
}
