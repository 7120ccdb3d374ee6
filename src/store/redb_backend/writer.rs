//! The write coordinator: one thread owns every redb write transaction and
//! commits whatever is waiting as one durable transaction (group commit).
//!
//! A commit costs one fsync (about 250 µs on the reference VM) whether it
//! holds one record or a thousand, so batching is what lets durable ingest
//! run at HTTP speed. Callers are answered only once their batch is durable.
//!
//! With the write-ahead log on (`wal.rs`), a batch of ingests and attempt
//! outcomes is made durable by appending it to the log instead, and its
//! callers are answered once the log has synced it. redb then need not
//! commit each batch: logged batches go into one open write transaction,
//! committed without a sync when a reader needs to see them, after
//! `PUBLISH_AFTER_JOBS` jobs or `PUBLISH_AFTER_BYTES` of their log
//! records, or with the next durable commit; a commit
//! per batch cost about a tenth of the server's work per delivered event
//! (docs/benchmarks.md, issue 13). The tables its jobs open stay open
//! with it (`KeptScope`) until it is committed or aborted. While that
//! transaction holds writes already answered,
//! [`Writer::holds_unpublished`] is true and readers take
//! their snapshot from [`Writer::read_snapshot`]. Any other write, a full
//! log and a timer (`Message::Checkpoint`) make the commit durable again.
//! New deliveries' queue rows are held back until needed (`deferred.rs`):
//! a reader of the queue reads a snapshot the coordinator takes once it
//! has written them ([`Writer::queue_snapshot`]). With group pacing on
//! (`storage.wal_group_wait_us`, off by default) a logged group waits
//! for company until that long after the previous one started
//! (`GroupPacing`).
//!
//! When a commit fails with an I/O error (disk full, EIO), every job of its
//! batch is answered with an error and nothing of it counts as stored
//! (logged batches answered earlier in the open transaction come back
//! from the log when the file is opened again). redb
//! then refuses every write through that handle until the file is opened
//! again (`handle.rs`), so the coordinator flips the store's
//! `writable` watch to false, writes fail fast without reaching the disk,
//! and a probe thread asks the coordinator, on a backoff from 0.5 s doubling
//! to 30 s, to reopen the file and commit one small write. The first probe
//! that commits flips `writable` back to true: no restart needed.

use super::deferred::{self, DeferredRows};
use super::wal::{self, Logged, Wal};
use super::{DbSlot, WriteScope};
use crate::store::StoreError;
use redb::{Database, Durability, ReadTransaction, ReadableDatabase, WriteTransaction};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Most jobs folded into one transaction; bounds commit latency.
const MAX_BATCH: usize = 4096;
/// Jobs waiting for the writer before senders wait too (back-pressure).
const QUEUE_DEPTH: usize = 16 * 1024;
/// Logged jobs, and bytes of their log records, the open transaction takes
/// before it is committed anyway: bounds the memory its changed pages hold
/// (an ingest job may carry up to `limits.max_body_bytes` of events).
const PUBLISH_AFTER_JOBS: usize = 1024;
const PUBLISH_AFTER_BYTES: usize = 4 * 1024 * 1024;
/// The storage probe's backoff after a failure: first wait, then doubling up
/// to the last.
const PROBE_FIRST_DELAY: Duration = Duration::from_millis(500);
const PROBE_MAX_DELAY: Duration = Duration::from_secs(30);

/// A write run inside the batch transaction. It must check before it writes
/// (an `Ok` result is committed with everything else) and may run more than
/// once: when another job in its batch fails, the batch is rebuilt without
/// that job.
pub type WriteOp<T> = Box<dyn Fn(&mut WriteScope<'_>) -> Result<T, StoreError> + Send>;

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Message>,
    writable: watch::Receiver<bool>,
    /// Whether the coordinator holds queue rows back (the log is on).
    defers_queue_rows: bool,
    /// Writes were answered that no commit holds yet (see the module docs).
    unpublished: Arc<AtomicBool>,
    /// See [`Writer::publishes`].
    publishes: Arc<AtomicU64>,
}

pub struct WriterThread {
    handle: JoinHandle<()>,
}

enum Message {
    Job(Box<dyn Job>),
    /// From the probe thread: reopen the file and try one small write.
    Probe(oneshot::Sender<Result<(), StoreError>>),
    /// From the checkpoint timer: make what the log holds durable in redb.
    Checkpoint,
    /// From a reader: commit the open transaction (and, for a reader of
    /// the queue table, write the rows held back), then answer with a read
    /// snapshot (`None` while storage is failing).
    Snapshot {
        queue_rows: bool,
        reply: oneshot::Sender<Option<ReadTransaction>>,
    },
    /// Commit what is queued, refuse anything sent later, then stop.
    Close,
}

