//! `switchyard import` into PostgreSQL: a dump's rows (`store/dump.rs`)
//! written into an empty database in one transaction.
//!
//! All or nothing: the transaction locks every table it fills, checks they
//! are empty, streams each table's rows in with binary `COPY` (no per-row
//! round trip, nothing held in memory but the row at hand), counts every
//! table against the dump's header and only then commits. Any failure (a
//! damaged dump found mid-way, a row PostgreSQL refuses, a count that
//! differs, the connection lost) rolls the whole import back, so there is
//! never a half-imported database to clean up.

use super::columns::{connection_status, count, id, key_kind, ms};
use super::connect;
use super::error::PgError;
use super::{OpenError, migrate_with};
use crate::config::PostgresConfig;
use crate::model::{ConnectionKind, ConnectionStatus, DeliveryStatus, KeyKind};
use crate::store::codec::{CodecError, Record};
use crate::store::dump::{Counts, DumpError, Row, Table};
use crate::store::records::{
    ApiKeyRecord, AttemptRecord, ConnectionRecord, DeliveryRecord, EventRecord, IdempotencyRecord,
    RuleNoiseRecord, RuleRecord, WorkspaceRecord,
};
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(
        "the target database is not empty (table {table} has {rows} rows): import only into \
         a new database; nothing was written"
    )]
    NotEmpty { table: &'static str, rows: i64 },
    #[error("{0}; nothing was written")]
    Dump(#[from] DumpError),
    #[error("a record in the dump cannot be read: {0}; nothing was written")]
    Record(#[from] CodecError),
    #[error("a {what} in the dump is not valid JSON: {error}; nothing was written")]
    Json {
        what: &'static str,
        error: serde_json::Error,
    },
    #[error(
        "after the import {table} holds {found} rows where the dump has {expected}; \
         nothing was written"
    )]
    CountMismatch {
        table: &'static str,
        expected: u64,
        found: i64,
    },
    #[error("the dump's reader stopped before the end; nothing was written")]
    ReaderStopped,
    #[error(
        "delivery {0} in the dump holds its first attempt in its own record; dumps carry \
         every attempt as an attempt row; nothing was written"
    )]
    InlineAttempt(u128),
    #[error("PostgreSQL refused the import: {0}; nothing was written")]
    Database(#[from] PgError),
}

impl From<tokio_postgres::Error> for ImportError {
    fn from(error: tokio_postgres::Error) -> Self {
        ImportError::Database(error.into())
    }
}

/// Applies the migrations, then imports `rows` in one transaction: the
/// reader's rows, then `None` once it has checked the whole dump (a
/// channel that closes before that is an error, never a commit). `counts`
/// is what the dump's header promises. Answers where it wrote (no
/// password).
pub async fn import(
    settings: &PostgresConfig,
    counts: &Counts,
    mut rows: mpsc::Receiver<Result<Option<Row>, DumpError>>,
) -> Result<String, ImportError> {
    let (pool, target) = connect::pool(settings).map_err(OpenError::from)?;
    migrate_with(&pool, &target).await?;
    let mut client = pool.get().await.map_err(PgError::from)?;
    let txn = client.transaction().await?;
    // Nobody else writes these tables until the import commits or rolls
    // back (a server started too early waits rather than interleaving).
    let tables: Vec<&str> = Table::ALL.iter().map(|table| table.name()).collect();
    txn.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        tables.join(", ")
    ))
    .await?;
    for table in Table::ALL {
        let rows = row_count(&txn, table).await?;
        if rows > 0 {
            return Err(ImportError::NotEmpty {
                table: table.name(),
                rows,
            });
        }
    }
    let mut copy: Option<(Table, Pin<Box<BinaryCopyInWriter>>)> = None;
    loop {
        let Some(row) = rows.recv().await.ok_or(ImportError::ReaderStopped)?? else {
            break;
        };
        let table = row.table();
        let writer = match &mut copy {
            Some((current, writer)) if *current == table => writer,
            _ => {
                if let Some((_, mut writer)) = copy.take() {
                    writer.as_mut().finish().await?;
                }
                let sink = txn
                    .copy_in(&format!(
                        "COPY {} ({}) FROM STDIN (FORMAT binary)",
                        table.name(),
                        columns(table).join(", ")
                    ))
                    .await?;
                let writer = Box::pin(BinaryCopyInWriter::new(sink, &types(table)));
                &mut copy.insert((table, writer)).1
            }
        };
        write_row(writer.as_mut(), row).await?;
    }
    if let Some((_, mut writer)) = copy.take() {
        writer.as_mut().finish().await?;
    }
    for table in Table::ALL {
        let found = row_count(&txn, table).await?;
        let expected = counts.get(table);
        if u64::try_from(found).ok() != Some(expected) {
            return Err(ImportError::CountMismatch {
                table: table.name(),
                expected,
                found,
            });
        }
    }
    txn.commit().await?;
    Ok(target)
}

