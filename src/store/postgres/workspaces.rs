//! Workspaces and their key hashes; deletion and the bounded purge after it.

use super::changes;
use super::columns::{get_id, get_ms, id, key_kind, key_kind_from, ms};
use super::error::PgResult;
use crate::model::{KeyKind, Workspace, WorkspaceId, now_ms};
use crate::store::{KeyHash, NewWorkspace};
use tokio_postgres::{GenericClient, Row, Transaction};

pub async fn create(txn: &Transaction<'_>, new: &NewWorkspace) -> PgResult<()> {
    let ws = id(new.workspace.id.0);
    txn.execute(
        "INSERT INTO workspaces (id, name, created_at_ms, publishable_key_hash, secret_key_hash,
                                 meshes_key_hash)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &ws,
            &new.workspace.name,
            &ms(new.workspace.created_at_ms),
            &new.publishable_key_hash.as_slice(),
            &new.secret_key_hash.as_slice(),
            &new.meshes_key_hash.as_slice(),
        ],
    )
    .await?;
    let keys = Keys {
        publishable: &new.publishable_key_hash,
        secret: &new.secret_key_hash,
        meshes: &new.meshes_key_hash,
    };
    insert_keys(txn, &ws, &keys).await
}

/// Removes the workspace, its keys, connections, rules, queue entries,
/// idempotency keys, noise state and Slack threads at once, and marks it
/// for [`purge_step`], which removes its events, deliveries and attempts
/// a bounded number at a time.
pub async fn delete(txn: &Transaction<'_>, workspace: WorkspaceId) -> PgResult<bool> {
    let ws = id(workspace.0);
    let removed = txn
        .execute("DELETE FROM workspaces WHERE id = $1", &[&ws])
        .await?;
    if removed == 0 {
        return Ok(false);
    }
    for statement in [
        "DELETE FROM api_keys WHERE workspace_id = $1",
        "DELETE FROM connections WHERE workspace_id = $1",
        "DELETE FROM rules WHERE workspace_id = $1",
        "DELETE FROM delivery_queue WHERE workspace_id = $1",
        "DELETE FROM idempotency_keys WHERE workspace_id = $1",
        "DELETE FROM alert_noise WHERE workspace_id = $1",
        "DELETE FROM rule_noise WHERE workspace_id = $1",
        "DELETE FROM slack_threads WHERE workspace_id = $1",
    ] {
        txn.execute(statement, &[&ws]).await?;
    }
    txn.execute(
        "INSERT INTO workspace_purges (workspace_id, deleted_at_ms) VALUES ($1, $2)
         ON CONFLICT (workspace_id) DO NOTHING",
        &[&ws, &ms(now_ms())],
    )
    .await?;
    changes::bump(txn, workspace).await?;
    Ok(true)
}

/// Removes up to about `budget` rows of the first deleted workspace
/// (deliveries with all their attempts, then events); resolves to whether
/// deleted workspaces remain to be purged.
pub async fn purge_step(txn: &Transaction<'_>, budget: usize) -> PgResult<bool> {
    let Some(row) = txn
        .query_opt(
            "SELECT workspace_id FROM workspace_purges ORDER BY workspace_id LIMIT 1
             FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await?
    else {
        return Ok(false);
    };
    let ws: Vec<u8> = row.try_get(0)?;
    let limit = i64::try_from(budget.max(1)).unwrap_or(i64::MAX);
    // A delivery goes with all its attempts (so a step can pass the budget
    // by that much).
    let gone = txn
        .query(
            "WITH doomed AS (
                 DELETE FROM deliveries WHERE (workspace_id, id) IN (
                     SELECT workspace_id, id FROM deliveries WHERE workspace_id = $1 LIMIT $2)
                 RETURNING id),
             queue AS (
                 DELETE FROM delivery_queue WHERE delivery_id IN (SELECT id FROM doomed)),
             attempts AS (
                 DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM doomed)
                 RETURNING 1)
             SELECT (SELECT count(*) FROM doomed), (SELECT count(*) FROM attempts)",
            &[&ws, &limit],
        )
        .await?;
    let used: i64 = gone
        .first()
        .map_or(0, |row| row.get::<_, i64>(0) + row.get::<_, i64>(1));
    let left = limit.saturating_sub(used);
    let mut events = 0;
    if left > 0 {
        events = txn
            .execute(
                "DELETE FROM events WHERE (workspace_id, id) IN (
                     SELECT workspace_id, id FROM events WHERE workspace_id = $1 LIMIT $2)",
                &[&ws, &left],
            )
            .await?;
    }
    if left > 0 && (events as i64) < left {
        // The budget was not used up: nothing of this workspace is left.
        txn.execute(
            "DELETE FROM workspace_purges WHERE workspace_id = $1",
            &[&ws],
        )
        .await?;
        changes::forget(txn, &ws).await?;
        let more = txn
            .query_one("SELECT EXISTS (SELECT 1 FROM workspace_purges)", &[])
            .await?;
        return Ok(more.try_get(0)?);
    }
    Ok(true)
}

