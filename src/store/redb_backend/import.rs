//! `switchyard import` into redb: a dump's rows (`store/dump.rs`) written
//! into an empty database file in one write transaction.
//!
//! All or nothing: redb commits nothing of a transaction that is dropped,
//! so the rows go in as they are read and the commit comes only once the
//! reader has checked the whole dump and every table's count matches. The
//! derived indexes (`event_deliveries`, `idempotency_by_age`) are rebuilt
//! from the rows. Like export, it needs the server stopped: redb's file
//! lock refuses a second opener.

use super::tables::*;
use crate::store::StoreError;
use crate::store::codec::{CodecError, Record};
use crate::store::dump::{Counts, DumpError, DumpReader, Row, Table};
use crate::store::records::{DeliveryRecord, IdempotencyRecord};
use redb::backends::FileBackend;
use redb::{Database, ReadableTableMetadata, TableHandle, WriteTransaction};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A table open in the import's transaction.
type Open<'txn, K, V> = redb::Table<'txn, K, V>;

#[derive(Debug, thiserror::Error)]
pub enum RedbImportError {
    #[error("the server is running (the database is in use); stop it first")]
    InUse,
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error(
        "the target database is not empty (table {table} has {rows} rows): import only into \
         a new data_dir; nothing was written"
    )]
    NotEmpty { table: String, rows: u64 },
    #[error("{0}; nothing was written")]
    Dump(#[from] DumpError),
    #[error("a record in the dump cannot be read: {0}; nothing was written")]
    Record(#[from] CodecError),
    #[error(
        "after the import {table} holds {found} rows where the dump has {expected}; \
         nothing was written"
    )]
    CountMismatch {
        table: &'static str,
        expected: u64,
        found: u64,
    },
    #[error("cannot write the database: {0}; nothing was written")]
    Store(#[from] StoreError),
    #[error(
        "delivery {0} in the dump holds its first attempt in its own record; dumps carry \
         every attempt as an attempt row; nothing was written"
    )]
    InlineAttempt(u128),
}

macro_rules! via_store_error {
    ($($source:ty),*) => {$(
        impl From<$source> for RedbImportError {
            fn from(error: $source) -> Self {
                RedbImportError::Store(error.into())
            }
        }
    )*};
}
via_store_error!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Imports the rest of `reader`'s dump into the database at `path`
/// (created if missing, mode 0600), which must hold no rows; `progress`
/// hears how many bytes of the dump are read after every row. Returns the
/// rows per table.
pub fn import(
    path: &Path,
    cache_bytes: usize,
    reader: &mut DumpReader<impl Read>,
    progress: &mut dyn FnMut(u64),
) -> Result<Counts, RedbImportError> {
    let db = open(path, cache_bytes)?;
    let txn = db.begin_write()?;
    create_all(&txn)?;
    refuse_rows(&txn)?;
    let mut tables = Tables::open(&txn)?;
    while let Some(row) = reader.next_row()? {
        tables.insert(row)?;
        progress(reader.bytes());
    }
    drop(tables);
    let counts = reader.header().counts.clone();
    check_counts(&txn, &counts)?;
    txn.commit()?;
    Ok(counts)
}

fn open(path: &Path, cache_bytes: usize) -> Result<Database, RedbImportError> {
    let opened = (|| {
        let mut file = std::fs::OpenOptions::new();
        file.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        let backend = FileBackend::new(file.open(path)?)?;
        Database::builder()
            .set_cache_size(cache_bytes)
            .create_with_backend(backend)
    })();
    opened.map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => RedbImportError::InUse,
        source => RedbImportError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    })
}

/// Any row in any table (the probe's scratch row aside) refuses the import.
fn refuse_rows(txn: &WriteTransaction) -> Result<(), RedbImportError> {
    macro_rules! refuse {
        ($($table:expr),+ $(,)?) => {$(
            let rows = txn.open_table($table)?.len()?;
            if rows > 0 {
                return Err(RedbImportError::NotEmpty {
                    table: $table.name().to_string(),
                    rows,
                });
            }
        )+};
    }
    refuse!(
        WORKSPACES,
        API_KEYS,
        PURGES,
        CONNECTIONS,
        RULES,
        EVENTS,
        DELIVERIES,
        EVENT_DELIVERIES,
        ATTEMPTS,
        QUEUE,
        IDEMPOTENCY,
        IDEMPOTENCY_BY_AGE,
        OAUTH_STATES,
        USED_LAUNCH_TOKENS,
        ALERT_NOISE,
        RULE_NOISE,
        SLACK_THREADS,
    );
    Ok(())
}

