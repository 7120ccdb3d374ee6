//! The PostgreSQL store: the same operations as the redb store, on a
//! database several nodes can share.
//!
//! Map: `connect.rs` (pool, TLS, the URL never logged), `migrate.rs`
//! (embedded versioned schema, advisory lock), `group.rs` (the
//! group-commit writer task), `ingest.rs` (what it commits for ingest),
//! `outcomes.rs` (what it commits for attempt outcomes), one file per
//! resource (`workspaces.rs`,
//! `connections.rs`, `rules.rs`, `events.rs`, `deliveries.rs`, `misc.rs`),
//! `noise.rs` (noise control decided in the ingest transaction),
//! `retention.rs`, `health.rs` (the `writable` watch and its probe),
//! `columns.rs` (ids, times and enums as columns); for nodes sharing the
//! database, `node.rs` (this node's id and its record of the connection
//! leases it holds, the keeper that heartbeats and renews them),
//! `queue.rs` (queue heads and rows, lease claims), `listen.rs` (the
//! `LISTEN` connection that wakes the scheduler), `changes.rs` (what
//! other nodes must drop from their caches: bumped by every write that
//! changes a workspace's keys, rules or connections, polled by each node)
//! and `locks.rs` (advisory locks that hold across nodes); `import.rs` and
//! `export.rs` (`switchyard import`: a dump copied in, in one transaction;
//! `switchyard export`: every table read out of one snapshot).
//!
//! Every write other than ingest and attempt outcomes is its own short transaction on a pooled
//! connection: PostgreSQL has no single writer to feed, and row locks
//! (`FOR UPDATE`, `ON CONFLICT`, `DELETE … RETURNING`) make each check and
//! its write one step, also between nodes.

mod changes;
mod columns;
mod connect;
mod connections;
mod deliveries;
mod error;
mod events;
mod export;
mod group;
mod health;
mod import;
mod ingest;
mod listen;
mod locks;
mod migrate;
mod misc;
mod node;
mod noise;
mod outcomes;
mod queue;
mod retention;
mod rules;
mod workspaces;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_nodes;
#[cfg(test)]
mod tests_outcomes;

pub use connect::{ConnectError, describe, parse_url};
pub use error::PgError;
pub use export::{ExportSink, PgExportError, export};
pub use import::{ImportError, import};
pub use migrate::{MigrateError, MigrationReport, latest_version};
pub use node::NodeOptions;

use super::{
    AttemptOutcome, BackupSource, ConnectionPatch, DeleteConnection, DeliveryContext, DeliveryPage,
    DeliveryQuery, EventPage, EventQuery, IngestBatch, IngestOutcome, KeyHash, LaneRead, LaneRows,
    NewWorkspace, PatchOutcome, PutRule, QueueEntry, QueueHeads, Requeue, RetentionCursor,
    RetentionStep, SharedLock, SharedLockGuard, Store, StoreError, StoreFuture,
};
use crate::config::PostgresConfig;
use crate::model::{
    Attempt, Connection, ConnectionId, Delivery, DeliveryId, Event, EventId, KeyKind, Rule, RuleId,
    ThreadKey, Workspace, WorkspaceId, now_ms,
};
use deadpool_postgres::Pool;
use error::PgResult;
use health::Health;
use ingest::{IngestWriter, Ingests};
use node::Node;
use outcomes::{OutcomeWriter, Outcomes};
use std::sync::{Arc, Mutex};
use tokio_postgres::IsolationLevel;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot reach PostgreSQL at {target}: {source}")]
    Unreachable { target: String, source: PgError },
    #[error("cannot migrate PostgreSQL at {target}: {source}")]
    Migrate {
        target: String,
        source: MigrateError,
    },
}

