//! The group-commit writer that ingest (`ingest.rs`) and attempt outcomes
//! (`outcomes.rs`) share.
//!
//! Why: a PostgreSQL commit costs a WAL flush plus round trips, so one
//! transaction per request would cap writes at the flush rate. One writer
//! task a kind takes whatever jobs are waiting (up to the kind's
//! [`GroupCommit::MAX_JOBS`]), commits them in one transaction and only then
//! answers each caller.
//!
//! If the group's transaction fails for a reason other than the connection,
//! each job is committed again alone, so one bad job fails only itself. A
//! connection failure fails the whole group: nothing would get through
//! alone either. What a kind commits, and how, is its [`GroupCommit`].

use super::error::{PgError, PgResult};
use super::health::Health;
use crate::store::StoreError;
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// What differs between the kinds a [`GroupWriter`] commits.
pub trait GroupCommit: Send + Sync + 'static {
    /// One caller's request.
    type Job: Send + Sync + 'static;
    /// What the caller hears back when its job is committed.
    type Answer: Send + 'static;

    /// Most jobs one transaction carries.
    const MAX_JOBS: usize = 1024;
    /// Jobs waiting for the writer; senders wait when it is full.
    const CHANNEL_CAPACITY: usize = 4096;
    /// The histogram of group sizes.
    const BATCH_SIZE_METRIC: &'static str;
    /// The histogram of the time a group takes to commit (with its
    /// job-by-job retry), for the kinds that measure it.
    const COMMIT_SECONDS_METRIC: Option<&'static str> = None;

    /// Commits the jobs in one transaction; one answer per job, in order.
    fn commit_group(
        &self,
        jobs: &[&Self::Job],
    ) -> impl Future<Output = PgResult<Vec<Self::Answer>>> + Send;

    /// Commits one job in its own transaction, after its group failed.
    fn commit_alone(&self, job: &Self::Job) -> impl Future<Output = PgResult<Self::Answer>> + Send;

    /// What the caller of a group of one job hears when that group fails
    /// (the error as the health watch observed it). Differs on purpose per
    /// kind. Jobs committed alone after a larger group failed hear the
    /// observed error whatever the kind.
    fn lone_group_failed(observed: StoreError) -> StoreError;

    /// Logs a failed group before its jobs are committed alone; the kind
    /// logs it so the line keeps the kind's module as its target.
    fn log_group_failed(error: &PgError, jobs: usize);

    /// Whether the jobs may share one transaction; when not, each is
    /// committed alone straight away, without a log line.
    fn may_group(_jobs: &[&Self::Job]) -> bool {
        true
    }
}

/// The handle callers use; the writer task ends when every handle is gone.
pub struct GroupWriter<C: GroupCommit> {
    jobs: mpsc::Sender<Waiting<C>>,
}

// Not derived: a derive would ask for `C: Clone`, and the handle clones
// whatever the kind is.
impl<C: GroupCommit> Clone for GroupWriter<C> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
        }
    }
}

impl<C: GroupCommit> GroupWriter<C> {
    /// Starts the writer task; after `close` is cancelled it commits what
    /// is queued, refuses the rest and ends.
    pub fn start(
        kind: C,
        health: Arc<Health>,
        close: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (jobs, receiver) = mpsc::channel(C::CHANNEL_CAPACITY);
        let task = tokio::spawn(run(kind, health, receiver, close));
        (Self { jobs }, task)
    }

    /// Queues the job and waits until its group is committed.
    pub async fn submit(&self, job: C::Job) -> Result<C::Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Waiting { job, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }
}

struct Waiting<C: GroupCommit> {
    job: C::Job,
    reply: oneshot::Sender<Result<C::Answer, StoreError>>,
}

async fn run<C: GroupCommit>(
    kind: C,
    health: Arc<Health>,
    mut receiver: mpsc::Receiver<Waiting<C>>,
    close: CancellationToken,
) {
    let mut group = Vec::with_capacity(C::MAX_JOBS);
    loop {
        let received = tokio::select! {
            received = receiver.recv_many(&mut group, C::MAX_JOBS) => received,
            () = close.cancelled(), if !receiver.is_closed() => {
                // New jobs are refused from now on; those already queued
                // are still committed below.
                receiver.close();
                continue;
            }
        };
        if received == 0 {
            return;
        }
        let waiting = std::mem::take(&mut group);
        let jobs: Vec<&C::Job> = waiting.iter().map(|waiting| &waiting.job).collect();
        metrics::histogram!(C::BATCH_SIZE_METRIC).record(jobs.len() as f64);
        let started = std::time::Instant::now();
        let answers = commit(&kind, &health, &jobs).await;
        if let Some(name) = C::COMMIT_SECONDS_METRIC {
            metrics::histogram!(name).record(started.elapsed().as_secs_f64());
        }
        for (waiting, answer) in waiting.into_iter().zip(answers) {
            // A caller that went away (timed out) no longer needs its answer.
            let _ = waiting.reply.send(answer);
        }
    }
}

