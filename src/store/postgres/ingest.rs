//! Group-committed ingest.
//!
//! Why: a 202 must mean the event and its deliveries are committed, and a
//! PostgreSQL commit costs a WAL flush plus round trips. One transaction per
//! request would cap ingest at the flush rate, so one writer task takes
//! whatever ingests are waiting (up to `MAX_JOBS`), checks them in order
//! against rows read once for the whole group (workspaces, idempotency keys,
//! noise state, all locked), and writes every new row with one `unnest`
//! insert per table: a handful of round trips and one commit for the whole
//! group, whatever its size. Only then is each caller answered.
//!
//! If the group's transaction fails for a reason other than the connection,
//! each job is tried again alone, so one bad job fails only itself. The
//! writer task is `group.rs`'s, shared with attempt outcomes; this file is
//! what ingest commits.
//!
//! Nodes sharing the database: the same transaction claims the connections
//! of the group's new entries that no node holds, and notifies the nodes
//! holding the others (`queue::claim_for_new_entries`). The entries stay in
//! the table either way; this node's scheduler takes only those of
//! connections it holds (`Store::may_deliver`).

use super::columns::{count, id, ms, ms_from};
use super::error::{PgError, PgResult};
use super::group::{GroupCommit, GroupWriter};
use super::node::Node;
use super::noise::{NoiseState, RuleWindow};
use super::queue;
use crate::model::{ConnectionId, DeliveryId, DeliveryStatus, now_ms};
use crate::store::{IDEMPOTENCY_TTL_MS, IngestBatch, IngestOutcome, StoreError};
use deadpool_postgres::{Pool, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The writer ingest requests go through.
pub type IngestWriter = GroupWriter<Ingests>;

/// Ingest as a [`GroupCommit`] kind: a job is one request's batch.
pub struct Ingests {
    pub pool: Pool,
    pub node: Arc<Node>,
}

impl GroupCommit for Ingests {
    type Job = IngestBatch;
    type Answer = IngestOutcome;

    // The same series as redb's writer, so dashboards read either.
    const BATCH_SIZE_METRIC: &'static str = "switchyard_write_batch_size";
    const COMMIT_SECONDS_METRIC: Option<&'static str> = Some("switchyard_commit_seconds");

    async fn commit_group(&self, batches: &[&IngestBatch]) -> PgResult<Vec<IngestOutcome>> {
        commit_group(&self.pool, &self.node, batches).await
    }

    /// A group of one, the same path as any group.
    async fn commit_alone(&self, batch: &IngestBatch) -> PgResult<IngestOutcome> {
        let mut outcomes = commit_group(&self.pool, &self.node, &[batch]).await?;
        Ok(outcomes.remove(0))
    }

    /// The event is not stored: `Unavailable` with the observed error's
    /// text, so the client retries.
    fn lone_group_failed(observed: StoreError) -> StoreError {
        StoreError::Unavailable(observed.to_string())
    }

    fn log_group_failed(error: &PgError, jobs: usize) {
        tracing::warn!(%error, jobs, "ingest group failed; trying each alone");
    }
}

/// The rows a group writes, gathered column by column for `unnest`.
#[derive(Default)]
struct Rows {
    events: EventRows,
    deliveries: DeliveryRows,
    queue: QueueRows,
    idempotency: IdempotencyRows,
}

#[derive(Default)]
struct EventRows {
    workspace: Vec<Vec<u8>>,
    id: Vec<Vec<u8>>,
    name: Vec<String>,
    resource: Vec<Option<String>>,
    resource_id: Vec<Option<String>>,
    payload: Vec<Vec<u8>>,
    received_at: Vec<i64>,
}

#[derive(Default)]
struct DeliveryRows {
    workspace: Vec<Vec<u8>>,
    id: Vec<Vec<u8>>,
    event: Vec<Vec<u8>>,
    rule: Vec<Vec<u8>>,
    connection: Vec<Vec<u8>>,
    status: Vec<&'static str>,
    attempt_count: Vec<i32>,
    next_attempt_at: Vec<Option<i64>>,
    created_at: Vec<i64>,
    updated_at: Vec<i64>,
    alert: Vec<Option<String>>,
    suppressed_before: Vec<i32>,
}

#[derive(Default)]
struct QueueRows {
    connection: Vec<Vec<u8>>,
    due: Vec<i64>,
    delivery: Vec<Vec<u8>>,
    workspace: Vec<Vec<u8>>,
}

#[derive(Default)]
struct IdempotencyRows {
    workspace: Vec<Vec<u8>>,
    key: Vec<String>,
    created_at: Vec<i64>,
    status: Vec<i32>,
    response: Vec<Vec<u8>>,
}

/// A remembered first answer: (created at, status, response).
type Remembered = (u64, u16, Vec<u8>);

async fn commit_group(
    pool: &Pool,
    node: &Node,
    batches: &[&IngestBatch],
) -> PgResult<Vec<IngestOutcome>> {
    let mut client = pool.get().await?;
    let txn = client.transaction().await?;
    let now = now_ms();
    let existing = existing_workspaces(&txn, batches).await?;
    lock_keys_and_rules(&txn, batches).await?;
    let mut remembered = remembered_answers(&txn, batches).await?;
    let mut noise = noise_state(&txn, batches).await?;
    let mut rows = Rows::default();
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        let ws = batch.workspace_id.0;
        if !existing.contains(&ws) {
            outcomes.push(IngestOutcome::UnknownWorkspace);
            continue;
        }
        if let Some(answer) = &batch.idempotency {
            let key = (ws, answer.key.clone());
            if let Some((created, status, response)) = remembered.get(&key)
                && now < created.saturating_add(IDEMPOTENCY_TTL_MS)
            {
                outcomes.push(IngestOutcome::Replayed {
                    status: *status,
                    response: response.clone(),
                });
                continue;
            }
            // New, or expired but not purged yet: the key starts a new life.
            remembered.insert(key, (now, answer.status, answer.response.clone()));
            let rows = &mut rows.idempotency;
            rows.workspace.push(id(ws));
            rows.key.push(answer.key.clone());
            rows.created_at.push(ms(now));
            rows.status.push(i32::from(answer.status));
            rows.response.push(answer.response.clone());
        }
        add_events(&mut rows.events, batch);
        let suppressed = add_deliveries(&mut rows, &mut noise, batch);
        outcomes.push(IngestOutcome::Stored { suppressed });
    }
    write_rows(&txn, &rows).await?;
    write_noise(&txn, &noise).await?;
    let connections = rows
        .queue
        .connection
        .iter()
        .map(|bytes| super::columns::id_from(bytes).map(ConnectionId))
        .collect::<PgResult<Vec<_>>>()?;
    let leases = queue::claim_for_new_entries(&txn, node, &connections, now).await?;
    txn.commit().await?;
    for (connection, until) in leases.mine {
        node.hold([connection], until);
    }
    Ok(outcomes)
}

