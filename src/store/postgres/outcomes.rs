//! Group-committed attempt outcomes.
//!
//! Why: every delivery ends in an outcome to record (the attempt, the
//! delivery's next state, its queue row moved or removed), and a PostgreSQL
//! commit costs a WAL flush plus round trips. One transaction per outcome
//! capped delivery at the flush rate, so, as for ingest, one writer task
//! takes whatever outcomes are waiting (up to `MAX_JOBS`), reads and locks
//! what they need once for the whole group (workspaces, deliveries, this
//! node's leases of their connections), decides each outcome in order
//! exactly as [`deliveries::record_attempt`] does, and writes with one
//! `unnest` statement per table: a handful of round trips and one commit
//! for the whole group. Only then is each caller answered.
//!
//! An outcome whose workspace or delivery is gone, or whose connection's
//! lease this node no longer holds, writes nothing and gets the same answer
//! as alone. If the group's transaction fails for a reason other than the
//! connection, each outcome is recorded again alone by
//! [`deliveries::record_attempt`], so one bad outcome fails only itself.
//! The writer task is `group.rs`'s, shared with ingest; this file is what
//! outcomes commit.

use super::columns::{count, get_count, get_id, id, ms};
use super::deliveries::{self, COLUMNS, Recorded, delivery_from};
use super::error::{PgError, PgResult};
use super::group::{GroupCommit, GroupWriter};
use super::node::Node;
use super::{connections, queue};
use crate::model::{ConnectionId, Delivery, DeliveryStatus, now_ms};
use crate::store::{AttemptOutcome, ConnectionPatch, NextStep, StoreError};
use deadpool_postgres::{Pool, Transaction};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The writer delivery workers record outcomes through.
pub type OutcomeWriter = GroupWriter<Outcomes>;

/// Attempt outcomes as a [`GroupCommit`] kind: a job is one attempt's
/// outcome.
pub struct Outcomes {
    pub pool: Pool,
    pub node: Arc<Node>,
}

impl GroupCommit for Outcomes {
    type Job = AttemptOutcome;
    type Answer = Recorded;

    const BATCH_SIZE_METRIC: &'static str = "switchyard_outcome_batch_size";

    async fn commit_group(&self, outcomes: &[&AttemptOutcome]) -> PgResult<Vec<Recorded>> {
        commit_group(&self.pool, &self.node, outcomes).await
    }

    /// Not a group of one: [`deliveries::record_attempt`], the path an
    /// outcome took before outcomes were grouped.
    async fn commit_alone(&self, outcome: &AttemptOutcome) -> PgResult<Recorded> {
        let mut client = self.pool.get().await?;
        let txn = client.transaction().await?;
        let recorded = deliveries::record_attempt(&txn, &self.node, outcome).await?;
        txn.commit().await?;
        Ok(recorded)
    }

    /// A lone outcome gets its error as it would alone.
    fn lone_group_failed(observed: StoreError) -> StoreError {
        observed
    }

    fn log_group_failed(error: &PgError, jobs: usize) {
        tracing::warn!(%error, jobs, "outcome group failed; recording each alone");
    }

    /// Never false (one attempt at a time per delivery); if it were, the
    /// group's rows would collide.
    fn may_group(outcomes: &[&AttemptOutcome]) -> bool {
        let mut seen = HashSet::with_capacity(outcomes.len());
        outcomes
            .iter()
            .all(|outcome| seen.insert(outcome.delivery_id))
    }
}

/// The rows a group writes, gathered column by column for `unnest`.
#[derive(Default)]
struct Rows {
    /// Queue rows of the attempts just made.
    done: QueueKeys,
    /// Queue rows of the retries.
    retry: QueueKeys,
    retry_workspace: Vec<Vec<u8>>,
    attempts: AttemptRows,
    deliveries: DeliveryRows,
}

#[derive(Default)]
struct QueueKeys {
    connection: Vec<Vec<u8>>,
    due: Vec<i64>,
    delivery: Vec<Vec<u8>>,
}

#[derive(Default)]
struct AttemptRows {
    delivery: Vec<Vec<u8>>,
    n: Vec<i32>,
    at: Vec<i64>,
    duration: Vec<i64>,
    status_code: Vec<Option<i32>>,
    error: Vec<Option<String>>,
    response: Vec<Option<String>>,
}

#[derive(Default)]
struct DeliveryRows {
    workspace: Vec<Vec<u8>>,
    id: Vec<Vec<u8>>,
    status: Vec<&'static str>,
    attempt_count: Vec<i32>,
    round_attempts: Vec<i32>,
    next_attempt_at: Vec<Option<i64>>,
    updated_at: Vec<i64>,
}

