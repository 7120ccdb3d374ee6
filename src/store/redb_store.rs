//! The redb implementation of [`Store`].

use super::codec::Record;
use super::records::{
    ApiKeyRecord, EventRecord, IdempotencyRecord, StoredKeyKind, WorkspaceRecord,
};
use super::writer::{WriteOp, Writer, WriterThread};
use super::{
    EventPage, EventQuery, IDEMPOTENCY_TTL_MS, IngestBatch, IngestOutcome, KeyHash, NewWorkspace,
    Store, StoreError, StoreFuture, name_matches,
};
use crate::model::{Event, EventId, EventName, KeyKind, Workspace, WorkspaceId, now_ms};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::path::Path;
use std::sync::Arc;

const WORKSPACES: TableDefinition<u128, &[u8]> = TableDefinition::new("workspaces");
/// SHA-256 of a key → its workspace and kind.
const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
/// (workspace, event id): ULIDs make this time-ordered within a workspace.
const EVENTS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("events");
const IDEMPOTENCY: TableDefinition<(u128, &str), &[u8]> = TableDefinition::new("idempotency");
/// (created at, workspace, key): lets the purge walk only expired entries.
const IDEMPOTENCY_BY_AGE: TableDefinition<(u64, u128, &str), ()> =
    TableDefinition::new("idempotency_by_age");