fn add_events(rows: &mut EventRows, batch: &IngestBatch) {
    for event in &batch.events {
        rows.workspace.push(id(batch.workspace_id.0));
        rows.id.push(id(event.id.0));
        rows.name.push(event.name.as_str().to_string());
        rows.resource.push(event.resource.clone());
        rows.resource_id.push(event.resource_id.clone());
        rows.payload.push(event.payload.clone());
        rows.received_at.push(ms(event.received_at_ms));
    }
}

/// Adds the batch's deliveries (and queue rows for those that go out),
/// deciding noise control in order; returns the ids of those suppressed.
fn add_deliveries(rows: &mut Rows, noise: &mut NoiseState, batch: &IngestBatch) -> Vec<DeliveryId> {
    let mut suppressed = Vec::new();
    for delivery in &batch.deliveries {
        let ws = delivery.workspace_id.0;
        let mut status = delivery.status;
        let mut next_attempt = delivery.next_attempt_at_ms;
        let mut suppressed_before = delivery.suppressed_before;
        if let Some(check) = batch.noise.get(&delivery.id) {
            let decision = noise.decide(
                ws,
                delivery.rule_id.0,
                delivery.alert.as_deref(),
                check,
                delivery.created_at_ms,
            );
            if decision.suppress {
                status = DeliveryStatus::Suppressed;
                next_attempt = None;
                suppressed.push(delivery.id);
            } else {
                suppressed_before = decision.suppressed_before;
            }
        }
        let d = &mut rows.deliveries;
        d.workspace.push(id(ws));
        d.id.push(id(delivery.id.0));
        d.event.push(id(delivery.event_id.0));
        d.rule.push(id(delivery.rule_id.0));
        d.connection.push(id(delivery.connection_id.0));
        d.status.push(status.as_str());
        d.attempt_count.push(count(delivery.attempt_count));
        d.next_attempt_at.push(next_attempt.map(ms));
        d.created_at.push(ms(delivery.created_at_ms));
        d.updated_at.push(ms(delivery.updated_at_ms));
        d.alert.push(delivery.alert.clone());
        d.suppressed_before.push(count(suppressed_before));
        if let Some(due) = next_attempt {
            let q = &mut rows.queue;
            q.connection.push(id(delivery.connection_id.0));
            q.due.push(ms(due));
            q.delivery.push(id(delivery.id.0));
            q.workspace.push(id(ws));
        }
    }
    suppressed
}

