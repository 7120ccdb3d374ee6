use super::noise::{self, NoiseTables};
use super::scope::{NewDeliveryTables, OnFirstUse, WriteScope};
use super::tables::*;
use super::wal::NewDeliveryWire;
use super::{connections, decode, events, rules, scan_newest_first};
use crate::model::{
    AlertState, Attempt, ConnectionId, Delivery, DeliveryId, DeliveryStatus, EventId, RuleId,
    WorkspaceId,
};
use crate::store::codec::Record;
use crate::store::records::{AttemptRecord, DeliveryRecord, EventRecord, QueueRecord};
use crate::store::{
    AttemptOutcome, ConnectionPatch, DeliveryContext, DeliveryPage, DeliveryQuery, LaneRead,
    LaneRows, MAX_SCANNED_PER_PAGE, NextStep, NoiseCheck, QueueEntry, QueueHead, QueueHeads,
    Requeue, StoreError,
};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableHandle, WriteTransaction};
use std::collections::HashSet;
use std::sync::Arc;

/// A new delivery with its record already encoded (see
/// [`events::PreparedIngest`]); one its rule's noise control may change is
/// encoded again in the writer once that is decided.
pub struct NewDelivery {
    workspace: u128,
    id: u128,
    event_id: u128,
    record: DeliveryRecord,
    encoded: Vec<u8>,
    noise: Option<NoiseCheck>,
}

impl NewDelivery {
    pub fn new(delivery: &Delivery, noise: Option<NoiseCheck>) -> Self {
        let record = record_from(delivery, 0);
        Self {
            workspace: delivery.workspace_id.0,
            id: delivery.id.0,
            event_id: delivery.event_id.0,
            encoded: record.encode(),
            record,
            noise,
        }
    }

    /// As the write-ahead log carries it.
    pub fn to_wire(&self) -> NewDeliveryWire {
        NewDeliveryWire {
            workspace: self.workspace,
            id: self.id,
            event_id: self.event_id,
            record: self.encoded.clone(),
            noise: self.noise.map(|check| {
                let state = match check.state {
                    None => 0,
                    Some(AlertState::Triggered) => 1,
                    Some(AlertState::Acknowledged) => 2,
                    Some(AlertState::Resolved) => 3,
                };
                (check.dedup_seconds, check.max_per_hour, state)
            }),
        }
    }

    pub fn from_wire(wire: NewDeliveryWire) -> Result<Self, StoreError> {
        let record = DeliveryRecord::decode(&wire.record)?;
        let noise = wire
            .noise
            .map(|(dedup_seconds, max_per_hour, state)| {
                let state = match state {
                    0 => None,
                    1 => Some(AlertState::Triggered),
                    2 => Some(AlertState::Acknowledged),
                    3 => Some(AlertState::Resolved),
                    other => {
                        return Err(StoreError::Corrupt(format!(
                            "logged delivery {}: alert state {other}",
                            wire.id
                        )));
                    }
                };
                Ok(NoiseCheck {
                    dedup_seconds,
                    max_per_hour,
                    state,
                })
            })
            .transpose()?;
        Ok(Self {
            workspace: wire.workspace,
            id: wire.id,
            event_id: wire.event_id,
            record,
            encoded: wire.record,
            noise,
        })
    }
}

/// Writes new deliveries and their queue entries, deciding noise control
/// in order; returns the ids of those suppressed. Their events list them
/// (`EventRecord::deliveries`), except the events in `indexed`, whose
/// deliveries get rows in the `event_deliveries` index.
pub fn insert_new(
    tables: &mut NewDeliveryTables<'_>,
    noise: &mut OnFirstUse<'_, NoiseTables<'_>>,
    deliveries: &[NewDelivery],
    indexed: &HashSet<u128>,
) -> Result<Vec<DeliveryId>, StoreError> {
    let mut suppressed = Vec::new();
    for delivery in deliveries {
        let ws = delivery.workspace;
        let mut decided;
        let (record, encoded) = match &delivery.noise {
            Some(check) => {
                decided = delivery.record.clone();
                let now = decided.created_at_ms;
                if noise::decide(noise.get()?, ws, &mut decided, check, now)? {
                    suppressed.push(DeliveryId(delivery.id));
                }
                let encoded = decided.encode();
                (&decided, std::borrow::Cow::Owned(encoded))
            }
            None => (
                &delivery.record,
                std::borrow::Cow::Borrowed(delivery.encoded.as_slice()),
            ),
        };
        tables
            .deliveries
            .insert((ws, delivery.id), encoded.as_ref())?;
        if indexed.contains(&delivery.event_id) {
            tables
                .by_event
                .get()?
                .insert((ws, delivery.event_id, delivery.id), ())?;
        }
        if let Some(due) = record.next_attempt_at_ms {
            tables
                .queue
                .insert_new((record.connection_id, due, delivery.id), ws)?;
        }
    }
    Ok(suppressed)
}

