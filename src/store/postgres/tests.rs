//! The PostgreSQL store against a real server: `scripts/test` starts a
//! throwaway one and exports `SWITCHYARD_TEST_POSTGRES_URL`; each test gets
//! a fresh database of its own.

use super::*;
use crate::config::{PostgresConfig, PostgresTls};
use crate::secret::Secret;

/// A database made for one test, dropped by [`TestDb::drop_database`].
pub struct TestDb {
    pub settings: PostgresConfig,
    admin_url: String,
    name: String,
}

pub const MISSING_URL: &str = "SWITCHYARD_TEST_POSTGRES_URL is not set: run scripts/test, or \
     set SWITCHYARD_TEST_POSTGRES_URL to a PostgreSQL server the tests may create databases on \
     (scripts/postgres-dev starts a throwaway one and prints it)";

impl TestDb {
    pub async fn create() -> Self {
        let admin_url = std::env::var("SWITCHYARD_TEST_POSTGRES_URL").expect(MISSING_URL);
        let name = format!("switchyard_test_{:032x}", rand::random::<u128>());
        let admin = admin_client(&admin_url).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let settings = PostgresConfig {
            url: Some(Secret::new(with_database(&admin_url, &name))),
            pool_size: 8,
            tls: PostgresTls::Disable,
            lease_seconds: 30,
        };
        Self {
            settings,
            admin_url,
            name,
        }
    }

    pub async fn drop_database(self) {
        let admin = admin_client(&self.admin_url).await;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("drop the test database");
    }
}

pub(super) async fn admin_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to SWITCHYARD_TEST_POSTGRES_URL");
    tokio::spawn(connection);
    client
}

/// The same server, another database: a URL gets a `dbname` parameter,
/// libpq's `key=value` form a later `dbname=` (the last one wins).
pub fn with_database(url: &str, database: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}dbname={database}")
    } else {
        format!("{url} dbname={database}")
    }
}

#[test]
fn another_database_on_the_same_server() {
    for (url, expected) in [
        (
            "postgres://u@h:5/postgres",
            "postgres://u@h:5/postgres?dbname=x",
        ),
        (
            "postgres://u@h/p?host=/tmp",
            "postgres://u@h/p?host=/tmp&dbname=x",
        ),
        (
            "host=/tmp port=5 dbname=postgres",
            "host=/tmp port=5 dbname=postgres dbname=x",
        ),
    ] {
        let changed = with_database(url, "x");
        assert_eq!(changed, expected);
        assert_eq!(parse_url(&changed).unwrap().get_dbname(), Some("x"));
    }
}

use crate::model::{AlertState, ConnectionKind, ConnectionStatus, DeliveryStatus, EventName};
use crate::store::{EventNameFilter, IDEMPOTENCY_TTL_MS, IdempotentAnswer, NextStep, NoiseCheck};
use std::collections::HashMap;
use std::time::Duration;

/// A fresh database with the store open on it.
pub(super) async fn open() -> (TestDb, PgStore) {
    let db = TestDb::create().await;
    let store = PgStore::open(&db.settings).await.expect("open the store");
    (db, store)
}

pub(super) async fn finish(db: TestDb, store: PgStore) {
    store.close().await;
    db.drop_database().await;
}

pub(super) async fn admin(db: &TestDb) -> tokio_postgres::Client {
    admin_client(db.settings.url.as_ref().unwrap().expose()).await
}

pub(super) fn workspace(n: u128) -> NewWorkspace {
    NewWorkspace {
        workspace: Workspace {
            id: WorkspaceId(n),
            name: format!("ws{n}"),
            created_at_ms: 1_000,
        },
        publishable_key_hash: [n as u8; 32],
        secret_key_hash: [n as u8 + 100; 32],
        meshes_key_hash: [n as u8 + 200; 32],
    }
}

