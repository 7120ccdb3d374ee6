//! Retention: events received before a cutoff go, with their deliveries,
//! the event index rows and the deliveries' attempts.
//!
//! Event ids are ULIDs whose top 48 bits are the millisecond the event was
//! received, so a workspace's old events are one key range of `events`:
//! `(ws, 0)..(ws, cutoff << 80)`. A sweep walks the workspaces in key order
//! in bounded steps (one transaction each, so ingest commits in between),
//! carrying a cursor from step to step.
//!
//! A delivery whose record has `next_attempt_at_ms` is queued or in flight
//! (its queue row lives until the attempt that ends it is recorded): its
//! event and all the event's deliveries stay, and the cursor moves past
//! them, so a run of such events (an endpoint down for days) never stops
//! the sweep from reaching the removable events after them. The queue table
//! itself is never read: the delivery record is the authority.

use super::decode;
use super::tables::*;
use crate::model::{EventId, WorkspaceId};
use crate::store::records::DeliveryRecord;
use crate::store::{RetentionCursor, RetentionStep, StoreError};
use redb::{ReadableTable, WriteTransaction};

/// The smallest event id made at or after `cutoff_ms`.
fn first_id_at(cutoff_ms: u64) -> u128 {
    u128::from(cutoff_ms) << 80
}

