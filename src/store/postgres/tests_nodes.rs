//! Two nodes (two `PgStore`s, two node ids) on one database: who delivers
//! which connection, takeovers, outcomes only by the lease holder, wake-ups,
//! and the upgrade from schema 1. Helpers are `tests.rs`'s.

use super::tests::{
    TestDb, admin, admin_client, batch, connection, delivery, event, finish, open, rule, workspace,
};
use super::*;
use crate::model::DeliveryStatus;
use crate::store::NextStep;
use std::time::Duration;

fn options() -> NodeOptions {
    NodeOptions {
        lease: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(5),
    }
}

/// Node A on a fresh database with workspace 1, connections 10 to 13 and a
/// rule; node B on the same database.
async fn two_nodes() -> (TestDb, PgStore, PgStore) {
    let (db, a) = open().await;
    a.create_workspace(workspace(1)).await.unwrap();
    for con in 10..14 {
        a.create_connection(connection(1, con)).await.unwrap();
    }
    a.put_rule(rule(1, 7, 10), false).await.unwrap();
    let b = PgStore::open_node(&db.settings, options()).await.unwrap();
    (db, a, b)
}

/// Queues one delivery to `con` through `node`, due long ago.
async fn queue(node: &PgStore, con: u128, n: u128) -> DeliveryId {
    let e = event(1, 1_000 + n as u64, n, "alert.triggered");
    let d = delivery(&e, 1, con, 1_000);
    node.ingest(batch(vec![e], vec![d.clone()])).await.unwrap();
    d.id
}

fn outcome(delivery: DeliveryId, pause_until: Option<u64>) -> AttemptOutcome {
    AttemptOutcome {
        workspace_id: WorkspaceId(1),
        delivery_id: delivery,
        attempt: Attempt {
            at_ms: 5_000,
            duration_ms: 3,
            status_code: Some(429),
            error: Some("slow down".into()),
            response: None,
        },
        next: NextStep::RetryAt(9_000),
        connection_status: None,
        pause_connection_until: pause_until,
    }
}

fn head_connections(heads: &QueueHeads) -> Vec<u128> {
    heads
        .heads
        .iter()
        .map(|head| head.connection_id.0)
        .collect()
}

async fn close_both(db: TestDb, a: PgStore, b: PgStore) {
    b.close().await;
    finish(db, a).await;
}

#[tokio::test]
async fn a_connection_one_node_holds_is_not_delivered_by_the_other() {
    let (db, a, b) = two_nodes().await;
    queue(&a, 10, 1).await;
    let con = ConnectionId(10);
    assert!(a.may_deliver(con), "the ingesting node claimed it");
    assert!(!b.may_deliver(con));
    assert_eq!(head_connections(&a.queue_heads().await.unwrap()), [10]);
    let heads = b.queue_heads().await.unwrap();
    assert!(heads.heads.is_empty(), "{:?}", heads.heads);
    assert_eq!(heads.backlog, 1, "the backlog counts every node's entries");
    let read = LaneRead {
        connection_id: con,
        from: None,
        due_by: u64::MAX,
        limit: 10,
    };
    assert!(
        b.queue_rows(vec![read]).await.unwrap()[0]
            .entries
            .is_empty()
    );
    assert_eq!(a.queue_rows(vec![read]).await.unwrap()[0].entries.len(), 1);
    close_both(db, a, b).await;
}