pub(super) fn connection(ws: u128, n: u128) -> Connection {
    Connection {
        id: ConnectionId(n),
        workspace_id: WorkspaceId(ws),
        name: format!("con{n}"),
        kind: ConnectionKind::Webhook,
        status: ConnectionStatus::Active,
        config: serde_json::json!({"url": "https://example.test/hook"}),
        sealed_secrets: vec![1, 2, 3, 250],
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
    }
}

pub(super) fn rule(ws: u128, n: u128, connection: u128) -> Rule {
    Rule {
        id: RuleId(n),
        workspace_id: WorkspaceId(ws),
        name: format!("rule{n}"),
        events: vec!["alert.*".into()],
        connection_id: ConnectionId(connection),
        target: serde_json::json!({}),
        min_severity: Some("high".into()),
        conditions: serde_json::json!([{"path": "value", "op": "gt", "value": 1}]),
        template: None,
        enabled: true,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        dedup_seconds: None,
        max_per_hour: None,
    }
}

/// An event received at `ms` (its id carries the time, as ULIDs do).
pub(super) fn event(ws: u128, ms: u64, n: u128, name: &str) -> Event {
    Event {
        id: EventId((u128::from(ms) << 80) | n),
        workspace_id: WorkspaceId(ws),
        name: EventName::parse(name).unwrap(),
        resource: Some("db".into()),
        resource_id: Some("1".into()),
        payload: br#"{"value": 1840, "b": [1,2]}"#.to_vec(),
        received_at_ms: ms,
    }
}

pub(super) fn delivery(event: &Event, n: u128, connection: u128, due: u64) -> Delivery {
    Delivery {
        id: DeliveryId(event.id.0 + n),
        workspace_id: event.workspace_id,
        event_id: event.id,
        rule_id: RuleId(7),
        connection_id: ConnectionId(connection),
        status: DeliveryStatus::Pending,
        attempt_count: 0,
        next_attempt_at_ms: Some(due),
        created_at_ms: event.received_at_ms,
        updated_at_ms: event.received_at_ms,
        alert: event.alert_key(),
        suppressed_before: 0,
    }
}

pub(super) fn batch(events: Vec<Event>, deliveries: Vec<Delivery>) -> IngestBatch {
    IngestBatch {
        workspace_id: events[0].workspace_id,
        events,
        deliveries,
        noise: HashMap::new(),
        idempotency: None,
    }
}

#[tokio::test]
async fn migrations_apply_once_even_from_two_nodes_and_a_newer_database_is_refused() {
    let db = TestDb::create().await;
    let (first, second) = tokio::join!(
        PgStore::migrate(&db.settings),
        PgStore::migrate(&db.settings)
    );
    let mut reports = [first.unwrap().0, second.unwrap().0];
    reports.sort_by_key(|report| report.applied.len());
    assert_eq!(reports[0].applied, vec![]);
    assert_eq!(reports[1].from, 0);
    assert_eq!(reports[1].to(), latest_version());
    assert_eq!(reports[0].from, latest_version());

    admin(&db)
        .await
        .execute(
            "INSERT INTO schema_migrations (version, name) VALUES (999, 'from the future')",
            &[],
        )
        .await
        .unwrap();
    let refused = PgStore::open(&db.settings).await.err().expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("version 999") && message.contains(&latest_version().to_string()),
        "{message}"
    );
    assert!(!message.contains("password"), "{message}");
    db.drop_database().await;
}

