//! `GET /v1/queue` (admin): the delivery queue as this instance sees it,
//! the backlog on disk beside the window the scheduler holds in memory.

use super::auth::Admin;
use super::openapi::{Forbidden, Unauthorized, Unavailable};
use super::{ApiError, AppState};
use crate::delivery::WindowSnapshot;
use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(queue))
}

#[derive(Serialize, utoipa::ToSchema)]
struct QueueState {
    /// Entries in the queue table: every delivery waiting for an attempt,
    /// in memory or not.
    backlog: u64,
    #[serde(flatten)]
    window: WindowSnapshot,
}

/// The delivery queue: backlog on disk and the scheduler's window
#[utoipa::path(
    get,
    path = "/v1/queue",
    operation_id = "getQueue",
    tag = "operations",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "The backlog (entries in the queue table) and the window the scheduler holds in memory.", body = QueueState),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
async fn queue(State(app): State<AppState>, _: Admin) -> Result<Json<QueueState>, ApiError> {
    let backlog = app.store().queue_len().await?;
    let window = app.engine().window(app.config().delivery.queue_window);
    Ok(Json(QueueState { backlog, window }))
}
