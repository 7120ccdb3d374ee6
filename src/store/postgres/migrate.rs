//! Embedded, versioned schema migrations.
//!
//! Each file under `migrations/postgres/` is compiled in and applied once,
//! in order, inside one transaction that first takes a transaction-level
//! advisory lock: two nodes starting at once apply them one after the
//! other, and the second finds nothing left to do. `schema_migrations`
//! records each version applied. A database at a version this binary does
//! not know (a newer release migrated it) is refused rather than used.

use super::error::db_error;
use crate::store::StoreError;

/// A schema step: its version (ascending, never reused), a name for the
/// record, and its SQL.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, oldest first. Append; never edit one that shipped.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("../../../migrations/postgres/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "shared_queue",
        sql: include_str!("../../../migrations/postgres/0002_shared_queue.sql"),
    },
    Migration {
        version: 3,
        name: "workspace_changes",
        sql: include_str!("../../../migrations/postgres/0003_workspace_changes.sql"),
    },
];

/// The schema version this binary writes and reads.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Serialises migrations across nodes ("switchyard" in ASCII).
const MIGRATION_LOCK: i64 = 0x7377_6974_6368_7961;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the database's schema is at version {database}, newer than this binary's \
         {binary}: run a newer release of switchyard (or restore the older database)"
    )]
    DatabaseNewer { database: i32, binary: i32 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The version before, 0 for an empty database.
    pub from: i32,
    /// (version, name) of each migration applied now.
    pub applied: Vec<(i32, &'static str)>,
}

impl MigrationReport {
    /// The version after.
    pub fn to(&self) -> i32 {
        self.applied
            .last()
            .map_or(self.from, |(version, _)| *version)
    }
}

/// Applies the migrations the database lacks, all in one transaction.
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<MigrationReport, MigrateError> {
    let txn = client.transaction().await.map_err(db_error)?;
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    txn.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(db_error)?;
    let from: i32 = txn
        .query_one(
            "SELECT coalesce(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(db_error)?
        .get(0);
    let binary = latest_version();
    if from > binary {
        return Err(MigrateError::DatabaseNewer {
            database: from,
            binary,
        });
    }
    let mut applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        txn.batch_execute(migration.sql).await.map_err(db_error)?;
        txn.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(db_error)?;
        applied.push((migration.version, migration.name));
    }
    txn.commit().await.map_err(db_error)?;
    Ok(MigrationReport { from, applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_without_gaps() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version as usize, index + 1, "{}", migration.name);
        }
    }
}