#[tokio::test]
async fn workspaces_keys_rotation_and_the_purge_after_deletion() {
    let (db, store) = open().await;
    store.create_workspace(workspace(1)).await.unwrap();
    store.create_workspace(workspace(2)).await.unwrap();
    let names: Vec<String> = store
        .workspaces()
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, ["ws1", "ws2"]);
    assert_eq!(
        store.key([1; 32]).await.unwrap(),
        Some((WorkspaceId(1), KeyKind::Publishable))
    );
    assert_eq!(
        store.key([101; 32]).await.unwrap(),
        Some((WorkspaceId(1), KeyKind::Secret))
    );

    let rotated = store
        .rotate_keys(WorkspaceId(1), [51; 32], [52; 32], [53; 32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.name, "ws1");
    assert_eq!(store.key([1; 32]).await.unwrap(), None, "old key stops");
    assert_eq!(
        store.key([201; 32]).await.unwrap(),
        None,
        "old Meshes key stops"
    );
    assert_eq!(
        store.key([53; 32]).await.unwrap(),
        Some((WorkspaceId(1), KeyKind::MeshesPublishable))
    );
    assert_eq!(
        store.key([52; 32]).await.unwrap(),
        Some((WorkspaceId(1), KeyKind::Secret))
    );
    assert!(
        store
            .rotate_keys(WorkspaceId(9), [0; 32], [0; 32], [0; 32])
            .await
            .unwrap()
            .is_none()
    );

    // Three events with a delivery and two attempts each, then deletion.
    store.create_connection(connection(1, 10)).await.unwrap();
    for n in 0..3 {
        let e = event(1, 5_000 + n, 0, "alert.triggered");
        let d = delivery(&e, 1, 10, 6_000);
        store.ingest(batch(vec![e], vec![d.clone()])).await.unwrap();
        for at in [1, 2] {
            store
                .record_attempt(AttemptOutcome {
                    workspace_id: WorkspaceId(1),
                    delivery_id: d.id,
                    attempt: Attempt {
                        at_ms: 7_000 + at,
                        duration_ms: 3,
                        status_code: Some(500),
                        error: None,
                        response: Some("no".into()),
                    },
                    next: NextStep::RetryAt(8_000 + at),
                    connection_status: None,
                    pause_connection_until: None,
                })
                .await
                .unwrap();
        }
    }
    assert_eq!(store.queue_len().await.unwrap(), 3);
    assert!(store.delete_workspace(WorkspaceId(1)).await.unwrap());
    assert!(!store.delete_workspace(WorkspaceId(1)).await.unwrap());
    assert_eq!(store.key([52; 32]).await.unwrap(), None);
    assert_eq!(store.workspace(WorkspaceId(1)).await.unwrap(), None);
    assert_eq!(
        store.queue_len().await.unwrap(),
        0,
        "its queue goes at once"
    );
    assert_eq!(store.pending_purges().await.unwrap(), 1);
    let mut steps = 0;
    while store.purge_deleted(2).await.unwrap() {
        steps += 1;
        assert!(steps < 20, "the purge must end");
    }
    assert!(steps >= 2, "a small budget takes several steps ({steps})");
    assert_eq!(store.pending_purges().await.unwrap(), 0);
    let client = admin(&db).await;
    for table in ["events", "deliveries", "attempts"] {
        let left: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(left, 0, "{table}");
    }
    assert!(store.workspace(WorkspaceId(2)).await.unwrap().is_some());
    finish(db, store).await;
}

