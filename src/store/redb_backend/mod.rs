//! The redb implementation of [`Store`]. Each submodule holds the write ops
//! and reads of one resource; this file owns the database handle, the
//! write coordinator (`writer.rs`) and the trait impl that delegates to
//! them. Point reads run inline and answer with a ready future (a read
//! transaction is an MVCC snapshot: no lock, no I/O when cached); scans run
//! on tokio's blocking pool so they never hold up a runtime worker.

mod backup;
mod compact;
mod connections;
mod deferred;
mod deliveries;
mod error;
mod events;
mod export;
mod handle;
mod import;
mod noise;
mod recent;
mod retention;
mod rules;
mod scope;
mod tables;
mod threads;
mod wal;
mod workspaces;
mod writer;

use super::{
    AttemptOutcome, BackupSource, BackupStats, ConnectionPatch, DeleteConnection, DeliveryContext,
    DeliveryPage, DeliveryQuery, EventPage, EventQuery, IngestBatch, IngestOutcome, KeyHash,
    LaneRead, LaneRows, NewWorkspace, PatchOutcome, PutRule, QueueEntry, QueueHeads, Requeue,
    RetentionCursor, RetentionStep, Store, StoreError, StoreFuture, StoreOptions,
};
use crate::model::{
    Attempt, Connection, ConnectionId, Delivery, DeliveryId, Event, EventId, KeyKind, Rule, RuleId,
    ThreadKey, Workspace, WorkspaceId,
};
pub use compact::{CompactError, CompactReport, compact};
pub use export::{ExportError, ExportInfo, export};
pub(crate) use handle::DbSlot;
pub use import::{RedbImportError, import};
use recent::RecentOutcomes;
use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTableMetadata, WriteTransaction,
};
pub use scope::WriteScope;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
pub use wal::WalOptions;
use writer::{WeakWriter, WriteOp, Writer, WriterThread};

/// [`Store::close`], or dropping the last handle, lets every queued write
/// commit and stops the write coordinator; the file closes with the last
/// handle.
pub struct RedbStore {
    /// The database handle, replaced after a storage failure (`handle.rs`).
    slot: Arc<DbSlot>,
    writable: tokio::sync::watch::Receiver<bool>,
    /// `None` only while dropping.
    writer: Option<Writer>,
    /// Taken by whichever of close and drop comes first.
    writer_thread: Mutex<Option<WriterThread>>,
    /// Ingests and attempt outcomes go through the write-ahead log.
    logged: bool,
    /// Outcomes a read begun now might not see yet (`recent.rs`).
    recent: Arc<RecentOutcomes>,
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its write coordinator.
    pub fn open(path: &Path, options: StoreOptions) -> Result<Arc<Self>, StoreError> {
        let wal_options = options.wal;
        let faults = options.faults.clone();
        let slot = Arc::new(DbSlot::open(path, options)?);
        let db = slot.get()?;
        let txn = db.begin_write()?;
        tables::create_all(&txn)?;
        let moved = deliveries::migrate_legacy_queue(&txn)?;
        txn.commit()?;
        if moved > 0 {
            tracing::info!(
                entries = moved,
                "queue table moved to its per-connection layout"
            );
        }
        let wal = wal::Wal::recover(&db, path, wal_options)?.map(|wal| wal.with_faults(faults));
        let logged = wal.is_some();
        drop(db);
        let (writer, writer_thread) = Writer::start(slot.clone(), wal).map_err(|error| {
            StoreError::Unavailable(format!("cannot start the writer: {error}"))
        })?;
        Ok(Arc::new(Self {
            slot,
            writable: writer.writable(),
            writer: Some(writer),
            writer_thread: Mutex::new(Some(writer_thread)),
            logged,
            recent: Arc::default(),
        }))
    }

