//! Slack's OAuth v2 install, started with a workspace's secret key and
//! finished at `/oauth/slack/callback`, and the channel picker's list.
//!
//! The `state` parameter is the workspace id, a single-use nonce, an expiry
//! and the return URL, sealed with the master key (so it cannot be forged or
//! read) and registered in the store (so it works once).

use super::openapi::{
    BadGateway, BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized, Unavailable,
    Unprocessable,
};
use super::{ApiError, AppState, RawBody, SecretKey};
use crate::destinations::seal_secrets;
use crate::destinations::slack::{Channel, OAuthAccess, SlackConfig, SlackSecrets};
use crate::model::{
    Connection, ConnectionId, ConnectionKind, ConnectionStatus, WorkspaceId, now_ms,
};
use crate::store::{ConnectionPatch, PatchOutcome};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(callback))
        .routes(routes!(channels))
}

/// How long an install may take from the authorize URL to the callback.
pub const STATE_TTL: Duration = Duration::from_secs(15 * 60);
const STATE_AAD: &[u8] = b"switchyard:slack-oauth-state";
const RESULT_PAGE: &str = include_str!("pages/oauth_result.html");

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SlackAuthorizeRequest)]
struct AuthorizeRequest {
    /// An http or https URL to redirect to after the install.
    #[serde(default)]
    #[schema(format = "uri")]
    return_url: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SlackAuthorizeAnswer)]
struct AuthorizeAnswer {
    /// `{oauth_base}/oauth/v2/authorize?client_id=…&scope=…&redirect_uri={public_url}/oauth/slack/callback&state=…`
    /// with a signed, expiring (15 min), single-use `state`.
    #[schema(format = "uri")]
    url: String,
}

#[derive(Serialize, Deserialize)]
struct OAuthState {
    workspace: u128,
    nonce: u128,
    expires_at_ms: u64,
    return_url: Option<String>,
}

/// Slack's install page for this workspace, with a fresh `state`.
pub async fn authorize_url(
    app: &AppState,
    workspace: WorkspaceId,
    return_url: Option<String>,
) -> Result<String, ApiError> {
    let slack = &app.config().slack;
    let client_id = slack.client_id.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "slack_not_configured",
            "this instance has no Slack app: the operator must set slack.client_id and slack.client_secret",
        )
    })?;
    if let Some(url) = &return_url
        && reqwest::Url::parse(url)
            .map(|url| !matches!(url.scheme(), "http" | "https"))
            .unwrap_or(true)
    {
        return Err(ApiError::invalid(
            "return_url",
            "must be an http or https URL",
        ));
    }
    let state = OAuthState {
        workspace: workspace.0,
        nonce: rand::random(),
        expires_at_ms: now_ms() + STATE_TTL.as_millis() as u64,
        return_url,
    };
    let plaintext = serde_json::to_vec(&state).map_err(|error| ApiError::internal(&error))?;
    let sealed = app
        .master_key()
        .seal(&plaintext, STATE_AAD)
        .map_err(|error| ApiError::internal(&error))?;
    app.store()
        .put_oauth_state(state.nonce, state.expires_at_ms)
        .await?;
    let mut url = reqwest::Url::parse(&format!("{}/oauth/v2/authorize", slack.oauth_base))
        .map_err(|error| ApiError::internal(&error))?;
    url.query_pairs_mut()
        .append_pair("client_id", client_id)
        .append_pair("scope", &slack.scopes.join(","))
        .append_pair("redirect_uri", &redirect_uri(app))
        .append_pair("state", &URL_SAFE_NO_PAD.encode(sealed));
    Ok(url.to_string())
}

fn redirect_uri(app: &AppState) -> String {
    let base = app.config().public_url.as_deref().unwrap_or_default();
    format!("{}/oauth/slack/callback", base.trim_end_matches('/'))
}