#[tokio::test]
async fn concurrent_ingests_share_transactions_and_idempotency_keys_replay() {
    let (db, store) = open().await;
    let store = Arc::new(store);
    store.create_workspace(workspace(1)).await.unwrap();
    store.create_connection(connection(1, 10)).await.unwrap();
    let client = admin(&db).await;
    let commits_before: i64 = client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let requests = 400u128;
    let ingests = (0..requests).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let e = event(1, 10_000 + n as u64, 0, "alert.triggered");
            let d = delivery(&e, 1, 10, 20_000);
            store.ingest(batch(vec![e], vec![d])).await
        })
    });
    for outcome in futures::future::join_all(ingests).await {
        assert_eq!(
            outcome.unwrap().unwrap(),
            IngestOutcome::Stored { suppressed: vec![] }
        );
    }
    // Reads on the pool commit too, so count only an upper bound: far
    // fewer transactions than requests.
    let commits_after: i64 = client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        commits_after - commits_before < requests as i64 / 2,
        "{} commits for {requests} ingests",
        commits_after - commits_before
    );
    assert_eq!(store.queue_len().await.unwrap(), requests as u64);

    // Newest first, a page at a time, with a name filter.
    let page = store
        .events(
            WorkspaceId(1),
            EventQuery {
                name: Some(EventNameFilter::Prefix("alert.".into())),
                before: None,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.events.len(), 3);
    assert_eq!(page.events[0].received_at_ms, 10_000 + requests as u64 - 1);
    assert_eq!(page.next, Some(page.events[2].id));
    assert_eq!(page.events[0].payload, br#"{"value": 1840, "b": [1,2]}"#);
    let none = store
        .events(
            WorkspaceId(1),
            EventQuery {
                name: Some(EventNameFilter::Prefix("deploy.".into())),
                before: None,
                limit: 3,
            },
        )
        .await
        .unwrap();
    assert!(none.events.is_empty() && none.next.is_none());

    // The same key twice, in one group or later: stored once, replayed.
    let keyed = |n: u128| {
        let mut b = batch(vec![event(1, 50_000, n, "deploy.done")], vec![]);
        b.idempotency = Some(IdempotentAnswer {
            key: "k1".into(),
            status: 202,
            response: format!("first {n}").into_bytes(),
        });
        b
    };
    let (a, b) = tokio::join!(store.ingest(keyed(1)), store.ingest(keyed(2)));
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Stored { .. }))
            .count(),
        1,
        "{outcomes:?}"
    );
    let IngestOutcome::Replayed { status, response } = store.ingest(keyed(3)).await.unwrap() else {
        panic!("a known key replays");
    };
    assert_eq!(status, 202);
    assert!(response.starts_with(b"first "));
    assert_eq!(
        store
            .purge_idempotency_keys(crate::model::now_ms())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .purge_idempotency_keys(crate::model::now_ms() + IDEMPOTENCY_TTL_MS + 1)
            .await
            .unwrap(),
        1
    );

    let unknown = batch(vec![event(9, 1, 1, "a")], vec![]);
    assert_eq!(
        store.ingest(unknown).await.unwrap(),
        IngestOutcome::UnknownWorkspace
    );
    let store = Arc::into_inner(store).unwrap();
    finish(db, store).await;
}

#[tokio::test]
async fn noise_control_is_decided_in_the_ingest_transaction() {
    let (db, store) = open().await;
    store.create_workspace(workspace(1)).await.unwrap();
    let check = NoiseCheck {
        dedup_seconds: Some(600),
        max_per_hour: None,
        state: Some(AlertState::Triggered),
    };
    let triggered = |n: u128, at: u64| {
        let e = event(1, at, n, "alert.triggered");
        let d = delivery(&e, 1, 10, at);
        let mut b = batch(vec![e], vec![d.clone()]);
        b.noise.insert(d.id, check);
        (b, d.id)
    };
    let (first, _) = triggered(1, 100_000);
    let (second, second_id) = triggered(2, 100_500);
    // Both in flight at once: one goes out, the other is held back.
    let (a, b) = tokio::join!(store.ingest(first), store.ingest(second));
    assert_eq!(a.unwrap(), IngestOutcome::Stored { suppressed: vec![] });
    assert_eq!(
        b.unwrap(),
        IngestOutcome::Stored {
            suppressed: vec![second_id]
        }
    );
    let (held, _) = store
        .delivery(WorkspaceId(1), second_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.status, DeliveryStatus::Suppressed);
    assert_eq!(held.next_attempt_at_ms, None);
    assert_eq!(store.queue_len().await.unwrap(), 1);
    let (later, later_id) = triggered(3, 100_000 + 600_000);
    assert_eq!(
        store.ingest(later).await.unwrap(),
        IngestOutcome::Stored { suppressed: vec![] }
    );
    let (sent, _) = store
        .delivery(WorkspaceId(1), later_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sent.suppressed_before, 1);
    // Far past every window, the state goes.
    assert_eq!(store.purge_noise_state(100_000_000).await.unwrap(), 2);
    finish(db, store).await;
}

