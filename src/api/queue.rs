//! `GET /v1/queue` (admin): the delivery queue as this instance sees it,
//! the backlog on disk beside the window the scheduler holds in memory.

use super::auth::Admin;
use super::{ApiError, AppState};
use crate::delivery::WindowSnapshot;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/queue", get(queue))
}

#[derive(Serialize)]
struct QueueState {
    /// Entries in the queue table: every delivery waiting for an attempt,
    /// in memory or not.
    backlog: u64,
    #[serde(flatten)]
    window: WindowSnapshot,
}

async fn queue(State(app): State<AppState>, _: Admin) -> Result<Json<QueueState>, ApiError> {
    let backlog = app.store().queue_len().await?;
    let window = app.engine().window(app.config().delivery.queue_window);
    Ok(Json(QueueState { backlog, window }))
}
