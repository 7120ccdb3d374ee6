//! First attempts sent from what ingest already holds.
//!
//! Ingest has every part of a new delivery's context in memory: the event
//! it just parsed, and the rule and connection it was routed through (the
//! rule index loads them with each workspace's rules). Reading them back
//! from the store for the first attempt costs a read transaction, five
//! table opens and four record decodes, about 32 k instructions of the ~340
//! k a delivered event costs (docs/benchmarks.md, "Issue 13, fifth
//! sitting"). So ingest keeps them here once the write is durable, and the
//! scheduler hands them to the attempt that starts the delivery.
//!
//! A kept context is used only while the workspace's rule set it was routed
//! with is still the rule index's current one. Every change to a
//! workspace's rules or connections, and its deletion, drops that set (and
//! a set that was loaded while a change happened is never cached), so a
//! context older than the last change is read from the store instead, just
//! as a retry's is. What stays the same as reading it: a change that lands
//! while an attempt is being started may or may not be seen by it, and on a
//! queue shared by several nodes, where another node's changes arrive late,
//! nothing is kept at all.
//!
//! Bounded: at most [`MAX_ENTRIES`] contexts (fewer if
//! `delivery.queue_window` is smaller) and [`MAX_BYTES`]. That covers the
//! entries busy connections have waiting for a slot (`bench e2e` peaks at
//! about 80) and the few thousand a burst of ingest can leave queued. The
//! room matters beyond the read it saves: a first attempt without a kept
//! context reads it from the store, and for a delivery ingested since the
//! writer's last commit that read takes the writer's snapshot, a commit of
//! the open transaction (`store/redb_backend/recent.rs`). When every read
//! did, with eight busy workspaces and no contexts kept, that cost about
//! 40 % more CPU per delivered event (98–114 µs against 67–81 µs,
//! docs/benchmarks.md, twentieth sitting), and with 1,024 contexts a burst
//! at the start of `bench e2e` left some runs slow for good. When it is full, a new context is not kept: entries are
//! delivered oldest first, so the kept ones are the next to be used while a
//! backlog grows. Contexts older than [`MAX_AGE`] make room (their entry
//! went back to disk, or its endpoint is down), so a stuck connection cannot
//! hold the room for ever.

use crate::model::{Connection, Delivery, DeliveryId, Event, IdMap, Rule};
use crate::routing::{RuleIndex, WorkspaceRules};
use crate::store::{DeliveryContext, QueueEntry};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Contexts kept at most.
pub const MAX_ENTRIES: usize = 8192;
/// A context kept this long is dropped to make room for a new one.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// Contexts one ingest request builds at most: the first deliveries of a
/// large batch. The rest would wait for slots anyway, and each context is
/// a copy held until the batch is durable, so a few concurrent batches of
/// thousands of events would otherwise hold megabytes for nothing.
pub const MAX_PER_REQUEST: usize = 64;
/// Bytes the kept contexts may hold together, as [`WarmContext::bytes`]
/// counts them.
pub const MAX_BYTES: usize = 8 * 1024 * 1024;
/// What one kept context costs besides its payload: its delivery, its
/// share of the event, the map and order entries, the allocator's rounding
/// (measured: about 1.2 KB per context with a 260-byte payload).
const OVERHEAD_BYTES: usize = 1024;

/// One new delivery's context as ingest has it.
pub struct WarmContext {
    /// The rule set the event was routed with. Weak, so that kept contexts
    /// do not keep superseded sets alive; the allocation outlives it, so
    /// its address cannot be reused by a newer set.
    routed_with: Weak<WorkspaceRules>,
    delivery: Delivery,
    event: Arc<Event>,
    rule: Arc<Rule>,
    connection: Arc<Connection>,
}

impl WarmContext {
    pub fn new(
        routed_with: Arc<WorkspaceRules>,
        delivery: Delivery,
        event: Arc<Event>,
        rule: Arc<Rule>,
        connection: Arc<Connection>,
    ) -> Self {
        Self {
            routed_with: Arc::downgrade(&routed_with),
            delivery,
            event,
            rule,
            connection,
        }
    }

    pub fn delivery_id(&self) -> DeliveryId {
        self.delivery.id
    }

