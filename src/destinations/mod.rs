//! Destination kinds, each one folder with the same shape (in the spirit of
//! Vector's sinks): its config (validation, which fields are secret, how
//! answers mask them), its rule target, a pure render pinned by tests, the
//! send, and a classify of the answer into an [`Outcome`]. [`Destination`]
//! ties a kind to the API and the engine; [`Destinations::new`] is the
//! registry. Also here: what every kind's HTTP shares ([`net`]: the outbound
//! clients and the address guard; [`retry_after`]) and the sealing of
//! connection secrets. Nothing here depends on `delivery/` or `store/`:
//! what a kind needs from storage comes through [`SecretsPort`] and
//! [`ThreadPort`] ([`Ports`]).

pub mod discord;
pub mod email;
pub mod message;
pub mod net;
pub mod opened;
pub mod pagerduty;
pub mod retry_after;
pub mod secret_url;
pub mod slack;
pub mod teams;
pub mod tenant_http;
pub mod webhook;

use crate::config::Config;
use crate::crypto::{CryptoError, MasterKey};
use crate::model::{
    Connection, ConnectionId, ConnectionKind, ConnectionStatus, Delivery, Event, Rule, ThreadKey,
};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How much of an answer is kept with the attempt.
pub const RESPONSE_EXCERPT_BYTES: usize = 4096;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status_code: Option<u16>,
    /// The first [`RESPONSE_EXCERPT_BYTES`] of the answer.
    pub response: Option<String>,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Delivered,
    /// Worth another attempt; `retry_after` replaces the schedule's delay.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Will never succeed as is; `connection_status` marks the connection.
    Permanent {
        error: String,
        connection_status: Option<ConnectionStatus>,
    },
}

impl Outcome {
    pub fn permanent(error: impl Into<String>) -> Self {
        Self {
            status_code: None,
            response: None,
            verdict: Verdict::Permanent {
                error: error.into(),
                connection_status: None,
            },
        }
    }

    pub fn retry(error: impl Into<String>) -> Self {
        Self {
            status_code: None,
            response: None,
            verdict: Verdict::Retry {
                error: error.into(),
                retry_after: None,
            },
        }
    }
}

/// Everything a destination needs for one attempt.
pub struct Job<'a> {
    pub delivery: &'a Delivery,
    pub event: &'a Event,
    pub rule: &'a Rule,
    pub connection: &'a Connection,
    /// The connection's decrypted secrets.
    pub secrets: &'a Value,
    pub now: SystemTime,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One destination kind, as the API and the engine see it. Adding a kind
/// is a folder implementing this plus one line in [`Destinations::new`]
/// (ARCHITECTURE.md lists the steps).
pub trait Destination: Send + Sync {
    fn kind(&self) -> ConnectionKind;

    /// Checks a new connection's config as the tenant sent it and splits it
    /// into the public part and the secrets to seal.
    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>>;

    /// A changed config for an existing connection, given its current
    /// secrets: the new public part and the new secrets to seal.
    fn update<'a>(
        &'a self,
        _config: &'a Value,
        _secrets: Value,
    ) -> BoxFuture<'a, Result<(Value, Value), Invalid>> {
        Box::pin(async { Err(Invalid::new("config", "cannot be changed for this type")) })
    }

    /// The config as API answers show it. `secrets` opens the connection's
    /// secrets, for kinds that show a masked trace of them.
    fn shown_config(&self, config: &Value, _secrets: &dyn Fn() -> Option<Value>) -> Value {
        config.clone()
    }

    /// Checks a rule's target for a connection of this kind and returns the
    /// target to store.
    fn validate_target(&self, target: &Value) -> Result<Value, Invalid>;

    /// One attempt: render, send, classify.
    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome>;
}

/// A new connection's parts, split by its kind.
#[derive(Debug)]
pub struct NewConnection {
    pub config: Value,
    /// Sealed with the master key before it is stored.
    pub secrets: Value,
    /// A secret shown once in the creation answer (a webhook's signing
    /// secret).
    pub shown_once: Option<String>,
}

/// A field the tenant sent that a kind refuses (a 422 at the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    pub field: String,
    pub problem: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            problem: problem.to_string(),
        }
    }
}