async fn row_count(txn: &Transaction<'_>, table: Table) -> Result<i64, ImportError> {
    let row = txn
        .query_one(&format!("SELECT count(*) FROM {}", table.name()), &[])
        .await?;
    Ok(row.try_get(0)?)
}

/// The columns a table's rows fill, in the order [`write_row`] gives them;
/// any other column (the queue's lease) keeps its default.
fn columns(table: Table) -> &'static [&'static str] {
    match table {
        Table::Workspaces => &[
            "id",
            "name",
            "created_at_ms",
            "publishable_key_hash",
            "secret_key_hash",
            "meshes_key_hash",
        ],
        Table::ApiKeys => &["hash", "workspace_id", "kind"],
        Table::WorkspacePurges => &["workspace_id", "deleted_at_ms"],
        Table::Connections => &[
            "workspace_id",
            "id",
            "name",
            "kind",
            "status",
            "config",
            "sealed_secrets",
            "created_at_ms",
            "updated_at_ms",
        ],
        Table::Rules => &[
            "workspace_id",
            "id",
            "name",
            "events",
            "connection_id",
            "target",
            "min_severity",
            "conditions",
            "template",
            "enabled",
            "created_at_ms",
            "updated_at_ms",
            "dedup_seconds",
            "max_per_hour",
        ],
        Table::Events => &[
            "workspace_id",
            "id",
            "name",
            "resource",
            "resource_id",
            "payload",
            "received_at_ms",
        ],
        Table::Deliveries => &[
            "workspace_id",
            "id",
            "event_id",
            "rule_id",
            "connection_id",
            "status",
            "attempt_count",
            "round_attempts",
            "next_attempt_at_ms",
            "created_at_ms",
            "updated_at_ms",
            "alert",
            "suppressed_before",
        ],
        Table::Attempts => &[
            "delivery_id",
            "n",
            "at_ms",
            "duration_ms",
            "status_code",
            "error",
            "response",
        ],
        Table::DeliveryQueue => &["connection_id", "due_ms", "delivery_id", "workspace_id"],
        Table::IdempotencyKeys => &["workspace_id", "key", "created_at_ms", "status", "response"],
        Table::OAuthStates => &["nonce", "expires_at_ms"],
        Table::UsedLaunchTokens => &["digest", "expires_at_ms"],
        Table::AlertNoise => &["workspace_id", "rule_id", "alert", "last_sent_ms"],
        Table::RuleNoise => &[
            "workspace_id",
            "rule_id",
            "window_start_ms",
            "sent_in_window",
            "suppressed_since_sent",
        ],
        Table::SlackThreads => &[
            "workspace_id",
            "connection_id",
            "channel",
            "alert",
            "saved_at_ms",
            "ts",
        ],
    }
}

