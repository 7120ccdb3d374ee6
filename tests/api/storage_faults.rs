//! A full disk, simulated by a `FaultSwitch` on the database file: requests
//! get 503 `storage_unavailable` with `Retry-After`, `/readyz` turns 503,
//! nothing unacknowledged is stored, and the server recovers by itself once
//! the disk takes writes again.

use crate::helpers::{TestApp, example_event};
use crate::receiver::{Receiver, Reply};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use switchyard::store::FaultSwitch;

/// Sends and expects 503 `storage_unavailable` with a `Retry-After`.
async fn expect_storage_unavailable(request: reqwest::RequestBuilder) {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
}

async fn readyz(app: &TestApp) -> StatusCode {
    app.http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_full_disk_is_reported_and_recovered_from_without_a_restart() {
    if crate::backend::redb_only("a_full_disk_is_reported_and_recovered_from_without_a_restart") {
        return;
    }
    let faults = FaultSwitch::new();
    let app = TestApp::spawn_with_storage_faults(faults.clone(), |_| {}).await;
    let ws = app.create_workspace("acme").await;
    let mut acknowledged = Vec::new();
    for _ in 0..5 {
        acknowledged.push(app.emit_example(&ws.publishable_key).await);
    }
    assert_eq!(readyz(&app).await, StatusCode::OK);

    faults.fail_writes(true);
    // The commit that meets the full disk, then one refused without
    // reaching it, then a batch and a request with an idempotency key.
    let emit = || app.post("/v1/events", &ws.publishable_key);
    expect_storage_unavailable(emit().json(&example_event())).await;
    expect_storage_unavailable(emit().json(&example_event())).await;
    let batch = json!({"events": [example_event(), example_event()]});
    expect_storage_unavailable(
        app.post("/v1/events/batch", &ws.publishable_key)
            .json(&batch),
    )
    .await;
    expect_storage_unavailable(
        emit()
            .header("Idempotency-Key", "during-the-outage")
            .json(&example_event()),
    )
    .await;
    expect_storage_unavailable(app.http.get(format!("{}/readyz", app.url))).await;
    let metrics = app.get_text("/metrics").await;
    assert!(metrics.contains("switchyard_storage_errors_total"));

    faults.fail_writes(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&app).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "storage never recovered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    acknowledged.push(app.emit_example(&ws.publishable_key).await);
    // The key of a request that failed was not kept: it stores afresh.
    let response = emit()
        .header("Idempotency-Key", "during-the-outage")
        .json(&example_event())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().get("idempotent-replayed").is_none());
    let body: Value = response.json().await.unwrap();
    acknowledged.push(body["id"].as_str().unwrap().to_string());

    for id in &acknowledged {
        let (status, event) = app
            .send(app.get(&format!("/v1/events/{id}"), &ws.secret_key))
            .await;
        assert_eq!(status, StatusCode::OK, "{event}");
    }
    let listed: BTreeSet<String> = app
        .all_event_ids(&ws.secret_key)
        .await
        .into_iter()
        .collect();
    let expected: BTreeSet<String> = acknowledged.into_iter().collect();
    assert_eq!(listed, expected, "exactly the acknowledged events");
}

/// While storage refuses writes no outcome could be recorded, so the engine
/// must not send: a delivery retrying every second goes quiet until the
/// disk takes writes again, then goes on and succeeds.
#[tokio::test]
async fn the_delivery_engine_pauses_while_storage_fails_and_resumes_after() {
    if crate::backend::redb_only("the_delivery_engine_pauses_while_storage_fails_and_resumes_after")
    {
        return;
    }
    let faults = FaultSwitch::new();
    let app = TestApp::spawn_with_storage_faults(faults.clone(), |config| {
        config.delivery.allow_private_networks = true;
        config.delivery.retry_schedule = vec![1; 60];
    })
    .await;
    let mut receiver = Receiver::start(Reply::Status(503)).await;
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let (_, delivery) = app.emit_for_delivery(&ws).await;
    receiver.next().await;
    receiver.next().await;

    faults.fail_writes(true);
    // The next attempt's outcome cannot be stored; that failure is how the
    // store learns the disk is full.
    let deadline = Instant::now() + Duration::from_secs(20);
    while readyz(&app).await == StatusCode::OK {
        assert!(Instant::now() < deadline, "the failure was never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while receiver.try_next().is_some() {}
    // Three retry periods with storage down: nothing may be sent. (Proving
    // an absence needs a window of time.)
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver.try_next().is_none(),
        "an attempt ran while storage refused writes"
    );

    receiver.answer_by_default(Reply::Status(200));
    faults.fail_writes(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(&app).await != StatusCode::OK {
        assert!(Instant::now() < deadline, "storage never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for_delivery(&ws, &delivery, |delivery| delivery["status"] == "succeeded")
        .await;
}