impl Writer {
    /// Starts the coordinator; `wal` is the recovered log, or `None` for a
    /// durable redb commit per batch.
    pub fn start(slot: Arc<DbSlot>, wal: Option<Wal>) -> std::io::Result<(Writer, WriterThread)> {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        let (health, writable) = watch::channel(true);
        if let Some(wal) = &wal {
            spawn_checkpoint_timer(jobs.downgrade(), wal.checkpoint_every())?;
        }
        let defers_queue_rows = wal.is_some();
        let unpublished = Arc::new(AtomicBool::new(false));
        let publishes = Arc::new(AtomicU64::new(0));
        // Weak, so that a probe waiting for its next try never keeps the
        // coordinator from shutting down.
        let probe_sender = jobs.downgrade();
        let open_unpublished = unpublished.clone();
        let open_publishes = publishes.clone();
        // Built on its own thread: what it shares with the open
        // transaction's tables (`Rc`) stays there.
        let handle = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || {
                let coordinator = Coordinator {
                    slot,
                    health,
                    probe_sender,
                    deferred: defers_queue_rows
                        .then(|| Rc::new(RefCell::new(DeferredRows::new(deferred::DEFAULT_LIMIT)))),
                    wal,
                    open: OpenSlot {
                        txn: None,
                        unpublished: open_unpublished,
                        publishes: open_publishes,
                    },
                };
                coordinator.run(receiver)
            })?;
        let writer = Writer {
            jobs,
            writable,
            defers_queue_rows,
            unpublished,
            publishes,
        };
        Ok((writer, WriterThread { handle }))
    }

    /// Runs `op` in the next group commit and resolves once it is durable.
    /// While storage is failing it fails at once, without touching the disk.
    pub async fn write<T: Send + 'static>(&self, op: WriteOp<T>) -> Result<T, StoreError> {
        self.write_logged(op, None).await
    }

    /// As [`Writer::write`]; `record` is what the write-ahead log keeps of
    /// the op (see `wal.rs`), so its batch can skip redb's durable commit.
    pub async fn write_logged<T: Send + 'static>(
        &self,
        op: WriteOp<T>,
        record: Option<Vec<u8>>,
    ) -> Result<T, StoreError> {
        if !*self.writable.borrow() {
            if self.jobs.is_closed() {
                return Err(StoreError::WriterStopped);
            }
            return Err(not_writable());
        }
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            op,
            record,
            value: None,
            reply,
        });
        self.jobs
            .send(Message::Job(job))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// A read snapshot that holds the queue row of every pending delivery
    /// it holds: the coordinator writes the rows it holds back, then takes
    /// it. `None` when nothing is held back (the log is off), while
    /// storage is failing, and once the coordinator has stopped (it wrote
    /// them out first): read the database directly then.
    pub async fn queue_snapshot(&self) -> Option<ReadTransaction> {
        if !self.defers_queue_rows {
            return None;
        }
        snapshot(&self.jobs, true).await
    }

    /// True while writes were answered that the open transaction holds
    /// and no commit does yet: a read transaction begun now would not see
    /// them.
    pub fn holds_unpublished(&self) -> bool {
        // Set before those writes are answered: a reader that comes after
        // an answer sees it set, or cleared by a commit holding them.
        self.unpublished.load(Ordering::Acquire)
    }

    /// Commits (and replays of the log after a failure) so far that left no
    /// answered write unpublished. A write answered while this was `n` is
    /// in every read transaction begun once it is past `n` (`recent.rs`).
    pub fn publishes(&self) -> u64 {
        self.publishes.load(Ordering::Acquire)
    }

    /// A read snapshot holding every write answered so far, when a read
    /// transaction begun now might lack some (`None`: begin one). While
    /// storage is failing it is `None` too: reads then see the last commit,
    /// until the reopened file has the log's records back.
    pub async fn read_snapshot(&self) -> Option<ReadTransaction> {
        if !self.holds_unpublished() {
            return None;
        }
        snapshot(&self.jobs, false).await
    }

    /// A handle that does not keep the coordinator running.
    pub fn downgrade(&self) -> WeakWriter {
        WeakWriter {
            jobs: self.jobs.downgrade(),
            defers_queue_rows: self.defers_queue_rows,
        }
    }

    /// Messages sent and not yet taken by the coordinator.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Stops the coordinator once it has committed every job queued before
    /// this; jobs sent later fail with [`StoreError::WriterStopped`]. Join
    /// the [`WriterThread`] to wait until they are durable.
    pub async fn close(&self) {
        // An error means it has stopped already.
        let _ = self.jobs.send(Message::Close).await;
    }

    /// True while writes are accepted (see the module comment).
    pub fn writable(&self) -> watch::Receiver<bool> {
        self.writable.clone()
    }
}

/// See [`Writer::downgrade`].
#[derive(Clone)]
pub struct WeakWriter {
    jobs: mpsc::WeakSender<Message>,
    defers_queue_rows: bool,
}

impl WeakWriter {
    /// As [`Writer::queue_snapshot`]; `Err` while storage is failing (a
    /// snapshot then may lack rows the coordinator holds back).
    pub async fn queue_snapshot(&self) -> Result<Option<ReadTransaction>, StoreError> {
        let Some(jobs) = self.jobs.upgrade() else {
            return Ok(None);
        };
        if !self.defers_queue_rows {
            return Ok(None);
        }
        match snapshot(&jobs, true).await {
            Some(snapshot) => Ok(Some(snapshot)),
            None if jobs.is_closed() => Ok(None),
            None => Err(not_writable()),
        }
    }
}

