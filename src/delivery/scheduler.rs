//! The scheduler task. Fairness: each connection has its own lane with an
//! in-flight cap, and entries of a lane at its cap wait in that lane, so one
//! tenant's slow endpoint never holds up anyone else's deliveries. Each
//! workspace also has a cap across all its connections, so one tenant's
//! many hanging endpoints cannot take every global slot either. A
//! `Retry-After` pauses only its own connection.

use super::attempt::{self, Finished};
use super::retry::RetryPolicy;
use crate::crypto::MasterKey;
use crate::destinations::Destinations;
use crate::model::{ConnectionId, DeliveryId, WorkspaceId, now_ms};
use crate::routing::RuleIndex;
use crate::store::{QueueEntry, Store, StoreError};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What attempts need, shared by all of them.
pub struct EngineDeps {
    pub store: Arc<dyn Store>,
    pub destinations: Arc<Destinations>,
    pub master_key: Arc<MasterKey>,
    pub policy: RetryPolicy,
    pub rule_index: Arc<RuleIndex>,
    pub max_in_flight_per_connection: usize,
    /// Attempts in flight across all of one workspace's connections.
    pub max_in_flight_per_workspace: usize,
    /// Attempts in flight across all connections.
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight attempts to record.
    pub shutdown_grace: Duration,
}

/// A handle to the running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    commands: mpsc::UnboundedSender<Command>,
}

pub(super) enum Command {
    Schedule(Vec<QueueEntry>),
    Finished(Finished),
}

impl Engine {
    /// Loads the queue table and starts the scheduler; the handle resolves
    /// once `shutdown` fired and in-flight attempts were recorded.
    pub fn start(
        deps: EngineDeps,
        shutdown: CancellationToken,
    ) -> Result<(Engine, JoinHandle<()>), StoreError> {
        let queued = deps.store.queue()?;
        let (commands, receiver) = mpsc::unbounded_channel();
        let engine = Engine {
            commands: commands.clone(),
        };
        let mut scheduler = Scheduler::new(Arc::new(deps), commands);
        tracing::info!(queued = queued.len(), "delivery engine starting");
        scheduler.schedule(queued);
        let handle = tokio::spawn(scheduler.run(receiver, shutdown));
        Ok((engine, handle))
    }

    /// Hands newly durable queue entries to the scheduler.
    pub fn schedule(&self, entries: Vec<QueueEntry>) {
        if entries.is_empty() {
            return;
        }
        // After shutdown the entries stay in the queue table and are loaded
        // on the next start.
        let _ = self.commands.send(Command::Schedule(entries));
    }
}

#[derive(Default)]
struct Lane {
    in_flight: usize,
    /// Due entries held back by the lane's or its workspace's cap, oldest
    /// first.
    waiting: VecDeque<QueueEntry>,
    /// No attempts before this time (ms), set by `Retry-After`.
    paused_until: u64,
}

struct Scheduler {
    deps: Arc<EngineDeps>,
    commands: mpsc::UnboundedSender<Command>,
    /// (when to run, entry). The entry's own `due_ms` is its key in the
    /// queue table and never changes here: a pause or a back-off only moves
    /// the run time, so the attempt still recognises its entry.
    heap: BinaryHeap<Reverse<(u64, QueueEntry)>>,
    /// Entries in the heap or waiting in a lane, so a source that repeats
    /// an entry (ingest, requeue, start-up load) adds it once.
    pending: HashSet<(DeliveryId, u64)>,
    /// Deliveries being attempted; another entry of one waits in `deferred`
    /// until the attempt finishes, so a delivery never runs twice at once.
    running: HashSet<DeliveryId>,
    deferred: HashMap<DeliveryId, Vec<QueueEntry>>,
    lanes: HashMap<ConnectionId, Lane>,
    /// Attempts in flight per workspace (only workspaces with some).
    workspaces: HashMap<WorkspaceId, usize>,
    in_flight: usize,
    tasks: TaskTracker,
}