/// Runs `$body` (a future using `$txn`) in its own read-write transaction
/// and commits; errors pass through the health check.
macro_rules! in_txn {
    ($self:ident, |$txn:ident| $body:expr) => {{
        let result: PgResult<_> = async {
            if $self.close.is_cancelled() {
                return Err(StoreError::WriterStopped.into());
            }
            let mut client = $self.pool.get().await?;
            let $txn = client.transaction().await?;
            let value = $body.await?;
            $txn.commit().await?;
            Ok(value)
        }
        .await;
        result.map_err(|error| $self.health.observe(error))
    }};
}

/// Runs `$body` on a pooled connection, outside any transaction.
macro_rules! read {
    ($self:ident, |$client:ident| $body:expr) => {{
        let result: PgResult<_> = async {
            let pooled = $self.pool.get().await?;
            let $client: &tokio_postgres::Client = &pooled;
            $body.await
        }
        .await;
        result.map_err(|error| $self.health.observe(error))
    }};
}

/// Runs `$body` in a read-only repeatable-read transaction: several
/// queries, one snapshot.
macro_rules! snapshot {
    ($self:ident, |$txn:ident| $body:expr) => {{
        let result: PgResult<_> = async {
            let mut client = $self.pool.get().await?;
            let $txn = client
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let value = $body.await?;
            $txn.commit().await?;
            Ok(value)
        }
        .await;
        result.map_err(|error| $self.health.observe(error))
    }};
}

/// Cheap to clone: every clone is the same store (one pool, one writer,
/// one node).
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    health: Arc<Health>,
    ingest: IngestWriter,
    outcomes: OutcomeWriter,
    node: Arc<Node>,
    /// Fires when another node queued entries for a connection this node
    /// holds, or released connections.
    wakeups: Arc<tokio::sync::watch::Sender<()>>,
    close: CancellationToken,
    /// Stops the keeper and the listener; cancelled by `close` once the
    /// writer has drained.
    background: CancellationToken,
    tasks: Arc<Mutex<Tasks>>,
    /// Where it points, without the password.
    target: Arc<str>,
}

/// The store's own tasks, awaited by `close`.
#[derive(Default)]
struct Tasks {
    writer: Option<tokio::task::JoinHandle<()>>,
    outcome_writer: Option<tokio::task::JoinHandle<()>>,
    keeper: Option<tokio::task::JoinHandle<()>>,
    listener: Option<tokio::task::JoinHandle<()>>,
}

impl PgStore {
    /// [`PgStore::open_node`] with the default lease and attempt timeout
    /// (`storage.postgres.lease_seconds` from `settings`, 15 s).
    pub async fn open(settings: &PostgresConfig) -> Result<Self, OpenError> {
        let options = NodeOptions {
            lease: std::time::Duration::from_secs(settings.lease_seconds),
            attempt_timeout: std::time::Duration::from_secs(15),
        };
        Self::open_node(settings, options).await
    }

    /// Connects, applies pending migrations (refusing a database newer than
    /// this binary), registers this node and starts the ingest writer, the
    /// lease keeper and the notification listener.
    pub async fn open_node(
        settings: &PostgresConfig,
        options: NodeOptions,
    ) -> Result<Self, OpenError> {
        let (pool, target) = connect::pool(settings)?;
        migrate_with(&pool, &target).await?;
        let node = Arc::new(Node::new(options));
        node::register(&pool, &node)
            .await
            .map_err(|source| OpenError::Unreachable {
                target: target.clone(),
                source,
            })?;
        let health = Health::new(pool.clone());
        let close = CancellationToken::new();
        let background = CancellationToken::new();
        let ingest_kind = Ingests {
            pool: pool.clone(),
            node: node.clone(),
        };
        let (ingest, writer) = IngestWriter::start(ingest_kind, health.clone(), close.clone());
        let outcome_kind = Outcomes {
            pool: pool.clone(),
            node: node.clone(),
        };
        let (outcomes, outcome_writer) =
            OutcomeWriter::start(outcome_kind, health.clone(), close.clone());
        let keeper = node::start_keeper(
            pool.clone(),
            health.clone(),
            node.clone(),
            background.clone(),
        );
        let wakeups = Arc::new(tokio::sync::watch::Sender::new(()));
        let listener = listen::start(
            settings.clone(),
            vec![queue_subscription(node.clone(), wakeups.clone())],
            background.clone(),
        );
        tracing::info!(database = %target, node = %node.id, "PostgreSQL store open");
        metrics::gauge!("switchyard_node_info", "node" => node.id.clone()).set(1.0);
        Ok(Self {
            pool,
            health,
            ingest,
            outcomes,
            node,
            wakeups,
            close,
            background,
            tasks: Arc::new(Mutex::new(Tasks {
                writer: Some(writer),
                outcome_writer: Some(outcome_writer),
                keeper: Some(keeper),
                listener: Some(listener),
            })),
            target: target.into(),
        })
    }

