use crate::helpers::{ADMIN_TOKEN, TestApp, workspace_from};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn admin_creates_lists_and_deletes_workspaces() {
    let app = TestApp::spawn().await;
    let acme = app.create_workspace("acme").await;
    assert!(acme.id.starts_with("ws_"));
    assert!(acme.publishable_key.starts_with("pk_"));
    assert!(acme.secret_key.starts_with("sk_"));

    let (status, body) = app.send(app.get("/v1/workspaces", ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    let listed = body["data"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], acme.id.as_str());
    assert_eq!(listed[0]["name"], "acme");
    assert!(
        listed[0].get("secret_key").is_none(),
        "keys are shown only once"
    );

    let path = format!("/v1/workspaces/{}", acme.id);
    let (status, _) = app.send(app.delete(&path, ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = app.send(app.delete(&path, ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");

    // Its keys died with it.
    let (status, _) = app
        .send(
            app.post("/v1/events", &acme.publishable_key)
                .json(&crate::helpers::example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn workspace_endpoints_need_the_admin_token() {
    let app = TestApp::spawn().await;
    let acme = app.create_workspace("acme").await;
    for key in [&acme.secret_key, &acme.publishable_key] {
        let (status, body) = app.send(app.get("/v1/workspaces", key)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let (status, body) = app.send(app.get("/v1/workspaces", "nope")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = app
        .send(app.http.get(format!("{}/v1/workspaces", app.url)))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn invalid_workspace_names_are_rejected() {
    let app = TestApp::spawn().await;
    for body in [
        json!({"name": ""}),
        json!({"name": "   "}),
        json!({"name": "x".repeat(129)}),
    ] {
        let (status, answer) = app
            .send(app.post("/v1/workspaces", ADMIN_TOKEN).json(&body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("name")
        );
    }
    let (status, _) = app
        .send(
            app.post("/v1/workspaces", ADMIN_TOKEN)
                .json(&json!({"name": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, body) = app.send(app.get("/v1/workspaces", ADMIN_TOKEN)).await;
    assert_eq!(body["data"], json!([]), "nothing stored");
}

#[tokio::test]
async fn rotated_keys_stop_working_at_once() {
    let app = TestApp::spawn().await;
    let old = app.create_workspace("acme").await;
    let event_id = app.emit_example(&old.publishable_key).await;

    let path = format!("/v1/workspaces/{}/keys/rotate", old.id);
    let (status, body) = app.send(app.post(&path, ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let new = workspace_from(&body);
    assert_eq!(new.id, old.id);
    assert_ne!(new.secret_key, old.secret_key);

    let event_path = format!("/v1/events/{event_id}");
    let (status, _) = app.send(app.get(&event_path, &old.secret_key)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app
        .send(
            app.post("/v1/events", &old.publishable_key)
                .json(&crate::helpers::example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = app.send(app.get(&event_path, &new.secret_key)).await;
    assert_eq!(status, StatusCode::OK, "events survive a rotation: {body}");
    app.emit_example(&new.publishable_key).await;

    let (status, _) = app
        .send(app.post(
            "/v1/workspaces/ws_01ARZ3NDEKTSV4RRFFQ69G5FAV/keys/rotate",
            ADMIN_TOKEN,
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn health_and_readiness() {
    let mut app = TestApp::spawn().await;
    let (status, body) = app.send(app.http.get(format!("{}/healthz", app.url))).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (status, _) = app.send(app.http.get(format!("{}/readyz", app.url))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.send(app.http.get(format!("{}/nope", app.url))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    app.stop().await;
}

/// A deleted workspace's events are removed in the background, in bounded
/// transactions, and nothing of another workspace goes with them.
#[tokio::test]
async fn a_deleted_workspace_is_purged_in_the_background() {
    use crate::helpers::{ChildServer, send};
    use redb::{ReadableDatabase, TableDefinition};

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = ChildServer::start_logging_to(
        dir.path(),
        Some(ADMIN_TOKEN),
        &[("SWITCHYARD_LOG__LEVEL", "info")],
        Some(&log),
    )
    .await;
    let http = reqwest::Client::new();
    let mut workspaces = Vec::new();
    for name in ["gone", "kept"] {
        let ws = server.create_workspace(name).await;
        for _ in 0..30 {
            server.emit_example(&ws.publishable_key).await;
        }
        workspaces.push(ws);
    }
    let (status, _) = send(
        http.delete(format!("{}/v1/workspaces/{}", server.url, workspaces[0].id))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("deleted workspaces purged")
    {
        assert!(std::time::Instant::now() < deadline, "no purge logged");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(server.terminate().await.code(), Some(0));

    let ws = |id: &str| {
        ulid::Ulid::from_string(id.trim_start_matches("ws_"))
            .unwrap()
            .0
    };
    let stored: Vec<usize> = if crate::backend::on_postgres() {
        let url = crate::backend::database_for(dir.path()).await;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut counts = Vec::new();
        for workspace in &workspaces {
            let id = ws(&workspace.id).to_be_bytes().to_vec();
            let row = client
                .query_one(
                    "SELECT count(*) FROM events WHERE workspace_id = $1",
                    &[&id],
                )
                .await
                .unwrap();
            counts.push(row.get::<_, i64>(0) as usize);
        }
        counts
    } else {
        const EVENTS: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("events");
        let db = redb::Database::open(dir.path().join("switchyard.redb")).unwrap();
        let txn = db.begin_read().unwrap();
        let events = txn.open_table(EVENTS).unwrap();
        workspaces
            .iter()
            .map(|workspace| {
                let ws = ws(&workspace.id);
                events.range((ws, 0)..=(ws, u128::MAX)).unwrap().count()
            })
            .collect()
    };
    assert_eq!(stored, [0, 30]);
}
