//! Durable storage behind a narrow, backend-neutral, async [`Store`] trait:
//! its types and errors name no database, so the rest of the code speaks in
//! domain types only.
//!
//! The redb backend (`redb_backend/`) sends every mutation through one write
//! coordinator (`redb_backend/writer.rs`) that group-commits whatever is
//! waiting into one durable transaction; its reads are MVCC snapshots that
//! run beside it. Only `redb_backend/` (and the test seam `fault.rs`) names
//! redb.

mod codec;
pub mod dump;
mod fault;
pub mod postgres;
mod records;
mod redb_backend;

pub use codec::CodecError;
pub use fault::FaultSwitch;
pub use redb_backend::{
    CompactError, CompactReport, ExportError, ExportInfo, RedbImportError, RedbStore, WalOptions,
    compact, export, import as import_redb,
};

use crate::model::{
    Attempt, Connection, ConnectionId, ConnectionStatus, Delivery, DeliveryId, DeliveryStatus,
    Event, EventId, KeyKind, Rule, RuleId, ThreadKey, Workspace, WorkspaceId,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// SHA-256 of an API key; keys are stored only as this hash.
pub type KeyHash = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened (a file path, or a database address
    /// without its credentials).
    #[error("cannot open the store at {target}: {message}")]
    Open { target: String, message: String },
    /// The backend failed an operation. `io_failure`: the disk or the
    /// connection to the database failed rather than the request itself,
    /// so the same operation may work later.
    #[error("storage error: {source}")]
    Backend {
        source: Box<dyn std::error::Error + Send + Sync>,
        io_failure: bool,
    },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("the write coordinator has stopped")]
    WriterStopped,
}

impl StoreError {
    pub fn backend(
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        io_failure: bool,
    ) -> Self {
        StoreError::Backend {
            source: source.into(),
            io_failure,
        }
    }

    /// The disk refused a read or write (full, I/O error), the handle is
    /// latched by an earlier one, or the database cannot be reached: what
    /// a backend recovers from without a restart.
    pub fn is_io_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Backend {
                io_failure: true,
                ..
            }
        )
    }

    /// The store cannot serve this now but may soon: the API answers 503
    /// with `Retry-After` rather than 500.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Backend { .. }
        )
    }
}

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// redb's page cache, in bytes (`storage.cache_mb`).
    pub cache_bytes: usize,
    /// Test and chaos seam: fails the database file's writes on demand.
    /// `None` in production.
    pub faults: Option<FaultSwitch>,
    /// The write-ahead log in front of redb's commits (`storage.wal_mb`,
    /// `storage.wal_checkpoint_ms`, `storage.wal_group_wait_us`).
    pub wal: WalOptions,
}

impl StoreOptions {
    pub fn from_config(storage: &crate::config::StorageConfig) -> Self {
        Self {
            cache_bytes: storage.cache_mb.saturating_mul(1024 * 1024),
            faults: None,
            wal: WalOptions {
                capacity_bytes: storage.wal_mb.saturating_mul(1024 * 1024),
                checkpoint_every: std::time::Duration::from_millis(storage.wal_checkpoint_ms),
                group_wait: std::time::Duration::from_micros(storage.wal_group_wait_us),
            },
        }
    }
}

impl Default for StoreOptions {
    /// The configuration's default cache (32 MiB), no faults.
    fn default() -> Self {
        Self {
            cache_bytes: 32 * 1024 * 1024,
            faults: None,
            wal: WalOptions::default(),
        }
    }
}

/// What a backup copied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackupStats {
    pub tables: usize,
    pub rows: u64,
}

/// What the store needs to create a workspace; keys arrive already hashed.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub workspace: Workspace,
    pub publishable_key_hash: KeyHash,
    pub secret_key_hash: KeyHash,
    /// The Meshes-format publishable key (`mesh_pub_…`).
    pub meshes_key_hash: KeyHash,
}

