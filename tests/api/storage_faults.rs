//! A full disk, simulated by a `FaultSwitch` on the database file: requests
//! get 503 `storage_unavailable` with `Retry-After`, `/readyz` turns 503,
//! nothing unacknowledged is stored, and the server recovers by itself once
//! the disk takes writes again.

use crate::helpers::{TestApp, example_event};
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
    let faults = FaultSwitch::new();
    let app = TestApp::spawn_with_storage_faults(faults.clone()).await;
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
    let metrics = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
