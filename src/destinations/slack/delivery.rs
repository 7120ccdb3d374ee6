//! Slack as a [`Destination`]: posting alerts with the tenant's own token,
//! token refresh (rotation) done once per connection however many
//! deliveries need it, about one message per second per channel, alert
//! threads, and the channel picker's list.
//!
//! An alert's first message (`alert.triggered`) is remembered through the
//! [`ThreadPort`] by its `ts`; its `alert.acknowledged` and `alert.resolved`
//! then update that message (`chat.update`, first, since repeating it on a
//! retry is harmless) and reply in its thread. With no remembered message
//! (expired, or sent before threads existed) they are posted like any other.

use super::config::{self, SlackSecrets};
use super::{
    Channel, PostAnswer, SlackApi, SlackError, SlackVerdict, classify, into_outcome,
    render_message, render_update,
};
use crate::config::Config;
use crate::destinations::message::AlertSummary;
use crate::destinations::{
    BoxFuture, Destination, Invalid, Job, NewConnection, Outcome, Ports, SecretsError, SecretsPort,
    StoredSecrets, Swap, ThreadPort, Verdict, transport_outcome,
};
use crate::model::{
    AlertState, Connection, ConnectionId, ConnectionKind, ConnectionStatus, ThreadKey, WorkspaceId,
    now_ms,
};
use crate::secret::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tokens expiring sooner than this are refreshed before use.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// Slack allows about one message per second per channel.
pub const CHANNEL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a channel list is reused.
pub const CHANNEL_CACHE_TTL: Duration = Duration::from_secs(60);
/// Most channel lists cached at once (a big workspace's list can be a few
/// hundred kilobytes).
pub const MAX_CACHED_CHANNEL_LISTS: usize = 256;
/// The pacer looks for channels whose turn has passed once it holds this
/// many (and again each time it has doubled since).
pub const PACER_PRUNE_MIN: usize = 256;

/// `chat.update` errors after which the reply is still posted: the first
/// message is gone or can no longer be edited, which the thread survives.
const UPDATE_GIVE_UPS: &[&str] = &[
    "message_not_found",
    "cant_update_message",
    "edit_window_closed",
];

pub struct Slack {
    api: SlackApi,
    tokens: SlackTokens,
    threads: Arc<dyn ThreadPort>,
    pacer: ChannelPacer,
    channels: Mutex<ChannelCache>,
    timeout: Duration,
}

impl Destination for Slack {
    fn kind(&self) -> ConnectionKind {
        ConnectionKind::Slack
    }

    fn create<'a>(&'a self, config: &'a Value) -> BoxFuture<'a, Result<NewConnection, Invalid>> {
        Box::pin(config::from_bot_token(&self.api, config))
    }

    fn validate_target(&self, target: &Value) -> Result<Value, Invalid> {
        config::validate_target(target)
    }

    fn send<'a>(&'a self, job: &'a Job<'a>) -> BoxFuture<'a, Outcome> {
        Box::pin(self.post(job))
    }
}