/// The group's workspaces that exist, locked against a concurrent delete.
async fn existing_workspaces(
    txn: &Transaction<'_>,
    batches: &[&IngestBatch],
) -> PgResult<HashSet<u128>> {
    let wanted: Vec<Vec<u8>> = batches
        .iter()
        .map(|batch| batch.workspace_id.0)
        .collect::<HashSet<_>>()
        .into_iter()
        .map(id)
        .collect();
    let statement = txn
        .prepare_cached("SELECT id FROM workspaces WHERE id = ANY($1) FOR SHARE")
        .await?;
    txn.query(&statement, &[&wanted])
        .await?
        .iter()
        .map(|row| super::columns::get_id(row, "id"))
        .collect()
}

/// Takes a transaction-level advisory lock for each idempotency key and
/// each noise-controlled rule of the group, in one sorted order: row locks
/// cannot cover a key or rule that has no row yet, and another node's
/// writer may be about to insert it. (One node's writer is serial anyway.)
async fn lock_keys_and_rules(txn: &Transaction<'_>, batches: &[&IngestBatch]) -> PgResult<()> {
    let mut locks = Vec::new();
    for batch in batches {
        let ws = batch.workspace_id.0.to_be_bytes();
        if let Some(answer) = &batch.idempotency {
            locks.push(lock_key(&[b"idempotency", &ws, answer.key.as_bytes()]));
        }
        for delivery in &batch.deliveries {
            if batch.noise.contains_key(&delivery.id) {
                locks.push(lock_key(&[
                    b"noise",
                    &ws,
                    &delivery.rule_id.0.to_be_bytes(),
                ]));
            }
        }
    }
    if locks.is_empty() {
        return Ok(());
    }
    locks.sort_unstable();
    locks.dedup();
    let statement = txn
        .prepare_cached(
            "SELECT count(pg_advisory_xact_lock(k))
             FROM (SELECT k FROM unnest($1::int8[]) WITH ORDINALITY AS l (k, n) ORDER BY n) AS o",
        )
        .await?;
    txn.query_one(&statement, &[&locks]).await?;
    Ok(())
}

