//! Queue rows the writer holds back (with the write-ahead log on).
//!
//! A new delivery's queue row used to be inserted by its ingest and removed
//! by its first outcome a few milliseconds later: two B-tree writes, and
//! the queue table's root written back in most commits, for a row nobody
//! read (the scheduler had the entry from memory). With the log on, redb's
//! commits between checkpoints are not durable anyway, and every ingest
//! since the last checkpoint is in the log. So the writer keeps new rows
//! here instead, and a first outcome that finds its row here just drops it.
//!
//! The rows go into the table:
//! - before every durable commit (a checkpoint, which starts the log over,
//!   so the database must then hold them),
//! - before any write that uses the bare transaction (it may read or change
//!   the queue: a purge, a requeue, a stale row's removal),
//! - when a reader outside the writer asks (`Writer::queue_snapshot`: the
//!   scheduler's refills, `GET /v1/queue`, health, metrics and online
//!   backups read a snapshot taken right after).
//!
//! What this holds is undone with its transaction when that is aborted (a
//! job refused, the log failed); once a logged batch is answered in the
//! writer's open transaction, only the rows written into that transaction
//! are (`acknowledged`). After a storage failure the rows are
//! written into the reopened database in the first commit of the log's
//! replay (`Wal::recover_after_failure`), before that replay starts the log
//! over (the same rows the replay writes, or, when only the log failed and
//! the old handle kept its unsynced commits, the rows nothing else
//! restores).
//! At most `limit` rows are held; past it, rows go straight in.

use crate::model::IdMap;

/// A queue row: its key's connection and due time, and its workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRow {
    pub connection: u128,
    pub due_ms: u64,
    pub workspace: u128,
}

/// Rows held back, by delivery, and how to undo this transaction's changes.
pub struct DeferredRows {
    rows: IdMap<u128, QueueRow>,
    undo: Vec<Undo>,
    limit: usize,
}

enum Undo {
    Held(u128),
    Taken(u128, QueueRow),
    Flushed(IdMap<u128, QueueRow>),
}

/// The default bound: rows live from an ingest to its delivery's first
/// outcome (milliseconds), so a few thousand cover far more than
/// `delivery.max_in_flight`; 4,096 rows take about 300 KB.
pub const DEFAULT_LIMIT: usize = 4096;

impl DeferredRows {
    pub fn new(limit: usize) -> Self {
        Self {
            rows: IdMap::default(),
            undo: Vec::new(),
            limit,
        }
    }

    /// Holds `delivery`'s row back; false when full (write it instead).
    pub fn hold(&mut self, delivery: u128, row: QueueRow) -> bool {
        if self.rows.len() >= self.limit || self.rows.contains_key(&delivery) {
            return false;
        }
        self.rows.insert(delivery, row);
        self.undo.push(Undo::Held(delivery));
        true
    }

    /// Drops `delivery`'s row if it is held here with this key; false if
    /// it is not (it is in the table, if anywhere).
    pub fn take(&mut self, delivery: u128, connection: u128, due_ms: u64) -> bool {
        match self.rows.get(&delivery) {
            Some(row) if row.connection == connection && row.due_ms == due_ms => {
                let row = *row;
                self.rows.remove(&delivery);
                self.undo.push(Undo::Taken(delivery, row));
                true
            }
            _ => false,
        }
    }

    /// Hands every row to `write` (into the table) and holds none after,
    /// unless `write` fails: then they stay held.
    pub fn flush<E>(
        &mut self,
        mut write: impl FnMut(u128, &QueueRow) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.rows.is_empty() {
            return Ok(());
        }
        for (delivery, row) in &self.rows {
            write(*delivery, row)?;
        }
        let flushed = std::mem::take(&mut self.rows);
        self.undo.push(Undo::Flushed(flushed));
        Ok(())
    }

    /// The transaction committed: its changes stand.
    pub fn committed(&mut self) {
        self.undo.clear();
    }

    /// A logged batch was answered in a transaction still open: its rows
    /// held and taken stand even if that transaction is aborted later (the
    /// log's replay then redoes its ingests and outcomes in the table),
    /// but rows written into the transaction are held again then.
    pub fn acknowledged(&mut self) {
        self.undo.retain(|step| matches!(step, Undo::Flushed(_)));
    }

