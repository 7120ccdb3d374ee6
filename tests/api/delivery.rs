//! The delivery engine end to end against a local recording receiver.

use crate::helpers::{TestApp, TestWorkspace, example_event};
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard::config::Config;
use switchyard::destinations::webhook::signing::{WebhookSecret, verify};
use switchyard::store::FaultSwitch;

fn status_is(expected: &'static str) -> impl Fn(&Value) -> bool {
    move |delivery| delivery["status"] == expected
}

/// `host:port` of a URL with a port.
fn authority(url: &str) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    format!("{}:{}", url.host_str().unwrap(), url.port().unwrap())
}

fn verify_signature(secret: &str, request: &crate::receiver::Recorded) -> bool {
    let secret = WebhookSecret::parse(secret).unwrap();
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    verify(
        &secret,
        request.header("webhook-id"),
        timestamp,
        &request.body,
        request.header("webhook-signature"),
    )
}

#[tokio::test]
async fn a_matching_event_reaches_the_webhook_signed() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws = app.create_workspace("acme").await;
    let (connection, secret) = app.create_webhook(&ws, &receiver.url).await;
    let rule = app
        .create_rule(&ws, &connection, json!({"min_severity": "high"}))
        .await;

    let (status, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(accepted["deliveries"], 1);
    let event_id = accepted["id"].as_str().unwrap();

    let request = receiver.next().await;
    assert!(verify_signature(&secret, &request), "signature verifies");
    assert!(request.header("webhook-signature").starts_with("v1,"));
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(
        request.header("host"),
        authority(&receiver.url),
        "the target's host and port"
    );
    let body = request.json();
    assert_eq!(body["type"], "alert.triggered");
    assert_eq!(body["event_id"], event_id);
    assert_eq!(body["resource"], "alert");
    assert_eq!(body["resource_id"], "alrt_tyrion_42");
    assert_eq!(body["data"], example_event()["payload"]);
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    let deliveries = app.deliveries_of(&ws, event_id).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(
        request.header("webhook-id"),
        deliveries[0],
        "webhook-id is the delivery id"
    );
    let delivery = app
        .wait_for_delivery(&ws, &deliveries[0], status_is("succeeded"))
        .await;
    assert_eq!(delivery["rule_id"], rule.as_str());
    assert_eq!(delivery["connection_id"], connection.as_str());
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivery["attempts"][0]["status_code"], 200);
    assert_eq!(delivery["attempts"][0]["response"], "answer body");
    assert_eq!(delivery["next_attempt_at"], Value::Null);

    // Below the rule's severity: stored, not delivered.
    let mut low = example_event();
    low["payload"]["severity"] = json!("low");
    let (_, accepted) = app
        .send(app.post("/v1/events", &ws.publishable_key).json(&low))
        .await;
    assert_eq!(accepted["deliveries"], 0);
}

#[tokio::test]
async fn failures_are_retried_with_the_same_webhook_id_until_success() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500), Reply::Status(500)]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let event_id = app.emit_example(&ws.publishable_key).await;

    let ids: Vec<String> = [
        receiver.next().await,
        receiver.next().await,
        receiver.next().await,
    ]
    .iter()
    .map(|request| request.header("webhook-id").to_string())
    .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let delivery_id = &app.deliveries_of(&ws, &event_id).await[0];
    let delivery = app
        .wait_for_delivery(&ws, delivery_id, status_is("succeeded"))
        .await;
    let codes: Vec<&Value> = delivery["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status_code"])
        .collect();
    assert_eq!(codes, [&json!(500), &json!(500), &json!(200)]);
    assert_eq!(
        delivery["attempts"][0]["error"],
        "HTTP 500 Internal Server Error"
    );
    assert_eq!(delivery["attempt_count"], 3);
}

