//! Table definitions. Keys are native redb tuples, which compare element by
//! element, so `(workspace, ulid)` keys list a workspace's objects in time
//! order and `(connection, due_ms, delivery)` keys give each connection's
//! queue in due order.

use redb::TableDefinition;

pub const WORKSPACES: TableDefinition<u128, &[u8]> = TableDefinition::new("workspaces");
/// SHA-256 of a key → its workspace and kind.
pub const API_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("api_keys");
/// (workspace, event id).
pub const EVENTS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("events");
pub const IDEMPOTENCY: TableDefinition<(u128, &str), &[u8]> = TableDefinition::new("idempotency");
/// (created at, workspace, key): lets the purge walk only expired entries.
pub const IDEMPOTENCY_BY_AGE: TableDefinition<(u64, u128, &str), ()> =
    TableDefinition::new("idempotency_by_age");
/// (workspace, connection id).
pub const CONNECTIONS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("connections");
/// (workspace, rule id).
pub const RULES: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("rules");
/// (workspace, delivery id).
pub const DELIVERIES: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("deliveries");
/// (workspace, event id, delivery id): an event's deliveries.
pub const EVENT_DELIVERIES: TableDefinition<(u128, u128, u128), ()> =
    TableDefinition::new("event_deliveries");
/// (delivery id, attempt number from 1).
pub const ATTEMPTS: TableDefinition<(u128, u32), &[u8]> = TableDefinition::new("attempts");
/// (connection, due at ms, delivery) → workspace. Keyed by connection first
/// so the scheduler reads each connection's next entries in due order and a
/// backlog of one connection never has to be walked to reach another's.
pub const QUEUE: TableDefinition<(u128, u64, u128), u128> = TableDefinition::new("delivery_queue");
/// The queue before it was keyed by connection: (due at ms, delivery) →
/// `QueueRecord`. Moved into [`QUEUE`] when the database is opened.
pub const LEGACY_QUEUE: TableDefinition<(u64, u128), &[u8]> = TableDefinition::new("queue");

/// Noise control: (workspace, rule, alert key) → when the rule last sent
/// that alert (ms); kept for at most `MAX_DEDUP_SECONDS`.
pub const ALERT_NOISE: TableDefinition<(u128, u128, &str), u64> =
    TableDefinition::new("alert_noise");
/// Noise control: (workspace, rule) → `RuleNoiseRecord`.
pub const RULE_NOISE: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("rule_noise");

/// Slack threads: (workspace, connection, channel, alert key) → (when it
/// was saved (ms), the first message's `ts`). Pruned after
/// `retention.events` (30 days when that keeps everything).
pub const SLACK_THREADS: TableDefinition<(u128, u128, &str, &str), (u64, &str)> =
    TableDefinition::new("slack_threads");

/// Deleted workspaces whose events and deliveries are still being removed
/// (a few thousand rows per transaction) → when deleted (ms).
pub const PURGES: TableDefinition<u128, u64> = TableDefinition::new("workspace_purges");

/// Single-use OAuth `state` nonces → expiry (ms).
pub const OAUTH_STATES: TableDefinition<u128, u64> = TableDefinition::new("oauth_states");

/// Embed launch tokens already exchanged (a digest of the token) → the
/// token's expiry (ms): a launch token is single use, and its row goes once
/// it has expired.
pub const USED_LAUNCH_TOKENS: TableDefinition<u128, u64> =
    TableDefinition::new("used_launch_tokens");

/// One row the storage probe rewrites (time of the last probe, ms) to prove
/// the disk takes writes again after a failure.
pub const STORAGE_PROBE: TableDefinition<u8, u64> = TableDefinition::new("storage_probe");

/// The write-ahead log's state (`wal.rs`): 0 → this database's id (the log
/// names it, so a log left by another file is never applied), 1 → the last
/// log record this database holds.
pub const WAL_STATE: TableDefinition<u8, u128> = TableDefinition::new("wal_state");

pub fn create_all(txn: &redb::WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(WORKSPACES)?;
    txn.open_table(API_KEYS)?;
    txn.open_table(EVENTS)?;
    txn.open_table(IDEMPOTENCY)?;
    txn.open_table(IDEMPOTENCY_BY_AGE)?;
    txn.open_table(CONNECTIONS)?;
    txn.open_table(RULES)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(EVENT_DELIVERIES)?;
    txn.open_table(ATTEMPTS)?;
    txn.open_table(QUEUE)?;
    txn.open_table(OAUTH_STATES)?;
    txn.open_table(USED_LAUNCH_TOKENS)?;
    txn.open_table(PURGES)?;
    txn.open_table(STORAGE_PROBE)?;
    txn.open_table(ALERT_NOISE)?;
    txn.open_table(RULE_NOISE)?;
    txn.open_table(SLACK_THREADS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::EVENTS;
    use redb::{Database, Durability, ReadableDatabase, ReadableTableMetadata};

    /// How full the leaves of a `(workspace, ulid)` table end up when the
    /// workspaces' rows arrive interleaved, as in a multi-tenant server:
    /// the figures in docs/benchmarks.md ("Issue 13, sixteenth sitting"),
    /// `cargo test --lib leaf_fill_by_workspace_count -- --ignored
    /// --nocapture`. redb packs a leaf full only for a key past the last
    /// key of the whole table; each other workspace's newest rows land in
    /// the middle of the tree, where a full leaf is split in half.
    #[test]
    #[ignore = "a benchmark: about two minutes"]
    fn leaf_fill_by_workspace_count() {
        const ROWS: u128 = 100_000;
        const PER_TRANSACTION: u128 = 50;
        println!("{ROWS} rows into `events`, {PER_TRANSACTION} per transaction, ids ascending");
        // About a delivery's record, and an event's with a small payload.
        for value_bytes in [150, 400] {
            let value = vec![7u8; value_bytes];
            for workspaces in [1u128, 2, 8, 64] {
                let dir = tempfile::tempdir().unwrap();
                let db = Database::create(dir.path().join("fill.redb")).unwrap();
                let mut id = 1u128 << 100;
                for _ in 0..ROWS / PER_TRANSACTION {
                    let mut txn = db.begin_write().unwrap();
                    txn.set_durability(Durability::None).unwrap();
                    {
                        let mut table = txn.open_table(EVENTS).unwrap();
                        for _ in 0..PER_TRANSACTION {
                            id += 1;
                            table
                                .insert((id % workspaces, id), value.as_slice())
                                .unwrap();
                        }
                    }
                    txn.commit().unwrap();
                }
                let txn = db.begin_read().unwrap();
                let stats = txn.open_table(EVENTS).unwrap().stats().unwrap();
                let in_pages =
                    stats.stored_bytes() + stats.metadata_bytes() + stats.fragmented_bytes();
                println!(
                    "rows of {value_bytes} bytes, {workspaces:>2} workspaces: {:>6} leaf pages, {:>6} KiB in pages, {:>4.1} % of it rows",
                    stats.leaf_pages(),
                    in_pages / 1024,
                    100.0 * stats.stored_bytes() as f64 / in_pages as f64,
                );
            }
        }
    }
}
