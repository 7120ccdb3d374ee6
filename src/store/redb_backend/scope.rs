//! What a write op sees: the batch's write transaction, plus the tables
//! ingest and an attempt's outcome write, kept open from one job to the
//! next.
//!
//! Why: closing a redb table that was written writes its root back into the
//! table tree and checksums its dirty pages. With one open and close per
//! job, a group commit of 20 ingests did that 20 times per table; the
//! profile put it near a tenth of the server's CPU at full ingest load
//! (docs/benchmarks.md). Kept open, it happens once per batch, and with
//! the write-ahead log on once per open transaction: the writer keeps one
//! scope for all the logged batches that transaction takes (`writer.rs`,
//! `KeptScope`). Attempt
//! outcomes share the ingest tables (and add their own): when they went
//! through the bare transaction, each one closed the ingest tables of a
//! batch mixing both, and the next ingest opened them all again.
//!
//! The tables only some jobs write (events, idempotency keys, noise
//! control) open on first use: opening a redb table costs a lookup and a
//! check of its key and value types (most of it formatting tuple type
//! names), and a batch of attempt outcomes, or of events without
//! idempotency keys or noise control, never needs them.
//!
//! In the writer's batches (with the write-ahead log on), new deliveries'
//! queue rows are held back (`deferred.rs`); the bare transaction is handed
//! out only once they are in the table.

use super::deferred::{DeferredRows, QueueRow};
use super::tables::*;
use crate::store::StoreError;
use redb::{Table, WriteTransaction};
use std::cell::RefCell;

pub struct WriteScope<'txn> {
    txn: &'txn WriteTransaction,
    deferred: Option<&'txn RefCell<DeferredRows>>,
    ingest: Option<IngestTables<'txn>>,
    attempts: OnFirstUse<'txn, AttemptsTable<'txn>>,
}

/// `(delivery, attempt number) → attempt record`.
pub type AttemptsTable<'txn> = Table<'txn, (u128, u32), &'static [u8]>;

/// Every table an ingest writes or checks.
pub struct IngestTables<'txn> {
    pub workspaces: Table<'txn, u128, &'static [u8]>,
    pub events: OnFirstUse<'txn, Table<'txn, (u128, u128), &'static [u8]>>,
    pub idempotency: OnFirstUse<'txn, IdempotencyTables<'txn>>,
    pub deliveries: NewDeliveryTables<'txn>,
    pub noise: OnFirstUse<'txn, super::noise::NoiseTables<'txn>>,
}

/// Idempotency keys: their first answers, and the same keys by age (for
/// the purge).
pub struct IdempotencyTables<'txn> {
    pub keys: Table<'txn, (u128, &'static str), &'static [u8]>,
    pub by_age: Table<'txn, (u64, u128, &'static str), ()>,
}

/// Tables opened when a job first asks for them, then kept for the batch.
pub struct OnFirstUse<'txn, T> {
    txn: &'txn WriteTransaction,
    open: fn(&'txn WriteTransaction) -> Result<T, StoreError>,
    tables: Option<T>,
}

impl<'txn, T> OnFirstUse<'txn, T> {
    fn new(
        txn: &'txn WriteTransaction,
        open: fn(&'txn WriteTransaction) -> Result<T, StoreError>,
    ) -> Self {
        Self {
            txn,
            open,
            tables: None,
        }
    }

    pub fn get(&mut self) -> Result<&mut T, StoreError> {
        let tables = match self.tables.take() {
            Some(tables) => tables,
            None => (self.open)(self.txn)?,
        };
        Ok(self.tables.insert(tables))
    }
}

/// The tables a new delivery goes into. The event index only takes rows
/// replayed from an older release's log, so it opens on first use.
pub struct NewDeliveryTables<'txn> {
    pub deliveries: Table<'txn, (u128, u128), &'static [u8]>,
    pub by_event: OnFirstUse<'txn, Table<'txn, (u128, u128, u128), ()>>,
    pub queue: QueueRows<'txn>,
}

/// The queue table, and the rows the writer holds back from it.
pub struct QueueRows<'txn> {
    table: Table<'txn, (u128, u64, u128), u128>,
    deferred: Option<&'txn RefCell<DeferredRows>>,
}

