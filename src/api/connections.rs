//! `/v1/connections`: destination accounts of a workspace. Secrets are
//! sealed with the master key and never returned after creation (a webhook's
//! signing secret is shown once, at creation and at rotation).

use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
    Unprocessable,
};
use super::{ApiError, AppState, JsonBody, RawBody, SecretKey};
use crate::destinations::webhook::signing::WebhookSecret;
use crate::destinations::webhook::{PreviousSecret, WebhookSecrets};
use crate::destinations::{
    Destination, Invalid, Job, Outcome, Verdict, open_secrets, seal_secrets,
};
use crate::model::{
    Connection, ConnectionId, ConnectionKind, ConnectionStatus, Delivery, DeliveryId,
    DeliveryStatus, Event, EventId, EventName, Rule, RuleId, WorkspaceId, format_timestamp_ms,
    now_ms,
};
use crate::store::{ConnectionPatch, DeleteConnection, PatchOutcome};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Instant, SystemTime};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod schemas;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, remove))
        .routes(routes!(rotate_secret))
        .routes(routes!(test))
}

/// How long a rotated-out webhook secret keeps signing.
pub const SECRET_OVERLAP_MS: u64 = 24 * 60 * 60 * 1000;
const MAX_NAME_CHARS: usize = 128;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConnection {
    #[serde(rename = "type")]
    kind: ConnectionKind,
    name: String,
    #[serde(default)]
    config: Value,
}

/// Changes only the fields sent (null means not sent).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateConnection {
    #[schema(min_length = 1, max_length = 128)]
    name: Option<String>,
    /// Webhook: `{"url","headers"?}` replaces the URL and the custom
    /// headers. PagerDuty: `{"routing_key"}` replaces the routing key. Teams
    /// and Discord: `{"url"}` replaces the URL. 422 for other types.
    #[schema(value_type = Option<schemas::UpdateConfig>)]
    config: Option<Value>,
    /// `needs_reauth` cannot be set (422).
    status: Option<ConnectionStatus>,
}

/// Secrets are never returned after creation.
#[derive(Serialize, ToSchema)]
#[schema(as = Connection)]
pub struct ConnectionView {
    id: ConnectionId,
    #[serde(rename = "type")]
    kind: ConnectionKind,
    name: String,
    status: ConnectionStatus,
    /// The public config: webhook `{url, headers?}` with header values
    /// masked as `********`; slack `{team_id, team_name, bot_user_id,
    /// scopes}`; email `{provider, from}`; pagerduty `{routing_key:
    /// "********"}`; teams and discord `{url}` with all but the origin
    /// masked (`https://host/********`).
    #[schema(value_type = Object)]
    config: Value,
    #[schema(value_type = super::openapi::Timestamp)]
    created_at: String,
    #[schema(value_type = super::openapi::Timestamp)]
    updated_at: String,
    /// Webhook only, and only in the creation answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^whsec_")]
    signing_secret: Option<String>,
}

impl ConnectionView {
    /// The public view, as the connection's kind shows it (secrets
    /// masked).
    pub fn of(connection: &Connection, app: &AppState) -> Self {
        let open = || open_secrets(app.master_key(), connection).ok();
        let config = match app.destinations().get(connection.kind) {
            Some(destination) => destination.shown_config(&connection.config, &open),
            None => connection.config.clone(),
        };
        Self {
            id: connection.id,
            kind: connection.kind,
            name: connection.name.clone(),
            status: connection.status,
            config,
            created_at: format_timestamp_ms(connection.created_at_ms),
            updated_at: format_timestamp_ms(connection.updated_at_ms),
            signing_secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct ConnectionList {
    data: Vec<ConnectionView>,
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
    }
    Ok(name.to_string())
}

fn parse_id(id: &str) -> Result<ConnectionId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("connection"))
}

/// The registered destination of a kind.
pub fn destination(app: &AppState, kind: ConnectionKind) -> Result<&dyn Destination, ApiError> {
    app.destinations().get(kind).ok_or_else(|| {
        ApiError::invalid(
            "type",
            format!("{} is not available on this instance", kind.as_str()),
        )
    })
}

impl From<Invalid> for ApiError {
    fn from(invalid: Invalid) -> Self {
        ApiError::invalid(&invalid.field, invalid.problem)
    }
}

/// Create a connection
#[utoipa::path(
    post,
    path = "/v1/connections",
    operation_id = "createConnection",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    request_body(content = schemas::CreateConnection, example = json!({"type": "webhook", "name": "ops hook", "config": {"url": "https://example.com/hooks/switchyard"}})),
    responses(
        (status = 201, description = "Created. A webhook answer includes `signing_secret` once.", body = ConnectionView),
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
    SecretKey(workspace): SecretKey,
    JsonBody(body): JsonBody<CreateConnection>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let name = check_name(&body.name)?;
    let id = ConnectionId::new();
    let parts = destination(&app, body.kind)?.create(&body.config).await?;
    let now = now_ms();
    let connection = Connection {
        id,
        workspace_id: workspace,
        name,
        kind: body.kind,
        status: ConnectionStatus::Active,
        config: parts.config,
        sealed_secrets: seal_secrets(app.master_key(), id, &parts.secrets)
            .map_err(|error| ApiError::internal(&error))?,
        created_at_ms: now,
        updated_at_ms: now,
    };
    app.store().create_connection(connection.clone()).await?;
    let mut view = ConnectionView::of(&connection, &app);
    view.signing_secret = parts.shown_once;
    Ok((StatusCode::CREATED, Json(view)))
}