/// The ids of `event`'s deliveries, ascending (none if there is no such
/// event): from its record, or from the `event_deliveries` index when the
/// record does not list them (`EventRecord::deliveries`).
pub fn of_event(
    events: &impl ReadableTable<(u128, u128), &'static [u8]>,
    index: &impl ReadableTable<(u128, u128, u128), ()>,
    ws: u128,
    event: u128,
) -> Result<Vec<u128>, StoreError> {
    let Some(record) = decode::<EventRecord>(events.get((ws, event))?)? else {
        return Ok(Vec::new());
    };
    match record.deliveries {
        Some(ids) => Ok(ids),
        None => index
            .range((ws, event, 0)..=(ws, event, u128::MAX))?
            .map(|row| Ok(row?.0.value().2))
            .collect(),
    }
}

pub fn get_with_attempts(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    id: DeliveryId,
) -> Result<Option<(Delivery, Vec<Attempt>)>, StoreError> {
    let table = txn.open_table(DELIVERIES)?;
    let Some(mut record) = decode::<DeliveryRecord>(table.get((workspace.0, id.0))?)? else {
        return Ok(None);
    };
    // The first in the delivery's row, the later ones in their table.
    let mut attempts: Vec<Attempt> = record
        .first_attempt
        .take()
        .map(attempt_from)
        .into_iter()
        .collect();
    for entry in txn
        .open_table(ATTEMPTS)?
        .range((id.0, 0)..=(id.0, u32::MAX))?
    {
        attempts.push(attempt_from(AttemptRecord::decode(entry?.1.value())?));
    }
    Ok(Some((delivery_from(workspace, id, record), attempts)))
}

fn attempt_from(record: AttemptRecord) -> Attempt {
    Attempt {
        at_ms: record.at_ms,
        duration_ms: record.duration_ms,
        status_code: record.status_code,
        error: record.error,
        response: record.response,
    }
}

/// Newest first, filtered; an `event_id` filter walks that event's
/// deliveries (`of_event`).
pub fn list(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    query: &DeliveryQuery,
) -> Result<DeliveryPage, StoreError> {
    list_scanning_at_most(txn, workspace, query, MAX_SCANNED_PER_PAGE)
}

/// Newest first from the cursor, examining at most `budget` rows (as for
/// events): a page that has not filled by then ends early with a cursor.
fn list_scanning_at_most(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    query: &DeliveryQuery,
    budget: usize,
) -> Result<DeliveryPage, StoreError> {
    let ws = workspace.0;
    let table = txn.open_table(DELIVERIES)?;
    let mut page = DeliveryPage::default();
    if let Some(event) = query.event_id {
        // One event has at most one delivery per rule: no budget needed.
        let upper = query.before.map_or(u128::MAX, |cursor| cursor.0);
        let events = txn.open_table(EVENTS)?;
        let index = txn.open_table(EVENT_DELIVERIES)?;
        let ids = of_event(&events, &index, ws, event.0)?;
        for id in ids.into_iter().rev().filter(|id| *id < upper) {
            if let Some(record) = decode::<DeliveryRecord>(table.get((ws, id))?)?
                && !offer(&mut page, query, workspace, id, record)
            {
                break;
            }
        }
        return Ok(page);
    }
    let before = query.before.map(|cursor| cursor.0);
    let cursor = scan_newest_first(&table, ws, before, budget, |id, bytes| {
        Ok(offer(
            &mut page,
            query,
            workspace,
            id,
            DeliveryRecord::decode(bytes)?,
        ))
    })?;
    if let Some(cursor) = cursor {
        page.next = Some(DeliveryId(cursor));
    }
    Ok(page)
}

/// Adds a delivery to the page if the query wants it; false once the page
/// is full (its cursor then set).
fn offer(
    page: &mut DeliveryPage,
    query: &DeliveryQuery,
    workspace: WorkspaceId,
    id: u128,
    record: DeliveryRecord,
) -> bool {
    let wanted = query
        .status
        .is_none_or(|status| status == record.status.into())
        && query
            .connection_id
            .is_none_or(|connection| connection.0 == record.connection_id)
        && query
            .event_id
            .is_none_or(|event| event.0 == record.event_id);
    if !wanted {
        return true;
    }
    if page.deliveries.len() == query.limit {
        page.next = page.deliveries.last().map(|delivery| delivery.id);
        return false;
    }
    page.deliveries
        .push(delivery_from(workspace, DeliveryId(id), record));
    true
}