    fn write<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.write_scoped(move |scope| op(scope.txn()?))
    }

    fn write_scoped<T: Send + 'static>(
        &self,
        op: impl Fn(&mut WriteScope<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        self.write_logged(op, None)
    }

    /// A write the write-ahead log carries as `record` (`wal.rs`).
    fn write_logged<T: Send + 'static>(
        &self,
        op: impl Fn(&mut WriteScope<'_>) -> Result<T, StoreError> + Send + 'static,
        record: Option<Vec<u8>>,
    ) -> StoreFuture<T> {
        let writer = self.writer.clone();
        let op: WriteOp<T> = Box::new(op);
        Box::pin(async move {
            match writer {
                Some(writer) => writer.write_logged(op, record).await,
                None => Err(StoreError::WriterStopped),
            }
        })
    }

    /// A point read, run now: cheaper than handing it to another thread.
    /// While the writer holds answered writes no commit holds yet, in the
    /// snapshot it takes once it has committed them (`writer.rs`).
    fn read_now<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        match self
            .writer
            .as_ref()
            .filter(|writer| writer.holds_unpublished())
        {
            None => Box::pin(std::future::ready(self.read_latest(read))),
            Some(writer) => {
                let writer = writer.clone();
                let slot = self.slot.clone();
                Box::pin(async move {
                    match read_snapshot(Some(writer)).await? {
                        Some(snapshot) => read(&snapshot),
                        None => read(&slot.get()?.begin_read()?),
                    }
                })
            }
        }
    }

    /// A read that may scan many rows, run on the blocking pool (in the
    /// writer's snapshot, as [`RedbStore::read_now`]).
    fn read_blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let writer = self.writer.clone();
        let slot = self.slot.clone();
        Box::pin(async move { read_in(slot, read_snapshot(writer).await?, read).await })
    }

    /// A read of the queue table, on the blocking pool, in a snapshot the
    /// writer takes once it has written the rows it holds back
    /// (`deferred.rs`). A writer busy for longer than
    /// `QUEUE_SNAPSHOT_WAIT` (a stalled disk) does not hold the reader
    /// up: it reads the table as last committed, where a row held back,
    /// or one an answered write in the open transaction moved, shows at a
    /// later read (the scheduler checks each entry against its delivery
    /// before an attempt).
    fn read_queue<T: Send + 'static>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<T> {
        let writer = self.writer.clone();
        let slot = self.slot.clone();
        Box::pin(async move {
            let snapshot = match writer {
                Some(writer) => tokio::time::timeout(QUEUE_SNAPSHOT_WAIT, writer.queue_snapshot())
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            read_in(slot, snapshot, read).await
        })
    }

    /// A read in a read transaction begun now: it sees the last commit.
    fn read_latest<T>(
        &self,
        read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        read(&self.slot.get()?.begin_read()?)
    }

    fn take_writer_thread(&self) -> Option<WriterThread> {
        self.writer_thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// The writer's snapshot when a read transaction begun now might miss
/// writes already answered (`writer.rs`); `None`: begin one. A writer
/// busy for longer than `QUEUE_SNAPSHOT_WAIT` (a stalled disk) makes the
/// read fail as unavailable rather than hang or miss them.
async fn read_snapshot(writer: Option<Writer>) -> Result<Option<ReadTransaction>, StoreError> {
    let Some(writer) = writer else {
        return Ok(None);
    };
    tokio::time::timeout(QUEUE_SNAPSHOT_WAIT, writer.read_snapshot())
        .await
        .map_err(|_| StoreError::Unavailable("storage is busy; try again".into()))
}

/// Runs blocking redb work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))?
}

/// Runs `read` on the blocking pool in `snapshot`, or, without one, in a
/// read transaction begun there.
async fn read_in<T: Send + 'static>(
    slot: Arc<DbSlot>,
    snapshot: Option<ReadTransaction>,
    read: impl FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    blocking(move || match snapshot {
        Some(snapshot) => read(&snapshot),
        None => read(&slot.get()?.begin_read()?),
    })
    .await
}

/// How long a read of the queue waits for the writer's snapshot.
const QUEUE_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// redb's online backup (`backup.rs`), taken from a read snapshot in which
/// every pending delivery has its queue row (the writer's, see
/// `deferred.rs`): a backup has no log to restore them from.
struct RedbBackup {
    slot: Arc<DbSlot>,
    writer: Option<WeakWriter>,
}