    /// This node's id (`node_…`), unique per start.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Applies pending migrations and returns what it did, without opening
    /// the store (`switchyard migrate`).
    pub async fn migrate(
        settings: &PostgresConfig,
    ) -> Result<(MigrationReport, String), OpenError> {
        let (pool, target) = connect::pool(settings)?;
        let report = migrate_with(&pool, &target).await?;
        pool.close();
        Ok((report, target))
    }

    /// Where the store points, without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Commits the ingests already queued and refuses later writes
    /// ([`StoreError::WriterStopped`]); reads go on working. Then gives up
    /// this node's leases (the other nodes are told and take the
    /// connections over at once) and removes its `nodes` row. The server
    /// closes the store after the delivery engine drained, so no attempt
    /// of this node is left to record. The pool's connections close with
    /// the last clone of the store.
    pub async fn close(&self) {
        self.close.cancel();
        let tasks = std::mem::take(
            &mut *self
                .tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if let Some(writer) = tasks.writer
            && let Err(error) = writer.await
        {
            tracing::error!(%error, "the PostgreSQL ingest writer failed");
        }
        if let Some(writer) = tasks.outcome_writer
            && let Err(error) = writer.await
        {
            tracing::error!(%error, "the PostgreSQL outcome writer failed");
        }
        self.background.cancel();
        let Some(keeper) = tasks.keeper else {
            return; // Closed before.
        };
        // The keeper must have stopped: it would register the node again.
        if let Err(error) = keeper.await {
            tracing::error!(%error, "the PostgreSQL lease keeper failed");
        }
        if let Some(listener) = tasks.listener {
            let _ = listener.await;
        }
        match node::release(&self.pool, &self.node).await {
            Ok(released) => {
                tracing::info!(node = %self.node.id, released, "node left the database")
            }
            Err(error) => tracing::warn!(
                %error,
                node = %self.node.id,
                "cannot release this node's leases; they lapse on their own"
            ),
        }
    }

    pub fn is_writable(&self) -> bool {
        self.health.is_writable()
    }

    pub fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.health.writable()
    }

    pub async fn create_workspace(&self, new: NewWorkspace) -> Result<(), StoreError> {
        in_txn!(self, |txn| workspaces::create(&txn, &new))
    }

    pub async fn delete_workspace(&self, id: WorkspaceId) -> Result<bool, StoreError> {
        in_txn!(self, |txn| workspaces::delete(&txn, id))
    }

    pub async fn purge_deleted(&self, budget: usize) -> Result<bool, StoreError> {
        in_txn!(self, |txn| workspaces::purge_step(&txn, budget))
    }

    pub async fn pending_purges(&self) -> Result<u64, StoreError> {
        read!(self, |client| workspaces::pending_purges(client))
    }

    pub async fn purge_old_events(
        &self,
        cutoff_ms: u64,
        from: Option<RetentionCursor>,
        budget: usize,
    ) -> Result<RetentionStep, StoreError> {
        in_txn!(self, |txn| retention::purge_old_events(
            &txn, cutoff_ms, from, budget
        ))
    }

