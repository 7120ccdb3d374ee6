//! `GET /openapi.json`: the document utoipa generates from the handlers
//! stays true to the router. The route list comes from the router itself
//! (`switchyard::api::openapi()`, what its `OpenApiRouter` collected); it
//! must match the served document both ways, every documented operation
//! must answer on the live server with a status the document lists for it,
//! and the document must pass an OpenAPI 3.1 validator.

use crate::helpers::{ADMIN_TOKEN, TestApp};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::Path;

/// Routes served outside the documented router, on purpose: the API
/// reference page and its assets are for people, not part of the API
/// (`src/api/docs.rs`). Everything else must come with its operation.
const UNDOCUMENTED: &[(&str, &str)] = &[
    ("GET", "/docs"),
    ("GET", "/docs/assets/docs.js"),
    ("GET", "/docs/assets/docs.css"),
];

/// The only source files that may register a route without documenting
/// it: `api/docs.rs` (the allow-list above) and the in-process fakes of
/// the Slack delivery tests.
const PLAIN_ROUTE_FILES: &[&str] = &[
    "src/api/docs.rs",
    "src/destinations/slack/delivery/tests.rs",
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
    answer(request).await
}

/// Calls a route with a key in a header of its own (an `apiKey` scheme).
async fn call_with_header(
    app: &TestApp,
    method: &str,
    path: &str,
    header: &str,
    key: &str,
) -> (StatusCode, Value) {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let request = app
        .http
        .request(method, format!("{}{path}", app.url))
        .header(header, key);
    answer(request).await
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
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

/// (METHOD, path) of every operation in a document.
fn route_set(document: &Value) -> BTreeSet<(String, String)> {
    operations(document)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

#[tokio::test]
async fn serves_the_generated_openapi_3_1_document_without_auth() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    let version = document["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(document["servers"], json!([{"url": "/"}]));
    let generated = serde_json::to_value(switchyard::api::openapi()).unwrap();
    assert_eq!(document, generated, "the served document is the router's");
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
    for (method, path, operation) in operations(&document) {
        assert!(
            operation["operationId"].is_string() && operation["summary"].is_string(),
            "{method} {path} needs an operationId and a summary"
        );
    }
}

#[tokio::test]
async fn the_router_serves_every_documented_route_and_nothing_undocumented() {
    let app = TestApp::spawn().await;
    let document = document(&app).await;
    // What the router registered through its OpenApiRouter, against what
    // the document says, both ways.
    let registered = route_set(&serde_json::to_value(switchyard::api::openapi()).unwrap());
    let documented = route_set(&document);
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "not in the document: {undocumented:?}"
    );
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        unregistered.is_empty(),
        "documented but not registered: {unregistered:?}"
    );
    assert!(documented.len() >= 40, "{documented:?}");

    // The real router answers each documented route (not 404 or 405), and
    // with a status the document lists; a route that takes a key says 401
    // without one.
    for (method, path, operation) in operations(&document) {
        let target = concrete(&path);
        let (status, body) = call(&app, &method, &target, None).await;
        assert!(
            !is_route_miss(status, &body),
            "{method} {path} is documented but the router does not have it: {status} {body}"
        );
        assert!(
            documented_status(&operation, status),
            "{method} {target} without a key answered {status}, which the document does not list: {body}"
        );
        if !schemes(&operation).is_empty() {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} documents a key but answered {status} without one: {body}"
            );
        }
    }

    // Methods the document does not list on a path are refused by the router.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
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

    // The allow-list: served, and not in the document.
    for (method, path) in UNDOCUMENTED {
        let (status, body) = call(&app, method, path, None).await;
        assert_eq!(status, StatusCode::OK, "{method} {path}: {body}");
        assert!(
            !documented.iter().any(|(_, documented)| documented == path),
            "{path} is on the allow-list but documented; take it off the list"
        );
    }
}

/// Every Rust file under `dir`, recursively.
fn rust_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// `OpenApiRouter::route` (and axum's) registers a route without its
/// operation; only `routes!(…)` documents one. So outside the allow-listed
/// files no source registers routes any other way.
#[test]
fn routes_are_registered_only_with_their_documentation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut offenders = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if PLAIN_ROUTE_FILES.contains(&relative.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if [".route(", ".route_service(", ".nest(", ".nest_service("]
                .iter()
                .any(|call| line.contains(call))
            {
                offenders.push(format!("{relative}:{}: {}", number + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "routes registered without documentation (use utoipa_axum::routes! with a #[utoipa::path]): {offenders:#?}"
    );
}

/// The served document passes openapi-spec-validator's OpenAPI 3.1 checks
/// (`scripts/test` installs it; without it this test fails, never skips).
#[tokio::test]
async fn the_document_passes_an_openapi_3_1_validator() {
    let app = TestApp::spawn().await;
    let text = app.get_text("/openapi.json").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, text).unwrap();
    let script = "import json, sys\n\
        from openapi_spec_validator import validate, OpenAPIV31SpecValidator\n\
        spec = json.load(open(sys.argv[1]))\n\
        validate(spec, cls=OpenAPIV31SpecValidator)\n\
        print('valid OpenAPI 3.1')\n";
    let output = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&file)
        .output()
        .await
        .expect("python3 runs the OpenAPI validator");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "openapi-spec-validator is not installed (scripts/test installs it: \
         python3 -m pip install openapi-spec-validator): {stderr}"
    );
    assert!(
        output.status.success(),
        "the document is not valid OpenAPI 3.1: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "valid OpenAPI 3.1"
    );
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

    // The Meshes key travels in a header of its own, as its scheme says.
    let scheme = &document["components"]["securitySchemes"]["meshesPublishableKey"];
    assert_eq!(scheme["type"], "apiKey");
    assert_eq!(scheme["in"], "header");
    let header = scheme["name"].as_str().unwrap();
    let (status, created) = app
        .send(
            app.http
                .post(format!("{}/v1/workspaces", app.url))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"name": "meshes"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let meshes_key = created["meshes_publishable_key"].as_str().unwrap();
    for (method, path, operation) in operations(&document) {
        let accepted = schemes(&operation);
        if accepted.is_empty() {
            continue;
        }
        let target = concrete(&path);
        let (status, body) = call_with_header(&app, &method, &target, header, meshes_key).await;
        assert!(
            documented_status(&operation, status),
            "{method} {target} with the Meshes key answered {status}, which the document does not list: {body}"
        );
        let refused = status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN;
        assert_eq!(
            !refused,
            accepted.contains("meshesPublishableKey"),
            "{method} {path} with the Meshes key answered {status}: {body}"
        );
    }
}
