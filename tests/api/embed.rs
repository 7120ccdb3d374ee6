//! Embed sessions: minting, the launch page, the exchange, expiry and
//! isolation (the browser tests drive the UI itself).

use crate::helpers::{ADMIN_TOKEN, TestApp, TestWorkspace, workspace_from};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn mint(app: &TestApp, ws: &TestWorkspace, body: Value) -> Value {
    let (status, answer) = app
        .send(app.post("/v1/embed/sessions", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer
}

async fn exchange(app: &TestApp, launch: &str) -> (StatusCode, Value) {
    app.send(
        app.http
            .post(format!("{}/embed/session", app.url))
            .json(&json!({"token": launch})),
    )
    .await
}

/// The launch URL sits in an iframe `src` (history, logs): exchanging it a
/// second time, even after a restart, gets 401 and leaves the first session
/// working.
#[tokio::test]
async fn a_launch_token_is_exchanged_only_once() {
    let mut app = TestApp::spawn().await;
    let ws = app.create_workspace("a").await;
    let minted = mint(&app, &ws, json!({})).await;
    let launch = minted["token"].as_str().unwrap();
    let (status, first) = exchange(&app, launch).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let session = first["session"].as_str().unwrap().to_string();

    let (status, again) = exchange(&app, launch).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{again}");
    assert!(
        again["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already been used"),
        "{again}"
    );
    let (status, _) = app.send(app.get("/v1/connections", &session)).await;
    assert_eq!(status, StatusCode::OK, "the first session goes on");

    app.restart().await;
    assert_eq!(exchange(&app, launch).await.0, StatusCode::UNAUTHORIZED);
    let other = mint(&app, &ws, json!({})).await;
    assert_eq!(
        exchange(&app, other["token"].as_str().unwrap()).await.0,
        StatusCode::OK,
        "another launch token is unaffected"
    );
}

#[tokio::test]
async fn a_session_opens_the_page_and_acts_for_its_workspace_only() {
    let app = TestApp::spawn_for_delivery().await;
    let a = app.create_workspace("a").await;
    let b = app.create_workspace("b").await;
    let (b_connection, _) = app.create_webhook(&b, "http://127.0.0.1:9/hook").await;
    let b_rule = app.create_rule(&b, &b_connection, json!({})).await;

    let minted = mint(
        &app,
        &a,
        json!({"ttl_seconds": 600, "allowed_origins": ["https://host.example.com"]}),
    )
    .await;
    let token = minted["token"].as_str().unwrap();
    assert_eq!(minted["url"], format!("{}/embed?token={token}", app.url));
    assert!(minted["expires_at"].as_str().unwrap().ends_with('Z'));

    let page = app
        .http
        .get(minted["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'self' https://host.example.com"),
        "{csp}"
    );
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for asset in ["app.js", "app.css"] {
        let response = app
            .http
            .get(format!("{}/embed/assets/{asset}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    let (status, session) = exchange(&app, token).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["workspace"]["id"], a.id.as_str());
    assert_eq!(session["workspace"]["name"], "a");
    let session = session["session"].as_str().unwrap().to_string();
    assert!(session.starts_with("ems_"));

    // The session manages its workspace…
    let (connection, _) = app
        .create_webhook(
            &TestWorkspace {
                secret_key: session.clone(),
                ..a.clone()
            },
            "http://127.0.0.1:9/x",
        )
        .await;
    let (status, list) = app.send(app.get("/v1/connections", &session)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], connection.as_str());
    let (status, _) = app
        .send(
            app.post("/v1/events", &session)
                .json(&crate::helpers::example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // …and nothing of another workspace, whatever the id.
    for path in [
        format!("/v1/rules/{b_rule}"),
        format!("/v1/connections/{b_connection}"),
    ] {
        let (status, _) = app.send(app.get(&path, &session)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        let (status, _) = app
            .send(app.patch(&path, &session).json(&json!({"name": "mine"})))
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    // It cannot mint sessions or reach the admin API.
    let (status, _) = app
        .send(app.post("/v1/embed/sessions", &session).json(&json!({})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = app.send(app.get("/v1/workspaces", &session)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A launch token is not a session.
    let (status, _) = app.send(app.get("/v1/connections", token)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forged_and_expired_tokens_get_401() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("a").await;
    let forged = "eml_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let page = app
        .http
        .get(format!("{}/embed?token={forged}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("This session has expired")
    );
    let page = app
        .http
        .get(format!("{}/embed", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "a reload without a token gets the page, which resumes its session"
    );
    assert_eq!(exchange(&app, forged).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = app.send(app.get("/v1/rules", "ems_forged")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // Expiry is exact: the one-second session works, then stops.
    let minted = mint(&app, &ws, json!({"ttl_seconds": 1})).await;
    let (status, session) = exchange(&app, minted["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let session = session["session"].as_str().unwrap().to_string();
    let expires_at = humantime::parse_rfc3339(minted["expires_at"].as_str().unwrap()).unwrap();
    let mut worked = false;
    loop {
        let before = std::time::SystemTime::now();
        let (status, _) = app.send(app.get("/v1/rules", &session)).await;
        let after = std::time::SystemTime::now();
        match status {
            StatusCode::OK => {
                assert!(before < expires_at, "the session worked after its expiry");
                worked = true;
            }
            StatusCode::UNAUTHORIZED => {
                assert!(after >= expires_at, "the session failed before its expiry");
                break;
            }
            other => panic!("unexpected {other}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(worked, "the session worked before it expired");
    let page = app
        .http
        .get(minted["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
}

/// Rotating a workspace's keys (after a leak, say) ends its embed sessions
/// and unused launch links at once, not when they expire.
#[tokio::test]
async fn rotating_the_keys_ends_every_session_of_the_workspace() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("a").await;
    let other = app.create_workspace("b").await;
    let opened = mint(&app, &ws, json!({"ttl_seconds": 3600})).await;
    let (status, session) = exchange(&app, opened["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let session = session["session"].as_str().unwrap().to_string();
    let unused = mint(&app, &ws, json!({"ttl_seconds": 3600})).await;
    let elsewhere = mint(&app, &other, json!({"ttl_seconds": 3600})).await;
    let (status, _) = app.send(app.get("/v1/rules", &session)).await;
    assert_eq!(status, StatusCode::OK);

    let path = format!("/v1/workspaces/{}/keys/rotate", ws.id);
    let (status, rotated) = app.send(app.post(&path, ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{rotated}");

    let (status, body) = app.send(app.get("/v1/rules", &session)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        exchange(&app, unused["token"].as_str().unwrap()).await.0,
        StatusCode::UNAUTHORIZED
    );
    let page = app
        .http
        .get(unused["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::UNAUTHORIZED);
    // Another workspace's sessions are untouched, and the new key mints
    // working ones.
    assert_eq!(
        exchange(&app, elsewhere["token"].as_str().unwrap()).await.0,
        StatusCode::OK
    );
    let fresh = mint(&app, &workspace_from(&rotated), json!({})).await;
    let (status, session) = exchange(&app, fresh["token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let (status, _) = app
        .send(app.get("/v1/rules", session["session"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn session_requests_are_validated() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("a").await;
    for (body, field) in [
        (json!({"ttl_seconds": 0}), "ttl_seconds"),
        (json!({"ttl_seconds": 43_201}), "ttl_seconds"),
        (
            json!({"allowed_origins": ["https://host.example.com/path"]}),
            "allowed_origins[0]",
        ),
        (
            json!({"allowed_origins": ["javascript:alert(1)"]}),
            "allowed_origins[0]",
        ),
    ] {
        let (status, answer) = app
            .send(app.post("/v1/embed/sessions", &ws.secret_key).json(&body))
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
    let (status, minted) = app
        .send(app.post("/v1/embed/sessions", &ws.secret_key))
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "an empty body takes the defaults: {minted}"
    );
    let (status, _) = app
        .send(
            app.post("/v1/embed/sessions", &ws.publishable_key)
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let page = app
        .http
        .get(minted["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors *"),
        "no allowed_origins: any host may frame it: {csp}"
    );
}