pub async fn pending_purges<C: GenericClient + Sync>(client: &C) -> PgResult<u64> {
    let row = client
        .query_one("SELECT count(*) FROM workspace_purges", &[])
        .await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
}

/// A workspace's three key hashes.
pub struct Keys<'a> {
    pub publishable: &'a KeyHash,
    pub secret: &'a KeyHash,
    pub meshes: &'a KeyHash,
}

/// Replaces all three keys; the old ones stop working on commit.
pub async fn rotate_keys(
    txn: &Transaction<'_>,
    workspace: WorkspaceId,
    keys: &Keys<'_>,
) -> PgResult<Option<Workspace>> {
    let ws = id(workspace.0);
    let Some(row) = txn
        .query_opt(
            "UPDATE workspaces
             SET publishable_key_hash = $2, secret_key_hash = $3, meshes_key_hash = $4
             WHERE id = $1 RETURNING id, name, created_at_ms",
            &[
                &ws,
                &keys.publishable.as_slice(),
                &keys.secret.as_slice(),
                &keys.meshes.as_slice(),
            ],
        )
        .await?
    else {
        return Ok(None);
    };
    txn.execute("DELETE FROM api_keys WHERE workspace_id = $1", &[&ws])
        .await?;
    insert_keys(txn, &ws, keys).await?;
    changes::bump(txn, workspace).await?;
    workspace_from(&row).map(Some)
}

pub async fn list<C: GenericClient + Sync>(client: &C) -> PgResult<Vec<Workspace>> {
    client
        .query(
            "SELECT id, name, created_at_ms FROM workspaces ORDER BY id",
            &[],
        )
        .await?
        .iter()
        .map(workspace_from)
        .collect()
}

pub async fn get<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
) -> PgResult<Option<Workspace>> {
    client
        .query_opt(
            "SELECT id, name, created_at_ms FROM workspaces WHERE id = $1",
            &[&id(workspace.0)],
        )
        .await?
        .as_ref()
        .map(workspace_from)
        .transpose()
}

pub async fn key<C: GenericClient + Sync>(
    client: &C,
    hash: &KeyHash,
) -> PgResult<Option<(WorkspaceId, KeyKind)>> {
    let Some(row) = client
        .query_opt(
            "SELECT workspace_id, kind FROM api_keys WHERE hash = $1",
            &[&hash.as_slice()],
        )
        .await?
    else {
        return Ok(None);
    };
    let kind = key_kind_from(row.try_get("kind")?)?;
    Ok(Some((WorkspaceId(get_id(&row, "workspace_id")?), kind)))
}

async fn insert_keys(txn: &Transaction<'_>, ws: &Vec<u8>, keys: &Keys<'_>) -> PgResult<()> {
    txn.execute(
        "INSERT INTO api_keys (hash, workspace_id, kind)
         VALUES ($1, $4, $5), ($2, $4, $6), ($3, $4, $7)",
        &[
            &keys.publishable.as_slice(),
            &keys.secret.as_slice(),
            &keys.meshes.as_slice(),
            ws,
            &key_kind(KeyKind::Publishable),
            &key_kind(KeyKind::Secret),
            &key_kind(KeyKind::MeshesPublishable),
        ],
    )
    .await?;
    Ok(())
}

fn workspace_from(row: &Row) -> PgResult<Workspace> {
    Ok(Workspace {
        id: WorkspaceId(get_id(row, "id")?),
        name: row.try_get("name")?,
        created_at_ms: get_ms(row, "created_at_ms")?,
    })
}
