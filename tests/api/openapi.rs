//! `GET /openapi.json`: the hand-written document stays true to the router.
//! `ROUTES` is the list of routes the server registers (from the `routes()`
//! functions in src/api/*.rs, src/ingest/mod.rs and src/embed/mod.rs): it
//! must match the document, and every documented operation must answer on
//! the live server with a status the document lists for it.

use crate::helpers::{ADMIN_TOKEN, TestApp};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// Every (method, path) the server serves, as registered.
const ROUTES: &[(&str, &str)] = &[
    // src/api/health.rs
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    // src/api/openapi.rs
    ("GET", "/openapi.json"),
    // src/api/workspaces.rs
    ("GET", "/v1/workspaces"),
    ("POST", "/v1/workspaces"),
    ("DELETE", "/v1/workspaces/{id}"),
    ("POST", "/v1/workspaces/{id}/keys/rotate"),
    // src/api/backup.rs
    ("POST", "/v1/backup"),
    ("GET", "/v1/queue"),
    // src/api/capabilities.rs
    ("GET", "/v1/capabilities"),
    // src/ingest/mod.rs
    ("POST", "/v1/events"),
    ("GET", "/v1/events"),
    ("POST", "/v1/events/batch"),
    ("GET", "/v1/events/{id}"),
    // src/ingest/meshes.rs (routed in src/ingest/mod.rs)
    ("POST", "/api/v1/events"),
    ("POST", "/api/v1/events/bulk"),
    // src/api/slack.rs
    ("POST", "/v1/connections/slack/authorize"),
    ("GET", "/oauth/slack/callback"),
    ("GET", "/v1/connections/{id}/channels"),
    // src/embed/mod.rs
    ("POST", "/v1/embed/sessions"),
    ("GET", "/embed"),
    ("POST", "/embed/session"),
    ("GET", "/embed/assets/{file}"),
    // src/api/connections.rs
    ("GET", "/v1/connections"),
    ("POST", "/v1/connections"),
    ("GET", "/v1/connections/{id}"),
    ("PATCH", "/v1/connections/{id}"),
    ("DELETE", "/v1/connections/{id}"),
    ("POST", "/v1/connections/{id}/rotate-secret"),
    ("POST", "/v1/connections/{id}/test"),
    // src/api/rules.rs
    ("GET", "/v1/rules"),
    ("POST", "/v1/rules"),
    ("POST", "/v1/rules/test"),
    ("GET", "/v1/rules/{id}"),
    ("PATCH", "/v1/rules/{id}"),
    ("DELETE", "/v1/rules/{id}"),
    // src/api/deliveries.rs
    ("GET", "/v1/deliveries"),
    ("POST", "/v1/deliveries/retry"),
    ("GET", "/v1/deliveries/{id}"),
    ("POST", "/v1/deliveries/{id}/retry"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// Every documented operation: (METHOD, path template, operation object).
fn operations(document: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (key, operation) in item.as_object().expect("path item") {
            if METHODS.contains(&key.as_str()) {
                found.push((key.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    found
}

/// A concrete path for a template: syntactically valid ids that exist nowhere.
fn concrete(path: &str) -> String {
    let id = match path.split('/').nth(2) {
        Some("workspaces") => "ws_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        Some("events") => "evt_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        Some("connections") => "con_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        Some("rules") => "rul_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        Some("deliveries") => "dlv_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        _ => "ws_01ARZ3NDEKTSV4RRFFQ69G5FAV",
    };
    path.replace("{id}", id).replace("{file}", "app.js")
}

/// Calls a route with an empty body; returns the status and the body, as
/// JSON when it is JSON.
async fn call(app: &TestApp, method: &str, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, format!("{}{path}", app.url));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn is_route_miss(status: StatusCode, body: &Value) -> bool {
    status == StatusCode::METHOD_NOT_ALLOWED
        || (status == StatusCode::NOT_FOUND && body["error"]["message"] == "no such route")
}

/// Whether the document lists this status for the operation.
fn documented_status(operation: &Value, status: StatusCode) -> bool {
    let responses = &operation["responses"];
    let class = format!("{}XX", status.as_u16() / 100);
    responses.get(status.as_str()).is_some() || responses.get(class).is_some()
}

/// The security schemes an operation accepts (empty: no key needed).
fn schemes(operation: &Value) -> BTreeSet<String> {
    operation["security"]
        .as_array()
        .unwrap_or_else(|| panic!("every operation states its security: {operation}"))
        .iter()
        .flat_map(|requirement| requirement.as_object().unwrap().keys().cloned())
        .collect()
}

/// Follows a local `$ref` (`#/components/schemas/Event`).
fn resolve<'a>(document: &'a Value, reference: &str) -> Option<&'a Value> {
    document.pointer(reference.strip_prefix('#')?)
}

fn check_refs(document: &Value, node: &Value, broken: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "$ref" {
                    let reference = value.as_str().unwrap_or_default();
                    if resolve(document, reference).is_none() {
                        broken.push(reference.to_string());
                    }
                } else {
                    check_refs(document, value, broken);
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| check_refs(document, item, broken)),
        _ => {}
    }
}

#[tokio::test]
async fn serves_an_openapi_3_1_document_without_auth() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(document["servers"], json!([{"url": "/"}]));
    let mut broken = Vec::new();
    check_refs(&document, &document, &mut broken);
    assert!(broken.is_empty(), "unresolved $refs: {broken:?}");
    for scheme in ["adminToken", "secretKey", "publishableKey", "embedSession"] {
        let defined = &document["components"]["securitySchemes"][scheme];
        assert_eq!(defined["scheme"], "bearer", "{scheme}");
    }
    assert!(
        document["webhooks"]
            .as_object()
            .is_some_and(|hooks| !hooks.is_empty())
    );
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(served.len(), ROUTES.len(), "ROUTES has duplicates");
    let operations = operations(&document);
    let documented: BTreeSet<(String, String)> = operations
        .iter()
        .map(|(method, path, _)| (method.clone(), path.clone()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in the document: {undocumented:?}"
    );
    let unlisted: Vec<_> = documented.difference(&served).collect();
    assert!(
        unlisted.is_empty(),
        "documented but not in ROUTES (add them if the server has them): {unlisted:?}"
    );

    for (method, path, operation) in &operations {
        let target = concrete(path);
        let (status, body) = call(&app, method, &target, None).await;
        assert!(
            !is_route_miss(status, &body),
            "{method} {path} is documented but the router does not have it: {status} {body}"
        );
        assert!(
            documented_status(operation, status),
            "{method} {target} without a key answered {status}, which the document does not list: {body}"
        );
        if !schemes(operation).is_empty() {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} documents a key but answered {status} without one: {body}"
            );
        }
    }

    // Methods the document does not list on a path are refused by the router.
    let paths: BTreeSet<&String> = operations.iter().map(|(_, path, _)| path).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if documented.contains(&(method.to_string(), path.clone())) {
                continue;
            }
            let (status, body) = call(&app, method, &concrete(path), None).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented: {body}"
            );
        }
    }
}

#[tokio::test]
async fn documented_security_matches_the_keys_each_route_takes() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let workspace = app.create_workspace("openapi").await;
    let (status, minted) = app
        .send(app.post("/v1/embed/sessions", &workspace.secret_key))
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
    let session = exchanged["session"].as_str().unwrap().to_string();
    let keys = [
        ("adminToken", ADMIN_TOKEN.to_string()),
        ("secretKey", workspace.secret_key.clone()),
        ("publishableKey", workspace.publishable_key.clone()),
        ("embedSession", session),
    ];

    for (method, path, operation) in operations(&document) {
        let accepted = schemes(&operation);
        if accepted.is_empty() {
            continue;
        }
        let target = concrete(&path);
        for (scheme, key) in &keys {
            let (status, body) = call(&app, &method, &target, Some(key)).await;
            assert!(
                documented_status(&operation, status),
                "{method} {target} with {scheme} answered {status}, which the document does not list: {body}"
            );
            if accepted.contains(*scheme) {
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} documents {scheme} but refused it: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{method} {path} does not document {scheme} but answered: {body}"
                );
            }
        }
    }
}