/// A 64-bit advisory lock key for the parts (SHA-256, length-prefixed).
fn lock_key(parts: &[&[u8]]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// First answers already stored for the group's idempotency keys, locked.
async fn remembered_answers(
    txn: &Transaction<'_>,
    batches: &[&IngestBatch],
) -> PgResult<HashMap<(u128, String), Remembered>> {
    let (workspaces, keys): (Vec<Vec<u8>>, Vec<String>) = batches
        .iter()
        .filter_map(|batch| {
            let answer = batch.idempotency.as_ref()?;
            Some((id(batch.workspace_id.0), answer.key.clone()))
        })
        .unzip();
    let mut remembered = HashMap::new();
    if keys.is_empty() {
        return Ok(remembered);
    }
    let statement = txn
        .prepare_cached(
            "SELECT i.workspace_id, i.key, i.created_at_ms, i.status, i.response
             FROM idempotency_keys i
             JOIN unnest($1::bytea[], $2::text[]) AS wanted (workspace_id, key)
               ON i.workspace_id = wanted.workspace_id AND i.key = wanted.key
             FOR UPDATE OF i",
        )
        .await?;
    for row in txn.query(&statement, &[&workspaces, &keys]).await? {
        let ws = super::columns::get_id(&row, "workspace_id")?;
        let status = u16::try_from(row.try_get::<_, i32>("status")?).unwrap_or(0);
        remembered.insert(
            (ws, row.try_get("key")?),
            (
                ms_from(row.try_get("created_at_ms")?),
                status,
                row.try_get("response")?,
            ),
        );
    }
    Ok(remembered)
}

/// The noise rows the group's deliveries may change, locked.
async fn noise_state(txn: &Transaction<'_>, batches: &[&IngestBatch]) -> PgResult<NoiseState> {
    let mut rules = HashSet::new();
    let mut alerts = HashSet::new();
    for batch in batches {
        for delivery in &batch.deliveries {
            if batch.noise.contains_key(&delivery.id) {
                let key = (delivery.workspace_id.0, delivery.rule_id.0);
                rules.insert(key);
                if let Some(alert) = &delivery.alert {
                    alerts.insert((key.0, key.1, alert.clone()));
                }
            }
        }
    }
    let mut state = NoiseState::default();
    if rules.is_empty() {
        return Ok(state);
    }
    let (rule_ws, rule_ids): (Vec<Vec<u8>>, Vec<Vec<u8>>) =
        rules.iter().map(|(ws, rule)| (id(*ws), id(*rule))).unzip();
    let statement = txn
        .prepare_cached(
            "SELECT n.workspace_id, n.rule_id, n.window_start_ms, n.sent_in_window,
                    n.suppressed_since_sent
             FROM rule_noise n
             JOIN unnest($1::bytea[], $2::bytea[]) AS wanted (workspace_id, rule_id)
               ON n.workspace_id = wanted.workspace_id AND n.rule_id = wanted.rule_id
             ORDER BY n.workspace_id, n.rule_id
             FOR UPDATE OF n",
        )
        .await?;
    for row in txn.query(&statement, &[&rule_ws, &rule_ids]).await? {
        let key = (
            super::columns::get_id(&row, "workspace_id")?,
            super::columns::get_id(&row, "rule_id")?,
        );
        state.rules.insert(
            key,
            RuleWindow {
                window_start_ms: ms_from(row.try_get("window_start_ms")?),
                sent_in_window: super::columns::get_count(&row, "sent_in_window")?,
                suppressed_since_sent: super::columns::get_count(&row, "suppressed_since_sent")?,
            },
        );
    }
    if alerts.is_empty() {
        return Ok(state);
    }
    let mut alert_ws = Vec::new();
    let mut alert_rules = Vec::new();
    let mut alert_names = Vec::new();
    for (ws, rule, alert) in &alerts {
        alert_ws.push(id(*ws));
        alert_rules.push(id(*rule));
        alert_names.push(alert.clone());
    }
    let statement = txn
        .prepare_cached(
            "SELECT a.workspace_id, a.rule_id, a.alert, a.last_sent_ms
             FROM alert_noise a
             JOIN unnest($1::bytea[], $2::bytea[], $3::text[])
                  AS wanted (workspace_id, rule_id, alert)
               ON a.workspace_id = wanted.workspace_id AND a.rule_id = wanted.rule_id
                  AND a.alert = wanted.alert
             ORDER BY a.workspace_id, a.rule_id, a.alert
             FOR UPDATE OF a",
        )
        .await?;
    for row in txn
        .query(&statement, &[&alert_ws, &alert_rules, &alert_names])
        .await?
    {
        let key = (
            super::columns::get_id(&row, "workspace_id")?,
            super::columns::get_id(&row, "rule_id")?,
            row.try_get("alert")?,
        );
        state
            .alerts
            .insert(key, Some(ms_from(row.try_get("last_sent_ms")?)));
    }
    Ok(state)
}

async fn write_rows(txn: &Transaction<'_>, rows: &Rows) -> PgResult<()> {
    let e = &rows.events;
    if !e.id.is_empty() {
        let statement = txn
            .prepare_cached(
                "INSERT INTO events (workspace_id, id, name, resource, resource_id, payload,
                                     received_at_ms)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::text[],
                                      $5::text[], $6::bytea[], $7::int8[])",
            )
            .await?;
        txn.execute(
            &statement,
            &[
                &e.workspace,
                &e.id,
                &e.name,
                &e.resource,
                &e.resource_id,
                &e.payload,
                &e.received_at,
            ],
        )
        .await?;
    }
    let d = &rows.deliveries;
    if !d.id.is_empty() {
        let statement = txn
            .prepare_cached(
                "INSERT INTO deliveries (workspace_id, id, event_id, rule_id, connection_id,
                                         status, attempt_count, round_attempts,
                                         next_attempt_at_ms, created_at_ms, updated_at_ms,
                                         alert, suppressed_before)
                 SELECT w, i, e, r, c, s, a, 0, n, ca, ua, al, sb
                 FROM unnest($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[],
                             $6::text[], $7::int4[], $8::int8[], $9::int8[], $10::int8[],
                             $11::text[], $12::int4[])
                      AS new (w, i, e, r, c, s, a, n, ca, ua, al, sb)",
            )
            .await?;
        txn.execute(
            &statement,
            &[
                &d.workspace,
                &d.id,
                &d.event,
                &d.rule,
                &d.connection,
                &d.status,
                &d.attempt_count,
                &d.next_attempt_at,
                &d.created_at,
                &d.updated_at,
                &d.alert,
                &d.suppressed_before,
            ],
        )
        .await?;
    }
    let q = &rows.queue;
    if !q.delivery.is_empty() {
        let statement = txn
            .prepare_cached(
                "INSERT INTO delivery_queue (connection_id, due_ms, delivery_id, workspace_id)
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[])",
            )
            .await?;
        txn.execute(
            &statement,
            &[&q.connection, &q.due, &q.delivery, &q.workspace],
        )
        .await?;
    }
    let i = &rows.idempotency;
    if !i.key.is_empty() {
        // A key seen twice in one group was answered from the first: only
        // the first row is written.
        let statement = txn
            .prepare_cached(
                "INSERT INTO idempotency_keys (workspace_id, key, created_at_ms, status, response)
                 SELECT DISTINCT ON (w, k) w, k, c, s, r
                 FROM unnest($1::bytea[], $2::text[], $3::int8[], $4::int4[], $5::bytea[])
                      WITH ORDINALITY AS new (w, k, c, s, r, n)
                 ORDER BY w, k, n
                 ON CONFLICT (workspace_id, key) DO UPDATE SET
                     created_at_ms = EXCLUDED.created_at_ms, status = EXCLUDED.status,
                     response = EXCLUDED.response",
            )
            .await?;
        txn.execute(
            &statement,
            &[&i.workspace, &i.key, &i.created_at, &i.status, &i.response],
        )
        .await?;
    }
    Ok(())
}

