//! `/v1/connections`: destination accounts of a workspace. Secrets are
//! sealed with the master key and never returned after creation (a webhook's
//! signing secret is shown once, at creation and at rotation).

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
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::{Instant, SystemTime};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/connections", get(list).post(create))
        .route(
            "/v1/connections/{id}",
            get(get_one).patch(update).delete(remove),
        )
        .route("/v1/connections/{id}/rotate-secret", post(rotate_secret))
        .route("/v1/connections/{id}/test", post(test))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateConnection {
    name: Option<String>,
    config: Option<Value>,
    status: Option<ConnectionStatus>,
}

#[derive(Serialize)]
pub struct ConnectionView {
    id: ConnectionId,
    #[serde(rename = "type")]
    kind: ConnectionKind,
    name: String,
    status: ConnectionStatus,
    config: Value,
    created_at: String,
    updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
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

#[derive(Serialize)]
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
    match app
        .store()
        .update_connection(workspace, current.id, patch)
        .await?
    {
        PatchOutcome::Updated(connection) => {
            app.rule_index().invalidate(workspace);
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

async fn remove(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match app
        .store()
        .delete_connection(workspace, parse_id(&id)?)
        .await?
    {
        DeleteConnection::Deleted => {
            app.rule_index().invalidate(workspace);
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

#[derive(Serialize)]
struct RotatedSecret {
    signing_secret: String,
    previous_secret_expires_at: String,
}

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
    match app
        .store()
        .update_connection(workspace, current.id, patch)
        .await?
    {
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    #[serde(default)]
    target: Option<Value>,
}

#[derive(Serialize)]
struct TestResult {
    ok: bool,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<String>,
}

/// Sends a test message now, outside the queue; nothing is stored.
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
