//! The scheduler task: a bounded window over the durable queue.
//!
//! The queue table holds the whole backlog; memory holds at most
//! `queue_window` of its entries, plus the attempts in flight. Everything in
//! memory can be dropped and read again: the table is the truth.
//!
//! Invariants:
//!
//! - **Per-connection order.** A connection's entries are held in its lane
//!   in queue-key order (due time, delivery id) and started front first. A
//!   lane that does not hold all of its connection's entries is
//!   *incomplete*: it holds a prefix, up to its `frontier` (the first key it
//!   does not hold), and admits nothing at or past it, so a later entry
//!   never overtakes one still on disk. Refills read on from the frontier.
//! - **A fair window.** When the window is full, an entry for a lane takes
//!   the place of the biggest lane's last entry (which stays on disk), and a
//!   refill gives each connection with a backlog at most its share (the
//!   window divided among them). A connection that hangs or is paused thus
//!   holds its share at most, and its backlog cannot starve anyone else.
//! - **Fair slots.** Each connection has an in-flight cap, each workspace a
//!   cap across its connections (a freed slot goes to its lane with the
//!   fewest attempts in flight, not to a hanging endpoint's backlog), and
//!   there is a global cap. `Retry-After` pauses only its own connection.
//!   A slot is held while the attempt's request is open: it is freed when
//!   the answer is in (`Report::Answered`), not when the outcome is durable
//!   (`Report::Finished`), so a connection's next request need not wait for
//!   a log sync. The delivery stays in `running` until it finishes; a
//!   connection has at most twice its cap of attempts not finished, and the
//!   global cap counts every attempt until it finishes, so outcomes waiting
//!   for a slow disk cannot pile up.
//! - **Refills** read the first entry of every connection's queue (one seek
//!   each), then top up incomplete lanes, oldest first. They run at start,
//!   when an incomplete lane has drained to half its share, and every few
//!   seconds as a safety net; consecutive refills are spaced by ten times
//!   the last one's cost, so a huge number of connections cannot make them
//!   eat the CPU.
//! - **Storage trouble pauses the engine**: nothing is dispatched while the
//!   store refuses writes, since no outcome could be recorded.
//! - **Only this node's connections.** On a queue shared by several nodes
//!   (PostgreSQL) a node delivers only the connections whose lease it holds
//!   (`Store::may_deliver`): an entry of another node's connection is never
//!   admitted, and a lane whose lease ran short before its front entry
//!   started goes back to disk whole. So order, caps and pauses, all kept
//!   per connection, hold across nodes. Refills claim unowned connections
//!   (`Store::queue_heads`), run when the store says another node queued
//!   entries for one of ours (`Store::queue_wakeups`), and at least every
//!   second on a shared queue. A single-node store says yes to everything
//!   and has no wake-ups: nothing changes for it.

use super::attempt::{self, Answered, Finished, Report};
use super::retry::RetryPolicy;
use super::warm::{self, WarmContext, WarmContexts};
use crate::crypto::MasterKey;
use crate::destinations::Destinations;
use crate::model::{ConnectionId, DeliveryId, IdMap, WorkspaceId, now_ms};
use crate::routing::RuleIndex;
use crate::store::{LaneRead, QueueEntry, QueueHeads, QueueKey, Store, StoreError, StoreFuture};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
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
    /// Queue entries held in memory, in flight not counted.
    pub queue_window: usize,
    /// How long shutdown waits for in-flight attempts to record.
    pub shutdown_grace: Duration,
}

/// A handle to the running engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    schedule: mpsc::Sender<Vec<QueueEntry>>,
    window: Arc<WindowStats>,
    warm: Arc<WarmContexts>,
}

/// The window as the scheduler last published it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct WindowSnapshot {
    /// `delivery.queue_window`.
    pub window: usize,
    /// Queue entries held in memory now.
    pub in_memory: usize,
    /// The most ever held in memory since start.
    pub peak_in_memory: usize,
    /// Attempts running now.
    pub in_flight: usize,
    /// Connections the scheduler keeps a lane for.
    pub lanes: usize,
}

#[derive(Default)]
struct WindowStats {
    in_memory: AtomicUsize,
    peak_in_memory: AtomicUsize,
    in_flight: AtomicUsize,
    lanes: AtomicUsize,
}

/// Batches of new entries waiting for the scheduler before senders wait
/// too. Each batch is one request's worth, so this bounds memory and makes
/// ingest wait (briefly, during a refill) rather than pile up.
const SCHEDULE_CHANNEL: usize = 256;
/// Messages of each kind taken after the one a pass woke for.
const READY_PER_PASS: usize = 256;
/// A refill runs at least this often: it publishes the backlog metrics and
/// catches anything a lane missed.
const PERIODIC_REFILL: Duration = Duration::from_secs(5);
/// On a queue shared by nodes, also how long an entry another node queued
/// waits at most when its wake-up was lost, and how soon an unowned
/// connection (its node died) is claimed after its lease ends.
const SHARED_QUEUE_REFILL: Duration = Duration::from_secs(1);
/// Least gap between two refills, and how many times its own cost the gap
/// after a refill is at least.
const MIN_REFILL_GAP: Duration = Duration::from_millis(20);
const REFILL_GAP_FACTOR: u32 = 10;
/// Entries due further ahead than this stay on disk: a retry due in hours
/// must not hold window space that entries due now need. Refills (every
/// few seconds at least) read them in well before they are due.
const LOOKAHEAD_MS: u64 = 60_000;
/// A connection's attempts not finished yet, per slot of its cap: its open
/// requests plus those writing their outcome (see `Lane::running`).
const RUNNING_PER_SLOT: usize = 2;

impl Engine {
    /// Reads the first window of the queue and starts the scheduler; the
    /// handle resolves once `shutdown` fired and in-flight attempts were
    /// recorded.
    pub async fn start(
        deps: EngineDeps,
        shutdown: CancellationToken,
    ) -> Result<(Engine, JoinHandle<()>), StoreError> {
        let (schedule, schedule_rx) = mpsc::channel(SCHEDULE_CHANNEL);
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let window = Arc::new(WindowStats::default());
        let mut scheduler = Scheduler::new(Arc::new(deps), reports, window.clone());
        let warm = scheduler.warm.clone();
        let heads = scheduler.refill().await?;
        scheduler.publish_window_metrics();
        tracing::info!(
            queued = heads.backlog,
            in_memory = scheduler.held,
            "delivery engine starting"
        );
        let handle = tokio::spawn(scheduler.run(schedule_rx, reports_rx, shutdown));
        Ok((
            Engine {
                schedule,
                window,
                warm,
            },
            handle,
        ))
    }

