//! `GET /v1/capabilities`: what the instance can send through, read by the
//! embedded UI with its session to offer only what works.

use crate::helpers::{ADMIN_TOKEN, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_bare_instance_offers_neither_slack_nor_email() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("bare").await;
    let (status, body) = app.send(app.get("/v1/capabilities", &ws.secret_key)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"slack": false, "email": {"resend": false, "smtp": false}})
    );
}

#[tokio::test]
async fn configured_providers_show_and_an_embed_session_may_ask() {
    let app = TestApp::spawn_with(|config| {
        config.slack.client_id = Some("123.456".into());
        config.slack.client_secret = Some(switchyard::secret::Secret::new("shh"));
        config.email.smtp.host = Some("127.0.0.1".into());
    })
    .await;
    let ws = app.create_workspace("configured").await;
    let (status, minted) = app
        .send(app.post("/v1/embed/sessions", &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let (status, exchanged) = app
        .send(
            app.http
                .post(format!("{}/embed/session", app.url))
                .json(&json!({"token": minted["token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{exchanged}");
    let session = exchanged["session"].as_str().unwrap();

    let (status, body) = app.send(app.get("/v1/capabilities", session)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"slack": true, "email": {"resend": false, "smtp": true}})
    );

    // Workspace keys only: the publishable key and the admin token are refused.
    let (status, _) = app
        .send(app.get("/v1/capabilities", &ws.publishable_key))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.send(app.get("/v1/capabilities", ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