/// Start a Slack install
///
/// 422 `slack_not_configured` when the instance has no Slack app
/// (`slack.client_id`, `slack.client_secret`); 422 for a `return_url` that
/// is not http(s). The body may be empty.
#[utoipa::path(
    post,
    path = "/v1/connections/slack/authorize",
    operation_id = "authorizeSlack",
    tag = "slack",
    security(("secretKey" = []), ("embedSession" = [])),
    request_body(content = Option<AuthorizeRequest>),
    responses(
        (status = 200, description = "Slack's install page for this workspace.", body = AuthorizeAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn authorize(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    RawBody(body): RawBody,
) -> Result<Json<AuthorizeAnswer>, ApiError> {
    let request: AuthorizeRequest = if body.is_empty() {
        AuthorizeRequest::default()
    } else {
        super::parse_json(&body)?
    };
    let url = authorize_url(&app, workspace, request.return_url).await?;
    Ok(Json(AuthorizeAnswer { url }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// Set by Slack instead of `code`, e.g. `access_denied`.
    error: Option<String>,
}

/// Finish a Slack install
///
/// Slack's redirect target, authenticated by the signed, single-use
/// `state`. Creates or updates the workspace's connection for that Slack
/// team. Answers are HTML pages. Every failure stores nothing and says why.
#[utoipa::path(
    get,
    path = "/oauth/slack/callback",
    operation_id = "slackOAuthCallback",
    tag = "slack",
    security(),
    params(CallbackQuery),
    responses(
        (status = 200, description = "A result page: connected, or install cancelled (`error=access_denied`, nothing stored).", body = String, content_type = "text/html"),
        (status = 303, description = "Connected; redirects to the `return_url` given at authorize.", headers(("Location" = String))),
        (status = 400, description = "Bad, expired or reused `state`, or no `code`; nothing stored.", body = String, content_type = "text/html"),
        (status = 502, description = "Slack did not complete the install.", body = String, content_type = "text/html"),
        (status = 503, description = "Slack is not configured, or storage is unavailable.", body = String, content_type = "text/html"),
    ),
)]
async fn callback(State(app): State<AppState>, Query(query): Query<CallbackQuery>) -> Response {
    match finish_install(&app, query).await {
        Ok((connection, Some(return_url))) => {
            tracing::info!(connection = %connection.id, "Slack installed");
            Redirect::to(&return_url).into_response()
        }
        Ok((connection, None)) => {
            let team = connection.config["team_name"]
                .as_str()
                .unwrap_or("your Slack workspace");
            page(
                StatusCode::OK,
                true,
                "Slack connected",
                &format!("Alerts can now be posted to {team}."),
            )
        }
        Err(InstallError {
            status,
            title,
            message,
        }) => page(status, false, title, &message),
    }
}

struct InstallError {
    status: StatusCode,
    title: &'static str,
    message: String,
}

impl InstallError {
    fn bad_state(message: &str) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            title: "This install link is not valid",
            message: format!("{message} Start the Slack install again from the settings page."),
        }
    }
}

async fn finish_install(
    app: &AppState,
    query: CallbackQuery,
) -> Result<(Connection, Option<String>), InstallError> {
    let sealed = query
        .state
        .as_deref()
        .and_then(|state| URL_SAFE_NO_PAD.decode(state).ok())
        .ok_or_else(|| InstallError::bad_state("The link has no valid state."))?;
    let state: OAuthState = app
        .master_key()
        .open(&sealed, STATE_AAD)
        .ok()
        .and_then(|plaintext| serde_json::from_slice(&plaintext).ok())
        .ok_or_else(|| {
            InstallError::bad_state("The link's state was not issued by this server.")
        })?;
    let now = now_ms();
    if now >= state.expires_at_ms {
        return Err(InstallError::bad_state("The link has expired."));
    }
    let unused = app
        .store()
        .consume_oauth_state(state.nonce, now)
        .await
        .map_err(|_| InstallError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Try again",
            message: "Storage is unavailable right now.".into(),
        })?;
    if !unused {
        return Err(InstallError::bad_state("The link was already used."));
    }
    if let Some(error) = query.error {
        let (title, message) = if error == "access_denied" {
            (
                "Slack install cancelled",
                "The install was cancelled in Slack; nothing was connected.".to_string(),
            )
        } else {
            ("Slack install failed", format!("Slack answered: {error}."))
        };
        return Err(InstallError {
            status: StatusCode::OK,
            title,
            message,
        });
    }
    let code = query
        .code
        .filter(|code| !code.is_empty())
        .ok_or_else(|| InstallError::bad_state("Slack sent no authorisation code."))?;
    let slack = &app.config().slack;
    let (Some(client_id), Some(client_secret)) = (&slack.client_id, &slack.client_secret) else {
        return Err(InstallError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            title: "Slack is not configured",
            message: "The operator must set slack.client_id and slack.client_secret.".into(),
        });
    };
    let access = app
        .destinations()
        .slack_api()
        .oauth_access(client_id, client_secret.expose(), &code, &redirect_uri(app))
        .await
        .map_err(|error| InstallError {
            status: StatusCode::BAD_GATEWAY,
            title: "Slack install failed",
            message: format!("Slack did not complete the install: {error}."),
        })?;
    let connection = store_install(app, WorkspaceId(state.workspace), access)
        .await
        .map_err(|error| InstallError {
            status: error.status(),
            title: "Slack install failed",
            message: "The connection could not be saved.".into(),
        })?;
    Ok((connection, state.return_url))
}