async fn snapshot(jobs: &mpsc::Sender<Message>, queue_rows: bool) -> Option<ReadTransaction> {
    let (reply, answer) = oneshot::channel();
    jobs.send(Message::Snapshot { queue_rows, reply })
        .await
        .ok()?;
    answer.await.ok().flatten()
}

impl WriterThread {
    /// Waits until every queued job is committed; returns once the last
    /// `Writer` clone is dropped.
    pub fn join(self) {
        if self.handle.join().is_err() {
            tracing::error!("the write coordinator panicked");
        }
    }
}

fn not_writable() -> StoreError {
    StoreError::Unavailable("storage is failing; writes resume once a probe write succeeds".into())
}

trait Job: Send {
    fn apply(&mut self, scope: &mut WriteScope<'_>) -> Result<(), StoreError>;
    /// What the write-ahead log keeps of this job, if it can carry it.
    fn log_record(&self) -> Option<&[u8]>;
    fn complete(self: Box<Self>, outcome: Result<(), StoreError>);
}

struct TypedJob<T> {
    op: WriteOp<T>,
    record: Option<Vec<u8>>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Job for TypedJob<T> {
    fn apply(&mut self, scope: &mut WriteScope<'_>) -> Result<(), StoreError> {
        self.value = Some((self.op)(scope)?);
        Ok(())
    }

    fn log_record(&self) -> Option<&[u8]> {
        self.record.as_deref()
    }

    fn complete(self: Box<Self>, outcome: Result<(), StoreError>) {
        let TypedJob {
            op,
            record,
            value,
            reply,
        } = *self;
        // Dropped before the answer, so what the op shares with its caller
        // is freed on the caller's thread, not on this one.
        drop(op);
        drop(record);
        let result = outcome.and_then(|()| value.ok_or(StoreError::WriterStopped));
        // The caller may have gone away (client disconnected); the write
        // stands either way.
        let _ = reply.send(result);
    }
}

/// The writer thread's state.
struct Coordinator {
    slot: Arc<DbSlot>,
    health: watch::Sender<bool>,
    probe_sender: mpsc::WeakSender<Message>,
    /// New deliveries' queue rows held back; `Some` with the log on.
    /// Shared with the open transaction's scope.
    deferred: Option<Rc<RefCell<DeferredRows>>>,
    wal: Option<Wal>,
    /// Logged batches applied and answered, not committed yet (log on).
    open: OpenSlot,
}

/// The open transaction, and the flag readers check
/// ([`Writer::holds_unpublished`]). Empty while storage is failing.
struct OpenSlot {
    txn: Option<OpenTxn>,
    unpublished: Arc<AtomicBool>,
    /// See [`Writer::publishes`].
    publishes: Arc<AtomicU64>,
}

/// The write transaction logged batches go into between commits.
struct OpenTxn {
    /// The transaction, with the tables its jobs opened.
    kept: KeptScope,
    /// The log's last record number in it.
    through: u64,
    jobs: usize,
    /// Bytes of the log records of the jobs in it.
    bytes: usize,
}

/// What the open transaction's scope borrows.
struct ScopeOwner {
    txn: WriteTransaction,
    deferred: Option<Rc<RefCell<DeferredRows>>>,
}

self_cell::self_cell!(
    /// The open transaction and its write scope: the tables its jobs opened
    /// stay open from one logged batch to the next, and are closed (their
    /// roots written back into the transaction) only when it is committed
    /// or aborted. Opening and closing them for every batch cost 3–8 % of
    /// the server's instructions per delivered event, the more the smaller
    /// the batches (docs/benchmarks.md, sixteenth sitting).
    struct KeptScope {
        owner: ScopeOwner,
        #[not_covariant]
        dependent: WriteScope,
    }
);

impl OpenTxn {
    fn begin(
        txn: WriteTransaction,
        deferred: Option<&Rc<RefCell<DeferredRows>>>,
        through: u64,
    ) -> Self {
        let owner = ScopeOwner {
            txn,
            deferred: deferred.cloned(),
        };
        let kept = KeptScope::new(owner, |owner| match owner.deferred.as_deref() {
            Some(deferred) => WriteScope::deferring(&owner.txn, deferred),
            None => WriteScope::new(&owner.txn),
        });
        Self {
            kept,
            through,
            jobs: 0,
            bytes: 0,
        }
    }

    /// Applies `batch` in order; the first job's error stops it.
    fn apply(&mut self, batch: &mut [Box<dyn Job>]) -> Option<StoreError> {
        self.kept
            .with_dependent_mut(|_, scope| batch.iter_mut().find_map(|job| job.apply(scope).err()))
    }