impl<'txn> WriteScope<'txn> {
    /// Every write goes straight into its table.
    pub fn new(txn: &'txn WriteTransaction) -> Self {
        Self {
            txn,
            deferred: None,
            ingest: None,
            attempts: OnFirstUse::new(txn, open_attempts),
        }
    }

    /// New deliveries' queue rows are held in `deferred` (`deferred.rs`).
    pub fn deferring(txn: &'txn WriteTransaction, deferred: &'txn RefCell<DeferredRows>) -> Self {
        Self {
            deferred: Some(deferred),
            ..Self::new(txn)
        }
    }

    /// The transaction itself, with every queue row held back written.
    /// Closes the tables kept open for ingest first: redb refuses to open a
    /// table that is already open. The borrow keeps the scope from
    /// reopening them while a table opened here is alive.
    pub fn txn(&mut self) -> Result<&WriteTransaction, StoreError> {
        self.flush_queue()?;
        self.ingest = None;
        self.attempts = OnFirstUse::new(self.txn, open_attempts);
        Ok(self.txn)
    }

    /// Writes the queue rows held back into the table.
    pub fn flush_queue(&mut self) -> Result<(), StoreError> {
        let Some(deferred) = self.deferred else {
            return Ok(());
        };
        let mut deferred = deferred.borrow_mut();
        if deferred.is_empty() {
            return Ok(());
        }
        let mut write = |table: &mut Table<'_, (u128, u64, u128), u128>| {
            deferred.flush(|delivery, row: &QueueRow| {
                table.insert((row.connection, row.due_ms, delivery), row.workspace)?;
                Ok::<(), StoreError>(())
            })
        };
        match &mut self.ingest {
            Some(tables) => write(&mut tables.deliveries.queue.table),
            None => write(&mut self.txn.open_table(QUEUE)?),
        }
    }

    /// The ingest tables, opened on first use in this batch.
    pub fn ingest_tables(&mut self) -> Result<&mut IngestTables<'txn>, StoreError> {
        let tables = match self.ingest.take() {
            Some(tables) => tables,
            None => IngestTables::open(self.txn, self.deferred)?,
        };
        Ok(self.ingest.insert(tables))
    }

    /// What recording an attempt writes: the ingest tables (workspaces,
    /// deliveries, queue), opened on first use, and the attempts table,
    /// opened when an attempt after the first is recorded.
    #[allow(clippy::type_complexity)]
    pub fn attempt_tables(
        &mut self,
    ) -> Result<
        (
            &mut IngestTables<'txn>,
            &mut OnFirstUse<'txn, AttemptsTable<'txn>>,
        ),
        StoreError,
    > {
        let ingest = match self.ingest.take() {
            Some(tables) => tables,
            None => IngestTables::open(self.txn, self.deferred)?,
        };
        Ok((self.ingest.insert(ingest), &mut self.attempts))
    }
}

fn open_attempts(txn: &WriteTransaction) -> Result<AttemptsTable<'_>, StoreError> {
    Ok(txn.open_table(ATTEMPTS)?)
}

impl<'txn> IngestTables<'txn> {
    fn open(
        txn: &'txn WriteTransaction,
        deferred: Option<&'txn RefCell<DeferredRows>>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            workspaces: txn.open_table(WORKSPACES)?,
            events: OnFirstUse::new(txn, |txn| Ok(txn.open_table(EVENTS)?)),
            idempotency: OnFirstUse::new(txn, |txn| {
                Ok(IdempotencyTables {
                    keys: txn.open_table(IDEMPOTENCY)?,
                    by_age: txn.open_table(IDEMPOTENCY_BY_AGE)?,
                })
            }),
            deliveries: NewDeliveryTables::open(txn, deferred)?,
            noise: OnFirstUse::new(txn, super::noise::NoiseTables::open),
        })
    }
}

