//! The redb implementation of [`Store`]. Each submodule holds the write ops
//! and reads of one resource; this file owns the database handle, the
//! write coordinator and the trait impl that delegates to them.

mod backup;
mod compact;
mod connections;
mod deliveries;
mod events;
mod handle;
mod noise;
mod retention;
mod rules;
mod scope;
mod tables;
mod threads;
mod workspaces;

use super::writer::{WriteOp, Writer, WriterThread};
use super::{
    AttemptOutcome, BackupStats, ConnectionPatch, DeleteConnection, DeliveryContext, DeliveryPage,
    DeliveryQuery, EventPage, EventQuery, IngestBatch, IngestOutcome, KeyHash, LaneRead, LaneRows,
    NewWorkspace, PatchOutcome, PutRule, QueueEntry, QueueHeads, Requeue, RetentionCursor,
    RetentionStep, Store, StoreError, StoreFuture, StoreOptions,
};
use crate::model::{
    Attempt, Connection, ConnectionId, Delivery, DeliveryId, Event, EventId, KeyKind, Rule, RuleId,
    ThreadKey, Workspace, WorkspaceId,
};
pub use compact::{CompactError, CompactReport, compact};
pub(crate) use handle::DbSlot;
use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTableMetadata, WriteTransaction,
};
pub use scope::WriteScope;
use std::path::Path;
use std::sync::Arc;

/// Dropping the last handle lets every queued write commit, then closes the
/// file.
pub struct RedbStore {
    /// The database handle, replaced after a storage failure (`handle.rs`).
    slot: Arc<DbSlot>,
    writable: tokio::sync::watch::Receiver<bool>,
    /// `None` only while dropping.
    writer: Option<Writer>,
    writer_thread: Option<WriterThread>,
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its write coordinator.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let slot = Arc::new(DbSlot::open(path, options)?);
        let txn = slot.get()?.begin_write()?;
        tables::create_all(&txn)?;
        let moved = deliveries::migrate_legacy_queue(&txn)?;
        txn.commit()?;
        if moved > 0 {
            tracing::info!(
                entries = moved,
                "queue table moved to its per-connection layout"
            );
        }
        let (writer, writer_thread) = Writer::start(slot.clone()).map_err(|error| {
            StoreError::Unavailable(format!("cannot start the writer: {error}"))
        })?;
        Ok(Arc::new(Self {
            slot,
            writable: writer.writable(),
            writer: Some(writer),
            writer_thread: Some(writer_thread),
        }))
    }

    fn write<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.write_scoped(move |scope| op(scope.txn()))
    }

    fn write_scoped<T: Send + 'static>(
        &self,
        op: impl Fn(&mut WriteScope<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let writer = self.writer.clone();
        let op: WriteOp<T> = Box::new(op);
        Box::pin(async move {
            match writer {
                Some(writer) => writer.write(op).await,
                None => Err(StoreError::WriterStopped),
            }
        })
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.slot.get()?.begin_read()?)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit.
        self.writer = None;
        if let Some(thread) = self.writer_thread.take() {
            thread.join();
        }
    }
}

impl Store for RedbStore {
    fn create_workspace(&self, new: NewWorkspace) -> StoreFuture<()> {
        self.write(move |txn| workspaces::create(txn, &new))
    }

    fn delete_workspace(&self, id: WorkspaceId) -> StoreFuture<bool> {
        self.write(move |txn| workspaces::delete(txn, id))
    }

    fn purge_deleted(&self, budget: usize) -> StoreFuture<bool> {
        self.write(move |txn| workspaces::purge_step(txn, budget))
    }

    fn pending_purges(&self) -> Result<u64, StoreError> {
        workspaces::pending_purges(&self.read()?)
    }

    fn purge_old_events(
        &self,
        cutoff_ms: u64,
        from: Option<RetentionCursor>,
        budget: usize,
    ) -> StoreFuture<RetentionStep> {
        self.write(move |txn| retention::purge_old_events(txn, cutoff_ms, from, budget))
    }

    fn backup(&self, target: std::fs::File) -> Result<BackupStats, StoreError> {
        backup::copy(&self.read()?, target)
    }

    fn rotate_keys(
        &self,
        id: WorkspaceId,
        publishable_key_hash: KeyHash,
        secret_key_hash: KeyHash,
        meshes_key_hash: KeyHash,
    ) -> StoreFuture<Option<Workspace>> {
        self.write(move |txn| {
            workspaces::rotate_keys(
                txn,
                id,
                &publishable_key_hash,
                &secret_key_hash,
                &meshes_key_hash,
            )
        })
    }

    fn ingest(&self, batch: IngestBatch) -> StoreFuture<IngestOutcome> {
        let prepared = Arc::new(events::PreparedIngest::new(batch));
        let for_writer = prepared.clone();
        let stored =
            self.write_scoped(move |scope| events::ingest(scope.ingest_tables()?, &for_writer));
        Box::pin(async move {
            let outcome = stored.await;
            // The last reference goes here, so the batch is freed on this
            // thread rather than on the writer's.
            drop(prepared);
            outcome
        })
    }