    pub async fn rotate_keys(
        &self,
        id: WorkspaceId,
        publishable_key_hash: KeyHash,
        secret_key_hash: KeyHash,
        meshes_key_hash: KeyHash,
    ) -> Result<Option<Workspace>, StoreError> {
        let keys = workspaces::Keys {
            publishable: &publishable_key_hash,
            secret: &secret_key_hash,
            meshes: &meshes_key_hash,
        };
        in_txn!(self, |txn| workspaces::rotate_keys(&txn, id, &keys))
    }

    /// Resolves once the group holding this batch has committed.
    pub async fn ingest(&self, batch: IngestBatch) -> Result<IngestOutcome, StoreError> {
        if self.close.is_cancelled() {
            return Err(StoreError::WriterStopped);
        }
        if !self.is_writable() {
            return Err(StoreError::Unavailable(
                "PostgreSQL is unreachable".to_string(),
            ));
        }
        self.ingest.submit(batch).await
    }

    pub async fn purge_idempotency_keys(&self, now_ms: u64) -> Result<usize, StoreError> {
        in_txn!(self, |txn| events::purge_idempotency_keys(&txn, now_ms))
    }

    pub async fn purge_noise_state(&self, now_ms: u64) -> Result<usize, StoreError> {
        in_txn!(self, |txn| misc::purge_noise_state(&txn, now_ms))
    }

