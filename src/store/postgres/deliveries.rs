//! Deliveries, their attempts and their rows in the queue table (its
//! heads, reads and leases are `queue.rs`).

use super::columns::{count, get_count, get_id, get_ms, id, ids, ms, ms_from};
use super::error::{PgError, PgResult};
use super::node::Node;
use super::queue::{self, NewEntryLeases};
use super::{connections, events, rules};
use crate::model::{
    Attempt, ConnectionId, Delivery, DeliveryId, DeliveryStatus, EventId, RuleId, WorkspaceId,
    now_ms,
};
use crate::store::{
    AttemptOutcome, ConnectionPatch, DeliveryContext, DeliveryPage, DeliveryQuery, NextStep,
    QueueEntry, Requeue,
};
use std::sync::Arc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

pub const COLUMNS: &str = "workspace_id, id, event_id, rule_id, connection_id, status, \
                           attempt_count, round_attempts, next_attempt_at_ms, created_at_ms, \
                           updated_at_ms, alert, suppressed_before";

pub async fn get_with_attempts<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    delivery: DeliveryId,
) -> PgResult<Option<(Delivery, Vec<Attempt>)>> {
    let Some(row) = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM deliveries WHERE workspace_id = $1 AND id = $2"),
            &[&id(workspace.0), &id(delivery.0)],
        )
        .await?
    else {
        return Ok(None);
    };
    let attempts = client
        .query(
            "SELECT at_ms, duration_ms, status_code, error, response FROM attempts
             WHERE delivery_id = $1 ORDER BY n",
            &[&id(delivery.0)],
        )
        .await?
        .iter()
        .map(attempt_from)
        .collect::<PgResult<Vec<_>>>()?;
    Ok(Some((delivery_from(&row)?, attempts)))
}

/// Newest first from the cursor, filtered.
pub async fn list<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    query: &DeliveryQuery,
) -> PgResult<DeliveryPage> {
    let ws = id(workspace.0);
    let before = id(query.before.map_or(u128::MAX, |cursor| cursor.0));
    let wanted = i64::try_from(query.limit)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let status = query.status.map(DeliveryStatus::as_str);
    let event = query.event_id.map(|event| id(event.0));
    let connection = query.connection_id.map(|connection| id(connection.0));
    let params: [&(dyn ToSql + Sync); 6] = [&ws, &before, &wanted, &status, &event, &connection];
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM deliveries
                 WHERE workspace_id = $1 AND id < $2
                   AND ($4::text IS NULL OR status = $4)
                   AND ($5::bytea IS NULL OR event_id = $5)
                   AND ($6::bytea IS NULL OR connection_id = $6)
                 ORDER BY id DESC LIMIT $3"
            ),
            &params,
        )
        .await?;
    let mut page = DeliveryPage::default();
    for row in &rows {
        if page.deliveries.len() == query.limit {
            page.next = page.deliveries.last().map(|delivery| delivery.id);
            break;
        }
        page.deliveries.push(delivery_from(row)?);
    }
    Ok(page)
}

/// Everything one attempt needs; `None` once the delivery, its event or its
/// workspace is gone. Call it in a repeatable-read transaction: one snapshot.
/// The five reads go out together (tokio-postgres pipelines queries polled
/// at once): one round trip, each finding its row through the delivery's.
pub async fn context(
    txn: &Transaction<'_>,
    workspace: WorkspaceId,
    delivery: DeliveryId,
) -> PgResult<Option<DeliveryContext>> {
    let ws = id(workspace.0);
    let delivery_id = id(delivery.0);
    let delivery_sql =
        format!("SELECT {COLUMNS} FROM deliveries WHERE workspace_id = $1 AND id = $2");
    let (workspace_row, delivery_row, event, rule, connection) = tokio::try_join!(
        async {
            Ok::<_, PgError>(
                txn.query_opt("SELECT 1 FROM workspaces WHERE id = $1", &[&ws])
                    .await?,
            )
        },
        async { Ok::<_, PgError>(txn.query_opt(&delivery_sql, &[&ws, &delivery_id]).await?) },
        events::of_delivery(txn, workspace, delivery),
        rules::of_delivery(txn, workspace, delivery),
        connections::of_delivery(txn, workspace, delivery),
    )?;
    // A deleted workspace's deliveries linger until purged: nothing is due.
    let (Some(_), Some(row), Some(event)) = (workspace_row, delivery_row, event) else {
        return Ok(None);
    };
    Ok(Some(DeliveryContext {
        round_attempts: get_count(&row, "round_attempts")?,
        delivery: delivery_from(&row)?,
        event: Arc::new(event),
        rule: rule.map(Arc::new),
        connection: connection.map(Arc::new),
    }))
}

/// What [`record_attempt`] did.
pub enum Recorded {
    Written(Delivery),
    /// The delivery or its workspace is gone: nothing written.
    Gone,
    /// This node no longer holds the connection's lease: nothing written;
    /// the node holding it delivers the entry.
    LeaseLost(ConnectionId),
}

