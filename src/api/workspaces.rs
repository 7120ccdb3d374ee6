//! `/v1/workspaces`: the admin token creates, lists, deletes workspaces and
//! rotates their keys. Keys are shown only in the create and rotate answers.

use super::auth::Admin;
use super::{ApiError, AppState, JsonBody, generate_key, generate_meshes_key, hash_key};
use crate::model::{KeyKind, Workspace, WorkspaceId, format_timestamp_ms, now_ms};
use crate::store::NewWorkspace;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces", get(list).post(create))
        .route("/v1/workspaces/{id}", delete(remove))
        .route("/v1/workspaces/{id}/keys/rotate", post(rotate_keys))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateWorkspace {
    name: String,
}

#[derive(Serialize)]
struct WorkspaceView {
    id: WorkspaceId,
    name: String,
    created_at: String,
}

impl From<Workspace> for WorkspaceView {
    fn from(workspace: Workspace) -> Self {
        Self {
            id: workspace.id,
            name: workspace.name,
            created_at: format_timestamp_ms(workspace.created_at_ms),
        }
    }
}

#[derive(Serialize)]
struct WorkspaceWithKeys {
    #[serde(flatten)]
    workspace: WorkspaceView,
    publishable_key: String,
    secret_key: String,
    /// The same emit-only power in Meshes' key format, for the
    /// Meshes-compatible `/api/v1/events`.
    meshes_publishable_key: String,
}

/// A workspace's three keys, fresh; only their hashes are stored.
struct NewKeys {
    publishable: String,
    secret: String,
    meshes: String,
}

impl NewKeys {
    fn generate(workspace: WorkspaceId) -> Self {
        Self {
            publishable: generate_key(KeyKind::Publishable),
            secret: generate_key(KeyKind::Secret),
            meshes: generate_meshes_key(workspace),
        }
    }

    fn shown_with(self, workspace: Workspace) -> WorkspaceWithKeys {
        WorkspaceWithKeys {
            workspace: workspace.into(),
            publishable_key: self.publishable,
            secret_key: self.secret,
            meshes_publishable_key: self.meshes,
        }
    }
}

#[derive(Serialize)]
struct WorkspaceList {
    data: Vec<WorkspaceView>,
}

const MAX_NAME_CHARS: usize = 128;

async fn create(
    State(app): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody<CreateWorkspace>,
) -> Result<(StatusCode, Json<WorkspaceWithKeys>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
    }
    let workspace = Workspace {
        id: WorkspaceId::new(),
        name: name.to_string(),
        created_at_ms: now_ms(),
    };
    let keys = NewKeys::generate(workspace.id);
    app.store()
        .create_workspace(NewWorkspace {
            workspace: workspace.clone(),
            publishable_key_hash: hash_key(&keys.publishable),
            secret_key_hash: hash_key(&keys.secret),
            meshes_key_hash: hash_key(&keys.meshes),
        })
        .await?;
    tracing::info!(workspace = %workspace.id, "workspace created");
    Ok((StatusCode::CREATED, Json(keys.shown_with(workspace))))
}

async fn list(State(app): State<AppState>, _: Admin) -> Result<Json<WorkspaceList>, ApiError> {
    let data = app
        .store()
        .workspaces()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(WorkspaceList { data }))
}

async fn remove(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: WorkspaceId = id.parse().map_err(|_| ApiError::not_found("workspace"))?;
    if !app.store().delete_workspace(id).await? {
        return Err(ApiError::not_found("workspace"));
    }
    app.rule_index().invalidate(id);
    app.key_cache().forget_workspace(id);
    tracing::info!(workspace = %id, "workspace deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_keys(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<WorkspaceWithKeys>, ApiError> {
    let id: WorkspaceId = id.parse().map_err(|_| ApiError::not_found("workspace"))?;
    let keys = NewKeys::generate(id);
    let workspace = app
        .store()
        .rotate_keys(
            id,
            hash_key(&keys.publishable),
            hash_key(&keys.secret),
            hash_key(&keys.meshes),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    app.key_cache().forget_workspace(id);
    tracing::info!(workspace = %id, "workspace keys rotated");
    Ok(Json(keys.shown_with(workspace)))
}
