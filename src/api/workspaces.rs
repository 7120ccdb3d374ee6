//! `/v1/workspaces`: the admin token creates, lists, deletes workspaces and
//! rotates their keys. Keys are shown only in the create and rotate answers.

use super::auth::Admin;
use super::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable,
};
use super::{ApiError, AppState, JsonBody, generate_key, generate_meshes_key, hash_key};
use crate::model::{KeyKind, Workspace, WorkspaceId, format_timestamp_ms, now_ms};
use crate::store::NewWorkspace;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(remove))
        .routes(routes!(rotate_keys))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWorkspace {
    /// 1 to 128 characters after trimming.
    #[schema(min_length = 1, max_length = 128)]
    name: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Workspace)]
struct WorkspaceView {
    id: WorkspaceId,
    name: String,
    #[schema(value_type = super::openapi::Timestamp)]
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

/// A workspace with its keys; keys are shown only in the create and rotate
/// answers.
#[derive(Serialize, ToSchema)]
struct WorkspaceWithKeys {
    #[serde(flatten)]
    workspace: WorkspaceView,
    /// `pk_…`: may only emit events.
    #[schema(pattern = "^pk_")]
    publishable_key: String,
    /// `sk_…`: manages everything in the workspace.
    #[schema(pattern = "^sk_")]
    secret_key: String,
    /// The same emit-only power in Meshes' key format, for the
    /// Meshes-compatible `/api/v1/events` (`X-Meshes-Publishable-Key`).
    #[schema(pattern = r"^mesh_pub_([A-Za-z0-9\-.]+)_([A-Za-z0-9\-.]+)_([^_]+)$")]
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

#[derive(Serialize, ToSchema)]
struct WorkspaceList {
    data: Vec<WorkspaceView>,
}

const MAX_NAME_CHARS: usize = 128;

/// Create a workspace
#[utoipa::path(
    post,
    path = "/v1/workspaces",
    operation_id = "createWorkspace",
    tag = "workspaces",
    security(("adminToken" = [])),
    request_body(content = CreateWorkspace, example = json!({"name": "acme"})),
    responses(
        (status = 201, description = "Created; the keys are shown only here.", body = WorkspaceWithKeys),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
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

/// List workspaces
#[utoipa::path(
    get,
    path = "/v1/workspaces",
    operation_id = "listWorkspaces",
    tag = "workspaces",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "Every workspace, without keys.", body = WorkspaceList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
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

/// Delete a workspace
#[utoipa::path(
    delete,
    path = "/v1/workspaces/{id}",
    operation_id = "deleteWorkspace",
    tag = "workspaces",
    security(("adminToken" = [])),
    params(("id" = WorkspaceId, Path, description = "The workspace.")),
    responses(
        (status = 204, description = "Deleted: the workspace, its keys, connections and rules go at once; its events and deliveries are removed in the background."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn remove(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: WorkspaceId = id.parse().map_err(|_| ApiError::not_found("workspace"))?;
    if !app
        .change_routing(id, app.store().delete_workspace(id))
        .await?
    {
        return Err(ApiError::not_found("workspace"));
    }
    app.key_cache().forget_workspace(id);
    tracing::info!(workspace = %id, "workspace deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Rotate a workspace's keys
#[utoipa::path(
    post,
    path = "/v1/workspaces/{id}/keys/rotate",
    operation_id = "rotateWorkspaceKeys",
    tag = "workspaces",
    security(("adminToken" = [])),
    params(("id" = WorkspaceId, Path, description = "The workspace.")),
    responses(
        (status = 200, description = "New keys; the old ones, and every embed session minted with the old secret key, stop working at once.", body = WorkspaceWithKeys),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
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
