//! The HTTP client for tenant-supplied targets: webhooks, Teams and
//! Discord URLs.
//!
//! It is hyper-util's pooled client over hyper-rustls, the stack reqwest
//! itself is built on, without reqwest's per-request layers: redirects
//! (never followed here), retries, cookies, proxies (never used here), and
//! the two URL parses reqwest makes of every request even with redirects
//! off. On the reference VM the same POST cost 19.8–20.8 µs of client CPU
//! through reqwest against 8.2–9.1 µs through this stack
//! (docs/benchmarks.md, issue 13), and a webhook is one such POST per
//! delivered event. The operator's own API bases (Slack, Resend,
//! PagerDuty) still use reqwest ([`super::net::trusted_client`]).
//!
//! The outbound guard is unchanged (`net.rs`): [`GuardedResolver`] drops
//! forbidden addresses at connect time, IP literals are judged by
//! [`super::net::check_url`] before the send, and there is no proxy.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::net::{GuardedResolver, TargetError, TargetPolicy, check_literal};
use super::{BoxFuture, Outcome, read_excerpt, root_cause};

/// The client; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct TenantHttp {
    client: Client<Connector, Full<Bytes>>,
    policy: TargetPolicy,
    timeout: Duration,
}

/// What a target answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The start of the body (at most [`super::RESPONSE_EXCERPT_BYTES`]), for the
    /// delivery log; `None` when empty.
    pub excerpt: Option<String>,
}

/// Why a request got no answer. The texts are what the delivery log shows.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The guard refused the target's address.
    #[error("refused: {0}")]
    Refused(TargetError),
    #[error("timed out after {}s", .0.as_secs())]
    TimedOut(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

impl SendError {
    /// The attempt's outcome: a refused target is permanent, anything else
    /// is worth a retry.
    pub fn outcome(&self) -> Outcome {
        match self {
            SendError::Refused(_) => Outcome::permanent(self.to_string()),
            _ => Outcome::retry(self.to_string()),
        }
    }
}

impl TenantHttp {
    /// `policy` says whether targets may resolve to private and loopback
    /// addresses and which names have pinned addresses; `timeout` bounds
    /// each request from its start to the end of the answer's excerpt, and
    /// each connect; at most `idle_per_host` idle keep-alive connections
    /// are kept per host (see `net.rs`).
    pub fn new(
        policy: TargetPolicy,
        timeout: Duration,
        idle_per_host: usize,
    ) -> Result<Self, rustls::Error> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(super::net::POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(idle_per_host.max(1))
            .pool_timer(TokioTimer::new())
            .build(connector(policy.clone(), timeout)?);
        Ok(Self {
            client,
            policy,
            timeout,
        })
    }

    /// What this client lets targets reach; saving a connection checks its
    /// target by the same policy (`net::check_resolved`).
    pub fn policy(&self) -> &TargetPolicy {
        &self.policy
    }

    /// POSTs `body` to `uri` with `headers` (plus a user agent and an
    /// `accept` unless given), and reads the status, the headers and an
    /// excerpt of the body. No redirect is followed: a 3xx is the answer.
    pub async fn post(
        &self,
        uri: Uri,
        mut headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<Answer, SendError> {
        // A timeout too large to add (set by an operator) is no deadline.
        let deadline = Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(|| Instant::now() + NO_DEADLINE);
        // The callers check their URL first (`net::check_url`); an IP
        // literal never reaches the resolver, so it is judged here too.
        if let Some(host) = uri.host() {
            check_literal(host, self.policy.allow_private).map_err(SendError::Refused)?;
        }
        headers
            .entry(header::USER_AGENT)
            .or_insert(HeaderValue::from_static(super::net::USER_AGENT));
        headers
            .entry(header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        let mut request = Request::post(uri).body(Full::new(body.into()));
        if let Ok(request) = &mut request {
            *request.headers_mut() = headers;
        }
        let request = request.map_err(|error| SendError::Request(error.to_string()))?;
        let response = match tokio::time::timeout_at(deadline, self.client.request(request)).await {
            Err(_) => return Err(SendError::TimedOut(self.timeout)),
            Ok(Err(error)) => return Err(classify(&error, self.timeout)),
            Ok(Ok(response)) => response,
        };
        let (parts, body) = response.into_parts();
        // What arrived before the deadline is kept. The rest of a small
        // answer is read so its connection is reused; a large or slow one
        // is dropped with its connection (`read_excerpt`).
        let excerpt = read_excerpt(body, Some(deadline)).await;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            excerpt,
        })
    }
}

/// TCP through the guard's resolver, then TLS for https, within a deadline.
type Connector = TimedConnect<HttpsConnector<HttpConnector<GuardedResolver>>>;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The connector: TCP (no delay, reqwest's keep-alive settings) through
/// the guard's resolver, TLS for https offering `http/1.1` by ALPN, each
/// connect within `timeout`.
fn connector(policy: TargetPolicy, timeout: Duration) -> Result<Connector, rustls::Error> {
    let mut tcp = HttpConnector::new_with_resolver(GuardedResolver { policy });
    // The scheme is the TLS layer's to check.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(timeout));
    // A dead peer of a pooled connection is found within about a minute.
    tcp.set_keepalive(Some(TCP_KEEPALIVE));
    tcp.set_keepalive_interval(Some(TCP_KEEPALIVE));
    tcp.set_keepalive_retries(Some(3));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    tcp.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    // Only HTTP/1.1 may be offered: hyper-util is built without HTTP/2
    // and panics on a connection that negotiated h2.
    let mut tls = crate::tls::client_config()?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TimedConnect {
        inner: HttpsConnector::from((tcp, Arc::new(tls))),
        timeout,
    })
}

/// A deadline that never comes in practice (a year).
const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);