async fn write_noise(txn: &Transaction<'_>, noise: &NoiseState) -> PgResult<()> {
    if !noise.rules.is_empty() {
        let mut ws = Vec::new();
        let mut rule = Vec::new();
        let mut start = Vec::new();
        let mut sent = Vec::new();
        let mut held = Vec::new();
        for ((w, r), window) in &noise.rules {
            ws.push(id(*w));
            rule.push(id(*r));
            start.push(ms(window.window_start_ms));
            sent.push(count(window.sent_in_window));
            held.push(count(window.suppressed_since_sent));
        }
        let statement = txn
            .prepare_cached(
                "INSERT INTO rule_noise (workspace_id, rule_id, window_start_ms, sent_in_window,
                                         suppressed_since_sent)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::int8[], $4::int4[],
                                      $5::int4[])
                 ON CONFLICT (workspace_id, rule_id) DO UPDATE SET
                     window_start_ms = EXCLUDED.window_start_ms,
                     sent_in_window = EXCLUDED.sent_in_window,
                     suppressed_since_sent = EXCLUDED.suppressed_since_sent",
            )
            .await?;
        txn.execute(&statement, &[&ws, &rule, &start, &sent, &held])
            .await?;
    }
    let (mut keep, mut forget) = (AlertRows::default(), AlertRows::default());
    for ((w, r, alert), sent) in &noise.alerts {
        let rows = if sent.is_some() {
            &mut keep
        } else {
            &mut forget
        };
        rows.ws.push(id(*w));
        rows.rule.push(id(*r));
        rows.alert.push(alert.clone());
        rows.sent.push(sent.map_or(0, ms));
    }
    if !keep.ws.is_empty() {
        let statement = txn
            .prepare_cached(
                "INSERT INTO alert_noise (workspace_id, rule_id, alert, last_sent_ms)
                 SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::int8[])
                 ON CONFLICT (workspace_id, rule_id, alert) DO UPDATE SET
                     last_sent_ms = EXCLUDED.last_sent_ms",
            )
            .await?;
        txn.execute(&statement, &[&keep.ws, &keep.rule, &keep.alert, &keep.sent])
            .await?;
    }
    if !forget.ws.is_empty() {
        let statement = txn
            .prepare_cached(
                "DELETE FROM alert_noise a
                 USING unnest($1::bytea[], $2::bytea[], $3::text[]) AS gone (w, r, al)
                 WHERE a.workspace_id = gone.w AND a.rule_id = gone.r AND a.alert = gone.al",
            )
            .await?;
        txn.execute(&statement, &[&forget.ws, &forget.rule, &forget.alert])
            .await?;
    }
    Ok(())
}

#[derive(Default)]
struct AlertRows {
    ws: Vec<Vec<u8>>,
    rule: Vec<Vec<u8>>,
    alert: Vec<String>,
    sent: Vec<i64>,
}
