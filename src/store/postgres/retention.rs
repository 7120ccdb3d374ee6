//! Retention: events received before a cutoff go with their deliveries and
//! attempts, a bounded number per transaction.
//!
//! Event ids are ULIDs stamped with their receive time, so "received before
//! the cutoff" is `id < cutoff << 80`, and an index on `events (id,
//! workspace_id)` walks the old events oldest first across workspaces. The
//! cursor carries the last (id, workspace) looked at. An event with a
//! delivery still queued or in flight (`next_attempt_at_ms` set) stays
//! whole and is passed over, as in the redb store.

use super::columns::{get_id, id};
use super::error::PgResult;
use crate::model::{EventId, WorkspaceId};
use crate::store::{RetentionCursor, RetentionStep};
use tokio_postgres::Transaction;

/// Rows an event costs about (itself, a delivery or two, their attempts):
/// a step looks at `budget / EVENT_COST` events.
const EVENT_COST: usize = 4;

pub async fn purge_old_events(
    txn: &Transaction<'_>,
    cutoff_ms: u64,
    from: Option<RetentionCursor>,
    budget: usize,
) -> PgResult<RetentionStep> {
    let old_below = id(u128::from(cutoff_ms) << 80);
    let (from_event, from_ws) = from.map_or((0, 0), |cursor| (cursor.event.0, cursor.workspace.0));
    let limit = i64::try_from((budget / EVENT_COST).max(1)).unwrap_or(i64::MAX);
    let row = txn
        .query_one(
            "WITH old AS (
                 SELECT workspace_id, id FROM events
                 WHERE id < $1 AND (id, workspace_id) >= ($2, $3)
                 ORDER BY id, workspace_id LIMIT $4),
             held AS (
                 SELECT DISTINCT old.workspace_id, old.id FROM old
                 JOIN deliveries d ON d.workspace_id = old.workspace_id AND d.event_id = old.id
                 WHERE d.next_attempt_at_ms IS NOT NULL),
             gone_events AS (
                 DELETE FROM events e USING old
                 WHERE e.workspace_id = old.workspace_id AND e.id = old.id
                   AND NOT EXISTS (SELECT 1 FROM held
                                   WHERE held.workspace_id = old.workspace_id
                                     AND held.id = old.id)
                 RETURNING e.workspace_id, e.id),
             gone_deliveries AS (
                 DELETE FROM deliveries d USING gone_events g
                 WHERE d.workspace_id = g.workspace_id AND d.event_id = g.id
                 RETURNING d.id),
             gone_attempts AS (
                 DELETE FROM attempts a USING gone_deliveries g
                 WHERE a.delivery_id = g.id RETURNING 1),
             last AS (
                 SELECT workspace_id, id FROM old ORDER BY id DESC, workspace_id DESC LIMIT 1)
             SELECT (SELECT count(*) FROM old) AS looked,
                    (SELECT count(*) FROM held) AS held,
                    (SELECT count(*) FROM gone_events) AS events,
                    (SELECT count(*) FROM gone_deliveries) AS deliveries,
                    (SELECT count(*) FROM gone_attempts) AS attempts,
                    (SELECT workspace_id FROM last) AS last_workspace,
                    (SELECT id FROM last) AS last_event",
            &[&old_below, &id(from_event), &id(from_ws), &limit],
        )
        .await?;
    let counted = |column: &str| -> PgResult<u64> {
        Ok(u64::try_from(row.try_get::<_, i64>(column)?).unwrap_or(0))
    };
    let looked = counted("looked")?;
    let mut step = RetentionStep {
        events: counted("events")?,
        deliveries: counted("deliveries")?,
        attempts: counted("attempts")?,
        held: counted("held")?,
        next: None,
    };
    if looked == u64::try_from(limit).unwrap_or(u64::MAX)
        && row.try_get::<_, Option<&[u8]>>("last_event")?.is_some()
    {
        let last_event = get_id(&row, "last_event")?;
        let last_workspace = get_id(&row, "last_workspace")?;
        // The next (event, workspace) after the last one looked at.
        let (event, workspace) = match last_workspace.checked_add(1) {
            Some(next) => (last_event, next),
            None => (last_event.saturating_add(1), 0),
        };
        step.next = Some(RetentionCursor {
            workspace: WorkspaceId(workspace),
            event: EventId(event),
        });
    }
    Ok(step)
}
