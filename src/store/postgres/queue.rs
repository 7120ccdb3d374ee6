//! The delivery queue shared by nodes: its heads and rows, and the
//! connection leases that say which node delivers which connection's
//! entries (see `node.rs` for why the connection is the unit).
//!
//! A lease is taken three ways, each a conditional write so two nodes can
//! never both hold one: a refill claims unowned connections with a backlog
//! ([`claim_and_heads`], `FOR UPDATE SKIP LOCKED`, a fair share per
//! refill); an ingest or requeue claims the connections of its new entries
//! when nobody else holds them ([`claim_for_new_entries`]); the keeper
//! renews the leases of connections that still have queue rows
//! ([`renew_leases`]). An attempt's outcome is recorded only under a valid
//! lease of its node (`deliveries::record_attempt`).

use super::columns::{get_id, get_ms, id, id_from, ms, ms_from};
use super::error::PgResult;
use super::node::Node;
use crate::model::{ConnectionId, DeliveryId, WorkspaceId};
use crate::store::{LaneRead, LaneRows, QueueEntry, QueueHead, QueueHeads};
use std::collections::{HashMap, HashSet};
use tokio_postgres::{GenericClient, Transaction};

/// The channel on which a node tells the others it queued entries for
/// connections they hold (payload: their ids in hex, comma-joined; empty:
/// every node should look).
pub const QUEUE_CHANNEL: &str = "switchyard_queue";

/// Most ids in one notification (PostgreSQL caps a payload at 8000 bytes;
/// an id is 33 with its comma). More than that wakes every node instead.
const IDS_PER_NOTIFICATION: usize = 200;

/// A queue head with the lease on its connection, if there is a row.
struct HeadRow {
    head: QueueHead,
    lease: Option<LeaseRow>,
}

struct LeaseRow {
    node_id: String,
    until: u64,
}

/// What a refill found and claimed.
pub struct Claimed {
    /// Heads of the connections this node holds now, with their stored
    /// pauses; the backlog counts every node's entries.
    pub heads: QueueHeads,
    /// Leases this node holds now, with their ends.
    pub held: Vec<(ConnectionId, u64)>,
    /// Connections with a backlog this node does not hold.
    pub elsewhere: Vec<ConnectionId>,
}

/// Reads every connection's first entry with its lease, claims a fair share
/// of the unowned connections that have entries due, and returns the heads
/// of the connections this node holds. Run it in one transaction: claims
/// are row-locked until it commits.
pub async fn claim_and_heads(txn: &Transaction<'_>, node: &Node, now: u64) -> PgResult<Claimed> {
    let rows = heads_with_leases(txn).await?;
    let until = now + node.lease_ms;
    let mut owned = Vec::new();
    let mut expired = Vec::new();
    let mut unleased = Vec::new();
    let mut elsewhere = Vec::new();
    for row in rows {
        match &row.lease {
            Some(lease) if lease.until >= now && lease.node_id == node.id => {
                owned.push((row.head, lease.until))
            }
            Some(lease) if lease.until >= now => elsewhere.push(row.head.connection_id),
            Some(_) if row.head.first.0 <= now => expired.push(row.head),
            None if row.head.first.0 <= now => unleased.push(row.head),
            // Unowned, but nothing due yet: claimed once something is.
            _ => elsewhere.push(row.head.connection_id),
        }
    }
    let unowned = expired.len() + unleased.len();
    let mut claimed: Vec<(QueueHead, u64)> = Vec::new();
    if unowned > 0 {
        let live = live_nodes(txn, now.saturating_sub(node.dead_after_ms())).await?;
        let share = unowned.div_ceil(live.max(1)).max(1);
        // Oldest head first: the longest-waiting connections are claimed first.
        expired.sort_unstable_by_key(|head| head.first);
        unleased.sort_unstable_by_key(|head| head.first);
        let taken = take_over_expired(txn, node, &expired[..expired.len().min(share)], now).await?;
        for head in &expired {
            if let Some(paused) = taken.get(&head.connection_id) {
                claimed.push((
                    QueueHead {
                        paused_until_ms: *paused,
                        ..*head
                    },
                    until,
                ));
            }
        }
        let room = share.saturating_sub(claimed.len()).min(unleased.len());
        let inserted = claim_unleased(txn, node, &unleased[..room], until).await?;
        claimed.extend(
            unleased
                .iter()
                .filter(|head| inserted.contains(&head.connection_id))
                .map(|head| (*head, until)),
        );
    }
    let taken: HashSet<ConnectionId> = claimed.iter().map(|(head, _)| head.connection_id).collect();
    elsewhere.extend(
        expired
            .iter()
            .chain(&unleased)
            .map(|head| head.connection_id)
            .filter(|connection| !taken.contains(connection)),
    );
    let mut heads = QueueHeads {
        heads: Vec::with_capacity(owned.len() + claimed.len()),
        backlog: queue_len(txn).await?,
    };
    let mut held = Vec::with_capacity(owned.len() + claimed.len());
    for (head, until) in owned.into_iter().chain(claimed) {
        heads.heads.push(head);
        held.push((head.connection_id, until));
    }
    heads.heads.sort_unstable_by_key(|head| head.connection_id);
    Ok(Claimed {
        heads,
        held,
        elsewhere,
    })
}

