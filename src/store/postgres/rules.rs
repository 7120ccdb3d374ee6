//! Routing rules: one row each, their JSON parts as jsonb.

use super::changes;
use super::columns::{count, get_id, get_ms, get_opt_count, id, ms};
use super::error::PgResult;
use crate::model::{ConnectionId, DeliveryId, Rule, RuleId, WorkspaceId};
use crate::store::PutRule;
use tokio_postgres::{GenericClient, Row, Transaction};

const COLUMNS: &str = "workspace_id, id, name, events, connection_id, target, min_severity, \
                       conditions, template, enabled, created_at_ms, updated_at_ms, \
                       dedup_seconds, max_per_hour";

/// Creates the rule, or replaces it when `update` (only if it still
/// exists); its connection must exist (locked, so a concurrent delete of the
/// connection waits and then sees the rule).
pub async fn put(txn: &Transaction<'_>, rule: &Rule, update: bool) -> PgResult<PutRule> {
    let (ws, rule_id) = (id(rule.workspace_id.0), id(rule.id.0));
    if update
        && txn
            .query_opt(
                "SELECT 1 FROM rules WHERE workspace_id = $1 AND id = $2 FOR UPDATE",
                &[&ws, &rule_id],
            )
            .await?
            .is_none()
    {
        return Ok(PutRule::NotFound);
    }
    let connection_exists = txn
        .query_opt(
            "SELECT 1 FROM connections WHERE workspace_id = $1 AND id = $2 FOR SHARE",
            &[&ws, &id(rule.connection_id.0)],
        )
        .await?
        .is_some();
    if !connection_exists {
        return Ok(PutRule::UnknownConnection);
    }
    txn.execute(
        &format!(
            "INSERT INTO rules ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (workspace_id, id) DO UPDATE SET
                 name = EXCLUDED.name, events = EXCLUDED.events,
                 connection_id = EXCLUDED.connection_id, target = EXCLUDED.target,
                 min_severity = EXCLUDED.min_severity, conditions = EXCLUDED.conditions,
                 template = EXCLUDED.template, enabled = EXCLUDED.enabled,
                 created_at_ms = EXCLUDED.created_at_ms, updated_at_ms = EXCLUDED.updated_at_ms,
                 dedup_seconds = EXCLUDED.dedup_seconds, max_per_hour = EXCLUDED.max_per_hour"
        ),
        &[
            &ws,
            &rule_id,
            &rule.name,
            &rule.events,
            &id(rule.connection_id.0),
            &rule.target,
            &rule.min_severity,
            &rule.conditions,
            &rule.template,
            &rule.enabled,
            &ms(rule.created_at_ms),
            &ms(rule.updated_at_ms),
            &rule.dedup_seconds.map(count),
            &rule.max_per_hour.map(count),
        ],
    )
    .await?;
    changes::bump(txn, rule.workspace_id).await?;
    Ok(PutRule::Stored)
}

/// Removes the rule and its noise state.
pub async fn delete(txn: &Transaction<'_>, workspace: WorkspaceId, rule: RuleId) -> PgResult<bool> {
    let (ws, rule_id) = (id(workspace.0), id(rule.0));
    let removed = txn
        .execute(
            "DELETE FROM rules WHERE workspace_id = $1 AND id = $2",
            &[&ws, &rule_id],
        )
        .await?;
    txn.execute(
        "DELETE FROM rule_noise WHERE workspace_id = $1 AND rule_id = $2",
        &[&ws, &rule_id],
    )
    .await?;
    txn.execute(
        "DELETE FROM alert_noise WHERE workspace_id = $1 AND rule_id = $2",
        &[&ws, &rule_id],
    )
    .await?;
    if removed > 0 {
        changes::bump(txn, workspace).await?;
    }
    Ok(removed > 0)
}

pub async fn get<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    rule: RuleId,
) -> PgResult<Option<Rule>> {
    client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM rules WHERE workspace_id = $1 AND id = $2"),
            &[&id(workspace.0), &id(rule.0)],
        )
        .await?
        .as_ref()
        .map(rule_from)
        .transpose()
}

/// The rule a delivery points at: a read that needs no earlier
/// answer, so it can go out together with the delivery's own
/// (`deliveries::context`).
pub async fn of_delivery<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
    delivery: DeliveryId,
) -> PgResult<Option<Rule>> {
    client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM rules WHERE workspace_id = $1 AND id =
                 (SELECT rule_id FROM deliveries WHERE workspace_id = $1 AND id = $2)"
            ),
            &[&id(workspace.0), &id(delivery.0)],
        )
        .await?
        .as_ref()
        .map(rule_from)
        .transpose()
}

pub async fn list<C: GenericClient + Sync>(
    client: &C,
    workspace: WorkspaceId,
) -> PgResult<Vec<Rule>> {
    client
        .query(
            &format!("SELECT {COLUMNS} FROM rules WHERE workspace_id = $1 ORDER BY id"),
            &[&id(workspace.0)],
        )
        .await?
        .iter()
        .map(rule_from)
        .collect()
}

fn rule_from(row: &Row) -> PgResult<Rule> {
    Ok(Rule {
        id: RuleId(get_id(row, "id")?),
        workspace_id: WorkspaceId(get_id(row, "workspace_id")?),
        name: row.try_get("name")?,
        events: row.try_get("events")?,
        connection_id: ConnectionId(get_id(row, "connection_id")?),
        target: row.try_get("target")?,
        min_severity: row.try_get("min_severity")?,
        conditions: row.try_get("conditions")?,
        template: row.try_get("template")?,
        enabled: row.try_get("enabled")?,
        created_at_ms: get_ms(row, "created_at_ms")?,
        updated_at_ms: get_ms(row, "updated_at_ms")?,
        dedup_seconds: get_opt_count(row, "dedup_seconds")?,
        max_per_hour: get_opt_count(row, "max_per_hour")?,
    })
}