    /// The context for `entry`'s attempt, if this is still what the store
    /// holds: the entry is the delivery's first (it is due when the event
    /// came in) and the workspace's rules and connections did not change
    /// since.
    pub fn for_attempt(self, entry: &QueueEntry, rules: &RuleIndex) -> Option<DeliveryContext> {
        let first_attempt = self.delivery.id == entry.delivery_id
            && self.delivery.attempt_count == 0
            && self.delivery.next_attempt_at_ms == Some(entry.due_ms);
        let unchanged = rules
            .current(self.delivery.workspace_id)
            .is_some_and(|current| std::ptr::eq(Arc::as_ptr(&current), self.routed_with.as_ptr()));
        (first_attempt && unchanged).then_some(DeliveryContext {
            delivery: self.delivery,
            round_attempts: 0,
            event: self.event,
            rule: Some(self.rule),
            connection: Some(self.connection),
        })
    }

    fn bytes(&self) -> usize {
        self.event.payload.len() + OVERHEAD_BYTES
    }
}

/// The kept contexts, oldest first out.
pub struct WarmContexts {
    held: Mutex<Held>,
    max_entries: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Held {
    by_delivery: IdMap<DeliveryId, WarmContext>,
    /// Insertion order and time; may still name contexts already taken
    /// (they are skipped when it is trimmed).
    order: VecDeque<(DeliveryId, Instant)>,
    bytes: usize,
}

impl Held {
    /// Drops the oldest entry of `order` if it was kept longer than
    /// `max_age` ago (or was taken already); false when there is none.
    fn drop_oldest_if_older(&mut self, now: Instant, max_age: Duration) -> bool {
        let Some(&(id, kept_at)) = self.order.front() else {
            return false;
        };
        let taken = !self.by_delivery.contains_key(&id);
        if !taken && now.saturating_duration_since(kept_at) < max_age {
            return false;
        }
        self.order.pop_front();
        if let Some(dropped) = self.by_delivery.remove(&id) {
            self.bytes -= dropped.bytes();
        }
        true
    }
}

impl WarmContexts {
    /// Keeps at most `max_entries` contexts and `max_bytes` of them; zero
    /// entries keeps nothing.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            held: Mutex::default(),
            max_entries,
            max_bytes,
        }
    }

    /// False when nothing would be kept: ingest need not build contexts.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    /// Keeps what fits of `contexts` (see the module comment).
    pub fn keep(&self, contexts: Vec<WarmContext>) {
        self.keep_at(contexts, Instant::now());
    }

    fn keep_at(&self, contexts: Vec<WarmContext>, now: Instant) {
        if !self.enabled() || contexts.is_empty() {
            return;
        }
        let mut held = self.lock();
        for context in contexts {
            let bytes = context.bytes();
            let fits = |held: &Held| {
                held.by_delivery.len() < self.max_entries && held.bytes + bytes <= self.max_bytes
            };
            while !fits(&held) && held.drop_oldest_if_older(now, MAX_AGE) {}
            if !fits(&held) {
                continue;
            }
            let id = context.delivery_id();
            if let Some(replaced) = held.by_delivery.insert(id, context) {
                held.bytes -= replaced.bytes();
            }
            held.bytes += bytes;
            held.order.push_back((id, now));
        }
        // Taken contexts leave their id behind in `order`; trim it when they
        // make up most of it, so it stays within twice the bound.
        if held.order.len() > 2 * self.max_entries.max(held.by_delivery.len()) {
            let Held {
                by_delivery, order, ..
            } = &mut *held;
            order.retain(|(id, _)| by_delivery.contains_key(id));
        }
    }

    /// Drops the contexts kept for `deliveries` (their write failed).
    pub fn forget(&self, deliveries: &[DeliveryId]) {
        if !self.enabled() || deliveries.is_empty() {
            return;
        }
        let mut held = self.lock();
        for delivery in deliveries {
            if let Some(context) = held.by_delivery.remove(delivery) {
                held.bytes -= context.bytes();
            }
        }
    }

    /// Takes the context kept for `delivery`, if there is one.
    pub fn take(&self, delivery: DeliveryId) -> Option<WarmContext> {
        if !self.enabled() {
            return None;
        }
        let mut held = self.lock();
        let context = held.by_delivery.remove(&delivery)?;
        held.bytes -= context.bytes();
        Some(context)
    }

    /// How many contexts and bytes are kept now.
    pub fn usage(&self) -> (usize, usize) {
        let held = self.lock();
        (held.by_delivery.len(), held.bytes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The map is consistent after every statement that could panic.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        ConnectionId, ConnectionKind, ConnectionStatus, DeliveryStatus, EventId, EventName, RuleId,
        WorkspaceId, now_ms,
    };
    use crate::store::{IngestBatch, NewWorkspace, RedbStore, Store, StoreOptions};
    use serde_json::json;

    /// A workspace with one webhook connection and one rule for
    /// `alert.*`, in a real redb file.
    struct Fixture {
        _dir: tempfile::TempDir,
        store: Arc<dyn Store>,
        workspace: WorkspaceId,
        index: RuleIndex,
    }

    async fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            RedbStore::open(&dir.path().join("w.redb"), StoreOptions::default()).unwrap();
        let workspace = WorkspaceId::new();
        store
            .create_workspace(NewWorkspace::for_tests(workspace, "w"))
            .await
            .unwrap();
        let connection = Connection {
            id: ConnectionId::new(),
            workspace_id: workspace,
            name: "hook".into(),
            kind: ConnectionKind::Webhook,
            status: ConnectionStatus::Active,
            config: json!({"url": "https://example.test/hook"}),
            sealed_secrets: vec![1, 2, 3],
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
        };
        store.create_connection(connection.clone()).await.unwrap();
        let rule = Rule {
            id: RuleId::new(),
            workspace_id: workspace,
            name: "all alerts".into(),
            events: vec!["alert.*".into()],
            connection_id: connection.id,
            target: json!({}),
            min_severity: None,
            conditions: json!([]),
            template: Some(json!({"text": "{{event.name}}"})),
            enabled: true,
            created_at_ms: 1_000,
            updated_at_ms: 1_000,
            dedup_seconds: None,
            max_per_hour: None,
        };
        store.put_rule(rule, false).await.unwrap();
        Fixture {
            _dir: dir,
            store,
            workspace,
            index: RuleIndex::default(),
        }
    }

    /// Routes a new event the way ingest does, stores it with its one
    /// delivery, and returns what ingest keeps and the delivery's entry.
    async fn ingest_one(f: &Fixture) -> (WarmContext, QueueEntry) {
        let rules = f
            .index
            .workspace(f.store.as_ref(), f.workspace)
            .await
            .unwrap();
        let received = now_ms();
        let event = Event {
            id: EventId::new(),
            workspace_id: f.workspace,
            name: EventName::parse("alert.triggered").unwrap(),
            resource: Some("db".into()),
            resource_id: Some("primary".into()),
            payload: br#"{"value": 1840, "severity": "high"}"#.to_vec(),
            received_at_ms: received,
        };
        let routes = rules.routes(&event);
        assert_eq!(routes.len(), 1);
        let (rule, connection) = rules.stored(&routes[0]).unwrap();
        let delivery = Delivery {
            id: DeliveryId::new(),
            workspace_id: f.workspace,
            event_id: event.id,
            rule_id: routes[0].rule_id,
            connection_id: routes[0].connection_id,
            status: DeliveryStatus::Pending,
            attempt_count: 0,
            next_attempt_at_ms: Some(received),
            created_at_ms: received,
            updated_at_ms: received,
            alert: event.alert_key(),
            suppressed_before: 0,
        };
        let entry = QueueEntry {
            due_ms: received,
            delivery_id: delivery.id,
            workspace_id: f.workspace,
            connection_id: delivery.connection_id,
        };
        let kept = WarmContext::new(
            rules,
            delivery.clone(),
            Arc::new(event.clone()),
            rule,
            connection,
        );
        f.store
            .ingest(IngestBatch::for_tests(event, vec![delivery]))
            .await
            .unwrap();
        (kept, entry)
    }

    #[tokio::test]
    async fn a_kept_context_is_what_the_store_would_read() {
        let f = fixture().await;
        let (kept, entry) = ingest_one(&f).await;
        let read = f
            .store
            .delivery_context(f.workspace, entry.delivery_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept.for_attempt(&entry, &f.index), Some(read));
    }

    #[tokio::test]
    async fn a_kept_context_is_not_used_after_a_change_or_for_another_entry() {
        let f = fixture().await;
        let (kept, entry) = ingest_one(&f).await;
        // Any change to the workspace's rules or connections drops the set
        // the event was routed with.
        f.index.invalidate(f.workspace);
        assert_eq!(kept.for_attempt(&entry, &f.index), None);

        // Loaded again, the index holds a new set: still not the one kept.
        let (kept, entry) = ingest_one(&f).await;
        f.index.invalidate(f.workspace);
        f.index
            .workspace(f.store.as_ref(), f.workspace)
            .await
            .unwrap();
        assert_eq!(kept.for_attempt(&entry, &f.index), None);

        // A retry's entry is due later than the event came in.
        let (kept, entry) = ingest_one(&f).await;
        let retry = QueueEntry {
            due_ms: entry.due_ms + 1_000,
            ..entry
        };
        assert_eq!(kept.for_attempt(&retry, &f.index), None);
    }

    #[tokio::test]
    async fn kept_contexts_stay_within_their_count_and_bytes() {
        let f = fixture().await;
        let mut made = Vec::new();
        for _ in 0..12 {
            made.push(ingest_one(&f).await.0);
        }
        let ids: Vec<DeliveryId> = made.iter().map(WarmContext::delivery_id).collect();
        let one = made[0].bytes();

        let by_count = WarmContexts::new(4, usize::MAX);
        let by_bytes = WarmContexts::new(100, 3 * one);
        let start = Instant::now();
        for context in made.iter().map(clone_of) {
            by_count.keep_at(vec![clone_of(&context)], start);
            by_bytes.keep_at(vec![context], start);
            assert!(by_count.usage().0 <= 4);
            assert!(by_bytes.usage().1 <= 3 * one);
        }
        assert_eq!(by_count.usage(), (4, 4 * one));
        assert_eq!(by_bytes.usage(), (3, 3 * one));
        // Full: the oldest stay (they are delivered first), newer ones are
        // not kept; a context is taken once, and taking one makes room.
        assert!(by_count.take(ids[4]).is_none());
        assert!(by_count.take(ids[0]).is_some());
        assert!(by_count.take(ids[0]).is_none());
        by_count.keep_at(vec![clone_of(&made[11])], start);
        assert!(by_count.take(ids[11]).is_some());
        assert!(by_bytes.take(ids[3]).is_none());
        assert!(by_bytes.take(ids[2]).is_some());
        assert_eq!(by_bytes.usage(), (2, 2 * one));

        // Contexts kept longer than MAX_AGE make room for new ones.
        let later = start + MAX_AGE;
        by_count.keep_at(vec![clone_of(&made[5]), clone_of(&made[6])], later);
        assert_eq!(by_count.usage(), (4, 4 * one));
        assert!(by_count.take(ids[1]).is_none(), "the oldest made room");
        assert!(by_count.take(ids[5]).is_some());
        assert!(by_count.take(ids[6]).is_some());

        // Disabled: nothing is kept.
        let off = WarmContexts::new(0, MAX_BYTES);
        assert!(!off.enabled());
        off.keep(vec![ingest_one(&f).await.0]);
        assert_eq!(off.usage(), (0, 0));
    }

    #[tokio::test]
    async fn taken_contexts_leave_no_trail_behind() {
        let f = fixture().await;
        let (context, _) = ingest_one(&f).await;
        let kept = WarmContexts::new(8, MAX_BYTES);
        for _ in 0..1_000 {
            let copy = clone_of(&context);
            let id = DeliveryId::new();
            kept.keep(vec![WarmContext {
                delivery: Delivery {
                    id,
                    ..copy.delivery
                },
                ..copy
            }]);
            assert!(kept.take(id).is_some());
            assert!(kept.lock().order.len() <= 2 * 8 + 1);
        }
        assert_eq!(kept.usage(), (0, 0));
    }

    fn clone_of(context: &WarmContext) -> WarmContext {
        WarmContext {
            routed_with: context.routed_with.clone(),
            delivery: context.delivery.clone(),
            event: context.event.clone(),
            rule: context.rule.clone(),
            connection: context.connection.clone(),
        }
    }
}
