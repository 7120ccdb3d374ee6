//! Connections: public config as jsonb, secrets as the sealed bytes.

use super::changes;
use super::columns::{
    connection_kind_from, connection_status, connection_status_from, get_id, get_ms, id, ms,
};
use super::error::PgResult;
use crate::model::{Connection, ConnectionId, DeliveryId, RuleId, WorkspaceId, now_ms};
use crate::store::{ConnectionPatch, DeleteConnection, PatchOutcome};
use tokio_postgres::{GenericClient, Row, Transaction};

const COLUMNS: &str = "workspace_id, id, name, kind, status, config, sealed_secrets, \
                       created_at_ms, updated_at_ms";

pub async fn create(txn: &Transaction<'_>, connection: &Connection) -> PgResult<()> {
    txn.execute(
        "INSERT INTO connections (workspace_id, id, name, kind, status, config, sealed_secrets,
                                  created_at_ms, updated_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &id(connection.workspace_id.0),
            &id(connection.id.0),
            &connection.name,
            &connection.kind.as_str(),
            &connection_status(connection.status),
            &connection.config,
            &connection.sealed_secrets,
            &ms(connection.created_at_ms),
            &ms(connection.updated_at_ms),
        ],
    )
    .await?;
    changes::bump(txn, connection.workspace_id).await?;
    Ok(())
}

/// Applies the patch to the row as it is now (locked), so concurrent edits
/// of different fields never undo each other; `if_secrets_are` is checked
/// against the locked row (a compare-and-swap across nodes too).
pub async fn update(
    txn: &Transaction<'_>,
    workspace: WorkspaceId,
    connection: ConnectionId,
    patch: &ConnectionPatch,
) -> PgResult<PatchOutcome> {
    let Some(row) = txn
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM connections WHERE workspace_id = $1 AND id = $2 FOR UPDATE"
            ),
            &[&id(workspace.0), &id(connection.0)],
        )
        .await?
    else {
        return Ok(PatchOutcome::NotFound);
    };
    let mut current = connection_from(&row)?;
    if let Some(expected) = &patch.if_secrets_are
        && *expected != current.sealed_secrets
    {
        return Ok(PatchOutcome::Stale(current));
    }
    if let Some(name) = &patch.name {
        current.name = name.clone();
    }
    if let Some(status) = patch.status {
        current.status = status;
    }
    if let Some(config) = &patch.config {
        current.config = config.clone();
    }
    if let Some(secrets) = &patch.sealed_secrets {
        current.sealed_secrets = secrets.clone();
    }
    current.updated_at_ms = now_ms();
    txn.execute(
        "UPDATE connections SET name = $3, status = $4, config = $5, sealed_secrets = $6,
                                updated_at_ms = $7
         WHERE workspace_id = $1 AND id = $2",
        &[
            &id(workspace.0),
            &id(connection.0),
            &current.name,
            &connection_status(current.status),
            &current.config,
            &current.sealed_secrets,
            &ms(current.updated_at_ms),
        ],
    )
    .await?;
    changes::bump(txn, workspace).await?;
    Ok(PatchOutcome::Updated(current))
}

/// Refuses while rules still send to the connection.
pub async fn delete(
    txn: &Transaction<'_>,
    workspace: WorkspaceId,
    connection: ConnectionId,
) -> PgResult<DeleteConnection> {
    let (ws, con) = (id(workspace.0), id(connection.0));
    let exists = txn
        .query_opt(
            "SELECT 1 FROM connections WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
            &[&ws, &con],
        )
        .await?
        .is_some();
    if !exists {
        return Ok(DeleteConnection::NotFound);
    }
    let users = txn
        .query(
            "SELECT id FROM rules WHERE workspace_id = $1 AND connection_id = $2 ORDER BY id",
            &[&ws, &con],
        )
        .await?
        .iter()
        .map(|row| get_id(row, "id").map(RuleId))
        .collect::<PgResult<Vec<_>>>()?;
    if !users.is_empty() {
        return Ok(DeleteConnection::InUse(users));
    }
    txn.execute(
        "DELETE FROM connections WHERE workspace_id = $1 AND id = $2",
        &[&ws, &con],
    )
    .await?;
    txn.execute(
        "DELETE FROM slack_threads WHERE workspace_id = $1 AND connection_id = $2",
        &[&ws, &con],
    )
    .await?;
    changes::bump(txn, workspace).await?;
    Ok(DeleteConnection::Deleted)
}

pub async fn get<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    connection: ConnectionId,
) -> PgResult<Option<Connection>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM connections WHERE workspace_id = $1 AND id = $2"),
            &[&id(workspace.0), &id(connection.0)],
        )
        .await?
        .as_ref()
        .map(connection_from)
        .transpose()
}

/// The connection a delivery points at: a read that needs no earlier
/// answer, so it can go out together with the delivery's own
/// (`deliveries::context`).
pub async fn of_delivery<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    delivery: DeliveryId,
) -> PgResult<Option<Connection>> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM connections WHERE workspace_id = $1 AND id =
                 (SELECT connection_id FROM deliveries WHERE workspace_id = $1 AND id = $2)"
            ),
            &[&id(workspace.0), &id(delivery.0)],
        )
        .await?
        .as_ref()
        .map(connection_from)
        .transpose()
}

pub async fn list<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
) -> PgResult<Vec<Connection>> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM connections WHERE workspace_id = $1 ORDER BY id"),
            &[&id(workspace.0)],
        )
        .await?
        .iter()
        .map(connection_from)
        .collect()
}

fn connection_from(row: &Row) -> PgResult<Connection> {
    Ok(Connection {
        id: ConnectionId(get_id(row, "id")?),
        workspace_id: WorkspaceId(get_id(row, "workspace_id")?),
        name: row.try_get("name")?,
        kind: connection_kind_from(row.try_get("kind")?)?,
        status: connection_status_from(row.try_get("status")?)?,
        config: row.try_get("config")?,
        sealed_secrets: row.try_get("sealed_secrets")?,
        created_at_ms: get_ms(row, "created_at_ms")?,
        updated_at_ms: get_ms(row, "updated_at_ms")?,
    })
}
