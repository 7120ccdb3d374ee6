//! This node's identity and its record of the connection leases it holds.
//!
//! Nodes sharing one database split the delivery queue by connection: a
//! node delivers a connection's entries only while it holds the
//! connection's lease (`connection_leases`), so the connection's order, its
//! in-flight cap and its Retry-After pause are kept by one node at a time,
//! and a lease costs one write per busy period rather than one per delivery.
//!
//! The database row is the truth; [`Node`] keeps this node's own record of
//! when each of its leases ends, written only from values it wrote itself
//! (computed from a time taken *before* the write), so the record never
//! says a lease lasts longer than it does. The scheduler asks it before an
//! attempt starts ([`Node::may_start_attempt`]): a node that stalled (and
//! whose lease may pass to another node) starts nothing it could not record.
//!
//! The keeper task heartbeats the `nodes` row, removes rows of dead nodes
//! and renews, in one statement, every lease of this node whose connection
//! still has queue rows; leases of connections with nothing queued lapse.

use super::error::PgResult;
use super::health::Health;
use super::queue;
use crate::model::{ConnectionId, now_ms};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Lease left beyond the attempt timeout for an attempt to start: time to
/// read its context before the send and record its outcome after it.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(2);

/// How long this node's leases last and how long one attempt may take.
#[derive(Debug, Clone, Copy)]
pub struct NodeOptions {
    /// `storage.postgres.lease_seconds`.
    pub lease: Duration,
    /// `delivery.timeout_seconds`.
    pub attempt_timeout: Duration,
}

impl NodeOptions {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            lease: Duration::from_secs(config.storage.postgres.lease_seconds),
            attempt_timeout: Duration::from_secs(config.delivery.timeout_seconds),
        }
    }
}

pub struct Node {
    /// `node_` and a ULID: unique per start.
    pub id: String,
    pub started_at_ms: u64,
    pub lease_ms: u64,
    /// Lease an attempt needs left to start.
    attempt_ms: u64,
    /// When each lease this node holds ends, as far as it knows.
    leases: Mutex<HashMap<ConnectionId, u64>>,
}

impl Node {
    pub fn new(options: NodeOptions) -> Self {
        Self {
            id: format!("node_{}", ulid::Ulid::generate()),
            started_at_ms: now_ms(),
            lease_ms: options.lease.as_millis() as u64,
            attempt_ms: (options.attempt_timeout + ATTEMPT_MARGIN).as_millis() as u64,
            leases: Mutex::new(HashMap::new()),
        }
    }

    /// How often the keeper renews: a third of the lease, or sooner when
    /// that would let a lease run shorter than an attempt needs, so a node
    /// that keeps renewing never finds itself short.
    pub fn renew_every(&self) -> Duration {
        let slack = self.lease_ms.saturating_sub(self.attempt_ms) / 2;
        Duration::from_millis((self.lease_ms / 3).min(slack).max(500))
    }

    /// A node whose heartbeat is older than this is dead: its leases have
    /// all expired by then.
    pub fn dead_after_ms(&self) -> u64 {
        self.lease_ms
    }