    fn purge_idempotency_keys(&self, now_ms: u64) -> StoreFuture<usize> {
        self.write(move |txn| events::purge_idempotency_keys(txn, now_ms))
    }

    fn purge_noise_state(&self, now_ms: u64) -> StoreFuture<usize> {
        self.write(move |txn| noise::purge_expired(txn, now_ms))
    }

    fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        workspaces::list(&self.read()?)
    }

    fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        workspaces::get(&self.read()?, id)
    }

    fn key(&self, hash: &KeyHash) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError> {
        workspaces::key(&self.read()?, hash)
    }

    fn event(&self, workspace: WorkspaceId, id: EventId) -> Result<Option<Event>, StoreError> {
        events::get(&self.read()?, workspace, id)
    }

    fn events(&self, workspace: WorkspaceId, query: &EventQuery) -> Result<EventPage, StoreError> {
        events::list(&self.read()?, workspace, query)
    }

    fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.writable.clone()
    }

    fn create_connection(&self, connection: Connection) -> StoreFuture<()> {
        self.write(move |txn| connections::create(txn, &connection))
    }

    fn update_connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
        patch: ConnectionPatch,
    ) -> StoreFuture<PatchOutcome> {
        self.write(move |txn| connections::update(txn, workspace, id, &patch))
    }

    fn delete_connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
    ) -> StoreFuture<DeleteConnection> {
        self.write(move |txn| connections::delete(txn, workspace, id))
    }

    fn connection(
        &self,
        workspace: WorkspaceId,
        id: ConnectionId,
    ) -> Result<Option<Connection>, StoreError> {
        connections::get(&self.read()?, workspace, id)
    }

    fn connections(&self, workspace: WorkspaceId) -> Result<Vec<Connection>, StoreError> {
        connections::list(&self.read()?, workspace)
    }

    fn put_rule(&self, rule: Rule, update: bool) -> StoreFuture<PutRule> {
        self.write(move |txn| rules::put(txn, &rule, update))
    }

    fn delete_rule(&self, workspace: WorkspaceId, id: RuleId) -> StoreFuture<bool> {
        self.write(move |txn| rules::delete(txn, workspace, id))
    }

    fn rule(&self, workspace: WorkspaceId, id: RuleId) -> Result<Option<Rule>, StoreError> {
        rules::get(&self.read()?, workspace, id)
    }

    fn rules(&self, workspace: WorkspaceId) -> Result<Vec<Rule>, StoreError> {
        rules::list(&self.read()?, workspace)
    }

    fn delivery(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
        deliveries::get_with_attempts(&self.read()?, workspace, id)
    }

    fn deliveries(
        &self,
        workspace: WorkspaceId,
        query: &DeliveryQuery,
    ) -> Result<DeliveryPage, StoreError> {
        deliveries::list(&self.read()?, workspace, query)
    }

    fn delivery_context(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> Result<Option<DeliveryContext>, StoreError> {
        deliveries::context(&self.read()?, workspace, id)
    }

    fn record_attempt(&self, outcome: AttemptOutcome) -> StoreFuture<Option<Delivery>> {
        self.write(move |txn| deliveries::record_attempt(txn, &outcome))
    }

    fn requeue(
        &self,
        workspace: WorkspaceId,
        which: Requeue,
        now_ms: u64,
    ) -> StoreFuture<Vec<QueueEntry>> {
        let Requeue::Matching {
            status,
            since_ms,
            limit,
        } = which
        else {
            return self.write(move |txn| deliveries::requeue(txn, workspace, &which, now_ms));
        };
        // Scan in a read snapshot on the blocking pool, then requeue the
        // ids found (each checked again) in a short write.
        let slot = self.slot.clone();
        let writer = self.writer.clone();
        Box::pin(async move {
            let ids = tokio::task::spawn_blocking(move || {
                deliveries::matching_in_snapshot(
                    &slot.get()?.begin_read()?,
                    workspace.0,
                    status,
                    since_ms,
                    limit,
                )
            })
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))??;
            let listed = Requeue::Listed { status, ids };
            let op: WriteOp<Vec<QueueEntry>> =
                Box::new(move |scope| deliveries::requeue(scope.txn(), workspace, &listed, now_ms));
            match writer {
                Some(writer) => writer.write(op).await,
                None => Err(StoreError::WriterStopped),
            }
        })
    }

    fn queue_heads(&self) -> Result<QueueHeads, StoreError> {
        deliveries::queue_heads(&self.read()?)
    }

    fn queue_rows(&self, reads: &[LaneRead]) -> Result<Vec<LaneRows>, StoreError> {
        deliveries::queue_rows(&self.read()?, reads)
    }

    fn queue_len(&self) -> Result<u64, StoreError> {
        Ok(self.read()?.open_table(tables::QUEUE)?.len()?)
    }

    fn drop_stale_queue_entry(&self, entry: QueueEntry) -> StoreFuture<bool> {
        self.write(move |txn| deliveries::drop_stale_queue_entry(txn, &entry))
    }

    fn put_oauth_state(&self, nonce: u128, expires_at_ms: u64) -> StoreFuture<()> {
        self.write(move |txn| {
            txn.open_table(tables::OAUTH_STATES)?
                .insert(nonce, expires_at_ms)?;
            Ok(())
        })
    }

    fn consume_oauth_state(&self, nonce: u128, now_ms: u64) -> StoreFuture<bool> {
        self.write(move |txn| {
            let mut table = txn.open_table(tables::OAUTH_STATES)?;
            let expires_at = table.remove(nonce)?.map(|expires_at| expires_at.value());
            Ok(expires_at.is_some_and(|expires_at| now_ms < expires_at))
        })
    }

    fn purge_oauth_states(&self, now_ms: u64) -> StoreFuture<usize> {
        self.write(move |txn| {
            let mut table = txn.open_table(tables::OAUTH_STATES)?;
            let before = table.len()?;
            table.retain(|_, expires_at| expires_at > now_ms)?;
            Ok((before - table.len()?) as usize)
        })
    }

    fn use_launch_token(&self, digest: u128, expires_at_ms: u64) -> StoreFuture<bool> {
        // Check and mark in one write: the writer runs ops one at a time, so
        // two exchanges racing cannot both see the token unused.
        self.write(move |txn| {
            let mut table = txn.open_table(tables::USED_LAUNCH_TOKENS)?;
            let first_use = table.insert(digest, expires_at_ms)?.is_none();
            Ok(first_use)
        })
    }

    fn slack_thread(&self, key: &ThreadKey) -> Result<Option<String>, StoreError> {
        threads::get(&self.read()?, key)
    }

    fn save_slack_thread(&self, key: ThreadKey, ts: String, now_ms: u64) -> StoreFuture<()> {
        self.write(move |txn| threads::put(txn, &key, &ts, now_ms))
    }

    fn purge_slack_threads(&self, older_than_ms: u64) -> StoreFuture<usize> {
        self.write(move |txn| threads::purge_older_than(txn, older_than_ms))
    }

    fn purge_used_launch_tokens(&self, now_ms: u64) -> StoreFuture<usize> {
        self.write(move |txn| {
            let mut table = txn.open_table(tables::USED_LAUNCH_TOKENS)?;
            let before = table.len()?;
            table.retain(|_, expires_at| expires_at > now_ms)?;
            Ok((before - table.len()?) as usize)
        })
    }
}