/// Appends the attempt, moves the delivery to its next state and its queue
/// row to its next due time (or removes it), in the caller's transaction;
/// only while `node` holds the connection's lease, which stays locked
/// (shared) until the transaction ends, so no takeover can slip in between
/// the check and the commit.
pub async fn record_attempt(
    txn: &Transaction<'_>,
    node: &Node,
    outcome: &AttemptOutcome,
) -> PgResult<Recorded> {
    let ws = id(outcome.workspace_id.0);
    let delivery_id = id(outcome.delivery_id.0);
    // A deleted workspace's deliveries linger until purged: record nothing.
    if txn
        .query_opt("SELECT 1 FROM workspaces WHERE id = $1 FOR SHARE", &[&ws])
        .await?
        .is_none()
    {
        return Ok(Recorded::Gone);
    }
    let Some(row) = txn
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM deliveries WHERE workspace_id = $1 AND id = $2 FOR UPDATE"
            ),
            &[&ws, &delivery_id],
        )
        .await?
    else {
        return Ok(Recorded::Gone);
    };
    let mut delivery = delivery_from(&row)?;
    if !queue::lock_own_lease(txn, &node.id, delivery.connection_id, now_ms()).await? {
        return Ok(Recorded::LeaseLost(delivery.connection_id));
    }
    let mut round_attempts = get_count(&row, "round_attempts")?;
    let connection = id(delivery.connection_id.0);
    if let Some(due) = delivery.next_attempt_at_ms {
        txn.execute(
            "DELETE FROM delivery_queue
             WHERE connection_id = $1 AND due_ms = $2 AND delivery_id = $3",
            &[&connection, &ms(due), &delivery_id],
        )
        .await?;
    }
    delivery.attempt_count += 1;
    round_attempts += 1;
    let attempt = &outcome.attempt;
    delivery.updated_at_ms = attempt.at_ms + attempt.duration_ms;
    txn.execute(
        "INSERT INTO attempts (delivery_id, n, at_ms, duration_ms, status_code, error, response)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &delivery_id,
            &count(delivery.attempt_count),
            &ms(attempt.at_ms),
            &ms(attempt.duration_ms),
            &attempt.status_code.map(i32::from),
            &attempt.error,
            &attempt.response,
        ],
    )
    .await?;
    (delivery.status, delivery.next_attempt_at_ms) = match outcome.next {
        NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
        NextStep::Dead => (DeliveryStatus::Dead, None),
        NextStep::RetryAt(due) => (DeliveryStatus::Retrying, Some(due)),
    };
    if let Some(due) = delivery.next_attempt_at_ms {
        enqueue(txn, &connection, due, &delivery_id, &ws).await?;
    }
    txn.execute(
        "UPDATE deliveries SET status = $3, attempt_count = $4, round_attempts = $5,
                               next_attempt_at_ms = $6, updated_at_ms = $7
         WHERE workspace_id = $1 AND id = $2",
        &[
            &ws,
            &delivery_id,
            &delivery.status.as_str(),
            &count(delivery.attempt_count),
            &count(round_attempts),
            &delivery.next_attempt_at_ms.map(ms),
            &ms(delivery.updated_at_ms),
        ],
    )
    .await?;
    if let Some(status) = outcome.connection_status {
        let patch = ConnectionPatch {
            status: Some(status),
            ..ConnectionPatch::default()
        };
        connections::update(txn, outcome.workspace_id, delivery.connection_id, &patch).await?;
    }
    if let Some(until) = outcome.pause_connection_until {
        queue::store_pause(txn, delivery.connection_id, until).await?;
    }
    Ok(Recorded::Written(delivery))
}

