//! `switchyard export` from PostgreSQL: every table, as of one snapshot (a
//! read-only repeatable-read transaction), read through a portal a batch
//! at a time and handed on as the dump's rows (`store/dump.rs`), each
//! row's columns turned back into the stored record redb holds, so a dump
//! reads the same whichever store wrote it. Nodes may keep running: the
//! snapshot holds what was committed when it began.

use super::OpenError;
use super::columns::{
    connection_kind_from, connection_status_from, delivery_status_from, get_id, get_ms, id_from,
    key_kind_from,
};
use super::connect;
use super::error::{PgError, PgResult, corrupt};
use super::migrate::latest_version;
use crate::config::PostgresConfig;
use crate::store::codec::Record;
use crate::store::dump::{Counts, Row, Table};
use crate::store::records::{
    ApiKeyRecord, AttemptRecord, ConnectionRecord, DeliveryRecord, EventRecord, IdempotencyRecord,
    RuleNoiseRecord, RuleRecord, WorkspaceRecord,
};
use tokio_postgres::IsolationLevel;

/// Rows fetched per round trip: enough to amortise it, few enough to
/// keep memory small whatever the table's size.
const BATCH_ROWS: i32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PgExportError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(
        "the database's schema is at version {database}, newer than this binary's {binary}: \
         export it with a newer release"
    )]
    DatabaseNewer { database: i32, binary: i32 },
    #[error("cannot read PostgreSQL: {0}")]
    Database(#[from] PgError),
    /// The caller's sink refused a row (the dump file could not be written).
    #[error("{0}")]
    Sink(String),
}

impl From<tokio_postgres::Error> for PgExportError {
    fn from(error: tokio_postgres::Error) -> Self {
        PgExportError::Database(error.into())
    }
}

/// Where the rows go: `start` once with every table's count, then `row`
/// for each row.
pub trait ExportSink {
    fn start(&mut self, counts: &Counts) -> Result<(), String>;
    fn row(&mut self, row: Row) -> Result<(), String>;
}

/// Reads every table of the database `settings` names, in one snapshot,
/// into `sink`; answers where it read (no password).
pub async fn export(
    settings: &PostgresConfig,
    sink: &mut dyn ExportSink,
) -> Result<String, PgExportError> {
    let (pool, target) = connect::pool(settings).map_err(OpenError::from)?;
    let mut client = pool.get().await.map_err(PgError::from)?;
    let txn = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let version: i32 = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await?
        .try_get(0)?;
    if version > latest_version() {
        return Err(PgExportError::DatabaseNewer {
            database: version,
            binary: latest_version(),
        });
    }
    let mut counts = Counts::default();
    for table in Table::ALL {
        let rows: i64 = txn
            .query_one(&format!("SELECT count(*) FROM {}", table.name()), &[])
            .await?
            .try_get(0)?;
        counts.set(table, u64::try_from(rows).unwrap_or(0));
    }
    sink.start(&counts).map_err(PgExportError::Sink)?;
    for table in Table::ALL {
        let statement = txn.prepare(&select(table)).await?;
        let portal = txn.bind(&statement, &[]).await?;
        loop {
            let batch = txn.query_portal(&portal, BATCH_ROWS).await?;
            if batch.is_empty() {
                break;
            }
            for row in &batch {
                sink.row(dump_row(table, row)?)
                    .map_err(PgExportError::Sink)?;
            }
        }
    }
    txn.commit().await?;
    Ok(target)
}