pub fn context(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    id: DeliveryId,
) -> Result<Option<DeliveryContext>, StoreError> {
    let ws = workspace.0;
    // A deleted workspace's deliveries linger until purged: nothing is due.
    if txn.open_table(WORKSPACES)?.get(ws)?.is_none() {
        return Ok(None);
    }
    let Some(record) = decode::<DeliveryRecord>(txn.open_table(DELIVERIES)?.get((ws, id.0))?)?
    else {
        return Ok(None);
    };
    let event_id = EventId(record.event_id);
    let Some(event) = decode::<EventRecord>(txn.open_table(EVENTS)?.get((ws, event_id.0))?)? else {
        return Ok(None);
    };
    let event = events::event_from(workspace, event_id, event)?;
    let rule = rules::get(txn, workspace, RuleId(record.rule_id))?;
    let connection = connections::get(txn, workspace, ConnectionId(record.connection_id))?;
    let round_attempts = record.round_attempts;
    Ok(Some(DeliveryContext {
        delivery: delivery_from(workspace, id, record),
        round_attempts,
        event: Arc::new(event),
        rule: rule.map(Arc::new),
        connection: connection.map(Arc::new),
    }))
}

/// Appends the attempt, moves the delivery to its next state and its queue
/// entry to its next due time (or removes it).
/// Runs on the scope's kept tables (see `scope.rs`); only a change of the
/// connection's status, which is rare, goes through the bare transaction.
pub fn record_attempt(
    scope: &mut WriteScope<'_>,
    outcome: &AttemptOutcome,
) -> Result<Option<Delivery>, StoreError> {
    let ws = outcome.workspace_id.0;
    let id = outcome.delivery_id.0;
    let (tables, attempts) = scope.attempt_tables()?;
    // A deleted workspace's deliveries linger until purged: record nothing.
    if tables.workspaces.get(ws)?.is_none() {
        return Ok(None);
    }
    let NewDeliveryTables {
        deliveries: table,
        queue,
        ..
    } = &mut tables.deliveries;
    let Some(mut record) = decode::<DeliveryRecord>(table.get((ws, id))?)? else {
        return Ok(None);
    };
    let connection = record.connection_id;
    if let Some(due) = record.next_attempt_at_ms {
        queue.remove((connection, due, id))?;
    }
    record.attempt_count += 1;
    record.round_attempts += 1;
    record.updated_at_ms = outcome.attempt.at_ms + outcome.attempt.duration_ms;
    let attempt = AttemptRecord {
        at_ms: outcome.attempt.at_ms,
        duration_ms: outcome.attempt.duration_ms,
        status_code: outcome.attempt.status_code,
        error: outcome.attempt.error.clone(),
        response: outcome.attempt.response.clone(),
    };
    if record.attempt_count == 1 && kept_in_its_delivery(&attempt, &outcome.next) {
        record.first_attempt = Some(attempt);
    } else {
        attempts
            .get()?
            .insert((id, record.attempt_count), attempt.encode().as_slice())?;
    }
    match outcome.next {
        NextStep::Succeeded => {
            record.status = DeliveryStatus::Succeeded.into();
            record.next_attempt_at_ms = None;
        }
        NextStep::Dead => {
            record.status = DeliveryStatus::Dead.into();
            record.next_attempt_at_ms = None;
        }
        NextStep::RetryAt(due) => {
            record.status = DeliveryStatus::Retrying.into();
            record.next_attempt_at_ms = Some(due);
            queue.insert((connection, due, id), ws)?;
        }
    }
    table.insert((ws, id), record.encode().as_slice())?;
    if let Some(status) = outcome.connection_status {
        let patch = ConnectionPatch {
            status: Some(status),
            ..ConnectionPatch::default()
        };
        let connection = ConnectionId(record.connection_id);
        connections::update(scope.txn()?, outcome.workspace_id, connection, &patch)?;
    }
    Ok(Some(delivery_from(
        outcome.workspace_id,
        outcome.delivery_id,
        record,
    )))
}

/// Most error and response text a first attempt kept in its delivery's row
/// may carry: a larger one (an error page) is a row of `attempts`, so
/// delivery rows stay small for listings.
const KEPT_ATTEMPT_TEXT_BYTES: usize = 200;