    pub async fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        read!(self, |client| workspaces::list(client))
    }

    pub async fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        read!(self, |client| workspaces::get(client, id))
    }

    pub async fn key(&self, hash: KeyHash) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError> {
        read!(self, |client| workspaces::key(client, &hash))
    }

    pub async fn event(
        &self,
        workspace: WorkspaceId,
        id: EventId,
    ) -> Result<Option<Event>, StoreError> {
        read!(self, |client| events::get(client, workspace, id))
    }

    pub async fn events(
        &self,
        workspace: WorkspaceId,
        query: EventQuery,
    ) -> Result<EventPage, StoreError> {
        read!(self, |client| events::list(client, workspace, &query))
    }

    pub async fn create_connection(&self, connection: Connection) -> Result<(), StoreError> {
        in_txn!(self, |txn| connections::create(&txn, &connection))
    }

    pub async fn update_connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
        patch: ConnectionPatch,
    ) -> Result<PatchOutcome, StoreError> {
        in_txn!(self, |txn| connections::update(&txn, workspace, id, &patch))
    }

    pub async fn delete_connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
    ) -> Result<DeleteConnection, StoreError> {
        in_txn!(self, |txn| connections::delete(&txn, workspace, id))
    }

    pub async fn connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, StoreError> {
        read!(self, |client| connections::get(client, workspace, id))
    }

    pub async fn connections(&self, workspace: WorkspaceId) -> Result<Vec<Connection>, StoreError> {
        read!(self, |client| connections::list(client, workspace))
    }

    pub async fn put_rule(&self, rule: Rule, update: bool) -> Result<PutRule, StoreError> {
        in_txn!(self, |txn| rules::put(&txn, &rule, update))
    }

    pub async fn delete_rule(
        &self,
        workspace: WorkspaceId,
        id: RuleId,
    ) -> Result<bool, StoreError> {
        in_txn!(self, |txn| rules::delete(&txn, workspace, id))
    }

    pub async fn rule(
        &self,
        workspace: WorkspaceId,
        id: RuleId,
    ) -> Result<Option<Rule>, StoreError> {
        read!(self, |client| rules::get(client, workspace, id))
    }

    pub async fn rules(&self, workspace: WorkspaceId) -> Result<Vec<Rule>, StoreError> {
        read!(self, |client| rules::list(client, workspace))
    }

    pub async fn delivery(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        snapshot!(self, |txn| deliveries::get_with_attempts(
            &*txn, workspace, id
        ))
    }

    pub async fn deliveries(
        &self,
        workspace: WorkspaceId,
        query: DeliveryQuery,
    ) -> Result<DeliveryPage, StoreError> {
        read!(self, |client| deliveries::list(client, workspace, &query))
    }

    pub async fn delivery_context(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryContext>, StoreError> {
        snapshot!(self, |txn| deliveries::context(&txn, workspace, id))
    }

    /// Records the attempt only while this node holds its connection's
    /// lease; `None` (nothing written) once it does not. Group-committed
    /// with the other outcomes waiting (`outcomes.rs`).
    pub async fn record_attempt(
        &self,
        outcome: AttemptOutcome,
    ) -> Result<Option<Delivery>, StoreError> {
        if self.close.is_cancelled() {
            return Err(StoreError::WriterStopped);
        }
        let delivery_id = outcome.delivery_id;
        let recorded = self.outcomes.submit(outcome).await?;
        Ok(match recorded {
            deliveries::Recorded::Written(delivery) => Some(delivery),
            deliveries::Recorded::Gone => None,
            deliveries::Recorded::LeaseLost(connection) => {
                self.node.forget(connection);
                tracing::warn!(
                    node = %self.node.id,
                    %connection,
                    delivery = %delivery_id,
                    "lease lost: another node delivers this connection now; the outcome was not recorded"
                );
                metrics::counter!("switchyard_lease_lost_total").increment(1);
                None
            }
        })
    }

    pub async fn requeue(
        &self,
        workspace: WorkspaceId,
        which: Requeue,
        now_ms: u64,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let node = &self.node;
        let (entries, leases) = in_txn!(self, |txn| deliveries::requeue(
            &txn, node, workspace, &which, now_ms
        ))?;
        for (connection, until) in leases.mine {
            self.node.hold([connection], until);
        }
        Ok(entries)
    }

    /// Claims a fair share of the unowned connections with entries due and
    /// returns the heads of those this node holds.
    pub async fn queue_heads(&self) -> Result<QueueHeads, StoreError> {
        let node = &self.node;
        let now = now_ms();
        let claimed = in_txn!(self, |txn| queue::claim_and_heads(&txn, node, now))?;
        for connection in claimed.elsewhere {
            self.node.forget(connection);
        }
        for (connection, until) in claimed.held {
            self.node.hold([connection], until);
        }
        Ok(claimed.heads)
    }

    /// Reads only connections this node holds; the others answer empty.
    pub async fn queue_rows(&self, reads: Vec<LaneRead>) -> Result<Vec<LaneRows>, StoreError> {
        let now = now_ms();
        let mine: Vec<usize> = (0..reads.len())
            .filter(|index| self.node.holds(reads[*index].connection_id, now))
            .collect();
        let wanted: Vec<LaneRead> = mine.iter().map(|index| reads[*index]).collect();
        let found = snapshot!(self, |txn| queue::queue_rows(&*txn, &wanted))?;
        let mut answers = vec![LaneRows::default(); reads.len()];
        for (index, rows) in mine.into_iter().zip(found) {
            answers[index] = rows;
        }
        Ok(answers)
    }

    pub async fn queue_len(&self) -> Result<u64, StoreError> {
        read!(self, |client| queue::queue_len(client))
    }

    pub fn may_deliver(&self, connection: ConnectionId) -> bool {
        self.node.may_start_attempt(connection, now_ms())
    }

    pub async fn drop_stale_queue_entry(&self, entry: QueueEntry) -> Result<bool, StoreError> {
        in_txn!(self, |txn| deliveries::drop_stale_queue_entry(&txn, &entry))
    }

    pub async fn put_oauth_state(&self, nonce: u128, expires_at_ms: u64) -> Result<(), StoreError> {
        in_txn!(self, |txn| misc::put_oauth_state(
            &txn,
            nonce,
            expires_at_ms
        ))
    }

    pub async fn consume_oauth_state(&self, nonce: u128, now_ms: u64) -> Result<bool, StoreError> {
        in_txn!(self, |txn| misc::consume_oauth_state(&txn, nonce, now_ms))
    }

    pub async fn purge_oauth_states(&self, now_ms: u64) -> Result<usize, StoreError> {
        in_txn!(self, |txn| misc::purge_oauth_states(&txn, now_ms))
    }

    pub async fn use_launch_token(
        &self,
        digest: u128,
        expires_at_ms: u64,
    ) -> Result<bool, StoreError> {
        in_txn!(self, |txn| misc::use_launch_token(
            &txn,
            digest,
            expires_at_ms
        ))
    }

    pub async fn purge_used_launch_tokens(&self, now_ms: u64) -> Result<usize, StoreError> {
        in_txn!(self, |txn| misc::purge_used_launch_tokens(&txn, now_ms))
    }

    pub async fn slack_thread(&self, key: ThreadKey) -> Result<Option<String>, StoreError> {
        read!(self, |client| misc::slack_thread(client, &key))
    }

    pub async fn save_slack_thread(
        &self,
        key: ThreadKey,
        ts: String,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        in_txn!(self, |txn| misc::save_slack_thread(&txn, &key, &ts, now_ms))
    }

    pub async fn purge_slack_threads(&self, older_than_ms: u64) -> Result<usize, StoreError> {
        in_txn!(self, |txn| misc::purge_slack_threads(&txn, older_than_ms))
    }

    /// What the other nodes change, polled every 250 ms (`changes.rs`);
    /// each call starts a feed of its own, which stops when dropped.
    pub fn workspace_changes(&self) -> tokio::sync::mpsc::Receiver<super::CacheChange> {
        changes::follow(self.pool.clone(), self.health.clone())
    }

    /// A lock no other node holds at the same time (`locks.rs`).
    pub async fn shared_lock(
        &self,
        lock: SharedLock,
        wait: std::time::Duration,
    ) -> Result<SharedLockGuard, StoreError> {
        locks::take(&self.pool, lock, wait)
            .await
            .map_err(|error| self.health.observe(error))
    }
}

