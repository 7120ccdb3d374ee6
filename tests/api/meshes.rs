//! The Meshes-compatible ingest (`/api/v1/events`, `/api/v1/events/bulk`)
//! driven by a client of our own that behaves on the wire as Meshes' events
//! client (`@mesheshq/events`) does: it checks the key's shape before
//! sending anything, sends the same headers, takes any 2xx as success and
//! hands back the answer's body.

use crate::helpers::{ADMIN_TOKEN, TestApp, TestWorkspace};
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use serde_json::{Value, json};
use std::time::Duration;

/// The pattern the Meshes client checks keys against before sending.
const MESHES_KEY_PATTERN: &str = r"^mesh_pub_([A-Za-z0-9\-.]+)_([A-Za-z0-9\-.]+)_([^_]+)$";

#[derive(Debug)]
enum ClientError {
    /// Refused before sending, as the Meshes client does.
    InvalidKey,
    /// A non-2xx answer.
    Status(StatusCode, Value),
}

/// What the Meshes events client does on the wire, for these tests.
struct MeshesClient {
    http: reqwest::Client,
    api_base_url: String,
    key: String,
}

impl MeshesClient {
    fn new(api_base_url: &str, key: &str) -> Result<Self, ClientError> {
        let pattern = regex::Regex::new(MESHES_KEY_PATTERN).unwrap();
        if !pattern.is_match(key) {
            return Err(ClientError::InvalidKey);
        }
        Ok(Self {
            http: reqwest::Client::new(),
            api_base_url: api_base_url.trim_end_matches('/').to_string(),
            key: key.to_string(),
        })
    }

    async fn emit(&self, event: &Value) -> Result<Value, ClientError> {
        self.post("/events", event).await
    }

