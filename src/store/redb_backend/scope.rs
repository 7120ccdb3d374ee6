//! What a write op sees: the batch's write transaction, plus the tables
//! ingest and an attempt's outcome write, kept open from one job to the
//! next.
//!
//! Why: closing a redb table that was written writes its root back into the
//! table tree and checksums its dirty pages. With one open and close per
//! job, a group commit of 20 ingests did that 20 times per table; the
//! profile put it near a tenth of the server's CPU at full ingest load
//! (docs/benchmarks.md). Kept open, it happens once per batch. Attempt
//! outcomes share the ingest tables (and add their own): when they went
//! through the bare transaction, each one closed the ingest tables of a
//! batch mixing both, and the next ingest opened them all again.
//!
//! The tables only some jobs write (events, idempotency keys, noise
//! control) open on first use: opening a redb table costs a lookup and a
//! check of its key and value types (most of it formatting tuple type
//! names), and a batch of attempt outcomes, or of events without
//! idempotency keys or noise control, never needs them.

use super::tables::*;
use crate::store::StoreError;
use redb::{Table, WriteTransaction};

pub struct WriteScope<'txn> {
    txn: &'txn WriteTransaction,
    ingest: Option<IngestTables<'txn>>,
    attempts: Option<AttemptsTable<'txn>>,
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

/// The tables a new delivery goes into.
pub struct NewDeliveryTables<'txn> {
    pub deliveries: Table<'txn, (u128, u128), &'static [u8]>,
    pub by_event: Table<'txn, (u128, u128, u128), ()>,
    pub queue: Table<'txn, (u128, u64, u128), u128>,
}

impl<'txn> WriteScope<'txn> {
    pub fn new(txn: &'txn WriteTransaction) -> Self {
        Self {
            txn,
            ingest: None,
            attempts: None,
        }
    }

    /// The transaction itself. Closes the tables kept open for ingest first:
    /// redb refuses to open a table that is already open. The borrow keeps
    /// the scope from reopening them while a table opened here is alive.
    pub fn txn(&mut self) -> &WriteTransaction {
        self.ingest = None;
        self.attempts = None;
        self.txn
    }

    /// The ingest tables, opened on first use in this batch.
    pub fn ingest_tables(&mut self) -> Result<&mut IngestTables<'txn>, StoreError> {
        let tables = match self.ingest.take() {
            Some(tables) => tables,
            None => IngestTables::open(self.txn)?,
        };
        Ok(self.ingest.insert(tables))
    }

    /// What recording an attempt writes: the ingest tables (workspaces,
    /// deliveries, queue) and the attempts table, opened on first use.
    pub fn attempt_tables(
        &mut self,
    ) -> Result<(&mut IngestTables<'txn>, &mut AttemptsTable<'txn>), StoreError> {
        let attempts = match self.attempts.take() {
            Some(table) => table,
            None => self.txn.open_table(ATTEMPTS)?,
        };
        let attempts = self.attempts.insert(attempts);
        let ingest = match self.ingest.take() {
            Some(tables) => tables,
            None => IngestTables::open(self.txn)?,
        };
        Ok((self.ingest.insert(ingest), attempts))
    }
}

impl<'txn> IngestTables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            workspaces: txn.open_table(WORKSPACES)?,
            events: OnFirstUse::new(txn, |txn| Ok(txn.open_table(EVENTS)?)),
            idempotency: OnFirstUse::new(txn, |txn| {
                Ok(IdempotencyTables {
                    keys: txn.open_table(IDEMPOTENCY)?,
                    by_age: txn.open_table(IDEMPOTENCY_BY_AGE)?,
                })
            }),
            deliveries: NewDeliveryTables::open(txn)?,
            noise: OnFirstUse::new(txn, super::noise::NoiseTables::open),
        })
    }
}

impl<'txn> NewDeliveryTables<'txn> {
    pub fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            deliveries: txn.open_table(DELIVERIES)?,
            by_event: txn.open_table(EVENT_DELIVERIES)?,
            queue: txn.open_table(QUEUE)?,
        })
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
            let events = scope.txn().open_table(EVENTS).unwrap();
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
            attempts.insert((2, 1), b"attempt".as_slice()).unwrap();
            // And the next ingest still finds them open.
            let tables = scope.ingest_tables().unwrap();
            assert_eq!(tables.deliveries.deliveries.len().unwrap(), 1);
            // The bare transaction closes both kinds.
            let attempts = scope.txn().open_table(ATTEMPTS).unwrap();
            assert_eq!(attempts.len().unwrap(), 1);
        }
        txn.commit().unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(ATTEMPTS).unwrap().len().unwrap(), 1);
        assert_eq!(read.open_table(DELIVERIES).unwrap().len().unwrap(), 1);
        assert_eq!(read.open_table(EVENTS).unwrap().len().unwrap(), 1);
    }
}