/// Decodes an optional stored value.
/// Walks a workspace's `(workspace, id)` rows newest first, from below
/// `before`, handing each id and value to `visit` until it returns false.
/// At most `budget` rows are examined, so a filter that matches little
/// cannot walk the whole workspace: when the budget runs out, the id of the
/// last row examined comes back as the cursor to go on from.
fn scan_newest_first(
    table: &ReadOnlyTable<(u128, u128), &'static [u8]>,
    workspace: u128,
    before: Option<u128>,
    budget: usize,
    mut visit: impl FnMut(u128, &[u8]) -> Result<bool, StoreError>,
) -> Result<Option<u128>, StoreError> {
    let upper = before.unwrap_or(u128::MAX);
    let mut last_examined = None;
    let rows = table.range((workspace, 0)..(workspace, upper))?.rev();
    for (scanned, row) in rows.enumerate() {
        if scanned == budget {
            return Ok(last_examined);
        }
        let (key, value) = row?;
        let id = key.value().1;
        last_examined = Some(id);
        if !visit(id, value.value())? {
            break;
        }
    }
    Ok(None)
}

fn decode<R: super::codec::Record>(
    guard: Option<redb::AccessGuard<'_, &[u8]>>,
) -> Result<Option<R>, StoreError> {
    guard
        .map(|bytes| R::decode(bytes.value()))
        .transpose()
        .map_err(Into::into)
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // Serialising a Value into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn json_value(bytes: &[u8], what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt(format!("{what}: {error}")))
}

#[cfg(test)]
mod tests {
    use crate::store::{RedbStore, Store, StoreOptions};

    #[tokio::test]
    async fn a_launch_token_is_used_once_and_forgotten_after_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb"), StoreOptions::default()).unwrap();
        assert!(store.use_launch_token(7, 1_000).await.unwrap());
        assert!(
            !store.use_launch_token(7, 1_000).await.unwrap(),
            "second use"
        );
        assert!(store.use_launch_token(8, 5_000).await.unwrap());
        assert_eq!(store.purge_used_launch_tokens(1_000).await.unwrap(), 1);
        assert!(
            !store.use_launch_token(8, 5_000).await.unwrap(),
            "an unexpired one is kept"
        );
        assert_eq!(store.purge_used_launch_tokens(5_000).await.unwrap(), 1);
    }
}
