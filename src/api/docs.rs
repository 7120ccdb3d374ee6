//! `GET /docs`: the API reference, a page of our own that renders
//! `/openapi.json` in the browser (`docs/docs.js`, plain JavaScript building
//! every node with `textContent`). About 15 KB compiled into the binary,
//! no third-party code and no CDN, so it runs under the same strict CSP as
//! the embedded UI (`default-src 'self'`, no inline script or style) —
//! which the ready-made renderers (Redoc, Scalar: 1–3 MB bundles that
//! inject inline styles) would not. These routes are for people, not part
//! of the API, so they are the one plain-axum exception to the documented
//! router (`tests/api/openapi.rs` lists them).

use super::{ApiError, AppState};
use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &str = include_str!("docs/index.html");
const DOCS_JS: &str = include_str!("docs/docs.js");
const DOCS_CSS: &str = include_str!("docs/docs.css");

/// Everything from this origin only; the page is never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/docs", get(page))
        .route("/docs/assets/{file}", get(asset))
}

async fn page() -> Response {
    static_file(INDEX_HTML, "text/html; charset=utf-8")
}

async fn asset(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "docs.js" => static_file(DOCS_JS, "text/javascript; charset=utf-8"),
        "docs.css" => static_file(DOCS_CSS, "text/css; charset=utf-8"),
        _ => ApiError::not_found("asset").into_response(),
    }
}

fn static_file(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        body,
    )
        .into_response()
}