impl BackupSource for RedbBackup {
    fn backup(&self, target: std::fs::File) -> StoreFuture<BackupStats> {
        let slot = self.slot.clone();
        let writer = self.writer.clone();
        Box::pin(async move {
            let snapshot = match writer {
                Some(writer) => writer.queue_snapshot().await?,
                None => None,
            };
            read_in(slot, snapshot, move |txn| backup::copy(txn, target)).await
        })
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel lets the writer drain what is queued and exit.
        self.writer = None;
        if let Some(thread) = self.take_writer_thread() {
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

    fn pending_purges(&self) -> StoreFuture<u64> {
        self.read_blocking(workspaces::pending_purges)
    }

    fn purge_old_events(
        &self,
        cutoff_ms: u64,
        from: Option<RetentionCursor>,
        budget: usize,
    ) -> StoreFuture<RetentionStep> {
        self.write(move |txn| retention::purge_old_events(txn, cutoff_ms, from, budget))
    }

    fn backup_source(&self) -> Option<Arc<dyn BackupSource>> {
        Some(Arc::new(RedbBackup {
            slot: self.slot.clone(),
            writer: self.writer.as_ref().map(Writer::downgrade),
        }))
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
        let record = self.logged.then(|| wal::encode_ingest(&prepared));
        let for_writer = prepared.clone();
        let stored = self.write_logged(
            move |scope| events::ingest(scope.ingest_tables()?, &for_writer),
            record,
        );
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

    fn workspaces(&self) -> StoreFuture<Vec<Workspace>> {
        self.read_blocking(workspaces::list)
    }

    fn workspace(&self, id: WorkspaceId) -> StoreFuture<Option<Workspace>> {
        self.read_now(move |txn| workspaces::get(txn, id))
    }

    fn key(&self, hash: KeyHash) -> StoreFuture<Option<(WorkspaceId, KeyKind)>> {
        self.read_now(move |txn| workspaces::key(txn, &hash))
    }

    fn event(&self, workspace: WorkspaceId, id: EventId) -> StoreFuture<Option<Event>> {
        self.read_now(move |txn| events::get(txn, workspace, id))
    }

    fn events(&self, workspace: WorkspaceId, query: EventQuery) -> StoreFuture<EventPage> {
        self.read_blocking(move |txn| events::list(txn, workspace, &query))
    }

    fn is_writable(&self) -> bool {
        *self.writable.borrow()
    }

    fn writable(&self) -> tokio::sync::watch::Receiver<bool> {
        self.writable.clone()
    }

    fn close(&self) -> StoreFuture<()> {
        let writer = self.writer.clone();
        let thread = self.take_writer_thread();
        Box::pin(async move {
            if let Some(writer) = writer {
                writer.close().await;
            }
            if let Some(thread) = thread {
                // Returns once every job queued before the close committed.
                blocking(move || {
                    thread.join();
                    Ok(())
                })
                .await?;
            }
            Ok(())
        })
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
    ) -> StoreFuture<Option<Connection>> {
        self.read_now(move |txn| connections::get(txn, workspace, id))
    }

    fn connections(&self, workspace: WorkspaceId) -> StoreFuture<Vec<Connection>> {
        self.read_now(move |txn| connections::list(txn, workspace))
    }

    fn put_rule(&self, rule: Rule, update: bool) -> StoreFuture<PutRule> {
        self.write(move |txn| rules::put(txn, &rule, update))
    }

    fn delete_rule(&self, workspace: WorkspaceId, id: RuleId) -> StoreFuture<bool> {
        self.write(move |txn| rules::delete(txn, workspace, id))
    }

    fn rule(&self, workspace: WorkspaceId, id: RuleId) -> StoreFuture<Option<Rule>> {
        self.read_now(move |txn| rules::get(txn, workspace, id))
    }

    fn rules(&self, workspace: WorkspaceId) -> StoreFuture<Vec<Rule>> {
        self.read_now(move |txn| rules::list(txn, workspace))
    }

    fn delivery(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> StoreFuture<Option<(Delivery, Vec<Attempt>)>> {
        self.read_now(move |txn| deliveries::get_with_attempts(txn, workspace, id))
    }

    fn deliveries(
        &self,
        workspace: WorkspaceId,
        query: DeliveryQuery,
    ) -> StoreFuture<DeliveryPage> {
        self.read_blocking(move |txn| deliveries::list(txn, workspace, &query))
    }

    /// Read without the writer's snapshot when a read begun now sees every
    /// write answered for the delivery (`recent.rs`), which spares the
    /// writer a commit.
    fn delivery_context(
        &self,
        workspace: WorkspaceId,
        id: DeliveryId,
    ) -> StoreFuture<Option<DeliveryContext>> {
        if let Some(writer) = self
            .writer
            .as_ref()
            .filter(|writer| writer.holds_unpublished())
        {
            // Read first: a commit that publishes after it is not relied on.
            let publishes = writer.publishes();
            if self.recent.seen_by(id, publishes) {
                let found = self.read_latest(|txn| deliveries::context(txn, workspace, id));
                // Not found (its ingest may be unpublished) or failed: the
                // writer's snapshot decides.
                if let Ok(Some(context)) = found {
                    return Box::pin(std::future::ready(Ok(Some(context))));
                }
            }
        }
        self.read_now(move |txn| deliveries::context(txn, workspace, id))
    }

    /// A logged outcome is noted in `recent` once it returns; see
    /// `recent.rs` for why a caller must not drop the future before then.
    fn record_attempt(&self, outcome: AttemptOutcome) -> StoreFuture<Option<Delivery>> {
        let record = if self.logged {
            wal::encode_attempt(&outcome)
        } else {
            None
        };
        let logged = record.is_some();
        let delivery = outcome.delivery_id;
        let write = self.write_logged(
            move |scope| deliveries::record_attempt(scope, &outcome),
            record,
        );
        if !logged {
            // Committed before it is answered: nothing to track.
            return write;
        }
        let writer = self.writer.clone();
        let recent = self.recent.clone();
        Box::pin(async move {
            let result = write.await;
            // Failed too: it may be in the open transaction all the same.
            if let Some(writer) = writer {
                recent.answered(delivery, writer.publishes());
            }
            result
        })
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
            let snapshot = read_snapshot(writer.clone()).await?;
            let ids = read_in(slot, snapshot, move |read| {
                deliveries::matching_in_snapshot(read, workspace.0, status, since_ms, limit)
            })
            .await?;
            let listed = Requeue::Listed { status, ids };
            let op: WriteOp<Vec<QueueEntry>> = Box::new(move |scope| {
                deliveries::requeue(scope.txn()?, workspace, &listed, now_ms)
            });
            match writer {
                Some(writer) => writer.write(op).await,
                None => Err(StoreError::WriterStopped),
            }
        })
    }

    fn queue_heads(&self) -> StoreFuture<QueueHeads> {
        self.read_queue(deliveries::queue_heads)
    }

    fn queue_rows(&self, reads: Vec<LaneRead>) -> StoreFuture<Vec<LaneRows>> {
        self.read_queue(move |txn| deliveries::queue_rows(txn, &reads))
    }

    fn queue_len(&self) -> StoreFuture<u64> {
        self.read_queue(|txn| Ok(txn.open_table(tables::QUEUE)?.len()?))
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

    fn slack_thread(&self, key: ThreadKey) -> StoreFuture<Option<String>> {
        self.read_now(move |txn| threads::get(txn, &key))
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
    use crate::store::{RedbStore, Store, StoreError, StoreOptions};

    #[tokio::test]
    async fn close_commits_what_was_submitted_and_refuses_later_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store = RedbStore::open(&path, StoreOptions::default()).unwrap();
        // `join` polls in order: the write is queued before the close is.
        let (written, closed) = tokio::join!(store.put_oauth_state(1, u64::MAX), store.close());
        written.unwrap();
        closed.unwrap();
        assert!(!store.is_writable());
        assert!(matches!(
            store.put_oauth_state(2, u64::MAX).await,
            Err(StoreError::WriterStopped)
        ));
        store.close().await.unwrap();
        drop(store);

        let reopened = RedbStore::open(&path, StoreOptions::default()).unwrap();
        assert!(reopened.consume_oauth_state(1, 0).await.unwrap(), "durable");
        assert!(!reopened.consume_oauth_state(2, 0).await.unwrap());
    }

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