    /// The transaction, with its tables closed.
    fn into_txn(self) -> WriteTransaction {
        self.kept.into_owner().txn
    }
}

impl Coordinator {
    fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        metrics::gauge!("switchyard_storage_writable").set(1.0);
        let mut inbox = Inbox {
            batch: Vec::with_capacity(MAX_BATCH),
            ..Inbox::default()
        };
        let mut pacing = self
            .wal
            .as_ref()
            .and_then(|wal| GroupPacing::new(wal.group_wait()));
        while let Some(first) = receiver.blocking_recv() {
            inbox.take(first, &mut receiver);
            inbox.take_waiting(&mut receiver);
            // No pacing while storage is failing: queued jobs fail at once.
            if let Some(pacing) = pacing.as_mut().filter(|_| *self.health.borrow()) {
                pacing.gather(&mut inbox, &mut receiver);
            }
            if !inbox.batch.is_empty() {
                metrics_batch_size(inbox.batch.len());
                self.commit(&mut inbox.batch, inbox.queue_rows);
            } else if inbox.checkpoint {
                self.checkpoint();
            }
            if !inbox.snapshots.is_empty() {
                self.publish(inbox.queue_rows);
                for reply in inbox.snapshots.drain(..) {
                    let _ = reply.send(self.snapshot());
                }
            }
            for reply in inbox.probes.drain(..) {
                let _ = reply.send(self.probe());
            }
            inbox.checkpoint = false;
            inbox.queue_rows = false;
        }
        // Closing: what only the log holds goes into redb, so the file is
        // complete on its own.
        self.checkpoint();
        // Only left when that failed: the next start replays the log.
        self.abandon_open();
        // Storage failed and did not come back: the rows held back go in
        // if the handle still takes writes (the log alone failed; closing
        // the handle keeps its unsynced commits, so the log may have
        // nothing left to replay at the next start). If it refuses them,
        // the database goes back to its last durable commit and the next
        // start replays them from the log.
        if let Ok(db) = self.slot.get()
            && let Err(error) =
                write_held_rows(&db, self.deferred.as_deref(), Durability::Immediate)
        {
            tracing::warn!(%error, "writing the queue rows held back at close; the log's replay restores them");
        }
    }

    /// A read snapshot taken now, while storage works.
    fn snapshot(&self) -> Option<ReadTransaction> {
        if !*self.health.borrow() {
            return None;
        }
        self.slot.get().ok()?.begin_read().ok()
    }

    /// Commits `batch`; with `flush`, the queue rows held back go in too.
    fn commit(&mut self, batch: &mut Vec<Box<dyn Job>>, flush: bool) {
        // Jobs queued before storage failed fail fast too.
        if !*self.health.borrow() {
            return fail_all(batch, &not_writable());
        }
        let db = match self.slot.get() {
            Ok(db) => db,
            Err(error) => return fail_all(batch, &error),
        };
        let deferred = self.deferred.as_ref();
        let open = &mut self.open;
        if let Err(failure) = commit_batch(&db, batch, self.wal.as_mut(), deferred, open, flush) {
            drop(db);
            self.abandon_open();
            // Marked before the jobs hear of it, so a caller told of the
            // failure already sees the store as not writable.
            self.storage_failed(&failure);
            fail_all(batch, &failure);
        }
    }

    /// A durable commit of the log's position (and the queue rows held
    /// back), when the log holds records redb has not made durable yet.
    fn checkpoint(&mut self) {
        let Some(wal) = self.wal.as_mut() else {
            return;
        };
        if !wal.holds_records() || !*self.health.borrow() {
            return;
        }
        // The open transaction, if any, is the one made durable.
        let open = self.open.txn.take();
        let committed = self.slot.get().and_then(|db| {
            let mut txn = match open {
                Some(open) => open.into_txn(),
                None => db.begin_write()?,
            };
            flush_deferred(&txn, self.deferred.as_deref())?;
            wal::store_applied(&txn, wal.applied_through())?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        });
        settle(self.deferred.as_deref(), committed.is_ok());
        match committed {
            Ok(()) => {
                wal.checkpointed();
                self.open.published();
            }
            Err(error) => self.storage_failed(&error),
        }
    }

    /// Commits the open transaction, with the queue rows held back when
    /// `queue_rows` asks (alone if nothing is open), in a commit that needs
    /// no sync: everything in it comes back from the log after a crash.
    fn publish(&mut self, queue_rows: bool) {
        if !*self.health.borrow() {
            return;
        }
        let deferred = self.deferred.as_deref();
        let committed = if self.open.txn.is_some() {
            self.open.commit(deferred, queue_rows)
        } else if queue_rows {
            self.slot
                .get()
                .and_then(|db| write_held_rows(&db, deferred, Durability::None))
        } else {
            Ok(())
        };
        if let Err(error) = committed {
            self.storage_failed(&error);
        }
    }

    /// Aborts the open transaction after a storage failure: the writes it
    /// held were answered and come back from the log when storage is
    /// reopened (or at the next start).
    fn abandon_open(&mut self) {
        if let Some(open) = self.open.txn.take() {
            if let Err(error) = open.into_txn().abort() {
                tracing::warn!(%error, "aborting the open write transaction");
            }
            settle(self.deferred.as_deref(), false);
        }
    }

    fn storage_failed(&self, error: &StoreError) {
        metrics::counter!("switchyard_storage_errors_total").increment(1);
        let was_writable = self.health.send_replace(false);
        if was_writable {
            tracing::error!(%error, "storage failed; writes are refused until a probe write succeeds");
            metrics::gauge!("switchyard_storage_writable").set(0.0);
            spawn_probe(self.probe_sender.clone());
        }
    }