/// List connections
#[utoipa::path(
    get,
    path = "/v1/connections",
    operation_id = "listConnections",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    responses(
        (status = 200, description = "Every connection of the workspace; secrets never returned, header values masked.", body = ConnectionList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
) -> Result<Json<ConnectionList>, ApiError> {
    let data = app
        .store()
        .connections(workspace)
        .await?
        .iter()
        .map(|connection| ConnectionView::of(connection, &app))
        .collect();
    Ok(Json(ConnectionList { data }))
}

/// Get a connection
#[utoipa::path(
    get,
    path = "/v1/connections/{id}",
    operation_id = "getConnection",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = ConnectionId, Path, description = "The connection.")),
    responses(
        (status = 200, description = "The connection.", body = ConnectionView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn get_one(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let connection = find(&app, workspace, &id).await?;
    Ok(Json(ConnectionView::of(&connection, &app)))
}

/// A webhook connection's decrypted secrets.
fn webhook_secrets(app: &AppState, connection: &Connection) -> Result<WebhookSecrets, ApiError> {
    let json =
        open_secrets(app.master_key(), connection).map_err(|error| ApiError::internal(&error))?;
    serde_json::from_value(json).map_err(|error| ApiError::internal(&error))
}

async fn find(app: &AppState, workspace: WorkspaceId, id: &str) -> Result<Connection, ApiError> {
    app.store()
        .connection(workspace, parse_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))
}

/// Update a connection
///
/// 409 `conflict` when the secret was rotated meanwhile; try again.
#[utoipa::path(
    patch,
    path = "/v1/connections/{id}",
    operation_id = "updateConnection",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = ConnectionId, Path, description = "The connection.")),
    request_body = UpdateConnection,
    responses(
        (status = 200, description = "The updated connection.", body = ConnectionView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn update(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<UpdateConnection>,
) -> Result<Json<ConnectionView>, ApiError> {
    let current = find(&app, workspace, &id).await?;
    let mut patch = ConnectionPatch {
        name: body.name.as_deref().map(check_name).transpose()?,
        ..ConnectionPatch::default()
    };
    if let Some(status) = body.status {
        if status == ConnectionStatus::NeedsReauth {
            return Err(ApiError::invalid("status", "must be active or disabled"));
        }
        patch.status = Some(status);
    }
    if let Some(config) = body.config {
        let secrets =
            open_secrets(app.master_key(), &current).map_err(|error| ApiError::internal(&error))?;
        let (public, secrets) = destination(&app, current.kind)?
            .update(&config, secrets)
            .await?;
        patch.config = Some(public);
        patch.sealed_secrets = Some(
            seal_secrets(app.master_key(), current.id, &secrets)
                .map_err(|error| ApiError::internal(&error))?,
        );
        // Never undo a secret rotation that committed meanwhile.
        patch.if_secrets_are = Some(current.sealed_secrets.clone());
    }
    let update = app.store().update_connection(workspace, current.id, patch);
    match app.change_routing(workspace, update).await? {
        PatchOutcome::Updated(connection) => {
            app.destinations().forget_connection(connection.id);
            Ok(Json(ConnectionView::of(&connection, &app)))
        }
        PatchOutcome::NotFound => Err(ApiError::not_found("connection")),
        PatchOutcome::Stale(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the connection's secrets changed meanwhile; try again",
        )),
    }
}

/// Delete a connection
///
/// 409 `connection_in_use` while rules send to it; the message lists them.
#[utoipa::path(
    delete,
    path = "/v1/connections/{id}",
    operation_id = "deleteConnection",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = ConnectionId, Path, description = "The connection.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 503, response = Unavailable),
    ),
)]
async fn remove(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let delete = app.store().delete_connection(workspace, id);
    match app.change_routing(workspace, delete).await? {
        DeleteConnection::Deleted => {
            app.destinations().forget_connection(id);
            Ok(StatusCode::NO_CONTENT)
        }
        DeleteConnection::NotFound => Err(ApiError::not_found("connection")),
        DeleteConnection::InUse(rules) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "connection_in_use",
            format!(
                "rules still send to this connection: {}; delete them or point them elsewhere first",
                rules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

#[derive(Serialize, ToSchema)]
struct RotatedSecret {
    #[schema(pattern = "^whsec_")]
    signing_secret: String,
    /// The old secret keeps signing beside the new one until then (24 h).
    #[schema(value_type = super::openapi::Timestamp)]
    previous_secret_expires_at: String,
}

/// Rotate a webhook's signing secret
///
/// 422 `not_a_webhook` for other types; 409 `conflict` on a concurrent
/// rotation.
#[utoipa::path(
    post,
    path = "/v1/connections/{id}/rotate-secret",
    operation_id = "rotateConnectionSecret",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = ConnectionId, Path, description = "The webhook connection.")),
    responses(
        (status = 200, description = "The new secret; the old one keeps signing beside it for 24 h.", body = RotatedSecret),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn rotate_secret(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<Json<RotatedSecret>, ApiError> {
    let current = find(&app, workspace, &id).await?;
    if current.kind != ConnectionKind::Webhook {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_webhook",
            "only webhook connections have a signing secret",
        ));
    }
    let mut secrets = webhook_secrets(&app, &current)?;
    let expires_at_ms = now_ms() + SECRET_OVERLAP_MS;
    let fresh = WebhookSecret::generate().expose();
    secrets.previous = Some(PreviousSecret {
        signing_secret: std::mem::replace(&mut secrets.signing_secret, fresh.clone()),
        expires_at_ms,
    });
    let secrets = serde_json::to_value(secrets).map_err(|error| ApiError::internal(&error))?;
    let patch = ConnectionPatch {
        sealed_secrets: Some(
            seal_secrets(app.master_key(), current.id, &secrets)
                .map_err(|error| ApiError::internal(&error))?,
        ),
        // A concurrent rotation must not be lost: apply only over what we read.
        if_secrets_are: Some(current.sealed_secrets.clone()),
        ..ConnectionPatch::default()
    };
    let update = app.store().update_connection(workspace, current.id, patch);
    match app.change_routing(workspace, update).await? {
        PatchOutcome::Updated(_) => Ok(Json(RotatedSecret {
            signing_secret: fresh,
            previous_secret_expires_at: format_timestamp_ms(expires_at_ms),
        })),
        PatchOutcome::NotFound => Err(ApiError::not_found("connection")),
        PatchOutcome::Stale(_) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "the secret was rotated concurrently; try again",
        )),
    }
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConnectionTestRequest)]
struct TestRequest {
    /// Where to send the test: `{"channel":"C…"}` for Slack,
    /// `{"to":["a@b.c"]}` for email; none for the other kinds.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    target: Option<Value>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ConnectionTestResult)]
struct TestResult {
    ok: bool,
    duration_ms: u64,
    /// The destination's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The first 4 KiB of the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<String>,
}

/// Send a test message
///
/// Sends a `switchyard.test` event now, outside the queue; nothing is
/// stored. The body may be empty.
#[utoipa::path(
    post,
    path = "/v1/connections/{id}/test",
    operation_id = "testConnection",
    tag = "connections",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = ConnectionId, Path, description = "The connection.")),
    request_body(content = Option<TestRequest>),
    responses(
        (status = 200, description = "The attempt's outcome; nothing is stored.", body = TestResult),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn test(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<TestResult>, ApiError> {
    let connection = find(&app, workspace, &id).await?;
    let request: TestRequest = if body.is_empty() {
        TestRequest::default()
    } else {
        super::parse_json(&body)?
    };
    let secrets =
        open_secrets(app.master_key(), &connection).map_err(|error| ApiError::internal(&error))?;
    let now = now_ms();
    let event = Event {
        id: EventId::new(),
        workspace_id: workspace,
        name: EventName::parse("switchyard.test")
            .map_err(|_| ApiError::invalid("event", "invalid"))?,
        resource: Some("switchyard".into()),
        resource_id: Some(connection.id.to_string()),
        payload: serde_json::to_vec(&json!({
            "message": "Test message from Switchyard: this connection works.",
            "severity": "info",
            "connection": connection.name,
        }))
        .map_err(|error| ApiError::internal(&error))?,
        received_at_ms: now,
    };
    let rule = Rule {
        id: RuleId::new(),
        workspace_id: workspace,
        name: "connection test".into(),
        events: vec!["switchyard.test".into()],
        connection_id: connection.id,
        target: request.target.unwrap_or(Value::Null),
        min_severity: None,
        conditions: json!([]),
        template: None,
        enabled: true,
        created_at_ms: now,
        updated_at_ms: now,
        dedup_seconds: None,
        max_per_hour: None,
    };
    let delivery = Delivery {
        id: DeliveryId::new(),
        workspace_id: workspace,
        event_id: event.id,
        rule_id: rule.id,
        connection_id: connection.id,
        status: DeliveryStatus::Pending,
        attempt_count: 0,
        next_attempt_at_ms: None,
        created_at_ms: now,
        updated_at_ms: now,
        alert: None,
        suppressed_before: 0,
    };
    let job = Job {
        delivery: &delivery,
        event: &event,
        rule: &rule,
        connection: &connection,
        secrets: &secrets,
        now: SystemTime::now(),
    };
    let started = Instant::now();
    let Outcome {
        status_code,
        response,
        verdict,
    } = app.destinations().send(&job).await;
    let error = match verdict {
        Verdict::Delivered => None,
        Verdict::Retry { error, .. } | Verdict::Permanent { error, .. } => Some(error),
    };
    Ok(Json(TestResult {
        ok: error.is_none(),
        duration_ms: started.elapsed().as_millis() as u64,
        status_code,
        error,
        response,
    }))
}