#[tokio::test]
async fn an_exhausted_schedule_is_dead_and_a_manual_retry_succeeds() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(502), Reply::Status(502), Reply::Status(502)]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let (_, delivery_id) = app.emit_for_delivery(&ws).await;
    let dead = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    assert_eq!(
        dead["attempts"].as_array().unwrap().len(),
        3,
        "two delays: three attempts"
    );
    for _ in 0..3 {
        receiver.next().await;
    }

    let (status, listed) = app
        .send(app.get("/v1/deliveries?status=dead", &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed["data"][0]["id"], delivery_id.as_str());

    let path = format!("/v1/deliveries/{delivery_id}/retry");
    let (status, body) = app.send(app.post(&path, &ws.secret_key)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let request = receiver.next().await;
    assert_eq!(request.header("webhook-id"), delivery_id);
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("succeeded"))
        .await;
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 4);

    // Retrying a queued delivery is a conflict; an unknown one is 404.
    let (status, _) = app
        .send(app.post(
            "/v1/deliveries/dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV/retry",
            &ws.secret_key,
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bulk_retry_queues_every_dead_delivery() {
    let app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.retry_schedule = vec![];
    })
    .await;
    let receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let event = app.emit_example(&ws.publishable_key).await;
        deliveries.push(app.deliveries_of(&ws, &event).await.remove(0));
    }
    for delivery in &deliveries {
        app.wait_for_delivery(&ws, delivery, status_is("dead"))
            .await;
    }
    let (status, body) = app
        .send(
            app.post("/v1/deliveries/retry", &ws.secret_key)
                .json(&json!({"status": "dead", "since": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], 3);
    for delivery in &deliveries {
        app.wait_for_delivery(&ws, delivery, status_is("succeeded"))
            .await;
    }
    let (status, _) = app
        .send(
            app.post("/v1/deliveries/retry", &ws.secret_key)
                .json(&json!({"status": "pending"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::WithHeader(429, "retry-after", "1")]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let event_id = app.emit_example(&ws.publishable_key).await;
    let first = receiver.next().await;
    let delivery_id = app.deliveries_of(&ws, &event_id).await.remove(0);
    let retrying = app
        .wait_for_delivery(&ws, &delivery_id, |d| d["attempt_count"] == 1)
        .await;
    assert_eq!(retrying["status"], "retrying");
    assert!(retrying["next_attempt_at"].is_string());
    let second = receiver.next().await;
    let waited = second.at - first.at;
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    app.wait_for_delivery(&ws, &delivery_id, status_is("succeeded"))
        .await;
}

#[tokio::test]
async fn gone_kills_the_delivery_and_disables_the_connection() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(410)).await;
    let (ws, connection) = app.workspace_with_webhook(&receiver.url).await;
    let (_, delivery_id) = app.emit_for_delivery(&ws).await;
    let dead = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    assert_eq!(
        dead["attempts"].as_array().unwrap().len(),
        1,
        "no retry after 410"
    );
    receiver.next().await;
    let (_, connection) = app
        .send(app.get(&format!("/v1/connections/{connection}"), &ws.secret_key))
        .await;
    assert_eq!(connection["status"], "disabled");
    let (_, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(
        accepted["deliveries"], 0,
        "a disabled connection gets nothing new"
    );
}

#[tokio::test]
async fn timeouts_and_refused_connections_are_retried_then_dead() {
    let app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.retry_schedule = vec![0];
        config.delivery.timeout_seconds = 1;
    })
    .await;
    let hanging = Receiver::start(Reply::Hang).await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/hook", listener.local_addr().unwrap())
    };
    let ws = app.create_workspace("acme").await;
    let (slow, _) = app.create_webhook(&ws, &hanging.url).await;
    let (refused, _) = app.create_webhook(&ws, &closed).await;
    app.create_rule(&ws, &slow, json!({})).await;
    app.create_rule(&ws, &refused, json!({})).await;
    let event_id = app.emit_example(&ws.publishable_key).await;
    for delivery_id in app.deliveries_of(&ws, &event_id).await {
        let dead = app
            .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
            .await;
        let attempts = dead["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 2, "{dead}");
        let error = attempts[0]["error"].as_str().unwrap();
        if dead["connection_id"] == slow.as_str() {
            assert_eq!(error, "timed out after 1s");
        } else {
            assert!(error.starts_with("connection failed"), "{error}");
        }
        assert!(attempts[0].get("status_code").is_none());
    }
    hanging.release();
}

/// One tenant's hanging endpoint must not delay another tenant.
#[tokio::test]
async fn a_hanging_endpoint_does_not_hold_up_other_workspaces() {
    let app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.timeout_seconds = 60;
    })
    .await;
    let mut stuck = Receiver::start(Reply::Hang).await;
    let mut healthy = Receiver::start(Reply::Status(200)).await;
    let a = app.create_workspace("a").await;
    let b = app.create_workspace("b").await;
    let (a_hook, _) = app.create_webhook(&a, &stuck.url).await;
    let (b_hook, _) = app.create_webhook(&b, &healthy.url).await;
    app.create_rule(&a, &a_hook, json!({})).await;
    app.create_rule(&b, &b_hook, json!({})).await;
    for _ in 0..40 {
        app.emit_example(&a.publishable_key).await;
    }
    // A's lane is full: its cap of attempts hang.
    for _ in 0..8 {
        stuck.next().await;
    }
    let mut b_events = Vec::new();
    for _ in 0..20 {
        b_events.push(app.emit_example(&b.publishable_key).await);
    }
    for event in &b_events {
        let delivery = app.deliveries_of(&b, event).await.remove(0);
        app.wait_for_delivery(&b, &delivery, status_is("succeeded"))
            .await;
    }
    for _ in 0..20 {
        healthy.next().await;
    }
    assert!(
        stuck.try_next().is_none(),
        "A never exceeds its in-flight cap"
    );
    stuck.release();
}

