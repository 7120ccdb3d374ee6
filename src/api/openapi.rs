//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, written by
//! hand in `openapi.json` beside this file and compiled into the binary.
//! `tests/api/openapi.rs` checks it against the live router.

use super::AppState;
use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const DOCUMENT: &str = include_str!("openapi.json");

pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(document))
}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_for_this_version() {
        let document: serde_json::Value = serde_json::from_str(super::DOCUMENT).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