#[cfg(test)]
impl NewWorkspace {
    /// A workspace for tests, with fixed key hashes (1s, 2s, 3s).
    pub(crate) fn for_tests(id: WorkspaceId, name: &str) -> Self {
        Self {
            workspace: Workspace {
                id,
                name: name.into(),
                created_at_ms: 1,
            },
            publishable_key_hash: [1; 32],
            secret_key_hash: [2; 32],
            meshes_key_hash: [3; 32],
        }
    }
}

/// Events and their deliveries to store atomically (with their queue
/// entries), with the answer to remember for an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub workspace_id: WorkspaceId,
    pub events: Vec<Event>,
    /// Each due at its `next_attempt_at_ms`.
    pub deliveries: Vec<Delivery>,
    /// The noise controls of the deliveries whose rule has any, decided
    /// inside the ingest transaction (see `redb_backend/noise.rs`).
    pub noise: std::collections::HashMap<DeliveryId, NoiseCheck>,
    pub idempotency: Option<IdempotentAnswer>,
}

#[cfg(test)]
impl IngestBatch {
    /// One event and its deliveries, without noise control or an
    /// idempotency key, for tests.
    pub(crate) fn for_tests(event: Event, deliveries: Vec<Delivery>) -> Self {
        Self {
            workspace_id: event.workspace_id,
            events: vec![event],
            deliveries,
            noise: Default::default(),
            idempotency: None,
        }
    }
}

/// A rule's noise controls, as they apply to one new delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoiseCheck {
    pub dedup_seconds: Option<u32>,
    pub max_per_hour: Option<u32>,
    /// The event's place in its alert's life; acknowledged and resolved are
    /// never suppressed.
    pub state: Option<crate::model::AlertState>,
}

/// The longest `dedup_seconds` a rule may set (one day); also how long an
/// alert's last-sent time is kept.
pub const MAX_DEDUP_SECONDS: u32 = 86_400;

/// How long a `max_per_hour` window lasts.
pub const NOISE_WINDOW_MS: u64 = 60 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentAnswer {
    pub key: String,
    pub status: u16,
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored and durable; these deliveries were suppressed by their rule's
    /// noise control, so they are not queued.
    Stored { suppressed: Vec<DeliveryId> },
    /// The idempotency key was seen within its lifetime: nothing was stored
    /// and this is the first answer.
    Replayed { status: u16, response: Vec<u8> },
    /// The workspace no longer exists.
    UnknownWorkspace,
}

/// A page of events, newest first, and the cursor for the next page.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next: Option<EventId>,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events whose name matches; all of them when `None`.
    pub name: Option<EventNameFilter>,
    /// Only events older than this one (the cursor).
    pub before: Option<EventId>,
    pub limit: usize,
}

/// Which event names a listing keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventNameFilter {
    /// This name only.
    Exact(String),
    /// Names that start with this and go on past it (`alert.` keeps
    /// `alert.fired`, not `alert.`).
    Prefix(String),
}

impl EventNameFilter {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            EventNameFilter::Exact(exact) => name == exact,
            EventNameFilter::Prefix(prefix) => {
                name.len() > prefix.len() && name.starts_with(prefix.as_str())
            }
        }
    }
}

