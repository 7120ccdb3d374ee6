//! `/v1/workspaces`: the admin token creates, lists, deletes workspaces and
//! rotates their keys. Keys are shown only in the create and rotate answers.

use super::auth::Admin;
use super::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable,
};
use super::{ApiError, AppState, JsonBody, generate_key, hash_key};
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
    let publishable_key = generate_key(KeyKind::Publishable);
    let secret_key = generate_key(KeyKind::Secret);
    app.store()
        .create_workspace(NewWorkspace {
            workspace: workspace.clone(),
            publishable_key_hash: hash_key(&publishable_key),
            secret_key_hash: hash_key(&secret_key),
        })
        .await?;
    tracing::info!(workspace = %workspace.id, "workspace created");
    Ok((
        StatusCode::CREATED,
        Json(WorkspaceWithKeys {
            workspace: workspace.into(),
            publishable_key,
            secret_key,
        }),
    ))
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
    if !app.store().delete_workspace(id).await? {
        return Err(ApiError::not_found("workspace"));
    }
    app.rule_index().invalidate(id);
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
    let publishable_key = generate_key(KeyKind::Publishable);
    let secret_key = generate_key(KeyKind::Secret);
    let workspace = app
        .store()
        .rotate_keys(id, hash_key(&publishable_key), hash_key(&secret_key))
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    app.key_cache().forget_workspace(id);
    tracing::info!(workspace = %id, "workspace keys rotated");
    Ok(Json(WorkspaceWithKeys {
        workspace: workspace.into(),
        publishable_key,
        secret_key,
    }))
}