    fn probe(&mut self) -> Result<(), StoreError> {
        if *self.health.borrow() {
            return Ok(());
        }
        // The reopened file takes no other writer.
        self.abandon_open();
        // Reopened: what the log acknowledged since the database's last
        // durable commit goes back in before the handle is handed to
        // anyone (with what the aborted open transaction held), and so do
        // the queue rows held back. (After a failure of redb's file the
        // log's replay writes them too; after a failure of the log alone,
        // closing the old handle kept its unsynced commits, so the replay
        // may have nothing more to apply.)
        let wal = &mut self.wal;
        let deferred = self.deferred.as_deref();
        let reopened = self.slot.reopen_and_probe(|db| match wal.as_mut() {
            Some(wal) => Ok(wal.recover_after_failure(db, deferred)?),
            None => write_held_rows(db, deferred, Durability::Immediate),
        });
        match reopened {
            Ok(()) => {
                tracing::info!("storage accepts writes again");
                // The log's replay committed everything answered so far.
                self.open.published();
                self.health.send_replace(true);
                metrics::gauge!("switchyard_storage_writable").set(1.0);
                Ok(())
            }
            Err(error) => {
                tracing::warn!(%error, "storage probe failed");
                metrics::counter!("switchyard_storage_errors_total").increment(1);
                Err(error)
            }
        }
    }
}

impl Drop for Coordinator {
    /// Stopped (or panicked): no more writes, for good.
    fn drop(&mut self) {
        self.health.send_replace(false);
    }
}

/// Asks the coordinator to probe storage, on a backoff, until a probe
/// succeeds or the coordinator has stopped.
fn spawn_probe(sender: mpsc::WeakSender<Message>) {
    let spawned = std::thread::Builder::new()
        .name("switchyard-storage-probe".into())
        .spawn(move || {
            let mut delay = PROBE_FIRST_DELAY;
            loop {
                std::thread::sleep(delay);
                let Some(jobs) = sender.upgrade() else { return };
                let (reply, answer) = oneshot::channel();
                if jobs.blocking_send(Message::Probe(reply)).is_err() {
                    return;
                }
                drop(jobs);
                match answer.blocking_recv() {
                    Ok(Err(_)) => delay = (delay * 2).min(PROBE_MAX_DELAY),
                    Ok(Ok(())) | Err(_) => return,
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the storage probe; writes resume after a restart");
    }
}

/// Sends the coordinator a checkpoint request every `every`, until it stops.
fn spawn_checkpoint_timer(
    sender: mpsc::WeakSender<Message>,
    every: Duration,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("switchyard-checkpoint".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(jobs) = sender.upgrade() else { return };
                // Full queue: the jobs in it will commit anyway.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    jobs.try_send(Message::Checkpoint)
                {
                    return;
                }
            }
        })?;
    Ok(())
}

/// What one turn of the coordinator took from its channel.
#[derive(Default)]
struct Inbox {
    batch: Vec<Box<dyn Job>>,
    probes: Vec<oneshot::Sender<Result<(), StoreError>>>,
    snapshots: Vec<oneshot::Sender<Option<ReadTransaction>>>,
    checkpoint: bool,
    /// A reader of the queue table waits: write the rows held back.
    queue_rows: bool,
    /// Close was received: no later turn waits (`GroupPacing`).
    closing: bool,
}

impl Inbox {
    fn take(&mut self, message: Message, receiver: &mut mpsc::Receiver<Message>) {
        match message {
            Message::Job(job) => self.batch.push(job),
            Message::Probe(reply) => self.probes.push(reply),
            Message::Checkpoint => self.checkpoint = true,
            Message::Snapshot { queue_rows, reply } => {
                self.queue_rows |= queue_rows;
                self.snapshots.push(reply);
            }
            // What is queued already is still received; the loop ends
            // once it has been.
            Message::Close => {
                self.closing = true;
                receiver.close();
            }
        }
    }

    /// Takes what is queued already, up to a full batch.
    fn take_waiting(&mut self, receiver: &mut mpsc::Receiver<Message>) {
        while self.batch.len() < MAX_BATCH {
            let Ok(message) = receiver.try_recv() else {
                break;
            };
            self.take(message, receiver);
        }
    }

    /// Jobs, every one of which the log carries: a group with a log sync.
    fn is_logged_group(&self) -> bool {
        !self.batch.is_empty() && self.batch.iter().all(|job| job.log_record().is_some())
    }

    /// Nothing but jobs the log carries, and room for more: the turn may
    /// wait for more of them (`GroupPacing`).
    fn only_logged_jobs(&self) -> bool {
        self.is_logged_group()
            && self.batch.len() < MAX_BATCH
            && self.probes.is_empty()
            && self.snapshots.is_empty()
            && !self.closing
    }
}

/// Group pacing (`storage.wal_group_wait_us`, off by default): a group of
/// logged writes starts no sooner than `group_wait` after the previous one
/// started, and takes what arrived meanwhile. Under concurrent load a log
/// sync per small group costs more CPU than the writes themselves (about
/// 25 µs of kernel time per sync on the reference VM, plus a wake-up of
/// this thread and the log's), so fewer, bigger groups leave more CPU for
/// the rest (docs/benchmarks.md, issue 13, tenth sitting). The price is up
/// to `group_wait` more latency per write; a client that sends one write
/// at a time gets at most one per `group_wait`. Only a turn of nothing but
/// logged jobs waits, in slices of at most `GATHER_SLICE`: a reader, a
/// probe, a write the log does not carry or closing that arrives meanwhile
/// ends the wait at the next slice (a logged write joins the group; the
/// checkpoint timer's message does not end it, as a group that holds jobs
/// checkpoints when one is due anyway, `Wal::begin`).
struct GroupPacing {
    group_wait: Duration,
    last_start: Instant,
}

/// How much longer a message that may not wait (a reader's) waits
/// behind a pacing turn, at most.
const GATHER_SLICE: Duration = Duration::from_micros(250);

impl GroupPacing {
    /// `None` when pacing is off.
    fn new(group_wait: Duration) -> Option<Self> {
        (!group_wait.is_zero()).then(|| Self {
            group_wait,
            // The first group need not wait.
            last_start: Instant::now()
                .checked_sub(group_wait)
                .unwrap_or_else(Instant::now),
        })
    }

    /// Waits out the rest of the gap since the previous logged group
    /// started, taking what arrives meanwhile, then notes this group's
    /// start. A turn without one (no jobs, or one the log does not carry)
    /// neither waits nor counts.
    fn gather(&mut self, inbox: &mut Inbox, receiver: &mut mpsc::Receiver<Message>) {
        if !inbox.is_logged_group() {
            return;
        }
        let until = self.last_start + self.group_wait;
        while inbox.only_logged_jobs() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep(GATHER_SLICE.min(until - now));
            inbox.take_waiting(receiver);
        }
        self.last_start = Instant::now();
    }
}

impl OpenSlot {
    /// Commits the open transaction, if any, without a sync (with the
    /// queue rows held back when `queue_rows` asks). On failure it is gone
    /// all the same: what it held comes back from the log once storage is
    /// reopened.
    fn commit(
        &mut self,
        deferred: Option<&RefCell<DeferredRows>>,
        queue_rows: bool,
    ) -> Result<(), StoreError> {
        let Some(open) = self.txn.take() else {
            return Ok(());
        };
        let through = open.through;
        let mut txn = open.into_txn();
        let started = Instant::now();
        let committed = (|| {
            if queue_rows {
                flush_deferred(&txn, deferred)?;
            }
            wal::store_applied(&txn, through)?;
            txn.set_durability(Durability::None)?;
            Ok(txn.commit()?)
        })();
        settle(deferred, committed.is_ok());
        crate::telemetry::record(
            "switchyard_commit_seconds",
            &[("durability", "none")],
            started.elapsed().as_secs_f64(),
        );
        if committed.is_ok() {
            self.published();
        }
        committed
    }