    /// The scheduler's window, as last published (at every turn of its
    /// loop).
    pub fn window(&self, size: usize) -> WindowSnapshot {
        WindowSnapshot {
            window: size,
            in_memory: self.window.in_memory.load(Ordering::Relaxed),
            peak_in_memory: self.window.peak_in_memory.load(Ordering::Relaxed),
            in_flight: self.window.in_flight.load(Ordering::Relaxed),
            lanes: self.window.lanes.load(Ordering::Relaxed),
        }
    }

    /// Where ingest keeps new deliveries' contexts for their first attempt
    /// (`warm.rs`); disabled on a queue shared by several nodes.
    pub fn warm_contexts(&self) -> &WarmContexts {
        &self.warm
    }

    /// Hands newly durable queue entries to the scheduler; waits while it
    /// is busy with a full channel.
    pub async fn schedule(&self, entries: Vec<QueueEntry>) {
        if entries.is_empty() {
            return;
        }
        // After shutdown the entries stay in the queue table and are read
        // on the next start.
        let _ = self.schedule.send(entries).await;
    }

    /// Awaits `write`, then hands the queue entries `queued` finds in its
    /// result to the scheduler, in a task of its own: a caller that goes
    /// away meanwhile (a client that disconnects) cannot drop the handoff
    /// of entries that are already durable.
    pub async fn write_then_schedule<T: Send + 'static>(
        &self,
        write: StoreFuture<T>,
        queued: impl FnOnce(&T) -> Vec<QueueEntry> + Send + 'static,
    ) -> Result<T, StoreError> {
        let engine = self.clone();
        tokio::spawn(async move {
            let written = write.await?;
            engine.schedule(queued(&written)).await;
            Ok(written)
        })
        .await
        .map_err(|error| StoreError::Unavailable(error.to_string()))?
    }
}

/// An attempt in flight.
struct Running {
    /// The due time of the entry that runs.
    due_ms: u64,
    /// Its request is not answered yet: it holds a slot of its connection
    /// and of its workspace. The slot is freed when the answer is in,
    /// before the outcome is durable, so a connection's next request need
    /// not wait for a log sync.
    holds_slot: bool,
}

/// One connection's part of the window.
struct Lane {
    workspace: WorkspaceId,
    /// Entries held in memory, in queue order.
    held: BTreeSet<QueueKey>,
    /// Attempts whose request is open (the cap is on these).
    in_flight: usize,
    /// Attempts not finished yet, open or writing their outcome: at most
    /// twice the cap, so outcomes waiting for a slow disk cannot pile up.
    running: usize,
    /// No attempts before this time (ms), set by `Retry-After`.
    paused_until: u64,
    /// The first key this lane does not hold when its connection has more
    /// entries on disk than in memory; `None` when it holds them all.
    frontier: Option<QueueKey>,
    /// Waiting for a slot of its workspace.
    parked: bool,
    /// Its key in `Scheduler::ready`, if it is there.
    ready_at: Option<u64>,
}

impl Lane {
    fn new(workspace: WorkspaceId) -> Self {
        Self {
            workspace,
            held: BTreeSet::new(),
            in_flight: 0,
            running: 0,
            paused_until: 0,
            frontier: None,
            parked: false,
            ready_at: None,
        }
    }

    fn holds_everything_before(&self, key: QueueKey) -> bool {
        self.frontier.is_none_or(|frontier| key < frontier)
    }
}

struct Scheduler {
    deps: Arc<EngineDeps>,
    reports: mpsc::UnboundedSender<Report>,
    lanes: IdMap<ConnectionId, Lane>,
    /// Lanes that can start their front entry, by when it can run.
    ready: BTreeSet<(u64, ConnectionId)>,
    /// Lanes by how many entries they hold (lanes holding none are left
    /// out), to find the biggest.
    sizes: BTreeSet<(usize, ConnectionId)>,
    /// Entries in memory: held in lanes or deferred.
    held: usize,
    /// The most `held` ever was.
    peak_held: usize,
    stats: Arc<WindowStats>,
    /// Deliveries being attempted: another entry of one waits in
    /// `deferred` until the attempt finishes, so a delivery never runs
    /// twice at once.
    running: IdMap<DeliveryId, Running>,
    deferred: IdMap<DeliveryId, Vec<QueueEntry>>,
    /// Attempts in flight per workspace (only workspaces with some).
    workspaces: IdMap<WorkspaceId, usize>,
    /// Lanes waiting for a slot of their workspace, by workspace.
    parked: HashMap<WorkspaceId, HashSet<ConnectionId>>,
    in_flight: usize,
    /// The store accepts writes (nothing starts while it does not).
    storage_ok: bool,
    refill: RefillTiming,
    tasks: TaskTracker,
    /// First attempts' contexts kept by ingest.
    warm: Arc<WarmContexts>,
    /// `switchyard_queue_window_entries` and `switchyard_deliveries_in_flight`,
    /// looked up once: they are set after every message.
    window_gauges: (metrics::Gauge, metrics::Gauge),
}

/// When the next refill may and must run.
struct RefillTiming {
    /// An incomplete lane ran low.
    wanted: bool,
    /// The last refill ran out of room before every lane had its share.
    starved: bool,
    /// Not before this time (ms).
    not_before: u64,
    /// At the latest at this time (ms).
    due: u64,
    /// Each connection's share of the window, as of the last refill.
    share: usize,
    /// The longest time between two refills.
    periodic: Duration,
}

