//! Cross-node cache invalidation: every transaction that changes what a
//! node caches about a workspace (keys, rules, connections, the workspace
//! itself) ends by bumping the workspace's `workspace_changes` row; each
//! node polls the rows changed lately and drops that workspace's caches.
//!
//! The bound: a node polls every [`POLL_INTERVAL`] (250 ms), and a poll
//! whose snapshot starts after a change committed sees it, so a change
//! reaches every node's caches within 250 ms plus one poll's round trip,
//! well under the one second promised. Commits land out of timestamp order
//! (a bump is stamped when its statement runs, a moment before its commit),
//! so each poll reads back [`OVERLAP_MS`] (5 s) before the previous poll's
//! start; a change is missed only if its commit took longer than that after
//! its bump. Rows read again are recognised by their `version` and not
//! reported twice. Times are the database's clock, never a node's, so
//! clock skew between nodes does not matter. The poll has a connection of
//! its own, so a busy pool does not stretch the bound.

use super::columns::{get_id, id};
use super::error::PgResult;
use super::health::Health;
use crate::model::WorkspaceId;
use crate::store::CacheChange;
use deadpool_postgres::{ClientWrapper, Pool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::{GenericClient, Transaction};

/// How often a node looks for changes made through the others.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How far back before its previous poll each poll reads again.
pub const OVERLAP_MS: i64 = 5_000;

/// The database's clock in Unix milliseconds, as SQL.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Marks the workspace changed; call last in the transaction that changed
/// it, so the stamp is as close to the commit as it can be. The stamp is
/// taken once the row is locked (a concurrent bump waits, then stamps).
pub async fn bump(txn: &Transaction<'_>, workspace: WorkspaceId) -> PgResult<()> {
    txn.execute(
        &format!(
            "INSERT INTO workspace_changes (workspace_id, version, changed_at_ms)
             VALUES ($1, 1, {DB_NOW_MS})
             ON CONFLICT (workspace_id) DO UPDATE SET
                 version = workspace_changes.version + 1,
                 changed_at_ms = greatest(workspace_changes.changed_at_ms, {DB_NOW_MS})"
        ),
        &[&id(workspace.0)],
    )
    .await?;
    Ok(())
}

/// Forgets a purged workspace's row (long after any node polled it).
pub async fn forget(txn: &Transaction<'_>, workspace: &[u8]) -> PgResult<()> {
    txn.execute(
        "DELETE FROM workspace_changes WHERE workspace_id = $1",
        &[&workspace],
    )
    .await?;
    Ok(())
}

/// Starts polling; the feed ends when its receiver is dropped.
pub fn follow(pool: Pool, health: Arc<Health>) -> mpsc::Receiver<CacheChange> {
    let (sender, receiver) = mpsc::channel(1024);
    tokio::spawn(async move {
        let mut feed = ChangeFeed::default();
        let mut connection = None;
        let mut interval = tokio::time::interval(POLL_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sender.closed() => return,
                _ = interval.tick() => {}
            }
            let polled = poll_once(&pool, &mut connection, &mut feed).await;
            let changes = match polled {
                Ok(changed) => changed.into_iter().map(CacheChange::Workspace).collect(),
                Err(error) => {
                    // Blind to other nodes' changes: caches must not
                    // outlive a poll that failed.
                    let error = health.observe(error);
                    tracing::warn!(%error, "cannot poll workspace changes; caches dropped");
                    vec![CacheChange::Everything]
                }
            };
            for change in changes {
                if sender.send(change).await.is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Polls on the feed's own connection, kept out of the pool so that a
/// saturated pool cannot hold a poll up; after a failure the next poll
/// opens another.
async fn poll_once(
    pool: &Pool,
    connection: &mut Option<ClientWrapper>,
    feed: &mut ChangeFeed,
) -> PgResult<Vec<WorkspaceId>> {
    let client = match connection.take() {
        Some(client) if !client.is_closed() => client,
        _ => deadpool_postgres::Object::take(pool.get().await?),
    };
    let changed = feed.poll(&*client).await?;
    *connection = Some(client);
    Ok(changed)
}

/// What one node has seen of `workspace_changes`.
#[derive(Default)]
pub struct ChangeFeed {
    /// When the last poll that worked started (database clock, ms).
    last_poll_ms: Option<i64>,
    /// The version last reported of each row still inside the overlap.
    seen: HashMap<WorkspaceId, (i64, i64)>,
}

impl ChangeFeed {
    /// The workspaces changed since the last poll (each bump reported once).
    pub async fn poll<C: GenericClient + Sync>(
        &mut self,
        client: &C,
    ) -> PgResult<Vec<WorkspaceId>> {
        let rows = client
            .query(
                &format!(
                    "WITH clock AS (SELECT {DB_NOW_MS} AS now_ms)
                     SELECT clock.now_ms, c.workspace_id, c.version, c.changed_at_ms
                     FROM clock LEFT JOIN workspace_changes c
                       ON c.changed_at_ms > coalesce($1::bigint, clock.now_ms) - $2::bigint"
                ),
                &[&self.last_poll_ms, &OVERLAP_MS],
            )
            .await?;
        let Some(now_ms) = rows
            .first()
            .map(|row| row.try_get::<_, i64>("now_ms"))
            .transpose()?
        else {
            return Ok(Vec::new());
        };
        let since = self.last_poll_ms.unwrap_or(now_ms) - OVERLAP_MS;
        self.seen.retain(|_, (_, changed_at)| *changed_at > since);
        let mut changed = Vec::new();
        for row in &rows {
            let Some(version) = row.try_get::<_, Option<i64>>("version")? else {
                continue; // the clock's row when nothing changed
            };
            let workspace = WorkspaceId(get_id(row, "workspace_id")?);
            let changed_at: i64 = row.try_get("changed_at_ms")?;
            if self
                .seen
                .insert(workspace, (version, changed_at))
                .map(|(v, _)| v)
                != Some(version)
            {
                changed.push(workspace);
            }
        }
        self.last_poll_ms = Some(now_ms);
        Ok(changed)
    }
}