    /// Every write answered so far is in a commit.
    fn published(&self) {
        self.unpublished.store(false, Ordering::Release);
        self.publishes.fetch_add(1, Ordering::Release);
    }

    /// Writes are about to be answered that only the open transaction
    /// holds. Before the answers: see `Writer::holds_unpublished`.
    fn unpublished(&self) {
        self.unpublished.store(true, Ordering::Release);
    }
}

/// Applies every job in one transaction and commits. A job that fails is
/// answered with its error and the batch is retried without it, so one bad
/// write never takes its neighbours down (a logged batch: see
/// [`apply_logged`]). An I/O failure is returned with
/// the whole batch left unanswered, for the coordinator to handle.
///
/// With a log, the batch is logged and synced first (`wal.rs`) and goes
/// into the open transaction ([`apply_logged`]); a batch the log does not
/// take (a checkpoint is due, or a job it cannot carry) commits the open
/// transaction first, then is committed durably in a transaction of its
/// own.
fn commit_batch(
    db: &Database,
    batch: &mut Vec<Box<dyn Job>>,
    mut wal: Option<&mut Wal>,
    shared_rows: Option<&Rc<RefCell<DeferredRows>>>,
    open: &mut OpenSlot,
    flush: bool,
) -> Result<(), StoreError> {
    let deferred = shared_rows.map(|rows| &**rows);
    // The log's write and sync start first and run while the batch is
    // applied; the commit waits for them.
    let plan = match wal.as_deref_mut() {
        Some(wal) => match wal.begin(batch.iter().map(|job| job.log_record())) {
            Ok(Logged::Through(seq)) => Some((seq, Durability::None)),
            Ok(Logged::Checkpoint) => Some((wal.applied_through(), Durability::Immediate)),
            Err(error) => {
                tracing::error!(%error, "writing the write-ahead log failed");
                return Err(error.into());
            }
        },
        None => None,
    };
    let result = match (wal.as_deref_mut(), plan) {
        (Some(log), Some((through, Durability::None))) => {
            apply_logged(db, batch, log, through, shared_rows, open)
        }
        _ => open
            .commit(deferred, false)
            .and_then(|()| apply_and_commit(db, batch, wal.as_deref_mut(), plan, deferred, flush)),
    };
    if let (Some(wal), Some((through, Durability::None))) = (wal, plan)
        && !wal.acknowledged(through)
    {
        // Its callers are told it failed (or every job was refused): its
        // records must not come back. (A batch answered in part was
        // committed durably, which started the log over: nothing is left
        // to wipe.) If its sync or the wipe failed, storage stops until
        // the probe's durable commit has skipped any numbers still spent:
        // a record written after them would not be replayed.
        if let Err(error) = wal.retract_last_batch() {
            tracing::error!(%error, "the write-ahead log failed under a batch its callers were refused");
            return Err(error.into());
        }
    }
    result
}

/// Applies a logged batch in the open transaction (begun if there is
/// none) and, once the log has synced it, answers its jobs without a
/// commit. An I/O failure is returned with the batch unanswered and the
/// transaction aborted; writes answered in it before come back from the
/// log when storage is reopened.
///
/// A job refused may have written part of its change before it failed
/// (a record that does not decode), so a batch with one is never left in
/// the open transaction: that is aborted, and the batch goes through
/// [`apply_and_commit`]'s retry without the refused job, committed durably
/// on its own with every number the log spent, so that neither its record
/// nor any part of its change is applied again. When the aborted
/// transaction held writes already answered, they are first applied again
/// from the log and made durable ([`Wal::recover_after_failure`], on the
/// same handle), with the queue rows held back.
fn apply_logged(
    db: &Database,
    batch: &mut Vec<Box<dyn Job>>,
    wal: &mut Wal,
    through: u64,
    shared_rows: Option<&Rc<RefCell<DeferredRows>>>,
    open: &mut OpenSlot,
) -> Result<(), StoreError> {
    let deferred = shared_rows.map(|rows| &**rows);
    let mut current = match open.txn.take() {
        Some(current) => current,
        None => match db.begin_write() {
            Ok(txn) => OpenTxn::begin(txn, shared_rows, through),
            Err(error) => return fail_batch(batch, error.into()),
        },
    };
    let carries_answered_writes = current.jobs > 0;
    let failure = current.apply(batch);
    let failure = failure.or_else(|| {
        wal.finish()
            .err()
            .inspect(|error| tracing::error!(%error, "writing the write-ahead log failed"))
            .map(StoreError::from)
    });
    if let Some(error) = failure {
        if let Err(abort) = current.into_txn().abort() {
            tracing::warn!(error = %abort, "aborting a failed write batch");
        }
        settle(deferred, false);
        if error.is_io_failure() {
            tracing::error!(%error, "write batch failed");
            return Err(error);
        }
        tracing::warn!(%error, "write refused; its batch is committed on its own without it");
        if carries_answered_writes {
            wal.finish()?;
            // With the queue rows held back: the log starts over after it.
            wal.recover_after_failure(db, deferred)?;
            open.published();
        }
        // Durable, with every number the log spent so far: the refused
        // job's record (and any part of its change) is never applied again.
        let plan = Some((wal.applied_through(), Durability::Immediate));
        return apply_and_commit(db, batch, Some(wal), plan, deferred, false);
    }
    wal.acknowledge(through);
    if let Some(deferred) = deferred {
        deferred.borrow_mut().acknowledged();
    }
    current.through = through;
    current.jobs += batch.len();
    current.bytes += batch
        .iter()
        .map(|job| job.log_record().map_or(0, <[u8]>::len))
        .sum::<usize>();
    open.unpublished();
    batch.drain(..).for_each(|job| job.complete(Ok(())));
    let full = current.jobs >= PUBLISH_AFTER_JOBS || current.bytes >= PUBLISH_AFTER_BYTES;
    open.txn = Some(current);
    if full {
        return open.commit(deferred, false);
    }
    Ok(())
}

/// Applies every job in one transaction and commits as `plan` says (the
/// log's last number in it, and the durability). The queue rows held back
/// in `deferred` go in before a durable commit, or when `flush` asks; the
/// changes to them are undone with an aborted transaction. See
/// [`commit_batch`].
fn apply_and_commit(
    db: &Database,
    batch: &mut Vec<Box<dyn Job>>,
    mut wal: Option<&mut Wal>,
    plan: Option<(u64, Durability)>,
    deferred: Option<&RefCell<DeferredRows>>,
    flush: bool,
) -> Result<(), StoreError> {
    let durable = !matches!(plan, Some((_, Durability::None)));
    'retry: while !batch.is_empty() {
        let mut txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return fail_batch(batch, error.into()),
        };
        // The scope (and the tables it keeps open) must be gone before the
        // transaction is committed or aborted.
        let failed = {
            let mut scope = match deferred {
                Some(deferred) => WriteScope::deferring(&txn, deferred),
                None => WriteScope::new(&txn),
            };
            let failed = (0..batch.len()).find_map(|index| {
                batch[index]
                    .apply(&mut scope)
                    .err()
                    .map(|error| (Some(index), error))
            });
            match failed {
                None if durable || flush => scope.flush_queue().err().map(|error| (None, error)),
                failed => failed,
            }
        };
        if let Some((index, error)) = failed {
            if let Err(abort) = txn.abort() {
                tracing::warn!(error = %abort, "aborting a failed write batch");
            }
            settle(deferred, false);
            // Storage trouble (disk full, I/O) would fail every job the
            // same way: fail the batch at once rather than retry it.
            let Some(index) = index.filter(|_| !matches!(error, StoreError::Backend { .. })) else {
                tracing::error!(%error, "write batch failed");
                return fail_batch(batch, error);
            };
            tracing::warn!(%error, "write rejected; retrying its batch without it");
            batch.remove(index).complete(Err(error));
            continue 'retry;
        }
        if let Some(Err(error)) = wal.as_deref_mut().map(Wal::finish) {
            tracing::error!(%error, "writing the write-ahead log failed");
            if let Err(abort) = txn.abort() {
                tracing::warn!(error = %abort, "aborting a batch the log refused");
            }
            settle(deferred, false);
            return Err(error.into());
        }
        let marked = match plan {
            Some((through, durability)) => {
                wal::store_applied(&txn, through).and_then(|()| Ok(txn.set_durability(durability)?))
            }
            None => Ok(()),
        };
        let started = Instant::now();
        let committed = marked.and_then(|()| Ok(txn.commit()?));
        settle(deferred, committed.is_ok());
        crate::telemetry::record(
            "switchyard_commit_seconds",
            &[("durability", if durable { "immediate" } else { "none" })],
            started.elapsed().as_secs_f64(),
        );
        match committed {
            Ok(()) => {
                if let (Some(wal), Some((through, durability))) = (wal.as_deref_mut(), plan) {
                    match durability {
                        Durability::None => wal.acknowledge(through),
                        _ => wal.checkpointed(),
                    }
                }
                batch.drain(..).for_each(|job| job.complete(Ok(())))
            }
            Err(error) => {
                tracing::error!(%error, "commit failed");
                return fail_batch(batch, error);
            }
        }
        return Ok(());
    }
    Ok(())
}

