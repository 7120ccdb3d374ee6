//! The real binary, killed with SIGKILL mid-stream: every event answered
//! 202 must be there after a restart on the same data dir.

use crate::helpers::{ADMIN_TOKEN, ChildServer, example_event, send, workspace_from};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

const WRITERS: usize = 16;
const ACKS_BEFORE_KILL: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill() {
    if crate::backend::redb_only("every_acknowledged_event_survives_sigkill") {
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(data_dir.path(), Some(ADMIN_TOKEN)).await;
    let ws = server.create_workspace("crash").await;
    let acknowledged = ingest_until_killed(server, &ws.publishable_key).await;

    let server = ChildServer::start(data_dir.path(), Some(ADMIN_TOKEN)).await;
    assert_all_stored(&server, &ws.secret_key, &acknowledged).await;
    assert_eq!(
        server.terminate().await.code(),
        Some(0),
        "clean exit on SIGTERM"
    );
}

/// The recovery path of the write-ahead log: with no durable redb commit
/// between the workspace's creation and the kill, the acknowledged events
/// are in the log only (the redb file opened as the kill left it holds
/// fewer), and a restart applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_only_in_the_write_ahead_log_survive_sigkill() {
    if crate::backend::redb_only("events_only_in_the_write_ahead_log_survive_sigkill") {
        return;
    }
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("SWITCHYARD_STORAGE__WAL_CHECKPOINT_MS", "60000")];
    let server = ChildServer::start_with_env(data_dir.path(), Some(ADMIN_TOKEN), &env).await;
    let ws = server.create_workspace("crash").await;
    let acknowledged = ingest_until_killed(server, &ws.publishable_key).await;

    let in_redb_alone = {
        use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
        const EVENTS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("events");
        let db = redb::Database::open(data_dir.path().join("switchyard.redb")).unwrap();
        let read = db.begin_read().unwrap();
        read.open_table(EVENTS).unwrap().len().unwrap() as usize
    };
    assert!(
        in_redb_alone < acknowledged.len(),
        "the kill should leave acknowledged events in the log only: redb alone holds \
         {in_redb_alone} of {}",
        acknowledged.len()
    );

    let server = ChildServer::start_with_env(data_dir.path(), Some(ADMIN_TOKEN), &env).await;
    assert_all_stored(&server, &ws.secret_key, &acknowledged).await;
    assert_eq!(server.terminate().await.code(), Some(0));
}

/// Posts events from `WRITERS` tasks until `ACKS_BEFORE_KILL` were answered
/// 202, then SIGKILLs the server; returns the ids answered 202.
async fn ingest_until_killed(server: ChildServer, publishable_key: &str) -> HashSet<String> {
    let http = reqwest::Client::new();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let enough = Arc::new(Notify::new());
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let (http, url, key) = (
            http.clone(),
            server.url.clone(),
            publishable_key.to_string(),
        );
        let (acknowledged, enough) = (acknowledged.clone(), enough.clone());
        writers.push(tokio::spawn(async move {
            loop {
                let sent = http
                    .post(format!("{url}/v1/events"))
                    .bearer_auth(&key)
                    .json(&example_event())
                    .send()
                    .await;
                // Once the server is gone, requests fail: the writer is done.
                let Ok(response) = sent else { return };
                if response.status() != StatusCode::ACCEPTED {
                    return;
                }
                let Ok(body) = response.json::<serde_json::Value>().await else {
                    return;
                };
                let mut acked = acknowledged.lock().unwrap();
                acked.push(body["id"].as_str().unwrap().to_string());
                if acked.len() >= ACKS_BEFORE_KILL {
                    enough.notify_one();
                }
            }
        }));
    }
    enough.notified().await;
    server.kill().await;
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(acknowledged.len() >= ACKS_BEFORE_KILL);
    acknowledged
}

async fn assert_all_stored(server: &ChildServer, secret_key: &str, acknowledged: &HashSet<String>) {
    let http = reqwest::Client::new();
    let stored: HashSet<String> = {
        let mut ids = HashSet::new();
        let mut cursor = String::new();
        loop {
            let (status, body) = send(
                http.get(format!("{}/v1/events?limit=500{cursor}", server.url))
                    .bearer_auth(secret_key),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            for event in body["data"].as_array().unwrap() {
                ids.insert(event["id"].as_str().unwrap().to_string());
            }
            match body["next"].as_str() {
                Some(next) => cursor = format!("&after={next}"),
                None => break,
            }
        }
        ids
    };
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost: {lost:?}",
        lost.len()
    );
}

/// SIGKILL while deliveries are in flight and queued: after a restart every
/// acknowledged event reaches the receiver at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_and_queued_deliveries_survive_sigkill() {
    if crate::backend::redb_only("in_flight_and_queued_deliveries_survive_sigkill") {
        return;
    }
    use crate::receiver::{Receiver, Reply};
    const EVENTS: usize = 40;
    let data_dir = tempfile::tempdir().unwrap();
    let env = [("SWITCHYARD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true")];
    let server = ChildServer::start_with_env(data_dir.path(), Some(ADMIN_TOKEN), &env).await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    // The connection's first eight attempts (its in-flight cap) hang, so
    // the kill finds eight in flight and the rest queued behind them.
    receiver.script(std::iter::repeat_n(Reply::Hang, 8));
    let http = reqwest::Client::new();
    let url = server.url.clone();
    let (_, body) = send(
        http.post(format!("{url}/v1/workspaces"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "crash"})),
    )
    .await;
    let ws = workspace_from(&body);
    let (status, connection) = send(
        http.post(format!("{url}/v1/connections"))
            .bearer_auth(&ws.secret_key)
            .json(&json!({"type": "webhook", "name": "hook", "config": {"url": receiver.url}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let (status, _) = send(
        http.post(format!("{url}/v1/rules"))
            .bearer_auth(&ws.secret_key)
            .json(&json!({"name": "all", "events": ["*"], "connection_id": connection["id"]})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut acknowledged = HashSet::new();
    for _ in 0..EVENTS {
        let (status, body) = send(
            http.post(format!("{url}/v1/events"))
                .bearer_auth(&ws.publishable_key)
                .json(&example_event()),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert_eq!(body["deliveries"], 1);
        acknowledged.insert(body["id"].as_str().unwrap().to_string());
    }
    let mut arrived = HashSet::new();
    for _ in 0..8 {
        arrived.insert(
            receiver.next().await.json()["event_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    server.kill().await;
    receiver.release();

    let server = ChildServer::start_with_env(data_dir.path(), Some(ADMIN_TOKEN), &env).await;
    while !acknowledged.is_subset(&arrived) {
        let request = receiver.next().await;
        arrived.insert(request.json()["event_id"].as_str().unwrap().to_string());
    }
    server.kill().await;
}
