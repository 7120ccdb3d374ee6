//! Per-rule noise control (`dedup_seconds`, `max_per_hour`) end to end:
//! suppressed deliveries are recorded, never sent, and the next delivery
//! that goes out says how many were held back.

use crate::helpers::{TestApp, TestWorkspace};
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Emits one `alert.<state>` for alert `id`; the event's delivery (the
/// workspace has one rule).
async fn emit(app: &TestApp, ws: &TestWorkspace, state: &str, id: &str) -> Value {
    let body = json!({
        "event": format!("alert.{state}"),
        "resource": "alert",
        "resource_id": id,
        "payload": {"severity": "high", "value": 1840},
    });
    let (status, accepted) = app
        .send(app.post("/v1/events", &ws.publishable_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["deliveries"], 1, "{accepted}");
    let event = accepted["id"].as_str().unwrap();
    let (status, event) = app
        .send(app.get(&format!("/v1/events/{event}"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    event["deliveries"][0].clone()
}

async fn with_rule(app: &TestApp, url: &str, noise: Value) -> (TestWorkspace, String) {
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, url).await;
    let rule = app.create_rule(&ws, &connection, noise).await;
    (ws, rule)
}

async fn deliveries_with_status(app: &TestApp, ws: &TestWorkspace, status: &str) -> Vec<Value> {
    let (code, page) = app
        .send(app.get(
            &format!("/v1/deliveries?status={status}&limit=500"),
            &ws.secret_key,
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{page}");
    page["data"].as_array().unwrap().clone()
}

/// When an event was received, from its delivery's `created_at`.
fn created_ms(delivery: &Value) -> u128 {
    let text = delivery["created_at"].as_str().unwrap();
    humantime::parse_rfc3339(text)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

async fn delivery(app: &TestApp, ws: &TestWorkspace, summary: &Value) -> Value {
    let id = summary["id"].as_str().unwrap();
    let (status, shown) = app
        .send(app.get(&format!("/v1/deliveries/{id}"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    shown
}

#[tokio::test]
async fn a_repeated_trigger_within_the_window_is_suppressed_and_sent_again_after_it() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let (ws, _) = with_rule(&app, &receiver.url, json!({"dedup_seconds": 2})).await;

    let first = delivery(&app, &ws, &emit(&app, &ws, "triggered", "a1").await).await;
    assert_eq!(first["alert"], "alert:a1");
    let sent = receiver.next().await.json();
    assert_eq!(sent["resource_id"], "a1");
    assert!(sent.get("suppressed_since_last").is_none());

    let repeat = delivery(&app, &ws, &emit(&app, &ws, "triggered", "a1").await).await;
    assert!(
        created_ms(&repeat) < created_ms(&first) + 2000,
        "the repeat must come within the window for this test to mean anything"
    );
    let other_alert = emit(&app, &ws, "triggered", "b2").await;
    assert_eq!(other_alert["alert"], "alert:b2");
    assert_ne!(other_alert["status"], "suppressed", "another alert is news");
    // The rule's next delivery to go out says one was held back before it.
    let next = receiver.next().await.json();
    assert_eq!(next["resource_id"], "b2");
    assert_eq!(next["suppressed_since_last"], 1);

    // Held back, visible, never queued nor attempted, and not retryable.
    assert_eq!(repeat["status"], "suppressed", "{repeat}");
    assert_eq!(repeat["alert"], "alert:a1");
    assert_eq!(repeat["attempts"], json!([]));
    assert_eq!(repeat["next_attempt_at"], Value::Null);
    let id = repeat["id"].as_str().unwrap();
    let (status, refused) = app
        .send(app.post(&format!("/v1/deliveries/{id}/retry"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "suppressed");
    let listed = deliveries_with_status(&app, &ws, "suppressed").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], repeat["id"]);

    // Once the window has passed the same alert goes out again.
    let window_over = created_ms(&first) + 2000;
    while now_ms() <= window_over {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let later = emit(&app, &ws, "triggered", "a1").await;
    assert_ne!(later["status"], "suppressed", "{later}");
    let again = receiver.next().await.json();
    assert_eq!(again["resource_id"], "a1");
    assert!(again.get("suppressed_since_last").is_none(), "{again}");
    assert!(receiver.try_next().is_none(), "nothing else was sent");
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test]
async fn max_per_hour_suppresses_the_rest_and_the_next_delivery_reports_the_count() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let (ws, _) = with_rule(&app, &receiver.url, json!({"max_per_hour": 2})).await;

    let mut statuses = Vec::new();
    for n in 0..5 {
        let delivery = emit(&app, &ws, "triggered", &format!("n{n}")).await;
        statuses.push(delivery["status"].as_str().unwrap().to_string());
    }
    assert_ne!(statuses[0], "suppressed");
    assert_ne!(statuses[1], "suppressed");
    assert_eq!(statuses[2..], ["suppressed", "suppressed", "suppressed"]);
    for _ in 0..2 {
        assert!(
            receiver
                .next()
                .await
                .json()
                .get("suppressed_since_last")
                .is_none()
        );
    }

    // Lifecycle events are never suppressed, even over the limit; the first
    // to go out carries the count.
    let resolved = emit(&app, &ws, "resolved", "n3").await;
    assert_ne!(resolved["status"], "suppressed");
    let sent = receiver.next().await.json();
    assert_eq!(sent["type"], "alert.resolved");
    assert_eq!(sent["suppressed_since_last"], 3);
    let acknowledged = emit(&app, &ws, "acknowledged", "n4").await;
    assert_ne!(acknowledged["status"], "suppressed");
    let sent = receiver.next().await.json();
    assert_eq!(sent["type"], "alert.acknowledged");
    assert!(sent.get("suppressed_since_last").is_none(), "{sent}");
    assert_eq!(delivery(&app, &ws, &resolved).await["suppressed_before"], 3);

    // A trigger past the limit is still held back; the bulk retry never
    // picks suppressed deliveries.
    let over = emit(&app, &ws, "triggered", "n5").await;
    assert_eq!(over["status"], "suppressed");
    let (status, body) = app
        .send(
            app.post("/v1/deliveries/retry", &ws.secret_key)
                .json(&json!({"status": "suppressed"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        deliveries_with_status(&app, &ws, "suppressed").await.len(),
        4
    );
    assert!(receiver.try_next().is_none());
}

#[tokio::test]
async fn resolved_and_acknowledged_are_never_deduplicated() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let (ws, _) = with_rule(&app, &receiver.url, json!({"dedup_seconds": 3600})).await;
    let mut sent = Vec::new();
    for state in [
        "triggered",
        "acknowledged",
        "acknowledged",
        "resolved",
        "resolved",
    ] {
        let delivery = emit(&app, &ws, state, "a1").await;
        assert_ne!(delivery["status"], "suppressed", "{state}: {delivery}");
        sent.push(receiver.next().await.json()["type"].clone());
    }
    assert_eq!(
        sent,
        [
            "alert.triggered",
            "alert.acknowledged",
            "alert.acknowledged",
            "alert.resolved",
            "alert.resolved"
        ]
    );
    // Resolving ends the alert's window: a new trigger is news.
    let retriggered = emit(&app, &ws, "triggered", "a1").await;
    assert_ne!(retriggered["status"], "suppressed");
    let duplicate = emit(&app, &ws, "triggered", "a1").await;
    assert_eq!(duplicate["status"], "suppressed");
}

#[tokio::test]
async fn concurrent_duplicate_triggers_do_not_both_pass() {
    let app = TestApp::spawn_for_delivery().await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    let (ws, _) = with_rule(&app, &receiver.url, json!({"dedup_seconds": 3600})).await;
    let emits = (0..16).map(|_| emit(&app, &ws, "triggered", "same"));
    let deliveries = futures::future::join_all(emits).await;
    let passed = deliveries
        .iter()
        .filter(|delivery| delivery["status"] != "suppressed")
        .count();
    assert_eq!(passed, 1, "{deliveries:?}");
    // A batch holding the same alert twice is decided in order too.
    let batch = json!({"events": [
        {"event": "alert.triggered", "resource": "alert", "resource_id": "pair", "payload": {}},
        {"event": "alert.triggered", "resource": "alert", "resource_id": "pair", "payload": {}},
    ]});
    let (status, accepted) = app
        .send(
            app.post("/v1/events/batch", &ws.publishable_key)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(
        deliveries_with_status(&app, &ws, "suppressed").await.len(),
        16
    );
}

#[tokio::test]
async fn noise_settings_are_validated_shown_and_cleared() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, "https://example.com/hook").await;
    let base = json!({"name": "r", "events": ["alert.*"], "connection_id": connection});
    for (field, value) in [
        ("dedup_seconds", json!(0)),
        ("dedup_seconds", json!(86_401)),
        ("dedup_seconds", json!(1.5)),
        ("dedup_seconds", json!("60")),
        ("max_per_hour", json!(0)),
        ("max_per_hour", json!(-1)),
        ("max_per_hour", json!(100_001)),
    ] {
        let mut body = base.clone();
        body[field] = value.clone();
        let (status, error) = app
            .send(app.post("/v1/rules", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{field}={value}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field),
            "{error}"
        );
    }
    let mut body = base.clone();
    body["dedup_seconds"] = json!(600);
    body["max_per_hour"] = json!(20);
    let (status, rule) = app
        .send(app.post("/v1/rules", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    assert_eq!(
        (rule["dedup_seconds"].clone(), rule["max_per_hour"].clone()),
        (json!(600), json!(20))
    );
    let path = format!("/v1/rules/{}", rule["id"].as_str().unwrap());
    let (status, rule) = app
        .send(
            app.patch(&path, &ws.secret_key)
                .json(&json!({"dedup_seconds": null, "name": "renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rule}");
    assert_eq!(rule["dedup_seconds"], Value::Null);
    assert_eq!(rule["max_per_hour"], 20, "an absent field is kept");
    let (_, shown) = app.send(app.get(&path, &ws.secret_key)).await;
    assert_eq!(shown["max_per_hour"], 20);
    assert_eq!(shown["dedup_seconds"], Value::Null);
    let (_, plain) = app
        .send(app.post("/v1/rules", &ws.secret_key).json(&base))
        .await;
    assert_eq!(plain["dedup_seconds"], Value::Null);
    assert_eq!(plain["max_per_hour"], Value::Null);
}