/// The group's answers, one per job, in order.
async fn commit<C: GroupCommit>(
    kind: &C,
    health: &Arc<Health>,
    jobs: &[&C::Job],
) -> Vec<Result<C::Answer, StoreError>> {
    if !C::may_group(jobs) {
        return commit_each_alone(kind, health, jobs).await;
    }
    match kind.commit_group(jobs).await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(error) if jobs.len() > 1 && !error.is_connection_failure() => {
            C::log_group_failed(&error, jobs.len());
            commit_each_alone(kind, health, jobs).await
        }
        Err(error) if jobs.len() == 1 => vec![Err(C::lone_group_failed(health.observe(error)))],
        Err(error) => {
            let message = health.observe(error).to_string();
            (0..jobs.len())
                .map(|_| Err(StoreError::Unavailable(message.clone())))
                .collect()
        }
    }
}

/// Each job in its own transaction: the group's fallback.
async fn commit_each_alone<C: GroupCommit>(
    kind: &C,
    health: &Arc<Health>,
    jobs: &[&C::Job],
) -> Vec<Result<C::Answer, StoreError>> {
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        let alone = kind.commit_alone(job).await;
        answers.push(alone.map_err(|error| health.observe(error)));
    }
    answers
}

#[cfg(test)]
mod tests {
    //! The writer's answers with a kind that needs no database: its jobs
    //! are numbers, and job 0 fails every transaction it is in.

    use super::*;
    use crate::store::postgres::error::corrupt;
    use std::sync::Mutex;

    /// A transaction the writer asked for: its jobs, and whether they were
    /// committed alone after their group failed.
    type Call = (Vec<u32>, bool);

    /// Records each transaction it is asked for.
    #[derive(Clone, Default)]
    struct Numbers {
        calls: Arc<Mutex<Vec<Call>>>,
    }

    impl Numbers {
        fn called(&self, jobs: Vec<u32>, alone: bool) {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push((jobs, alone));
            }
        }
    }

    impl GroupCommit for Numbers {
        type Job = u32;
        type Answer = u32;

        const MAX_JOBS: usize = 8;
        const CHANNEL_CAPACITY: usize = 8;
        const BATCH_SIZE_METRIC: &'static str = "test_batch_size";

        async fn commit_group(&self, jobs: &[&u32]) -> PgResult<Vec<u32>> {
            self.called(jobs.iter().map(|job| **job).collect(), false);
            if jobs.contains(&&0) {
                return Err(corrupt("group with job 0"));
            }
            Ok(jobs.iter().map(|job| *job * 10).collect())
        }

        async fn commit_alone(&self, job: &u32) -> PgResult<u32> {
            self.called(vec![*job], true);
            if *job == 0 {
                return Err(corrupt("job 0"));
            }
            Ok(job * 10)
        }

        fn lone_group_failed(observed: StoreError) -> StoreError {
            StoreError::Unavailable(observed.to_string())
        }

        fn log_group_failed(_error: &PgError, _jobs: usize) {}
    }

    /// A pool that is never connected: the kind's errors are not
    /// connection failures, so the health watch never probes.
    fn health() -> Arc<Health> {
        let manager =
            deadpool_postgres::Manager::new(tokio_postgres::Config::new(), tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager)
            .build()
            .expect("a pool builds without connecting");
        Health::new(pool)
    }

    #[tokio::test]
    async fn a_failed_group_is_retried_job_by_job_and_a_failed_lone_job_hears_its_kind() {
        let kind = Numbers::default();
        let (writer, task) = GroupWriter::start(kind.clone(), health(), CancellationToken::new());

        // Sent at once, the three are found waiting by the writer (the
        // test's runtime has one thread) and taken as one group.
        let answers = futures::future::join_all([1, 0, 2].map(|job| writer.submit(job))).await;
        assert!(matches!(answers[0], Ok(10)), "{:?}", answers[0]);
        assert!(
            matches!(&answers[1], Err(StoreError::Corrupt(message)) if message == "job 0"),
            "committed alone, the bad job hears its own error: {:?}",
            answers[1]
        );
        assert!(matches!(answers[2], Ok(20)), "{:?}", answers[2]);

        let alone = writer.submit(0).await;
        assert!(
            matches!(&alone, Err(StoreError::Unavailable(message)) if message.contains("group with job 0")),
            "a group of one that fails is answered by the kind: {alone:?}"
        );

        let calls = kind
            .calls
            .lock()
            .map(|calls| calls.clone())
            .unwrap_or_default();
        assert_eq!(
            calls,
            [
                (vec![1, 0, 2], false),
                (vec![1], true),
                (vec![0], true),
                (vec![2], true),
                (vec![0], false),
            ]
        );
        drop(writer);
        task.await
            .expect("the writer ends once every handle is gone");
    }
}
