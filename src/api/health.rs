//! Liveness and readiness for load balancers and orchestrators.

use super::{ApiError, AppState};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Prometheus text exposition.
async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let handle = crate::telemetry::metrics_handle()
        .ok_or_else(|| ApiError::unavailable("metrics are unavailable"))?;
    // The backlog on disk, as of now (a stored count, no scan).
    if let Ok(depth) = app.store().queue_len().await {
        metrics::gauge!("switchyard_queue_depth").set(depth as f64);
    }
    // A stat is cheap: the size is as of this scrape.
    crate::telemetry::record_database_size(&app.config().database_path());
    handle.run_upkeep();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    ))
}

/// The process is up and serving HTTP.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The store accepts writes and the server is not shutting down.
async fn readyz(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    if app.is_shutting_down() {
        return Err(ApiError::unavailable("shutting down"));
    }
    if !app.store().is_writable() {
        return Err(ApiError::storage_unavailable(
            "storage is not accepting writes (disk full or failing); it recovers by itself once a write succeeds",
        ));
    }
    Ok(Json(json!({"status": "ready"})))
}