/// What a destination may ask of storage: a connection's current secrets,
/// and replacing them only if they are still what it read (Slack's token
/// refresh). The engine implements it over the `Store`; destinations never
/// hold the store.
pub trait SecretsPort: Send + Sync {
    /// The connection's secrets as stored now; `None` once it is deleted.
    fn load<'a>(
        &'a self,
        connection: &'a Connection,
    ) -> BoxFuture<'a, Result<Option<StoredSecrets>, SecretsError>>;

    /// Seals and stores `fresh` unless the stored secrets are no longer
    /// `expected` (compare and swap).
    fn swap<'a>(
        &'a self,
        connection: &'a Connection,
        expected: &'a StoredSecrets,
        fresh: &'a Value,
    ) -> BoxFuture<'a, Result<Swap, SecretsError>>;

    /// Waits (at most `wait`) until no other node sharing the store is
    /// refreshing the connection's secrets, and keeps them from starting
    /// until the guard drops. `None` where one process owns the store: the
    /// caller's in-process lock is then enough.
    fn hold_refresh<'a>(
        &'a self,
        connection: &'a Connection,
        wait: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<crate::store::SharedLockGuard>, SecretsError>> {
        let _ = (connection, wait);
        Box::pin(async { Ok(None) })
    }
}

/// A connection's secrets as read, with what a swap compares against.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSecrets {
    pub secrets: Value,
    /// Opaque to destinations (the sealed bytes, for the Store's port).
    pub version: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Swap {
    Swapped,
    /// Someone else replaced them first: these are the newer secrets.
    Stale(StoredSecrets),
    /// The connection is gone.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Storage(String),
    #[error("the connection's secrets cannot be opened or sealed with this master key")]
    Crypto,
}

/// What a destination may ask of storage about alert threads: the first
/// message of an alert in a Slack channel (its `ts`), so the alert's
/// acknowledge and resolve reply in that thread and update it. The engine
/// implements it over the `Store` (rows expire with the retention period).
pub trait ThreadPort: Send + Sync {
    /// The thread's first message, if it is known.
    fn load<'a>(&'a self, key: &'a ThreadKey)
    -> BoxFuture<'a, Result<Option<String>, ThreadError>>;

    /// Remembers `ts` as the thread's first message.
    fn save<'a>(
        &'a self,
        key: &'a ThreadKey,
        ts: &'a str,
    ) -> BoxFuture<'a, Result<(), ThreadError>>;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ThreadError(pub String);

/// Threads in memory, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryThreads {
    pub threads: std::sync::Mutex<std::collections::HashMap<ThreadKey, String>>,
}

#[cfg(test)]
impl ThreadPort for MemoryThreads {
    fn load<'a>(
        &'a self,
        key: &'a ThreadKey,
    ) -> BoxFuture<'a, Result<Option<String>, ThreadError>> {
        Box::pin(async move { Ok(self.threads.lock().unwrap().get(key).cloned()) })
    }

    fn save<'a>(
        &'a self,
        key: &'a ThreadKey,
        ts: &'a str,
    ) -> BoxFuture<'a, Result<(), ThreadError>> {
        Box::pin(async move {
            self.threads
                .lock()
                .unwrap()
                .insert(key.clone(), ts.to_string());
            Ok(())
        })
    }
}

/// The storage ports the engine hands the destinations.
pub struct Ports {
    pub secrets: Arc<dyn SecretsPort>,
    pub threads: Arc<dyn ThreadPort>,
}

/// Why the registry's HTTP clients could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("cannot set up TLS for outbound requests: {0}")]
    Tls(#[from] rustls::Error),
}

/// The registry: every kind's [`Destination`], built once from the
/// configuration.
pub struct Destinations {
    kinds: Vec<Arc<dyn Destination>>,
    /// Also in `kinds`; the OAuth install and the channel picker need it.
    slack: Arc<slack::Slack>,
    /// Secrets opened for attempts, per connection ([`opened`]).
    opened: opened::OpenedCache,
}