/// Dropping the last handle lets every queued write commit, then closes the
/// file.
pub struct RedbStore {
    db: Arc<Database>,
    /// `None` only while dropping.
    writer: Option<Writer>,
    writer_thread: Option<WriterThread>,
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its write coordinator.
    pub fn open(path: &Path) -> Result<Arc<Self>, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source: Box::new(source),
        })?;
        let txn = db.begin_write()?;
        create_tables(&txn)?;
        txn.commit()?;
        let db = Arc::new(db);
        let (writer, writer_thread) = Writer::start(db.clone()).map_err(|error| {
            StoreError::Unavailable(format!("cannot start the writer: {error}"))
        })?;
        Ok(Arc::new(Self {
            db,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
        }))
    }

    fn write<T: Send + 'static>(
        &self,
        op: impl Fn(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
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

fn create_tables(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(WORKSPACES)?;
    txn.open_table(API_KEYS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(IDEMPOTENCY_BY_AGE)?;
    Ok(())
}

impl Store for RedbStore {
    fn create_workspace(&self, new: NewWorkspace) -> StoreFuture<()> {
        self.write(move |txn| {
            let id = new.workspace.id.0;
            let record = WorkspaceRecord {
                name: new.workspace.name.clone(),
                created_at_ms: new.workspace.created_at_ms,
                publishable_key_hash: new.publishable_key_hash,
                secret_key_hash: new.secret_key_hash,
            };
            txn.open_table(WORKSPACES)?
                .insert(id, record.encode().as_slice())?;
            insert_keys(txn, id, &new.publishable_key_hash, &new.secret_key_hash)?;
            Ok(())
        })
    }

    fn delete_workspace(&self, id: WorkspaceId) -> StoreFuture<bool> {
        self.write(move |txn| {
            let ws = id.0;
            let Some(record) = txn
                .open_table(WORKSPACES)?
                .remove(ws)?
                .map(|old| WorkspaceRecord::decode(old.value()))
            else {
                return Ok(false);
            };
            let record = record?;
            remove_keys(txn, &record)?;
            txn.open_table(EVENTS)?
                .retain_in((ws, 0)..=(ws, u128::MAX), |_, _| false)?;
            txn.open_table(IDEMPOTENCY)?
                .retain(|(owner, _), _| owner != ws)?;
            txn.open_table(IDEMPOTENCY_BY_AGE)?
                .retain(|(_, owner, _), ()| owner != ws)?;
            Ok(true)
        })
    }

    fn rotate_keys(
        &self,
        id: WorkspaceId,
        publishable_key_hash: KeyHash,
        secret_key_hash: KeyHash,
    ) -> StoreFuture<Option<Workspace>> {
        self.write(move |txn| {
            let mut workspaces = txn.open_table(WORKSPACES)?;
            let Some(mut record) = workspaces
                .get(id.0)?
                .map(|bytes| WorkspaceRecord::decode(bytes.value()))
                .transpose()?
            else {
                return Ok(None);
            };
            remove_keys(txn, &record)?;
            record.publishable_key_hash = publishable_key_hash;
            record.secret_key_hash = secret_key_hash;
            workspaces.insert(id.0, record.encode().as_slice())?;
            insert_keys(txn, id.0, &publishable_key_hash, &secret_key_hash)?;
            Ok(Some(workspace_from(id.0, record)))
        })
    }

    fn ingest(&self, batch: IngestBatch) -> StoreFuture<IngestOutcome> {
        self.write(move |txn| {
            let ws = batch.workspace_id.0;
            if txn.open_table(WORKSPACES)?.get(ws)?.is_none() {
                return Ok(IngestOutcome::UnknownWorkspace);
            }
            let now = now_ms();
            if let Some(answer) = &batch.idempotency {
                let mut keys = txn.open_table(IDEMPOTENCY)?;
                let previous = keys
                    .get((ws, answer.key.as_str()))?
                    .map(|bytes| IdempotencyRecord::decode(bytes.value()))
                    .transpose()?;
                if let Some(previous) = previous {
                    if now < previous.created_at_ms.saturating_add(IDEMPOTENCY_TTL_MS) {
                        return Ok(IngestOutcome::Replayed {
                            status: previous.status,
                            response: previous.response,
                        });
                    }
                    // Expired but not purged yet: the key starts a new life.
                    txn.open_table(IDEMPOTENCY_BY_AGE)?.remove((
                        previous.created_at_ms,
                        ws,
                        answer.key.as_str(),
                    ))?;
                }
                let record = IdempotencyRecord {
                    created_at_ms: now,
                    status: answer.status,
                    response: answer.response.clone(),
                };
                keys.insert((ws, answer.key.as_str()), record.encode().as_slice())?;
                txn.open_table(IDEMPOTENCY_BY_AGE)?
                    .insert((now, ws, answer.key.as_str()), ())?;
            }
            let mut events = txn.open_table(EVENTS)?;
            for event in &batch.events {
                let record = EventRecord {
                    name: event.name.as_str().to_string(),
                    resource: event.resource.clone(),
                    resource_id: event.resource_id.clone(),
                    payload: event.payload.clone(),
                    received_at_ms: event.received_at_ms,
                };
                events.insert((ws, event.id.0), record.encode().as_slice())?;
            }
            Ok(IngestOutcome::Stored)
        })
    }

    fn purge_idempotency_keys(&self, now_ms: u64) -> StoreFuture<usize> {
        self.write(move |txn| {
            let cutoff = now_ms.saturating_sub(IDEMPOTENCY_TTL_MS);
            let mut by_age = txn.open_table(IDEMPOTENCY_BY_AGE)?;
            let mut expired = Vec::new();
            for entry in by_age.range((0, 0, "")..(cutoff, 0, ""))? {
                let (key, _) = entry?;
                let (created_at, ws, name) = key.value();
                expired.push((created_at, ws, name.to_string()));
            }
            let mut keys = txn.open_table(IDEMPOTENCY)?;
            for (created_at, ws, key) in &expired {
                by_age.remove((*created_at, *ws, key.as_str()))?;
                keys.remove((*ws, key.as_str()))?;
            }
            Ok(expired.len())
        })
    }

    fn workspaces(&self) -> Result<Vec<Workspace>, StoreError> {
        let table = self.db.begin_read()?.open_table(WORKSPACES)?;
        let mut workspaces = Vec::new();
        for entry in table.iter()? {
            let (id, bytes) = entry?;
            workspaces.push(workspace_from(
                id.value(),
                WorkspaceRecord::decode(bytes.value())?,
            ));
        }
        Ok(workspaces)
    }

    fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
        let table = self.db.begin_read()?.open_table(WORKSPACES)?;
        let Some(bytes) = table.get(id.0)? else {
            return Ok(None);
        };
        Ok(Some(workspace_from(
            id.0,
            WorkspaceRecord::decode(bytes.value())?,
        )))
    }

    fn key(&self, hash: &KeyHash) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError> {
        let table = self.db.begin_read()?.open_table(API_KEYS)?;
        let Some(bytes) = table.get(hash.as_slice())? else {
            return Ok(None);
        };
        let record = ApiKeyRecord::decode(bytes.value())?;
        Ok(Some((WorkspaceId(record.workspace_id), record.kind.into())))
    }

    fn event(&self, workspace: WorkspaceId, id: EventId) -> Result<Option<Event>, StoreError> {
        let table = self.db.begin_read()?.open_table(EVENTS)?;
        let Some(bytes) = table.get((workspace.0, id.0))? else {
            return Ok(None);
        };
        event_from(workspace, id, EventRecord::decode(bytes.value())?).map(Some)
    }

    fn events(&self, workspace: WorkspaceId, query: &EventQuery) -> Result<EventPage, StoreError> {
        let table = self.db.begin_read()?.open_table(EVENTS)?;
        let ws = workspace.0;
        let upper = query.before.map_or(u128::MAX, |cursor| cursor.0);
        let mut page = EventPage::default();
        // Newest first: walk the workspace's range backwards from the cursor.
        for entry in table.range((ws, 0)..(ws, upper))?.rev() {
            let (key, bytes) = entry?;
            let record = EventRecord::decode(bytes.value())?;
            if let Some(pattern) = &query.name
                && !name_matches(pattern, &record.name)
            {
                continue;
            }
            if page.events.len() == query.limit {
                page.next = page.events.last().map(|event: &Event| event.id);
                break;
            }
            page.events
                .push(event_from(workspace, EventId(key.value().1), record)?);
        }
        Ok(page)
    }

    fn is_writable(&self) -> bool {
        self.writer.as_ref().is_some_and(Writer::is_running)
    }
}

fn insert_keys(
    txn: &WriteTransaction,
    ws: u128,
    publishable: &KeyHash,
    secret: &KeyHash,
) -> Result<(), StoreError> {
    let mut keys = txn.open_table(API_KEYS)?;
    for (hash, kind) in [
        (publishable, StoredKeyKind::Publishable),
        (secret, StoredKeyKind::Secret),
    ] {
        let record = ApiKeyRecord {
            workspace_id: ws,
            kind,
        };
        keys.insert(hash.as_slice(), record.encode().as_slice())?;
    }
    Ok(())
}

fn remove_keys(txn: &WriteTransaction, record: &WorkspaceRecord) -> Result<(), StoreError> {
    let mut keys = txn.open_table(API_KEYS)?;
    keys.remove(record.publishable_key_hash.as_slice())?;
    keys.remove(record.secret_key_hash.as_slice())?;
    Ok(())
}

fn workspace_from(id: u128, record: WorkspaceRecord) -> Workspace {
    Workspace {
        id: WorkspaceId(id),
        name: record.name,
        created_at_ms: record.created_at_ms,
    }
}

fn event_from(
    workspace: WorkspaceId,
    id: EventId,
    record: EventRecord,
) -> Result<Event, StoreError> {
    // Names were validated at ingest; a stored name that no longer parses
    // means the record is corrupt.
    let name = EventName::parse(&record.name)
        .map_err(|_| StoreError::Corrupt(format!("event {id} has an invalid name")))?;
    Ok(Event {
        id,
        workspace_id: workspace,
        name,
        resource: record.resource,
        resource_id: record.resource_id,
        payload: record.payload,
        received_at_ms: record.received_at_ms,
    })
}