/// Removes events received before `cutoff_ms` from `from` on, spending about
/// `budget` rows: each event looked at costs one, plus one per delivery
/// read, and a removed event also costs its deliveries' attempts. An
/// event always goes whole, so a step can pass the budget by one event's
/// rows.
pub fn purge_old_events(
    txn: &WriteTransaction,
    cutoff_ms: u64,
    from: Option<RetentionCursor>,
    budget: usize,
) -> Result<RetentionStep, StoreError> {
    let old_below = first_id_at(cutoff_ms);
    let mut step = RetentionStep::default();
    let mut at = from.map_or((0, 0), |cursor| (cursor.workspace.0, cursor.event.0));
    let mut left = budget.max(1);
    let mut events = txn.open_table(EVENTS)?;
    let mut by_event = txn.open_table(EVENT_DELIVERIES)?;
    let mut deliveries = txn.open_table(DELIVERIES)?;
    let mut attempts = txn.open_table(ATTEMPTS)?;
    while left > 0 {
        let Some(first) = events.range(at..)?.next() else {
            return Ok(step);
        };
        let (ws, first_event) = first?.0.value();
        if first_event >= old_below {
            // The rest of this workspace is recent: on to the next one.
            left -= 1;
            match ws.checked_add(1) {
                Some(next) => at = (next, 0),
                None => return Ok(step),
            }
            continue;
        }
        let old: Vec<u128> = events
            .range((ws, first_event)..(ws, old_below))?
            .take(left)
            .map(|row| row.map(|(key, _)| key.value().1))
            .collect::<Result<_, _>>()?;
        for event in old {
            let its_deliveries = super::deliveries::of_event(&events, &by_event, ws, event)?;
            let mut queued = false;
            for delivery in &its_deliveries {
                let record = decode::<DeliveryRecord>(deliveries.get((ws, *delivery))?)?;
                if record.is_some_and(|record| record.next_attempt_at_ms.is_some()) {
                    queued = true;
                    break;
                }
            }
            let mut cost = 1 + its_deliveries.len();
            if queued {
                step.held += 1;
            } else {
                for delivery in its_deliveries {
                    let removed = attempts
                        .extract_from_if((delivery, 0)..=(delivery, u32::MAX), |_, _| true)?
                        .try_fold(0u64, |count, row| row.map(|_| count + 1))?;
                    step.attempts += removed;
                    let gone = decode::<DeliveryRecord>(deliveries.remove((ws, delivery))?)?;
                    if let Some(record) = gone {
                        step.deliveries += 1;
                        // Its first attempt went with its row.
                        if record.first_attempt.is_some() {
                            step.attempts += 1;
                        }
                    }
                    cost += 1 + removed as usize;
                }
                // Index rows exist for events that do not list their
                // deliveries, and for imported ones that do.
                by_event
                    .extract_from_if((ws, event, 0)..=(ws, event, u128::MAX), |_, ()| true)?
                    .try_for_each(|row| row.map(drop))?;
                events.remove((ws, event))?;
                step.events += 1;
            }
            left = left.saturating_sub(cost);
            at = match event.checked_add(1) {
                Some(next) => (ws, next),
                None => (ws.saturating_add(1), 0),
            };
            if left == 0 {
                break;
            }
        }
    }
    step.next = Some(RetentionCursor {
        workspace: WorkspaceId(at.0),
        event: EventId(at.1),
    });
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::Record;
    use crate::store::records::{EventRecord, StoredDeliveryStatus};
    use redb::{Database, ReadableDatabase};

    /// An event id received at `ms`, the `n`th of that millisecond.
    fn event_at(ms: u64, n: u128) -> u128 {
        first_id_at(ms) | n
    }

    struct Seed<'a> {
        txn: &'a WriteTransaction,
        next_delivery: u128,
        /// Events seeded so far: in turn, an event lists its deliveries in
        /// its record, in the index (as before version 2), or in both (as
        /// an imported one).
        seeded: usize,
    }

    impl Seed<'_> {
        /// An event of `ws` with one delivery per entry of `queued` (queued
        /// or not), each with two attempts; returns the delivery ids.
        fn event(&mut self, ws: u128, event: u128, queued: &[bool]) -> Vec<u128> {
            self.seeded += 1;
            let listed = self.seeded % 3 != 2;
            let indexed = self.seeded % 3 != 1;
            let mut ids = Vec::new();
            for &queued in queued {
                self.next_delivery += 1;
                let id = self.next_delivery;
                let record = DeliveryRecord {
                    event_id: event,
                    rule_id: 1,
                    connection_id: 2,
                    status: if queued {
                        StoredDeliveryStatus::Retrying
                    } else {
                        StoredDeliveryStatus::Succeeded
                    },
                    attempt_count: 2,
                    round_attempts: 2,
                    next_attempt_at_ms: queued.then_some(9_999),
                    created_at_ms: 1,
                    updated_at_ms: 1,
                    alert: None,
                    suppressed_before: 0,
                    first_attempt: None,
                };
                self.txn
                    .open_table(DELIVERIES)
                    .unwrap()
                    .insert((ws, id), record.encode().as_slice())
                    .unwrap();
                if indexed {
                    self.txn
                        .open_table(EVENT_DELIVERIES)
                        .unwrap()
                        .insert((ws, event, id), ())
                        .unwrap();
                }
                let mut attempts = self.txn.open_table(ATTEMPTS).unwrap();
                for n in 1..=2 {
                    attempts.insert((id, n), b"a".as_slice()).unwrap();
                }
                ids.push(id);
            }
            let record = EventRecord::for_tests(listed.then(|| ids.clone()));
            self.txn
                .open_table(EVENTS)
                .unwrap()
                .insert((ws, event), record.encode().as_slice())
                .unwrap();
            ids
        }
    }

    fn database() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("retention.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        create_all(&txn).unwrap();
        txn.commit().unwrap();
        (dir, db)
    }

    fn seed(db: &Database, fill: impl FnOnce(&mut Seed<'_>)) {
        let txn = db.begin_write().unwrap();
        fill(&mut Seed {
            txn: &txn,
            next_delivery: 1_000,
            seeded: 0,
        });
        txn.commit().unwrap();
    }

    /// Runs a whole sweep in steps of `budget`; the summed step and how many
    /// steps it took.
    fn sweep(db: &Database, cutoff_ms: u64, budget: usize) -> (RetentionStep, usize) {
        let (mut total, mut steps) = (RetentionStep::default(), 0);
        loop {
            let txn = db.begin_write().unwrap();
            let step = purge_old_events(&txn, cutoff_ms, total.next, budget).unwrap();
            txn.commit().unwrap();
            total.add(&step);
            steps += 1;
            if total.next.is_none() {
                return (total, steps);
            }
            assert!(steps < 1_000, "the sweep makes progress");
        }
    }

    /// The events of `ws` left.
    fn events_of(db: &Database, ws: u128) -> Vec<u128> {
        let txn = db.begin_read().unwrap();
        let table = txn.open_table(EVENTS).unwrap();
        table
            .range((ws, 0)..=(ws, u128::MAX))
            .unwrap()
            .map(|row| row.unwrap().0.value().1)
            .collect()
    }

    /// Whether the delivery, its index row and its attempts exist, as
    /// (delivery, listed as its event's, attempts). Index rows left behind
    /// fail the test.
    fn delivery_rows(db: &Database, ws: u128, event: u128, delivery: u128) -> (bool, bool, usize) {
        let txn = db.begin_read().unwrap();
        let events = txn.open_table(EVENTS).unwrap();
        let index = txn.open_table(EVENT_DELIVERIES).unwrap();
        if events.get((ws, event)).unwrap().is_none() {
            let left = index
                .range((ws, event, 0)..=(ws, event, u128::MAX))
                .unwrap()
                .count();
            assert_eq!(left, 0, "index rows of a removed event");
        }
        (
            txn.open_table(DELIVERIES)
                .unwrap()
                .get((ws, delivery))
                .unwrap()
                .is_some(),
            super::super::deliveries::of_event(&events, &index, ws, event)
                .unwrap()
                .contains(&delivery),
            txn.open_table(ATTEMPTS)
                .unwrap()
                .range((delivery, 0)..=(delivery, u32::MAX))
                .unwrap()
                .count(),
        )
    }

    #[test]
    fn an_old_event_whose_delivery_was_suppressed_is_finished_and_goes() {
        let (_dir, db) = database();
        let old = event_at(1_000, 1);
        seed(&db, |seed| {
            let ids = seed.event(7, old, &[false]);
            // As ingest writes one: suppressed, never queued, no attempts.
            let record = DeliveryRecord {
                event_id: old,
                rule_id: 1,
                connection_id: 2,
                status: StoredDeliveryStatus::Suppressed,
                attempt_count: 0,
                round_attempts: 0,
                next_attempt_at_ms: None,
                created_at_ms: 1,
                updated_at_ms: 1,
                alert: Some("alert_id:a".into()),
                suppressed_before: 0,
                first_attempt: None,
            };
            seed.txn
                .open_table(DELIVERIES)
                .unwrap()
                .insert((7, ids[0]), record.encode().as_slice())
                .unwrap();
        });
        let (total, _) = sweep(&db, 2_000, 100);
        assert_eq!((total.events, total.deliveries, total.held), (1, 1, 0));
        assert!(events_of(&db, 7).is_empty());
    }

    #[test]
    fn old_finished_events_go_with_everything_they_own_and_recent_ones_stay() {
        let (_dir, db) = database();
        let (old, recent) = (event_at(1_000, 1), event_at(5_000, 1));
        let (mut old_deliveries, mut recent_deliveries) = (Vec::new(), Vec::new());
        seed(&db, |seed| {
            // A succeeded and a dead delivery: both finished.
            old_deliveries = seed.event(7, old, &[false, false]);
            recent_deliveries = seed.event(7, recent, &[false]);
            seed.event(7, event_at(1_500, 2), &[]);
        });

        let (removed, _) = sweep(&db, 2_000, 100);
        assert_eq!(
            (
                removed.events,
                removed.deliveries,
                removed.attempts,
                removed.held
            ),
            (2, 2, 4, 0)
        );
        assert_eq!(events_of(&db, 7), [recent]);
        for delivery in old_deliveries {
            assert_eq!(delivery_rows(&db, 7, old, delivery), (false, false, 0));
        }
        assert_eq!(
            delivery_rows(&db, 7, recent, recent_deliveries[0]),
            (true, true, 2)
        );
        // The cutoff is exclusive: an event received at it stays.
        sweep(&db, 5_000, 100);
        assert_eq!(events_of(&db, 7), [recent]);
    }

    #[test]
    fn an_old_event_with_a_queued_delivery_stays_whole_until_it_finishes() {
        let (_dir, db) = database();
        let event = event_at(1_000, 1);
        let mut ids = Vec::new();
        seed(&db, |seed| ids = seed.event(7, event, &[false, true]));

        let (removed, _) = sweep(&db, 2_000, 100);
        assert_eq!((removed.events, removed.held), (0, 1));
        assert_eq!(events_of(&db, 7), [event]);
        for &delivery in &ids {
            assert_eq!(delivery_rows(&db, 7, event, delivery), (true, true, 2));
        }

        // Once its last delivery is dead, the next sweep takes it.
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(DELIVERIES).unwrap();
            let mut record =
                DeliveryRecord::decode(table.get((7, ids[1])).unwrap().unwrap().value()).unwrap();
            record.status = StoredDeliveryStatus::Dead;
            record.next_attempt_at_ms = None;
            table
                .insert((7, ids[1]), record.encode().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        let (removed, _) = sweep(&db, 2_000, 100);
        assert_eq!(
            (removed.events, removed.deliveries, removed.held),
            (1, 2, 0)
        );
        assert!(events_of(&db, 7).is_empty());
    }

    #[test]
    fn a_sweep_gets_past_a_run_of_held_events_in_small_steps() {
        let (_dir, db) = database();
        let mut removable = Vec::new();
        seed(&db, |seed| {
            // The oldest 30 events wait on an endpoint that is down; the
            // 10 after them are finished.
            for n in 0..30 {
                seed.event(7, event_at(1_000, n), &[true]);
            }
            for n in 0..10 {
                let event = event_at(1_100, n);
                removable.push(event);
                seed.event(7, event, &[false]);
            }
        });

        // A budget smaller than the held run: each step moves the cursor on.
        let (removed, steps) = sweep(&db, 2_000, 8);
        assert_eq!((removed.events, removed.held), (10, 30));
        assert!(steps > 30 * 2 / 8, "small steps: {steps}");
        let left = events_of(&db, 7);
        assert_eq!(left.len(), 30);
        assert!(left.iter().all(|event| !removable.contains(event)));
    }

    #[test]
    fn each_workspace_loses_only_its_own_old_events() {
        let (_dir, db) = database();
        seed(&db, |seed| {
            seed.event(1, event_at(1_000, 1), &[false]);
            seed.event(1, event_at(3_000, 1), &[false]);
            // Workspace 2 holds only recent events; 3 only old ones.
            seed.event(2, event_at(2_500, 1), &[false]);
            seed.event(3, event_at(500, 1), &[false]);
            seed.event(3, event_at(600, 1), &[]);
        });

        // Budget 1: every step does one thing, and still nothing is skipped.
        let (removed, _) = sweep(&db, 2_000, 1);
        assert_eq!(removed.events, 3);
        assert_eq!(events_of(&db, 1), [event_at(3_000, 1)]);
        assert_eq!(events_of(&db, 2), [event_at(2_500, 1)]);
        assert!(events_of(&db, 3).is_empty());
    }

    /// A fixed workload per round.
    struct Rounds {
        rounds: u64,
        events_per_round: u128,
        payload_bytes: usize,
        /// Rounds kept; each sweep removes the ones before.
        kept: u64,
    }

    /// Runs `workload` on a new store: each round ingests its events (one
    /// delivery each), records a successful attempt for every delivery,
    /// then sweeps away the rounds older than `kept`. Event ids carry a
    /// synthetic receive time (round r at r seconds), so the cutoff is exact
    /// and the workload the same on every run. The file size after each
    /// round.
    async fn file_sizes(workload: &Rounds) -> Vec<u64> {
        use crate::model::{
            ConnectionId, Delivery, DeliveryId, DeliveryStatus, Event, EventName, RuleId,
        };
        use crate::store::{
            AttemptOutcome, IngestBatch, IngestOutcome, NewWorkspace, RedbStore, Store,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("switchyard.redb");
        let store = RedbStore::open(&path, crate::store::StoreOptions::default()).unwrap();
        let ws = WorkspaceId(1);
        store
            .create_workspace(NewWorkspace::for_tests(ws, "steady"))
            .await
            .unwrap();
        let payload =
            format!("{{\"pad\":\"{}\"}}", "x".repeat(workload.payload_bytes)).into_bytes();
        let mut sizes = Vec::new();
        for round in 1..=workload.rounds {
            let received_at_ms = round * 1_000;
            let mut batch = IngestBatch {
                workspace_id: ws,
                events: Vec::new(),
                deliveries: Vec::new(),
                noise: Default::default(),
                idempotency: None,
            };
            for n in 0..workload.events_per_round {
                let event = EventId(event_at(received_at_ms, n));
                batch.events.push(Event {
                    id: event,
                    workspace_id: ws,
                    name: EventName::parse("alert.triggered").unwrap(),
                    resource: None,
                    resource_id: None,
                    payload: payload.clone(),
                    received_at_ms,
                });
                batch.deliveries.push(Delivery {
                    id: DeliveryId(event.0),
                    workspace_id: ws,
                    event_id: event,
                    rule_id: RuleId(1),
                    connection_id: ConnectionId(1),
                    status: DeliveryStatus::Pending,
                    attempt_count: 0,
                    next_attempt_at_ms: Some(received_at_ms),
                    created_at_ms: received_at_ms,
                    updated_at_ms: received_at_ms,
                    alert: None,
                    suppressed_before: 0,
                });
            }
            let deliveries: Vec<DeliveryId> = batch.deliveries.iter().map(|d| d.id).collect();
            assert_eq!(
                store.ingest(batch).await.unwrap(),
                IngestOutcome::Stored { suppressed: vec![] }
            );
            for delivery_id in deliveries {
                let outcome = AttemptOutcome::succeeded_for_tests(ws, delivery_id, received_at_ms);
                assert!(store.record_attempt(outcome).await.unwrap().is_some());
            }
            let cutoff_ms = (round + 1).saturating_sub(workload.kept) * 1_000;
            let mut swept = RetentionStep::default();
            loop {
                let step = store
                    .purge_old_events(cutoff_ms, swept.next, 500)
                    .await
                    .unwrap();
                swept.add(&step);
                if swept.next.is_none() {
                    break;
                }
            }
            let expected = if round > workload.kept {
                workload.events_per_round as u64
            } else {
                0
            };
            assert_eq!((swept.events, swept.attempts), (expected, expected));
            sizes.push(std::fs::metadata(&path).unwrap().len());
        }
        sizes
    }

    /// Once warm, the file stops growing: redb re-uses the freed pages.
    #[tokio::test]
    async fn the_file_stops_growing_when_retention_keeps_up() {
        let workload = Rounds {
            rounds: 32,
            events_per_round: 32,
            payload_bytes: 8192,
            kept: 2,
        };
        let sizes = file_sizes(&workload).await;
        println!("file size after each round (bytes): {sizes:?}");
        let warm = &sizes[8..];
        assert!(
            warm.iter().all(|&size| size == warm[0]),
            "the file keeps growing after warm-up: {sizes:?}"
        );
        // Without retention the file would hold all of it.
        let written = workload.rounds * workload.events_per_round as u64 * 8192;
        assert!(
            warm[0] < written / 2,
            "{} bytes on disk for {written} bytes written",
            warm[0]
        );
    }

    /// The figures in docs/benchmarks.md: `cargo test --lib
    /// steady_state_file_size -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a benchmark: about a minute"]
    async fn steady_state_file_size() {
        let workload = Rounds {
            rounds: 40,
            events_per_round: 250,
            payload_bytes: 2048,
            kept: 4,
        };
        let sizes = file_sizes(&workload).await;
        let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        let written = workload.rounds * workload.events_per_round as u64;
        println!(
            "{} rounds of {} events ({} B payload, one delivery and one attempt each), {} rounds kept; {written} events written",
            workload.rounds, workload.events_per_round, workload.payload_bytes, workload.kept
        );
        for (round, size) in sizes.iter().enumerate() {
            println!("round {:>2}: {:>6.1} MiB", round + 1, mib(*size));
        }
    }
}
