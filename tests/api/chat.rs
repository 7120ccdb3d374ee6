//! Microsoft Teams and Discord connections against their fakes: the
//! message shapes, the URL sealed at rest and masked in answers, error
//! classes, rate limits and the address guard.

use crate::fake_chat::{ChatReply, FakeChat};
use crate::helpers::{TestApp, TestWorkspace};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn connect(app: &TestApp, ws: &TestWorkspace, kind: &str, url: &str) -> Value {
    let body = json!({"type": kind, "name": format!("{kind} alerts"), "config": {"url": url}});
    let (status, created) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

/// A workspace whose `alert.*` events go to a new `kind` connection at the
/// fake; with the connection's answer.
async fn workspace_posting_to(
    app: &TestApp,
    kind: &str,
    fake: &FakeChat,
) -> (TestWorkspace, Value) {
    let ws = app.create_workspace("acme").await;
    let connection = connect(app, &ws, kind, &fake.url).await;
    let id = connection["id"].as_str().unwrap();
    app.create_rule(&ws, id, json!({})).await;
    (ws, connection)
}

async fn emit(app: &TestApp, ws: &TestWorkspace, name: &str) -> String {
    let mut event = crate::helpers::example_event();
    event["event"] = json!(name);
    let (status, answer) = app
        .send(app.post("/v1/events", &ws.publishable_key).json(&event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let event_id = answer["id"].as_str().unwrap();
    app.deliveries_of(ws, event_id).await.remove(0)
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |delivery| delivery["status"] == status
}

/// Everything stored (every file under the data dir, or the PostgreSQL
/// database), as lossy text, checked for `needle`.
async fn assert_not_stored(app: &TestApp, needle: &str) {
    let stored = crate::backend::stored_text(app.data_dir()).await;
    assert!(
        !stored.contains(needle),
        "{needle} in plain text in the store"
    );
}

/// The connection as `GET` and the list show it: the URL masked.
async fn assert_masked(app: &TestApp, ws: &TestWorkspace, connection: &Value, fake: &FakeChat) {
    let masked = format!("{}/********", fake.origin());
    assert_eq!(connection["config"], json!({"url": masked}));
    let id = connection["id"].as_str().unwrap();
    let (_, fetched) = app
        .send(app.get(&format!("/v1/connections/{id}"), &ws.secret_key))
        .await;
    assert_eq!(fetched["config"]["url"], masked);
    let (_, list) = app.send(app.get("/v1/connections", &ws.secret_key)).await;
    assert!(!list.to_string().contains(fake.credential), "{list}");
    assert!(!fetched.to_string().contains(fake.credential), "{fetched}");
}

#[tokio::test]
async fn teams_gets_adaptive_cards_naming_the_alert_state_and_the_url_stays_sealed() {
    let mut fake = FakeChat::teams().await;
    let app = TestApp::spawn_for_delivery().await;
    let (ws, connection) = workspace_posting_to(&app, "teams", &fake).await;
    assert_eq!(connection["type"], "teams");
    assert_masked(&app, &ws, &connection, &fake).await;

    let delivery = emit(&app, &ws, "alert.triggered").await;
    let request = fake.next_request().await;
    assert_eq!(request.headers["content-type"], "application/json");
    let body = request.body;
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(
        (&card["type"], &card["version"]),
        (&json!("AdaptiveCard"), &json!("1.4"))
    );
    assert_eq!(card["body"][0]["text"], "Triggered: 🟠 api_latency_p95");
    assert_eq!(
        card["body"][1]["text"],
        "[HIGH] api_latency_p95 is 1840 (threshold 1000)"
    );
    assert!(
        card["body"][2]["facts"]
            .as_array()
            .unwrap()
            .contains(&json!({"title": "Account", "value": "acc_casterly"}))
    );
    let done = app
        .wait_for_delivery(&ws, &delivery, status_is("succeeded"))
        .await;
    assert_eq!(done["attempts"][0]["status_code"], 202);

    emit(&app, &ws, "alert.resolved").await;
    let resolved = fake.next_request().await.body;
    let heading = &resolved["attachments"][0]["content"]["body"][0];
    assert_eq!(heading["text"], "Resolved: 🟠 api_latency_p95");
    assert_eq!(heading["color"], "Good");

    // The connection test posts a card too.
    let id = connection["id"].as_str().unwrap();
    let (status, result) = app
        .send(app.post(&format!("/v1/connections/{id}/test"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(
        (&result["ok"], &result["status_code"]),
        (&json!(true), &json!(202))
    );
    assert_eq!(fake.next_request().await.body["type"], "message");

    app.create_workspace("flush").await;
    assert_not_stored(&app, fake.credential).await;
}

#[tokio::test]
async fn teams_refusals_are_dead_and_outages_wait_for_retry_after() {
    let mut fake = FakeChat::teams().await;
    let app = TestApp::spawn_for_delivery().await;
    let (ws, _) = workspace_posting_to(&app, "teams", &fake).await;

    let refusal = json!({"error": {"code": "WorkflowTriggerIsNotEnabled", "message": "The workflow is disabled."}});
    fake.script([ChatReply::json(403, refusal)]);
    let delivery = emit(&app, &ws, "alert.triggered").await;
    fake.next_request().await;
    let dead = app
        .wait_for_delivery(&ws, &delivery, status_is("dead"))
        .await;
    let attempts = dead["attempts"].as_array().unwrap();
    assert_eq!(
        (attempts.len(), &attempts[0]["status_code"]),
        (1, &json!(403))
    );
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains("WorkflowTriggerIsNotEnabled"), "{error}");
    assert!(fake.received().is_empty(), "a refusal is not retried");

    // A 503 waits for its Retry-After (the schedule alone says 0 s).
    fake.script([ChatReply::json(
        503,
        json!({"error": {"code": "ServiceUnavailable", "message": "busy"}}),
    )
    .with_header("retry-after", "1")]);
    let delivery = emit(&app, &ws, "alert.triggered").await;
    let first = fake.next_request().await;
    let second = fake.next_request().await;
    let waited = second.at.duration_since(first.at);
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}"
    );
    let done = app
        .wait_for_delivery(&ws, &delivery, status_is("succeeded"))
        .await;
    assert_eq!(done["attempts"][0]["status_code"], 503);
}

#[tokio::test]
async fn discord_gets_an_embed_that_pings_no_one_and_the_url_stays_sealed() {
    let mut fake = FakeChat::discord().await;
    let app = TestApp::spawn_for_delivery().await;
    let (ws, connection) = workspace_posting_to(&app, "discord", &fake).await;
    assert_masked(&app, &ws, &connection, &fake).await;

    let delivery = emit(&app, &ws, "alert.acknowledged").await;
    let body = fake.next_request().await.body;
    assert_eq!(body["allowed_mentions"], json!({"parse": []}));
    let embed = &body["embeds"][0];
    assert_eq!(embed["title"], "Acknowledged: 🟠 api_latency_p95");
    assert_eq!(
        embed["description"],
        "[HIGH] api_latency_p95 is 1840 (threshold 1000)"
    );
    assert!(embed["color"].is_u64());
    assert!(embed["timestamp"].is_string());
    assert!(
        embed["fields"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "Value", "value": "1840", "inline": true}))
    );
    let done = app
        .wait_for_delivery(&ws, &delivery, status_is("succeeded"))
        .await;
    assert_eq!(done["attempts"][0]["status_code"], 204);

    // A changed URL is sealed and masked the same way.
    let id = connection["id"].as_str().unwrap();
    let (status, patched) = app
        .send(
            app.patch(&format!("/v1/connections/{id}"), &ws.secret_key)
                .json(&json!({"config": {"url": fake.url}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["config"]["url"],
        format!("{}/********", fake.origin())
    );

    app.create_workspace("flush").await;
    assert_not_stored(&app, fake.credential).await;
}

#[tokio::test]
async fn discord_rate_limits_wait_as_the_body_says_and_unknown_webhooks_are_dead() {
    let mut fake = FakeChat::discord().await;
    let app = TestApp::spawn_for_delivery().await;
    let (ws, _) = workspace_posting_to(&app, "discord", &fake).await;

    // The body's fractional `retry_after` wins over the rounded header (30 s
    // would outlast the test).
    fake.script([ChatReply::discord_rate_limit(1.2).with_header("retry-after", "30")]);
    let delivery = emit(&app, &ws, "alert.triggered").await;
    let limited = fake.next_request().await;
    let retried = fake.next_request().await;
    let waited = retried.at.duration_since(limited.at);
    assert!(
        waited >= Duration::from_millis(1100),
        "retried after {waited:?}"
    );
    let done = app
        .wait_for_delivery(&ws, &delivery, status_is("succeeded"))
        .await;
    assert_eq!(done["attempts"][0]["status_code"], 429);

    fake.script([ChatReply::json(
        404,
        json!({"message": "Unknown Webhook", "code": 10015}),
    )]);
    let delivery = emit(&app, &ws, "alert.triggered").await;
    fake.next_request().await;
    let dead = app
        .wait_for_delivery(&ws, &delivery, status_is("dead"))
        .await;
    let attempts = dead["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{dead}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("Unknown Webhook")
    );
}

#[tokio::test]
async fn private_urls_targets_and_bad_config_are_refused() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    for kind in ["teams", "discord"] {
        for config in [
            json!({"url": "http://127.0.0.1:9/api/webhooks/1/secret"}),
            json!({"url": "http://10.1.2.3/workflows/x"}),
            json!({"url": "http://[::1]/hook"}),
            json!({"url": "file:///etc/passwd"}),
            json!({}),
            json!({"url": "https://example.com/x", "headers": {}}),
        ] {
            let body = json!({"type": kind, "name": "x", "config": config});
            let (status, answer) = app
                .send(app.post("/v1/connections", &ws.secret_key).json(&body))
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("config"),
                "{answer}"
            );
        }
    }

    // These kinds take no rule target.
    let app = TestApp::spawn_for_delivery().await;
    let fake = FakeChat::discord().await;
    let ws = app.create_workspace("acme").await;
    let connection = connect(&app, &ws, "discord", &fake.url).await;
    let rule = json!({"name": "r", "events": ["*"], "connection_id": connection["id"], "target": {"channel": "C1"}});
    let (status, answer) = app
        .send(app.post("/v1/rules", &ws.secret_key).json(&rule))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no target"),
        "{answer}"
    );
}
