//! `switchyard export` from redb: every table, as of one read snapshot,
//! streamed into a dump (`store/dump.rs`) one row at a time.
//!
//! It runs with the server stopped, like compaction: redb locks its file,
//! so a running server makes the open fail and the export refuse. Records
//! travel as the bytes redb holds (sealed secrets stay sealed); each is
//! decoded on the way past, so a damaged source is found now rather than
//! by the import.

use super::tables::*;
use crate::store::StoreError;
use crate::store::codec::Record;
use crate::store::dump::{Counts, DumpError, DumpWriter, Header, Row, Table};
use crate::store::records::{
    ApiKeyRecord, AttemptRecord, ConnectionRecord, DeliveryRecord, EventRecord, IdempotencyRecord,
    RuleNoiseRecord, RuleRecord, WorkspaceRecord,
};
use redb::{ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("there is no database at {0}")]
    Missing(PathBuf),
    #[error("the server is running (the database is in use); stop it first")]
    InUse,
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "the database still has its queue in the old layout; run `switchyard migrate` \
         once with this binary, then export"
    )]
    LegacyQueue,
    #[error("export does not know table `{0}`; this binary is older than the database")]
    UnknownTable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// The first connection's secrets do not open with the master key
    /// given, so the dump would name the wrong key.
    #[error(
        "the master key given does not open the secrets of connection {0}: use this \
         instance's key (SWITCHYARD_MASTER_KEY or data_dir/master_key)"
    )]
    WrongMasterKey(crate::model::ConnectionId),
}

/// What the caller adds to the header, and how it checks the master key.
pub struct ExportInfo<'a> {
    pub switchyard_version: String,
    pub created_at_ms: u64,
    pub master_key_fingerprint: String,
    /// Whether the master key opens the sealed secrets of a connection;
    /// asked of the first one, and `false` stops the export.
    pub opens_secrets: &'a dyn Fn(crate::model::ConnectionId, &[u8]) -> bool,
    /// Told the number of rows to come, once counted.
    pub on_total: &'a dyn Fn(u64),
    /// redb's page cache in bytes (`storage.cache_mb`): redb's own default
    /// (1 GiB) would let a big export grow that large.
    pub cache_bytes: usize,
}

/// Every table whose rows a dump carries, with the tables it may skip:
/// derived indexes (rebuilt from the rows) and scratch.
const DERIVED_OR_SCRATCH: [&str; 4] = [
    "event_deliveries",
    "idempotency_by_age",
    "storage_probe",
    "wal_state",
];

/// Writes the dump of the database at `path` into `out`; `progress` hears
/// of every row. Returns the rows per table.
pub fn export(
    path: &Path,
    info: &ExportInfo<'_>,
    out: impl Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts, ExportError> {
    if !path.is_file() {
        return Err(ExportError::Missing(path.to_path_buf()));
    }
    let db = redb::Database::builder()
        .set_cache_size(info.cache_bytes)
        .open(path)
        .map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => ExportError::InUse,
            source => ExportError::Open {
                path: path.to_path_buf(),
                source: Box::new(source),
            },
        })?;
    // What only the write-ahead log holds (after a crash) goes in first.
    super::wal::Wal::replay_existing(&db, path).map_err(StoreError::from)?;
    let snapshot = db.begin_read().map_err(StoreError::from)?;
    check_tables(&snapshot)?;
    let counts = count_rows(&snapshot)?;
    (info.on_total)(counts.total());
    let header = Header {
        source: "redb".into(),
        switchyard_version: info.switchyard_version.clone(),
        created_at_ms: info.created_at_ms,
        master_key_fingerprint: info.master_key_fingerprint.clone(),
        counts: counts.clone(),
    };
    let mut dump = DumpWriter::start(out, &header)?;
    let mut emit = |row: Row| -> Result<(), ExportError> {
        dump.row(row)?;
        progress(1);
        Ok(())
    };
    write_rows(&snapshot, info, &mut emit)?;
    dump.finish()?;
    Ok(counts)
}

