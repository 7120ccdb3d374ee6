//! The database handle, and how it is replaced after a storage failure.
//!
//! What redb 4.6 does when a write fails (pinned by the tests below): the
//! failed commit returns `Io` and latches the handle, so every later write
//! returns `PreviousIo` even once the disk has room again, and reads that
//! miss the cache fail the same way. Only closing the handle and opening the
//! file again clears it; a second handle on the same file is refused
//! (`DatabaseAlreadyOpen`) until the first one is closed; dropping the last
//! `Database` closes the file at once and read transactions still alive then
//! answer `DatabaseClosed`. Opening again runs redb's crash recovery (the
//! file was not closed cleanly), which writes, so it fails while the disk is
//! still full, and then there is no handle at all until a later open works.
//!
//! So the handle lives in a [`DbSlot`]: readers clone the `Arc` out of it
//! for the moment they begin a transaction, and the write coordinator's probe
//! (see `writer.rs`) takes it out, waits until it holds the last clone,
//! closes it and opens the file again.

use super::tables;
use crate::store::fault::FaultyBackend;
use crate::store::{StoreError, StoreOptions};
use redb::Database;
use redb::backends::FileBackend;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

/// Longest the probe waits for readers to let go of a failed handle; they
/// hold it only while beginning a transaction or during one bounded scan.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

pub(crate) struct DbSlot {
    /// `None` while the file is being opened again, or could not be.
    current: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    options: StoreOptions,
}

impl DbSlot {
    pub(crate) fn open(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let db = open_database(path, &options).map_err(|source| StoreError::Open {
            target: path.display().to_string(),
            message: source.to_string(),
        })?;
        Ok(Self {
            current: RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            options,
        })
    }

    /// The open handle; hold it only as long as needed (a reopen waits for
    /// every clone to be dropped).
    pub(crate) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::Unavailable("the database is being reopened".into()))
    }

    /// Closes the current handle (failed, so its close reports nothing
    /// useful) and opens the file again; `prepare` runs on the new handle
    /// before anyone else gets it. Runs on the writer thread only.
    pub(crate) fn reopen(
        &self,
        prepare: impl FnOnce(&Database) -> Result<(), StoreError>,
    ) -> Result<Arc<Database>, StoreError> {
        let taken = self
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(db) = taken {
            match last_clone(db) {
                Ok(db) => {
                    if let Err(error) = db.close() {
                        tracing::debug!(%error, "closing the failed database handle");
                    }
                }
                Err(db) => {
                    // Someone still reads through it: keep serving reads
                    // from it and try again at the next probe.
                    *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(db);
                    return Err(StoreError::Unavailable(
                        "the failed database handle is still in use".into(),
                    ));
                }
            }
        }
        let db = open_database(&self.path, &self.options)?;
        prepare(&db)?;
        let db = Arc::new(db);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(db.clone());
        Ok(db)
    }
}

impl DbSlot {
    /// Opens the file again and commits one small write: the proof that the
    /// disk takes writes again.
    pub(crate) fn reopen_and_probe(
        &self,
        prepare: impl FnOnce(&Database) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let db = self.reopen(prepare)?;
        let txn = db.begin_write()?;
        txn.open_table(tables::STORAGE_PROBE)?
            .insert(0, crate::model::now_ms())?;
        txn.commit()?;
        Ok(())
    }
}

/// Waits (bounded) until `db` is the only clone, and unwraps it.
fn last_clone(mut db: Arc<Database>) -> Result<Database, Arc<Database>> {
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        match Arc::try_unwrap(db) {
            Ok(db) => return Ok(db),
            Err(shared) if Instant::now() >= deadline => return Err(shared),
            Err(shared) => {
                db = shared;
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Opens the database, creating the file readable by its owner only: it
/// holds event payloads and key hashes (secrets in it are sealed).
fn open_database(path: &Path, options: &StoreOptions) -> Result<Database, redb::DatabaseError> {
    let mut open = std::fs::OpenOptions::new();
    open.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let file = FileBackend::new(open.open(path)?)?;
    let mut builder = Database::builder();
    builder.set_cache_size(options.cache_bytes);
    match &options.faults {
        Some(switch) => builder.create_with_backend(FaultyBackend::new(file, switch.clone())),
        None => builder.create_with_backend(file),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FaultSwitch;
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(db: &Database, key: u64) -> Result<(), redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(T)?.insert(key, key)?;
        txn.commit()?;
        Ok(())
    }

    fn get(db: &Database, key: u64) -> Result<Option<u64>, redb::Error> {
        Ok(db.begin_read()?.open_table(T)?.get(key)?.map(|v| v.value()))
    }

    fn options(switch: &FaultSwitch) -> StoreOptions {
        StoreOptions {
            faults: Some(switch.clone()),
            ..StoreOptions::default()
        }
    }

    /// The redb behaviour the design above rests on.
    #[test]
    fn a_failed_commit_latches_the_handle_until_the_file_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let switch = FaultSwitch::new();
        let db = open_database(&path, &options(&switch)).unwrap();
        put(&db, 1).unwrap();

        switch.fail_writes(true);
        let failed = put(&db, 2).unwrap_err();
        assert!(matches!(failed, redb::Error::Io(ref e) if e.raw_os_error() == Some(28)));
        switch.fail_writes(false);
        assert!(matches!(put(&db, 3), Err(redb::Error::PreviousIo)));

        let reader = db.begin_read().unwrap();
        assert!(matches!(
            open_database(&path, &options(&switch)),
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
        drop(db);
        assert!(matches!(
            reader.open_table(T).map(|table| table.get(1).map(|_| ())),
            Err(redb::TableError::Storage(
                redb::StorageError::DatabaseClosed
            )) | Ok(Err(redb::StorageError::DatabaseClosed))
        ));

        // Opening again recovers the file, which writes: not while full.
        switch.fail_writes(true);
        assert!(open_database(&path, &options(&switch)).is_err());
        switch.fail_writes(false);
        let db = open_database(&path, &options(&switch)).unwrap();
        assert_eq!(get(&db, 1).unwrap(), Some(1));
        assert_eq!(get(&db, 2).unwrap(), None, "the failed commit is not there");
        put(&db, 4).unwrap();
        assert_eq!(get(&db, 4).unwrap(), Some(4));
    }

    #[test]
    fn reopen_replaces_a_failed_handle_and_keeps_what_was_committed() {
        let dir = tempfile::tempdir().unwrap();
        let switch = FaultSwitch::new();
        let slot = DbSlot::open(&dir.path().join("db.redb"), options(&switch)).unwrap();
        put(&slot.get().unwrap(), 1).unwrap();
        switch.fail_writes(true);
        assert!(put(&slot.get().unwrap(), 2).is_err());

        assert!(slot.reopen(|_| Ok(())).is_err(), "still failing");
        assert!(slot.get().is_err(), "no handle until an open works");
        switch.fail_writes(false);
        let db = slot.reopen(|_| Ok(())).unwrap();
        put(&db, 3).unwrap();
        assert_eq!(get(&db, 1).unwrap(), Some(1));
        assert_eq!(get(&db, 2).unwrap(), None);
        assert_eq!(get(&slot.get().unwrap(), 3).unwrap(), Some(3));
    }
}