fn types(table: Table) -> Vec<Type> {
    use Type as T;
    match table {
        Table::Workspaces => vec![T::BYTEA, T::TEXT, T::INT8, T::BYTEA, T::BYTEA, T::BYTEA],
        Table::ApiKeys => vec![T::BYTEA, T::BYTEA, T::TEXT],
        Table::WorkspacePurges => vec![T::BYTEA, T::INT8],
        Table::Connections => vec![
            T::BYTEA,
            T::BYTEA,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::JSONB,
            T::BYTEA,
            T::INT8,
            T::INT8,
        ],
        Table::Rules => vec![
            T::BYTEA,
            T::BYTEA,
            T::TEXT,
            T::TEXT_ARRAY,
            T::BYTEA,
            T::JSONB,
            T::TEXT,
            T::JSONB,
            T::JSONB,
            T::BOOL,
            T::INT8,
            T::INT8,
            T::INT4,
            T::INT4,
        ],
        Table::Events => vec![
            T::BYTEA,
            T::BYTEA,
            T::TEXT,
            T::TEXT,
            T::TEXT,
            T::BYTEA,
            T::INT8,
        ],
        Table::Deliveries => vec![
            T::BYTEA,
            T::BYTEA,
            T::BYTEA,
            T::BYTEA,
            T::BYTEA,
            T::TEXT,
            T::INT4,
            T::INT4,
            T::INT8,
            T::INT8,
            T::INT8,
            T::TEXT,
            T::INT4,
        ],
        Table::Attempts => vec![
            T::BYTEA,
            T::INT4,
            T::INT8,
            T::INT8,
            T::INT4,
            T::TEXT,
            T::TEXT,
        ],
        Table::DeliveryQueue => vec![T::BYTEA, T::INT8, T::BYTEA, T::BYTEA],
        Table::IdempotencyKeys => vec![T::BYTEA, T::TEXT, T::INT8, T::INT4, T::BYTEA],
        Table::OAuthStates | Table::UsedLaunchTokens => vec![T::BYTEA, T::INT8],
        Table::AlertNoise => vec![T::BYTEA, T::BYTEA, T::TEXT, T::INT8],
        Table::RuleNoise => vec![T::BYTEA, T::BYTEA, T::INT8, T::INT4, T::INT4],
        Table::SlackThreads => vec![T::BYTEA, T::BYTEA, T::TEXT, T::TEXT, T::INT8, T::TEXT],
    }
}

fn json(bytes: &[u8], what: &'static str) -> Result<serde_json::Value, ImportError> {
    serde_json::from_slice(bytes).map_err(|error| ImportError::Json { what, error })
}