impl<'txn> NewDeliveryTables<'txn> {
    fn open(
        txn: &'txn WriteTransaction,
        deferred: Option<&'txn RefCell<DeferredRows>>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            deliveries: txn.open_table(DELIVERIES)?,
            by_event: OnFirstUse::new(txn, |txn| Ok(txn.open_table(EVENT_DELIVERIES)?)),
            queue: QueueRows {
                table: txn.open_table(QUEUE)?,
                deferred,
            },
        })
    }
}

impl QueueRows<'_> {
    /// A new delivery's row: held back while the writer defers rows and
    /// has room, else written.
    pub fn insert_new(
        &mut self,
        (connection, due_ms, delivery): (u128, u64, u128),
        workspace: u128,
    ) -> Result<(), StoreError> {
        let row = QueueRow {
            connection,
            due_ms,
            workspace,
        };
        if let Some(deferred) = self.deferred
            && deferred.borrow_mut().hold(delivery, row)
        {
            return Ok(());
        }
        self.insert((connection, due_ms, delivery), workspace)
    }

    /// A row written at once (a retry's: it waits for seconds at least).
    pub fn insert(&mut self, key: (u128, u64, u128), workspace: u128) -> Result<(), StoreError> {
        self.table.insert(key, workspace)?;
        Ok(())
    }

    /// Removes a row, held back or written.
    pub fn remove(
        &mut self,
        (connection, due_ms, delivery): (u128, u64, u128),
    ) -> Result<(), StoreError> {
        if let Some(deferred) = self.deferred
            && deferred.borrow_mut().take(delivery, connection, due_ms)
        {
            return Ok(());
        }
        self.table.remove((connection, due_ms, delivery))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

    #[test]
    fn the_bare_transaction_closes_the_kept_tables_and_sees_their_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("scope.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut scope = WriteScope::new(&txn);
            let tables = scope.ingest_tables().unwrap();
            tables
                .events
                .get()
                .unwrap()
                .insert((1, 1), b"first".as_slice())
                .unwrap();
            // Asking again hands back the same open tables.
            let tables = scope.ingest_tables().unwrap();
            tables
                .events
                .get()
                .unwrap()
                .insert((1, 2), b"second".as_slice())
                .unwrap();
            // redb refuses a second open of a table; the scope closed its own.
            let events = scope.txn().unwrap().open_table(EVENTS).unwrap();
            assert_eq!(events.len().unwrap(), 2);
            drop(events);
            let tables = scope.ingest_tables().unwrap();
            tables
                .events
                .get()
                .unwrap()
                .insert((1, 3), b"third".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        let events = read.open_table(EVENTS).unwrap();
        let stored: Vec<_> = events
            .iter()
            .unwrap()
            .map(|entry| entry.unwrap().1.value().to_vec())
            .collect();
        assert_eq!(
            stored,
            [b"first".to_vec(), b"second".to_vec(), b"third".to_vec()]
        );
    }

    #[test]
    fn outcomes_and_ingests_share_the_kept_tables_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("scope.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut scope = WriteScope::new(&txn);
            let tables = scope.ingest_tables().unwrap();
            tables
                .events
                .get()
                .unwrap()
                .insert((1, 1), b"event".as_slice())
                .unwrap();
            // An outcome gets the same open ingest tables, plus attempts.
            let (tables, attempts) = scope.attempt_tables().unwrap();
            assert_eq!(tables.events.get().unwrap().len().unwrap(), 1);
            tables
                .deliveries
                .deliveries
                .insert((1, 2), b"delivery".as_slice())
                .unwrap();
            attempts
                .get()
                .unwrap()
                .insert((2, 1), b"attempt".as_slice())
                .unwrap();
            // And the next ingest still finds them open.
            let tables = scope.ingest_tables().unwrap();
            assert_eq!(tables.deliveries.deliveries.len().unwrap(), 1);
            // The bare transaction closes both kinds.
            let attempts = scope.txn().unwrap().open_table(ATTEMPTS).unwrap();
            assert_eq!(attempts.len().unwrap(), 1);
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(ATTEMPTS).unwrap().len().unwrap(), 1);
        assert_eq!(read.open_table(DELIVERIES).unwrap().len().unwrap(), 1);
        assert_eq!(read.open_table(EVENTS).unwrap().len().unwrap(), 1);
    }
}
