//! `GET /docs`: the API reference page, self-contained under a strict CSP,
//! and (in Chromium) rendering every operation of `/openapi.json`.

use crate::embed_browser::{check_prerequisites, run_browser_test};
use crate::helpers::TestApp;
use reqwest::{StatusCode, header};
use std::path::Path;

const BROWSER_TEST: &str = "tests/browser/docs.test.mjs";

async fn get(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let response = app
        .http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn the_reference_page_is_self_contained_under_a_strict_csp() {
    let app = TestApp::spawn().await;
    let (status, headers, html) = get(&app, "/docs").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self'; style-src 'self';"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        !html.contains("<script>") && !html.contains("<style"),
        "no inline script or style"
    );
    assert!(html.contains(r#"src="/docs/assets/docs.js""#), "{html}");
    assert!(html.contains(r#"href="/docs/assets/docs.css""#), "{html}");

    // Nothing it serves names another origin: no CDN, no fonts, no analytics.
    for (path, body) in [
        ("/docs", html.clone()),
        (
            "/docs/assets/docs.js",
            get(&app, "/docs/assets/docs.js").await.2,
        ),
        (
            "/docs/assets/docs.css",
            get(&app, "/docs/assets/docs.css").await.2,
        ),
    ] {
        for external in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "url(",
            "@import",
        ] {
            assert!(!body.contains(external), "{path} contains {external}");
        }
    }
    let (status, headers, _) = get(&app, "/docs/assets/docs.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let (status, _, _) = get(&app, "/docs/assets/nope.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_reference_page_renders_the_document_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = check_prerequisites(root).await;
    let app = TestApp::spawn().await;
    run_browser_test(
        root,
        BROWSER_TEST,
        &[
            ("SWITCHYARD_URL", app.url.clone()),
            (
                "SCREENSHOT_DIR",
                root.join("target/screenshots").display().to_string(),
            ),
            ("CHROMIUM", chromium.display().to_string()),
        ],
    )
    .await;
}