impl Scheduler {
    fn new(deps: Arc<EngineDeps>, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            deps,
            commands,
            heap: BinaryHeap::new(),
            pending: HashSet::new(),
            running: HashSet::new(),
            deferred: HashMap::new(),
            lanes: HashMap::new(),
            workspaces: HashMap::new(),
            in_flight: 0,
            tasks: TaskTracker::new(),
        }
    }

    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        shutdown: CancellationToken,
    ) {
        loop {
            self.dispatch_due(now_ms());
            let depth = self.pending.len() + self.running.len();
            metrics::gauge!("switchyard_queue_depth").set(depth as f64);
            let wake_in = self.next_wake(now_ms());
            tokio::select! {
                _ = shutdown.cancelled() => break,
                command = commands.recv() => match command {
                    Some(Command::Schedule(entries)) => self.schedule(entries),
                    Some(Command::Finished(finished)) => self.finish(finished),
                    None => break,
                },
                _ = sleep_for(wake_in) => {}
            }
        }
        self.drain().await;
    }

    fn schedule(&mut self, entries: Vec<QueueEntry>) {
        for entry in entries {
            if self.pending.insert((entry.delivery_id, entry.due_ms)) {
                self.heap.push(Reverse((entry.due_ms, entry)));
            }
        }
    }

    /// Starts every due entry its lane and the global cap allow.
    fn dispatch_due(&mut self, now: u64) {
        while self.in_flight < self.deps.max_in_flight {
            let Some(Reverse((run_at, entry))) = self.heap.peek().copied() else {
                return;
            };
            if run_at > now {
                return;
            }
            self.heap.pop();
            let Some(entry) = self.defer_if_running(entry) else {
                continue;
            };
            let cap = self.deps.max_in_flight_per_connection;
            let workspace_full = self.workspace_full(entry.workspace_id);
            let lane = self.lanes.entry(entry.connection_id).or_default();
            if lane.paused_until > now {
                let paused_until = lane.paused_until;
                self.heap.push(Reverse((paused_until, entry)));
            } else if lane.in_flight >= cap || workspace_full {
                lane.waiting.push_back(entry);
            } else {
                self.start(entry);
            }
        }
    }

    /// Holds `entry` back while another attempt of its delivery runs (it
    /// goes on when that one finishes); hands it back otherwise.
    fn defer_if_running(&mut self, entry: QueueEntry) -> Option<QueueEntry> {
        if !self.running.contains(&entry.delivery_id) {
            return Some(entry);
        }
        self.deferred
            .entry(entry.delivery_id)
            .or_default()
            .push(entry);
        None
    }

    fn start(&mut self, entry: QueueEntry) {
        self.pending.remove(&(entry.delivery_id, entry.due_ms));
        self.running.insert(entry.delivery_id);
        self.lanes.entry(entry.connection_id).or_default().in_flight += 1;
        *self.workspaces.entry(entry.workspace_id).or_default() += 1;
        self.in_flight += 1;
        let deps = self.deps.clone();
        let guard = FinishGuard {
            commands: self.commands.clone(),
            entry,
            sent: false,
        };
        self.tasks.spawn(async move {
            let finished = attempt::run(&deps, entry).await;
            guard.send(finished);
        });
    }

    fn finish(&mut self, finished: Finished) {
        let entry = finished.entry;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.running.remove(&entry.delivery_id);
        let workspace_was_full = self.workspace_full(entry.workspace_id);
        if let Some(count) = self.workspaces.get_mut(&entry.workspace_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.workspaces.remove(&entry.workspace_id);
            }
        }
        let now = now_ms();
        let lane = self.lanes.entry(entry.connection_id).or_default();
        lane.in_flight = lane.in_flight.saturating_sub(1);
        if let Some(until) = finished.pause_connection_until {
            lane.paused_until = lane.paused_until.max(until);
        }
        if let Some(due_ms) = finished.next_due_ms {
            self.schedule(vec![QueueEntry { due_ms, ..entry }]);
        }
        if let Some(run_at) = finished.rerun_at_ms
            && self.pending.insert((entry.delivery_id, entry.due_ms))
        {
            self.heap.push(Reverse((run_at, entry)));
        }
        for deferred in self.deferred.remove(&entry.delivery_id).unwrap_or_default() {
            self.heap.push(Reverse((now, deferred)));
        }
        if workspace_was_full {
            self.start_held_by_workspace(entry.workspace_id, now);
        }
        // Also forgets the lane once it is idle.
        self.start_waiting(entry.connection_id, now);
    }

    /// A slot of a workspace that was at its cap goes to the lane of that
    /// workspace with the fewest attempts in flight, not to the lane that
    /// just finished: otherwise a hanging endpoint's own backlog would take
    /// every slot it frees, and the workspace's healthy connections would
    /// wait for ever. Scans the lanes only while the workspace is at its
    /// cap.
    fn start_held_by_workspace(&mut self, workspace: WorkspaceId, now: u64) {
        let mut held: Vec<(usize, ConnectionId)> = self
            .lanes
            .iter()
            .filter(|(_, lane)| {
                lane.waiting
                    .front()
                    .is_some_and(|waiting| waiting.workspace_id == workspace)
            })
            .map(|(connection, lane)| (lane.in_flight, *connection))
            .collect();
        held.sort_unstable();
        for (_, connection) in held {
            if self.workspace_full(workspace) {
                break;
            }
            self.start_waiting(connection, now);
        }
    }

    fn workspace_full(&self, workspace: WorkspaceId) -> bool {
        at_cap(
            &self.workspaces,
            workspace,
            self.deps.max_in_flight_per_workspace,
        )
    }

    /// Moves a lane's waiting entries on as its cap frees up.
    fn start_waiting(&mut self, connection: ConnectionId, now: u64) {
        let cap = self.deps.max_in_flight_per_connection;
        loop {
            let Some(lane) = self.lanes.get_mut(&connection) else {
                return;
            };
            if lane.in_flight >= cap || self.in_flight >= self.deps.max_in_flight {
                return;
            }
            if lane.waiting.front().is_some_and(|waiting| {
                at_cap(
                    &self.workspaces,
                    waiting.workspace_id,
                    self.deps.max_in_flight_per_workspace,
                )
            }) {
                return;
            }
            let Some(entry) = lane.waiting.pop_front() else {
                if lane.in_flight == 0 && lane.paused_until <= now {
                    self.lanes.remove(&connection);
                }
                return;
            };
            if lane.paused_until > now {
                // Paused while it waited: back to the heap until the pause ends.
                let paused_until = lane.paused_until;
                self.heap.push(Reverse((paused_until, entry)));
                continue;
            }
            if let Some(entry) = self.defer_if_running(entry) {
                self.start(entry);
            }
        }
    }

    /// When the timer should wake the loop: at the next due entry, unless
    /// the global cap is reached (then only a finished attempt helps).
    fn next_wake(&self, now: u64) -> Option<Duration> {
        if self.in_flight >= self.deps.max_in_flight {
            return None;
        }
        let Reverse((run_at, _)) = self.heap.peek()?;
        Some(Duration::from_millis(run_at.saturating_sub(now)))
    }

    async fn drain(self) {
        self.tasks.close();
        if tokio::time::timeout(self.deps.shutdown_grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "in-flight deliveries did not finish within the shutdown grace; \
                 they stay queued and run after the next start"
            );
        }
    }
}

/// Reports an attempt's end to the scheduler even if the attempt panicked,
/// so its lane and global slots are never lost.
struct FinishGuard {
    commands: mpsc::UnboundedSender<Command>,
    entry: QueueEntry,
    sent: bool,
}

impl FinishGuard {
    fn send(mut self, finished: Finished) {
        self.sent = true;
        let _ = self.commands.send(Command::Finished(finished));
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if !self.sent {
            tracing::error!(delivery = %self.entry.delivery_id, "an attempt ended abnormally; it will run again");
            let _ = self
                .commands
                .send(Command::Finished(Finished::again_later(self.entry)));
        }
    }
}

fn at_cap(counts: &HashMap<WorkspaceId, usize>, workspace: WorkspaceId, cap: usize) -> bool {
    counts.get(&workspace).is_some_and(|count| *count >= cap)
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