#[tokio::test]
async fn connections_and_rules_keep_their_fields_and_refuse_what_redb_refuses() {
    let (db, store) = open().await;
    store.create_workspace(workspace(1)).await.unwrap();
    let con = connection(1, 10);
    store.create_connection(con.clone()).await.unwrap();
    assert_eq!(
        store
            .connection(WorkspaceId(1), ConnectionId(10))
            .await
            .unwrap(),
        Some(con.clone())
    );
    assert_eq!(
        store
            .connection(WorkspaceId(2), ConnectionId(10))
            .await
            .unwrap(),
        None,
        "another workspace's"
    );

    // A compare-and-swap of the sealed secrets: only the first wins.
    let swap = |to: u8| ConnectionPatch {
        sealed_secrets: Some(vec![to]),
        if_secrets_are: Some(con.sealed_secrets.clone()),
        ..ConnectionPatch::default()
    };
    let (a, b) = tokio::join!(
        store.update_connection(WorkspaceId(1), ConnectionId(10), swap(1)),
        store.update_connection(WorkspaceId(1), ConnectionId(10), swap(2))
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, PatchOutcome::Updated(_)))
            .count(),
        1
    );
    assert!(outcomes.iter().any(|o| matches!(o, PatchOutcome::Stale(_))));

    let mut r = rule(1, 20, 10);
    r.template = Some(serde_json::json!({"text": "{{ event.name }}"}));
    r.dedup_seconds = Some(60);
    assert_eq!(
        store.put_rule(r.clone(), false).await.unwrap(),
        PutRule::Stored
    );
    assert_eq!(
        store.rule(WorkspaceId(1), RuleId(20)).await.unwrap(),
        Some(r.clone())
    );
    assert_eq!(
        store.put_rule(rule(1, 21, 99), false).await.unwrap(),
        PutRule::UnknownConnection
    );
    assert_eq!(
        store.put_rule(rule(1, 22, 10), true).await.unwrap(),
        PutRule::NotFound
    );
    assert_eq!(
        store
            .delete_connection(WorkspaceId(1), ConnectionId(10))
            .await
            .unwrap(),
        DeleteConnection::InUse(vec![RuleId(20)])
    );
    assert!(store.delete_rule(WorkspaceId(1), RuleId(20)).await.unwrap());
    assert!(store.rules(WorkspaceId(1)).await.unwrap().is_empty());
    assert_eq!(
        store
            .delete_connection(WorkspaceId(1), ConnectionId(10))
            .await
            .unwrap(),
        DeleteConnection::Deleted
    );
    assert!(store.connections(WorkspaceId(1)).await.unwrap().is_empty());
    finish(db, store).await;
}