/// reqwest's defaults, kept.
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A connector whose every connect (DNS, TCP and the TLS handshake) ends
/// within `timeout`. The request's own deadline does not cover them all:
/// when a pooled connection frees up first, the pool finishes the connect
/// it started in the background, and a peer stalling its TLS handshake
/// would otherwise hold a task and a socket for ever.
#[derive(Clone)]
struct TimedConnect<C> {
    inner: C,
    timeout: Duration,
}

/// A connect that [`TimedConnect`] gave up on.
#[derive(Debug, thiserror::Error)]
#[error("connecting took longer than {}s", .0.as_secs())]
struct ConnectTimedOut(Duration);

impl<C> tower_service::Service<Uri> for TimedConnect<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<C::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                // Passed on as it is: a refusal in it must stay findable.
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(Box::new(ConnectTimedOut(timeout)) as BoxError),
            }
        })
    }
}

/// Sorts a failed request: refused by the guard, timed out (the connect
/// deadline, or the kernel's while connecting), failed to connect, or
/// failed after.
fn classify(error: &hyper_util::client::legacy::Error, timeout: Duration) -> SendError {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(cause) = current {
        if let Some(refused) = cause.downcast_ref::<TargetError>() {
            return SendError::Refused(refused.clone());
        }
        let timed_out = cause.is::<ConnectTimedOut>()
            || error.is_connect()
                && cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return SendError::TimedOut(timeout);
        }
        current = cause.source();
    }
    if error.is_connect() {
        SendError::Connect(root_cause(error))
    } else {
        SendError::Request(root_cause(error))
    }
}