/// The first entry of every connection's queue with its lease: a loose
/// index scan (one index probe per connection), not a read of the backlog.
async fn heads_with_leases(txn: &Transaction<'_>) -> PgResult<Vec<HeadRow>> {
    let statement = "WITH RECURSIVE heads AS (
                 (SELECT connection_id, due_ms, delivery_id, workspace_id FROM delivery_queue
                  ORDER BY connection_id, due_ms, delivery_id LIMIT 1)
                 UNION ALL
                 SELECT next.* FROM heads, LATERAL (
                     SELECT connection_id, due_ms, delivery_id, workspace_id FROM delivery_queue
                     WHERE connection_id > heads.connection_id
                     ORDER BY connection_id, due_ms, delivery_id LIMIT 1) AS next)
             SELECT h.connection_id, h.due_ms, h.delivery_id, h.workspace_id,
                    l.node_id, l.lease_until_ms, l.paused_until_ms
             FROM heads h LEFT JOIN connection_leases l ON l.connection_id = h.connection_id";
    let mut heads = Vec::new();
    for row in txn.query(statement, &[]).await? {
        let node_id: Option<String> = row.try_get("node_id")?;
        let lease = match node_id {
            Some(node_id) => Some(LeaseRow {
                node_id,
                until: get_ms(&row, "lease_until_ms")?,
            }),
            None => None,
        };
        let paused: Option<i64> = row.try_get("paused_until_ms")?;
        heads.push(HeadRow {
            head: QueueHead {
                connection_id: ConnectionId(get_id(&row, "connection_id")?),
                workspace_id: WorkspaceId(get_id(&row, "workspace_id")?),
                first: (
                    get_ms(&row, "due_ms")?,
                    DeliveryId(get_id(&row, "delivery_id")?),
                ),
                paused_until_ms: paused.map_or(0, ms_from),
            },
            lease,
        });
    }
    Ok(heads)
}

async fn live_nodes(txn: &Transaction<'_>, heartbeat_since: u64) -> PgResult<usize> {
    let row = txn
        .query_one(
            "SELECT count(*) FROM nodes WHERE heartbeat_ms >= $1",
            &[&ms(heartbeat_since)],
        )
        .await?;
    Ok(usize::try_from(row.try_get::<_, i64>(0)?).unwrap_or(1))
}

