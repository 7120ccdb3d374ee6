//! A test and chaos seam: switches that make the database file, its
//! write-ahead log, or both refuse writes the way a full disk does
//! (ENOSPC), or fail one sync of the log (EIO), so the server's failure
//! and recovery can be exercised without a failing disk.
//!
//! Production opens the file through plain `redb::backends::FileBackend`;
//! only a store opened with a [`FaultSwitch`] (see `StoreOptions::faults`)
//! goes through [`FaultyBackend`].

use redb::StorageBackend;
use redb::backends::FileBackend;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Shared switches. The main one (`fail_writes`): while on, every write,
/// sync and resize of the database file and of its write-ahead log fails
/// with "no space left on device"; others fail either file alone, or the
/// log's next sync. It can also hold the log's syncs, or the database
/// file's (a durable commit's), so a test can see what waits for one.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch(Arc<Switches>);

#[derive(Debug, Default)]
struct Switches {
    failing: AtomicBool,
    database_failing: AtomicBool,
    log_failing: AtomicBool,
    log_sync_failures: AtomicUsize,
    log_thread_syncs: AtomicUsize,
    syncs: Mutex<HeldSyncs>,
    database_syncs: Mutex<HeldSyncs>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct HeldSyncs {
    held: bool,
    waiting: usize,
    /// Syncs that reached the hold point so far, held or not.
    reached: usize,
}

impl FaultSwitch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn fail_writes(&self, failing: bool) {
        self.0.failing.store(failing, Ordering::SeqCst);
    }

    pub fn is_failing(&self) -> bool {
        self.0.failing.load(Ordering::SeqCst)
    }

    /// Fails the write-ahead log's writes and syncs only, leaving the
    /// database file sound (a log on another, failing disk).
    pub fn fail_log_writes(&self, failing: bool) {
        self.0.log_failing.store(failing, Ordering::SeqCst);
    }

    /// Fails the database file's writes and syncs only, leaving the log
    /// sound (so a test can keep the storage probe from getting through).
    pub fn fail_database_writes(&self, failing: bool) {
        self.0.database_failing.store(failing, Ordering::SeqCst);
    }

    /// Fails the next sync of a batch of the log alone, after its records
    /// are written (a transient error: what is written after it, a wipe of
    /// that batch included, goes through).
    pub fn fail_next_log_sync(&self) {
        self.0.log_sync_failures.fetch_add(1, Ordering::SeqCst);
    }

    /// While held, the write-ahead log's sync of each batch waits just
    /// before its `fdatasync` (the records written, not yet synced) until
    /// released. A wipe of a batch's records is not held.
    pub fn hold_log_syncs(&self, held: bool) {
        lock(&self.0.syncs).held = held;
        self.0.released.notify_all();
    }

    /// Log syncs waiting on [`Self::hold_log_syncs`] now.
    pub fn log_syncs_waiting(&self) -> usize {
        lock(&self.0.syncs).waiting
    }

    /// The write-ahead log's syncs of a batch so far: one per group.
    pub fn log_syncs(&self) -> usize {
        lock(&self.0.syncs).reached
    }

    /// The log's syncs of a batch made on the log's own thread so far (a
    /// lone small record is synced on the writer's).
    pub fn log_syncs_on_log_thread(&self) -> usize {
        self.0.log_thread_syncs.load(Ordering::SeqCst)
    }

    /// Called by the log's thread as it takes a batch.
    pub(crate) fn count_log_thread_sync(&self) {
        self.0.log_thread_syncs.fetch_add(1, Ordering::SeqCst);
    }

    /// While held, every sync of the database file (a durable commit's)
    /// waits just before its `fdatasync` until released.
    pub fn hold_database_syncs(&self, held: bool) {
        lock(&self.0.database_syncs).held = held;
        self.0.released.notify_all();
    }

    /// Database file syncs waiting on [`Self::hold_database_syncs`] now.
    pub fn database_syncs_waiting(&self) -> usize {
        lock(&self.0.database_syncs).waiting
    }

    /// Called by the log just before it syncs a batch.
    pub(crate) fn before_log_sync(&self) {
        self.wait_while_held(&self.0.syncs);
    }

    fn wait_while_held(&self, which: &Mutex<HeldSyncs>) {
        let mut syncs = lock(which);
        syncs.reached += 1;
        syncs.waiting += 1;
        while syncs.held {
            syncs = self
                .0
                .released
                .wait(syncs)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        syncs.waiting -= 1;
    }

    pub(crate) fn check(&self) -> io::Result<()> {
        if self.is_failing() {
            // ENOSPC, as the kernel reports a full disk.
            Err(io::Error::from_raw_os_error(28))
        } else {
            Ok(())
        }
    }

    /// [`Self::check`] for the write-ahead log.
    pub(crate) fn check_log(&self) -> io::Result<()> {
        if self.0.log_failing.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.check()
    }

    /// [`Self::check_log`] for the sync of a batch, which also takes one
    /// failure asked for by [`Self::fail_next_log_sync`].
    pub(crate) fn check_log_sync(&self) -> io::Result<()> {
        let one_failure =
            self.0
                .log_sync_failures
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                    left.checked_sub(1)
                });
        if one_failure.is_ok() {
            // EIO, as a failed fdatasync reports it.
            return Err(io::Error::from_raw_os_error(5));
        }
        self.check_log()
    }

    /// [`Self::check`] for the database file.
    fn check_database(&self) -> io::Result<()> {
        if self.0.database_failing.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.check()
    }
}

fn lock(syncs: &Mutex<HeldSyncs>) -> MutexGuard<'_, HeldSyncs> {
    syncs
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A [`FileBackend`] whose writes fail while its switch is on; reads and
/// locks pass through untouched.
#[derive(Debug)]
pub(crate) struct FaultyBackend {
    inner: FileBackend,
    switch: FaultSwitch,
}

impl FaultyBackend {
    pub(crate) fn new(inner: FileBackend, switch: FaultSwitch) -> Self {
        Self { inner, switch }
    }
}

impl StorageBackend for FaultyBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.switch.check_database()?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.switch.wait_while_held(&self.switch.0.database_syncs);
        self.switch.check_database()?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.switch.check_database()?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
