//! The write coordinator: one thread owns every redb write transaction and
//! commits whatever is waiting as one durable transaction (group commit).
//!
//! A commit costs one fsync (about 250 µs on the reference VM) whether it
//! holds one record or a thousand, so batching is what lets durable ingest
//! run at HTTP speed. Callers are answered only after their batch committed.

use super::StoreError;
use super::redb_backend::WriteScope;
use redb::Database;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot};

/// Most jobs folded into one transaction; bounds commit latency.
const MAX_BATCH: usize = 4096;
/// Jobs waiting for the writer before senders wait too (back-pressure).
const QUEUE_DEPTH: usize = 16 * 1024;

/// A write run inside the batch transaction. It must check before it writes
/// (an `Ok` result is committed with everything else) and may run more than
/// once: when another job in its batch fails, the batch is rebuilt without
/// that job.
pub type WriteOp<T> = Box<dyn Fn(&mut WriteScope<'_>) -> Result<T, StoreError> + Send>;

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

pub struct WriterThread {
    handle: JoinHandle<()>,
}

impl Writer {
    pub fn start(db: Arc<Database>) -> std::io::Result<(Writer, WriterThread)> {
        let (jobs, receiver) = mpsc::channel(QUEUE_DEPTH);
        let handle = std::thread::Builder::new()
            .name("switchyard-writer".into())
            .spawn(move || run(&db, receiver))?;
        Ok((Writer { jobs }, WriterThread { handle }))
    }

    /// Runs `op` in the next group commit and resolves once it is durable.
    pub async fn write<T: Send + 'static>(&self, op: WriteOp<T>) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            op,
            value: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    pub fn is_running(&self) -> bool {
        !self.jobs.is_closed()
    }
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

trait Job: Send {
    fn apply(&mut self, scope: &mut WriteScope<'_>) -> Result<(), StoreError>;
    fn complete(self: Box<Self>, outcome: Result<(), StoreError>);
}

struct TypedJob<T> {
    op: WriteOp<T>,
    value: Option<T>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Job for TypedJob<T> {
    fn apply(&mut self, scope: &mut WriteScope<'_>) -> Result<(), StoreError> {
        self.value = Some((self.op)(scope)?);
        Ok(())
    }

    fn complete(self: Box<Self>, outcome: Result<(), StoreError>) {
        let TypedJob { op, value, reply } = *self;
        // Dropped before the answer, so what the op shares with its caller
        // is freed on the caller's thread, not on this one.
        drop(op);
        let result = outcome.and_then(|()| value.ok_or(StoreError::WriterStopped));
        // The caller may have gone away (client disconnected); the write
        // stands either way.
        let _ = reply.send(result);
    }
}

fn run(db: &Database, mut receiver: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics_batch_size(batch.len());
        commit_batch(db, &mut batch);
    }
}

/// Applies every job in one transaction and commits. A job that fails is
/// answered with its error and the batch is retried without it, so one bad
/// write never takes its neighbours down.
fn commit_batch(db: &Database, batch: &mut Vec<Box<dyn Job>>) {
    'retry: while !batch.is_empty() {
        let txn = match db.begin_write() {
            Ok(txn) => txn,
            Err(error) => return fail_all(batch, error.into()),
        };
        // The scope (and the tables it keeps open) must be gone before the
        // transaction is committed or aborted.
        let failed = {
            let mut scope = WriteScope::new(&txn);
            (0..batch.len()).find_map(|index| {
                batch[index]
                    .apply(&mut scope)
                    .err()
                    .map(|error| (index, error))
            })
        };
        if let Some((index, error)) = failed {
            if let Err(abort) = txn.abort() {
                tracing::warn!(error = %abort, "aborting a failed write batch");
            }
            // Storage trouble (disk full, I/O) would fail every job the
            // same way: fail the batch at once rather than retry it.
            if matches!(error, StoreError::Storage(_)) {
                tracing::error!(%error, "write batch failed");
                return fail_all(batch, error);
            }
            tracing::warn!(%error, "write rejected; retrying its batch without it");
            batch.remove(index).complete(Err(error));
            continue 'retry;
        }
        let started = std::time::Instant::now();
        let committed = txn.commit();
        metrics::histogram!("switchyard_commit_seconds").record(started.elapsed().as_secs_f64());
        match committed {
            Ok(()) => batch.drain(..).for_each(|job| job.complete(Ok(()))),
            Err(error) => {
                tracing::error!(%error, "commit failed");
                fail_all(batch, error.into());
            }
        }
        return;
    }
}

fn fail_all(batch: &mut Vec<Box<dyn Job>>, error: StoreError) {
    let message = error.to_string();
    for job in batch.drain(..) {
        job.complete(Err(StoreError::Unavailable(message.clone())));
    }
}

fn metrics_batch_size(size: usize) {
    metrics::histogram!("switchyard_write_batch_size").record(size as f64);
}