/// Takes over expired leases, skipping rows another transaction holds (a
/// node claiming the same one, or the old holder recording an attempt);
/// keeps their pauses. Returns the connections taken, with their pauses.
async fn take_over_expired(
    txn: &Transaction<'_>,
    node: &Node,
    heads: &[QueueHead],
    now: u64,
) -> PgResult<HashMap<ConnectionId, u64>> {
    if heads.is_empty() {
        return Ok(HashMap::new());
    }
    let wanted: Vec<Vec<u8>> = heads.iter().map(|head| id(head.connection_id.0)).collect();
    let statement = "WITH free AS (
                 SELECT connection_id FROM connection_leases
                 WHERE connection_id = ANY($1) AND lease_until_ms < $2
                 FOR UPDATE SKIP LOCKED)
             UPDATE connection_leases l SET node_id = $3, lease_until_ms = $4
             FROM free WHERE l.connection_id = free.connection_id
             RETURNING l.connection_id, l.paused_until_ms";
    let rows = txn
        .query(
            statement,
            &[&wanted, &ms(now), &node.id, &ms(now + node.lease_ms)],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                ConnectionId(get_id(row, "connection_id")?),
                get_ms(row, "paused_until_ms")?,
            ))
        })
        .collect()
}

/// Claims connections that have no lease row yet; one another node inserts
/// first stays its own. Returns the connections claimed.
async fn claim_unleased(
    txn: &Transaction<'_>,
    node: &Node,
    heads: &[QueueHead],
    until: u64,
) -> PgResult<Vec<ConnectionId>> {
    if heads.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<Vec<u8>> = heads.iter().map(|head| id(head.connection_id.0)).collect();
    // One order for every node's inserts: no deadlock between them.
    wanted.sort_unstable();
    let statement = "INSERT INTO connection_leases (connection_id, node_id, lease_until_ms)
             SELECT c, $2, $3 FROM unnest($1::bytea[]) AS c
             ON CONFLICT (connection_id) DO NOTHING
             RETURNING connection_id";
    let rows = txn
        .query(statement, &[&wanted, &node.id, &ms(until)])
        .await?;
    rows.iter()
        .map(|row| Ok(ConnectionId(get_id(row, "connection_id")?)))
        .collect()
}

/// Who delivers the entries a write just queued.
#[derive(Debug, Default)]
pub struct NewEntryLeases {
    /// Held by this node after the commit, with the lease's end.
    pub mine: Vec<(ConnectionId, u64)>,
    /// Held by another node, which was told.
    pub elsewhere: Vec<ConnectionId>,
}

/// Claims, inside the transaction that queues new entries, their
/// connections that nobody holds (or this node holds with less than half a
/// lease left), and notifies the nodes holding the others (delivered at
/// commit). The leases are read first without a lock and written only when
/// they look claimable, so two nodes ingesting for one connection do not
/// queue behind each other's row lock; the write re-checks.
pub async fn claim_for_new_entries(
    txn: &Transaction<'_>,
    node: &Node,
    connections: &[ConnectionId],
    now: u64,
) -> PgResult<NewEntryLeases> {
    let mut leases = NewEntryLeases::default();
    if connections.is_empty() {
        return Ok(leases);
    }
    let mut wanted: Vec<ConnectionId> = connections.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let statement = "SELECT connection_id, node_id, lease_until_ms FROM connection_leases
             WHERE connection_id = ANY($1)";
    let ids: Vec<Vec<u8>> = wanted.iter().map(|c| id(c.0)).collect();
    let mut current = HashMap::new();
    for row in txn.query(statement, &[&ids]).await? {
        let node_id: String = row.try_get("node_id")?;
        current.insert(
            ConnectionId(get_id(&row, "connection_id")?),
            (node_id, get_ms(&row, "lease_until_ms")?),
        );
    }
    let until = now + node.lease_ms;
    let mut claim = Vec::new();
    for connection in wanted {
        match current.get(&connection) {
            Some((holder, ends)) if *holder == node.id && *ends >= now + node.lease_ms / 2 => {
                leases.mine.push((connection, *ends));
            }
            Some((holder, ends)) if *holder != node.id && *ends >= now => {
                leases.elsewhere.push(connection);
            }
            _ => claim.push(connection),
        }
    }
    if !claim.is_empty() {
        let statement =
            "INSERT INTO connection_leases AS l (connection_id, node_id, lease_until_ms)
                 SELECT c, $2, $3 FROM unnest($1::bytea[]) AS c
                 ON CONFLICT (connection_id) DO UPDATE
                     SET node_id = EXCLUDED.node_id, lease_until_ms = EXCLUDED.lease_until_ms
                     WHERE l.lease_until_ms < $4 OR l.node_id = EXCLUDED.node_id
                 RETURNING connection_id";
        let ids: Vec<Vec<u8>> = claim.iter().map(|c| id(c.0)).collect();
        let mut got = HashSet::new();
        for row in txn
            .query(statement, &[&ids, &node.id, &ms(until), &ms(now)])
            .await?
        {
            got.insert(ConnectionId(get_id(&row, "connection_id")?));
        }
        for connection in claim {
            if got.contains(&connection) {
                leases.mine.push((connection, until));
            } else {
                leases.elsewhere.push(connection);
            }
        }
    }
    notify(txn, &leases.elsewhere).await?;
    Ok(leases)
}

