use super::tables::*;
use super::{decode, events};
use crate::model::{KeyKind, Workspace, WorkspaceId, now_ms};
use crate::store::codec::Record;
use crate::store::records::{ApiKeyRecord, DeliveryRecord, StoredKeyKind, WorkspaceRecord};
use crate::store::{KeyHash, NewWorkspace, StoreError};
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, WriteTransaction};

pub fn create(txn: &WriteTransaction, new: &NewWorkspace) -> Result<(), StoreError> {
    let id = new.workspace.id.0;
    let record = WorkspaceRecord {
        name: new.workspace.name.clone(),
        created_at_ms: new.workspace.created_at_ms,
        publishable_key_hash: new.publishable_key_hash,
        secret_key_hash: new.secret_key_hash,
        meshes_key_hash: Some(new.meshes_key_hash),
    };
    txn.open_table(WORKSPACES)?
        .insert(id, record.encode().as_slice())?;
    insert_keys(txn, id, &record)
}

/// Removes the workspace, its keys, connections, rules and idempotency keys
/// at once, and marks it for [`purge_step`], which removes its events,
/// deliveries with their queue entries, and attempts a bounded number at a
/// time: one big transaction would hold the single writer (and every
/// ingest) for as long as it takes. Meanwhile a queue entry of it that comes
/// due is found stale (its workspace is gone) and dropped.
pub fn delete(txn: &WriteTransaction, id: WorkspaceId) -> Result<bool, StoreError> {
    let ws = id.0;
    let Some(record) = decode::<WorkspaceRecord>(txn.open_table(WORKSPACES)?.remove(ws)?)? else {
        return Ok(false);
    };
    remove_keys(txn, &record)?;
    let whole = (ws, 0)..=(ws, u128::MAX);
    txn.open_table(CONNECTIONS)?
        .retain_in(whole.clone(), |_, _| false)?;
    txn.open_table(RULES)?.retain_in(whole, |_, _| false)?;
    events::forget_idempotency(txn, ws)?;
    super::noise::forget_workspace(txn, ws)?;
    super::threads::forget_workspace(txn, ws)?;
    txn.open_table(PURGES)?.insert(ws, now_ms())?;
    Ok(true)
}

/// Removes about `budget` rows (deliveries with their attempts, event index
/// entries, events) of one deleted workspace; a delivery always goes with
/// all its attempts, so a step can pass the budget by that much. Resolves to whether
/// deleted workspaces remain to be purged.
pub fn purge_step(txn: &WriteTransaction, budget: usize) -> Result<bool, StoreError> {
    let mut purges = txn.open_table(PURGES)?;
    let Some(ws) = purges.first()?.map(|(key, _)| key.value()) else {
        return Ok(false);
    };
    let whole = (ws, 0)..=(ws, u128::MAX);
    let mut left = budget.max(1);
    {
        let mut deliveries = txn.open_table(DELIVERIES)?;
        let mut attempts = txn.open_table(ATTEMPTS)?;
        let mut queue = txn.open_table(QUEUE)?;
        let mut removed = deliveries.extract_from_if(whole.clone(), |_, _| true)?;
        while left > 0 {
            let Some(entry) = removed.next() else { break };
            let (key, value) = entry?;
            let delivery = key.value().1;
            // Its queue entry goes with it. (A record that cannot be read
            // says nothing about one; the purge must not stall on it.)
            let queued = DeliveryRecord::decode(value.value())
                .ok()
                .and_then(|record| Some((record.connection_id, record.next_attempt_at_ms?)));
            if let Some((connection, due)) = queued {
                queue.remove((connection, due, delivery))?;
            }
            // A delivery's attempts go with it, and count against the budget.
            let its_attempts = attempts
                .extract_from_if((delivery, 0)..=(delivery, u32::MAX), |_, _| true)?
                .try_fold(0, |count, entry| entry.map(|_| count + 1))?;
            left = left.saturating_sub(1 + its_attempts);
        }
    }
    left -= txn
        .open_table(EVENT_DELIVERIES)?
        .extract_from_if((ws, 0, 0)..=(ws, u128::MAX, u128::MAX), |_, ()| true)?
        .take(left)
        .try_fold(0, |removed, entry| entry.map(|_| removed + 1))?;
    left -= txn
        .open_table(EVENTS)?
        .extract_from_if(whole, |_, _| true)?
        .take(left)
        .try_fold(0, |removed, entry| entry.map(|_| removed + 1))?;
    if left > 0 {
        // The budget was not used up: nothing of this workspace is left.
        purges.remove(ws)?;
        return Ok(!purges.is_empty()?);
    }
    Ok(true)
}