/// Whether a delivery's first attempt goes in the delivery's own row (which
/// is written anyway, so one B-tree write fewer): when it ends the delivery
/// (a retrying delivery's row is read and written again at each attempt)
/// and its text is short.
fn kept_in_its_delivery(attempt: &AttemptRecord, next: &NextStep) -> bool {
    let text = attempt.error.as_ref().map_or(0, String::len)
        + attempt.response.as_ref().map_or(0, String::len);
    matches!(next, NextStep::Succeeded | NextStep::Dead) && text <= KEPT_ATTEMPT_TEXT_BYTES
}

/// Queues dead or succeeded deliveries again with a fresh retry schedule.
pub fn requeue(
    txn: &WriteTransaction,
    workspace: WorkspaceId,
    which: &Requeue,
    now_ms: u64,
) -> Result<Vec<QueueEntry>, StoreError> {
    let ws = workspace.0;
    let mut table = txn.open_table(DELIVERIES)?;
    let mut chosen: Vec<(u128, DeliveryRecord)> = Vec::new();
    match which {
        Requeue::One(id) => {
            // A suppressed delivery was held back on purpose: never sent.
            if let Some(record) = decode::<DeliveryRecord>(table.get((ws, id.0))?)?
                && record.next_attempt_at_ms.is_none()
                && DeliveryStatus::from(record.status) != DeliveryStatus::Suppressed
            {
                chosen.push((id.0, record));
            }
        }
        Requeue::Matching {
            status,
            since_ms,
            limit,
        } => {
            for id in matching(&table, ws, *status, *since_ms, *limit)? {
                if let Some(record) = decode::<DeliveryRecord>(table.get((ws, id))?)? {
                    chosen.push((id, record));
                }
            }
        }
        Requeue::Listed { status, ids } => {
            for id in ids {
                if let Some(record) = decode::<DeliveryRecord>(table.get((ws, id.0))?)?
                    && DeliveryStatus::from(record.status) == *status
                    && record.next_attempt_at_ms.is_none()
                {
                    chosen.push((id.0, record));
                }
            }
        }
    }
    let mut queue = txn.open_table(QUEUE)?;
    let mut entries = Vec::with_capacity(chosen.len());
    for (id, mut record) in chosen {
        record.status = if record.attempt_count == 0 {
            DeliveryStatus::Pending.into()
        } else {
            DeliveryStatus::Retrying.into()
        };
        record.round_attempts = 0;
        record.next_attempt_at_ms = Some(now_ms);
        record.updated_at_ms = now_ms;
        table.insert((ws, id), record.encode().as_slice())?;
        queue.insert((record.connection_id, now_ms, id), ws)?;
        entries.push(QueueEntry {
            due_ms: now_ms,
            delivery_id: DeliveryId(id),
            workspace_id: workspace,
            connection_id: ConnectionId(record.connection_id),
        });
    }
    Ok(entries)
}

/// Ids of the workspace's unqueued deliveries in `status` updated at or
/// after `since_ms`, oldest first, at most `limit`.
pub fn matching(
    table: &impl ReadableTable<(u128, u128), &'static [u8]>,
    ws: u128,
    status: DeliveryStatus,
    since_ms: u64,
    limit: usize,
) -> Result<Vec<u128>, StoreError> {
    let mut ids = Vec::new();
    for entry in table.range((ws, 0)..=(ws, u128::MAX))? {
        let (key, bytes) = entry?;
        let record = DeliveryRecord::decode(bytes.value())?;
        if DeliveryStatus::from(record.status) == status
            && record.next_attempt_at_ms.is_none()
            && record.updated_at_ms >= since_ms
        {
            ids.push(key.value().1);
            if ids.len() == limit {
                break;
            }
        }
    }
    Ok(ids)
}

/// [`matching`] in its own read snapshot.
pub fn matching_in_snapshot(
    txn: &ReadTransaction,
    ws: u128,
    status: DeliveryStatus,
    since_ms: u64,
    limit: usize,
) -> Result<Vec<DeliveryId>, StoreError> {
    let table = txn.open_table(DELIVERIES)?;
    Ok(matching(&table, ws, status, since_ms, limit)?
        .into_iter()
        .map(DeliveryId)
        .collect())
}

/// Removes a queue row that no longer stands for its delivery's next
/// attempt (the delivery, or its workspace, is gone, or it is due at another
/// time); true if one was removed. The live row is never touched.
pub fn drop_stale_queue_entry(
    txn: &WriteTransaction,
    entry: &QueueEntry,
) -> Result<bool, StoreError> {
    let ws = entry.workspace_id.0;
    let id = entry.delivery_id.0;
    let workspace_exists = txn.open_table(WORKSPACES)?.get(ws)?.is_some();
    let due = decode::<DeliveryRecord>(txn.open_table(DELIVERIES)?.get((ws, id))?)?
        .and_then(|record| record.next_attempt_at_ms);
    if workspace_exists && due == Some(entry.due_ms) {
        return Ok(false);
    }
    let key = (entry.connection_id.0, entry.due_ms, id);
    Ok(txn.open_table(QUEUE)?.remove(key)?.is_some())
}