impl Slack {
    /// `http` is the trusted client (the Slack API base is the operator's).
    pub fn new(config: &Config, http: reqwest::Client, ports: Ports) -> Self {
        let api = SlackApi::new(http, config.slack.api_base.clone());
        let client = config
            .slack
            .client_id
            .clone()
            .zip(config.slack.client_secret.clone());
        let timeout = Duration::from_secs(config.delivery.timeout_seconds);
        Self {
            tokens: SlackTokens {
                api: api.clone(),
                secrets: ports.secrets,
                client,
                locks: RefreshLocks::default(),
                // Another node holds it through at most one refresh call.
                wait_for_other_nodes: timeout + Duration::from_secs(5),
            },
            threads: ports.threads,
            api,
            pacer: ChannelPacer::default(),
            channels: Mutex::new(ChannelCache::default()),
            timeout,
        }
    }

    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    async fn post(&self, job: &Job<'_>) -> Outcome {
        let Some(channel) = job.rule.target.get("channel").and_then(|c| c.as_str()) else {
            return Outcome::permanent("the rule has no Slack channel");
        };
        let summary = AlertSummary::of_delivery(job.event, job.delivery);
        let body = match render_message(job.event, &summary, channel, job.rule.template.as_ref()) {
            Ok(body) => body,
            Err(error) => {
                return Outcome::permanent(format!("the rule's template failed: {error}"));
            }
        };
        let current = match parse_secrets(job.secrets) {
            Ok(current) => current,
            Err(outcome) => return outcome,
        };
        let mut token = match self.tokens.token(job.connection, &current, None).await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let thread = job
            .delivery
            .alert
            .clone()
            .or_else(|| job.event.alert_key())
            .map(|alert| ThreadKey {
                workspace: job.delivery.workspace_id,
                connection: job.connection.id,
                channel: channel.to_string(),
                alert,
            });
        let state = AlertState::of(&job.event.name);
        let Some(thread) = thread.filter(|_| state.is_some()) else {
            return self.post_message(job, &current, &mut token, &body).await.0;
        };
        if state == Some(AlertState::Triggered) {
            let (outcome, answer) = self.post_message(job, &current, &mut token, &body).await;
            if let Some(ts) = answer.as_ref().and_then(message_ts) {
                // The message is out: failing the delivery now would post
                // it twice, so a lost thread only costs the threading.
                if let Err(error) = self.threads.save(&thread, ts).await {
                    tracing::warn!(%error, delivery = %job.delivery.id, "cannot remember the alert's Slack thread");
                }
            }
            return outcome;
        }
        let first = match self.threads.load(&thread).await {
            Ok(first) => first,
            Err(error) => {
                return Outcome::retry(format!("cannot read the alert's Slack thread: {error}"));
            }
        };
        let Some(first) = first else {
            return self.post_message(job, &current, &mut token, &body).await.0;
        };
        if let Some(update) = render_update(job.event, &summary, channel, &first) {
            let answer = match self
                .call(job, &current, &mut token, Method::Update, &update)
                .await
            {
                Ok(answer) => answer,
                Err(outcome) => return outcome,
            };
            let gave_up = answer
                .error_code()
                .filter(|code| UPDATE_GIVE_UPS.contains(code));
            match classify(&answer) {
                SlackVerdict::Delivered => {}
                SlackVerdict::BadPayload { error } => {
                    tracing::warn!(delivery = %job.delivery.id, %error, "Slack refused the update of an alert's first message; replying only");
                }
                _ if gave_up.is_some() => {
                    tracing::info!(delivery = %job.delivery.id, error = gave_up, "the alert's first Slack message cannot be updated; replying only");
                }
                verdict => return into_outcome(verdict, &answer),
            }
        }
        let mut reply = body;
        reply["thread_ts"] = serde_json::Value::String(first);
        self.post_message(job, &current, &mut token, &reply).await.0
    }

    /// Posts a message (paced per channel); the outcome, and the answer when
    /// there was one.
    async fn post_message(
        &self,
        job: &Job<'_>,
        current: &SlackSecrets,
        token: &mut String,
        body: &Value,
    ) -> (Outcome, Option<PostAnswer>) {
        let channel = body.get("channel").and_then(Value::as_str).unwrap_or("");
        self.pacer.wait_turn(job.connection.id, channel).await;
        match self.call(job, current, token, Method::Post, body).await {
            Ok(answer) => (into_outcome(classify(&answer), &answer), Some(answer)),
            Err(outcome) => (outcome, None),
        }
    }

    /// Calls `method`; a token Slack calls expired is refreshed once (into
    /// `token`) and the call made again. `Err` when Slack could not be
    /// reached or the token not refreshed.
    async fn call(
        &self,
        job: &Job<'_>,
        current: &SlackSecrets,
        token: &mut String,
        method: Method,
        body: &Value,
    ) -> Result<PostAnswer, Outcome> {
        let answer = self.call_once(method, token, body).await?;
        if classify(&answer) != SlackVerdict::TokenExpired {
            return Ok(answer);
        }
        // The token expired early (or rotation was switched on): refresh once
        // and call again.
        *token = self
            .tokens
            .token(job.connection, current, Some(token.as_str()))
            .await?;
        self.call_once(method, token, body).await
    }

    async fn call_once(
        &self,
        method: Method,
        token: &str,
        body: &Value,
    ) -> Result<PostAnswer, Outcome> {
        let answer = match method {
            Method::Post => self.api.post_message(token, body).await,
            Method::Update => self.api.update_message(token, body).await,
        };
        answer.map_err(|error| self.failed(error))
    }

    /// The connection's public and private channels, cached briefly.
    pub async fn channels(&self, connection: &Connection) -> Result<Vec<Channel>, String> {
        if let Some(channels) = self.lock_channels().get(connection.id, Instant::now()) {
            return Ok(channels.as_ref().clone());
        }
        let current = self
            .tokens
            .load(connection)
            .await
            .and_then(|stored| parse_secrets(&stored.secrets))
            .map_err(|outcome| outcome_text(&outcome))?;
        let token = self
            .tokens
            .token(connection, &current, None)
            .await
            .map_err(|outcome| outcome_text(&outcome))?;
        let channels = self
            .api
            .conversations_list(&token)
            .await
            .map_err(|error| format!("Slack did not list the channels: {error}"))?;
        self.lock_channels().insert(
            connection.workspace_id,
            connection.id,
            Arc::new(channels.clone()),
            Instant::now(),
        );
        Ok(channels)
    }

