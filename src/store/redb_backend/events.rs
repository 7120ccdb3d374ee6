use super::scope::IngestTables;
use super::tables::*;
use super::wal::{EventWire, IngestWire};
use super::{decode, deliveries, scan_newest_first};
use crate::model::IdMap;
use crate::model::{Event, EventId, EventName, WorkspaceId, now_ms};
use crate::store::codec::Record;
use crate::store::records::{EventRecord, IdempotencyRecord};
use crate::store::{
    EventPage, EventQuery, IDEMPOTENCY_TTL_MS, IdempotentAnswer, IngestBatch, IngestOutcome,
    MAX_SCANNED_PER_PAGE, StoreError,
};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use std::collections::HashSet;

/// An ingest batch with its records encoded, ready to insert. Built on the
/// caller's thread: the writer is the one serial stage of ingest, so it only
/// checks and inserts.
pub struct PreparedIngest {
    workspace: u128,
    /// (event id, encoded record).
    events: Vec<(u128, Vec<u8>)>,
    deliveries: Vec<deliveries::NewDelivery>,
    idempotency: Option<IdempotentAnswer>,
    /// When the batch arrived: the time its idempotency key is stored with.
    /// Fixed here, so applying the batch again from the write-ahead log
    /// decides exactly as the first time.
    now_ms: u64,
}

impl PreparedIngest {
    pub fn new(batch: IngestBatch) -> Self {
        // One pass: a batch may hold thousands of events and deliveries.
        let mut by_event: IdMap<u128, Vec<u128>> = IdMap::default();
        for delivery in &batch.deliveries {
            by_event
                .entry(delivery.event_id.0)
                .or_default()
                .push(delivery.id.0);
        }
        let mut deliveries_of = |event: u128| {
            let mut ids = by_event.remove(&event).unwrap_or_default();
            ids.sort_unstable();
            ids
        };
        let events = batch
            .events
            .iter()
            .map(|event| {
                let record = EventRecord {
                    name: event.name.as_str().to_string(),
                    resource: event.resource.clone(),
                    resource_id: event.resource_id.clone(),
                    payload: event.payload.clone(),
                    received_at_ms: event.received_at_ms,
                    deliveries: Some(deliveries_of(event.id.0)),
                };
                (event.id.0, record.encode())
            })
            .collect();
        Self {
            workspace: batch.workspace_id.0,
            events,
            deliveries: batch
                .deliveries
                .iter()
                .map(|delivery| {
                    deliveries::NewDelivery::new(delivery, batch.noise.get(&delivery.id).copied())
                })
                .collect(),
            idempotency: batch.idempotency,
            now_ms: now_ms(),
        }
    }

    /// As the write-ahead log carries it.
    pub fn to_wire(&self) -> IngestWire {
        IngestWire {
            workspace: self.workspace,
            now_ms: self.now_ms,
            events: self
                .events
                .iter()
                .map(|(id, record)| EventWire {
                    id: *id,
                    record: record.clone(),
                })
                .collect(),
            deliveries: self.deliveries.iter().map(|d| d.to_wire()).collect(),
            idempotency: self
                .idempotency
                .as_ref()
                .map(|answer| (answer.key.clone(), answer.status, answer.response.clone())),
        }
    }

    pub fn from_wire(wire: IngestWire) -> Result<Self, StoreError> {
        Ok(Self {
            workspace: wire.workspace,
            events: wire
                .events
                .into_iter()
                .map(|event| (event.id, event.record))
                .collect(),
            deliveries: wire
                .deliveries
                .into_iter()
                .map(deliveries::NewDelivery::from_wire)
                .collect::<Result<_, _>>()?,
            idempotency: wire
                .idempotency
                .map(|(key, status, response)| IdempotentAnswer {
                    key,
                    status,
                    response,
                }),
            now_ms: wire.now_ms,
        })
    }
}

/// Stores events with their deliveries and queue entries, or replays the
/// first answer of a known idempotency key. Checks come before writes.
pub fn ingest(
    tables: &mut IngestTables<'_>,
    batch: &PreparedIngest,
) -> Result<IngestOutcome, StoreError> {
    let ws = batch.workspace;
    if tables.workspaces.get(ws)?.is_none() {
        return Ok(IngestOutcome::UnknownWorkspace);
    }
    let now = batch.now_ms;
    if let Some(answer) = &batch.idempotency {
        let idempotency = tables.idempotency.get()?;
        let previous =
            decode::<IdempotencyRecord>(idempotency.keys.get((ws, answer.key.as_str()))?)?;
        if let Some(previous) = previous {
            if now < previous.created_at_ms.saturating_add(IDEMPOTENCY_TTL_MS) {
                return Ok(IngestOutcome::Replayed {
                    status: previous.status,
                    response: previous.response,
                });
            }
            // Expired but not purged yet: the key starts a new life.
            idempotency
                .by_age
                .remove((previous.created_at_ms, ws, answer.key.as_str()))?;
        }
        let record = IdempotencyRecord {
            created_at_ms: now,
            status: answer.status,
            response: answer.response.clone(),
        };
        idempotency
            .keys
            .insert((ws, answer.key.as_str()), record.encode().as_slice())?;
        idempotency
            .by_age
            .insert((now, ws, answer.key.as_str()), ())?;
    }
    let events = tables.events.get()?;
    for (id, record) in &batch.events {
        events.insert((ws, *id), record.as_slice())?;
    }
    // An event record from an older release's write-ahead log does not
    // list its deliveries: they go into the index, as that release did.
    let indexed: HashSet<u128> = batch
        .events
        .iter()
        .filter(|(_, record)| EventRecord::is_version_one(record))
        .map(|(id, _)| *id)
        .collect();
    let suppressed = deliveries::insert_new(
        &mut tables.deliveries,
        &mut tables.noise,
        &batch.deliveries,
        &indexed,
    )?;
    Ok(IngestOutcome::Stored { suppressed })
}