impl Scheduler {
    fn new(
        deps: Arc<EngineDeps>,
        reports: mpsc::UnboundedSender<Report>,
        stats: Arc<WindowStats>,
    ) -> Self {
        let share = deps.queue_window;
        let shared_queue = deps.store.queue_wakeups().is_some();
        let periodic = if shared_queue {
            SHARED_QUEUE_REFILL
        } else {
            PERIODIC_REFILL
        };
        // Another node's changes reach this one late: its rule index may be
        // current for a while after a change, so nothing is kept from ingest.
        let warm_entries = if shared_queue {
            0
        } else {
            deps.queue_window.min(warm::MAX_ENTRIES)
        };
        let warm = Arc::new(WarmContexts::new(warm_entries, warm::MAX_BYTES));
        Self {
            deps,
            reports,
            lanes: IdMap::default(),
            ready: BTreeSet::new(),
            sizes: BTreeSet::new(),
            held: 0,
            peak_held: 0,
            stats,
            running: IdMap::default(),
            deferred: IdMap::default(),
            workspaces: IdMap::default(),
            parked: HashMap::new(),
            in_flight: 0,
            storage_ok: true,
            refill: RefillTiming {
                wanted: false,
                starved: false,
                not_before: 0,
                due: 0,
                share,
                periodic,
            },
            tasks: TaskTracker::new(),
            warm,
            window_gauges: (
                metrics::gauge!("switchyard_queue_window_entries"),
                metrics::gauge!("switchyard_deliveries_in_flight"),
            ),
        }
    }