/// A workspace's attempts in flight are capped across all its connections,
/// so one tenant's hanging endpoints cannot take every global slot; its
/// held deliveries start as its own attempts finish.
#[tokio::test]
async fn a_workspace_holds_at_most_its_share_of_attempts() {
    let app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.timeout_seconds = 60;
        config.delivery.max_in_flight_per_workspace = 4;
    })
    .await;
    let mut stuck = Receiver::start(Reply::Hang).await;
    let mut a_healthy = Receiver::start(Reply::Status(200)).await;
    let mut b_healthy = Receiver::start(Reply::Status(200)).await;
    let a = app.create_workspace("a").await;
    let b = app.create_workspace("b").await;
    let (a_stuck_hook, _) = app.create_webhook(&a, &stuck.url).await;
    let (a_healthy_hook, _) = app.create_webhook(&a, &a_healthy.url).await;
    let (b_hook, _) = app.create_webhook(&b, &b_healthy.url).await;
    app.create_rule(&a, &a_stuck_hook, json!({"events": ["job.stuck"]}))
        .await;
    app.create_rule(&a, &a_healthy_hook, json!({})).await;
    app.create_rule(&b, &b_hook, json!({})).await;
    // Eight for the hanging endpoint: four in flight, four waiting.
    for _ in 0..8 {
        let (status, answer) = app
            .send(
                app.post("/v1/events", &a.publishable_key)
                    .json(&json!({"event": "job.stuck"})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    }
    // A is at its workspace cap of 4 (its lane's own cap is 8).
    for _ in 0..4 {
        stuck.next().await;
    }
    let held_event = app.emit_example(&a.publishable_key).await;
    let held = app.deliveries_of(&a, &held_event).await.remove(0);
    let b_event = app.emit_example(&b.publishable_key).await;
    let b_delivery = app.deliveries_of(&b, &b_event).await.remove(0);
    app.wait_for_delivery(&b, &b_delivery, status_is("succeeded"))
        .await;
    b_healthy.next().await;
    // A's event was due before B's, yet it waits for A's share.
    assert!(a_healthy.try_next().is_none(), "A went over its cap");
    let (_, delivery) = app
        .send(app.get(&format!("/v1/deliveries/{held}"), &a.secret_key))
        .await;
    assert_eq!(delivery["status"], "pending", "{delivery}");

    // The four answer; the first slot freed goes to the healthy lane (none
    // in flight), not to the hanging lane's own backlog, which would take
    // every slot and hang again.
    stuck.release();
    a_healthy.next().await;
    app.wait_for_delivery(&a, &held, status_is("succeeded"))
        .await;
    stuck.release();
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let app = TestApp::spawn().await; // allow_private_networks = false
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws = app.create_workspace("acme").await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest",
        "ftp://example.com/x",
    ] {
        let body = json!({"type": "webhook", "name": "x", "config": {"url": url}});
        let (status, answer) = app
            .send(app.post("/v1/connections", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {answer}");
    }
    // A name that resolves to loopback is refused at creation and on PATCH
    // too (the host is resolved then), in the words of the send-time guard.
    let by_name = receiver.url.replace("127.0.0.1", "localhost");
    let refusal = "localhost resolves to a private or loopback address; \
                   set delivery.allow_private_networks to allow it";
    refused_when_saved(&app, &ws, &by_name, refusal).await;
    let (public, _) = app
        .create_webhook(&ws, "https://hooks.example.com/in")
        .await;
    let (status, answer) = app
        .send(
            app.patch(&format!("/v1/connections/{public}"), &ws.secret_key)
                .json(&json!({"config": {"url": by_name}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        format!("config: url: {refusal}")
    );

    // A name saved while it was allowed (or while it resolved elsewhere: DNS
    // rebinding) is still refused when connecting: the resolver checks too.
    let mut app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
    })
    .await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, &by_name).await;
    app.create_rule(&ws, &connection, json!({})).await;
    app.restart_with(|_| {}).await; // allow_private_networks = false
    let (_, delivery_id) = app.emit_for_delivery(&ws).await;
    let dead = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    assert!(
        dead["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("refused"),
        "{dead}"
    );
    assert_eq!(dead["attempts"][0]["error"], format!("refused: {refusal}"));
    assert!(
        receiver.try_next().is_none(),
        "nothing reached the private address"
    );

    let allowed = TestApp::spawn_for_delivery().await;
    let ws = allowed.create_workspace("acme").await;
    let (connection, _) = allowed.create_webhook(&ws, &by_name).await;
    allowed.create_rule(&ws, &connection, json!({})).await;
    allowed.emit_example(&ws.publishable_key).await;
    receiver.next().await;
}

#[tokio::test]
async fn a_url_too_long_to_send_is_refused_when_saved_and_nothing_is_stored() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    // The URL parser takes it; as a request target it is over HTTP's
    // 64 KiB limit, so no attempt could ever send it.
    let long = format!("https://hooks.example.com/in?{}", "a".repeat(70_000));
    for kind in ["webhook", "teams", "discord"] {
        let body = json!({"type": kind, "name": "x", "config": {"url": long}});
        let (status, answer) = app
            .send(app.post("/v1/connections", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{kind}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("config: url: invalid webhook URL"),
            "{kind}: {message}"
        );
    }
    let (status, listed) = app.send(app.get("/v1/connections", &ws.secret_key)).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["data"], json!([]), "nothing was stored");
}

/// Saving a webhook at `url` is refused with a 422 giving `refusal`.
async fn refused_when_saved(app: &TestApp, ws: &TestWorkspace, url: &str, refusal: &str) {
    let body = json!({"type": "webhook", "name": "x", "config": {"url": url}});
    let (status, answer) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        answer["error"]["message"],
        format!("config: url: {refusal}"),
        "{answer}"
    );
}

#[tokio::test]
async fn pinned_host_names_are_judged_like_resolved_ones() {
    // `.invalid` never resolves through DNS: only the pinned address can.
    let pin = |config: &mut Config, address: &str| {
        let address = address.parse().unwrap();
        config
            .delivery
            .hosts
            .insert("intake.invalid".into(), vec![address]);
    };
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let by_pinned_name = receiver.url.replace("127.0.0.1", "intake.invalid");
    let refusal = "refused: intake.invalid resolves to a private or loopback address; \
                   set delivery.allow_private_networks to allow it";

    // Saved while the name was pinned to a public address, then sent after
    // it was pinned to loopback (DNS rebinding): refused when connecting.
    let mut app = TestApp::spawn_with(|config| pin(config, "198.41.0.4")).await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, &by_pinned_name).await;
    app.create_rule(&ws, &connection, json!({})).await;
    app.restart_with(|config| pin(config, "127.0.0.1")).await;
    let (_, delivery_id) = app.emit_for_delivery(&ws).await;
    let dead = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    assert_eq!(dead["attempts"][0]["error"], refusal, "{dead}");
    assert!(receiver.try_next().is_none(), "nothing reached loopback");

    // Pinned to loopback, the name is refused when saved too.
    let saved_refusal = refusal.trim_start_matches("refused: ");
    refused_when_saved(&app, &ws, &by_pinned_name, saved_refusal).await;

    // Allowed private targets: the pinned name reaches the receiver.
    app.restart_with(|config| {
        pin(config, "127.0.0.1");
        config.delivery.allow_private_networks = true;
    })
    .await;
    app.emit_example(&ws.publishable_key).await;
    let request = receiver.next().await;
    assert_eq!(
        request.header("host"),
        authority(&by_pinned_name),
        "the name is sent, not the address it was pinned to"
    );
}

