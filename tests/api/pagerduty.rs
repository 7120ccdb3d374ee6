//! PagerDuty connections end to end, against the fake Events API v2.

use crate::fake_pagerduty::{FakePagerDuty, PagerDutyReply, ROUTING_KEY};
use crate::helpers::{TestApp, TestWorkspace, example_event};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

fn status_is(expected: &'static str) -> impl Fn(&Value) -> bool {
    move |delivery| delivery["status"] == expected
}

/// Quick retries, the events URL at the fake.
async fn app_with(fake: &FakePagerDuty) -> TestApp {
    let events_url = fake.events_url.clone();
    TestApp::spawn_with(move |config| {
        config.delivery.retry_schedule = vec![0, 0];
        config.delivery.timeout_seconds = 5;
        config.pagerduty.events_url = events_url;
    })
    .await
}

async fn create_pagerduty(app: &TestApp, ws: &TestWorkspace) -> Value {
    let body =
        json!({"type": "pagerduty", "name": "On-call", "config": {"routing_key": ROUTING_KEY}});
    let (status, answer) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

/// A workspace whose `alert.*` events page through PagerDuty; with the
/// connection's id.
async fn workspace_paging(app: &TestApp) -> (TestWorkspace, String) {
    let ws = app.create_workspace("acme").await;
    let connection = create_pagerduty(app, &ws).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.create_rule(&ws, &connection, json!({})).await;
    (ws, connection)
}

/// Emits the example alert under another name; its one delivery's id.
async fn emit(app: &TestApp, ws: &TestWorkspace, name: &str) -> String {
    let mut event = example_event();
    event["event"] = json!(name);
    let (status, answer) = app
        .send(app.post("/v1/events", &ws.publishable_key).json(&event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let deliveries = app.deliveries_of(ws, answer["id"].as_str().unwrap()).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    deliveries[0].clone()
}

#[tokio::test]
async fn trigger_acknowledge_and_resolve_reach_one_alert() {
    let mut fake = FakePagerDuty::start().await;
    let app = app_with(&fake).await;
    let (ws, _) = workspace_paging(&app).await;

    let delivery = emit(&app, &ws, "alert.triggered").await;
    let trigger = fake.next_request().await;
    assert_eq!(trigger.path, "/v2/enqueue");
    assert_eq!(trigger.header("content-type"), "application/json");
    assert_eq!(
        trigger.header("authorization"),
        "",
        "the key is in the body"
    );
    let dedup_key = format!("{}:5:alert:alrt_tyrion_42", ws.id);
    assert_eq!(
        trigger.body,
        json!({
            "routing_key": ROUTING_KEY,
            "event_action": "trigger",
            "dedup_key": dedup_key,
            "payload": {
                "summary": "[HIGH] api_latency_p95 is 1840 (threshold 1000)",
                "source": "api_latency_p95",
                "severity": "error",
                "timestamp": "2026-04-17T16:02:00Z",
                "custom_details": example_event()["payload"],
            },
        })
    );
    let done = app
        .wait_for_delivery(&ws, &delivery, status_is("succeeded"))
        .await;
    assert_eq!(done["attempts"][0]["status_code"], 202);

    for (name, action) in [
        ("alert.acknowledged", "acknowledge"),
        ("alert.resolved", "resolve"),
    ] {
        let delivery = emit(&app, &ws, name).await;
        let request = fake.next_request().await;
        assert_eq!(
            request.body,
            json!({"routing_key": ROUTING_KEY, "event_action": action, "dedup_key": dedup_key}),
            "{name}"
        );
        app.wait_for_delivery(&ws, &delivery, status_is("succeeded"))
            .await;
    }
    assert!(fake.received().is_empty(), "one request per event");
}

#[tokio::test]
async fn a_refused_event_is_dead_with_pagerduty_s_message() {
    let mut fake = FakePagerDuty::start().await;
    fake.script([PagerDutyReply::invalid(&[
        "'payload.summary' is missing or blank",
    ])]);
    let app = app_with(&fake).await;
    let (ws, _) = workspace_paging(&app).await;

    let delivery = emit(&app, &ws, "alert.triggered").await;
    let dead = app
        .wait_for_delivery(&ws, &delivery, status_is("dead"))
        .await;
    let attempts = dead["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "a 400 is not retried: {dead}");
    assert_eq!(attempts[0]["status_code"], 400);
    assert_eq!(
        attempts[0]["error"],
        "PagerDuty refused the event: Event object is invalid: \
         'payload.summary' is missing or blank"
    );
    fake.next_request().await;
    assert!(fake.received().is_empty());
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_after_retry_after() {
    let mut fake = FakePagerDuty::start().await;
    fake.script([
        PagerDutyReply::status(429).with_header("retry-after", "1"),
        PagerDutyReply::status(502),
    ]);
    let app = app_with(&fake).await;
    let (ws, _) = workspace_paging(&app).await;

    let delivery = emit(&app, &ws, "alert.triggered").await;
    let throttled = fake.next_request().await;
    let after_wait = fake.next_request().await;
    let accepted = fake.next_request().await;
    assert!(
        after_wait.at - throttled.at >= Duration::from_millis(950),
        "Retry-After: 1 was not honoured: {:?}",
        after_wait.at - throttled.at
    );
    assert_eq!(after_wait.body, throttled.body);
    assert_eq!(accepted.body, throttled.body);
    let done = app
        .wait_for_delivery(&ws, &delivery, status_is("succeeded"))
        .await;
    let codes: Vec<&Value> = done["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| &attempt["status_code"])
        .collect();
    assert_eq!(codes, [&json!(429), &json!(502), &json!(202)], "{done}");
}

#[tokio::test]
async fn the_routing_key_is_sealed_at_rest_and_masked_in_answers() {
    let mut fake = FakePagerDuty::start().await;
    let app = app_with(&fake).await;
    let ws = app.create_workspace("acme").await;
    let masked = json!({"routing_key": "********"});

    let created = create_pagerduty(&app, &ws).await;
    assert_eq!(created["type"], "pagerduty");
    assert_eq!(created["config"], masked);
    let id = created["id"].as_str().unwrap().to_string();
    let (_, fetched) = app
        .send(app.get(&format!("/v1/connections/{id}"), &ws.secret_key))
        .await;
    assert_eq!(fetched["config"], masked);
    let (_, list) = app.send(app.get("/v1/connections", &ws.secret_key)).await;
    let new_key = "NewRoutingKeyOfTheOnCallService2";
    let (status, patched) = app
        .send(
            app.patch(&format!("/v1/connections/{id}"), &ws.secret_key)
                .json(&json!({"config": {"routing_key": new_key}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["config"], masked);

    // The test send uses the new key; its answer names no key either.
    let (status, tested) = app
        .send(app.post(&format!("/v1/connections/{id}/test"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{tested}");
    assert_eq!(tested["ok"], true, "{tested}");
    assert_eq!(fake.next_request().await.body["routing_key"], new_key);

    // A rule takes no target.
    let (status, refused) = app
        .send(app.post("/v1/rules", &ws.secret_key).json(&json!({
            "name": "page", "events": ["alert.*"], "connection_id": id, "target": {"channel": "C1"},
        })))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    app.create_rule(&ws, &id, json!({})).await;

    for answer in [&created, &fetched, &list, &patched, &tested] {
        let text = answer.to_string();
        assert!(
            !text.contains(ROUTING_KEY) && !text.contains(new_key),
            "{text}"
        );
    }

    // A key that is not an integration key is refused up front.
    let (status, refused) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&json!({
            "type": "pagerduty", "name": "bad", "config": {"routing_key": "not-a-key"},
        })))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("routing_key"),
        "{refused}"
    );

    // No file in the data dir holds either key in plain text.
    app.create_workspace("flush").await;
    let haystack = crate::backend::stored_text(app.data_dir()).await;
    for key in [ROUTING_KEY, new_key] {
        assert!(!haystack.contains(key), "{key} in plain text in the store");
    }
}