/// Each table in key order, its columns as [`dump_row`] reads them.
fn select(table: Table) -> String {
    let (columns, order) = match table {
        Table::Workspaces => (
            "id, name, created_at_ms, publishable_key_hash, secret_key_hash, meshes_key_hash",
            "id",
        ),
        Table::ApiKeys => ("hash, workspace_id, kind", "hash"),
        Table::WorkspacePurges => ("workspace_id, deleted_at_ms", "workspace_id"),
        Table::Connections => (
            "workspace_id, id, name, kind, status, config, sealed_secrets, created_at_ms, \
             updated_at_ms",
            "workspace_id, id",
        ),
        Table::Rules => (
            "workspace_id, id, name, events, connection_id, target, min_severity, conditions, \
             template, enabled, created_at_ms, updated_at_ms, dedup_seconds, max_per_hour",
            "workspace_id, id",
        ),
        Table::Events => (
            "workspace_id, id, name, resource, resource_id, payload, received_at_ms",
            "workspace_id, id",
        ),
        Table::Deliveries => (
            "workspace_id, id, event_id, rule_id, connection_id, status, attempt_count, \
             round_attempts, next_attempt_at_ms, created_at_ms, updated_at_ms, alert, \
             suppressed_before",
            "workspace_id, id",
        ),
        Table::Attempts => (
            "delivery_id, n, at_ms, duration_ms, status_code, error, response",
            "delivery_id, n",
        ),
        Table::DeliveryQueue => (
            "connection_id, due_ms, delivery_id, workspace_id",
            "connection_id, due_ms, delivery_id",
        ),
        Table::IdempotencyKeys => (
            "workspace_id, key, created_at_ms, status, response",
            "workspace_id, key",
        ),
        Table::OAuthStates => ("nonce, expires_at_ms", "nonce"),
        Table::UsedLaunchTokens => ("digest, expires_at_ms", "digest"),
        Table::AlertNoise => (
            "workspace_id, rule_id, alert, last_sent_ms",
            "workspace_id, rule_id, alert",
        ),
        Table::RuleNoise => (
            "workspace_id, rule_id, window_start_ms, sent_in_window, suppressed_since_sent",
            "workspace_id, rule_id",
        ),
        Table::SlackThreads => (
            "workspace_id, connection_id, channel, alert, saved_at_ms, ts",
            "workspace_id, connection_id, channel, alert",
        ),
    };
    format!("SELECT {columns} FROM {} ORDER BY {order}", table.name())
}

fn hash32(row: &tokio_postgres::Row, column: &str) -> PgResult<[u8; 32]> {
    let bytes: &[u8] = row.try_get(column)?;
    bytes
        .try_into()
        .map_err(|_| corrupt(format!("{column} of {} bytes", bytes.len())))
}

fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    // Serialising a Value into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

fn count(row: &tokio_postgres::Row, column: &str) -> PgResult<u32> {
    Ok(u32::try_from(row.try_get::<_, i32>(column)?).unwrap_or(0))
}

fn opt_count(row: &tokio_postgres::Row, column: &str) -> PgResult<Option<u32>> {
    Ok(row
        .try_get::<_, Option<i32>>(column)?
        .map(|value| u32::try_from(value).unwrap_or(0)))
}

fn opt_ms(row: &tokio_postgres::Row, column: &str) -> PgResult<Option<u64>> {
    Ok(row
        .try_get::<_, Option<i64>>(column)?
        .map(|value| u64::try_from(value).unwrap_or(0)))
}