pub fn purge_idempotency_keys(txn: &WriteTransaction, now_ms: u64) -> Result<usize, StoreError> {
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
}

/// Drops a deleted workspace's idempotency keys (`idempotency_by_age` is
/// not keyed by workspace first, so it is walked whole).
pub fn forget_idempotency(txn: &WriteTransaction, ws: u128) -> Result<(), StoreError> {
    txn.open_table(IDEMPOTENCY)?
        .retain_in((ws, "")..(ws.saturating_add(1), ""), |_, _| false)?;
    txn.open_table(IDEMPOTENCY_BY_AGE)?
        .retain(|(_, owner, _), ()| owner != ws)?;
    Ok(())
}

pub fn get(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    id: EventId,
) -> Result<Option<Event>, StoreError> {
    let Some(record) = decode::<EventRecord>(txn.open_table(EVENTS)?.get((workspace.0, id.0))?)?
    else {
        return Ok(None);
    };
    event_from(workspace, id, record).map(Some)
}

pub fn list(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    query: &EventQuery,
) -> Result<EventPage, StoreError> {
    list_scanning_at_most(txn, workspace, query, MAX_SCANNED_PER_PAGE)
}

/// Newest first from the cursor. A filter that matches little would walk
/// the whole workspace, so at most `budget` rows are examined: a page that
/// has not filled by then ends early with a cursor to go on from.
fn list_scanning_at_most(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    query: &EventQuery,
    budget: usize,
) -> Result<EventPage, StoreError> {
    let table = txn.open_table(EVENTS)?;
    let filter = query.name.as_ref();
    let mut page = EventPage::default();
    let before = query.before.map(|cursor| cursor.0);
    let cursor = scan_newest_first(&table, workspace.0, before, budget, |id, bytes| {
        let record = EventRecord::decode(bytes)?;
        if filter.is_some_and(|filter| !filter.matches(&record.name)) {
            return Ok(true);
        }
        if page.events.len() == query.limit {
            page.next = page.events.last().map(|event: &Event| event.id);
            return Ok(false);
        }
        page.events
            .push(event_from(workspace, EventId(id), record)?);
        Ok(true)
    })?;
    if let Some(cursor) = cursor {
        page.next = Some(EventId(cursor));
    }
    Ok(page)
}

pub fn event_from(
    workspace: WorkspaceId,
    id: EventId,
    record: EventRecord,
) -> Result<Event, StoreError> {
    // Names were validated at ingest; one that no longer parses is corrupt.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventNameFilter;
    use redb::{Database, ReadableDatabase};

    #[test]
    fn a_sparse_filter_pages_through_with_a_scan_budget_and_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("list.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            for id in 0..30u128 {
                let name = if id % 10 == 0 {
                    "rare.thing"
                } else {
                    "common.thing"
                };
                let record = EventRecord {
                    name: name.into(),
                    resource: None,
                    resource_id: None,
                    payload: b"{}".to_vec(),
                    received_at_ms: 1,
                    deliveries: Some(Vec::new()),
                };
                events.insert((7, id), record.encode().as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let mut query = EventQuery {
            name: Some(EventNameFilter::Prefix("rare.".into())),
            before: None,
            limit: 50,
        };
        let (mut found, mut pages) = (Vec::new(), 0);
        loop {
            let page = list_scanning_at_most(&read, WorkspaceId(7), &query, 7).unwrap();
            pages += 1;
            found.extend(page.events.iter().map(|event| event.id.0));
            match page.next {
                Some(cursor) => query.before = Some(cursor),
                None => break,
            }
        }
        assert_eq!(found, [20, 10, 0], "newest first, none skipped");
        assert_eq!(pages, 5, "30 rows at 7 a page: the budget bounds each");

        // A full page still ends at its last event.
        let page = list_scanning_at_most(
            &read,
            WorkspaceId(7),
            &EventQuery {
                name: None,
                before: None,
                limit: 2,
            },
            7,
        )
        .unwrap();
        assert_eq!(page.events.len(), 2);
        assert_eq!(page.next, Some(EventId(28)));
    }
}