impl Destinations {
    pub fn new(config: &Config, ports: Ports) -> Result<Self, SetupError> {
        let timeout = Duration::from_secs(config.delivery.timeout_seconds);
        let policy = net::TargetPolicy::new(config.delivery.allow_private_networks)
            .with_hosts(&config.delivery.hosts);
        // Idle connections kept per host: as many as attempts can be in
        // flight, so a busy destination's connections are all reused.
        let idle_per_host = config.delivery.max_in_flight;
        let tenant_http = tenant_http::TenantHttp::new(policy, timeout, idle_per_host)?;
        // The operator's own API bases (Slack, Resend, PagerDuty) are trusted.
        let trusted_http = net::trusted_client(timeout, idle_per_host)?;
        let slack = Arc::new(slack::Slack::new(config, trusted_http.clone(), ports));
        let kinds: Vec<Arc<dyn Destination>> = vec![
            Arc::new(webhook::Webhook::new(tenant_http.clone())),
            slack.clone(),
            // An SMTP setup error is logged and reported by each SMTP send
            // rather than stopping the server.
            Arc::new(email::Email::new_or_degraded(config, trusted_http.clone())),
            Arc::new(pagerduty::PagerDuty::new(config, trusted_http)),
            Arc::new(teams::Teams::new(tenant_http.clone())),
            Arc::new(discord::Discord::new(tenant_http)),
        ];
        Ok(Self {
            kinds,
            slack,
            opened: opened::OpenedCache::default(),
        })
    }

    /// The destination of a kind; `None` only if the registry lacks it (a
    /// unit test checks every kind is there).
    pub fn get(&self, kind: ConnectionKind) -> Option<&dyn Destination> {
        self.kinds
            .iter()
            .find(|destination| destination.kind() == kind)
            .map(|destination| destination.as_ref())
    }

    pub async fn send(&self, job: &Job<'_>) -> Outcome {
        match self.get(job.connection.kind) {
            Some(destination) => destination.send(job).await,
            None => Outcome::permanent(format!(
                "no destination of type {} on this instance",
                job.connection.kind.as_str()
            )),
        }
    }

    /// A connection's secrets for an attempt: opened once per sealed form
    /// of them, not once per attempt ([`opened`]).
    pub fn opened_secrets(
        &self,
        key: &MasterKey,
        connection: &Connection,
    ) -> Result<Arc<opened::OpenedSecrets>, CryptoError> {
        self.opened.open(key, connection)
    }

    pub fn slack_api(&self) -> &slack::SlackApi {
        self.slack.api()
    }

    /// A Slack connection's channels (cached briefly).
    pub async fn slack_channels(
        &self,
        connection: &Connection,
    ) -> Result<Vec<slack::Channel>, String> {
        self.slack.channels(connection).await
    }

    /// Drops what destinations cache of a connection that changed (Slack's
    /// channel list).
    pub fn forget_connection(&self, connection: ConnectionId) {
        self.slack.forget_channels(|_, cached| cached == connection);
    }

    /// Drops what destinations cache of a workspace another node changed,
    /// or of every workspace.
    pub fn forget_cached(&self, change: crate::store::CacheChange) {
        match change {
            crate::store::CacheChange::Workspace(workspace) => {
                self.slack.forget_channels(|owner, _| owner == workspace);
            }
            crate::store::CacheChange::Everything => self.slack.forget_channels(|_, _| true),
        }
    }
}

/// Associated data binding sealed secrets to their connection, so a sealed
/// blob copied onto another record does not open.
fn secrets_aad(id: ConnectionId) -> Vec<u8> {
    let mut aad = b"switchyard:connection-secrets:".to_vec();
    aad.extend_from_slice(&id.0.to_be_bytes());
    aad
}

pub fn seal_secrets(
    key: &MasterKey,
    id: ConnectionId,
    secrets: &Value,
) -> Result<Vec<u8>, CryptoError> {
    let plaintext = serde_json::to_vec(secrets).unwrap_or_default();
    key.seal(&plaintext, &secrets_aad(id))
}

/// Whether `key` opens the sealed secrets of connection `id`
/// (`switchyard export` and `import` check the master key with it).
pub fn check_sealed_secrets(key: &MasterKey, id: ConnectionId, sealed: &[u8]) -> bool {
    key.open(sealed, &secrets_aad(id)).is_ok()
}

pub fn open_secrets(key: &MasterKey, connection: &Connection) -> Result<Value, CryptoError> {
    let plaintext = key.open(&connection.sealed_secrets, &secrets_aad(connection.id))?;
    serde_json::from_slice(&plaintext).map_err(|_| CryptoError::Decrypt)
}

