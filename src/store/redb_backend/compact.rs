//! Offline compaction. redb re-uses the pages it frees but never gives them
//! back to the file system by itself; `Database::compact` moves the live
//! pages down and truncates the file. It needs the database to itself, so
//! it runs with the server stopped: redb locks the file while it is open,
//! and a running server makes the open fail with `DatabaseAlreadyOpen`.

use crate::store::StoreError;
use std::path::{Path, PathBuf};

/// The file's size before and after compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    pub before_bytes: u64,
    pub after_bytes: u64,
}

impl CompactReport {
    pub fn freed_bytes(&self) -> u64 {
        self.before_bytes.saturating_sub(self.after_bytes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("there is no database at {0}")]
    Missing(PathBuf),
    #[error("the server is running (the database is in use); stop it first")]
    InUse,
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::DatabaseError>,
    },
    #[error("applying the write-ahead log before compacting: {0}")]
    Log(StoreError),
    #[error("compaction failed: {0}")]
    Compaction(#[from] Box<redb::CompactionError>),
    #[error("cannot read the size of {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Compacts the database file at `path` until redb finds nothing more to
/// move. Blocking, and as long as the file is big.
pub fn compact(path: &Path) -> Result<CompactReport, CompactError> {
    let size = |path: &Path| {
        std::fs::metadata(path)
            .map(|metadata| metadata.len())
            .map_err(|source| CompactError::Io {
                path: path.to_path_buf(),
                source,
            })
    };
    if !path.is_file() {
        return Err(CompactError::Missing(path.to_path_buf()));
    }
    let before_bytes = size(path)?;
    let mut db = redb::Database::open(path).map_err(|source| match source {
        redb::DatabaseError::DatabaseAlreadyOpen => CompactError::InUse,
        source => CompactError::Open {
            path: path.to_path_buf(),
            source: Box::new(source),
        },
    })?;
    // What only the write-ahead log holds (after a crash) goes in first.
    super::wal::Wal::replay_existing(&db, path).map_err(|error| CompactError::Log(error.into()))?;
    while db.compact().map_err(Box::new)? {}
    drop(db);
    Ok(CompactReport {
        before_bytes,
        after_bytes: size(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::redb_backend::tables::EVENTS;

    #[test]
    fn compaction_gives_freed_pages_back_and_refuses_an_open_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.redb");
        assert!(matches!(compact(&path), Err(CompactError::Missing(_))));

        let db = redb::Database::create(&path).unwrap();
        let payload = vec![7u8; 4096];
        let txn = db.begin_write().unwrap();
        {
            let mut events = txn.open_table(EVENTS).unwrap();
            for id in 0..2_000u128 {
                events.insert((1, id), payload.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(EVENTS)
            .unwrap()
            .retain(|(_, id), _| id < 10)
            .unwrap();
        txn.commit().unwrap();
        assert!(matches!(compact(&path), Err(CompactError::InUse)));
        drop(db);

        let report = compact(&path).unwrap();
        assert!(
            report.freed_bytes() > 4_000_000,
            "most of 8 MB freed: {report:?}"
        );
        assert_eq!(report.after_bytes, std::fs::metadata(&path).unwrap().len());
        let db = redb::Database::open(&path).unwrap();
        let read = redb::ReadableDatabase::begin_read(&db).unwrap();
        let events = read.open_table(EVENTS).unwrap();
        assert_eq!(redb::ReadableTableMetadata::len(&events).unwrap(), 10);
    }
}