/// hyper-util resolves through any `Service<Name>`; the guard is one.
impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guard = self.clone();
        Box::pin(async move {
            let allowed = guard.resolve_host(name.as_str()).await?;
            Ok(allowed.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::destinations::net::tests::first_request_head;
    use crate::destinations::{RESPONSE_EXCERPT_BYTES, Verdict};

    /// Reads one request (head and `content-length` body) from `stream`;
    /// false once the peer closed.
    async fn read_request(stream: &mut TcpStream) -> bool {
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .map_or(0, |value| value.trim().parse().unwrap());
                if request.len() >= end + 4 + length {
                    return true;
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A loopback server that answers each request on a connection with
    /// `answer`, then (if `hang`) keeps the connection open without
    /// writing more. Returns its URI and how many connections it accepted.
    async fn serve(answer: Vec<u8>, hang: bool) -> (Uri, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    while read_request(&mut stream).await {
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                        if hang {
                            std::future::pending::<()>().await;
                        }
                    }
                });
            }
        });
        (uri.parse().unwrap(), accepted)
    }

    fn client(timeout: Duration) -> TenantHttp {
        TenantHttp::new(TargetPolicy::new(true), timeout, 8).unwrap()
    }

    #[tokio::test]
    async fn an_answer_keeps_status_headers_and_a_bounded_excerpt() {
        let body = "x".repeat(RESPONSE_EXCERPT_BYTES * 3);
        let answer = format!(
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 7\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let (uri, _) = serve(answer.into_bytes(), false).await;
        let answer = client(Duration::from_secs(5))
            .post(uri, HeaderMap::new(), b"{}".to_vec())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.headers["retry-after"], "7");
        assert_eq!(answer.excerpt.unwrap().len(), RESPONSE_EXCERPT_BYTES);
    }

    #[tokio::test]
    async fn an_empty_body_has_no_excerpt() {
        let (uri, _) = serve(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false).await;
        let answer = client(Duration::from_secs(5))
            .post(uri, HeaderMap::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
        assert!(answer.excerpt.is_none());
    }

    #[tokio::test]
    async fn a_timeout_too_large_for_a_deadline_is_no_deadline() {
        let (uri, _) = serve(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), false).await;
        let answer = client(Duration::MAX)
            .post(uri, HeaderMap::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_reused() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
        let (uri, accepted) = serve(answer, false).await;
        let client = client(Duration::from_secs(5));
        for _ in 0..5 {
            let answer = client
                .post(uri.clone(), HeaderMap::new(), b"{}".to_vec())
                .await
                .unwrap();
            assert_eq!(answer.excerpt.as_deref(), Some("ok"));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_rest_of_a_small_answer_is_read_so_its_connection_is_reused() {
        let answer = |size: usize| {
            let body = "x".repeat(size);
            format!("HTTP/1.1 500 Oops\r\ncontent-length: {size}\r\n\r\n{body}").into_bytes()
        };
        let client = client(Duration::from_secs(10));
        // Beyond the excerpt, within the drain limit: one connection.
        let (uri, accepted) = serve(answer(3 * RESPONSE_EXCERPT_BYTES), false).await;
        for _ in 0..4 {
            let answer = client
                .post(uri.clone(), HeaderMap::new(), Vec::new())
                .await
                .unwrap();
            assert_eq!(answer.excerpt.unwrap().len(), RESPONSE_EXCERPT_BYTES);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Far larger than the limit (and than one read of hyper's, at most
        // 400 KiB, which may carry a body past the limit whole): read no
        // further, closed each time.
        let (uri, accepted) = serve(answer(4 << 20), false).await;
        for _ in 0..3 {
            let answer = client
                .post(uri.clone(), HeaderMap::new(), Vec::new())
                .await
                .unwrap();
            assert_eq!(answer.excerpt.unwrap().len(), RESPONSE_EXCERPT_BYTES);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // A rest that never comes costs at most the drain wait, not the
        // attempt's timeout.
        let mut stalled = b"HTTP/1.1 200 OK\r\ncontent-length: 9000\r\n\r\n".to_vec();
        stalled.extend(std::iter::repeat_n(b'y', RESPONSE_EXCERPT_BYTES + 10));
        let (uri, _) = serve(stalled, true).await;
        let started = std::time::Instant::now();
        let answer = client
            .post(uri, HeaderMap::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(answer.excerpt.unwrap().len(), RESPONSE_EXCERPT_BYTES);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_timeout_covers_the_answer_and_keeps_what_arrived_of_the_body() {
        // No answer at all: timed out.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let timeout = Duration::from_millis(300);
        let error = client(timeout)
            .post(silent, HeaderMap::new(), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::TimedOut(_)), "{error:?}");
        assert_eq!(error.to_string(), "timed out after 0s");
        assert!(matches!(error.outcome().verdict, Verdict::Retry { .. }));
        drop(listener);

        // The head and part of the body, then nothing: the status and
        // the part are kept (a longer timeout: the head must arrive).
        let partial = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart".to_vec();
        let (uri, _) = serve(partial, true).await;
        let answer = client(Duration::from_secs(1))
            .post(uri, HeaderMap::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.excerpt.as_deref(), Some("part"));
    }

    #[tokio::test]
    async fn a_closed_port_is_a_connection_failure_worth_a_retry() {
        let closed: Uri = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/", listener.local_addr().unwrap())
                .parse()
                .unwrap()
        };
        let error = client(Duration::from_secs(5))
            .post(closed, HeaderMap::new(), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::Connect(_)), "{error:?}");
        assert!(
            error.to_string().starts_with("connection failed: "),
            "{error}"
        );
        assert!(matches!(error.outcome().verdict, Verdict::Retry { .. }));
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_ends_within_the_timeout() {
        // Takes the TCP connection, never answers the TLS hello.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("https://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        let timeout = Duration::from_millis(300);
        // The connector alone, as the pool runs it in the background.
        let mut connect = connector(TargetPolicy::new(true), timeout).unwrap();
        std::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut connect, cx))
            .await
            .unwrap();
        let connecting = tower_service::Service::call(&mut connect, uri.clone());
        let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(10), connecting).await else {
            panic!("a stalled handshake must fail by itself, within the timeout");
        };
        assert!(error.is::<ConnectTimedOut>(), "{error:?}");
        // Through a request: timed out, worth a retry.
        let error = client(timeout)
            .post(uri, HeaderMap::new(), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::TimedOut(_)), "{error:?}");
    }

    #[tokio::test]
    async fn a_forbidden_ip_literal_is_refused_before_connecting() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec();
        let (uri, accepted) = serve(answer, false).await;
        let error = TenantHttp::new(TargetPolicy::new(false), Duration::from_secs(5), 8)
            .unwrap()
            .post(uri.clone(), HeaderMap::new(), Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::Refused(_)), "{error:?}");
        assert!(error.to_string().starts_with("refused: 127.0.0.1 resolves"));
        for literal in ["http://[::1]:9/", "http://169.254.169.254/"] {
            let error = TenantHttp::new(TargetPolicy::new(false), Duration::from_secs(5), 8)
                .unwrap()
                .post(literal.parse().unwrap(), HeaderMap::new(), Vec::new())
                .await
                .unwrap_err();
            assert!(
                matches!(error, SendError::Refused(_)),
                "{literal}: {error:?}"
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
        // Allowed, it goes through.
        let answer = client(Duration::from_secs(5))
            .post(uri, HeaderMap::new(), Vec::new())
            .await
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_user_agent_given_is_kept_and_one_is_added_otherwise() {
        /// The head of the one request `headers` make.
        async fn head_sent_with(headers: HeaderMap) -> String {
            first_request_head(async |port| {
                let uri: Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
                let client = client(Duration::from_secs(5));
                client.post(uri, headers, Vec::new()).await.unwrap();
            })
            .await
        }
        let ours = format!("user-agent: switchyard/{}\r\n", env!("CARGO_PKG_VERSION"));
        assert!(head_sent_with(HeaderMap::new()).await.contains(&ours));
        let mut headers = HeaderMap::new();
        headers.insert(header::USER_AGENT, HeaderValue::from_static("acme-relay/2"));
        let head = head_sent_with(headers).await;
        assert!(head.contains("user-agent: acme-relay/2\r\n"), "{head}");
        assert_eq!(head.matches("user-agent:").count(), 1, "{head}");
    }

    #[tokio::test]
    async fn a_refused_target_is_permanent() {
        let error = TenantHttp::new(TargetPolicy::new(false), Duration::from_secs(5), 8)
            .unwrap()
            .post(
                "http://localhost:9/".parse().unwrap(),
                HeaderMap::new(),
                Vec::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, SendError::Refused(_)), "{error:?}");
        assert!(matches!(error.outcome().verdict, Verdict::Permanent { .. }));
    }
}