/// Creates the workspace's connection for this Slack team, or updates the
/// existing one (a reinstall after `needs_reauth`).
async fn store_install(
    app: &AppState,
    workspace: WorkspaceId,
    access: OAuthAccess,
) -> Result<Connection, ApiError> {
    if app.store().workspace(workspace).await?.is_none() {
        return Err(ApiError::not_found("workspace"));
    }
    let config = SlackConfig {
        team_id: access.team.id.clone(),
        team_name: access.team.name.clone(),
        bot_user_id: access.bot_user_id.clone(),
        scopes: access
            .scope
            .split(',')
            .filter(|scope| !scope.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let secrets = SlackSecrets {
        bot_token: access.access_token.clone(),
        refresh_token: access.refresh_token.clone(),
        expires_at_ms: access.expires_in.map(|secs| now_ms() + secs * 1000),
    };
    let config_json = serde_json::to_value(&config).map_err(|error| ApiError::internal(&error))?;
    let secrets_json =
        serde_json::to_value(&secrets).map_err(|error| ApiError::internal(&error))?;
    let existing = app
        .store()
        .connections(workspace)
        .await?
        .into_iter()
        .find(|connection| {
            connection.kind == ConnectionKind::Slack
                && connection.config["team_id"] == config.team_id.as_str()
        });
    let connection = match existing {
        Some(existing) => {
            let patch = ConnectionPatch {
                status: Some(ConnectionStatus::Active),
                config: Some(config_json),
                sealed_secrets: Some(
                    seal_secrets(app.master_key(), existing.id, &secrets_json)
                        .map_err(|error| ApiError::internal(&error))?,
                ),
                ..ConnectionPatch::default()
            };
            let update = app.store().update_connection(workspace, existing.id, patch);
            match app.change_routing(workspace, update).await? {
                PatchOutcome::Updated(connection) => {
                    app.destinations().forget_connection(connection.id);
                    connection
                }
                PatchOutcome::NotFound | PatchOutcome::Stale(_) => {
                    return Err(ApiError::not_found("connection"));
                }
            }
        }
        None => {
            let id = ConnectionId::new();
            let now = now_ms();
            let connection = Connection {
                id,
                workspace_id: workspace,
                name: format!("Slack: {}", config.team_name),
                kind: ConnectionKind::Slack,
                status: ConnectionStatus::Active,
                config: config_json,
                sealed_secrets: seal_secrets(app.master_key(), id, &secrets_json)
                    .map_err(|error| ApiError::internal(&error))?,
                created_at_ms: now,
                updated_at_ms: now,
            };
            let create = app.store().create_connection(connection.clone());
            app.change_routing(workspace, create).await?;
            connection
        }
    };
    Ok(connection)
}

#[derive(Serialize, ToSchema)]
#[schema(as = SlackChannelList)]
struct ChannelList {
    data: Vec<Channel>,
}

/// List a Slack connection's channels
///
/// 422 `not_slack` for other types; 502 `slack_error` when Slack fails.
#[utoipa::path(
    get,
    path = "/v1/connections/{id}/channels",
    operation_id = "listSlackChannels",
    tag = "slack",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = crate::model::ConnectionId, Path, description = "The Slack connection.")),
    responses(
        (status = 200, description = "Public and private channels, archived left out; cached for a minute.", body = ChannelList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = Unprocessable),
        (status = 502, response = BadGateway),
        (status = 503, response = Unavailable),
    ),
)]
async fn channels(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<Json<ChannelList>, ApiError> {
    let id: ConnectionId = id.parse().map_err(|_| ApiError::not_found("connection"))?;
    let connection = app
        .store()
        .connection(workspace, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))?;
    if connection.kind != ConnectionKind::Slack {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_slack",
            "only Slack connections have channels",
        ));
    }
    let data = app
        .destinations()
        .slack_channels(&connection)
        .await
        .map_err(|error| ApiError::new(StatusCode::BAD_GATEWAY, "slack_error", error))?;
    Ok(Json(ChannelList { data }))
}

fn page(status: StatusCode, ok: bool, title: &str, message: &str) -> Response {
    let context = serde_json::json!({"ok": ok, "title": title, "message": message});
    match crate::destinations::message::render(
        RESULT_PAGE,
        crate::destinations::message::Escape::Html,
        &context,
    ) {
        Ok(html) => (status, [(header::CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render the OAuth result page");
            (status, format!("{title}: {message}")).into_response()
        }
    }
}