#[tokio::test]
async fn a_rotated_secret_signs_beside_the_old_one() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws = app.create_workspace("acme").await;
    let (connection, old_secret) = app.create_webhook(&ws, &receiver.url).await;
    app.create_rule(&ws, &connection, json!({})).await;
    let (status, rotated) = app
        .send(app.post(
            &format!("/v1/connections/{connection}/rotate-secret"),
            &ws.secret_key,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["signing_secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_"));
    assert_ne!(new_secret, old_secret);
    app.emit_example(&ws.publishable_key).await;
    let request = receiver.next().await;
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    assert!(verify_signature(&old_secret, &request));
    assert!(verify_signature(new_secret, &request));
}

/// Attempts keep a connection's opened secrets between them; a rotation or
/// an update must still reach the very next attempt.
#[tokio::test]
async fn changed_secrets_are_used_on_the_next_attempt() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws = app.create_workspace("acme").await;
    let body = json!({
        "type": "webhook",
        "name": "hook",
        "config": {"url": receiver.url, "headers": {"X-Tenant-Token": "first"}},
    });
    let (status, created) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let connection = created["id"].as_str().unwrap();
    let old_secret = created["signing_secret"].as_str().unwrap();
    app.create_rule(&ws, connection, json!({})).await;

    app.emit_example(&ws.publishable_key).await;
    let request = receiver.next().await;
    assert_eq!(request.header("x-tenant-token"), "first");
    assert_eq!(request.header("webhook-signature").split(' ').count(), 1);
    assert!(verify_signature(old_secret, &request));

    let (status, rotated) = app
        .send(app.post(
            &format!("/v1/connections/{connection}/rotate-secret"),
            &ws.secret_key,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["signing_secret"].as_str().unwrap();
    app.emit_example(&ws.publishable_key).await;
    let request = receiver.next().await;
    assert_eq!(request.header("webhook-signature").split(' ').count(), 2);
    assert!(verify_signature(new_secret, &request));

    let (status, updated) = app
        .send(
            app.patch(&format!("/v1/connections/{connection}"), &ws.secret_key)
                .json(&json!({"config": {"url": receiver.url, "headers": {"X-Tenant-Token": "second"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    app.emit_example(&ws.publishable_key).await;
    let request = receiver.next().await;
    assert_eq!(request.header("x-tenant-token"), "second");
    assert!(verify_signature(new_secret, &request));
}

#[tokio::test]
async fn a_batch_fans_out_per_event_and_metrics_count_it() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, &receiver.url).await;
    app.create_rule(
        &ws,
        &connection,
        json!({"conditions": [{"path": "value", "op": "gt", "value": 1500}]}),
    )
    .await;
    let mut cool = example_event();
    cool["payload"]["value"] = json!(900);
    let batch = json!({"events": [example_event(), cool, example_event()]});
    let (status, body) = app
        .send(
            app.post("/v1/events/batch", &ws.publishable_key)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let counts: Vec<&Value> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["deliveries"])
        .collect();
    assert_eq!(counts, [&json!(1), &json!(0), &json!(1)]);
    receiver.next().await;
    receiver.next().await;
    for entry in body["data"].as_array().unwrap() {
        for delivery in app.deliveries_of(&ws, entry["id"].as_str().unwrap()).await {
            app.wait_for_delivery(&ws, &delivery, status_is("succeeded"))
                .await;
        }
    }

    let response = app
        .http
        .get(format!("{}/metrics", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    for metric in [
        "switchyard_events_ingested_total",
        "switchyard_write_batch_size",
        "switchyard_queue_depth",
        "switchyard_queue_window_entries",
        "switchyard_queue_oldest_due_age_seconds",
        "switchyard_deliveries_in_flight",
        "switchyard_attempts_total",
        "switchyard_attempt_duration_seconds",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_an_attempt_in_flight_finish_and_records_it() {
    let mut app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Hang).await;
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let (_, delivery_id) = app.emit_for_delivery(&ws).await;
    receiver.next().await;
    app.begin_shutdown();
    receiver.release();
    app.stop().await;

    app.restart().await;
    let (_, delivery) = app
        .send(app.get(&format!("/v1/deliveries/{delivery_id}"), &ws.secret_key))
        .await;
    assert_eq!(delivery["status"], "succeeded", "{delivery}");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1);
    assert!(receiver.try_next().is_none(), "not sent twice");
}

/// A delivery that falls due while its connection is paused by
/// Retry-After runs when the pause ends (it is not parked until restart).
#[tokio::test]
async fn deliveries_due_during_a_pause_run_after_it() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::WithHeader(429, "retry-after", "1")]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let first = app.emit_example(&ws.publishable_key).await;
    receiver.next().await;
    let first = app.deliveries_of(&ws, &first).await.remove(0);
    app.wait_for_delivery(&ws, &first, |d| d["attempt_count"] == 1)
        .await;
    // Emitted while the connection is paused.
    let second = app.emit_example(&ws.publishable_key).await;
    let second = app.deliveries_of(&ws, &second).await.remove(0);
    for delivery in [&first, &second] {
        app.wait_for_delivery(&ws, delivery, status_is("succeeded"))
            .await;
    }
}

/// An absurd Retry-After is capped at one hour and wedges nothing.
#[tokio::test]
async fn a_huge_retry_after_is_capped() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::WithHeader(
        503,
        "retry-after",
        "18446744073709551615",
    )]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let event = app.emit_example(&ws.publishable_key).await;
    receiver.next().await;
    let delivery = app.deliveries_of(&ws, &event).await.remove(0);
    let retrying = app
        .wait_for_delivery(&ws, &delivery, |d| d["attempt_count"] == 1)
        .await;
    assert_eq!(retrying["status"], "retrying");
    let next = humantime::parse_rfc3339(retrying["next_attempt_at"].as_str().unwrap()).unwrap();
    let wait = next
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(wait <= Duration::from_secs(3600), "{wait:?}");
    assert!(wait >= Duration::from_secs(3500), "{wait:?}");
    // The manual retry still goes through right away.
    let (status, body) = app
        .send(app.post(&format!("/v1/deliveries/{delivery}/retry"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["queued"], false, "still queued: nothing new");
}

/// A first attempt is sent with the context ingest kept (`delivery/warm.rs`)
/// only while nothing changed: here the delivery waits behind a hanging
/// attempt while its connection moves to another URL, and must go there.
#[tokio::test]
async fn a_first_attempt_sees_a_connection_change_made_while_it_waited() {
    let app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.max_in_flight_per_connection = 1;
        config.delivery.timeout_seconds = 60;
    })
    .await;
    let mut old = Receiver::start(Reply::Status(200)).await;
    old.script([Reply::Hang]);
    let mut new = Receiver::start(Reply::Status(200)).await;
    let (ws, connection) = app.workspace_with_webhook(&old.url).await;

    // The first delivery takes the connection's only slot and hangs, sent
    // with its kept context: nothing changed since its event came in. (On
    // PostgreSQL, a queue nodes share, nothing is kept.)
    let (_, first) = app.emit_for_delivery(&ws).await;
    assert_eq!(old.next().await.header("webhook-id"), first);
    let source = if crate::backend::on_postgres() {
        "store"
    } else {
        "ingest"
    };
    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "switchyard_attempt_contexts_total{{source=\"{source}\"}}"
        )),
        "{metrics}"
    );
    let (_, second) = app.emit_for_delivery(&ws).await;
    let body = json!({"config": {"url": new.url}});
    let (status, answer) = app
        .send(
            app.patch(&format!("/v1/connections/{connection}"), &ws.secret_key)
                .json(&body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    old.release();
    assert_eq!(new.next().await.header("webhook-id"), second);
    app.wait_for_delivery(&ws, &second, status_is("succeeded"))
        .await;
    assert!(
        old.try_next().is_none(),
        "the old URL got the second delivery"
    );
}

/// A server whose connections take one request at a time, one webhook
/// whose first request hangs (then answers `then`), and two deliveries: the
/// first sent and hanging, the second waiting behind it. No checkpoint (a
/// durable commit) comes in between.
struct OneSlot {
    app: TestApp,
    faults: FaultSwitch,
    receiver: Receiver,
    ws: crate::helpers::TestWorkspace,
    first: String,
    second: String,
}

async fn one_slot_behind_a_hanging_request(then: Reply) -> OneSlot {
    let faults = FaultSwitch::new();
    let app = TestApp::spawn_with_storage_faults(faults.clone(), |config| {
        config.delivery.allow_private_networks = true;
        config.delivery.max_in_flight_per_connection = 1;
        config.delivery.timeout_seconds = 60;
        config.storage.wal_checkpoint_ms = 60_000;
    })
    .await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([then]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let (_, first) = app.emit_for_delivery(&ws).await;
    assert_eq!(receiver.next().await.header("webhook-id"), first);
    let (_, second) = app.emit_for_delivery(&ws).await;
    OneSlot {
        app,
        faults,
        receiver,
        ws,
        first,
        second,
    }
}

/// Lets every sync a test held go when dropped, on every way out: a held
/// sync would keep the server from stopping.
struct ReleaseSyncs(FaultSwitch);

impl Drop for ReleaseSyncs {
    fn drop(&mut self) {
        self.0.hold_log_syncs(false);
        self.0.hold_database_syncs(false);
    }
}

/// A connection's slot is free once its request is answered, not once the
/// outcome is durable: with one slot, the next delivery goes out while the
/// first one's outcome still waits for its log sync.
#[tokio::test]
async fn a_connection_takes_its_next_request_while_an_outcome_is_being_written() {
    if crate::backend::redb_only(
        "a_connection_takes_its_next_request_while_an_outcome_is_being_written",
    ) {
        return;
    }
    let OneSlot {
        app,
        faults,
        mut receiver,
        ws,
        first,
        second,
    } = one_slot_behind_a_hanging_request(Reply::Hang).await;

    // The first request is answered now; its outcome's log sync is held.
    faults.hold_log_syncs(true);
    let held = ReleaseSyncs(faults.clone());
    receiver.release();
    let next = receiver.next().await;
    let (_, first_then) = app
        .send(app.get(&format!("/v1/deliveries/{first}"), &ws.secret_key))
        .await;
    drop(held);
    assert_eq!(next.header("webhook-id"), second);
    assert_eq!(first_then["status"], "pending", "{first_then}");
    for delivery in [&first, &second] {
        app.wait_for_delivery(&ws, delivery, status_is("succeeded"))
            .await;
    }
}

/// An answer that disables its connection (410) keeps the connection's
/// slot until that is recorded: the delivery waiting behind it finds the
/// connection disabled and is never sent.
#[tokio::test]
async fn after_a_410_nothing_more_goes_out_before_the_connection_is_disabled() {
    if crate::backend::redb_only(
        "after_a_410_nothing_more_goes_out_before_the_connection_is_disabled",
    ) {
        return;
    }
    let OneSlot {
        app,
        faults,
        mut receiver,
        ws,
        second,
        ..
    } = one_slot_behind_a_hanging_request(Reply::HangThen(410)).await;

    // The 410's outcome changes the connection, so it is a durable commit:
    // hold the database file's sync.
    faults.hold_database_syncs(true);
    let held = ReleaseSyncs(faults.clone());
    receiver.release();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while faults.database_syncs_waiting() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the outcome never synced"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(held);

    let dead = app.wait_for_delivery(&ws, &second, status_is("dead")).await;
    assert!(
        dead["attempts"][0]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("disabled"),
        "{dead}"
    );
    assert!(
        receiver.try_next().is_none(),
        "the second delivery reached the gone endpoint"
    );
}