/// Wakes this node's scheduler when another node queued entries for a
/// connection it holds, or asks every node to look.
fn queue_subscription(
    node: Arc<Node>,
    wakeups: Arc<tokio::sync::watch::Sender<()>>,
) -> listen::Subscription {
    listen::Subscription {
        channel: queue::QUEUE_CHANNEL,
        on_notify: Box::new(move |payload| {
            let now = now_ms();
            let mine = match queue::notified_connections(payload) {
                Some(connections) => connections.iter().any(|c| node.holds(*c, now)),
                None => true,
            };
            if mine {
                wakeups.send_replace(());
            }
        }),
    }
}

async fn migrate_with(pool: &Pool, target: &str) -> Result<MigrationReport, OpenError> {
    let mut client = pool.get().await.map_err(|error| OpenError::Unreachable {
        target: target.to_string(),
        source: error.into(),
    })?;
    let client: &mut tokio_postgres::Client = &mut client;
    migrate::migrate(client)
        .await
        .map_err(|source| OpenError::Migrate {
            target: target.to_string(),
            source,
        })
}

/// The trait is thin delegation: each call clones the (cheap) store into a
/// `'static` future that runs the inherent method of the same name.
macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {$(
        fn $name(&self, $($arg: $ty),*) -> StoreFuture<$out> {
            let store = self.clone();
            Box::pin(async move { PgStore::$name(&store, $($arg),*).await })
        }
    )*};
}