/// Queues dead or succeeded deliveries again with a fresh retry schedule;
/// claims their connections for `node` when nobody holds them, and tells
/// the nodes holding the others.
pub async fn requeue(
    txn: &Transaction<'_>,
    node: &Node,
    workspace: WorkspaceId,
    which: &Requeue,
    now_ms: u64,
) -> PgResult<(Vec<QueueEntry>, NewEntryLeases)> {
    let ws = id(workspace.0);
    let rows = match which {
        // A suppressed delivery was held back on purpose: never sent.
        Requeue::One(delivery) => {
            txn.query(
                &format!(
                    "SELECT {COLUMNS} FROM deliveries
                     WHERE workspace_id = $1 AND id = $2
                       AND next_attempt_at_ms IS NULL AND status <> 'suppressed'
                     FOR UPDATE"
                ),
                &[&ws, &id(delivery.0)],
            )
            .await?
        }
        Requeue::Matching {
            status,
            since_ms,
            limit,
        } => {
            let limit = i64::try_from(*limit).unwrap_or(i64::MAX);
            txn.query(
                &format!(
                    "SELECT {COLUMNS} FROM deliveries
                     WHERE workspace_id = $1 AND status = $2 AND next_attempt_at_ms IS NULL
                       AND updated_at_ms >= $3
                     ORDER BY id LIMIT $4 FOR UPDATE"
                ),
                &[&ws, &status.as_str(), &ms(*since_ms), &limit],
            )
            .await?
        }
        Requeue::Listed {
            status,
            ids: listed,
        } => {
            let listed = ids(listed.iter().map(|delivery| delivery.0));
            txn.query(
                &format!(
                    "SELECT {COLUMNS} FROM deliveries
                     WHERE workspace_id = $1 AND id = ANY($2) AND status = $3
                       AND next_attempt_at_ms IS NULL
                     ORDER BY id FOR UPDATE"
                ),
                &[&ws, &listed, &status.as_str()],
            )
            .await?
        }
    };
    let mut entries = Vec::with_capacity(rows.len());
    for row in &rows {
        let delivery = delivery_from(row)?;
        let status = if delivery.attempt_count == 0 {
            DeliveryStatus::Pending
        } else {
            DeliveryStatus::Retrying
        };
        let delivery_id = id(delivery.id.0);
        txn.execute(
            "UPDATE deliveries SET status = $3, round_attempts = 0, next_attempt_at_ms = $4,
                                   updated_at_ms = $4
             WHERE workspace_id = $1 AND id = $2",
            &[&ws, &delivery_id, &status.as_str(), &ms(now_ms)],
        )
        .await?;
        let connection = id(delivery.connection_id.0);
        enqueue(txn, &connection, now_ms, &delivery_id, &ws).await?;
        entries.push(QueueEntry {
            due_ms: now_ms,
            delivery_id: delivery.id,
            workspace_id: workspace,
            connection_id: delivery.connection_id,
        });
    }
    let connections: Vec<ConnectionId> = entries.iter().map(|e| e.connection_id).collect();
    let leases = queue::claim_for_new_entries(txn, node, &connections, now_ms).await?;
    Ok((entries, leases))
}

async fn enqueue(
    txn: &Transaction<'_>,
    connection: &Vec<u8>,
    due_ms: u64,
    delivery: &Vec<u8>,
    workspace: &Vec<u8>,
) -> PgResult<()> {
    txn.execute(
        "INSERT INTO delivery_queue (connection_id, due_ms, delivery_id, workspace_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[connection, &ms(due_ms), delivery, workspace],
    )
    .await?;
    Ok(())
}

/// Removes a queue row that no longer stands for its delivery's next
/// attempt (the delivery or its workspace is gone, or it is due at another
/// time); true if one was removed. The live row is never touched.
pub async fn drop_stale_queue_entry(txn: &Transaction<'_>, entry: &QueueEntry) -> PgResult<bool> {
    let ws = id(entry.workspace_id.0);
    let delivery = id(entry.delivery_id.0);
    let workspace_exists = txn
        .query_opt("SELECT 1 FROM workspaces WHERE id = $1", &[&ws])
        .await?
        .is_some();
    let due = txn
        .query_opt(
            "SELECT next_attempt_at_ms FROM deliveries WHERE workspace_id = $1 AND id = $2
             FOR UPDATE",
            &[&ws, &delivery],
        )
        .await?
        .map(|row| row.try_get::<_, Option<i64>>(0))
        .transpose()?
        .flatten()
        .map(ms_from);
    if workspace_exists && due == Some(entry.due_ms) {
        return Ok(false);
    }
    let removed = txn
        .execute(
            "DELETE FROM delivery_queue
             WHERE connection_id = $1 AND due_ms = $2 AND delivery_id = $3",
            &[&id(entry.connection_id.0), &ms(entry.due_ms), &delivery],
        )
        .await?;
    Ok(removed > 0)
}

pub fn delivery_from(row: &Row) -> PgResult<Delivery> {
    Ok(Delivery {
        id: DeliveryId(get_id(row, "id")?),
        workspace_id: WorkspaceId(get_id(row, "workspace_id")?),
        event_id: EventId(get_id(row, "event_id")?),
        rule_id: RuleId(get_id(row, "rule_id")?),
        connection_id: ConnectionId(get_id(row, "connection_id")?),
        status: super::columns::delivery_status_from(row.try_get("status")?)?,
        attempt_count: get_count(row, "attempt_count")?,
        next_attempt_at_ms: row
            .try_get::<_, Option<i64>>("next_attempt_at_ms")?
            .map(ms_from),
        created_at_ms: get_ms(row, "created_at_ms")?,
        updated_at_ms: get_ms(row, "updated_at_ms")?,
        alert: row.try_get("alert")?,
        suppressed_before: get_count(row, "suppressed_before")?,
    })
}

fn attempt_from(row: &Row) -> PgResult<Attempt> {
    Ok(Attempt {
        at_ms: get_ms(row, "at_ms")?,
        duration_ms: get_ms(row, "duration_ms")?,
        status_code: row
            .try_get::<_, Option<i32>>("status_code")?
            .and_then(|code| u16::try_from(code).ok()),
        error: row.try_get("error")?,
        response: row.try_get("response")?,
    })
}