#[tokio::test]
async fn attempts_move_deliveries_through_the_queue() {
    let (db, store) = open().await;
    store.create_workspace(workspace(1)).await.unwrap();
    store.create_connection(connection(1, 10)).await.unwrap();
    store.put_rule(rule(1, 7, 10), false).await.unwrap();
    // Connection 10: three entries due at 100, 200, 300; connection 11: one.
    let mut ids = Vec::new();
    for (n, (con, due)) in [(10, 300), (10, 100), (10, 200), (11, 50)]
        .iter()
        .enumerate()
    {
        let e = event(1, 1_000 + n as u64, 0, "alert.triggered");
        let d = delivery(&e, 1, *con, *due);
        ids.push(d.id);
        store.ingest(batch(vec![e], vec![d])).await.unwrap();
    }
    let heads = store.queue_heads().await.unwrap();
    assert_eq!(heads.backlog, 4);
    let firsts: Vec<(u128, u64)> = heads
        .heads
        .iter()
        .map(|h| (h.connection_id.0, h.first.0))
        .collect();
    assert_eq!(firsts, [(10, 100), (11, 50)]);
    let rows = store
        .queue_rows(vec![LaneRead {
            connection_id: ConnectionId(10),
            from: None,
            due_by: 250,
            limit: 5,
        }])
        .await
        .unwrap();
    let dues: Vec<u64> = rows[0].entries.iter().map(|e| e.due_ms).collect();
    assert_eq!(dues, [100, 200]);
    assert_eq!(rows[0].next, Some((300, ids[0])));

    let context = store
        .delivery_context(WorkspaceId(1), ids[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(context.event.name.as_str(), "alert.triggered");
    assert_eq!(context.rule.unwrap().id, RuleId(7));
    assert_eq!(context.connection.unwrap().id, ConnectionId(10));

    let attempt = |next| AttemptOutcome {
        workspace_id: WorkspaceId(1),
        delivery_id: ids[1],
        attempt: Attempt {
            at_ms: 5_000,
            duration_ms: 12,
            status_code: Some(410),
            error: Some("gone".into()),
            response: None,
        },
        next,
        connection_status: Some(ConnectionStatus::Disabled),
        pause_connection_until: None,
    };
    let retried = store
        .record_attempt(attempt(NextStep::RetryAt(9_000)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retried.status, DeliveryStatus::Retrying);
    let stale = QueueEntry {
        due_ms: 100,
        delivery_id: ids[1],
        workspace_id: WorkspaceId(1),
        connection_id: ConnectionId(10),
    };
    assert!(
        !store.drop_stale_queue_entry(stale).await.unwrap(),
        "moved already"
    );
    let live = QueueEntry {
        due_ms: 9_000,
        ..stale
    };
    assert!(
        !store.drop_stale_queue_entry(live).await.unwrap(),
        "live stays"
    );
    let dead = store
        .record_attempt(attempt(NextStep::Dead))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((dead.status, dead.attempt_count), (DeliveryStatus::Dead, 2));
    assert_eq!(
        store
            .connection(WorkspaceId(1), ConnectionId(10))
            .await
            .unwrap()
            .unwrap()
            .status,
        ConnectionStatus::Disabled
    );
    let (_, attempts) = store
        .delivery(WorkspaceId(1), ids[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].status_code, Some(410));
    assert_eq!(store.queue_len().await.unwrap(), 3);

    let dead_page = store
        .deliveries(
            WorkspaceId(1),
            DeliveryQuery {
                status: Some(DeliveryStatus::Dead),
                limit: 10,
                ..DeliveryQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(dead_page.deliveries.len(), 1);
    let requeued = store
        .requeue(
            WorkspaceId(1),
            Requeue::Matching {
                status: DeliveryStatus::Dead,
                since_ms: 0,
                limit: 10,
            },
            20_000,
        )
        .await
        .unwrap();
    assert_eq!(requeued.len(), 1);
    assert_eq!(requeued[0].due_ms, 20_000);
    let again = store
        .requeue(WorkspaceId(1), Requeue::One(ids[1]), 21_000)
        .await
        .unwrap();
    assert!(again.is_empty(), "already queued");
    let (queued, _) = store
        .delivery(WorkspaceId(1), ids[1])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(queued.status, DeliveryStatus::Retrying);
    assert_eq!(queued.next_attempt_at_ms, Some(20_000));
    finish(db, store).await;
}

#[tokio::test]
async fn retention_removes_old_finished_events_in_steps_and_holds_queued_ones() {
    let (db, store) = open().await;
    for ws in [1, 2] {
        store.create_workspace(workspace(ws)).await.unwrap();
    }
    // Per workspace: ten old events (one still queued), two recent.
    let mut queued_event = None;
    for ws in [1, 2] {
        for n in 0..12u64 {
            let at = if n < 10 { 1_000 + n } else { 900_000 + n };
            let e = event(ws, at, ws, "alert.triggered");
            let mut d = delivery(&e, 1, 10, 5);
            if !(ws == 1 && n == 3) {
                d.status = DeliveryStatus::Succeeded;
                d.next_attempt_at_ms = None;
            } else {
                queued_event = Some(e.id);
            }
            store.ingest(batch(vec![e], vec![d])).await.unwrap();
        }
    }
    let mut total = RetentionStep::default();
    let mut from = None;
    let mut steps = 0;
    loop {
        let step = store.purge_old_events(500_000, from, 12).await.unwrap();
        total.add(&step);
        steps += 1;
        match step.next {
            Some(next) => from = Some(next),
            None => break,
        }
        assert!(steps < 30);
    }
    assert!(steps > 2, "bounded steps ({steps})");
    assert_eq!((total.events, total.deliveries, total.held), (19, 19, 1));
    let left = store
        .events(
            WorkspaceId(1),
            EventQuery {
                limit: 100,
                ..EventQuery::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<EventId> = left.events.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(&queued_event.unwrap()));
    finish(db, store).await;
}

#[tokio::test]
async fn oauth_states_launch_tokens_and_threads_are_single_use_and_expire() {
    let (db, store) = open().await;
    store.put_oauth_state(7, 1_000).await.unwrap();
    store.put_oauth_state(8, 1_000).await.unwrap();
    let (a, b) = tokio::join!(
        store.consume_oauth_state(7, 500),
        store.consume_oauth_state(7, 500)
    );
    assert!(a.unwrap() ^ b.unwrap(), "single use");
    assert!(
        !store.consume_oauth_state(8, 1_000).await.unwrap(),
        "expired"
    );
    store.put_oauth_state(9, 1_000).await.unwrap();
    assert_eq!(store.purge_oauth_states(1_000).await.unwrap(), 1);

    assert!(store.use_launch_token(5, 2_000).await.unwrap());
    assert!(!store.use_launch_token(5, 2_000).await.unwrap());
    assert_eq!(store.purge_used_launch_tokens(1_999).await.unwrap(), 0);
    assert_eq!(store.purge_used_launch_tokens(2_000).await.unwrap(), 1);

    let key = ThreadKey {
        workspace: WorkspaceId(1),
        connection: ConnectionId(2),
        channel: "C1".into(),
        alert: "3:db:1".into(),
    };
    assert_eq!(store.slack_thread(key.clone()).await.unwrap(), None);
    store
        .save_slack_thread(key.clone(), "1.5".into(), 100)
        .await
        .unwrap();
    store
        .save_slack_thread(key.clone(), "2.5".into(), 200)
        .await
        .unwrap();
    assert_eq!(
        store.slack_thread(key.clone()).await.unwrap().as_deref(),
        Some("2.5")
    );
    assert_eq!(store.purge_slack_threads(200).await.unwrap(), 0);
    assert_eq!(store.purge_slack_threads(201).await.unwrap(), 1);
    finish(db, store).await;
}

/// A TCP front for the test server that can be cut and restored, so the
/// store sees its database vanish and come back.
struct Proxy {
    port: u16,
    up: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(url: &str) -> Self {
        let config = parse_url(url).unwrap();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let server = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                Upstream::Unix(dir.join(format!(".s.PGSQL.{port}")))
            }
            Some(tokio_postgres::config::Host::Tcp(host)) => {
                Upstream::Tcp(format!("{host}:{port}"))
            }
            None => Upstream::Tcp(format!("localhost:{port}")),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let (up, watch) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: the connection is refused
                }
                let server = server.clone();
                let mut cut = watch.clone();
                tokio::spawn(async move {
                    let copy = async {
                        match server {
                            Upstream::Unix(path) => {
                                let mut upstream = tokio::net::UnixStream::connect(path).await?;
                                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                            }
                            Upstream::Tcp(address) => {
                                let mut upstream = tokio::net::TcpStream::connect(address).await?;
                                tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                            }
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            port: proxy_port,
            up,
        }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[derive(Clone)]
enum Upstream {
    Unix(std::path::PathBuf),
    Tcp(String),
}

#[tokio::test]
async fn a_lost_database_makes_the_store_unwritable_until_a_probe_gets_through() {
    let db = TestDb::create().await;
    let url = db.settings.url.as_ref().unwrap().expose().to_string();
    let proxy = Proxy::start(&url).await;
    let database = parse_url(&url).unwrap();
    let through_proxy = PostgresConfig {
        url: Some(Secret::new(format!(
            "host=127.0.0.1 port={} user={} dbname={}",
            proxy.port,
            database.get_user().unwrap_or("postgres"),
            database.get_dbname().unwrap_or("postgres"),
        ))),
        ..db.settings.clone()
    };
    let store = PgStore::open(&through_proxy).await.unwrap();
    store.create_workspace(workspace(1)).await.unwrap();
    let mut writable = store.writable();
    assert!(*writable.borrow_and_update());

    proxy.set_up(false);
    let refused = store
        .ingest(batch(vec![event(1, 1, 1, "a")], vec![]))
        .await
        .expect_err("no database, no 202");
    assert!(refused.is_unavailable(), "{refused:?}");
    tokio::time::timeout(Duration::from_secs(10), writable.wait_for(|w| !*w))
        .await
        .expect("unwritable once the database is gone")
        .unwrap();
    assert!(
        store
            .ingest(batch(vec![event(1, 2, 1, "a")], vec![]))
            .await
            .is_err()
    );

    proxy.set_up(true);
    tokio::time::timeout(Duration::from_secs(15), writable.wait_for(|w| *w))
        .await
        .expect("writable again within the probe's backoff")
        .unwrap();
    let stored = store
        .ingest(batch(vec![event(1, 3, 1, "a")], vec![]))
        .await
        .unwrap();
    assert_eq!(stored, IngestOutcome::Stored { suppressed: vec![] });
    finish(db, store).await;
}

#[tokio::test]
async fn two_nodes_ingesting_one_idempotency_key_or_alert_at_once_store_it_once() {
    let (db, node_a) = open().await;
    let node_b = PgStore::open(&db.settings).await.unwrap();
    node_a.create_workspace(workspace(1)).await.unwrap();
    for round in 0..20u128 {
        let keyed = |n: u128| {
            let mut b = batch(vec![event(1, 1_000, round * 10 + n, "deploy.done")], vec![]);
            b.idempotency = Some(IdempotentAnswer {
                key: format!("key-{round}"),
                status: 202,
                response: b"first".to_vec(),
            });
            b
        };
        let (a, b) = tokio::join!(node_a.ingest(keyed(1)), node_b.ingest(keyed(2)));
        let stored = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Stored { .. }))
            .count();
        assert_eq!(stored, 1, "round {round}");

        let check = NoiseCheck {
            dedup_seconds: Some(3_600),
            max_per_hour: None,
            state: Some(AlertState::Triggered),
        };
        let alert = |n: u128| {
            let mut e = event(1, 2_000, round * 10 + 5 + n, "alert.triggered");
            e.resource_id = Some(format!("r{round}"));
            let d = delivery(&e, 1, 10, 2_000);
            let mut b = batch(vec![e], vec![d.clone()]);
            b.noise.insert(d.id, check);
            b
        };
        let (a, b) = tokio::join!(node_a.ingest(alert(1)), node_b.ingest(alert(2)));
        let suppressed = [a.unwrap(), b.unwrap()]
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Stored { suppressed } if suppressed.len() == 1))
            .count();
        assert_eq!(
            suppressed, 1,
            "round {round}: one of the two triggers is held back"
        );
    }
    node_b.close().await;
    finish(db, node_a).await;
}

/// Cross-node cache invalidation and locks (item 5).
mod changes;