/// Writes the queue rows held back into the table, in `txn`.
fn flush_deferred(
    txn: &redb::WriteTransaction,
    deferred: Option<&RefCell<DeferredRows>>,
) -> Result<(), StoreError> {
    match deferred {
        Some(deferred) => WriteScope::deferring(txn, deferred).flush_queue(),
        None => Ok(()),
    }
}

/// A commit of the queue rows held back, if any, with `durability`.
fn write_held_rows(
    db: &Database,
    deferred: Option<&RefCell<DeferredRows>>,
    durability: Durability,
) -> Result<(), StoreError> {
    if deferred.is_none_or(|deferred| deferred.borrow().is_empty()) {
        return Ok(());
    }
    let committed = db
        .begin_write()
        .map_err(StoreError::from)
        .and_then(|mut txn| {
            flush_deferred(&txn, deferred)?;
            txn.set_durability(durability)?;
            Ok(txn.commit()?)
        });
    settle(deferred, committed.is_ok());
    committed
}

/// The transaction that changed the rows held back committed, or not.
fn settle(deferred: Option<&RefCell<DeferredRows>>, committed: bool) {
    if let Some(deferred) = deferred {
        let mut deferred = deferred.borrow_mut();
        if committed {
            deferred.committed();
        } else {
            deferred.rolled_back();
        }
    }
}

