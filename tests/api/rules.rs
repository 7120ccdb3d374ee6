//! The rules API: validation, the dry run, and isolation.

use crate::helpers::{TestApp, example_event};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn rules_are_created_read_updated_and_deleted() {
    let app = TestApp::spawn_for_delivery().await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, "http://127.0.0.1:9/hook").await;
    let body = json!({
        "name": "Latency alerts",
        "events": ["alert.triggered"],
        "connection_id": connection,
        "min_severity": "HIGH",
        "conditions": [{"path": "value", "op": "gt", "value": 1500}],
    });
    let (status, rule) = app
        .send(app.post("/v1/rules", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{rule}");
    let id = rule["id"].as_str().unwrap();
    assert!(id.starts_with("rul_"));
    assert_eq!(rule["min_severity"], "high");
    assert_eq!(rule["enabled"], true);
    assert_eq!(rule["target"], json!({}));

    let path = format!("/v1/rules/{id}");
    let (status, fetched) = app.send(app.get(&path, &ws.secret_key)).await;
    assert_eq!((status, &fetched), (StatusCode::OK, &rule));
    let (_, list) = app.send(app.get("/v1/rules", &ws.secret_key)).await;
    assert_eq!(list["data"], json!([rule]));

    let (status, updated) = app
        .send(
            app.patch(&path, &ws.secret_key)
                .json(&json!({"enabled": false, "min_severity": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["min_severity"], Value::Null);
    assert_eq!(updated["name"], "Latency alerts", "untouched fields stay");
    let (_, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(accepted["deliveries"], 0, "a disabled rule fires nothing");

    // The connection cannot go while the rule uses it.
    let (status, body) = app
        .send(app.delete(&format!("/v1/connections/{connection}"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = app.send(app.delete(&path, &ws.secret_key)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.send(app.get(&path, &ws.secret_key)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .send(app.delete(&format!("/v1/connections/{connection}"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn invalid_rules_get_422_naming_the_field() {
    let app = TestApp::spawn_for_delivery().await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, "http://127.0.0.1:9/hook").await;
    let base = json!({"name": "r", "events": ["alert.*"], "connection_id": connection});
    let with = |key: &str, value: Value| {
        let mut body = base.clone();
        body[key] = value;
        body
    };
    let cases = [
        (with("name", json!("")), "name"),
        (with("events", json!([])), "events"),
        (with("events", json!(["al*rt"])), "events[0]"),
        (with("connection_id", json!("con_nope")), "connection_id"),
        (
            with("connection_id", json!("con_01ARZ3NDEKTSV4RRFFQ69G5FAV")),
            "connection_id",
        ),
        (with("min_severity", json!("severe")), "min_severity"),
        (
            with(
                "conditions",
                json!([{"path": "value", "op": "above", "value": 1}]),
            ),
            "conditions[0].op",
        ),
        (
            with(
                "conditions",
                json!([{"path": "value", "op": "in", "value": 3}]),
            ),
            "conditions[0].value",
        ),
        (with("conditions", json!({"path": "value"})), "conditions"),
        (with("target", json!({"channel": "C1"})), "target"),
        (with("template", json!("plain")), "template"),
    ];
    for (body, field) in cases {
        let (status, answer) = app
            .send(app.post("/v1/rules", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "expected {field}: {message}"
        );
    }
    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("events");
    let (status, answer) = app
        .send(app.post("/v1/rules", &ws.secret_key).json(&missing))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events")
    );
    let (_, list) = app.send(app.get("/v1/rules", &ws.secret_key)).await;
    assert_eq!(list["data"], json!([]), "nothing stored");
}

#[tokio::test]
async fn the_dry_run_matches_without_storing_or_sending() {
    let app = TestApp::spawn_for_delivery().await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, "http://127.0.0.1:9/hook").await;
    let high = app
        .create_rule(&ws, &connection, json!({"min_severity": "high"}))
        .await;
    let _critical = app
        .create_rule(&ws, &connection, json!({"min_severity": "critical"}))
        .await;
    let hot = app
        .create_rule(
            &ws,
            &connection,
            json!({"events": ["*"], "conditions": [{"path": "value", "op": "gte", "value": 1840}]}),
        )
        .await;
    let (status, answer) = app
        .send(
            app.post("/v1/rules/test", &ws.secret_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let matched: Vec<&str> = answer["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["rule_id"].as_str().unwrap())
        .collect();
    assert_eq!(matched, [high.as_str(), hot.as_str()]);
    assert_eq!(answer["matches"][0]["connection_id"], connection.as_str());
    assert!(app.all_event_ids(&ws.secret_key).await.is_empty());
    let (status, _) = app
        .send(
            app.post("/v1/rules/test", &ws.secret_key)
                .json(&json!({"event": "bad name"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn another_workspace_sees_404_for_everything() {
    let app = TestApp::spawn_for_delivery().await;
    let a = app.create_workspace("a").await;
    let b = app.create_workspace("b").await;
    let (connection, _) = app.create_webhook(&a, "http://127.0.0.1:9/hook").await;
    let rule = app.create_rule(&a, &connection, json!({})).await;
    let event = app.emit_example(&a.publishable_key).await;
    let delivery = app.deliveries_of(&a, &event).await.remove(0);
    for path in [
        format!("/v1/connections/{connection}"),
        format!("/v1/rules/{rule}"),
        format!("/v1/deliveries/{delivery}"),
        format!("/v1/events/{event}"),
    ] {
        let (status, _) = app.send(app.get(&path, &b.secret_key)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "GET {path}");
        let (status, _) = app.send(app.delete(&path, &b.secret_key)).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::METHOD_NOT_ALLOWED,
            "DELETE {path}: {status}"
        );
    }
    let (status, _) = app
        .send(
            app.patch(&format!("/v1/rules/{rule}"), &b.secret_key)
                .json(&json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .send(app.post(&format!("/v1/deliveries/{delivery}/retry"), &b.secret_key))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app
        .send(app.post(
            &format!("/v1/connections/{connection}/rotate-secret"),
            &b.secret_key,
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // B cannot point its rule at A's connection.
    let body = json!({"name": "steal", "events": ["*"], "connection_id": connection});
    let (status, _) = app
        .send(app.post("/v1/rules", &b.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, list) = app.send(app.get("/v1/deliveries", &b.secret_key)).await;
    assert_eq!(list["data"], json!([]));
    // A publishable key manages nothing.
    let (status, _) = app.send(app.get("/v1/rules", &a.publishable_key)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn null_clears_conditions() {
    let app = TestApp::spawn_for_delivery().await;
    let ws = app.create_workspace("acme").await;
    let (connection, _) = app.create_webhook(&ws, "http://127.0.0.1:9/hook").await;
    let rule = app
        .create_rule(
            &ws,
            &connection,
            json!({"conditions": [{"path": "value", "op": "gt", "value": 5000}]}),
        )
        .await;
    let (_, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(accepted["deliveries"], 0);
    let (status, updated) = app
        .send(
            app.patch(&format!("/v1/rules/{rule}"), &ws.secret_key)
                .json(&json!({"conditions": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["conditions"], json!([]));
    let (_, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(accepted["deliveries"], 1);
}