    async fn emit_batch(&self, events: &[Value]) -> Result<Value, ClientError> {
        self.post("/events/bulk", &json!(events)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let response = self
            .http
            .post(format!("{}{path}", self.api_base_url))
            .header("X-Meshes-Publishable-Key", &self.key)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header("X-Meshes-Client", "switchyard-tests/1.0")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        if status.is_success() {
            Ok(body)
        } else {
            Err(ClientError::Status(status, body))
        }
    }
}

/// The workspace's Meshes key, as the create (or rotate) answer shows it.
async fn workspace_with_meshes_key(app: &TestApp) -> (TestWorkspace, String) {
    let (status, body) = app
        .send(
            app.post("/v1/workspaces", ADMIN_TOKEN)
                .json(&json!({"name": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let key = body["meshes_publishable_key"].as_str().unwrap().to_string();
    (crate::helpers::workspace_from(&body), key)
}

fn client(app: &TestApp, key: &str) -> MeshesClient {
    MeshesClient::new(&format!("{}/api/v1", app.url), key).unwrap()
}

fn alert(resource_id: Option<&str>) -> Value {
    let mut event = json!({"event": "alert.triggered", "payload": {
        "email": "oncall@example.com", "severity": "high", "value": 1840, "threshold": 1000}});
    if let Some(id) = resource_id {
        event["resource"] = json!("alert");
        event["resource_id"] = json!(id);
    }
    event
}

/// Sends a raw request to a Meshes endpoint with only the given headers.
async fn raw(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = app
        .http
        .post(format!("{}{path}", app.url))
        .header(CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body).send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_workspace_has_a_meshes_key_the_client_accepts_and_rotation_replaces_it() {
    let app = TestApp::spawn().await;
    let (ws, key) = workspace_with_meshes_key(&app).await;
    let pattern = regex::Regex::new(MESHES_KEY_PATTERN).unwrap();
    let groups = pattern.captures(&key).expect("the client's pattern");
    let ulid = ws.id.strip_prefix("ws_").unwrap().to_ascii_lowercase();
    assert_eq!(&groups[1], ulid);
    assert!(groups[3].len() >= 32, "a secret of 128 bits or more: {key}");

    let (status, rotated) = app
        .send(app.post(
            &format!("/v1/workspaces/{}/keys/rotate", ws.id),
            ADMIN_TOKEN,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["meshes_publishable_key"].as_str().unwrap();
    assert!(pattern.is_match(new_key));
    assert_ne!(new_key, key);
    // Listings never show keys.
    let (_, list) = app.send(app.get("/v1/workspaces", ADMIN_TOKEN)).await;
    assert!(!list.to_string().contains("mesh_pub_"), "{list}");
}

#[tokio::test]
async fn emit_and_bulk_are_stored_and_fan_out_to_a_webhook() {
    let app = TestApp::spawn_for_delivery().await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let (ws, key) = workspace_with_meshes_key(&app).await;
    let (connection, _) = app.create_webhook(&ws, &receiver.url).await;
    app.create_rule(&ws, &connection, json!({})).await;
    let client = client(&app, &key);

    let answer = client.emit(&alert(None)).await.unwrap();
    let event = &answer["event"];
    assert_eq!(event["type"], "event");
    assert_eq!(event["event"], "alert.triggered");
    assert_eq!(event["workspace"], ws.id.as_str());
    assert_eq!(event["resource"], "global", "Meshes' default resource");
    assert_eq!(event["resource_id"], Value::Null);
    assert!(
        event["created_by"]
            .as_str()
            .is_some_and(|id| key.contains(id))
    );
    assert!(event["created_at"].as_str().unwrap().ends_with('Z'));
    let id = event["id"].as_str().unwrap();
    assert!(id.starts_with("evt_"), "{answer}");
    // Stored (the answer came after the commit) and delivered.
    let (status, stored) = app
        .send(app.get(&format!("/v1/events/{id}"), &ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["resource"], "global");
    assert_eq!(stored["payload"]["email"], "oncall@example.com");
    let delivered = tokio::time::timeout(Duration::from_secs(20), receiver.next())
        .await
        .expect("the webhook got the event")
        .json();
    assert_eq!(delivered["event_id"], id);
    assert_eq!(delivered["resource"], "global");

    let events = [alert(Some("alrt_1")), alert(Some("alrt_2"))];
    let answer = client.emit_batch(&events).await.unwrap();
    assert_eq!(answer["count"], 2, "{answer}");
    assert!(answer.get("error_count").is_none(), "{answer}");
    let records = answer["records"].as_array().unwrap();
    assert_eq!(records[0]["resource_id"], "alrt_1");
    assert_eq!(records[1]["resource"], "alert");
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..2 {
        let request = tokio::time::timeout(Duration::from_secs(20), receiver.next())
            .await
            .expect("the webhook got the batch");
        ids.push(request.json()["event_id"].as_str().unwrap().to_string());
    }
    ids.sort();
    let mut expected: Vec<String> = records
        .iter()
        .map(|record| record["id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_bulk_with_invalid_events_stores_the_valid_ones_and_answers_207() {
    let app = TestApp::spawn().await;
    let (ws, key) = workspace_with_meshes_key(&app).await;
    let client = client(&app, &key);
    let events = [
        alert(Some("a1")),
        json!({"event": "not valid!", "payload": {}}),
        json!({"payload": {"email": "x@example.com"}}),
        json!({"event": "user.signed_up", "payload": {"plan": "pro"}}),
    ];
    let answer = client.emit_batch(&events).await.unwrap();
    assert_eq!(answer["count"], 2, "{answer}");
    assert_eq!(answer["error_count"], 2, "{answer}");
    let records = answer["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["type"], "event");
    assert!(
        records[1]["message"]
            .as_str()
            .unwrap()
            .contains("[1].event"),
        "{answer}"
    );
    assert!(records[2]["message"].as_str().is_some(), "{answer}");
    assert_eq!(records[3]["event"], "user.signed_up");
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 2);

    let response = raw(
        &app,
        "/api/v1/events/bulk",
        &[("X-Meshes-Publishable-Key", &key)],
        json!([{"event": "a"}, {"event": "b"}]).to_string(),
    )
    .await;
    assert_eq!(response.0, StatusCode::CREATED, "{:?}", response.2);

    // None valid, empty, too many, not an array, broken JSON: nothing stored.
    let before = app.all_event_ids(&ws.secret_key).await.len();
    for (body, expected) in [
        (json!([{"event": "bad event"}]).to_string(), 422),
        ("[]".to_string(), 422),
        (json!(vec![json!({"event": "a"}); 101]).to_string(), 422),
        (json!({"event": "a"}).to_string(), 422),
        ("[{".to_string(), 400),
    ] {
        let (status, _, error) = raw(
            &app,
            "/api/v1/events/bulk",
            &[("X-Meshes-Publishable-Key", &key)],
            body.clone(),
        )
        .await;
        assert_eq!(status.as_u16(), expected, "{body}: {error}");
        assert!(error["error"]["code"].is_string(), "{error}");
    }
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), before);
    let single = client.emit(&json!({"event": "", "payload": {}})).await;
    assert!(
        matches!(
            single,
            Err(ClientError::Status(StatusCode::UNPROCESSABLE_ENTITY, _))
        ),
        "{single:?}"
    );
}

#[tokio::test]
async fn only_the_meshes_key_works_there_and_only_there_and_rotation_ends_it_at_once() {
    let app = TestApp::spawn().await;
    let (ws, key) = workspace_with_meshes_key(&app).await;
    let event = json!({"event": "user.signed_up", "payload": {}}).to_string();
    client(&app, &key)
        .emit(&json!({"event": "a"}))
        .await
        .unwrap();

    // The client refuses our own keys before sending.
    assert!(matches!(
        MeshesClient::new(&app.url, &ws.publishable_key),
        Err(ClientError::InvalidKey)
    ));
    // Sent anyway: 401, like an unknown key of the right shape.
    let forged = format!("{}0", key.trim_end_matches(|c| c != '_'));
    for wrong in [ws.publishable_key.as_str(), ws.secret_key.as_str(), &forged] {
        let (status, headers, body) = raw(
            &app,
            "/api/v1/events",
            &[("X-Meshes-Publishable-Key", wrong)],
            event.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong}: {body}");
        assert!(headers.get(RETRY_AFTER).is_none());
    }
    let (status, _, _) = raw(&app, "/api/v1/events", &[], event.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A bearer key there, or the Meshes key on /v1: the wrong kind of key.
    let bearer = format!("Bearer {}", ws.publishable_key);
    let (status, _, _) = raw(
        &app,
        "/api/v1/events",
        &[("Authorization", &bearer)],
        event.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for (path, method) in [("/v1/events", "POST"), ("/v1/rules", "GET")] {
        let request = match method {
            "POST" => app.post(path, &key).body(event.clone()),
            _ => app.get(path, &key),
        };
        let (status, body) = app.send(request).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
    }

    // Rotation: the old Meshes key (cached by the emit above) fails at once.
    let (status, rotated) = app
        .send(app.post(
            &format!("/v1/workspaces/{}/keys/rotate", ws.id),
            ADMIN_TOKEN,
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let old = client(&app, &key).emit(&json!({"event": "a"})).await;
    assert!(
        matches!(old, Err(ClientError::Status(StatusCode::UNAUTHORIZED, _))),
        "{old:?}"
    );
    let new_key = rotated["meshes_publishable_key"].as_str().unwrap();
    client(&app, new_key)
        .emit(&json!({"event": "a"}))
        .await
        .unwrap();
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = TestApp::spawn().await;
    let (_, key) = workspace_with_meshes_key(&app).await;
    let big = "x".repeat(300 * 1024);
    let event = json!({"event": "big", "payload": {"blob": big}});
    match client(&app, &key).emit(&event).await {
        Err(ClientError::Status(StatusCode::PAYLOAD_TOO_LARGE, body)) => {
            assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
        }
        other => panic!("expected 413: {other:?}"),
    }
    let bulk = client(&app, &key).emit_batch(&[event]).await;
    assert!(
        matches!(
            bulk,
            Err(ClientError::Status(StatusCode::PAYLOAD_TOO_LARGE, _))
        ),
        "{bulk:?}"
    );
}

#[tokio::test]
async fn the_ingest_limit_answers_429_with_retry_after() {
    let app = TestApp::spawn_with(|config| {
        config.limits.events_per_second = 1;
        config.limits.burst_seconds = 2;
    })
    .await;
    let (ws, key) = workspace_with_meshes_key(&app).await;
    let headers = [("X-Meshes-Publishable-Key", key.as_str())];
    let batch = json!([{"event": "a"}, {"event": "b"}]).to_string();
    let (status, _, body) = raw(&app, "/api/v1/events/bulk", &headers, batch.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for path in ["/api/v1/events", "/api/v1/events/bulk"] {
        let body = if path.ends_with("bulk") {
            batch.clone()
        } else {
            json!({"event": "c"}).to_string()
        };
        let (status, headers, answer) = raw(&app, path, &headers, body).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "rate_limited");
        let wait: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!(wait >= 1, "{wait}");
    }
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 2);
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let app = TestApp::spawn().await;
    let (ws, key) = workspace_with_meshes_key(&app).await;
    let headers = [
        ("X-Meshes-Publishable-Key", key.as_str()),
        ("Idempotency-Key", "signup-42"),
    ];
    let body = json!({"event": "user.signed_up", "payload": {}}).to_string();
    let (first, _, answer) = raw(&app, "/api/v1/events", &headers, body.clone()).await;
    assert_eq!(first, StatusCode::CREATED, "{answer}");
    let (again, replay_headers, replay) = raw(&app, "/api/v1/events", &headers, body).await;
    assert_eq!(again, StatusCode::CREATED);
    assert_eq!(replay, answer);
    assert_eq!(replay_headers["idempotent-replayed"], "true");
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 1);
    // The same key on /v1/events is another request, with /v1's answer.
    let (status, v1) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .header("Idempotency-Key", "signup-42")
                .json(&json!({"event": "user.signed_up"})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v1}");
    assert!(v1["deliveries"].is_number(), "{v1}");
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 2);
}