    fn book(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, u64>> {
        // The map holds plain numbers: a panic elsewhere cannot leave it torn.
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node holds the connection's lease with an attempt's time left.
    pub fn may_start_attempt(&self, connection: ConnectionId, now: u64) -> bool {
        self.book()
            .get(&connection)
            .is_some_and(|until| *until >= now.saturating_add(self.attempt_ms))
    }

    /// This node holds the connection's lease at `now`.
    pub fn holds(&self, connection: ConnectionId, now: u64) -> bool {
        self.book()
            .get(&connection)
            .is_some_and(|until| *until >= now)
    }

    pub fn held(&self, now: u64) -> usize {
        self.book().values().filter(|until| **until >= now).count()
    }

    /// Records leases this node wrote (or read back as its own).
    pub fn hold(&self, connections: impl IntoIterator<Item = ConnectionId>, until: u64) {
        let mut book = self.book();
        for connection in connections {
            book.insert(connection, until);
        }
    }

    /// Forgets a lease the database says is gone or another node's.
    pub fn forget(&self, connection: ConnectionId) {
        self.book().remove(&connection);
    }

    /// Forgets leases that have ended.
    fn forget_expired(&self, now: u64) {
        self.book().retain(|_, until| *until >= now);
    }

    fn forget_all(&self) {
        self.book().clear();
    }
}

/// Registers the node and runs the keeper until `close`; the task returned
/// has stopped writing once it ends.
pub async fn register(pool: &Pool, node: &Node) -> PgResult<()> {
    let pooled = pool.get().await?;
    let client: &tokio_postgres::Client = &pooled;
    queue::heartbeat(client, node, now_ms()).await
}

pub fn start_keeper(
    pool: Pool,
    health: Arc<Health>,
    node: Arc<Node>,
    close: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(node.renew_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = close.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(error) = keep(&pool, &node).await {
                let error = health.observe(error);
                tracing::warn!(%error, node = %node.id, "cannot renew this node's leases");
            }
            metrics::gauge!("switchyard_connection_leases_held").set(node.held(now_ms()) as f64);
        }
    })
}

/// One keeper round: heartbeat, dead nodes removed, leases renewed.
async fn keep(pool: &Pool, node: &Node) -> PgResult<()> {
    // Taken before the writes: the record may only err on the short side.
    let now = now_ms();
    let pooled = pool.get().await?;
    let client: &tokio_postgres::Client = &pooled;
    queue::heartbeat(client, node, now).await?;
    let removed =
        queue::remove_dead_nodes(client, now.saturating_sub(node.dead_after_ms())).await?;
    if removed > 0 {
        tracing::info!(removed, "removed nodes that stopped heartbeating");
    }
    let until = now + node.lease_ms;
    let renewed = queue::renew_leases(client, &node.id, now, until).await?;
    node.forget_expired(now);
    node.hold(renewed, until);
    Ok(())
}

/// On clean shutdown, after the keeper stopped: gives up every lease (and
/// tells the other nodes, so they claim the connections at once) and
/// removes the node's row.
pub async fn release(pool: &Pool, node: &Node) -> PgResult<usize> {
    node.forget_all();
    let mut client = pool.get().await?;
    let txn = client.transaction().await?;
    let released = queue::release_leases(&txn, &node.id).await?;
    if !released.is_empty() {
        // Nobody holds them now: every node should look.
        queue::notify_all(&*txn).await?;
    }
    txn.execute("DELETE FROM nodes WHERE id = $1", &[&node.id])
        .await?;
    txn.commit().await?;
    Ok(released.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(lease: u64, timeout: u64) -> Node {
        Node::new(NodeOptions {
            lease: Duration::from_secs(lease),
            attempt_timeout: Duration::from_secs(timeout),
        })
    }

    #[test]
    fn renewals_come_often_enough_that_a_live_node_is_never_short() {
        // (lease, timeout) → renewal period: a third of the lease, or half
        // of what the lease leaves beyond an attempt (timeout + 2 s).
        for (lease, timeout, every_ms) in [
            (30, 15, 6_500),
            (20, 15, 1_500),
            (60, 15, 20_000),
            (7, 2, 1_500),
        ] {
            let node = node(lease, timeout);
            assert_eq!(
                node.renew_every(),
                Duration::from_millis(every_ms),
                "{lease} {timeout}"
            );
            let least_left = lease * 1000 - every_ms;
            assert!(least_left >= (timeout + 2) * 1000, "{lease} {timeout}");
        }
    }

    #[test]
    fn an_attempt_starts_only_with_its_time_left_on_the_lease() {
        let node = node(30, 15);
        let con = ConnectionId(7);
        assert!(!node.may_start_attempt(con, 1_000), "no lease");
        node.hold([con], 1_000 + 17_000);
        assert!(node.may_start_attempt(con, 1_000));
        assert!(!node.may_start_attempt(con, 1_001), "1 ms short");
        assert!(node.holds(con, 18_000));
        node.forget(con);
        assert!(!node.holds(con, 1_000));
        assert!(node.id.starts_with("node_"));
    }
}