/// One row as the columns of [`columns`], through the table's `COPY`.
async fn write_row(writer: Pin<&mut BinaryCopyInWriter>, row: Row) -> Result<(), ImportError> {
    match row {
        Row::Workspace { id: ws, record } => {
            let record = WorkspaceRecord::decode(&record)?;
            // A workspace whose keys were last made before Meshes keys
            // existed has none; no key hashes to zeros, and the column
            // is only read to replace it at the next rotation.
            let meshes = record.meshes_key_hash.unwrap_or([0; 32]);
            writer
                .write(&[
                    &id(ws),
                    &record.name,
                    &ms(record.created_at_ms),
                    &record.publishable_key_hash.as_slice(),
                    &record.secret_key_hash.as_slice(),
                    &meshes.as_slice(),
                ])
                .await?;
        }
        Row::ApiKey { hash, record } => {
            let record = ApiKeyRecord::decode(&record)?;
            let kind = key_kind(KeyKind::from(record.kind));
            writer
                .write(&[&hash, &id(record.workspace_id), &kind])
                .await?;
        }
        Row::WorkspacePurge {
            workspace,
            deleted_at_ms,
        } => {
            writer.write(&[&id(workspace), &ms(deleted_at_ms)]).await?;
        }
        Row::Connection {
            workspace,
            id: connection,
            record,
        } => {
            let record = ConnectionRecord::decode(&record)?;
            let kind = ConnectionKind::from(record.kind).as_str();
            let status = connection_status(ConnectionStatus::from(record.status));
            let config = json(&record.config_json, "connection config")?;
            writer
                .write(&[
                    &id(workspace),
                    &id(connection),
                    &record.name,
                    &kind,
                    &status,
                    &config,
                    &record.sealed_secrets,
                    &ms(record.created_at_ms),
                    &ms(record.updated_at_ms),
                ])
                .await?;
        }
        Row::Rule {
            workspace,
            id: rule,
            record,
        } => {
            let record = RuleRecord::decode(&record)?;
            let target = json(&record.target_json, "rule target")?;
            let conditions = json(&record.conditions_json, "rule conditions")?;
            let template = record
                .template_json
                .as_deref()
                .map(|bytes| json(bytes, "rule template"))
                .transpose()?;
            let dedup_seconds = record.dedup_seconds.map(count);
            let max_per_hour = record.max_per_hour.map(count);
            writer
                .write(&[
                    &id(workspace),
                    &id(rule),
                    &record.name,
                    &record.events,
                    &id(record.connection_id),
                    &target,
                    &record.min_severity,
                    &conditions,
                    &template,
                    &record.enabled,
                    &ms(record.created_at_ms),
                    &ms(record.updated_at_ms),
                    &dedup_seconds,
                    &max_per_hour,
                ])
                .await?;
        }
        Row::Event {
            workspace,
            id: event,
            record,
        } => {
            let record = EventRecord::decode(&record)?;
            writer
                .write(&[
                    &id(workspace),
                    &id(event),
                    &record.name,
                    &record.resource,
                    &record.resource_id,
                    &record.payload,
                    &ms(record.received_at_ms),
                ])
                .await?;
        }
        Row::Delivery {
            workspace,
            id: delivery,
            record,
        } => {
            let record = DeliveryRecord::decode(&record)?;
            // Dumps carry every attempt as an attempt row; a delivery
            // holding one would lose it here.
            if record.first_attempt.is_some() {
                return Err(ImportError::InlineAttempt(delivery));
            }
            let status = DeliveryStatus::from(record.status).as_str();
            writer
                .write(&[
                    &id(workspace),
                    &id(delivery),
                    &id(record.event_id),
                    &id(record.rule_id),
                    &id(record.connection_id),
                    &status,
                    &count(record.attempt_count),
                    &count(record.round_attempts),
                    &record.next_attempt_at_ms.map(ms),
                    &ms(record.created_at_ms),
                    &ms(record.updated_at_ms),
                    &record.alert,
                    &count(record.suppressed_before),
                ])
                .await?;
        }
        Row::Attempt {
            delivery,
            n,
            record,
        } => {
            let record = AttemptRecord::decode(&record)?;
            writer
                .write(&[
                    &id(delivery),
                    &count(n),
                    &ms(record.at_ms),
                    &ms(record.duration_ms),
                    &record.status_code.map(i32::from),
                    &record.error,
                    &record.response,
                ])
                .await?;
        }
        Row::Queued {
            connection,
            due_ms,
            delivery,
            workspace,
        } => {
            writer
                .write(&[&id(connection), &ms(due_ms), &id(delivery), &id(workspace)])
                .await?;
        }
        Row::Idempotency {
            workspace,
            key,
            record,
        } => {
            let record = IdempotencyRecord::decode(&record)?;
            writer
                .write(&[
                    &id(workspace),
                    &key,
                    &ms(record.created_at_ms),
                    &i32::from(record.status),
                    &record.response,
                ])
                .await?;
        }
        Row::OAuthState {
            nonce: value,
            expires_at_ms,
        }
        | Row::UsedLaunchToken {
            digest: value,
            expires_at_ms,
        } => {
            writer.write(&[&id(value), &ms(expires_at_ms)]).await?;
        }
        Row::AlertNoise {
            workspace,
            rule,
            alert,
            last_sent_ms,
        } => {
            writer
                .write(&[&id(workspace), &id(rule), &alert, &ms(last_sent_ms)])
                .await?;
        }
        Row::RuleNoise {
            workspace,
            rule,
            record,
        } => {
            let record = RuleNoiseRecord::decode(&record)?;
            writer
                .write(&[
                    &id(workspace),
                    &id(rule),
                    &ms(record.window_start_ms),
                    &count(record.sent_in_window),
                    &count(record.suppressed_since_sent),
                ])
                .await?;
        }
        Row::SlackThread {
            workspace,
            connection,
            channel,
            alert,
            saved_at_ms,
            ts,
        } => {
            writer
                .write(&[
                    &id(workspace),
                    &id(connection),
                    &channel,
                    &alert,
                    &ms(saved_at_ms),
                    &ts,
                ])
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::TestDb;
    use super::*;

    fn workspace_row(n: u128) -> Row {
        let record = WorkspaceRecord {
            name: format!("ws {n}"),
            created_at_ms: 1_700_000_000_000,
            publishable_key_hash: [n as u8; 32],
            secret_key_hash: [n as u8 + 1; 32],
            meshes_key_hash: None,
        };
        Row::Workspace {
            id: n,
            record: record.encode(),
        }
    }

    async fn workspaces_in(db: &TestDb) -> i64 {
        let url = db.settings.url.as_ref().unwrap().expose().to_string();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one("SELECT count(*) FROM workspaces", &[])
            .await
            .unwrap();
        row.get(0)
    }

    /// Feeds `messages` to an import promising `promised` workspaces.
    async fn run(
        db: &TestDb,
        promised: u64,
        messages: Vec<Result<Option<Row>, DumpError>>,
    ) -> Result<String, ImportError> {
        let mut counts = Counts::default();
        counts.set(Table::Workspaces, promised);
        let (sender, receiver) = mpsc::channel(16);
        for message in messages {
            sender.send(message).await.unwrap();
        }
        drop(sender);
        import(&db.settings, &counts, receiver).await
    }

    #[tokio::test]
    async fn only_a_dump_read_to_its_verified_end_is_committed() {
        let db = TestDb::create().await;
        let rows = || vec![Ok(Some(workspace_row(1))), Ok(Some(workspace_row(2)))];

        // Damage found after rows went in: rolled back.
        let mut damaged = rows();
        damaged.push(Err(DumpError::DigestMismatch));
        let refused = run(&db, 2, damaged).await;
        assert!(matches!(refused, Err(ImportError::Dump(_))), "{refused:?}");
        assert_eq!(workspaces_in(&db).await, 0);

        // The reader went away without reaching the end: rolled back.
        let refused = run(&db, 2, rows()).await;
        assert!(
            matches!(refused, Err(ImportError::ReaderStopped)),
            "{refused:?}"
        );
        assert_eq!(workspaces_in(&db).await, 0);

        // Fewer rows than promised: the count check rolls it back.
        let mut short = rows();
        short.push(Ok(None));
        let refused = run(&db, 3, short).await;
        assert!(
            matches!(
                refused,
                Err(ImportError::CountMismatch {
                    table: "workspaces",
                    expected: 3,
                    found: 2
                })
            ),
            "{refused:?}"
        );
        assert_eq!(workspaces_in(&db).await, 0);

        let mut whole = rows();
        whole.push(Ok(None));
        run(&db, 2, whole).await.unwrap();
        assert_eq!(workspaces_in(&db).await, 2);

        // Now it is not empty: refused, unchanged.
        let mut more = vec![Ok(Some(workspace_row(3)))];
        more.push(Ok(None));
        let refused = run(&db, 1, more).await;
        assert!(
            matches!(
                refused,
                Err(ImportError::NotEmpty {
                    table: "workspaces",
                    rows: 2
                })
            ),
            "{refused:?}"
        );
        assert_eq!(workspaces_in(&db).await, 2);
        db.drop_database().await;
    }
}