    /// Drops cached channel lists: of the connections `which` picks from
    /// (workspace, connection), after a connection changed here or on
    /// another node (a reinstall can see other channels).
    pub fn forget_channels(&self, which: impl Fn(WorkspaceId, ConnectionId) -> bool) {
        self.lock_channels()
            .lists
            .retain(|connection, (workspace, _, _)| !which(*workspace, *connection));
    }

    fn lock_channels(&self) -> std::sync::MutexGuard<'_, ChannelCache> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn failed(&self, error: SlackError) -> Outcome {
        match error {
            SlackError::Transport(error) => transport_outcome(&error, self.timeout),
            other => Outcome::retry(format!("Slack request failed: {other}")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Method {
    Post,
    Update,
}

/// The `ts` of a message `chat.postMessage` accepted.
fn message_ts(answer: &PostAnswer) -> Option<&str> {
    if !answer.is_ok() {
        return None;
    }
    answer.body.as_ref()?.get("ts")?.as_str()
}

/// Each connection's channel list (with its workspace) and when it was
/// fetched: expired lists are dropped as new ones come in, and at most
/// [`MAX_CACHED_CHANNEL_LISTS`] are kept.
#[derive(Default)]
struct ChannelCache {
    lists: HashMap<ConnectionId, (WorkspaceId, Instant, Arc<Vec<Channel>>)>,
}

impl ChannelCache {
    fn get(&self, connection: ConnectionId, now: Instant) -> Option<Arc<Vec<Channel>>> {
        let (_, fetched, channels) = self.lists.get(&connection)?;
        (now.saturating_duration_since(*fetched) < CHANNEL_CACHE_TTL).then(|| channels.clone())
    }

    fn insert(
        &mut self,
        workspace: WorkspaceId,
        connection: ConnectionId,
        channels: Arc<Vec<Channel>>,
        now: Instant,
    ) {
        self.lists.retain(|_, (_, fetched, _)| {
            now.saturating_duration_since(*fetched) < CHANNEL_CACHE_TTL
        });
        if self.lists.len() >= MAX_CACHED_CHANNEL_LISTS
            && !self.lists.contains_key(&connection)
            && let Some(oldest) = self
                .lists
                .iter()
                .min_by_key(|(_, (_, fetched, _))| *fetched)
                .map(|(id, _)| *id)
        {
            self.lists.remove(&oldest);
        }
        self.lists.insert(connection, (workspace, now, channels));
    }
}

fn outcome_text(outcome: &Outcome) -> String {
    match &outcome.verdict {
        Verdict::Delivered => "ok".into(),
        Verdict::Retry { error, .. } | Verdict::Permanent { error, .. } => error.clone(),
    }
}

/// Access tokens of rotating Slack installs. A per-connection lock, the
/// same lock across nodes sharing the store (through the [`SecretsPort`])
/// and a compare-and-swap make sure concurrent deliveries, on one node or
/// several, refresh once: the next holder finds the token already replaced
/// and uses it (a refresh token works once, so a second refresh would fail).
struct SlackTokens {
    api: SlackApi,
    secrets: Arc<dyn SecretsPort>,
    client: Option<(String, Secret)>,
    locks: RefreshLocks,
    wait_for_other_nodes: Duration,
}

impl SlackTokens {
    /// A usable token. `current` is what the caller read; `rejected` is a
    /// token Slack just called expired: refresh unless the stored token is
    /// already another one.
    async fn token(
        &self,
        connection: &Connection,
        current: &SlackSecrets,
        rejected: Option<&str>,
    ) -> Result<String, Outcome> {
        if rejected.is_none() && !expires_soon(current) {
            return Ok(current.bot_token.clone());
        }
        let lock = self.locks.lock_for(connection.id);
        let _guard = lock.lock().await;
        let _other_nodes = self
            .secrets
            .hold_refresh(connection, self.wait_for_other_nodes)
            .await
            .map_err(|error| Outcome::retry(format!("cannot lock the token refresh: {error}")))?;
        // Re-read under the locks: another delivery or node may have
        // refreshed, and then its token is the one to use.
        let read = self.load(connection).await?;
        let stored = parse_secrets(&read.secrets)?;
        let replaced = stored.bot_token != rejected.unwrap_or(&current.bot_token);
        if replaced || (rejected.is_none() && !expires_soon(&stored)) {
            return Ok(stored.bot_token);
        }
        let Some(refresh_token) = stored.refresh_token.clone() else {
            return Err(reauth(
                "the token expired and the install has no refresh token",
            ));
        };
        let Some((client_id, client_secret)) = &self.client else {
            return Err(Outcome::permanent(
                "cannot refresh the Slack token: slack.client_id and slack.client_secret are not set",
            ));
        };
        let access = match self
            .api
            .refresh(client_id, client_secret.expose(), &refresh_token)
            .await
        {
            Ok(access) => access,
            Err(SlackError::Api { error }) => {
                return Err(reauth(&format!("Slack refused the refresh ({error})")));
            }
            Err(error) => return Err(Outcome::retry(format!("token refresh failed: {error}"))),
        };
        let fresh = SlackSecrets {
            bot_token: access.access_token,
            refresh_token: access.refresh_token.or(Some(refresh_token)),
            expires_at_ms: access.expires_in.map(|secs| now_ms() + secs * 1000),
        };
        let fresh_json = serde_json::to_value(&fresh)
            .map_err(|_| Outcome::retry("cannot seal the refreshed token"))?;
        match self.secrets.swap(connection, &read, &fresh_json).await {
            Ok(Swap::Swapped) => {
                tracing::info!(connection = %connection.id, "Slack token refreshed");
                Ok(fresh.bot_token)
            }
            Ok(Swap::Stale(newer)) => Ok(parse_secrets(&newer.secrets)?.bot_token),
            Ok(Swap::Gone) => Err(Outcome::permanent("the connection was deleted")),
            Err(SecretsError::Crypto) => Err(Outcome::retry("cannot seal the refreshed token")),
            // The old refresh token is spent; without the new one stored the
            // install must be renewed.
            Err(error) => Err(Outcome::retry(format!(
                "cannot store the refreshed token: {error}"
            ))),
        }
    }

    /// The connection's secrets as stored now.
    async fn load(&self, connection: &Connection) -> Result<StoredSecrets, Outcome> {
        match self.secrets.load(connection).await {
            Ok(Some(stored)) => Ok(stored),
            Ok(None) => Err(Outcome::permanent("the connection was deleted")),
            Err(SecretsError::Crypto) => Err(unreadable()),
            Err(error) => Err(Outcome::retry(format!(
                "cannot read the connection: {error}"
            ))),
        }
    }
}

fn parse_secrets(json: &Value) -> Result<SlackSecrets, Outcome> {
    serde_json::from_value(json.clone()).map_err(|_| unreadable())
}

fn unreadable() -> Outcome {
    Outcome::permanent("the connection's Slack token cannot be read")
}

/// One refresh lock per connection, held only while someone refreshes or
/// waits to: a lock nobody else holds is dropped when the next is handed
/// out, so the map never outgrows the refreshes in progress.
#[derive(Default)]
struct RefreshLocks {
    locks: Mutex<HashMap<ConnectionId, Arc<tokio::sync::Mutex<()>>>>,
}

impl RefreshLocks {
    fn lock_for(&self, id: ConnectionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only the map holds it: nobody refreshes or waits. Taken under the
        // map's mutex, so no one can be about to clone it.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(id).or_default().clone()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

fn expires_soon(secrets: &SlackSecrets) -> bool {
    secrets
        .expires_at_ms
        .is_some_and(|expires| expires <= now_ms() + REFRESH_MARGIN.as_millis() as u64)
}

fn reauth(error: &str) -> Outcome {
    Outcome {
        status_code: None,
        response: None,
        verdict: Verdict::Permanent {
            error: format!("{error}; reconnect Slack"),
            connection_status: Some(ConnectionStatus::NeedsReauth),
        },
    }
}

/// Spaces messages to one channel `CHANNEL_INTERVAL` apart, in arrival
/// order: each caller reserves the next free slot and waits for it.
struct ChannelPacer {
    slots: Mutex<PacerSlots>,
}

struct PacerSlots {
    next_slot: HashMap<(ConnectionId, String), tokio::time::Instant>,
    /// Size at which channels whose turn has passed are dropped: twice what
    /// the last prune left, so pruning costs O(1) per message on average.
    prune_at: usize,
}

impl Default for ChannelPacer {
    fn default() -> Self {
        Self {
            slots: Mutex::new(PacerSlots {
                next_slot: HashMap::new(),
                prune_at: PACER_PRUNE_MIN,
            }),
        }
    }
}

impl ChannelPacer {
    async fn wait_turn(&self, connection: ConnectionId, channel: &str) {
        let slot = {
            let mut slots = self.lock();
            // tokio's clock, so tests can move it.
            let now = tokio::time::Instant::now();
            if slots.next_slot.len() >= slots.prune_at {
                // A channel whose next slot has passed is no different from
                // one never seen.
                slots.next_slot.retain(|_, next| *next > now);
                slots.prune_at = PACER_PRUNE_MIN.max(2 * slots.next_slot.len());
            }
            let next = slots
                .next_slot
                .entry((connection, channel.to_string()))
                .or_insert(now);
            let slot = (*next).max(now);
            *next = slot + CHANNEL_INTERVAL;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PacerSlots> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests;