/// Refuses a table this binary does not know (it would be left out
/// silently) and the queue's old layout (`migrate` moves it).
fn check_tables(snapshot: &ReadTransaction) -> Result<(), ExportError> {
    let dumped: Vec<&str> = Table::ALL.iter().map(|table| redb_name(*table)).collect();
    for table in snapshot.list_tables().map_err(StoreError::from)? {
        let name = table.name();
        if name == LEGACY_QUEUE.name() {
            let legacy = snapshot
                .open_table(LEGACY_QUEUE)
                .map_err(StoreError::from)?;
            if !legacy.is_empty().map_err(StoreError::from)? {
                return Err(ExportError::LegacyQueue);
            }
        } else if !dumped.contains(&name) && !DERIVED_OR_SCRATCH.contains(&name) {
            return Err(ExportError::UnknownTable(name.to_string()));
        }
    }
    Ok(())
}

/// redb's name of each dumped table (PostgreSQL's differ for two).
fn redb_name(table: Table) -> &'static str {
    match table {
        Table::IdempotencyKeys => IDEMPOTENCY.name(),
        Table::DeliveryQueue => QUEUE.name(),
        table => table.name(),
    }
}

fn count_rows(snapshot: &ReadTransaction) -> Result<Counts, StoreError> {
    let mut counts = Counts::default();
    macro_rules! count {
        ($($table:expr => $definition:expr),+ $(,)?) => {$(
            counts.set($table, len(snapshot, $definition)?);
        )+};
    }
    count!(
        Table::Workspaces => WORKSPACES,
        Table::ApiKeys => API_KEYS,
        Table::WorkspacePurges => PURGES,
        Table::Connections => CONNECTIONS,
        Table::Rules => RULES,
        Table::Events => EVENTS,
        Table::Deliveries => DELIVERIES,
        Table::Attempts => ATTEMPTS,
        Table::DeliveryQueue => QUEUE,
        Table::IdempotencyKeys => IDEMPOTENCY,
        Table::OAuthStates => OAUTH_STATES,
        Table::UsedLaunchTokens => USED_LAUNCH_TOKENS,
        Table::AlertNoise => ALERT_NOISE,
        Table::RuleNoise => RULE_NOISE,
        Table::SlackThreads => SLACK_THREADS,
    );
    // First attempts live in their delivery's row; the dump carries them
    // as attempt rows.
    counts.add(Table::Attempts, count_first_attempts(snapshot)?);
    Ok(counts)
}

/// A table's row count; a table an older database never created has none.
fn len<K: redb::Key + 'static, V: redb::Value + 'static>(
    snapshot: &ReadTransaction,
    definition: redb::TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    match snapshot.open_table(definition) {
        Ok(table) => Ok(table.len()?),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(error) => Err(error.into()),
    }
}

/// Iterates `$definition` if it exists, binding each key and value.
macro_rules! each_row {
    ($snapshot:expr, $definition:expr, |$key:ident, $value:ident| $body:block) => {
        match $snapshot.open_table($definition) {
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(error) => return Err(StoreError::from(error).into()),
            Ok(table) => {
                for entry in table.iter().map_err(StoreError::from)? {
                    let (key, value) = entry.map_err(StoreError::from)?;
                    let ($key, $value) = (key.value(), value.value());
                    $body
                }
            }
        }
    };
}

/// Deliveries that keep their first attempt in their own row.
fn count_first_attempts(snapshot: &ReadTransaction) -> Result<u64, StoreError> {
    let mut count = 0;
    each_row!(snapshot, DELIVERIES, |_key, record| {
        if DeliveryRecord::decode(record)?.first_attempt.is_some() {
            count += 1;
        }
    });
    Ok(count)
}

/// Checks a record decodes and hands back its bytes for the dump.
fn checked<R: Record>(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    R::decode(bytes)?;
    Ok(bytes.to_vec())
}

/// A delivery for the dump: without the first attempt its row may keep
/// (the dump carries it as an attempt row, as PostgreSQL stores it).
fn without_first_attempt(bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut record = DeliveryRecord::decode(bytes)?;
    Ok(match record.first_attempt.take() {
        Some(_) => record.encode(),
        None => bytes.to_vec(),
    })
}