/// Changes to a connection, applied inside the write so that concurrent
/// edits of different fields never undo each other.
#[derive(Debug, Clone, Default)]
pub struct ConnectionPatch {
    pub name: Option<String>,
    pub status: Option<ConnectionStatus>,
    pub config: Option<serde_json::Value>,
    pub sealed_secrets: Option<Vec<u8>>,
    /// Only apply when the stored secrets are still these bytes (token
    /// refresh uses it so two refreshes never overwrite each other).
    pub if_secrets_are: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PatchOutcome {
    Updated(Connection),
    NotFound,
    /// `if_secrets_are` did not hold; nothing changed.
    Stale(Connection),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteConnection {
    Deleted,
    NotFound,
    /// Rules still send to it.
    InUse(Vec<RuleId>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutRule {
    Stored,
    UnknownConnection,
    /// An update of a rule deleted meanwhile; nothing was stored.
    NotFound,
}

/// A due delivery in the queue table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueEntry {
    pub due_ms: u64,
    pub delivery_id: DeliveryId,
    pub workspace_id: WorkspaceId,
    pub connection_id: ConnectionId,
}

/// Where an entry sits in its connection's queue: (due at ms, delivery).
/// Entries of one connection are delivered in this order.
pub type QueueKey = (u64, DeliveryId);

impl QueueEntry {
    pub fn key(&self) -> QueueKey {
        (self.due_ms, self.delivery_id)
    }
}

/// The first entry of one connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueHead {
    pub connection_id: ConnectionId,
    pub workspace_id: WorkspaceId,
    pub first: QueueKey,
    /// A `Retry-After` pause of the connection stored with the queue (0:
    /// none), for a node taking the connection over from another. A single
    /// node keeps its pauses in memory and says 0.
    pub paused_until_ms: u64,
}

/// Every connection with queued entries, and the backlog's size.
#[derive(Debug, Clone, Default)]
pub struct QueueHeads {
    /// In connection id order.
    pub heads: Vec<QueueHead>,
    /// Entries in the queue table, in memory or not.
    pub backlog: u64,
}

/// Which entries of one connection to read: at most `limit`, from `from`
/// on (inclusive; the connection's first entry when `None`), due at or
/// before `due_by`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneRead {
    pub connection_id: ConnectionId,
    pub from: Option<QueueKey>,
    pub due_by: u64,
    pub limit: usize,
}

/// What a [`LaneRead`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneRows {
    /// In due order.
    pub entries: Vec<QueueEntry>,
    /// The key of the first entry after them, if there is one.
    pub next: Option<QueueKey>,
}

/// Everything one attempt needs, read in one snapshot (or, for a first
/// attempt, kept from ingest: `delivery/warm.rs`). The shared parts are
/// `Arc`s so that the deliveries of one event share its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryContext {
    pub delivery: Delivery,
    /// Attempts since the delivery was last queued by hand.
    pub round_attempts: u32,
    pub event: Arc<Event>,
    pub rule: Option<Arc<Rule>>,
    pub connection: Option<Arc<Connection>>,
}

/// What an attempt decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    Succeeded,
    RetryAt(u64),
    Dead,
}

/// An attempt's result, written with the delivery's new state and queue
/// entry in one transaction.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub workspace_id: WorkspaceId,
    pub delivery_id: DeliveryId,
    pub attempt: Attempt,
    pub next: NextStep,
    /// Set the connection's status too (410 disables, revoked token
    /// needs re-authorisation).
    pub connection_status: Option<ConnectionStatus>,
    /// The connection is paused until then (`Retry-After`): kept where a
    /// node taking the connection over finds it.
    pub pause_connection_until: Option<u64>,
}

#[cfg(test)]
impl AttemptOutcome {
    /// A first attempt that got a 200 in 3 ms, for tests.
    pub(crate) fn succeeded_for_tests(
        workspace_id: WorkspaceId,
        delivery_id: DeliveryId,
        at_ms: u64,
    ) -> Self {
        Self {
            workspace_id,
            delivery_id,
            attempt: Attempt {
                at_ms,
                duration_ms: 3,
                status_code: Some(200),
                error: None,
                response: Some("ok".into()),
            },
            next: NextStep::Succeeded,
            connection_status: None,
            pause_connection_until: None,
        }
    }
}

/// Most rows a filtered listing examines for one page; a page that has not
/// filled by then ends early, with a cursor to go on from.
pub const MAX_SCANNED_PER_PAGE: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub status: Option<DeliveryStatus>,
    pub event_id: Option<EventId>,
    pub connection_id: Option<ConnectionId>,
    /// Only deliveries older than this one (the cursor).
    pub before: Option<DeliveryId>,
    pub limit: usize,
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryPage {
    pub deliveries: Vec<Delivery>,
    pub next: Option<DeliveryId>,
}

/// Which deliveries to queue again by hand.
#[derive(Debug, Clone)]
pub enum Requeue {
    /// One delivery, if it is dead or succeeded (never a suppressed one).
    One(DeliveryId),
    /// Every delivery in `status` last updated at or after `since_ms`,
    /// at most `limit` of them. The store finds them in a read snapshot, so
    /// the scan never holds up other writes.
    Matching {
        status: DeliveryStatus,
        since_ms: u64,
        limit: usize,
    },
    /// These deliveries, each only if it is still in `status` and not
    /// queued (what `Matching` becomes once its scan is done).
    Listed {
        status: DeliveryStatus,
        ids: Vec<DeliveryId>,
    },
}