/// Tells the nodes holding these connections that they have new entries
/// (at commit). Nothing when there are none.
pub async fn notify<C: GenericClient + Sync>(
    client: &C,
    connections: &[ConnectionId],
) -> PgResult<()> {
    if connections.is_empty() {
        return Ok(());
    }
    let payload = if connections.len() > IDS_PER_NOTIFICATION {
        String::new()
    } else {
        connections
            .iter()
            .map(|c| format!("{:032x}", c.0))
            .collect::<Vec<_>>()
            .join(",")
    };
    notify_payload(client, &payload).await
}

/// Tells every node to look at the queue (at commit).
pub async fn notify_all<C: GenericClient + Sync>(client: &C) -> PgResult<()> {
    notify_payload(client, "").await
}

async fn notify_payload<C: GenericClient + Sync>(client: &C, payload: &str) -> PgResult<()> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&QUEUE_CHANNEL, &payload])
        .await?;
    Ok(())
}

/// The connection ids of a [`QUEUE_CHANNEL`] payload; `None` for "every
/// node should look" (empty or not understood).
pub fn notified_connections(payload: &str) -> Option<Vec<ConnectionId>> {
    if payload.is_empty() {
        return None;
    }
    payload
        .split(',')
        .map(|hex| u128::from_str_radix(hex, 16).ok().map(ConnectionId))
        .collect()
}

/// Reads each [`LaneRead`]'s entries in due order; call it in a
/// repeatable-read transaction so all reads see one snapshot. The caller
/// passes only reads of connections it holds.
pub async fn queue_rows<C: GenericClient + Sync>(
    client: &C,
    reads: &[LaneRead],
) -> PgResult<Vec<LaneRows>> {
    let mut answers = Vec::with_capacity(reads.len());
    for read in reads {
        let (due, delivery) = read.from.map_or((0, 0), |(due, id)| (due, id.0));
        let wanted = i64::try_from(read.limit)
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let rows = client
            .query(
                "SELECT due_ms, delivery_id, workspace_id FROM delivery_queue
                 WHERE connection_id = $1 AND (due_ms, delivery_id) >= ($2, $3)
                 ORDER BY due_ms, delivery_id LIMIT $4",
                &[&id(read.connection_id.0), &ms(due), &id(delivery), &wanted],
            )
            .await?;
        let mut answer = LaneRows::default();
        for row in &rows {
            let due_ms = get_ms(row, "due_ms")?;
            let delivery = DeliveryId(get_id(row, "delivery_id")?);
            if answer.entries.len() == read.limit || due_ms > read.due_by {
                answer.next = Some((due_ms, delivery));
                break;
            }
            answer.entries.push(QueueEntry {
                due_ms,
                delivery_id: delivery,
                workspace_id: WorkspaceId(get_id(row, "workspace_id")?),
                connection_id: read.connection_id,
            });
        }
        answers.push(answer);
    }
    Ok(answers)
}

pub async fn queue_len<C: GenericClient + Sync>(client: &C) -> PgResult<u64> {
    let row = client
        .query_one("SELECT count(*) FROM delivery_queue", &[])
        .await?;
    Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
}

