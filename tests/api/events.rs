use crate::helpers::{EXAMPLE_EVENT, TestApp, example_event};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn emit_get_and_list_round_trip() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let (status, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"));
    assert_eq!(accepted["deliveries"], 0);

    let (status, event) = app
        .send(app.get(&format!("/v1/events/{id}"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{event}");
    let sent = example_event();
    assert_eq!(event["id"], id);
    assert_eq!(event["event"], "alert.triggered");
    assert_eq!(event["resource"], "alert");
    assert_eq!(event["resource_id"], "alrt_tyrion_42");
    assert_eq!(event["payload"], sent["payload"], "payload kept as sent");
    assert!(event["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(event["deliveries"], json!([]));

    let (status, list) = app.send(app.get("/v1/events", &ws.secret_key)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let mut listed = event.clone();
    listed.as_object_mut().unwrap().remove("deliveries");
    assert_eq!(list["data"][0], listed, "listings leave the deliveries out");
    assert_eq!(list["next"], Value::Null);
}

#[tokio::test]
async fn a_secret_key_may_emit_too() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    app.emit_example(&ws.secret_key).await;
}

#[tokio::test]
async fn the_bearer_scheme_may_be_in_any_case() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let request = reqwest::Client::new()
        .post(format!("{}/v1/events", app.url))
        .header("authorization", format!("bearer {}", ws.publishable_key))
        .json(&example_event());
    let (status, accepted) = app.send(request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
}

#[tokio::test]
async fn listing_is_newest_first_with_a_cursor_and_a_filter() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let name = if i % 2 == 0 {
            "alert.triggered"
        } else {
            "deploy.finished"
        };
        let (status, body) = app
            .send(
                app.post("/v1/events", &ws.publishable_key)
                    .json(&json!({"event": name, "payload": {"i": i}})),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    ids.reverse();

    let (_, page1) = app
        .send(app.get("/v1/events?limit=3", &ws.secret_key))
        .await;
    let page_ids = |page: &Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(page_ids(&page1), ids[0..3]);
    let next = page1["next"].as_str().unwrap();
    let (_, page2) = app
        .send(app.get(&format!("/v1/events?limit=3&after={next}"), &ws.secret_key))
        .await;
    assert_eq!(page_ids(&page2), ids[3..6]);
    let next = page2["next"].as_str().unwrap();
    let (_, page3) = app
        .send(app.get(&format!("/v1/events?limit=3&after={next}"), &ws.secret_key))
        .await;
    assert_eq!(page_ids(&page3), ids[6..7]);
    assert_eq!(page3["next"], Value::Null);
    assert_eq!(app.all_event_ids(&ws.secret_key).await, ids);

    let (_, alerts) = app
        .send(app.get("/v1/events?event=alert.triggered", &ws.secret_key))
        .await;
    assert_eq!(alerts["data"].as_array().unwrap().len(), 4);
    let (_, deploys) = app
        .send(app.get("/v1/events?event=deploy.*", &ws.secret_key))
        .await;
    assert_eq!(deploys["data"].as_array().unwrap().len(), 3);

    for bad in [
        "/v1/events?limit=0",
        "/v1/events?limit=501",
        "/v1/events?limit=x",
        "/v1/events?after=nope",
    ] {
        let (status, body) = app.send(app.get(bad, &ws.secret_key)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
    }
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let good = example_event();
    let batch = json!({"events": [good, {"event": "bad name!", "payload": {}}, good]});
    let (status, body) = app
        .send(
            app.post("/v1/events/batch", &ws.publishable_key)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1].event"),
        "{body}"
    );
    let batch = json!({"events": [good, {"payload": {}}]});
    let (status, body) = app
        .send(
            app.post("/v1/events/batch", &ws.publishable_key)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1]"),
        "{body}"
    );
    assert!(
        app.all_event_ids(&ws.secret_key).await.is_empty(),
        "nothing stored"
    );

    let batch = json!({"events": [good, good, good]});
    let (status, body) = app
        .send(
            app.post("/v1/events/batch", &ws.publishable_key)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert!(data.iter().all(|entry| entry["deliveries"] == 0));
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 3);
}

#[tokio::test]
async fn batch_size_is_bounded() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let small = json!({"event": "tick"});
    for count in [0, 501] {
        let batch = json!({"events": vec![small.clone(); count]});
        let (status, body) = app
            .send(
                app.post("/v1/events/batch", &ws.publishable_key)
                    .json(&batch),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{count}: {body}");
    }
    let batch = json!({"events": vec![small; 500]});
    let (status, _) = app
        .send(
            app.post("/v1/events/batch", &ws.publishable_key)
                .json(&batch),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 500);
}

#[tokio::test]
async fn an_idempotency_key_stores_once_and_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let emit = |body: Value| {
        app.post("/v1/events", &ws.publishable_key)
            .header("Idempotency-Key", "order-42-alert")
            .json(&body)
    };
    let (first_status, first) = app.send(emit(example_event())).await;
    assert_eq!(first_status, StatusCode::ACCEPTED);
    let (second_status, second) = app.send(emit(example_event())).await;
    assert_eq!(second_status, StatusCode::ACCEPTED);
    assert_eq!(first, second, "same id and answer");
    let (_, third) = app.send(emit(json!({"event": "other.thing"}))).await;
    assert_eq!(first, third, "the first answer wins for the key's lifetime");
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 1);

    // Keys are scoped to their workspace.
    let other = app.create_workspace("other").await;
    let (_, elsewhere) = app
        .send(
            app.post("/v1/events", &other.publishable_key)
                .header("Idempotency-Key", "order-42-alert")
                .json(&example_event()),
        )
        .await;
    assert_ne!(elsewhere["id"], first["id"]);

    // Concurrent duplicates still store one event.
    let requests = (0..16).map(|_| {
        app.send(
            app.post("/v1/events", &ws.publishable_key)
                .header("Idempotency-Key", "burst")
                .json(&example_event()),
        )
    });
    let answers = futures::future::join_all(requests).await;
    let ids: std::collections::HashSet<_> =
        answers.iter().map(|(_, body)| body["id"].clone()).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 2);

    let (status, _) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .header("Idempotency-Key", "x".repeat(256))
                .json(&example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn workspaces_are_isolated_and_key_kinds_are_enforced() {
    let app = TestApp::spawn().await;
    let a = app.create_workspace("a").await;
    let b = app.create_workspace("b").await;
    let id = app.emit_example(&a.publishable_key).await;
    let path = format!("/v1/events/{id}");

    let (status, body) = app.send(app.get(&path, &b.secret_key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let (_, list) = app.send(app.get("/v1/events", &b.secret_key)).await;
    assert_eq!(list["data"], json!([]));

    for read in ["/v1/events", path.as_str()] {
        let (status, body) = app.send(app.get(read, &a.publishable_key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{read}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, _) = app.send(app.get(&path, crate::helpers::ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .send(
            app.post("/v1/events", crate::helpers::ADMIN_TOKEN)
                .json(&example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app
        .send(app.get("/v1/events/evt_garbage", &a.secret_key))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Each bad request gets its status and a JSON error, and stores nothing.
#[tokio::test]
async fn bad_input_is_rejected_with_the_right_status_and_nothing_stored() {
    let app = TestApp::spawn_with(|config| config.limits.max_body_bytes = 4096).await;
    let ws = app.create_workspace("acme").await;
    let pk = ws.publishable_key.as_str();
    let raw = |body: &str| {
        app.post("/v1/events", pk)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode)> = vec![
        (
            "malformed JSON",
            raw("{\"event\": "),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not JSON at all",
            raw("event=alert.triggered"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type of event",
            raw(r#"{"event": 5, "payload": {}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "wrong type of resource",
            raw(r#"{"event": "a", "resource": []}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "missing event",
            raw(r#"{"payload": {}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "unknown field",
            raw(r#"{"event": "a", "paylod": {}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "invalid event name",
            raw(r#"{"event": "alert triggered", "payload": {}}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "event name too long",
            raw(&format!(r#"{{"event": "{}"}}"#, "a".repeat(129))),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "payload is an array",
            raw(r#"{"event": "a", "payload": [1]}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "payload is a string",
            raw(r#"{"event": "a", "payload": "{}"}"#),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "body is an array",
            raw("[]"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "body over the limit",
            raw(&format!(
                r#"{{"event": "a", "payload": {{"pad": "{}"}}}}"#,
                "x".repeat(5000)
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "missing key",
            app.http
                .post(format!("{}/v1/events", app.url))
                .body(EXAMPLE_EVENT),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "unknown key",
            app.post("/v1/events", "pk_unknown").body(EXAMPLE_EVENT),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not a bearer",
            app.http
                .post(format!("{}/v1/events", app.url))
                .basic_auth("pk", Some("x"))
                .body(EXAMPLE_EVENT),
            StatusCode::UNAUTHORIZED,
        ),
    ];
    for (what, request, expected) in cases {
        let (status, body) = app.send(request).await;
        assert_eq!(status, expected, "{what}: {body}");
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error code in {body}"));
        assert!(!code.is_empty());
        assert!(body["error"]["message"].as_str().is_some(), "{what}");
    }
    let (status, body) = app
        .send(app.post("/v1/events/batch", pk).body(format!(
            r#"{{"events": [{}]}}"#,
            "{\"event\":\"a\"},".repeat(400) + "{\"event\":\"a\"}"
        )))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        app.all_event_ids(&ws.secret_key).await.is_empty(),
        "nothing stored"
    );
}

/// Valid JSON of the wrong kind gets a message that says so, on every
/// endpoint taking a body (serde alone would read `[1,2]` as a struct by
/// position and complain about a field's type).
#[tokio::test]
async fn a_body_that_is_not_an_object_says_so() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    for body in ["[1,2]", " [\"alert.triggered\"]", "5", "\"text\"", "null"] {
        for (path, key) in [
            ("/v1/events", ws.publishable_key.as_str()),
            ("/v1/events/batch", ws.secret_key.as_str()),
            ("/v1/workspaces", crate::helpers::ADMIN_TOKEN),
        ] {
            let (status, answer) = app
                .send(
                    app.post(path, key)
                        .header("content-type", "application/json")
                        .body(body),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} {body}: {answer}"
            );
            assert_eq!(
                answer["error"]["message"], "the body must be a JSON object",
                "{path} {body}"
            );
        }
    }
    let (status, _) = app
        .send(app.post("/v1/events", &ws.publishable_key).body("[1,"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "broken JSON stays 400");
    assert!(app.all_event_ids(&ws.secret_key).await.is_empty());
}

#[tokio::test]
async fn events_survive_a_clean_restart() {
    let mut app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.emit_example(&ws.publishable_key).await);
    }
    ids.reverse();
    app.restart().await;
    assert_eq!(app.all_event_ids(&ws.secret_key).await, ids);
    let (status, _) = app
        .send(app.get("/v1/workspaces", crate::helpers::ADMIN_TOKEN))
        .await;
    assert_eq!(status, StatusCode::OK);
}