/// One row of `table` as the dump's row, its record encoded as redb's.
fn dump_row(table: Table, row: &tokio_postgres::Row) -> PgResult<Row> {
    let r = row;
    Ok(match table {
        Table::Workspaces => {
            // Import writes zeros for "no Meshes key yet"; read them back so.
            let meshes = hash32(r, "meshes_key_hash")?;
            let record = WorkspaceRecord {
                name: r.try_get("name")?,
                created_at_ms: get_ms(r, "created_at_ms")?,
                publishable_key_hash: hash32(r, "publishable_key_hash")?,
                secret_key_hash: hash32(r, "secret_key_hash")?,
                meshes_key_hash: (meshes != [0; 32]).then_some(meshes),
            };
            Row::Workspace {
                id: get_id(r, "id")?,
                record: record.encode(),
            }
        }
        Table::ApiKeys => {
            let record = ApiKeyRecord {
                workspace_id: get_id(r, "workspace_id")?,
                kind: key_kind_from(r.try_get("kind")?)?.into(),
            };
            Row::ApiKey {
                hash: r.try_get("hash")?,
                record: record.encode(),
            }
        }
        Table::WorkspacePurges => Row::WorkspacePurge {
            workspace: get_id(r, "workspace_id")?,
            deleted_at_ms: get_ms(r, "deleted_at_ms")?,
        },
        Table::Connections => {
            let record = ConnectionRecord {
                name: r.try_get("name")?,
                kind: connection_kind_from(r.try_get("kind")?)?.into(),
                status: connection_status_from(r.try_get("status")?)?.into(),
                config_json: json_bytes(&r.try_get("config")?),
                sealed_secrets: r.try_get("sealed_secrets")?,
                created_at_ms: get_ms(r, "created_at_ms")?,
                updated_at_ms: get_ms(r, "updated_at_ms")?,
            };
            Row::Connection {
                workspace: get_id(r, "workspace_id")?,
                id: get_id(r, "id")?,
                record: record.encode(),
            }
        }
        Table::Rules => {
            let template: Option<serde_json::Value> = r.try_get("template")?;
            let record = RuleRecord {
                name: r.try_get("name")?,
                events: r.try_get("events")?,
                connection_id: get_id(r, "connection_id")?,
                target_json: json_bytes(&r.try_get("target")?),
                min_severity: r.try_get("min_severity")?,
                conditions_json: json_bytes(&r.try_get("conditions")?),
                template_json: template.as_ref().map(json_bytes),
                enabled: r.try_get("enabled")?,
                created_at_ms: get_ms(r, "created_at_ms")?,
                updated_at_ms: get_ms(r, "updated_at_ms")?,
                dedup_seconds: opt_count(r, "dedup_seconds")?,
                max_per_hour: opt_count(r, "max_per_hour")?,
            };
            Row::Rule {
                workspace: get_id(r, "workspace_id")?,
                id: get_id(r, "id")?,
                record: record.encode(),
            }
        }
        Table::Events => {
            let record = EventRecord {
                name: r.try_get("name")?,
                resource: r.try_get("resource")?,
                resource_id: r.try_get("resource_id")?,
                payload: r.try_get("payload")?,
                received_at_ms: get_ms(r, "received_at_ms")?,
                // A redb import indexes them from the delivery rows.
                deliveries: None,
            };
            Row::Event {
                workspace: get_id(r, "workspace_id")?,
                id: get_id(r, "id")?,
                record: record.encode(),
            }
        }
        Table::Deliveries => {
            let record = DeliveryRecord {
                event_id: get_id(r, "event_id")?,
                rule_id: get_id(r, "rule_id")?,
                connection_id: get_id(r, "connection_id")?,
                status: delivery_status_from(r.try_get("status")?)?.into(),
                attempt_count: count(r, "attempt_count")?,
                round_attempts: count(r, "round_attempts")?,
                next_attempt_at_ms: opt_ms(r, "next_attempt_at_ms")?,
                created_at_ms: get_ms(r, "created_at_ms")?,
                updated_at_ms: get_ms(r, "updated_at_ms")?,
                alert: r.try_get("alert")?,
                suppressed_before: count(r, "suppressed_before")?,
                first_attempt: None,
            };
            Row::Delivery {
                workspace: get_id(r, "workspace_id")?,
                id: get_id(r, "id")?,
                record: record.encode(),
            }
        }
        Table::Attempts => {
            let status_code: Option<i32> = r.try_get("status_code")?;
            let record = AttemptRecord {
                at_ms: get_ms(r, "at_ms")?,
                duration_ms: get_ms(r, "duration_ms")?,
                status_code: status_code.and_then(|code| u16::try_from(code).ok()),
                error: r.try_get("error")?,
                response: r.try_get("response")?,
            };
            Row::Attempt {
                delivery: get_id(r, "delivery_id")?,
                n: count(r, "n")?,
                record: record.encode(),
            }
        }
        Table::DeliveryQueue => Row::Queued {
            connection: get_id(r, "connection_id")?,
            due_ms: get_ms(r, "due_ms")?,
            delivery: get_id(r, "delivery_id")?,
            workspace: get_id(r, "workspace_id")?,
        },
        Table::IdempotencyKeys => {
            let record = IdempotencyRecord {
                created_at_ms: get_ms(r, "created_at_ms")?,
                status: u16::try_from(r.try_get::<_, i32>("status")?).unwrap_or(0),
                response: r.try_get("response")?,
            };
            Row::Idempotency {
                workspace: get_id(r, "workspace_id")?,
                key: r.try_get("key")?,
                record: record.encode(),
            }
        }
        Table::OAuthStates => Row::OAuthState {
            nonce: id_from(r.try_get("nonce")?)?,
            expires_at_ms: get_ms(r, "expires_at_ms")?,
        },
        Table::UsedLaunchTokens => Row::UsedLaunchToken {
            digest: id_from(r.try_get("digest")?)?,
            expires_at_ms: get_ms(r, "expires_at_ms")?,
        },
        Table::AlertNoise => Row::AlertNoise {
            workspace: get_id(r, "workspace_id")?,
            rule: get_id(r, "rule_id")?,
            alert: r.try_get("alert")?,
            last_sent_ms: get_ms(r, "last_sent_ms")?,
        },
        Table::RuleNoise => {
            let record = RuleNoiseRecord {
                window_start_ms: get_ms(r, "window_start_ms")?,
                sent_in_window: count(r, "sent_in_window")?,
                suppressed_since_sent: count(r, "suppressed_since_sent")?,
            };
            Row::RuleNoise {
                workspace: get_id(r, "workspace_id")?,
                rule: get_id(r, "rule_id")?,
                record: record.encode(),
            }
        }
        Table::SlackThreads => Row::SlackThread {
            workspace: get_id(r, "workspace_id")?,
            connection: get_id(r, "connection_id")?,
            channel: r.try_get("channel")?,
            alert: r.try_get("alert")?,
            saved_at_ms: get_ms(r, "saved_at_ms")?,
            ts: r.try_get("ts")?,
        },
    })
}