    async fn run(
        mut self,
        mut schedule: mpsc::Receiver<Vec<QueueEntry>>,
        mut reports: mpsc::UnboundedReceiver<Report>,
        shutdown: CancellationToken,
    ) {
        let mut writable = self.deps.store.writable();
        let mut wakeups = self.deps.store.queue_wakeups();
        loop {
            let storage_ok = *writable.borrow_and_update();
            if storage_ok && !self.storage_ok {
                self.storage_ok = true;
                // Slots freed while storage failed were not handed on.
                let waiting: Vec<WorkspaceId> = self.parked.keys().copied().collect();
                for workspace in waiting {
                    self.start_parked(workspace);
                }
            }
            self.storage_ok = storage_ok;
            if storage_ok {
                let now = now_ms();
                if self.refill_is_due(now)
                    && let Err(error) = self.refill().await
                {
                    tracing::warn!(%error, "cannot read the delivery queue");
                    let later = now_ms() + self.refill.periodic.as_millis() as u64;
                    self.refill.not_before = later;
                    self.refill.due = later;
                }
                self.dispatch_due(now_ms());
            }
            self.publish_window_metrics();
            let wake_in = if storage_ok {
                self.next_wake(now_ms())
            } else {
                None
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(report) = reports.recv() => self.report(report),
                Some(entries) = schedule.recv() => {
                    for entry in entries {
                        self.admit(entry);
                    }
                }
                Ok(()) = writable.changed() => {}
                Some(()) = next_wakeup(&mut wakeups) => self.refill.wanted = true,
                _ = sleep_for(wake_in) => {}
            }
            // Whatever else is ready is taken too, so that one pass of
            // dispatching (and one timer) serves them all.
            for _ in 0..READY_PER_PASS {
                match reports.try_recv() {
                    Ok(report) => self.report(report),
                    Err(_) => break,
                }
            }
            for _ in 0..READY_PER_PASS {
                match schedule.try_recv() {
                    Ok(entries) => entries.into_iter().for_each(|entry| self.admit(entry)),
                    Err(_) => break,
                }
            }
        }
        self.drain().await;
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Answered {
                entry,
                pause_connection_until,
            } => self.answered(entry, pause_connection_until),
            Report::Finished(done) => self.finish(done),
        }
    }

    /// Takes `entry` into its lane if the window has room for it, or makes
    /// room by dropping the biggest lane's last entry; otherwise leaves it
    /// on disk for a refill. Entries already in memory are ignored.
    fn admit(&mut self, entry: QueueEntry) {
        let connection = entry.connection_id;
        let key = entry.key();
        if self.runs(&entry) {
            return; // The entry of an attempt in flight.
        }
        if self
            .deferred
            .get(&entry.delivery_id)
            .is_some_and(|waiting| waiting.iter().any(|other| other.key() == key))
        {
            return;
        }
        if !self.deps.store.may_deliver(connection) {
            // Another node delivers this connection (or this node's lease
            // is too short to start anything): the entry waits on disk.
            self.truncate(connection, key);
            return;
        }
        let lane = self
            .lanes
            .entry(connection)
            .or_insert_with(|| Lane::new(entry.workspace_id));
        if lane.held.contains(&key) || !lane.holds_everything_before(key) {
            return;
        }
        if entry.due_ms > now_ms().saturating_add(LOOKAHEAD_MS) {
            // Not due for a while: it waits on disk for a refill.
            self.truncate(connection, key);
            return;
        }
        if self.held >= self.deps.queue_window {
            let own = lane.held.len();
            match self.sizes.last().copied() {
                Some((biggest, other)) if other != connection && biggest > own + 1 => {
                    if let Some(last) = self.lanes.get(&other).and_then(|l| l.held.last()) {
                        let last = *last;
                        self.truncate(other, last);
                    }
                }
                _ => {
                    self.truncate(connection, key);
                    return;
                }
            }
        }
        self.hold(connection, key);
        self.arm(connection);
    }

    fn hold(&mut self, connection: ConnectionId, key: QueueKey) {
        let Some(lane) = self.lanes.get_mut(&connection) else {
            return;
        };
        let before = lane.held.len();
        if lane.held.insert(key) {
            self.held += 1;
            self.peak_held = self.peak_held.max(self.held);
            resize(&mut self.sizes, connection, before, before + 1);
        }
    }

    /// Leaves `from` and every held entry after it on disk: the lane now
    /// holds only what comes before.
    fn truncate(&mut self, connection: ConnectionId, from: QueueKey) {
        let Some(lane) = self.lanes.get_mut(&connection) else {
            return;
        };
        let before = lane.held.len();
        lane.frontier = Some(lane.frontier.map_or(from, |frontier| frontier.min(from)));
        let dropped = lane.held.split_off(&from).len();
        self.held -= dropped;
        resize(&mut self.sizes, connection, before, before - dropped);
        if before == dropped {
            self.refill.wanted = true;
            self.arm(connection);
        }
    }

    /// Starts due entries in the order they can run, as the caps allow.
    fn dispatch_due(&mut self, now: u64) {
        while self.in_flight < self.deps.max_in_flight {
            let Some(&(run_at, connection)) = self.ready.first() else {
                return;
            };
            if run_at > now {
                return;
            }
            self.ready.pop_first();
            if let Some(lane) = self.lanes.get_mut(&connection) {
                lane.ready_at = None;
            }
            self.run_lane(connection, now);
        }
    }

    /// Starts the lane's front entry if it is due and the caps allow, then
    /// puts the lane back in line for its next one.
    fn run_lane(&mut self, connection: ConnectionId, now: u64) {
        let cap = self.deps.max_in_flight_per_connection;
        let workspace_cap = self.deps.max_in_flight_per_workspace;
        loop {
            let Some(lane) = self.lanes.get_mut(&connection) else {
                return;
            };
            let Some(&front) = lane.held.first() else {
                return;
            };
            if lane.in_flight >= cap || lane.running >= RUNNING_PER_SLOT * cap {
                return; // Its next answer or finish puts it back in line.
            }
            if front.0 > now || lane.paused_until > now {
                break;
            }
            if !self.deps.store.may_deliver(connection) {
                // The lease is gone or too short for an attempt: the lane
                // goes back to disk; a refill reads it again while the
                // connection is still this node's.
                self.truncate(connection, front);
                break;
            }
            if at_cap(&self.workspaces, lane.workspace, workspace_cap) {
                lane.parked = true;
                let workspace = lane.workspace;
                self.parked.entry(workspace).or_default().insert(connection);
                break;
            }
            let workspace = lane.workspace;
            self.take(connection, front);
            let entry = QueueEntry {
                due_ms: front.0,
                delivery_id: front.1,
                workspace_id: workspace,
                connection_id: connection,
            };
            if self.running.contains_key(&entry.delivery_id) {
                self.deferred
                    .entry(entry.delivery_id)
                    .or_default()
                    .push(entry);
                self.held += 1;
                continue;
            }
            self.start(entry);
            break;
        }
        self.arm(connection);
    }

    /// Removes `key` from the lane's held entries (it starts, or waits for
    /// its delivery's running attempt).
    fn take(&mut self, connection: ConnectionId, key: QueueKey) {
        let Some(lane) = self.lanes.get_mut(&connection) else {
            return;
        };
        let before = lane.held.len();
        if !lane.held.remove(&key) {
            return;
        }
        self.held -= 1;
        resize(&mut self.sizes, connection, before, before - 1);
        let lane_ran_low = lane.frontier.is_some() && lane.held.len() <= self.refill.share / 2;
        let window_freed = self.refill.starved && self.held <= self.deps.queue_window * 3 / 4;
        if lane_ran_low || window_freed {
            self.refill.wanted = true;
        }
    }

    /// Puts the lane in line at the time its front entry can run, unless a
    /// cap holds it (a finished attempt puts it back then).
    fn arm(&mut self, connection: ConnectionId) {
        let cap = self.deps.max_in_flight_per_connection;
        let Some(lane) = self.lanes.get_mut(&connection) else {
            return;
        };
        if let Some(at) = lane.ready_at.take() {
            self.ready.remove(&(at, connection));
        }
        if lane.parked || lane.in_flight >= cap || lane.running >= RUNNING_PER_SLOT * cap {
            return;
        }
        if let Some(&(due, _)) = lane.held.first() {
            let at = due.max(lane.paused_until);
            lane.ready_at = Some(at);
            self.ready.insert((at, connection));
        }
    }

    fn start(&mut self, entry: QueueEntry) {
        self.running.insert(
            entry.delivery_id,
            Running {
                due_ms: entry.due_ms,
                holds_slot: true,
            },
        );
        if let Some(lane) = self.lanes.get_mut(&entry.connection_id) {
            lane.in_flight += 1;
            lane.running += 1;
        }
        *self.workspaces.entry(entry.workspace_id).or_default() += 1;
        self.in_flight += 1;
        let deps = self.deps.clone();
        let guard = FinishGuard {
            reports: self.reports.clone(),
            entry,
            sent: false,
        };
        let answered = Answered::new(self.reports.clone(), entry);
        let warm: Option<WarmContext> = self.warm.take(entry.delivery_id);
        self.tasks.spawn(async move {
            let finished = attempt::run(&deps, entry, warm, answered).await;
            guard.send(finished);
        });
    }

    /// The attempt's request was answered: its connection's and workspace's
    /// slots are free (its global one when it finishes).
    fn answered(&mut self, entry: QueueEntry, pause_connection_until: Option<u64>) {
        if let Some(running) = self.running.get_mut(&entry.delivery_id)
            && std::mem::take(&mut running.holds_slot)
        {
            self.free_slot(entry, pause_connection_until);
        }
    }

    /// `entry` itself is the one running (not another of its delivery).
    fn runs(&self, entry: &QueueEntry) -> bool {
        self.running
            .get(&entry.delivery_id)
            .is_some_and(|running| running.due_ms == entry.due_ms)
    }

    fn free_slot(&mut self, entry: QueueEntry, pause_connection_until: Option<u64>) {
        let connection = entry.connection_id;
        let workspace_was_full = self.workspace_full(entry.workspace_id);
        if let Some(count) = self.workspaces.get_mut(&entry.workspace_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.workspaces.remove(&entry.workspace_id);
            }
        }
        let lane = self
            .lanes
            .entry(connection)
            .or_insert_with(|| Lane::new(entry.workspace_id));
        lane.in_flight = lane.in_flight.saturating_sub(1);
        if let Some(until) = pause_connection_until {
            lane.paused_until = lane.paused_until.max(until);
        }
        if workspace_was_full {
            self.start_parked(entry.workspace_id);
        }
        self.arm(connection);
    }

    fn finish(&mut self, finished: Finished) {
        let entry = finished.entry;
        let connection = entry.connection_id;
        if self
            .running
            .remove(&entry.delivery_id)
            .is_some_and(|running| running.holds_slot)
        {
            self.free_slot(entry, finished.pause_connection_until);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let lane = self
            .lanes
            .entry(connection)
            .or_insert_with(|| Lane::new(entry.workspace_id));
        lane.running = lane.running.saturating_sub(1);
        if let Some(run_at) = finished.rerun_at_ms {
            // Nothing was recorded: the same entry runs again after a pause.
            lane.paused_until = lane.paused_until.max(run_at);
            self.admit(entry);
        }
        if let Some(due_ms) = finished.next_due_ms {
            self.admit(QueueEntry { due_ms, ..entry });
        }
        for waiting in self.deferred.remove(&entry.delivery_id).unwrap_or_default() {
            self.held -= 1;
            self.admit(waiting);
        }
        self.arm(connection);
        self.forget_if_idle(connection, now_ms());
    }

    /// The slots a workspace that was at its cap has free go to its parked
    /// lanes with the fewest attempts in flight, not to the lane that just
    /// finished: otherwise a hanging endpoint's own backlog would take every
    /// slot it frees, and the workspace's healthy connections would wait for
    /// ever. They go back in line rather than start at once, so lanes of
    /// other workspaces due earlier still go first for a global slot.
    /// Nothing is handed on while storage refuses writes.
    fn start_parked(&mut self, workspace: WorkspaceId) {
        if !self.storage_ok {
            return;
        }
        let in_flight = self.workspaces.get(&workspace).copied().unwrap_or(0);
        let free = self
            .deps
            .max_in_flight_per_workspace
            .saturating_sub(in_flight);
        let Some(parked) = self.parked.get(&workspace) else {
            return;
        };
        let mut candidates: Vec<(usize, ConnectionId)> = parked
            .iter()
            .filter_map(|connection| {
                let lane = self.lanes.get(connection)?;
                Some((lane.in_flight, *connection))
            })
            .collect();
        candidates.sort_unstable();
        for (_, connection) in candidates.into_iter().take(free) {
            self.unpark(connection);
            self.arm(connection);
        }
    }

    fn unpark(&mut self, connection: ConnectionId) {
        let Some(lane) = self.lanes.get_mut(&connection) else {
            return;
        };
        lane.parked = false;
        let workspace = lane.workspace;
        if let Some(parked) = self.parked.get_mut(&workspace) {
            parked.remove(&connection);
            if parked.is_empty() {
                self.parked.remove(&workspace);
            }
        }
    }

    fn workspace_full(&self, workspace: WorkspaceId) -> bool {
        at_cap(
            &self.workspaces,
            workspace,
            self.deps.max_in_flight_per_workspace,
        )
    }

    /// Drops a lane that holds nothing and knows of nothing more.
    fn forget_if_idle(&mut self, connection: ConnectionId, now: u64) {
        if self.lanes.get(&connection).is_some_and(|lane| {
            lane.held.is_empty()
                && lane.in_flight == 0
                && lane.running == 0
                && lane.frontier.is_none()
                && !lane.parked
                && lane.paused_until <= now
        }) {
            self.lanes.remove(&connection);
        }
    }

    fn refill_is_due(&self, now: u64) -> bool {
        now >= self.refill.due || (self.refill.wanted && now >= self.refill.not_before)
    }

    /// Reads the queue's heads, shares the window among the connections
    /// with a backlog, and tops up the lanes that hold less than all of
    /// theirs, oldest head first.
    async fn refill(&mut self) -> Result<QueueHeads, StoreError> {
        let started = Instant::now();
        let heads = self.deps.store.queue_heads().await?;
        let window = self.deps.queue_window;
        let due_by = now_ms().saturating_add(LOOKAHEAD_MS);

        let mut with_backlog: HashSet<ConnectionId> = heads
            .heads
            .iter()
            .filter(|head| head.first.0 <= due_by)
            .map(|head| head.connection_id)
            .collect();
        // A lane waiting for entries its connection no longer has (they
        // were removed meanwhile) now holds everything there is.
        let on_disk: HashSet<ConnectionId> =
            heads.heads.iter().map(|head| head.connection_id).collect();
        for (connection, lane) in &mut self.lanes {
            if !on_disk.contains(connection) {
                lane.frontier = None;
            }
        }
        with_backlog.extend(
            self.lanes
                .iter()
                .filter(|(_, lane)| !lane.held.is_empty())
                .map(|(connection, _)| *connection),
        );
        let share = (window / with_backlog.len().max(1)).max(1);
        self.refill.share = share;

        let mut wanted: Vec<(QueueKey, LaneRead)> = Vec::new();
        for head in &heads.heads {
            let lane = self
                .lanes
                .entry(head.connection_id)
                .or_insert_with(|| Lane {
                    // Not known to hold anything of this connection yet.
                    frontier: Some(head.first),
                    ..Lane::new(head.workspace_id)
                });
            // A pause another node stored before this one took over.
            lane.paused_until = lane.paused_until.max(head.paused_until_ms);
            // A connection's first entry is in memory, or at or past the
            // frontier. One that is neither never reached the scheduler (its
            // handoff was lost): read the lane again from there.
            let missing = lane.holds_everything_before(head.first)
                && !lane.held.contains(&head.first)
                && self
                    .running
                    .get(&head.first.1)
                    .is_none_or(|running| running.due_ms != head.first.0)
                && !self
                    .deferred
                    .get(&head.first.1)
                    .is_some_and(|waiting| waiting.iter().any(|e| e.key() == head.first));
            if missing {
                tracing::debug!(connection = %head.connection_id, "a queue entry was missing from the window; reading it again");
                self.truncate(head.connection_id, head.first);
            }
            let Some(lane) = self.lanes.get(&head.connection_id) else {
                continue;
            };
            let Some(frontier) = lane.frontier else {
                continue;
            };
            if frontier.0 > due_by {
                continue;
            }
            let want = share.saturating_sub(lane.held.len());
            if want > 0 {
                let read = LaneRead {
                    connection_id: head.connection_id,
                    from: Some(frontier),
                    due_by,
                    limit: want,
                };
                wanted.push((head.first, read));
            }
        }
        let asked: usize = wanted.iter().map(|(_, read)| read.limit).sum();
        if asked > window.saturating_sub(self.held) {
            self.trim_to(share);
        }
        wanted.sort_unstable_by_key(|(first, _)| *first);
        let mut room = window.saturating_sub(self.held);
        let mut reads = Vec::new();
        self.refill.starved = false;
        for (_, mut read) in wanted {
            if room == 0 {
                self.refill.starved = true;
                break;
            }
            read.limit = read.limit.min(room);
            room -= read.limit;
            reads.push(read);
        }

        if !reads.is_empty() {
            let found = self.deps.store.queue_rows(reads.clone()).await?;
            for (read, rows) in reads.iter().zip(found) {
                let connection = read.connection_id;
                for entry in rows.entries {
                    let known = self.runs(&entry)
                        || self
                            .deferred
                            .get(&entry.delivery_id)
                            .is_some_and(|waiting| {
                                waiting.iter().any(|other| other.key() == entry.key())
                            });
                    if !known {
                        self.hold(connection, entry.key());
                    }
                }
                if let Some(lane) = self.lanes.get_mut(&connection) {
                    lane.frontier = rows.next;
                }
                self.arm(connection);
            }
        }

        let now = now_ms();
        let idle: Vec<ConnectionId> = self.lanes.keys().copied().collect();
        for connection in idle {
            self.forget_if_idle(connection, now);
        }
        publish_backlog_metrics(&heads, now);
        let cost = started.elapsed() * REFILL_GAP_FACTOR;
        self.refill.wanted = false;
        self.refill.not_before = now + cost.max(MIN_REFILL_GAP).as_millis() as u64;
        self.refill.due = now + self.refill.periodic.as_millis() as u64;
        Ok(heads)
    }

    /// Leaves every lane holding at most `share` entries.
    fn trim_to(&mut self, share: usize) {
        let over: Vec<(ConnectionId, QueueKey)> = self
            .lanes
            .iter()
            .filter_map(|(connection, lane)| {
                lane.held
                    .iter()
                    .nth(share)
                    .map(|first_over| (*connection, *first_over))
            })
            .collect();
        for (connection, from) in over {
            self.truncate(connection, from);
        }
    }

    /// When the loop should wake by itself: at the next lane's run time
    /// (unless the global cap is reached: then only a finish helps), or for
    /// the next refill.
    fn next_wake(&self, now: u64) -> Option<Duration> {
        let mut at = if self.refill.wanted {
            self.refill.not_before.min(self.refill.due)
        } else {
            self.refill.due
        };
        if self.in_flight < self.deps.max_in_flight
            && let Some(&(run_at, _)) = self.ready.first()
        {
            at = at.min(run_at);
        }
        Some(Duration::from_millis(at.saturating_sub(now)))
    }

    fn publish_window_metrics(&self) {
        let (window_entries, in_flight) = &self.window_gauges;
        window_entries.set(self.held as f64);
        in_flight.set(self.in_flight as f64);
        let stats = &self.stats;
        stats.in_memory.store(self.held, Ordering::Relaxed);
        stats
            .peak_in_memory
            .store(self.peak_held, Ordering::Relaxed);
        stats.in_flight.store(self.in_flight, Ordering::Relaxed);
        stats.lanes.store(self.lanes.len(), Ordering::Relaxed);
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

/// Moves a lane's place in `sizes` from `before` to `after` entries.
fn resize(
    sizes: &mut BTreeSet<(usize, ConnectionId)>,
    connection: ConnectionId,
    before: usize,
    after: usize,
) {
    if before > 0 {
        sizes.remove(&(before, connection));
    }
    if after > 0 {
        sizes.insert((after, connection));
    }
}

fn publish_backlog_metrics(heads: &QueueHeads, now: u64) {
    metrics::gauge!("switchyard_queue_depth").set(heads.backlog as f64);
    let oldest_due = heads.heads.iter().map(|head| head.first.0).min();
    let age_ms = oldest_due.map_or(0, |due| now.saturating_sub(due));
    metrics::gauge!("switchyard_queue_oldest_due_age_seconds").set(age_ms as f64 / 1000.0);
}

/// Reports an attempt's end to the scheduler even if the attempt panicked,
/// so its lane and global slots are never lost. The channel is unbounded,
/// but holds at most one message per attempt in flight.
struct FinishGuard {
    reports: mpsc::UnboundedSender<Report>,
    entry: QueueEntry,
    sent: bool,
}

impl FinishGuard {
    fn send(mut self, finished: Finished) {
        self.sent = true;
        let _ = self.reports.send(Report::Finished(finished));
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if !self.sent {
            tracing::error!(delivery = %self.entry.delivery_id, "an attempt ended abnormally; it will run again");
            let _ = self
                .reports
                .send(Report::Finished(Finished::again_later(self.entry)));
        }
    }
}

fn at_cap(counts: &IdMap<WorkspaceId, usize>, workspace: WorkspaceId, cap: usize) -> bool {
    counts.get(&workspace).is_some_and(|count| *count >= cap)
}

/// The next wake-up from other nodes; never, for a single-node store.
async fn next_wakeup(wakeups: &mut Option<tokio::sync::watch::Receiver<()>>) -> Option<()> {
    match wakeups {
        Some(wakeups) => wakeups.changed().await.ok(),
        None => std::future::pending().await,
    }
}

async fn sleep_for(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(wait).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    //! The scheduler's bookkeeping against a real store in a temp dir. The
    //! deliveries here have no connection record, so an attempt that starts
    //! ends at once as dead ("the connection … was deleted") without sending
    //! anything; the tests drive `finish` themselves.

    use super::*;
    use crate::config::Config;
    use crate::model::{Delivery, DeliveryStatus, Event, EventId, EventName, RuleId};
    use crate::store::{IngestBatch, NewWorkspace, RedbStore, StoreOptions};

    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        workspace: WorkspaceId,
        scheduler: Scheduler,
    }

    async fn fixture(adjust: impl FnOnce(&mut EngineDeps)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            RedbStore::open(&dir.path().join("q.redb"), StoreOptions::default()).unwrap();
        let workspace = WorkspaceId::new();
        store
            .create_workspace(NewWorkspace::for_tests(workspace, "w"))
            .await
            .unwrap();
        let master_key = Arc::new(MasterKey::load(dir.path(), None).unwrap().0);
        let config = Config::defaults().unwrap();
        let rule_index = Arc::new(RuleIndex::default());
        let mut deps = EngineDeps {
            store: store.clone(),
            destinations: Arc::new(
                Destinations::new(
                    &config,
                    crate::destinations::Ports {
                        secrets: Arc::new(crate::delivery::StoreSecrets::new(
                            store.clone(),
                            master_key.clone(),
                            rule_index.clone(),
                        )),
                        threads: Arc::new(crate::delivery::StoreThreads::new(store.clone())),
                    },
                )
                .unwrap(),
            ),
            master_key,
            policy: RetryPolicy::new(&[1]),
            rule_index,
            max_in_flight_per_connection: 8,
            max_in_flight_per_workspace: 512,
            max_in_flight: 4096,
            queue_window: 16,
            shutdown_grace: Duration::from_secs(1),
        };
        adjust(&mut deps);
        let (reports, _) = mpsc::unbounded_channel();
        let scheduler = Scheduler::new(Arc::new(deps), reports, Arc::default());
        Fixture {
            _dir: dir,
            store,
            workspace,
            scheduler,
        }
    }

    impl Fixture {
        /// Stores an event with one delivery to `connection` due at `due`,
        /// without telling the scheduler; its queue entry.
        async fn queue(&self, connection: ConnectionId, due: u64) -> QueueEntry {
            let event = Event {
                id: EventId::new(),
                workspace_id: self.workspace,
                name: EventName::parse("alert.triggered").unwrap(),
                resource: None,
                resource_id: None,
                payload: b"{}".to_vec(),
                received_at_ms: due,
            };
            let delivery = Delivery {
                id: DeliveryId::new(),
                workspace_id: self.workspace,
                event_id: event.id,
                rule_id: RuleId::new(),
                connection_id: connection,
                status: DeliveryStatus::Pending,
                attempt_count: 0,
                next_attempt_at_ms: Some(due),
                created_at_ms: due,
                updated_at_ms: due,
                alert: None,
                suppressed_before: 0,
            };
            let entry = QueueEntry {
                due_ms: due,
                delivery_id: delivery.id,
                workspace_id: self.workspace,
                connection_id: connection,
            };
            self.store
                .ingest(IngestBatch::for_tests(event, vec![delivery]))
                .await
                .unwrap();
            entry
        }

        fn held(&self, connection: ConnectionId) -> Vec<QueueKey> {
            self.scheduler
                .lanes
                .get(&connection)
                .map(|lane| lane.held.iter().copied().collect())
                .unwrap_or_default()
        }
    }

    #[tokio::test]
    async fn an_entry_that_never_reached_the_window_is_read_in_by_the_next_refill() {
        let mut f = fixture(|_| {}).await;
        let connection = ConnectionId::new();
        let now = now_ms();
        let first = f.queue(connection, now).await;
        let second = f.queue(connection, now + 10).await;
        f.scheduler.refill().await.unwrap();
        assert_eq!(f.held(connection), [first.key(), second.key()]);
        assert_eq!(f.scheduler.lanes[&connection].frontier, None, "complete");

        // Stored, but its handoff was lost; it sorts before both.
        let lost = f.queue(connection, now - 10).await;
        f.scheduler.refill().await.unwrap();
        assert_eq!(
            f.held(connection),
            [lost.key(), first.key(), second.key()],
            "read in, and in due order"
        );
        assert_eq!(f.scheduler.held, 3);
    }

    #[tokio::test]
    async fn entries_due_beyond_the_lookahead_stay_on_disk_until_they_come_near() {
        let mut f = fixture(|_| {}).await;
        let connection = ConnectionId::new();
        let now = now_ms();
        let later = f.queue(connection, now + 2 * LOOKAHEAD_MS).await;
        f.scheduler.refill().await.unwrap();
        assert!(f.held(connection).is_empty());
        assert_eq!(f.scheduler.lanes[&connection].frontier, Some(later.key()));

        // One due now goes ahead of it; another far ahead waits on disk.
        let soon = f.queue(connection, now).await;
        f.scheduler.admit(soon);
        let far = f.queue(connection, now + 3 * LOOKAHEAD_MS).await;
        f.scheduler.admit(far);
        assert_eq!(f.held(connection), [soon.key()]);
        assert_eq!(f.scheduler.held, 1);
    }

    #[tokio::test]
    async fn the_window_is_shared_and_a_full_lane_gives_way_to_another() {
        let mut f = fixture(|deps| deps.queue_window = 16).await;
        let (hog, other) = (ConnectionId::new(), ConnectionId::new());
        let now = now_ms();
        let mut hogs = Vec::new();
        for n in 0..40 {
            hogs.push(f.queue(hog, now + n).await);
        }
        f.scheduler.refill().await.unwrap();
        assert_eq!(f.held(hog).len(), 16, "alone, it may fill the window");
        assert_eq!(f.scheduler.lanes[&hog].frontier, Some(hogs[16].key()));

        for n in 0..10 {
            let entry = f.queue(other, now + n).await;
            f.scheduler.admit(entry);
        }
        assert_eq!(f.scheduler.held, 16, "never more than the window");
        assert!(f.scheduler.peak_held <= 16);
        assert_eq!(f.held(other).len(), 8, "room made: half each");
        assert_eq!(
            f.held(hog),
            hogs[..8].iter().map(QueueEntry::key).collect::<Vec<_>>(),
            "the hog keeps its first entries, in order"
        );
        assert_eq!(f.scheduler.lanes[&hog].frontier, Some(hogs[8].key()));
        // The other lane now holds a prefix too: its 9th and 10th wait.
        assert!(f.scheduler.lanes[&other].frontier.is_some());
    }

    #[tokio::test]
    async fn an_answer_frees_the_connection_slot_and_unfinished_attempts_stay_bounded() {
        let mut f = fixture(|deps| deps.max_in_flight_per_connection = 1).await;
        let connection = ConnectionId::new();
        let now = now_ms();
        let mut entries = Vec::new();
        for n in 0..4 {
            entries.push(f.queue(connection, now - 10 + n).await);
        }
        f.scheduler.refill().await.unwrap();
        f.scheduler.dispatch_due(now_ms());
        let started = |f: &Fixture| f.scheduler.running.len();
        assert_eq!(started(&f), 1, "one slot");

        // Answered: the next request may go while the outcome is written.
        f.scheduler.answered(entries[0], None);
        f.scheduler.dispatch_due(now_ms());
        assert_eq!(started(&f), 2);
        // Two unfinished per slot at most: the third waits for a finish.
        f.scheduler.answered(entries[1], None);
        f.scheduler.dispatch_due(now_ms());
        assert_eq!(started(&f), 2, "twice the cap of unfinished attempts");
        assert_eq!(f.scheduler.in_flight, 2, "the global cap counts them all");
        let done = |entry| Finished {
            entry,
            next_due_ms: None,
            rerun_at_ms: None,
            pause_connection_until: None,
        };
        f.scheduler.finish(done(entries[0]));
        f.scheduler.dispatch_due(now_ms());
        assert_eq!(started(&f), 2);
        assert!(f.scheduler.running.contains_key(&entries[2].delivery_id));

        // An attempt that finishes without an answer frees its slot once.
        f.scheduler.finish(done(entries[2]));
        f.scheduler.finish(done(entries[1]));
        f.scheduler.dispatch_due(now_ms());
        let lane = &f.scheduler.lanes[&connection];
        assert_eq!((lane.in_flight, lane.running), (1, 1), "the fourth runs");
        assert_eq!(f.scheduler.in_flight, 1);
        assert!(f.scheduler.running.contains_key(&entries[3].delivery_id));
    }

    #[tokio::test]
    async fn a_freed_workspace_slot_is_not_handed_on_while_storage_fails() {
        let mut f = fixture(|deps| deps.max_in_flight_per_workspace = 1).await;
        let (a, b) = (ConnectionId::new(), ConnectionId::new());
        let now = now_ms();
        let first = f.queue(a, now - 1).await;
        let waiting = f.queue(b, now).await;
        f.scheduler.refill().await.unwrap();
        f.scheduler.dispatch_due(now_ms());
        assert_eq!(f.scheduler.in_flight, 1, "the workspace's one slot");
        assert!(f.scheduler.lanes[&b].parked);

        f.scheduler.storage_ok = false;
        f.scheduler.finish(Finished {
            entry: first,
            next_due_ms: None,
            rerun_at_ms: None,
            pause_connection_until: None,
        });
        f.scheduler.dispatch_due(now_ms());
        assert_eq!(f.scheduler.in_flight, 0, "nothing starts");
        assert!(f.scheduler.lanes[&b].parked);

        f.scheduler.storage_ok = true;
        f.scheduler.start_parked(f.workspace);
        f.scheduler.dispatch_due(now_ms());
        assert_eq!(f.scheduler.in_flight, 1, "handed on once storage is back");
        assert_eq!(
            f.scheduler
                .running
                .get(&waiting.delivery_id)
                .map(|running| running.due_ms),
            Some(waiting.due_ms)
        );
    }

    /// An engine handle whose scheduler is the returned receiver.
    fn engine_with_channel(capacity: usize) -> (Engine, mpsc::Receiver<Vec<QueueEntry>>) {
        let (schedule, received) = mpsc::channel(capacity);
        let engine = Engine {
            schedule,
            window: Arc::default(),
            warm: Arc::new(WarmContexts::new(0, 0)),
        };
        (engine, received)
    }

    fn entry(n: u128) -> QueueEntry {
        QueueEntry {
            due_ms: 1,
            delivery_id: DeliveryId(n),
            workspace_id: WorkspaceId(1),
            connection_id: ConnectionId(1),
        }
    }

    /// The next batch the scheduler would take, `None` once every sender
    /// is gone; fails the test after 10 s rather than hang.
    async fn next_batch(received: &mut mpsc::Receiver<Vec<QueueEntry>>) -> Option<Vec<QueueEntry>> {
        tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await
            .expect("a batch or the channel's end within 10 s")
    }

    /// A write answered later, and the sender that answers it.
    fn pending_write() -> (StoreFuture<u128>, tokio::sync::oneshot::Sender<u128>) {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let write: StoreFuture<u128> = Box::pin(async move {
            answered
                .await
                .map_err(|_| StoreError::Unavailable("no answer".into()))
        });
        (write, answer)
    }

    #[tokio::test]
    async fn an_answered_write_hands_its_entries_over() {
        let (engine, mut received) = engine_with_channel(4);
        let write: StoreFuture<u128> = Box::pin(async { Ok(7) });

        let written = engine
            .write_then_schedule(write, |n| vec![entry(*n)])
            .await
            .unwrap();

        assert_eq!(written, 7);
        assert_eq!(received.try_recv().unwrap(), [entry(7)]);
    }

    /// The caller goes away (a client disconnects) while its write is not
    /// answered yet: the entries still reach the scheduler once it is.
    #[tokio::test]
    async fn a_caller_gone_before_the_answer_still_hands_the_entries_over() {
        let (engine, mut received) = engine_with_channel(4);
        let (write, answer) = pending_write();
        let handoff = engine.write_then_schedule(write, |n| vec![entry(*n)]);
        let waited = tokio::time::timeout(Duration::from_millis(10), handoff).await;
        assert!(waited.is_err(), "the write is not answered yet");

        // (Refused if the handoff went with its caller: the test then fails
        // below.)
        let _ = answer.send(9);

        assert_eq!(next_batch(&mut received).await, Some(vec![entry(9)]));
    }

    /// The caller goes away while the scheduler's channel is full: the
    /// entries go over once there is room.
    #[tokio::test]
    async fn a_caller_gone_while_the_channel_is_full_still_hands_the_entries_over() {
        let (engine, mut received) = engine_with_channel(1);
        engine.schedule(vec![entry(1)]).await;
        let write: StoreFuture<u128> = Box::pin(async { Ok(2) });
        let handoff = engine.write_then_schedule(write, |n| vec![entry(*n)]);
        let waited = tokio::time::timeout(Duration::from_millis(10), handoff).await;
        assert!(waited.is_err(), "the channel is full");

        assert_eq!(next_batch(&mut received).await, Some(vec![entry(1)]));
        assert_eq!(next_batch(&mut received).await, Some(vec![entry(2)]));
    }

    /// A write that fails hands nothing over, whether its caller waits or
    /// not.
    #[tokio::test]
    async fn a_failed_write_hands_nothing_over() {
        let (engine, mut received) = engine_with_channel(4);
        let failing: StoreFuture<u128> =
            Box::pin(async { Err(StoreError::Unavailable("refused".into())) });
        let written = engine
            .write_then_schedule(failing, |n| vec![entry(*n)])
            .await;
        assert!(written.is_err());

        let (write, answer) = pending_write();
        let handoff = engine.write_then_schedule(write, |n| vec![entry(*n)]);
        drop(tokio::time::timeout(Duration::from_millis(10), handoff).await);
        drop(answer);
        drop(engine);

        assert_eq!(next_batch(&mut received).await, None, "nothing was sent");
    }
}
