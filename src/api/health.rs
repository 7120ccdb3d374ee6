//! Liveness and readiness for load balancers and orchestrators.

use super::{ApiError, AppState};
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// `{"status":"ok"}` or `{"status":"ready"}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct Status {
    #[schema(pattern = "^(ok|ready)$")]
    status: &'static str,
}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security(),
    responses(
        (status = 200, description = "Prometheus text exposition.", body = String, content_type = "text/plain"),
        (status = 503, response = super::openapi::Unavailable),
    ),
)]
async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let handle = crate::telemetry::metrics_handle()
        .ok_or_else(|| ApiError::unavailable("metrics are unavailable"))?;
    // The backlog on disk, as of now: a stored count, no scan (with redb,
    // after the writer has written the queue rows it holds back, which
    // costs a commit without a sync when it holds any).
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

/// Liveness
///
/// The process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    security(),
    responses(
        (status = 200, description = "The process is up.", body = Status, example = json!({"status": "ok"})),
    ),
)]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness
///
/// The store accepts writes and the server is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    security(),
    responses(
        (status = 200, description = "Storage accepts writes and the server is not shutting down.", body = Status, example = json!({"status": "ready"})),
        (status = 503, response = super::openapi::Unavailable),
    ),
)]
async fn readyz(State(app): State<AppState>) -> Result<Json<Status>, ApiError> {
    if app.is_shutting_down() {
        return Err(ApiError::unavailable("shutting down"));
    }
    if !app.store().is_writable() {
        return Err(ApiError::storage_unavailable(
            "storage is not accepting writes (disk full or failing); it recovers by itself once a write succeeds",
        ));
    }
    Ok(Json(Status { status: "ready" }))
}
