//! Slack threads: the `ts` of an alert's first message per connection,
//! channel and alert, so its acknowledge and resolve reply in that thread.
//! Bounded: rows go after the retention period, with their connection, and
//! with their workspace.

use super::tables::SLACK_THREADS;
use crate::model::ThreadKey;
use crate::store::StoreError;
use redb::{ReadTransaction, ReadableTableMetadata, WriteTransaction};

pub fn get(txn: &ReadTransaction, key: &ThreadKey) -> Result<Option<String>, StoreError> {
    let table = txn.open_table(SLACK_THREADS)?;
    let row = table.get((
        key.workspace.0,
        key.connection.0,
        key.channel.as_str(),
        key.alert.as_str(),
    ))?;
    Ok(row.map(|row| row.value().1.to_string()))
}

/// Remembers the thread; a later first message (the alert fired again after
/// its row expired) replaces it.
pub fn put(
    txn: &WriteTransaction,
    key: &ThreadKey,
    ts: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    txn.open_table(SLACK_THREADS)?.insert(
        (
            key.workspace.0,
            key.connection.0,
            key.channel.as_str(),
            key.alert.as_str(),
        ),
        (now_ms, ts),
    )?;
    Ok(())
}

/// Drops threads saved before `cutoff_ms`; returns how many.
pub fn purge_older_than(txn: &WriteTransaction, cutoff_ms: u64) -> Result<usize, StoreError> {
    let mut table = txn.open_table(SLACK_THREADS)?;
    let before = table.len()?;
    table.retain(|_, (saved_ms, _)| saved_ms >= cutoff_ms)?;
    Ok((before - table.len()?) as usize)
}

/// Forgets a deleted connection's threads.
pub fn forget_connection(txn: &WriteTransaction, ws: u128, con: u128) -> Result<(), StoreError> {
    txn.open_table(SLACK_THREADS)?.retain_in(
        (ws, con, "", "")..(ws, con.saturating_add(1), "", ""),
        |_, _| false,
    )?;
    Ok(())
}

/// Forgets a deleted workspace's threads.
pub fn forget_workspace(txn: &WriteTransaction, ws: u128) -> Result<(), StoreError> {
    txn.open_table(SLACK_THREADS)?.retain_in(
        (ws, 0, "", "")..(ws.saturating_add(1), 0, "", ""),
        |_, _| false,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnectionId, WorkspaceId};
    use redb::ReadableDatabase;

    fn key(ws: u128, con: u128, alert: &str) -> ThreadKey {
        ThreadKey {
            workspace: WorkspaceId(ws),
            connection: ConnectionId(con),
            channel: "C1".into(),
            alert: alert.into(),
        }
    }

    #[test]
    fn threads_are_kept_until_they_expire_or_their_owner_goes() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let write = |op: &dyn Fn(&WriteTransaction)| {
            let txn = db.begin_write().unwrap();
            op(&txn);
            txn.commit().unwrap();
        };
        let read = |key: &ThreadKey| get(&db.begin_read().unwrap(), key).unwrap();
        write(&|txn| {
            put(txn, &key(1, 1, "a"), "100.1", 1_000).unwrap();
            put(txn, &key(1, 1, "b"), "100.2", 5_000).unwrap();
            put(txn, &key(1, 2, "a"), "100.3", 5_000).unwrap();
            put(txn, &key(2, 1, "a"), "100.4", 5_000).unwrap();
        });
        assert_eq!(read(&key(1, 1, "a")).as_deref(), Some("100.1"));
        assert_eq!(read(&key(1, 1, "c")), None);

        write(&|txn| assert_eq!(purge_older_than(txn, 2_000).unwrap(), 1));
        assert_eq!(read(&key(1, 1, "a")), None);
        assert_eq!(read(&key(1, 1, "b")).as_deref(), Some("100.2"));

        write(&|txn| forget_connection(txn, 1, 1).unwrap());
        assert_eq!(read(&key(1, 1, "b")), None);
        assert_eq!(read(&key(1, 2, "a")).as_deref(), Some("100.3"));

        write(&|txn| forget_workspace(txn, 1).unwrap());
        assert_eq!(read(&key(1, 2, "a")), None);
        assert_eq!(read(&key(2, 1, "a")).as_deref(), Some("100.4"));
    }
}