/// The first entry of every connection's queue: one seek per connection,
/// skipping over each connection's backlog.
pub fn queue_heads(txn: &ReadTransaction) -> Result<QueueHeads, StoreError> {
    let table = txn.open_table(QUEUE)?;
    let mut heads = QueueHeads {
        heads: Vec::new(),
        backlog: table.len()?,
    };
    let mut from = (0u128, 0u64, 0u128);
    loop {
        let Some(row) = table.range(from..)?.next() else {
            break;
        };
        let (key, workspace) = row?;
        let (connection, due_ms, delivery) = key.value();
        heads.heads.push(QueueHead {
            connection_id: ConnectionId(connection),
            workspace_id: WorkspaceId(workspace.value()),
            first: (due_ms, DeliveryId(delivery)),
            paused_until_ms: 0,
        });
        let Some(next) = connection.checked_add(1) else {
            break;
        };
        from = (next, 0, 0);
    }
    Ok(heads)
}

/// Reads each [`LaneRead`]'s entries, in due order, in one snapshot.
pub fn queue_rows(txn: &ReadTransaction, reads: &[LaneRead]) -> Result<Vec<LaneRows>, StoreError> {
    let table = txn.open_table(QUEUE)?;
    let mut answers = Vec::with_capacity(reads.len());
    for read in reads {
        let connection = read.connection_id.0;
        let (due, delivery) = read.from.map_or((0, 0), |(due, id)| (due, id.0));
        let mut rows =
            table.range((connection, due, delivery)..=(connection, u64::MAX, u128::MAX))?;
        let mut answer = LaneRows::default();
        for row in rows.by_ref() {
            let (key, workspace) = row?;
            let (_, due_ms, delivery) = key.value();
            if answer.entries.len() == read.limit || due_ms > read.due_by {
                answer.next = Some((due_ms, DeliveryId(delivery)));
                break;
            }
            answer.entries.push(QueueEntry {
                due_ms,
                delivery_id: DeliveryId(delivery),
                workspace_id: WorkspaceId(workspace.value()),
                connection_id: read.connection_id,
            });
        }
        answers.push(answer);
    }
    Ok(answers)
}

/// Moves the entries of the queue's first layout, (due, delivery) →
/// workspace and connection, into the per-connection table, and drops the
/// old table. Returns how many moved.
pub fn migrate_legacy_queue(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let exists = txn
        .list_tables()?
        .any(|table| table.name() == LEGACY_QUEUE.name());
    if !exists {
        return Ok(0);
    }
    let mut moved = 0;
    {
        let legacy = txn.open_table(LEGACY_QUEUE)?;
        let mut queue = txn.open_table(QUEUE)?;
        for row in legacy.iter()? {
            let (key, bytes) = row?;
            let (due_ms, delivery) = key.value();
            let record = QueueRecord::decode(bytes.value())?;
            queue.insert(
                (record.connection_id, due_ms, delivery),
                record.workspace_id,
            )?;
            moved += 1;
        }
    }
    txn.delete_table(LEGACY_QUEUE)?;
    Ok(moved)
}

fn record_from(delivery: &Delivery, round_attempts: u32) -> DeliveryRecord {
    DeliveryRecord {
        event_id: delivery.event_id.0,
        rule_id: delivery.rule_id.0,
        connection_id: delivery.connection_id.0,
        status: delivery.status.into(),
        attempt_count: delivery.attempt_count,
        round_attempts,
        next_attempt_at_ms: delivery.next_attempt_at_ms,
        created_at_ms: delivery.created_at_ms,
        updated_at_ms: delivery.updated_at_ms,
        alert: delivery.alert.clone(),
        suppressed_before: delivery.suppressed_before,
        first_attempt: None,
    }
}

