//! What other nodes must drop from their caches (`changes.rs`), and locks
//! that hold across nodes (`locks.rs`), against a real server.

use super::*;
use crate::store::postgres::changes::{self, ChangeFeed};
use crate::store::{CacheChange, SharedLock};
use std::time::Instant;

#[tokio::test]
async fn every_write_a_node_caches_is_reported_once_even_when_it_commits_late() {
    let (db, store) = open().await;
    let client = admin(&db).await;
    let mut feed = ChangeFeed::default();
    store.create_workspace(workspace(1)).await.unwrap();
    store.create_workspace(workspace(2)).await.unwrap();
    assert_eq!(
        feed.poll(&client).await.unwrap(),
        [],
        "creating changes no cache"
    );

    let ws = WorkspaceId(1);
    store.create_connection(connection(1, 10)).await.unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "create_connection");
    assert_eq!(
        feed.poll(&client).await.unwrap(),
        [],
        "a bump is reported once"
    );
    let patch = ConnectionPatch {
        name: Some("renamed".into()),
        ..ConnectionPatch::default()
    };
    store
        .update_connection(ws, ConnectionId(10), patch)
        .await
        .unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "update_connection");
    store.put_rule(rule(1, 20, 10), false).await.unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "put_rule");
    store.put_rule(rule(1, 20, 10), true).await.unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "put_rule update");
    assert!(store.delete_rule(ws, RuleId(20)).await.unwrap());
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "delete_rule");
    assert!(!store.delete_rule(ws, RuleId(20)).await.unwrap());
    assert_eq!(feed.poll(&client).await.unwrap(), [], "nothing deleted");
    let deleted = store.delete_connection(ws, ConnectionId(10)).await.unwrap();
    assert_eq!(deleted, DeleteConnection::Deleted);
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "delete_connection");
    store
        .rotate_keys(ws, [51; 32], [52; 32], [53; 32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "rotate_keys");

    // Stamped, then polled past, then committed: the next poll reads back
    // far enough to find it.
    let mut late = admin(&db).await;
    let txn = late.transaction().await.unwrap();
    changes::bump(&txn, WorkspaceId(2)).await.unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [], "not committed yet");
    txn.commit().await.unwrap();
    assert_eq!(feed.poll(&client).await.unwrap(), [WorkspaceId(2)]);

    assert!(store.delete_workspace(ws).await.unwrap());
    assert_eq!(feed.poll(&client).await.unwrap(), [ws], "delete_workspace");
    while store.purge_deleted(1_000).await.unwrap() {}
    let rows: i64 = client
        .query_one(
            "SELECT count(*) FROM workspace_changes WHERE workspace_id = $1",
            &[&ws.0.to_be_bytes().as_slice()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "a purged workspace's row goes with it");
    finish(db, store).await;
}

#[tokio::test]
async fn another_node_hears_of_a_change_within_a_second() {
    let (db, node_a) = open().await;
    let node_b = PgStore::open(&db.settings).await.unwrap();
    node_a.create_workspace(workspace(1)).await.unwrap();
    let mut changes = node_b.workspace_changes();
    // The feed's first poll has run once nothing is reported for a while.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(600), changes.recv()).await {
    }
    let rotated = Instant::now();
    node_a
        .rotate_keys(WorkspaceId(1), [51; 32], [52; 32], [53; 32])
        .await
        .unwrap();
    let heard = tokio::time::timeout(Duration::from_secs(1), changes.recv())
        .await
        .expect("heard within a second");
    assert_eq!(heard, Some(CacheChange::Workspace(WorkspaceId(1))));
    assert!(rotated.elapsed() < Duration::from_secs(1));
    node_b.close().await;
    finish(db, node_a).await;
}

#[tokio::test]
async fn a_shared_lock_is_held_by_one_node_at_a_time_and_let_go_on_every_path() {
    let (db, node_a) = open().await;
    let node_b = PgStore::open(&db.settings).await.unwrap();
    let lock = SharedLock::SlackRefresh(ConnectionId(7));
    let wait = Duration::from_secs(10);

    let held = node_a.shared_lock(lock, wait).await.unwrap();
    let refused = node_b.shared_lock(lock, Duration::from_millis(100)).await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "waits at most as long as asked: {refused:?}"
    );
    let other = SharedLock::SlackRefresh(ConnectionId(8));
    drop(node_b.shared_lock(other, wait).await.unwrap());

    // The second taker waits until the first guard drops.
    let waiter = {
        let node_b = node_b.clone();
        tokio::spawn(async move { node_b.shared_lock(lock, wait).await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "taken while node A held it");
    drop(held);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("taken once node A let go")
        .unwrap()
        .unwrap();

    // A holder that panics lets go too.
    let panicked = {
        let node_a = node_a.clone();
        tokio::spawn(async move {
            let _held = node_a.shared_lock(lock, wait).await.unwrap();
            panic!("the refresh failed badly");
        })
    };
    assert!(panicked.await.unwrap_err().is_panic());
    let again = tokio::time::timeout(Duration::from_secs(5), node_b.shared_lock(lock, wait))
        .await
        .expect("free after the panic");
    drop(again.unwrap());
    node_b.close().await;
    finish(db, node_a).await;
}
