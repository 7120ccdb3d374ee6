use super::tables::*;
use super::{decode, json_bytes, json_value};
use crate::model::{ConnectionId, Rule, RuleId, WorkspaceId};
use crate::store::codec::Record;
use crate::store::records::RuleRecord;
use crate::store::{PutRule, StoreError};
use redb::{ReadTransaction, ReadableTable, WriteTransaction};

pub fn put(txn: &WriteTransaction, rule: &Rule, update: bool) -> Result<PutRule, StoreError> {
    let ws = rule.workspace_id.0;
    if update && txn.open_table(RULES)?.get((ws, rule.id.0))?.is_none() {
        return Ok(PutRule::NotFound);
    }
    if txn
        .open_table(CONNECTIONS)?
        .get((ws, rule.connection_id.0))?
        .is_none()
    {
        return Ok(PutRule::UnknownConnection);
    }
    let record = RuleRecord {
        name: rule.name.clone(),
        events: rule.events.clone(),
        connection_id: rule.connection_id.0,
        target_json: json_bytes(&rule.target),
        min_severity: rule.min_severity.clone(),
        conditions_json: json_bytes(&rule.conditions),
        template_json: rule.template.as_ref().map(json_bytes),
        enabled: rule.enabled,
        created_at_ms: rule.created_at_ms,
        updated_at_ms: rule.updated_at_ms,
        dedup_seconds: rule.dedup_seconds,
        max_per_hour: rule.max_per_hour,
    };
    txn.open_table(RULES)?
        .insert((ws, rule.id.0), record.encode().as_slice())?;
    Ok(PutRule::Stored)
}

pub fn delete(
    txn: &WriteTransaction,
    workspace: WorkspaceId,
    id: RuleId,
) -> Result<bool, StoreError> {
    let removed = txn
        .open_table(RULES)?
        .remove((workspace.0, id.0))?
        .is_some();
    super::noise::forget_rule(txn, workspace.0, id.0)?;
    Ok(removed)
}

pub fn get(
    txn: &ReadTransaction,
    workspace: WorkspaceId,
    id: RuleId,
) -> Result<Option<Rule>, StoreError> {
    let record = decode::<RuleRecord>(txn.open_table(RULES)?.get((workspace.0, id.0))?)?;
    record
        .map(|record| rule_from(workspace, id, record))
        .transpose()
}

pub fn list(txn: &ReadTransaction, workspace: WorkspaceId) -> Result<Vec<Rule>, StoreError> {
    let table = txn.open_table(RULES)?;
    let mut rules = Vec::new();
    for entry in table.range((workspace.0, 0)..=(workspace.0, u128::MAX))? {
        let (key, bytes) = entry?;
        let id = RuleId(key.value().1);
        rules.push(rule_from(
            workspace,
            id,
            RuleRecord::decode(bytes.value())?,
        )?);
    }
    Ok(rules)
}

fn rule_from(workspace: WorkspaceId, id: RuleId, record: RuleRecord) -> Result<Rule, StoreError> {
    Ok(Rule {
        id,
        workspace_id: workspace,
        name: record.name,
        events: record.events,
        connection_id: ConnectionId(record.connection_id),
        target: json_value(&record.target_json, "rule target")?,
        min_severity: record.min_severity,
        conditions: json_value(&record.conditions_json, "rule conditions")?,
        template: record
            .template_json
            .as_deref()
            .map(|bytes| json_value(bytes, "rule template"))
            .transpose()?,
        enabled: record.enabled,
        created_at_ms: record.created_at_ms,
        updated_at_ms: record.updated_at_ms,
        dedup_seconds: record.dedup_seconds,
        max_per_hour: record.max_per_hour,
    })
}