/// How many deleted workspaces still have rows to purge.
pub fn pending_purges(txn: &ReadTransaction) -> Result<u64, StoreError> {
    Ok(txn.open_table(PURGES)?.len()?)
}

pub fn rotate_keys(
    txn: &WriteTransaction,
    id: WorkspaceId,
    publishable: &KeyHash,
    secret: &KeyHash,
    meshes: &KeyHash,
) -> Result<Option<Workspace>, StoreError> {
    let mut workspaces = txn.open_table(WORKSPACES)?;
    let Some(mut record) = decode::<WorkspaceRecord>(workspaces.get(id.0)?)? else {
        return Ok(None);
    };
    remove_keys(txn, &record)?;
    record.publishable_key_hash = *publishable;
    record.secret_key_hash = *secret;
    record.meshes_key_hash = Some(*meshes);
    workspaces.insert(id.0, record.encode().as_slice())?;
    insert_keys(txn, id.0, &record)?;
    Ok(Some(workspace_from(id.0, record)))
}

pub fn list(txn: &ReadTransaction) -> Result<Vec<Workspace>, StoreError> {
    let table = txn.open_table(WORKSPACES)?;
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

pub fn get(txn: &ReadTransaction, id: WorkspaceId) -> Result<Option<Workspace>, StoreError> {
    let record = decode::<WorkspaceRecord>(txn.open_table(WORKSPACES)?.get(id.0)?)?;
    Ok(record.map(|record| workspace_from(id.0, record)))
}

pub fn key(
    txn: &ReadTransaction,
    hash: &KeyHash,
) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError> {
    let record = decode::<ApiKeyRecord>(txn.open_table(API_KEYS)?.get(hash.as_slice())?)?;
    Ok(record.map(|record| (WorkspaceId(record.workspace_id), record.kind.into())))
}

/// The workspace's keys with their kinds.
fn keys_of(record: &WorkspaceRecord) -> impl Iterator<Item = (&KeyHash, StoredKeyKind)> {
    [
        (&record.publishable_key_hash, StoredKeyKind::Publishable),
        (&record.secret_key_hash, StoredKeyKind::Secret),
    ]
    .into_iter()
    .chain(
        record
            .meshes_key_hash
            .as_ref()
            .map(|hash| (hash, StoredKeyKind::MeshesPublishable)),
    )
}

fn insert_keys(
    txn: &WriteTransaction,
    ws: u128,
    record: &WorkspaceRecord,
) -> Result<(), StoreError> {
    let mut keys = txn.open_table(API_KEYS)?;
    for (hash, kind) in keys_of(record) {
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
    for (hash, _) in keys_of(record) {
        keys.remove(hash.as_slice())?;
    }
    Ok(())
}

fn workspace_from(id: u128, record: WorkspaceRecord) -> Workspace {
    Workspace {
        id: WorkspaceId(id),
        name: record.name,
        created_at_ms: record.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewWorkspace;
    use crate::store::records::StoredDeliveryStatus;
    use redb::{Database, ReadableDatabase};

    /// A workspace with `events` events, one delivery each, two attempts each.
    fn seed(txn: &WriteTransaction, ws: u128, events: u128) {
        create(
            txn,
            &NewWorkspace {
                workspace: Workspace {
                    id: WorkspaceId(ws),
                    name: format!("ws{ws}"),
                    created_at_ms: 1,
                },
                publishable_key_hash: [ws as u8; 32],
                secret_key_hash: [ws as u8 + 100; 32],
                meshes_key_hash: [ws as u8 + 200; 32],
            },
        )
        .unwrap();
        let mut event_table = txn.open_table(EVENTS).unwrap();
        let mut deliveries = txn.open_table(DELIVERIES).unwrap();
        let mut by_event = txn.open_table(EVENT_DELIVERIES).unwrap();
        let mut attempts = txn.open_table(ATTEMPTS).unwrap();
        let mut queue = txn.open_table(QUEUE).unwrap();
        for event in 0..events {
            let delivery = ws * 1_000_000 + event;
            event_table.insert((ws, event), b"e".as_slice()).unwrap();
            // Every other delivery is still queued.
            let due = (event % 2 == 0).then_some(1_000 + event as u64);
            let record = DeliveryRecord {
                event_id: event,
                rule_id: 1,
                connection_id: ws,
                status: StoredDeliveryStatus::Retrying,
                attempt_count: 2,
                round_attempts: 2,
                next_attempt_at_ms: due,
                created_at_ms: 1,
                updated_at_ms: 1,
                alert: None,
                suppressed_before: 0,
                first_attempt: None,
            };
            deliveries
                .insert((ws, delivery), record.encode().as_slice())
                .unwrap();
            if let Some(due) = due {
                queue.insert((ws, due, delivery), ws).unwrap();
            }
            by_event.insert((ws, event, delivery), ()).unwrap();
            for attempt in 1..=2 {
                attempts
                    .insert((delivery, attempt), b"a".as_slice())
                    .unwrap();
            }
        }
    }

    /// Events, deliveries, event index entries, attempts and queue entries
    /// of `ws` (whose one connection has the same id).
    fn rows(db: &Database, ws: u128) -> [usize; 5] {
        let txn = db.begin_read().unwrap();
        let whole = (ws, 0)..=(ws, u128::MAX);
        let seeded = (ws * 1_000_000, 0)..=(ws * 1_000_000 + 999_999, u32::MAX);
        [
            txn.open_table(EVENTS)
                .unwrap()
                .range(whole.clone())
                .unwrap()
                .count(),
            txn.open_table(DELIVERIES)
                .unwrap()
                .range(whole)
                .unwrap()
                .count(),
            txn.open_table(EVENT_DELIVERIES)
                .unwrap()
                .range((ws, 0, 0)..=(ws, u128::MAX, u128::MAX))
                .unwrap()
                .count(),
            txn.open_table(ATTEMPTS)
                .unwrap()
                .range(seeded)
                .unwrap()
                .count(),
            txn.open_table(QUEUE)
                .unwrap()
                .range((ws, 0, 0)..=(ws, u64::MAX, u128::MAX))
                .unwrap()
                .count(),
        ]
    }

    #[test]
    fn a_deleted_workspace_is_purged_in_bounded_steps_and_others_are_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("purge.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        seed(&txn, 1, 25);
        seed(&txn, 2, 5);
        txn.commit().unwrap();

        let txn = db.begin_write().unwrap();
        assert!(delete(&txn, WorkspaceId(1)).unwrap());
        assert!(!delete(&txn, WorkspaceId(1)).unwrap(), "already gone");
        txn.commit().unwrap();
        // Gone from the API's view at once; its rows wait for the purge.
        let read = db.begin_read().unwrap();
        assert!(get(&read, WorkspaceId(1)).unwrap().is_none());
        assert!(key(&read, &[1; 32]).unwrap().is_none());
        assert_eq!(pending_purges(&read).unwrap(), 1);
        drop(read);
        assert_eq!(rows(&db, 1), [25, 25, 25, 50, 13]);

        let mut steps = 0;
        loop {
            let txn = db.begin_write().unwrap();
            let more = purge_step(&txn, 10).unwrap();
            txn.commit().unwrap();
            steps += 1;
            if !more {
                break;
            }
            assert!(steps < 100, "the purge makes progress");
        }
        // 25 deliveries with 50 attempts, 25 index entries and 25 events at
        // about 10 rows a step: a delivery and its attempts go together, so
        // a step may pass the budget by one delivery's attempts (4 × 3 rows).
        assert_eq!(steps, 12);
        assert_eq!(rows(&db, 1), [0, 0, 0, 0, 0]);
        assert_eq!(rows(&db, 2), [5, 5, 5, 10, 3]);
        assert_eq!(pending_purges(&db.begin_read().unwrap()).unwrap(), 0);
        let txn = db.begin_write().unwrap();
        assert!(!purge_step(&txn, 10).unwrap(), "nothing left to do");
    }
}