/// Whether `node` holds the connection's lease now, locking the lease row
/// (shared) until the transaction ends: a takeover waits for the outcome
/// being recorded under it.
pub async fn lock_own_lease(
    txn: &Transaction<'_>,
    node_id: &str,
    connection: ConnectionId,
    now: u64,
) -> PgResult<bool> {
    let statement = "SELECT 1 FROM connection_leases
             WHERE connection_id = $1 AND node_id = $2 AND lease_until_ms >= $3
             FOR SHARE";
    Ok(txn
        .query_opt(statement, &[&id(connection.0), &node_id, &ms(now)])
        .await?
        .is_some())
}

/// Keeps a Retry-After pause with the lease, so a node taking the
/// connection over honours it.
pub async fn store_pause(
    txn: &Transaction<'_>,
    connection: ConnectionId,
    until: u64,
) -> PgResult<()> {
    txn.execute(
        "UPDATE connection_leases SET paused_until_ms = greatest(paused_until_ms, $2)
         WHERE connection_id = $1",
        &[&id(connection.0), &ms(until)],
    )
    .await?;
    Ok(())
}

/// Registers the node or refreshes its heartbeat (a node removed as dead
/// after a stall registers again).
pub async fn heartbeat<C: GenericClient + Sync>(client: &C, node: &Node, now: u64) -> PgResult<()> {
    client
        .execute(
            "INSERT INTO nodes (id, started_at_ms, heartbeat_ms) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms",
            &[&node.id, &ms(node.started_at_ms), &ms(now)],
        )
        .await?;
    Ok(())
}

/// Removes nodes that stopped heartbeating, and lease rows that no longer
/// mean anything (long expired, no pause to keep, nothing queued).
pub async fn remove_dead_nodes<C: GenericClient + Sync>(
    client: &C,
    heartbeat_before: u64,
) -> PgResult<u64> {
    let removed = client
        .execute(
            "DELETE FROM nodes WHERE heartbeat_ms < $1",
            &[&ms(heartbeat_before)],
        )
        .await?;
    client
        .execute(
            "DELETE FROM connection_leases l
             WHERE lease_until_ms < $1 AND paused_until_ms < $1
               AND NOT EXISTS (SELECT 1 FROM delivery_queue q
                               WHERE q.connection_id = l.connection_id)",
            &[&ms(heartbeat_before)],
        )
        .await?;
    Ok(removed)
}

/// Extends this node's unexpired leases whose connections still have queue
/// rows; returns them. The others lapse.
pub async fn renew_leases<C: GenericClient + Sync>(
    client: &C,
    node_id: &str,
    now: u64,
    until: u64,
) -> PgResult<Vec<ConnectionId>> {
    let rows = client
        .query(
            "UPDATE connection_leases l SET lease_until_ms = $3
             WHERE node_id = $1 AND lease_until_ms >= $2
               AND EXISTS (SELECT 1 FROM delivery_queue q WHERE q.connection_id = l.connection_id)
             RETURNING connection_id",
            &[&node_id, &ms(now), &ms(until)],
        )
        .await?;
    rows.iter()
        .map(|row| Ok(ConnectionId(get_id(row, "connection_id")?)))
        .collect()
}

/// Ends every lease of the node at once (keeping stored pauses); returns
/// the connections released.
pub async fn release_leases(txn: &Transaction<'_>, node_id: &str) -> PgResult<Vec<ConnectionId>> {
    let rows = txn
        .query(
            "UPDATE connection_leases SET lease_until_ms = 0 WHERE node_id = $1
             RETURNING connection_id",
            &[&node_id],
        )
        .await?;
    rows.iter()
        .map(|row| Ok(ConnectionId(id_from(row.try_get("connection_id")?)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notification_names_connections_or_everyone() {
        assert_eq!(notified_connections(""), None);
        assert_eq!(
            notified_connections("zz"),
            None,
            "not understood: everyone looks"
        );
        let two = format!("{:032x},{:032x}", 10u128, u128::MAX);
        assert_eq!(
            notified_connections(&two),
            Some(vec![ConnectionId(10), ConnectionId(u128::MAX)])
        );
    }
}