    /// The transaction was aborted: back to how it began.
    pub fn rolled_back(&mut self) {
        while let Some(step) = self.undo.pop() {
            match step {
                Undo::Held(delivery) => {
                    self.rows.remove(&delivery);
                }
                Undo::Taken(delivery, row) => {
                    self.rows.insert(delivery, row);
                }
                Undo::Flushed(rows) => self.rows.extend(rows),
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(connection: u128, due_ms: u64) -> QueueRow {
        QueueRow {
            connection,
            due_ms,
            workspace: 9,
        }
    }

    fn flushed(rows: &mut DeferredRows) -> Vec<(u128, QueueRow)> {
        let mut out = Vec::new();
        rows.flush(|delivery, row| {
            out.push((delivery, *row));
            Ok::<(), ()>(())
        })
        .unwrap();
        out.sort_by_key(|(delivery, _)| *delivery);
        out
    }

    #[test]
    fn a_held_row_is_taken_only_with_its_own_key() {
        let mut rows = DeferredRows::new(8);
        assert!(rows.hold(1, row(10, 100)));
        assert!(!rows.take(1, 10, 101), "another due time");
        assert!(!rows.take(1, 11, 100), "another connection");
        assert!(!rows.take(2, 10, 100), "another delivery");
        assert!(rows.take(1, 10, 100));
        assert!(!rows.take(1, 10, 100), "taken once");
        assert!(rows.is_empty());
    }

    #[test]
    fn the_bound_holds_and_a_full_set_refuses() {
        let mut rows = DeferredRows::new(2);
        assert!(rows.hold(1, row(10, 100)));
        assert!(rows.hold(2, row(10, 100)));
        assert!(!rows.hold(3, row(10, 100)));
        assert_eq!(rows.len(), 2);
        rows.committed();
        assert!(rows.take(1, 10, 100));
        assert!(rows.hold(3, row(10, 100)), "room again");
    }

    #[test]
    fn after_an_acknowledged_batch_a_rollback_gives_back_only_the_rows_flushed() {
        let mut rows = DeferredRows::new(8);
        rows.hold(1, row(10, 100));
        rows.hold(2, row(10, 200));
        assert_eq!(flushed(&mut rows), [(1, row(10, 100)), (2, row(10, 200))]);
        rows.hold(3, row(11, 300));
        rows.hold(4, row(11, 400));
        assert!(rows.take(3, 11, 300));
        rows.acknowledged();
        rows.hold(5, row(12, 500));
        rows.rolled_back();
        assert_eq!(
            flushed(&mut rows),
            [(1, row(10, 100)), (2, row(10, 200)), (4, row(11, 400))],
            "the flushed rows are back, the acknowledged hold and take stand, the later hold is undone"
        );
    }

    #[test]
    fn a_rollback_undoes_holds_takes_and_flushes_of_its_transaction_only() {
        let mut rows = DeferredRows::new(8);
        rows.hold(1, row(10, 100));
        rows.hold(2, row(10, 200));
        rows.committed();

        // One transaction: take one, hold another, flush, hold after.
        assert!(rows.take(1, 10, 100));
        rows.hold(3, row(11, 300));
        assert_eq!(flushed(&mut rows), [(2, row(10, 200)), (3, row(11, 300))]);
        rows.hold(4, row(12, 400));
        rows.rolled_back();
        assert_eq!(flushed(&mut rows), [(1, row(10, 100)), (2, row(10, 200))]);

        // The flush above was not committed either.
        rows.rolled_back();
        assert_eq!(rows.len(), 2);
        rows.committed();
        assert_eq!(flushed(&mut rows).len(), 2);
        rows.committed();
        assert!(rows.is_empty());
        rows.rolled_back();
        assert!(rows.is_empty(), "nothing left to undo");
    }

    #[test]
    fn a_failed_flush_keeps_every_row_held() {
        let mut rows = DeferredRows::new(8);
        rows.hold(1, row(10, 100));
        rows.hold(2, row(10, 200));
        let mut written = 0;
        let failed = rows.flush(|_, _| {
            written += 1;
            if written == 2 { Err("disk") } else { Ok(()) }
        });
        assert_eq!(failed, Err("disk"));
        assert_eq!(rows.len(), 2);
    }
}