/// Fails every job with `error`, except on an I/O failure, which comes back
/// as the error with the jobs still waiting.
fn fail_batch(batch: &mut Vec<Box<dyn Job>>, error: StoreError) -> Result<(), StoreError> {
    if error.is_io_failure() {
        return Err(error);
    }
    fail_all(batch, &error);
    Ok(())
}

fn fail_all(batch: &mut Vec<Box<dyn Job>>, error: &StoreError) {
    let message = match error {
        StoreError::Unavailable(message) => message.clone(),
        other => other.to_string(),
    };
    for job in batch.drain(..) {
        job.complete(Err(StoreError::Unavailable(message.clone())));
    }
}

fn metrics_batch_size(size: usize) {
    crate::telemetry::record("switchyard_write_batch_size", &[], size as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FaultSwitch, StoreOptions};
    use redb::{ReadableDatabase, TableDefinition};

    const T: TableDefinition<u64, u64> = TableDefinition::new("t");

    fn put(key: u64) -> WriteOp<()> {
        Box::new(move |scope| {
            scope.txn()?.open_table(T)?.insert(key, key)?;
            Ok(())
        })
    }

    fn stored(slot: &DbSlot, key: u64) -> bool {
        let read = slot.get().unwrap().begin_read().unwrap();
        read.open_table(T).unwrap().get(key).unwrap().is_some()
    }

    #[tokio::test]
    async fn a_failed_commit_stops_writes_until_a_probe_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let switch = FaultSwitch::new();
        let options = StoreOptions {
            faults: Some(switch.clone()),
            ..StoreOptions::default()
        };
        let slot = Arc::new(DbSlot::open(&dir.path().join("db.redb"), options).unwrap());
        let (writer, thread) = Writer::start(slot.clone(), None).unwrap();
        let mut writable = writer.writable();
        writer.write(put(1)).await.unwrap();

        switch.fail_writes(true);
        assert!(matches!(
            writer.write(put(2)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(!*writable.borrow(), "flipped by the failed commit itself");
        assert!(matches!(
            writer.write(put(3)).await,
            Err(StoreError::Unavailable(_))
        ));

        switch.fail_writes(false);
        tokio::time::timeout(Duration::from_secs(20), writable.wait_for(|ok| *ok))
            .await
            .expect("the probe brings writes back")
            .unwrap();
        writer.write(put(4)).await.unwrap();
        assert!(stored(&slot, 1) && stored(&slot, 4));
        assert!(!stored(&slot, 2) && !stored(&slot, 3));

        drop(writer);
        thread.join();
        assert!(!*writable.borrow(), "false once the coordinator stopped");
    }
}