/// Where a retention sweep goes on from: `workspace`'s events from `event`
/// (inclusive), then the workspaces after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCursor {
    pub workspace: WorkspaceId,
    pub event: EventId,
}

/// What one step of a retention sweep removed (or, summed, a whole sweep).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStep {
    pub events: u64,
    pub deliveries: u64,
    pub attempts: u64,
    /// Old events kept because a delivery of theirs is still queued or in
    /// flight; they go in a later sweep, once it has succeeded or is dead.
    pub held: u64,
    /// Where the next step of this sweep starts; `None` once every old event
    /// has been looked at.
    pub next: Option<RetentionCursor>,
}

impl RetentionStep {
    /// Adds `other`'s counts; `next` becomes `other`'s.
    pub fn add(&mut self, other: &RetentionStep) {
        self.events += other.events;
        self.deliveries += other.deliveries;
        self.attempts += other.attempts;
        self.held += other.held;
        self.next = other.next;
    }
}

/// How long an idempotency key's first answer is kept.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// What another node sharing the store may have changed, for this node to
/// drop from its caches (see [`Store::workspace_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheChange {
    /// The workspace's keys, rules or connections changed, or it was
    /// deleted.
    Workspace(WorkspaceId),
    /// Changes cannot be followed just now (the database did not answer):
    /// nothing cached can be trusted.
    Everything,
}

/// What a [`SharedLockGuard`] protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedLock {
    /// A Slack token refresh: its refresh token works once.
    SlackRefresh(ConnectionId),
}

/// Held by one node at a time across every node sharing the store; let go
/// when dropped, on every path (return, error, panic, cancellation).
pub struct SharedLockGuard {
    _held: Box<dyn Send + Sync>,
}

impl std::fmt::Debug for SharedLockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLockGuard")
    }
}

impl SharedLockGuard {
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

/// The storage interface, the same for every backend. Writes resolve once
/// durable; reads see the latest committed state. Every call returns a
/// `'static` future, so a backend may answer at once (redb's point reads),
/// on a blocking thread (redb's scans) or over the network.
pub trait Store: Send + Sync + 'static {
    fn create_workspace(&self, new: NewWorkspace) -> StoreFuture<()>;
    /// Removes the workspace with its keys, connections, rules, queue entries
    /// and idempotency keys; its events and deliveries follow through
    /// [`Store::purge_deleted`]. Resolves to false when it did not exist.
    fn delete_workspace(&self, id: WorkspaceId) -> StoreFuture<bool>;
    /// Removes up to about `budget` rows of deleted workspaces in one
    /// transaction; resolves to whether rows remain.
    fn purge_deleted(&self, budget: usize) -> StoreFuture<bool>;
    /// Deleted workspaces whose rows are still being removed.
    fn pending_purges(&self) -> StoreFuture<u64>;
    /// One bounded step of a retention sweep: removes events received before
    /// `cutoff_ms` (with their deliveries, index rows and attempts) from
    /// `from` on (`None`: the first workspace), about `budget` rows examined
    /// or removed in one transaction. An event whose delivery is still
    /// queued or in flight stays, with all its deliveries.
    fn purge_old_events(
        &self,
        cutoff_ms: u64,
        from: Option<RetentionCursor>,
        budget: usize,
    ) -> StoreFuture<RetentionStep>;
    /// The backend's own online backup to a file, if it has one (redb does;
    /// a PostgreSQL store is backed up with PostgreSQL's tools).
    fn backup_source(&self) -> Option<Arc<dyn BackupSource>>;
    /// Replaces all three keys at once (publishable, secret, Meshes
    /// publishable); the old ones stop working on commit.
    fn rotate_keys(
        &self,
        id: WorkspaceId,
        publishable_key_hash: KeyHash,
        secret_key_hash: KeyHash,
        meshes_key_hash: KeyHash,
    ) -> StoreFuture<Option<Workspace>>;
    fn ingest(&self, batch: IngestBatch) -> StoreFuture<IngestOutcome>;
    /// Drops idempotency keys older than their lifetime; returns how many.
    fn purge_idempotency_keys(&self, now_ms: u64) -> StoreFuture<usize>;
    /// Drops noise-control state that no longer matters: alerts sent longer
    /// ago than any dedup window, rule windows over with nothing owed.
    fn purge_noise_state(&self, now_ms: u64) -> StoreFuture<usize>;

