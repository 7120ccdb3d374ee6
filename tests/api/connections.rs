//! The connections API and secrets at rest.

use crate::helpers::TestApp;
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn webhook_connections_show_their_secret_once_and_mask_headers() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws = app.create_workspace("acme").await;
    let body = json!({
        "type": "webhook",
        "name": "Ops hook",
        "config": {"url": receiver.url, "headers": {"Authorization": "Bearer tenant-header-secret"}},
    });
    let (status, created) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let secret = created["signing_secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("con_") && secret.starts_with("whsec_"));
    assert_eq!(created["status"], "active");
    assert_eq!(created["config"]["headers"]["Authorization"], "********");

    let (_, fetched) = app
        .send(app.get(&format!("/v1/connections/{id}"), &ws.secret_key))
        .await;
    assert!(fetched.get("signing_secret").is_none());
    assert_eq!(fetched["config"]["url"], receiver.url.as_str());
    let (_, list) = app.send(app.get("/v1/connections", &ws.secret_key)).await;
    assert_eq!(list["data"][0]["id"], id);
    assert!(!list.to_string().contains("tenant-header-secret"));

    // The test send carries the tenant's header and reports the outcome.
    let (status, result) = app
        .send(app.post(&format!("/v1/connections/{id}/test"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["ok"], true);
    assert_eq!(result["status_code"], 200);
    let request = receiver.next().await;
    assert_eq!(
        request.header("authorization"),
        "Bearer tenant-header-secret"
    );
    assert_eq!(request.json()["type"], "switchyard.test");

    let (status, renamed) = app
        .send(
            app.patch(&format!("/v1/connections/{id}"), &ws.secret_key)
                .json(&json!({"name": "Renamed", "status": "disabled"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(
        (renamed["name"].as_str(), renamed["status"].as_str()),
        (Some("Renamed"), Some("disabled"))
    );

    // Nothing secret is readable in the database file.
    app.create_workspace("flush").await;
    let haystack = crate::backend::stored_text(app.data_dir()).await;
    assert!(
        !haystack.contains("tenant-header-secret"),
        "header secret in plain text"
    );
    assert!(!haystack.contains(&secret), "signing secret in plain text");
    assert!(
        !haystack.contains(&secret["whsec_".len()..]),
        "signing key in plain text"
    );
    assert!(!haystack.contains(&ws.secret_key), "API key in plain text");
}

#[tokio::test]
async fn bad_connection_input_is_rejected() {
    let app = TestApp::spawn_for_delivery().await;
    let ws = app.create_workspace("acme").await;
    for (body, field) in [
        (json!({"type": "pigeon", "name": "x", "config": {}}), "body"),
        (
            json!({"type": "webhook", "name": "", "config": {"url": "http://127.0.0.1:1/"}}),
            "name",
        ),
        (
            json!({"type": "webhook", "name": "x", "config": {}}),
            "config",
        ),
        (
            json!({"type": "webhook", "name": "x", "config": {"url": "not a url"}}),
            "config",
        ),
        (
            json!({"type": "webhook", "name": "x", "config": {"url": "http://127.0.0.1:1/", "headers": {"webhook-id": "x"}}}),
            "config",
        ),
    ] {
        let (status, answer) = app
            .send(app.post("/v1/connections", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{answer}"
        );
    }
    let (_, list) = app.send(app.get("/v1/connections", &ws.secret_key)).await;
    assert_eq!(list["data"], json!([]));
}