impl Store for PgStore {
    delegate! {
        create_workspace(new: NewWorkspace) -> ();
        delete_workspace(id: WorkspaceId) -> bool;
        purge_deleted(budget: usize) -> bool;
        pending_purges() -> u64;
        purge_old_events(cutoff_ms: u64, from: Option<RetentionCursor>, budget: usize)
            -> RetentionStep;
        rotate_keys(id: WorkspaceId, publishable: KeyHash, secret: KeyHash, meshes: KeyHash)
            -> Option<Workspace>;
        ingest(batch: IngestBatch) -> IngestOutcome;
        purge_idempotency_keys(now_ms: u64) -> usize;
        purge_noise_state(now_ms: u64) -> usize;
        workspaces() -> Vec<Workspace>;
        workspace(id: WorkspaceId) -> Option<Workspace>;
        key(hash: KeyHash) -> Option<(WorkspaceId, KeyKind)>;
        event(workspace: WorkspaceId, id: EventId) -> Option<Event>;
        events(workspace: WorkspaceId, query: EventQuery) -> EventPage;
        create_connection(connection: Connection) -> ();
        update_connection(workspace: WorkspaceId, id: ConnectionId, patch: ConnectionPatch)
            -> PatchOutcome;
        delete_connection(workspace: WorkspaceId, id: ConnectionId) -> DeleteConnection;
        connection(workspace: WorkspaceId, id: ConnectionId) -> Option<Connection>;
        connections(workspace: WorkspaceId) -> Vec<Connection>;
        put_rule(rule: Rule, update: bool) -> PutRule;
        delete_rule(workspace: WorkspaceId, id: RuleId) -> bool;
        rule(workspace: WorkspaceId, id: RuleId) -> Option<Rule>;
        rules(workspace: WorkspaceId) -> Vec<Rule>;
        delivery(workspace: WorkspaceId, id: DeliveryId) -> Option<(Delivery, Vec<Attempt>)>;
        deliveries(workspace: WorkspaceId, query: DeliveryQuery) -> DeliveryPage;
        delivery_context(workspace: WorkspaceId, id: DeliveryId) -> Option<DeliveryContext>;
        record_attempt(outcome: AttemptOutcome) -> Option<Delivery>;
        requeue(workspace: WorkspaceId, which: Requeue, now_ms: u64) -> Vec<QueueEntry>;
        queue_heads() -> QueueHeads;
        queue_rows(reads: Vec<LaneRead>) -> Vec<LaneRows>;
        queue_len() -> u64;
        drop_stale_queue_entry(entry: QueueEntry) -> bool;
        put_oauth_state(nonce: u128, expires_at_ms: u64) -> ();
        consume_oauth_state(nonce: u128, now_ms: u64) -> bool;
        purge_oauth_states(now_ms: u64) -> usize;
        use_launch_token(digest: u128, expires_at_ms: u64) -> bool;
        purge_used_launch_tokens(now_ms: u64) -> usize;
        slack_thread(key: ThreadKey) -> Option<String>;
        save_slack_thread(key: ThreadKey, ts: String, now_ms: u64) -> ();
        purge_slack_threads(older_than_ms: u64) -> usize;
    }

    /// PostgreSQL is backed up with its own tools (`pg_dump`, base
    /// backups, replication).
    fn backup_source(&self) -> Option<Arc<dyn BackupSource>> {
        None
    }

    fn is_writable(&self) -> bool {
        PgStore::is_writable(self)
    }

    fn may_deliver(&self, connection: ConnectionId) -> bool {
        PgStore::may_deliver(self, connection)
    }

    fn queue_wakeups(&self) -> Option<tokio::sync::watch::Receiver<()>> {
        Some(self.wakeups.subscribe())
    }

    fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        PgStore::writable(self)
    }

    fn close(&self) -> StoreFuture<()> {
        let store = self.clone();
        Box::pin(async move {
            PgStore::close(&store).await;
            Ok(())
        })
    }

    fn workspace_changes(&self) -> Option<tokio::sync::mpsc::Receiver<super::CacheChange>> {
        Some(PgStore::workspace_changes(self))
    }

    fn shared_lock(
        &self,
        lock: SharedLock,
        wait: std::time::Duration,
    ) -> StoreFuture<Option<SharedLockGuard>> {
        let store = self.clone();
        Box::pin(async move { PgStore::shared_lock(&store, lock, wait).await.map(Some) })
    }
}
