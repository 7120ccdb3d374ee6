use super::tables::*;
use super::{decode, events};
use crate::model::{KeyKind, Workspace, WorkspaceId};
use crate::store::codec::Record;
use crate::store::records::{ApiKeyRecord, StoredKeyKind, WorkspaceRecord};
use crate::store::{KeyHash, NewWorkspace, StoreError};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

pub fn create(txn: &WriteTransaction, new: &NewWorkspace) -> Result<(), StoreError> {
    let id = new.workspace.id.0;
    let record = WorkspaceRecord {
        name: new.workspace.name.clone(),
        created_at_ms: new.workspace.created_at_ms,
        publishable_key_hash: new.publishable_key_hash,
        secret_key_hash: new.secret_key_hash,
    };
    txn.open_table(WORKSPACES)?
        .insert(id, record.encode().as_slice())?;
    insert_keys(txn, id, &new.publishable_key_hash, &new.secret_key_hash)
}

/// Removes the workspace and everything it owns.
pub fn delete(txn: &WriteTransaction, id: WorkspaceId) -> Result<bool, StoreError> {
    let ws = id.0;
    let Some(record) = decode::<WorkspaceRecord>(txn.open_table(WORKSPACES)?.remove(ws)?)? else {
        return Ok(false);
    };
    remove_keys(txn, &record)?;
    let whole = (ws, 0)..=(ws, u128::MAX);
    txn.open_table(EVENTS)?
        .retain_in(whole.clone(), |_, _| false)?;
    txn.open_table(CONNECTIONS)?
        .retain_in(whole.clone(), |_, _| false)?;
    txn.open_table(RULES)?
        .retain_in(whole.clone(), |_, _| false)?;
    let mut delivery_ids = Vec::new();
    {
        let deliveries = txn.open_table(DELIVERIES)?;
        for entry in deliveries.range(whole.clone())? {
            delivery_ids.push(entry?.0.value().1);
        }
    }
    txn.open_table(DELIVERIES)?.retain_in(whole, |_, _| false)?;
    let mut attempts = txn.open_table(ATTEMPTS)?;
    for delivery in &delivery_ids {
        attempts.retain_in((*delivery, 0)..=(*delivery, u32::MAX), |_, _| false)?;
    }
    txn.open_table(EVENT_DELIVERIES)?
        .retain_in((ws, 0, 0)..=(ws, u128::MAX, u128::MAX), |_, ()| false)?;
    events::forget_queue_and_idempotency(txn, ws)?;
    Ok(true)
}

pub fn rotate_keys(
    txn: &WriteTransaction,
    id: WorkspaceId,
    publishable: &KeyHash,
    secret: &KeyHash,
) -> Result<Option<Workspace>, StoreError> {
    let mut workspaces = txn.open_table(WORKSPACES)?;
    let Some(mut record) = decode::<WorkspaceRecord>(workspaces.get(id.0)?)? else {
        return Ok(None);
    };
    remove_keys(txn, &record)?;
    record.publishable_key_hash = *publishable;
    record.secret_key_hash = *secret;
    workspaces.insert(id.0, record.encode().as_slice())?;
    insert_keys(txn, id.0, publishable, secret)?;
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
