//! Events: reads, and idempotency keys' expiry. Ingest itself is in
//! `ingest.rs`.

use super::columns::{get_id, get_ms, id, ms};
use super::error::{PgResult, corrupt};
use crate::model::{DeliveryId, Event, EventId, EventName, WorkspaceId};
use crate::store::{EventNameFilter, EventPage, EventQuery, IDEMPOTENCY_TTL_MS};
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Row, Transaction};

pub const COLUMNS: &str = "workspace_id, id, name, resource, resource_id, payload, received_at_ms";

pub async fn get<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    event: EventId,
) -> PgResult<Option<Event>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM events WHERE workspace_id = $1 AND id = $2"),
            &[&id(workspace.0), &id(event.0)],
        )
        .await?
        .as_ref()
        .map(event_from)
        .transpose()
}

/// The event a delivery points at: a read that needs no earlier
/// answer, so it can go out together with the delivery's own
/// (`deliveries::context`).
pub async fn of_delivery<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    delivery: DeliveryId,
) -> PgResult<Option<Event>> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM events WHERE workspace_id = $1 AND id =
                 (SELECT event_id FROM deliveries WHERE workspace_id = $1 AND id = $2)"
            ),
            &[&id(workspace.0), &id(delivery.0)],
        )
        .await?
        .as_ref()
        .map(event_from)
        .transpose()
}

/// Newest first from the cursor; `next` is the last event of a full page
/// when more match.
pub async fn list<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    query: &EventQuery,
) -> PgResult<EventPage> {
    let ws = id(workspace.0);
    let before = id(query.before.map_or(u128::MAX, |cursor| cursor.0));
    let wanted = i64::try_from(query.limit)
        .unwrap_or(i64::MAX)
        .saturating_add(1);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ws, &before, &wanted];
    // `before` is exclusive; u128::MAX is never a real id.
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE workspace_id = $1 AND id < $2");
    let name;
    match &query.name {
        None => {}
        Some(EventNameFilter::Exact(exact)) => {
            name = exact.clone();
            sql.push_str(" AND name = $4");
            params.push(&name);
        }
        Some(EventNameFilter::Prefix(prefix)) => {
            name = prefix.clone();
            sql.push_str(" AND starts_with(name, $4) AND length(name) > length($4)");
            params.push(&name);
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT $3");
    let rows = client.query(&sql, &params).await?;
    let mut page = EventPage::default();
    for row in &rows {
        if page.events.len() == query.limit {
            page.next = page.events.last().map(|event: &Event| event.id);
            break;
        }
        page.events.push(event_from(row)?);
    }
    Ok(page)
}

/// Drops idempotency keys past their lifetime; returns how many.
pub async fn purge_idempotency_keys(txn: &Transaction<'_>, now_ms: u64) -> PgResult<usize> {
    let cutoff = now_ms.saturating_sub(IDEMPOTENCY_TTL_MS);
    let removed = txn
        .execute(
            "DELETE FROM idempotency_keys WHERE created_at_ms < $1",
            &[&ms(cutoff)],
        )
        .await?;
    Ok(usize::try_from(removed).unwrap_or(usize::MAX))
}

pub fn event_from(row: &Row) -> PgResult<Event> {
    let event_id = EventId(get_id(row, "id")?);
    // Names were validated at ingest; one that no longer parses is corrupt.
    let name = EventName::parse(row.try_get("name")?)
        .map_err(|_| corrupt(format!("event {event_id} has an invalid name")))?;
    Ok(Event {
        id: event_id,
        workspace_id: WorkspaceId(get_id(row, "workspace_id")?),
        name,
        resource: row.try_get("resource")?,
        resource_id: row.try_get("resource_id")?,
        payload: row.try_get("payload")?,
        received_at_ms: get_ms(row, "received_at_ms")?,
    })
}