async fn commit_group(
    pool: &Pool,
    node: &Node,
    outcomes: &[&AttemptOutcome],
) -> PgResult<Vec<Recorded>> {
    let mut client = pool.get().await?;
    let txn = client.transaction().await?;
    let now = now_ms();
    let existing = existing_workspaces(&txn, outcomes).await?;
    let mut current = locked_deliveries(&txn, outcomes, &existing).await?;
    let connections: Vec<ConnectionId> = current
        .values()
        .map(|(delivery, _)| delivery.connection_id)
        .collect();
    let held = held_leases(&txn, node, &connections, now).await?;
    let mut rows = Rows::default();
    let mut recorded = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        // A deleted workspace's deliveries linger until purged: record nothing.
        if !existing.contains(&outcome.workspace_id.0) {
            recorded.push(Recorded::Gone);
            continue;
        }
        let Some((delivery, round_attempts)) = current.remove(&outcome.delivery_id.0) else {
            recorded.push(Recorded::Gone);
            continue;
        };
        if !held.contains(&delivery.connection_id.0) {
            recorded.push(Recorded::LeaseLost(delivery.connection_id));
            continue;
        }
        recorded.push(Recorded::Written(add_outcome(
            &mut rows,
            outcome,
            delivery,
            round_attempts,
        )));
    }
    write_rows(&txn, &rows).await?;
    // Rare (a 410, a revoked token, a Retry-After): one statement each.
    for (outcome, recorded) in outcomes.iter().zip(&recorded) {
        let Recorded::Written(delivery) = recorded else {
            continue;
        };
        if let Some(status) = outcome.connection_status {
            let patch = ConnectionPatch {
                status: Some(status),
                ..ConnectionPatch::default()
            };
            connections::update(&txn, outcome.workspace_id, delivery.connection_id, &patch).await?;
        }
        if let Some(until) = outcome.pause_connection_until {
            queue::store_pause(&txn, delivery.connection_id, until).await?;
        }
    }
    txn.commit().await?;
    Ok(recorded)
}

/// Moves the delivery to its next state and gathers its rows, as
/// [`deliveries::record_attempt`] does one at a time.
fn add_outcome(
    rows: &mut Rows,
    outcome: &AttemptOutcome,
    mut delivery: Delivery,
    mut round_attempts: u32,
) -> Delivery {
    let ws = id(outcome.workspace_id.0);
    let delivery_id = id(outcome.delivery_id.0);
    let connection = id(delivery.connection_id.0);
    if let Some(due) = delivery.next_attempt_at_ms {
        rows.done.connection.push(connection.clone());
        rows.done.due.push(ms(due));
        rows.done.delivery.push(delivery_id.clone());
    }
    delivery.attempt_count += 1;
    round_attempts += 1;
    let attempt = &outcome.attempt;
    delivery.updated_at_ms = attempt.at_ms + attempt.duration_ms;
    let a = &mut rows.attempts;
    a.delivery.push(delivery_id.clone());
    a.n.push(count(delivery.attempt_count));
    a.at.push(ms(attempt.at_ms));
    a.duration.push(ms(attempt.duration_ms));
    a.status_code.push(attempt.status_code.map(i32::from));
    a.error.push(attempt.error.clone());
    a.response.push(attempt.response.clone());
    (delivery.status, delivery.next_attempt_at_ms) = match outcome.next {
        NextStep::Succeeded => (DeliveryStatus::Succeeded, None),
        NextStep::Dead => (DeliveryStatus::Dead, None),
        NextStep::RetryAt(due) => (DeliveryStatus::Retrying, Some(due)),
    };
    if let Some(due) = delivery.next_attempt_at_ms {
        rows.retry.connection.push(connection);
        rows.retry.due.push(ms(due));
        rows.retry.delivery.push(delivery_id.clone());
        rows.retry_workspace.push(ws.clone());
    }
    let d = &mut rows.deliveries;
    d.workspace.push(ws);
    d.id.push(delivery_id);
    d.status.push(delivery.status.as_str());
    d.attempt_count.push(count(delivery.attempt_count));
    d.round_attempts.push(count(round_attempts));
    d.next_attempt_at.push(delivery.next_attempt_at_ms.map(ms));
    d.updated_at.push(ms(delivery.updated_at_ms));
    delivery
}

/// The group's workspaces that exist, locked against a concurrent delete.
async fn existing_workspaces(
    txn: &Transaction<'_>,
    outcomes: &[&AttemptOutcome],
) -> PgResult<HashSet<u128>> {
    let wanted: Vec<Vec<u8>> = outcomes
        .iter()
        .map(|outcome| outcome.workspace_id.0)
        .collect::<HashSet<_>>()
        .into_iter()
        .map(id)
        .collect();
    let statement = txn
        .prepare_cached("SELECT id FROM workspaces WHERE id = ANY($1) ORDER BY id FOR SHARE")
        .await?;
    txn.query(&statement, &[&wanted])
        .await?
        .iter()
        .map(|row| get_id(row, "id"))
        .collect()
}

