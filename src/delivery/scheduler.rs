//! The scheduler task. Fairness: each connection has its own lane with an
//! in-flight cap, and entries of a lane at its cap wait in that lane, so one
//! tenant's slow endpoint never holds up anyone else's deliveries. A
//! `Retry-After` pauses only its own connection.

use super::attempt::{self, Finished};
use super::retry::RetryPolicy;
use crate::crypto::MasterKey;
use crate::destinations::Destinations;
use crate::model::{ConnectionId, DeliveryId, now_ms};
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
    /// Due entries held back by the lane's cap, oldest first.
    waiting: VecDeque<QueueEntry>,
    /// No attempts before this time (ms), set by `Retry-After`.
    paused_until: u64,
}

struct Scheduler {
    deps: Arc<EngineDeps>,
    commands: mpsc::UnboundedSender<Command>,
    heap: BinaryHeap<Reverse<QueueEntry>>,
    /// Deliveries in the heap, waiting in a lane or in flight: each at most
    /// once, whatever the sources of its entries.
    known: HashSet<DeliveryId>,
    lanes: HashMap<ConnectionId, Lane>,
    in_flight: usize,
    tasks: TaskTracker,
}

impl Scheduler {
    fn new(deps: Arc<EngineDeps>, commands: mpsc::UnboundedSender<Command>) -> Self {
        Self {
            deps,
            commands,
            heap: BinaryHeap::new(),
            known: HashSet::new(),
            lanes: HashMap::new(),
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
            metrics::gauge!("switchyard_queue_depth").set(self.known.len() as f64);
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
            if self.known.insert(entry.delivery_id) {
                self.heap.push(Reverse(entry));
            }
        }
    }

    /// Starts every due entry its lane and the global cap allow.
    fn dispatch_due(&mut self, now: u64) {
        while self.in_flight < self.deps.max_in_flight {
            let Some(Reverse(entry)) = self.heap.peek().copied() else {
                return;
            };
            if entry.due_ms > now {
                return;
            }
            self.heap.pop();
            let cap = self.deps.max_in_flight_per_connection;
            let lane = self.lanes.entry(entry.connection_id).or_default();
            if lane.paused_until > now {
                let paused_until = lane.paused_until;
                self.heap.push(Reverse(QueueEntry {
                    due_ms: paused_until,
                    ..entry
                }));
            } else if lane.in_flight >= cap {
                lane.waiting.push_back(entry);
            } else {
                self.start(entry);
            }
        }
    }

    fn start(&mut self, entry: QueueEntry) {
        self.lanes.entry(entry.connection_id).or_default().in_flight += 1;
        self.in_flight += 1;
        let deps = self.deps.clone();
        let commands = self.commands.clone();
        self.tasks.spawn(async move {
            let finished = attempt::run(&deps, entry).await;
            let _ = commands.send(Command::Finished(finished));
        });
    }

    fn finish(&mut self, finished: Finished) {
        let entry = finished.entry;
        self.in_flight = self.in_flight.saturating_sub(1);
        self.known.remove(&entry.delivery_id);
        let now = now_ms();
        let lane = self.lanes.entry(entry.connection_id).or_default();
        lane.in_flight = lane.in_flight.saturating_sub(1);
        if let Some(until) = finished.pause_connection_until {
            lane.paused_until = lane.paused_until.max(until);
        }
        if let Some(due_ms) = finished.next_due_ms {
            self.schedule(vec![QueueEntry { due_ms, ..entry }]);
        }
        self.start_waiting(entry.connection_id, now);
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
            let Some(entry) = lane.waiting.pop_front() else {
                if lane.in_flight == 0 && lane.paused_until <= now {
                    self.lanes.remove(&connection);
                }
                return;
            };
            if lane.paused_until > now {
                // Paused while it waited: back to the heap until the pause ends.
                let due_ms = lane.paused_until;
                self.heap.push(Reverse(QueueEntry { due_ms, ..entry }));
                continue;
            }
            self.start(entry);
        }
    }

    /// When the timer should wake the loop: at the next due entry, unless
    /// the global cap is reached (then only a finished attempt helps).
    fn next_wake(&self, now: u64) -> Option<Duration> {
        if self.in_flight >= self.deps.max_in_flight {
            return None;
        }
        let Reverse(next) = self.heap.peek()?;
        Some(Duration::from_millis(next.due_ms.saturating_sub(now)))
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

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}