fn delivery_from(workspace: WorkspaceId, id: DeliveryId, record: DeliveryRecord) -> Delivery {
    Delivery {
        id,
        workspace_id: workspace,
        event_id: EventId(record.event_id),
        rule_id: RuleId(record.rule_id),
        connection_id: ConnectionId(record.connection_id),
        status: record.status.into(),
        attempt_count: record.attempt_count,
        next_attempt_at_ms: record.next_attempt_at_ms,
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        alert: record.alert,
        suppressed_before: record.suppressed_before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StoredDeliveryStatus;
    use redb::{Database, ReadableDatabase};

    /// A delivery of `event` after one attempt, in a final `status`.
    fn finished_delivery(event: u128, status: StoredDeliveryStatus) -> DeliveryRecord {
        DeliveryRecord {
            event_id: event,
            rule_id: 1,
            connection_id: 2,
            status,
            attempt_count: 1,
            round_attempts: 1,
            next_attempt_at_ms: None,
            created_at_ms: 1,
            updated_at_ms: 1,
            alert: None,
            suppressed_before: 0,
            first_attempt: None,
        }
    }

    #[test]
    fn a_sparse_status_filter_pages_through_with_a_scan_budget_and_misses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("list.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut deliveries = txn.open_table(DELIVERIES).unwrap();
            for id in 0..30u128 {
                let status = if id % 10 == 5 {
                    StoredDeliveryStatus::Dead
                } else {
                    StoredDeliveryStatus::Succeeded
                };
                let record = finished_delivery(id, status);
                deliveries
                    .insert((7, id), record.encode().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let mut query = DeliveryQuery {
            status: Some(DeliveryStatus::Dead),
            limit: 50,
            ..DeliveryQuery::default()
        };
        let (mut found, mut pages) = (Vec::new(), 0);
        loop {
            let page = list_scanning_at_most(&read, WorkspaceId(7), &query, 7).unwrap();
            pages += 1;
            found.extend(page.deliveries.iter().map(|delivery| delivery.id.0));
            match page.next {
                Some(cursor) => query.before = Some(cursor),
                None => break,
            }
        }
        assert_eq!(found, [25, 15, 5], "newest first, none skipped");
        assert_eq!(pages, 5, "30 rows at 7 a page: the budget bounds each");
    }

    #[test]
    fn an_events_deliveries_page_newest_first_from_its_list_or_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("list.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut index = txn.open_table(EVENT_DELIVERIES).unwrap();
            let mut deliveries = txn.open_table(DELIVERIES).unwrap();
            // Event 1 lists its deliveries; event 2 (version 1) has index
            // rows; event 3 (imported) has both.
            for (event, listed, indexed) in
                [(1u128, true, false), (2, false, true), (3, true, true)]
            {
                let ids: Vec<u128> = (0..3).map(|n| event * 100 + n).collect();
                let record = EventRecord::for_tests(listed.then(|| ids.clone()));
                events
                    .insert((7, event), record.encode().as_slice())
                    .unwrap();
                for &id in &ids {
                    let delivery = finished_delivery(event, StoredDeliveryStatus::Succeeded);
                    deliveries
                        .insert((7, id), delivery.encode().as_slice())
                        .unwrap();
                    if indexed {
                        index.insert((7, event, id), ()).unwrap();
                    }
                }
            }
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        for event in [1u128, 2, 3] {
            let mut query = DeliveryQuery {
                event_id: Some(EventId(event)),
                limit: 1,
                ..DeliveryQuery::default()
            };
            let mut found = Vec::new();
            loop {
                let page = list(&read, WorkspaceId(7), &query).unwrap();
                found.extend(page.deliveries.iter().map(|delivery| delivery.id.0));
                match page.next {
                    Some(cursor) => query.before = Some(cursor),
                    None => break,
                }
                assert!(found.len() <= 3, "event {event}: {found:?}");
            }
            let base = event * 100;
            assert_eq!(found, [base + 2, base + 1, base], "event {event}");
        }
        let query = DeliveryQuery {
            event_id: Some(EventId(4)),
            limit: 10,
            ..DeliveryQuery::default()
        };
        assert!(
            list(&read, WorkspaceId(7), &query)
                .unwrap()
                .deliveries
                .is_empty()
        );
    }

    #[test]
    fn only_queue_rows_that_stand_for_no_attempt_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("queue.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        txn.open_table(WORKSPACES)
            .unwrap()
            .insert(7, b"ws".as_slice())
            .unwrap();
        let delivery = |due: u64| DeliveryRecord {
            event_id: 1,
            rule_id: 1,
            connection_id: 2,
            status: StoredDeliveryStatus::Retrying,
            attempt_count: 1,
            round_attempts: 1,
            next_attempt_at_ms: Some(due),
            created_at_ms: 1,
            updated_at_ms: 1,
            alert: None,
            suppressed_before: 0,
            first_attempt: None,
        };
        txn.open_table(DELIVERIES)
            .unwrap()
            .insert((7, 10), delivery(500).encode().as_slice())
            .unwrap();
        {
            let mut queue = txn.open_table(QUEUE).unwrap();
            for (due, id) in [(500, 10), (400, 10), (500, 11)] {
                queue.insert((2, due, id), 7).unwrap();
            }
        }
        let entry = |due_ms, id| QueueEntry {
            due_ms,
            delivery_id: DeliveryId(id),
            workspace_id: WorkspaceId(7),
            connection_id: ConnectionId(2),
        };
        assert!(
            !drop_stale_queue_entry(&txn, &entry(500, 10)).unwrap(),
            "live"
        );
        assert!(
            drop_stale_queue_entry(&txn, &entry(400, 10)).unwrap(),
            "old due"
        );
        assert!(
            drop_stale_queue_entry(&txn, &entry(500, 11)).unwrap(),
            "no delivery"
        );
        assert!(
            !drop_stale_queue_entry(&txn, &entry(500, 11)).unwrap(),
            "gone"
        );
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let all = LaneRead {
            connection_id: ConnectionId(2),
            from: None,
            due_by: u64::MAX,
            limit: usize::MAX,
        };
        let left = queue_rows(&read, &[all]).unwrap();
        assert_eq!(left[0].entries, [entry(500, 10)]);
    }

    /// Connection `c`'s entry for delivery `id`, due at `due`, workspace 7.
    fn queued(c: u128, due: u64, id: u128) -> QueueEntry {
        QueueEntry {
            due_ms: due,
            delivery_id: DeliveryId(id),
            workspace_id: WorkspaceId(7),
            connection_id: ConnectionId(c),
        }
    }

    #[test]
    fn heads_skip_each_backlog_and_rows_page_through_one_connection_in_due_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("queue.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        {
            let mut queue = txn.open_table(QUEUE).unwrap();
            // Connection 1: a backlog of 1,000; connection 5: three entries,
            // inserted out of order; connection u128::MAX: one.
            for id in 0..1_000u128 {
                queue.insert((1, 100 + id as u64, id), 7).unwrap();
            }
            for (due, id) in [(300, 2_002), (100, 2_001), (200, 2_000)] {
                queue.insert((5, due, id), 7).unwrap();
            }
            queue.insert((u128::MAX, 50, 3_000), 7).unwrap();
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();

        let heads = queue_heads(&read).unwrap();
        assert_eq!(heads.backlog, 1_004);
        let firsts: Vec<_> = heads
            .heads
            .iter()
            .map(|head| (head.connection_id.0, head.first.0, head.first.1.0))
            .collect();
        assert_eq!(
            firsts,
            [(1, 100, 0), (5, 100, 2_001), (u128::MAX, 50, 3_000)]
        );

        let reads = [
            LaneRead {
                connection_id: ConnectionId(5),
                from: None,
                due_by: u64::MAX,
                limit: 2,
            },
            LaneRead {
                connection_id: ConnectionId(5),
                from: Some((200, DeliveryId(2_000))),
                due_by: u64::MAX,
                limit: 5,
            },
            LaneRead {
                connection_id: ConnectionId(1),
                from: Some((598, DeliveryId(498))),
                due_by: u64::MAX,
                limit: 2,
            },
            LaneRead {
                connection_id: ConnectionId(9),
                from: None,
                due_by: u64::MAX,
                limit: 2,
            },
            LaneRead {
                connection_id: ConnectionId(5),
                from: None,
                due_by: 250,
                limit: 5,
            },
        ];
        let rows = queue_rows(&read, &reads).unwrap();
        assert_eq!(
            rows[0],
            LaneRows {
                entries: vec![queued(5, 100, 2_001), queued(5, 200, 2_000)],
                next: Some((300, DeliveryId(2_002))),
            }
        );
        assert_eq!(
            rows[1],
            LaneRows {
                entries: vec![queued(5, 200, 2_000), queued(5, 300, 2_002)],
                next: None,
            },
            "from is inclusive; the last read of a connection has no next"
        );
        assert_eq!(rows[2].entries, [queued(1, 598, 498), queued(1, 599, 499)],);
        assert_eq!(rows[2].next, Some((600, DeliveryId(500))));
        assert_eq!(rows[3], LaneRows::default(), "an empty connection");
        assert_eq!(
            rows[4],
            LaneRows {
                entries: vec![queued(5, 100, 2_001), queued(5, 200, 2_000)],
                next: Some((300, DeliveryId(2_002))),
            },
            "entries due after due_by are left, and the first is next"
        );
    }

    #[test]
    fn the_first_queue_layout_is_moved_to_the_per_connection_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("legacy.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        {
            let mut legacy = txn.open_table(LEGACY_QUEUE).unwrap();
            for (due, id, connection) in [(10, 1, 4), (20, 2, 3), (30, 3, 4)] {
                let record = QueueRecord {
                    workspace_id: 7,
                    connection_id: connection,
                };
                legacy
                    .insert((due, id), record.encode().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();

        let txn = db.begin_write().unwrap();
        assert_eq!(migrate_legacy_queue(&txn).unwrap(), 3);
        txn.commit().unwrap();
        let txn = db.begin_write().unwrap();
        assert_eq!(migrate_legacy_queue(&txn).unwrap(), 0, "done once");
        txn.commit().unwrap();

        let read = db.begin_read().unwrap();
        let names: Vec<String> = read
            .list_tables()
            .unwrap()
            .map(|table| table.name().to_string())
            .collect();
        assert!(!names.contains(&"queue".to_string()), "{names:?}");
        let reads = [3, 4].map(|connection| LaneRead {
            connection_id: ConnectionId(connection),
            from: None,
            due_by: u64::MAX,
            limit: 10,
        });
        let rows = queue_rows(&read, &reads).unwrap();
        assert_eq!(rows[0].entries, [queued(3, 20, 2)]);
        assert_eq!(rows[1].entries, [queued(4, 10, 1), queued(4, 30, 3)]);
    }

    /// A first attempt that ends its delivery with short text is kept in
    /// the delivery's row; one that retries, one with a long error page,
    /// and every later one are attempt rows numbered by attempt; readers
    /// see them all, in order.
    #[test]
    fn a_short_final_first_attempt_is_kept_in_its_delivery_and_the_others_are_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("attempts.redb")).unwrap();
        let ws = WorkspaceId(1);
        let txn = db.begin_write().unwrap();
        crate::store::redb_backend::tables::create_all(&txn).unwrap();
        txn.open_table(WORKSPACES)
            .unwrap()
            .insert(ws.0, b"ws".as_slice())
            .unwrap();
        for id in [10, 11, 12] {
            let record = DeliveryRecord {
                event_id: id,
                rule_id: 2,
                connection_id: 3,
                status: StoredDeliveryStatus::Pending,
                attempt_count: 0,
                round_attempts: 0,
                next_attempt_at_ms: Some(5),
                created_at_ms: 5,
                updated_at_ms: 5,
                alert: None,
                suppressed_before: 0,
                first_attempt: None,
            };
            txn.open_table(DELIVERIES)
                .unwrap()
                .insert((ws.0, id), record.encode().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();

        let outcome = |id: u128, next: NextStep, response: &str| AttemptOutcome {
            workspace_id: ws,
            delivery_id: DeliveryId(id),
            attempt: Attempt {
                at_ms: 10,
                duration_ms: 1,
                status_code: Some(200),
                error: None,
                response: Some(response.into()),
            },
            next,
            connection_status: None,
            pause_connection_until: None,
        };
        let error_page = "x".repeat(KEPT_ATTEMPT_TEXT_BYTES + 1);
        let txn = db.begin_write().unwrap();
        {
            let mut scope = WriteScope::new(&txn);
            for (id, next, response) in [
                (10, NextStep::Succeeded, "ok"),
                (11, NextStep::RetryAt(50), "busy"),
                (11, NextStep::Succeeded, "ok"),
                (12, NextStep::Dead, error_page.as_str()),
            ] {
                let recorded = record_attempt(&mut scope, &outcome(id, next, response)).unwrap();
                assert!(recorded.is_some());
            }
        }
        txn.commit().unwrap();

        let read = db.begin_read().unwrap();
        let rows: Vec<(u128, u32)> = read
            .open_table(ATTEMPTS)
            .unwrap()
            .iter()
            .unwrap()
            .map(|row| row.unwrap().0.value())
            .collect();
        assert_eq!(rows, [(11, 1), (11, 2), (12, 1)]);
        let responses = |id: u128| -> Vec<String> {
            let (delivery, attempts) = get_with_attempts(&read, ws, DeliveryId(id))
                .unwrap()
                .unwrap();
            assert_eq!(delivery.attempt_count as usize, attempts.len());
            attempts
                .into_iter()
                .map(|attempt| attempt.response.unwrap_or_default())
                .collect()
        };
        assert_eq!(responses(10), ["ok"]);
        assert_eq!(responses(11), ["busy", "ok"]);
        assert_eq!(responses(12), std::slice::from_ref(&error_page));
        let kept = |id: u128| {
            let table = read.open_table(DELIVERIES).unwrap();
            decode::<DeliveryRecord>(table.get((ws.0, id)).unwrap())
                .unwrap()
                .unwrap()
                .first_attempt
                .is_some()
        };
        assert_eq!((kept(10), kept(11), kept(12)), (true, false, false));
    }
}