/// The group's deliveries in existing workspaces, locked for the update,
/// with their round attempts; keyed by delivery id.
async fn locked_deliveries(
    txn: &Transaction<'_>,
    outcomes: &[&AttemptOutcome],
    existing: &HashSet<u128>,
) -> PgResult<HashMap<u128, (Delivery, u32)>> {
    let (workspaces, wanted): (Vec<Vec<u8>>, Vec<Vec<u8>>) = outcomes
        .iter()
        .filter(|outcome| existing.contains(&outcome.workspace_id.0))
        .map(|outcome| (id(outcome.workspace_id.0), id(outcome.delivery_id.0)))
        .unzip();
    let mut found = HashMap::with_capacity(wanted.len());
    if wanted.is_empty() {
        return Ok(found);
    }
    let statement = txn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM deliveries
             WHERE (workspace_id, id) IN (SELECT * FROM unnest($1::bytea[], $2::bytea[]))
             ORDER BY workspace_id, id
             FOR UPDATE"
        ))
        .await?;
    for row in txn.query(&statement, &[&workspaces, &wanted]).await? {
        let round_attempts = get_count(&row, "round_attempts")?;
        let delivery = delivery_from(&row)?;
        found.insert(delivery.id.0, (delivery, round_attempts));
    }
    Ok(found)
}

/// The connections among `connections` whose lease `node` holds, locked
/// (shared) until the transaction ends, so no takeover can slip in between
/// the check and the commit (`queue::lock_own_lease` for a whole group).
async fn held_leases(
    txn: &Transaction<'_>,
    node: &Node,
    connections: &[ConnectionId],
    now: u64,
) -> PgResult<HashSet<u128>> {
    if connections.is_empty() {
        return Ok(HashSet::new());
    }
    let wanted: Vec<Vec<u8>> = connections
        .iter()
        .map(|connection| connection.0)
        .collect::<HashSet<_>>()
        .into_iter()
        .map(id)
        .collect();
    let statement = txn
        .prepare_cached(
            "SELECT connection_id FROM connection_leases
             WHERE connection_id = ANY($1) AND node_id = $2 AND lease_until_ms >= $3
             ORDER BY connection_id
             FOR SHARE",
        )
        .await?;
    txn.query(&statement, &[&wanted, &node.id, &ms(now)])
        .await?
        .iter()
        .map(|row| get_id(row, "connection_id"))
        .collect()
}

/// In the order one outcome alone writes them: the attempted queue rows
/// go, the attempts are appended, the retries are queued, the deliveries
/// take their next state.
async fn write_rows(txn: &Transaction<'_>, rows: &Rows) -> PgResult<()> {
    let done = &rows.done;
    if !done.delivery.is_empty() {
        let statement = txn
            .prepare_cached(
                "DELETE FROM delivery_queue q
                 USING unnest($1::bytea[], $2::int8[], $3::bytea[]) AS gone (c, d, i)
                 WHERE q.connection_id = gone.c AND q.due_ms = gone.d AND q.delivery_id = gone.i",
            )
            .await?;
        txn.execute(&statement, &[&done.connection, &done.due, &done.delivery])
            .await?;
    }
    let a = &rows.attempts;
    if !a.delivery.is_empty() {
        let statement = txn
            .prepare_cached(
                "INSERT INTO attempts (delivery_id, n, at_ms, duration_ms, status_code, error,
                                       response)
                 SELECT * FROM unnest($1::bytea[], $2::int4[], $3::int8[], $4::int8[],
                                      $5::int4[], $6::text[], $7::text[])",
            )
            .await?;
        txn.execute(
            &statement,
            &[
                &a.delivery,
                &a.n,
                &a.at,
                &a.duration,
                &a.status_code,
                &a.error,
                &a.response,
            ],
        )
        .await?;
    }
    let retry = &rows.retry;
    if !retry.delivery.is_empty() {
        let statement = txn
            .prepare_cached(
                "INSERT INTO delivery_queue (connection_id, due_ms, delivery_id, workspace_id)
                 SELECT * FROM unnest($1::bytea[], $2::int8[], $3::bytea[], $4::bytea[])
                 ON CONFLICT DO NOTHING",
            )
            .await?;
        txn.execute(
            &statement,
            &[
                &retry.connection,
                &retry.due,
                &retry.delivery,
                &rows.retry_workspace,
            ],
        )
        .await?;
    }
    let d = &rows.deliveries;
    if !d.id.is_empty() {
        let statement = txn
            .prepare_cached(
                "UPDATE deliveries d SET status = u.s, attempt_count = u.a, round_attempts = u.r,
                                         next_attempt_at_ms = u.n, updated_at_ms = u.up
                 FROM unnest($1::bytea[], $2::bytea[], $3::text[], $4::int4[], $5::int4[],
                             $6::int8[], $7::int8[]) AS u (w, i, s, a, r, n, up)
                 WHERE d.workspace_id = u.w AND d.id = u.i",
            )
            .await?;
        txn.execute(
            &statement,
            &[
                &d.workspace,
                &d.id,
                &d.status,
                &d.attempt_count,
                &d.round_attempts,
                &d.next_attempt_at,
                &d.updated_at,
            ],
        )
        .await?;
    }
    Ok(())
}
