//! Online backup: every table, as of one read snapshot, copied into a new
//! redb database in a file the caller provides.
//!
//! redb has no hot-copy, and copying the file while the writer commits
//! could catch it between pages. A read transaction is a consistent
//! snapshot that the writer never blocks, so the copy is taken from one.
//! Sealed connection secrets stay sealed: a backup is only readable with
//! the same master key.

use super::tables::*;
use crate::store::{BackupStats, StoreError};
use redb::backends::FileBackend;
use redb::{
    Database, Durability, Key, ReadTransaction, ReadableTable, TableDefinition, TableHandle, Value,
};
use std::fs::File;

/// Rows copied per transaction of the new database, so a big copy never
/// builds one huge transaction.
const ROWS_PER_COMMIT: usize = 50_000;

/// Copies every table of `snapshot` into a new database in `target`, which
/// must be empty.
pub fn copy(snapshot: &ReadTransaction, target: File) -> Result<BackupStats, StoreError> {
    let copy = Database::builder().create_with_backend(FileBackend::new(target)?)?;
    let mut stats = BackupStats::default();
    let mut copied = Vec::new();
    macro_rules! copy_tables {
        ($($table:expr),+ $(,)?) => {
            $(
                stats.rows += copy_table(snapshot, &copy, $table)?;
                copied.push($table.name().to_string());
            )+
        };
    }
    copy_tables!(
        WORKSPACES,
        API_KEYS,
        EVENTS,
        IDEMPOTENCY,
        IDEMPOTENCY_BY_AGE,
        CONNECTIONS,
        RULES,
        DELIVERIES,
        EVENT_DELIVERIES,
        ATTEMPTS,
        QUEUE,
        OAUTH_STATES,
        USED_LAUNCH_TOKENS,
        PURGES,
        STORAGE_PROBE,
        ALERT_NOISE,
        RULE_NOISE,
        SLACK_THREADS,
    );
    // A table added to the schema but not to the list above would be left
    // out silently; refuse instead.
    // Not the write-ahead log's state: a restored copy gets an id of its
    // own, so the log of the database it was taken from is never applied
    // to it.
    for table in snapshot.list_tables()? {
        if table.name() != WAL_STATE.name() && !copied.iter().any(|name| name == table.name()) {
            return Err(StoreError::Unavailable(format!(
                "backup does not know table `{}`",
                table.name()
            )));
        }
    }
    stats.tables = copied.len();
    Ok(stats)
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    snapshot: &ReadTransaction,
    copy: &Database,
    table: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    let source = snapshot.open_table(table)?;
    let mut rows = source.iter()?.peekable();
    let mut total = 0;
    loop {
        let mut txn = copy.begin_write()?;
        // Only the last commit needs to be durable: it makes every earlier
        // one durable too, and an unfinished backup is worthless anyway.
        let last = {
            let mut target = txn.open_table(table)?;
            let mut in_commit = 0;
            while in_commit < ROWS_PER_COMMIT {
                let Some(row) = rows.next() else { break };
                let (key, value) = row?;
                target.insert(key.value(), value.value())?;
                in_commit += 1;
            }
            total += in_commit as u64;
            rows.peek().is_none()
        };
        if !last {
            txn.set_durability(Durability::None)?;
        }
        txn.commit()?;
        if last {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    fn database_with(dir: &std::path::Path, extra: Option<&str>) -> Database {
        let db = Database::create(dir.join("source.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        txn.open_table(EVENTS)
            .unwrap()
            .insert((1, 2), b"event".as_slice())
            .unwrap();
        if let Some(name) = extra {
            let table: TableDefinition<u64, u64> = TableDefinition::new(name);
            txn.open_table(table).unwrap().insert(1, 1).unwrap();
        }
        txn.commit().unwrap();
        db
    }

    #[test]
    fn every_table_is_copied_and_an_unknown_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = database_with(dir.path(), None);
        let target = dir.path().join("copy.redb");
        let stats = copy(
            &db.begin_read().unwrap(),
            File::create_new(&target).unwrap(),
        )
        .unwrap();
        assert_eq!(
            stats,
            BackupStats {
                tables: 18,
                rows: 1
            }
        );
        let copied = Database::open(&target).unwrap();
        let read = copied.begin_read().unwrap();
        assert_eq!(read.list_tables().unwrap().count(), 18);
        let events = read.open_table(EVENTS).unwrap();
        assert_eq!(events.get((1, 2)).unwrap().unwrap().value(), b"event");

        let dir = tempfile::tempdir().unwrap();
        let db = database_with(dir.path(), Some("added_later"));
        let refused = copy(
            &db.begin_read().unwrap(),
            File::create_new(dir.path().join("copy.redb")).unwrap(),
        );
        assert!(
            matches!(&refused, Err(StoreError::Unavailable(message)) if message.contains("added_later")),
            "{refused:?}"
        );
    }
}