fn write_rows(
    snapshot: &ReadTransaction,
    info: &ExportInfo<'_>,
    emit: &mut dyn FnMut(Row) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    each_row!(snapshot, WORKSPACES, |id, record| {
        let record = checked::<WorkspaceRecord>(record)?;
        emit(Row::Workspace { id, record })?;
    });
    each_row!(snapshot, API_KEYS, |hash, record| {
        let record = checked::<ApiKeyRecord>(record)?;
        let hash = hash.to_vec();
        emit(Row::ApiKey { hash, record })?;
    });
    each_row!(snapshot, PURGES, |workspace, deleted_at_ms| {
        emit(Row::WorkspacePurge {
            workspace,
            deleted_at_ms,
        })?;
    });
    let mut secrets_checked = false;
    each_row!(snapshot, CONNECTIONS, |key, record| {
        let (workspace, id) = key;
        if !secrets_checked {
            let sealed = ConnectionRecord::decode(record)
                .map_err(StoreError::from)?
                .sealed_secrets;
            let connection = crate::model::ConnectionId(id);
            if !(info.opens_secrets)(connection, &sealed) {
                return Err(ExportError::WrongMasterKey(connection));
            }
            secrets_checked = true;
        }
        let record = checked::<ConnectionRecord>(record)?;
        emit(Row::Connection {
            workspace,
            id,
            record,
        })?;
    });
    each_row!(snapshot, RULES, |key, record| {
        let record = checked::<RuleRecord>(record)?;
        let (workspace, id) = key;
        emit(Row::Rule {
            workspace,
            id,
            record,
        })?;
    });
    each_row!(snapshot, EVENTS, |key, record| {
        let record = checked::<EventRecord>(record)?;
        let (workspace, id) = key;
        emit(Row::Event {
            workspace,
            id,
            record,
        })?;
    });
    each_row!(snapshot, DELIVERIES, |key, record| {
        let record = without_first_attempt(record)?;
        let (workspace, id) = key;
        emit(Row::Delivery {
            workspace,
            id,
            record,
        })?;
    });
    // Attempts: each delivery's first (in its row), then the later ones.
    each_row!(snapshot, DELIVERIES, |key, record| {
        if let Some(attempt) = DeliveryRecord::decode(record)
            .map_err(StoreError::from)?
            .first_attempt
        {
            emit(Row::Attempt {
                delivery: key.1,
                n: 1,
                record: attempt.encode(),
            })?;
        }
    });
    each_row!(snapshot, ATTEMPTS, |key, record| {
        let record = checked::<AttemptRecord>(record)?;
        let (delivery, n) = key;
        emit(Row::Attempt {
            delivery,
            n,
            record,
        })?;
    });
    each_row!(snapshot, QUEUE, |key, workspace| {
        let (connection, due_ms, delivery) = key;
        emit(Row::Queued {
            connection,
            due_ms,
            delivery,
            workspace,
        })?;
    });
    each_row!(snapshot, IDEMPOTENCY, |key, record| {
        let record = checked::<IdempotencyRecord>(record)?;
        let (workspace, key) = key;
        emit(Row::Idempotency {
            workspace,
            key: key.to_string(),
            record,
        })?;
    });
    each_row!(snapshot, OAUTH_STATES, |nonce, expires_at_ms| {
        emit(Row::OAuthState {
            nonce,
            expires_at_ms,
        })?;
    });
    each_row!(snapshot, USED_LAUNCH_TOKENS, |digest, expires_at_ms| {
        emit(Row::UsedLaunchToken {
            digest,
            expires_at_ms,
        })?;
    });
    each_row!(snapshot, ALERT_NOISE, |key, last_sent_ms| {
        let (workspace, rule, alert) = key;
        emit(Row::AlertNoise {
            workspace,
            rule,
            alert: alert.to_string(),
            last_sent_ms,
        })?;
    });
    each_row!(snapshot, RULE_NOISE, |key, record| {
        let record = checked::<RuleNoiseRecord>(record)?;
        let (workspace, rule) = key;
        emit(Row::RuleNoise {
            workspace,
            rule,
            record,
        })?;
    });
    each_row!(snapshot, SLACK_THREADS, |key, value| {
        let (workspace, connection, channel, alert) = key;
        let (saved_at_ms, ts) = value;
        emit(Row::SlackThread {
            workspace,
            connection,
            channel: channel.to_string(),
            alert: alert.to_string(),
            saved_at_ms,
            ts: ts.to_string(),
        })?;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dump::DumpReader;
    use redb::{Database, TableDefinition};

    fn info() -> ExportInfo<'static> {
        ExportInfo {
            switchyard_version: "test".into(),
            created_at_ms: 1,
            master_key_fingerprint: "ab".into(),
            opens_secrets: &|_, _| true,
            on_total: &|_| {},
            cache_bytes: 1 << 20,
        }
    }

    fn database(dir: &Path, extra: Option<&str>) -> PathBuf {
        let path = dir.join("source.redb");
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        let event = EventRecord {
            name: "a.b".into(),
            resource: None,
            resource_id: None,
            payload: b"{}".to_vec(),
            received_at_ms: 5,
            deliveries: None,
        };
        txn.open_table(EVENTS)
            .unwrap()
            .insert((1, 2), event.encode().as_slice())
            .unwrap();
        txn.open_table(QUEUE).unwrap().insert((3, 4, 5), 1).unwrap();
        txn.open_table(STORAGE_PROBE).unwrap().insert(0, 9).unwrap();
        if let Some(name) = extra {
            let table: TableDefinition<u64, u64> = TableDefinition::new(name);
            txn.open_table(table).unwrap().insert(1, 1).unwrap();
        }
        txn.commit().unwrap();
        path
    }

    #[test]
    fn every_row_is_dumped_and_an_unknown_table_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), None);
        let mut out = Vec::new();
        let mut rows = 0;
        let counts = export(&path, &info(), &mut out, &mut |n| rows += n).unwrap();
        assert_eq!((counts.total(), rows), (2, 2));
        let mut reader = DumpReader::open(out.as_slice()).unwrap();
        assert_eq!(reader.header().source, "redb");
        let mut read = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            read.push(row);
        }
        assert!(matches!(
            read[0],
            Row::Event {
                workspace: 1,
                id: 2,
                ..
            }
        ));
        assert_eq!(
            read[1],
            Row::Queued {
                connection: 3,
                due_ms: 4,
                delivery: 5,
                workspace: 1
            }
        );

        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), Some("added_later"));
        let refused = export(&path, &info(), Vec::new(), &mut |_| {});
        assert!(
            matches!(&refused, Err(ExportError::UnknownTable(name)) if name == "added_later"),
            "{refused:?}"
        );
    }

    /// A delivery's first attempt, kept in its own row, leaves as an attempt
    /// row (PostgreSQL's shape) before the table's, and counts as one; a
    /// delivery whose attempts are all rows leaves as it is.
    #[test]
    fn a_first_attempt_kept_in_its_delivery_is_dumped_as_an_attempt_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("source.redb");
        let attempt = |n: u64| AttemptRecord {
            at_ms: n,
            duration_ms: 3,
            status_code: Some(503),
            error: None,
            response: Some(format!("try {n}")),
        };
        let delivery = DeliveryRecord {
            event_id: 2,
            rule_id: 3,
            connection_id: 4,
            status: crate::store::records::StoredDeliveryStatus::Retrying,
            attempt_count: 2,
            round_attempts: 2,
            next_attempt_at_ms: Some(9),
            created_at_ms: 1,
            updated_at_ms: 2,
            alert: None,
            suppressed_before: 0,
            first_attempt: Some(attempt(1)),
        };
        let legacy = DeliveryRecord {
            attempt_count: 1,
            first_attempt: None,
            ..delivery.clone()
        };
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            create_all(&txn).unwrap();
            let mut deliveries = txn.open_table(DELIVERIES).unwrap();
            deliveries
                .insert((1, 7), delivery.encode().as_slice())
                .unwrap();
            deliveries
                .insert((1, 8), legacy.encode().as_slice())
                .unwrap();
            let mut attempts = txn.open_table(ATTEMPTS).unwrap();
            for (id, n) in [(7, 2), (8, 1)] {
                attempts
                    .insert((id, n), attempt(u64::from(n)).encode().as_slice())
                    .unwrap();
            }
            drop((deliveries, attempts));
            txn.commit().unwrap();
        }
        let mut out = Vec::new();
        let counts = export(&path, &info(), &mut out, &mut |_| {}).unwrap();
        assert_eq!(counts.get(Table::Attempts), 3);
        let mut reader = DumpReader::open(out.as_slice()).unwrap();
        let mut rows = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            rows.push(row);
        }
        let expected = [
            Row::Delivery {
                workspace: 1,
                id: 7,
                record: DeliveryRecord {
                    first_attempt: None,
                    ..delivery
                }
                .encode(),
            },
            Row::Delivery {
                workspace: 1,
                id: 8,
                record: legacy.encode(),
            },
            Row::Attempt {
                delivery: 7,
                n: 1,
                record: attempt(1).encode(),
            },
            Row::Attempt {
                delivery: 7,
                n: 2,
                record: attempt(2).encode(),
            },
            Row::Attempt {
                delivery: 8,
                n: 1,
                record: attempt(1).encode(),
            },
        ];
        assert_eq!(rows, expected);
    }
}