/// Every table an import writes, open for the whole import: closing a
/// written redb table writes its root back and checksums its pages, once
/// here rather than once per row (see `scope.rs`).
struct Tables<'txn> {
    workspaces: Open<'txn, u128, &'static [u8]>,
    api_keys: Open<'txn, &'static [u8], &'static [u8]>,
    purges: Open<'txn, u128, u64>,
    connections: Open<'txn, (u128, u128), &'static [u8]>,
    rules: Open<'txn, (u128, u128), &'static [u8]>,
    events: Open<'txn, (u128, u128), &'static [u8]>,
    deliveries: Open<'txn, (u128, u128), &'static [u8]>,
    event_deliveries: Open<'txn, (u128, u128, u128), ()>,
    attempts: Open<'txn, (u128, u32), &'static [u8]>,
    queue: Open<'txn, (u128, u64, u128), u128>,
    idempotency: Open<'txn, (u128, &'static str), &'static [u8]>,
    idempotency_by_age: Open<'txn, (u64, u128, &'static str), ()>,
    oauth_states: Open<'txn, u128, u64>,
    used_launch_tokens: Open<'txn, u128, u64>,
    alert_noise: Open<'txn, (u128, u128, &'static str), u64>,
    rule_noise: Open<'txn, (u128, u128), &'static [u8]>,
    slack_threads: Open<'txn, (u128, u128, &'static str, &'static str), (u64, &'static str)>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Self {
            workspaces: txn.open_table(WORKSPACES)?,
            api_keys: txn.open_table(API_KEYS)?,
            purges: txn.open_table(PURGES)?,
            connections: txn.open_table(CONNECTIONS)?,
            rules: txn.open_table(RULES)?,
            events: txn.open_table(EVENTS)?,
            deliveries: txn.open_table(DELIVERIES)?,
            event_deliveries: txn.open_table(EVENT_DELIVERIES)?,
            attempts: txn.open_table(ATTEMPTS)?,
            queue: txn.open_table(QUEUE)?,
            idempotency: txn.open_table(IDEMPOTENCY)?,
            idempotency_by_age: txn.open_table(IDEMPOTENCY_BY_AGE)?,
            oauth_states: txn.open_table(OAUTH_STATES)?,
            used_launch_tokens: txn.open_table(USED_LAUNCH_TOKENS)?,
            alert_noise: txn.open_table(ALERT_NOISE)?,
            rule_noise: txn.open_table(RULE_NOISE)?,
            slack_threads: txn.open_table(SLACK_THREADS)?,
        })
    }

    fn insert(&mut self, row: Row) -> Result<(), RedbImportError> {
        match row {
            Row::Workspace { id, record } => {
                self.workspaces.insert(id, record.as_slice())?;
            }
            Row::ApiKey { hash, record } => {
                self.api_keys.insert(hash.as_slice(), record.as_slice())?;
            }
            Row::WorkspacePurge {
                workspace,
                deleted_at_ms,
            } => {
                self.purges.insert(workspace, deleted_at_ms)?;
            }
            Row::Connection {
                workspace,
                id,
                record,
            } => {
                self.connections
                    .insert((workspace, id), record.as_slice())?;
            }
            Row::Rule {
                workspace,
                id,
                record,
            } => {
                self.rules.insert((workspace, id), record.as_slice())?;
            }
            Row::Event {
                workspace,
                id,
                record,
            } => {
                self.events.insert((workspace, id), record.as_slice())?;
            }
            Row::Delivery {
                workspace,
                id,
                record,
            } => {
                let decoded = DeliveryRecord::decode(&record)?;
                // Its attempt 1 could be an attempt row too, and would then
                // show twice.
                if decoded.first_attempt.is_some() {
                    return Err(RedbImportError::InlineAttempt(id));
                }
                let event = decoded.event_id;
                self.deliveries.insert((workspace, id), record.as_slice())?;
                self.event_deliveries.insert((workspace, event, id), ())?;
            }
            Row::Attempt {
                delivery,
                n,
                record,
            } => {
                self.attempts.insert((delivery, n), record.as_slice())?;
            }
            Row::Queued {
                connection,
                due_ms,
                delivery,
                workspace,
            } => {
                self.queue
                    .insert((connection, due_ms, delivery), workspace)?;
            }
            Row::Idempotency {
                workspace,
                key,
                record,
            } => {
                let created_at_ms = IdempotencyRecord::decode(&record)?.created_at_ms;
                self.idempotency
                    .insert((workspace, key.as_str()), record.as_slice())?;
                self.idempotency_by_age
                    .insert((created_at_ms, workspace, key.as_str()), ())?;
            }
            Row::OAuthState {
                nonce,
                expires_at_ms,
            } => {
                self.oauth_states.insert(nonce, expires_at_ms)?;
            }
            Row::UsedLaunchToken {
                digest,
                expires_at_ms,
            } => {
                self.used_launch_tokens.insert(digest, expires_at_ms)?;
            }
            Row::AlertNoise {
                workspace,
                rule,
                alert,
                last_sent_ms,
            } => {
                self.alert_noise
                    .insert((workspace, rule, alert.as_str()), last_sent_ms)?;
            }
            Row::RuleNoise {
                workspace,
                rule,
                record,
            } => {
                self.rule_noise
                    .insert((workspace, rule), record.as_slice())?;
            }
            Row::SlackThread {
                workspace,
                connection,
                channel,
                alert,
                saved_at_ms,
                ts,
            } => {
                self.slack_threads.insert(
                    (workspace, connection, channel.as_str(), alert.as_str()),
                    (saved_at_ms, ts.as_str()),
                )?;
            }
        }
        Ok(())
    }
}

/// Every table against the dump's header (a duplicate key in the dump
/// would leave fewer rows than it promised).
fn check_counts(txn: &WriteTransaction, counts: &Counts) -> Result<(), RedbImportError> {
    macro_rules! check {
        ($($table:expr => $definition:expr),+ $(,)?) => {$(
            let found = txn.open_table($definition)?.len()?;
            if found != counts.get($table) {
                return Err(RedbImportError::CountMismatch {
                    table: $table.name(),
                    expected: counts.get($table),
                    found,
                });
            }
        )+};
    }
    check!(
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
    Ok(())
}