/// Waits until `count` listeners are connected (their last statement was
/// `LISTEN`), none of them one of `gone`; their backend pids.
async fn wait_for_listeners(db: &TestDb, count: usize, gone: &[i32]) -> Vec<i32> {
    let watcher = admin(db).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let listening: Vec<i32> = watcher
            .query(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND query LIKE 'LISTEN %'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        if listening.len() == count && !listening.iter().any(|pid| gone.contains(pid)) {
            return listening;
        }
        assert!(tokio::time::Instant::now() < deadline, "listeners not up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ingest_on_another_node_leaves_the_entries_to_the_holder_and_wakes_it() {
    let (db, a, b) = two_nodes().await;
    queue(&a, 10, 1).await;
    wait_for_listeners(&db, 2, &[]).await;
    let mut woken = a.queue_wakeups().unwrap();
    woken.borrow_and_update();

    let delivery = queue(&b, 10, 2).await;
    assert!(!b.may_deliver(ConnectionId(10)), "A still holds it");
    assert!(b.queue_heads().await.unwrap().heads.is_empty());
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("A is woken")
        .unwrap();
    let rows = a
        .queue_rows(vec![LaneRead {
            connection_id: ConnectionId(10),
            from: None,
            due_by: u64::MAX,
            limit: 10,
        }])
        .await
        .unwrap();
    assert!(rows[0].entries.iter().any(|e| e.delivery_id == delivery));
    close_both(db, a, b).await;
}

#[tokio::test]
async fn a_broken_listening_connection_is_reopened_and_wakes_its_node() {
    let (db, a, b) = two_nodes().await;
    queue(&a, 10, 1).await;
    let first = wait_for_listeners(&db, 2, &[]).await;
    admin(&db)
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int4[]) AS pid",
            &[&first],
        )
        .await
        .unwrap();
    // Reopened on the listener's backoff (0.5 s first).
    wait_for_listeners(&db, 2, &first).await;
    let mut woken = a.queue_wakeups().unwrap();
    woken.borrow_and_update();
    queue(&b, 10, 2).await;
    tokio::time::timeout(Duration::from_secs(5), woken.changed())
        .await
        .expect("A is woken through its new connection")
        .unwrap();
    close_both(db, a, b).await;
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_pause_and_the_old_holder_records_nothing() {
    let (db, a, b) = two_nodes().await;
    let first = queue(&a, 10, 1).await;
    let second = queue(&a, 10, 2).await;
    let recorded = a
        .record_attempt(outcome(first, Some(4_000_000_000_000)))
        .await
        .unwrap();
    assert!(recorded.is_some(), "A holds the lease: recorded");

    // A stalls: its lease runs out (made so by hand) and B claims.
    admin(&db)
        .await
        .execute("UPDATE connection_leases SET lease_until_ms = 0", &[])
        .await
        .unwrap();
    let heads = b.queue_heads().await.unwrap();
    assert_eq!(head_connections(&heads), [10]);
    assert_eq!(
        heads.heads[0].paused_until_ms, 4_000_000_000_000,
        "the stored pause comes with the takeover"
    );
    assert!(b.may_deliver(ConnectionId(10)));

    let lost = a.record_attempt(outcome(second, None)).await.unwrap();
    assert!(lost.is_none(), "A lost the lease: nothing recorded");
    assert!(!a.may_deliver(ConnectionId(10)), "and A knows it");
    let (untouched, attempts) = b.delivery(WorkspaceId(1), second).await.unwrap().unwrap();
    assert_eq!(
        (untouched.status, untouched.attempt_count, attempts.len()),
        (DeliveryStatus::Pending, 0, 0)
    );
    assert!(
        b.record_attempt(outcome(second, None))
            .await
            .unwrap()
            .is_some()
    );
    close_both(db, a, b).await;
}

#[tokio::test]
async fn unowned_connections_are_claimed_a_fair_share_per_refill() {
    let (db, a, b) = two_nodes().await;
    for con in 10..14 {
        queue(&a, con, con).await;
    }
    // Nobody holds them (their node died long ago).
    admin(&db)
        .await
        .execute("DELETE FROM connection_leases", &[])
        .await
        .unwrap();
    // A refill claims (unowned ÷ live nodes) rounded up: 4 ÷ 2, then 2 ÷ 2.
    assert_eq!(a.queue_heads().await.unwrap().heads.len(), 2);
    assert_eq!(b.queue_heads().await.unwrap().heads.len(), 1);
    assert_eq!(b.queue_heads().await.unwrap().heads.len(), 2);
    assert_eq!(a.queue_heads().await.unwrap().heads.len(), 2, "none left");
    for con in 10..14 {
        assert_ne!(
            a.may_deliver(ConnectionId(con)),
            b.may_deliver(ConnectionId(con)),
            "connection {con} has exactly one node"
        );
    }
    close_both(db, a, b).await;
}

#[tokio::test]
async fn closing_a_node_releases_its_connections_to_the_others() {
    let (db, a, b) = two_nodes().await;
    queue(&a, 10, 1).await;
    assert!(b.queue_heads().await.unwrap().heads.is_empty());
    a.close().await;
    assert_eq!(head_connections(&b.queue_heads().await.unwrap()), [10]);
    let nodes: i64 = admin(&db)
        .await
        .query_one("SELECT count(*) FROM nodes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(nodes, 1, "only B is left");
    close_both(db, a, b).await;
}

#[tokio::test]
async fn schema_1_with_data_upgrades_to_the_latest() {
    let db = TestDb::create().await;
    let client = admin_client(db.settings.url.as_ref().unwrap().expose()).await;
    client
        .batch_execute(migrate::MIGRATIONS[0].sql)
        .await
        .unwrap();
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                                             applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO schema_migrations (version, name) VALUES (1, 'initial');
             INSERT INTO delivery_queue (connection_id, due_ms, delivery_id, workspace_id)
             VALUES ('\\x0a', 5, '\\x0b', '\\x01');",
        )
        .await
        .unwrap();
    let (report, _) = PgStore::migrate(&db.settings).await.unwrap();
    assert_eq!(report.from, 1);
    assert_eq!(report.applied[0], (2, "shared_queue"));
    assert_eq!(report.to(), migrate::latest_version());
    let kept: i64 = client
        .query_one("SELECT count(*) FROM delivery_queue", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 1, "queued entries survive the upgrade");
    let old_columns: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.columns
             WHERE table_name = 'delivery_queue' AND column_name IN ('claimed_by', 'lease_until_ms')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(old_columns, 0);
    drop(client);
    db.drop_database().await;
}