    fn workspaces(&self) -> StoreFuture<Vec<Workspace>>;
    fn workspace(&self, id: WorkspaceId) -> StoreFuture<Option<Workspace>>;
    fn key(&self, hash: KeyHash) -> StoreFuture<Option<(WorkspaceId, KeyKind)>>;
    fn event(&self, workspace: WorkspaceId, id: EventId) -> StoreFuture<Option<Event>>;
    fn events(&self, workspace: WorkspaceId, query: EventQuery) -> StoreFuture<EventPage>;
    /// Whether writes are accepted now: `*self.writable().borrow()`.
    fn is_writable(&self) -> bool;
    /// True while writes are accepted. Flips to false when a commit fails
    /// with an I/O error (disk full) and back to true once a probe write
    /// succeeds; false for good once the store is closed.
    fn writable(&self) -> tokio::sync::watch::Receiver<bool>;
    /// Stops accepting writes, lets every write submitted before it become
    /// durable, and resolves once they have; later writes fail with
    /// [`StoreError::WriterStopped`]. Reads go on working. Closing twice is
    /// harmless.
    fn close(&self) -> StoreFuture<()>;

    fn create_connection(&self, connection: Connection) -> StoreFuture<()>;
    fn update_connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
        patch: ConnectionPatch,
    ) -> StoreFuture<PatchOutcome>;
    fn delete_connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
    ) -> StoreFuture<DeleteConnection>;
    fn connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
    ) -> StoreFuture<Option<Connection>>;
    fn connections(&self, workspace: WorkspaceId) -> StoreFuture<Vec<Connection>>;

    /// Creates a rule, or replaces one that still exists when `update`; its
    /// connection must exist in the workspace.
    fn put_rule(&self, rule: Rule, update: bool) -> StoreFuture<PutRule>;
    fn delete_rule(&self, workspace: WorkspaceId, id: RuleId) -> StoreFuture<bool>;
    fn rule(&self, workspace: WorkspaceId, id: RuleId) -> StoreFuture<Option<Rule>>;
    fn rules(&self, workspace: WorkspaceId) -> StoreFuture<Vec<Rule>>;

    fn delivery(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> StoreFuture<Option<(Delivery, Vec<Attempt>)>>;
    fn deliveries(&self, workspace: WorkspaceId, query: DeliveryQuery)
    -> StoreFuture<DeliveryPage>;
    fn delivery_context(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> StoreFuture<Option<DeliveryContext>>;
    /// Records an attempt; resolves to the delivery's new state, or `None`
    /// when nothing was recorded: the delivery no longer exists (its
    /// workspace was deleted), or on a shared queue this node lost the
    /// connection's lease (the node holding it now delivers the entry).
    fn record_attempt(&self, outcome: AttemptOutcome) -> StoreFuture<Option<Delivery>>;
    /// Queues deliveries again, due at `now_ms`; resolves to their entries.
    fn requeue(
        &self,
        workspace: WorkspaceId,
        which: Requeue,
        now_ms: u64,
    ) -> StoreFuture<Vec<QueueEntry>>;
    /// The first entry of every connection's queue that this node
    /// delivers. Costs a seek per connection with a backlog, not a read of
    /// the backlog. A store shared by nodes first claims a fair share of the
    /// connections no node holds (see [`Store::may_deliver`]).
    fn queue_heads(&self) -> StoreFuture<QueueHeads>;
    /// Reads some entries of some connections' queues, all in one snapshot,
    /// one answer per read in order (nothing for a connection this node
    /// does not deliver).
    fn queue_rows(&self, reads: Vec<LaneRead>) -> StoreFuture<Vec<LaneRows>>;
    /// Whether this node may start an attempt for the connection now. A
    /// store shared by several nodes (PostgreSQL) answers yes only while
    /// this node holds the connection's lease with an attempt's timeout and
    /// a margin left on it, so a node that stalled starts nothing it could
    /// not record; a single-node store (redb) always does. Never blocks.
    fn may_deliver(&self, connection: ConnectionId) -> bool {
        let _ = connection;
        true
    }
    /// Fires when another node queued entries this node delivers, or
    /// connections were released; `None` for a single-node store. The
    /// scheduler then refills early (and polls every second on a shared
    /// queue, in case a wake-up is lost).
    fn queue_wakeups(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        None
    }
    /// How many entries the queue table holds (cheap: a stored count).
    fn queue_len(&self) -> StoreFuture<u64>;
    /// Removes `entry`'s queue row unless it still stands for its delivery's
    /// next attempt; resolves to whether one was removed.
    fn drop_stale_queue_entry(&self, entry: QueueEntry) -> StoreFuture<bool>;

    /// Remembers an OAuth `state` nonce until it expires.
    fn put_oauth_state(&self, nonce: u128, expires_at_ms: u64) -> StoreFuture<()>;
    /// Uses a nonce up: true only the first time, and only before expiry.
    fn consume_oauth_state(&self, nonce: u128, now_ms: u64) -> StoreFuture<bool>;
    /// Drops expired nonces; returns how many.
    fn purge_oauth_states(&self, now_ms: u64) -> StoreFuture<usize>;

    /// Marks an embed launch token (by digest) used until it expires:
    /// true only the first time.
    fn use_launch_token(&self, digest: u128, expires_at_ms: u64) -> StoreFuture<bool>;
    /// Forgets used launch tokens that have expired; returns how many.
    fn purge_used_launch_tokens(&self, now_ms: u64) -> StoreFuture<usize>;

    /// The `ts` of an alert's first Slack message in a channel, if known.
    fn slack_thread(&self, key: ThreadKey) -> StoreFuture<Option<String>>;
    /// Remembers an alert's first Slack message (replacing an older one).
    fn save_slack_thread(&self, key: ThreadKey, ts: String, now_ms: u64) -> StoreFuture<()>;
    /// Forgets threads saved before `older_than_ms`; returns how many.
    fn purge_slack_threads(&self, older_than_ms: u64) -> StoreFuture<usize>;

    /// A feed of what other nodes sharing this store changed, for a node
    /// to drop from its caches; `None` when no other node can share it
    /// (redb: one process owns the file, and its API drops its own caches).
    fn workspace_changes(&self) -> Option<tokio::sync::mpsc::Receiver<CacheChange>> {
        None
    }
    /// Waits (at most `wait`) for `lock` to be free on every node sharing
    /// the store, and holds it until the guard drops. `None` when no other
    /// node can share the store: the caller's in-process lock suffices.
    fn shared_lock(
        &self,
        lock: SharedLock,
        wait: std::time::Duration,
    ) -> StoreFuture<Option<SharedLockGuard>> {
        let _ = (lock, wait);
        Box::pin(async { Ok(None) })
    }
}

/// A backend's online backup: the whole store, as of one snapshot, copied
/// into a file in the backend's own format (a redb database for redb).
pub trait BackupSource: Send + Sync {
    /// Copies into `target`, an empty file.
    fn backup(&self, target: std::fs::File) -> StoreFuture<BackupStats>;
}

#[cfg(test)]
mod tests {
    use super::EventNameFilter;

    #[test]
    fn a_prefix_filter_keeps_only_names_that_go_on_past_it() {
        let prefix = EventNameFilter::Prefix("alert.".into());
        assert!(prefix.matches("alert.fired"));
        assert!(!prefix.matches("alert."));
        assert!(!prefix.matches("alerts.fired"));
        let exact = EventNameFilter::Exact("alert.fired".into());
        assert!(exact.matches("alert.fired"));
        assert!(!exact.matches("alert.fired.again"));
    }
}
