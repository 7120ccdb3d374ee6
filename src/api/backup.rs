//! `POST /v1/backup` (admin): a consistent copy of the whole database,
//! streamed as a redb file. Restoring is stopping the server and putting the
//! file in place of `data_dir/switchyard.redb`, with the same master key.
//! Only a backend with its own file backup (redb) has one; any other answers
//! 501 `backup_unsupported`.

use super::auth::Admin;
use super::openapi::{Conflict, Forbidden, Unauthorized, Unavailable};
use super::{ApiError, AppState};
use crate::model::{format_timestamp_ms, now_ms};
use crate::store::StoreError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::io::Seek;
use std::sync::atomic::Ordering;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(backup))
}

/// Download a consistent backup of the database
///
/// Copies every table as of one read snapshot into a new redb file and
/// streams it. Ingest and delivery go on meanwhile. Sealed connection
/// secrets stay sealed: restore with the same master key (stop the server,
/// put the file in place of `data_dir/switchyard.redb`, start it).
/// `switchyard backup --out FILE` downloads it. One backup runs at a time
/// (409 `backup_running`); the copy is built in the data directory first,
/// so it needs about the database's size in free space. Only a store with
/// its own file backup (redb) has one; any other answers 501.
#[utoipa::path(
    post,
    path = "/v1/backup",
    operation_id = "backup",
    tag = "operations",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "The redb file.", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("Switchyard-Backup-Rows" = u64, description = "Rows copied, all tables together."))),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 501, description = "The store has no file backup (PostgreSQL: use its own tools); code `backup_unsupported`.", body = super::error::ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
async fn backup(State(app): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let source = app.store().backup_source().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "backup_unsupported",
            "this store has no file backup; back its database up with the database's own tools \
             (pg_dump for PostgreSQL)",
        )
    })?;
    let _running = OneAtATime::claim(&app)?;
    let unavailable =
        |error: std::io::Error| ApiError::from(StoreError::Unavailable(error.to_string()));
    // Created unlinked, in the data dir's file system: nothing is left
    // behind whether the copy or the download completes or not.
    let mut file = tempfile::tempfile_in(&app.config().data_dir).map_err(unavailable)?;
    let stats = source
        .backup(file.try_clone().map_err(unavailable)?)
        .await?;
    file.rewind().map_err(unavailable)?;
    let length = file
        .metadata()
        .map_err(|error| ApiError::internal(&error))?
        .len();
    tracing::info!(
        tables = stats.tables,
        rows = stats.rows,
        bytes = length,
        "backup taken"
    );
    let stamp: String = format_timestamp_ms(now_ms())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(
        tokio::fs::File::from_std(file),
    ));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"switchyard-{stamp}.redb\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert("switchyard-backup-rows", HeaderValue::from(stats.rows));
    Ok(response)
}

/// Held while a backup is being copied; a second one meanwhile gets 409.
struct OneAtATime(AppState);

impl OneAtATime {
    fn claim(app: &AppState) -> Result<Self, ApiError> {
        app.backup_running()
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Self(app.clone()))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "backup_running",
                    "a backup is being taken; try again when it is done",
                )
            })
    }
}

impl Drop for OneAtATime {
    fn drop(&mut self) {
        self.0.backup_running().store(false, Ordering::Release);
    }
}