/// Reads at most [`RESPONSE_EXCERPT_BYTES`] of a reqwest answer's body (see
/// [`read_excerpt`]).
pub async fn response_excerpt(response: reqwest::Response) -> Option<String> {
    read_excerpt(http::Response::from(response).into_body(), None).await
}

/// Reads at most [`RESPONSE_EXCERPT_BYTES`] of `body`, never the whole of a
/// large one, as lossy UTF-8; `None` when empty. What arrived before
/// `deadline` (if one is given) is kept. The rest of a small answer is
/// read and dropped (see [`DRAIN_LIMIT_BYTES`]).
pub async fn read_excerpt<B>(body: B, deadline: Option<tokio::time::Instant>) -> Option<String>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
{
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut bytes = Vec::new();
    let mut more = true;
    while more && bytes.len() < RESPONSE_EXCERPT_BYTES {
        let next = body.frame();
        let frame = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, next).await {
                Ok(frame) => frame,
                Err(_) => return excerpt(bytes),
            },
            None => next.await,
        };
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    bytes.extend_from_slice(data);
                }
            }
            None | Some(Err(_)) => more = false,
        }
    }
    if more {
        // Read to its end, the answer's keep-alive connection goes back to
        // the pool; dropped unread, the connection is closed and the next
        // attempt to this host pays a new TCP (and TLS) handshake.
        let now = tokio::time::Instant::now();
        let until = deadline.map_or(now + DRAIN_WAIT, |deadline| deadline.min(now + DRAIN_WAIT));
        let mut read = bytes.len();
        while read <= DRAIN_LIMIT_BYTES {
            match tokio::time::timeout_at(until, body.frame()).await {
                Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |data| data.len()),
                _ => break,
            }
        }
    }
    excerpt(bytes)
}

/// After the excerpt, the rest of an answer is read (and dropped) while
/// the whole stays within this size and arrives within [`DRAIN_WAIT`], so
/// its connection is reused; a larger or slower answer closes it.
pub const DRAIN_LIMIT_BYTES: usize = 64 * 1024;

/// The longest an attempt waits for the rest of an answer beyond its
/// excerpt (and never past the attempt's own deadline).
pub const DRAIN_WAIT: Duration = Duration::from_millis(100);

fn excerpt(mut bytes: Vec<u8>) -> Option<String> {
    bytes.truncate(RESPONSE_EXCERPT_BYTES);
    if bytes.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Describes a transport error for the delivery log, and whether to retry,
/// in the tenant client's words ([`tenant_http::SendError`]).
pub fn transport_outcome(error: &reqwest::Error, timeout: Duration) -> Outcome {
    let error = if error.is_timeout() {
        tenant_http::SendError::TimedOut(timeout)
    } else if error.is_connect() {
        tenant_http::SendError::Connect(root_cause(error))
    } else {
        tenant_http::SendError::Request(root_cause(error))
    };
    error.outcome()
}

/// The text of the innermost error in `error`'s chain.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoSecrets;

    impl SecretsPort for NoSecrets {
        fn load<'a>(
            &'a self,
            _connection: &'a Connection,
        ) -> BoxFuture<'a, Result<Option<StoredSecrets>, SecretsError>> {
            Box::pin(async { Ok(None) })
        }

        fn swap<'a>(
            &'a self,
            _connection: &'a Connection,
            _expected: &'a StoredSecrets,
            _fresh: &'a Value,
        ) -> BoxFuture<'a, Result<Swap, SecretsError>> {
            Box::pin(async { Ok(Swap::Gone) })
        }
    }

    #[tokio::test]
    async fn every_kind_is_registered_once() {
        let config = Config::defaults().unwrap();
        let ports = Ports {
            secrets: Arc::new(NoSecrets),
            threads: Arc::new(MemoryThreads::default()),
        };
        let destinations = Destinations::new(&config, ports).unwrap();
        for kind in ConnectionKind::ALL {
            let destination = destinations.get(kind).expect("registered");
            assert_eq!(destination.kind(), kind);
        }
        assert_eq!(destinations.kinds.len(), ConnectionKind::ALL.len());
    }
}
