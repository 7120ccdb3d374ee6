use super::tables::*;
use super::{decode, json_bytes, json_value};
use crate::model::RuleId;
use crate::model::{Connection, ConnectionId, WorkspaceId, now_ms};
use crate::store::codec::Record;
use crate::store::records::{ConnectionRecord, RuleRecord};
use crate::store::{ConnectionPatch, DeleteConnection, PatchOutcome, StoreError};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

pub fn create(txn: &WriteTransaction, connection: &Connection) -> Result<(), StoreError> {
    let key = (connection.workspace_id.0, connection.id.0);
    txn.open_table(CONNECTIONS)?
        .insert(key, record_from(connection).encode().as_slice())?;
    Ok(())
}

pub fn update(
    txn: &WriteTransaction,
    workspace: WorkspaceId,
    id: ConnectionId,
    patch: &ConnectionPatch,
) -> Result<PatchOutcome, StoreError> {
    let mut table = txn.open_table(CONNECTIONS)?;
    let key = (workspace.0, id.0);
    let Some(record) = decode::<ConnectionRecord>(table.get(key)?)? else {
        return Ok(PatchOutcome::NotFound);
    };
    let mut connection = connection_from(workspace, id, record)?;
    if let Some(expected) = &patch.if_secrets_are
        && *expected != connection.sealed_secrets
    {
        return Ok(PatchOutcome::Stale(connection));
    }
    if let Some(name) = &patch.name {
        connection.name = name.clone();
    }
    if let Some(status) = patch.status {
        connection.status = status;
    }
    if let Some(config) = &patch.config {
        connection.config = config.clone();
    }
    if let Some(secrets) = &patch.sealed_secrets {
        connection.sealed_secrets = secrets.clone();
    }
    connection.updated_at_ms = now_ms();
    table.insert(key, record_from(&connection).encode().as_slice())?;
    Ok(PatchOutcome::Updated(connection))
}

/// Refuses while rules still send to the connection.
pub fn delete(
    txn: &WriteTransaction,
    workspace: WorkspaceId,
    id: ConnectionId,
) -> Result<DeleteConnection, StoreError> {
    let key = (workspace.0, id.0);
    if txn.open_table(CONNECTIONS)?.get(key)?.is_none() {
        return Ok(DeleteConnection::NotFound);
    }
    let mut users = Vec::new();
    for entry in txn
        .open_table(RULES)?
        .range((workspace.0, 0)..=(workspace.0, u128::MAX))?
    {
        let (rule_key, bytes) = entry?;
        if RuleRecord::decode(bytes.value())?.connection_id == id.0 {
            users.push(RuleId(rule_key.value().1));
        }
    }
    if !users.is_empty() {
        return Ok(DeleteConnection::InUse(users));
    }
    txn.open_table(CONNECTIONS)?.remove(key)?;
    super::threads::forget_connection(txn, workspace.0, id.0)?;
    Ok(DeleteConnection::Deleted)
}

pub fn get(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    id: ConnectionId,
) -> Result<Option<Connection>, StoreError> {
    let record =
        decode::<ConnectionRecord>(txn.open_table(CONNECTIONS)?.get((workspace.0, id.0))?)?;
    record
        .map(|record| connection_from(workspace, id, record))
        .transpose()
}

pub fn list(txn: &ReadTransaction, workspace: WorkspaceId) -> Result<Vec<Connection>, StoreError> {
    let table = txn.open_table(CONNECTIONS)?;
    let mut connections = Vec::new();
    for entry in table.range((workspace.0, 0)..=(workspace.0, u128::MAX))? {
        let (key, bytes) = entry?;
        let id = ConnectionId(key.value().1);
        connections.push(connection_from(
            workspace,
            id,
            ConnectionRecord::decode(bytes.value())?,
        )?);
    }
    Ok(connections)
}

fn record_from(connection: &Connection) -> ConnectionRecord {
    ConnectionRecord {
        name: connection.name.clone(),
        kind: connection.kind.into(),
        status: connection.status.into(),
        config_json: json_bytes(&connection.config),
        sealed_secrets: connection.sealed_secrets.clone(),
        created_at_ms: connection.created_at_ms,
        updated_at_ms: connection.updated_at_ms,
    }
}

fn connection_from(
    workspace: WorkspaceId,
    id: ConnectionId,
    record: ConnectionRecord,
) -> Result<Connection, StoreError> {
    Ok(Connection {
        id,
        workspace_id: workspace,
        name: record.name,
        kind: record.kind.into(),
        status: record.status.into(),
        config: json_value(&record.config_json, "connection config")?,
        sealed_secrets: record.sealed_secrets,
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
    })
}
