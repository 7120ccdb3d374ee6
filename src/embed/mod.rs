//! The embeddable tenant UI: sessions minted with a secret key, the page and
//! its assets (compiled into the binary), and the token exchange.
//!
//! A launch token (`eml_…`) in the iframe URL is exchanged on first load for
//! a session token (`ems_…`) that the page keeps in memory and sends as
//! `Authorization: Bearer` on every `/v1` call, where it stands for its
//! workspace's secret key. Both are sealed with the master key: they cannot
//! be forged or read, and they expire to the millisecond. Each carries the
//! hash of the secret key that minted it and is honoured only while that key
//! is the workspace's: rotating the keys (or deleting the workspace) ends
//! every session at once. Because the
//! session rides in a header, not a cookie, cross-site requests cannot carry
//! it (no CSRF), and third-party cookie blocking does not matter.

use crate::api::openapi_responses::{
    BadRequest, Forbidden, PayloadTooLarge, Unauthorized, Unavailable, Unprocessable,
};
use crate::api::{ApiError, AppState, JsonBody, RawBody, RealSecretKey, parse_json};
use crate::destinations::message::{Escape, render};
use crate::model::{KeyKind, WorkspaceId, format_timestamp_ms, now_ms};
use crate::store::KeyHash;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_session))
        .routes(routes!(page))
        .routes(routes!(exchange))
        .routes(routes!(asset))
        .routes(routes!(host_helper))
}

pub const DEFAULT_TTL_SECONDS: u64 = 1800;
pub const MAX_TTL_SECONDS: u64 = 43_200;
pub const MAX_ALLOWED_ORIGINS: usize = 10;
const LAUNCH_PREFIX: &str = "eml_";
const SESSION_PREFIX: &str = "ems_";
const TOKEN_AAD: &[u8] = b"switchyard:embed-token";

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_CSS: &str = include_str!("assets/app.css");
const APP_JS: &str = include_str!("assets/app.js");
const HOST_JS: &str = include_str!("assets/host.js");
const EXPIRED_PAGE: &str = include_str!("expired.html");

/// What a launch or session token carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    kind: TokenKind,
    workspace: u128,
    expires_at_ms: u64,
    allowed_origins: Vec<String>,
    /// SHA-256 of the secret key that minted the session.
    minted_by: KeyHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TokenKind {
    Launch,
    Session,
}

/// The workspace of a valid, unexpired session token (`ems_…`), else `None`.
pub async fn session_workspace(app: &AppState, token: &str) -> Option<WorkspaceId> {
    let claims = open(app, token.strip_prefix(SESSION_PREFIX)?, TokenKind::Session).await?;
    Some(WorkspaceId(claims.workspace))
}

/// Whether a bearer token looks like a session token (so an invalid one is
/// answered as an expired session rather than an unknown key).
pub fn is_session_token(token: &str) -> bool {
    token.starts_with(SESSION_PREFIX)
}

fn seal(app: &AppState, claims: &Claims) -> Result<String, ApiError> {
    let plaintext = serde_json::to_vec(claims).map_err(|error| ApiError::internal(&error))?;
    let sealed = app
        .master_key()
        .seal(&plaintext, TOKEN_AAD)
        .map_err(|error| ApiError::internal(&error))?;
    let prefix = match claims.kind {
        TokenKind::Launch => LAUNCH_PREFIX,
        TokenKind::Session => SESSION_PREFIX,
    };
    Ok(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(sealed)))
}

/// Opens a token body (without its prefix); `None` when forged, of the
/// wrong kind, expired (exactly: no leeway) or minted by a secret key the
/// workspace no longer has.
async fn open(app: &AppState, body: &str, kind: TokenKind) -> Option<Claims> {
    let sealed = URL_SAFE_NO_PAD.decode(body).ok()?;
    let plaintext = app.master_key().open(&sealed, TOKEN_AAD).ok()?;
    let claims: Claims = serde_json::from_slice(&plaintext).ok()?;
    if claims.kind != kind || now_ms() >= claims.expires_at_ms {
        return None;
    }
    let minted_by = match app.key_cache().lookup(app.store(), &claims.minted_by).await {
        Ok(found) => found,
        Err(error) => {
            // Fail closed: a session is only as good as its key.
            tracing::warn!(%error, "cannot check the key of an embed session");
            None
        }
    };
    (minted_by == Some((WorkspaceId(claims.workspace), KeyKind::Secret))).then_some(claims)
}

async fn open_launch(app: &AppState, token: &str) -> Option<Claims> {
    open(app, token.strip_prefix(LAUNCH_PREFIX)?, TokenKind::Launch).await
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateEmbedSession)]
struct CreateSession {
    /// Default 1800.
    #[schema(minimum = 1, maximum = 43200)]
    ttl_seconds: Option<u64>,
    /// Origins (`scheme://host[:port]`) allowed to frame the UI (CSP
    /// `frame-ancestors`) and to talk to it with postMessage; any may frame
    /// it when empty. At most 10.
    #[serde(default)]
    #[schema(max_items = 10, example = json!(["https://app.example.com"]))]
    allowed_origins: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = EmbedSession)]
struct SessionCreated {
    /// `{public_url}/embed?token=<token>`, for an iframe.
    #[schema(format = "uri")]
    url: String,
    /// The launch token.
    #[schema(pattern = "^eml_")]
    token: String,
    /// Exact, no leeway.
    #[schema(value_type = crate::api::openapi_schemas::Timestamp)]
    expires_at: String,
}

/// Mint an embed session
///
/// Needs the workspace's real secret key: an embed session or a
/// publishable key gets 403. The body may be empty.
#[utoipa::path(
    post,
    path = "/v1/embed/sessions",
    operation_id = "createEmbedSession",
    tag = "embed",
    security(("secretKey" = [])),
    request_body(content = Option<CreateSession>, example = json!({"ttl_seconds": 1800, "allowed_origins": ["https://app.example.com"]})),
    responses(
        (status = 201, description = "A launch URL for an iframe.", body = SessionCreated),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn create_session(
    State(app): State<AppState>,
    RealSecretKey(workspace, key_hash): RealSecretKey,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<SessionCreated>), ApiError> {
    let body: CreateSession = if body.is_empty() {
        CreateSession::default()
    } else {
        parse_json(&body)?
    };
    let ttl = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl_seconds",
            format!("must be 1 to {MAX_TTL_SECONDS}"),
        ));
    }
    if body.allowed_origins.len() > MAX_ALLOWED_ORIGINS {
        return Err(ApiError::invalid(
            "allowed_origins",
            format!("at most {MAX_ALLOWED_ORIGINS} origins"),
        ));
    }
    let mut origins = Vec::with_capacity(body.allowed_origins.len());
    for (index, origin) in body.allowed_origins.iter().enumerate() {
        origins.push(normalise_origin(origin).ok_or_else(|| {
            ApiError::invalid(
                &format!("allowed_origins[{index}]"),
                "must be an origin such as https://app.example.com",
            )
        })?);
    }
    let expires_at_ms = now_ms() + ttl * 1000;
    let token = seal(
        &app,
        &Claims {
            kind: TokenKind::Launch,
            workspace: workspace.0,
            expires_at_ms,
            allowed_origins: origins,
            minted_by: key_hash,
        },
    )?;
    let base = app
        .config()
        .public_url
        .as_deref()
        .unwrap_or_default()
        .trim_end_matches('/');
    Ok((
        StatusCode::CREATED,
        Json(SessionCreated {
            url: format!("{base}/embed?token={token}"),
            token,
            expires_at: format_timestamp_ms(expires_at_ms),
        }),
    ))
}

/// `scheme://host[:port]` with nothing after it, lowercased.
fn normalise_origin(text: &str) -> Option<String> {
    let url = reqwest::Url::parse(text).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    if !plain || url.host_str().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PageQuery {
    /// The launch token (`eml_…`) from `POST /v1/embed/sessions`; without
    /// it the page resumes the session it holds (a reload in the iframe).
    token: Option<String>,
}

/// The embeddable tenant UI
///
/// Authenticated by the launch token in the query string.
#[utoipa::path(
    get,
    path = "/embed",
    operation_id = "embedPage",
    tag = "embed",
    security(),
    params(PageQuery),
    responses(
        (status = 200, description = "The UI page; `allowed_origins` become the CSP `frame-ancestors`.", body = String, content_type = "text/html"),
        (status = 401, description = "A forged or expired launch token: an expired-session page.", body = String, content_type = "text/html"),
    ),
)]
async fn page(State(app): State<AppState>, Query(query): Query<PageQuery>) -> Response {
    // Without a token the page is a reload inside the iframe: it resumes
    // its session from sessionStorage. The page itself holds no secrets.
    let origins = match query.token.as_deref() {
        None => Vec::new(),
        Some(token) => match open_launch(&app, token).await {
            Some(claims) => claims.allowed_origins,
            None => return expired_page(),
        },
    };
    let ancestors = if origins.is_empty() {
        "*".to_string()
    } else {
        format!("'self' {}", origins.join(" "))
    };
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors {ancestors}"
    );
    let mut response = Html(INDEX_HTML).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn expired_page() -> Response {
    let context = serde_json::json!({
        "title": "This session has expired",
        "message": "The link is no longer valid. Reload the page in your product to open a new session.",
    });
    let html = render(EXPIRED_PAGE, Escape::Html, &context)
        .unwrap_or_else(|_| "This session has expired.".to_string());
    (
        StatusCode::UNAUTHORIZED,
        [(header::CACHE_CONTROL, "no-store")],
        Html(html),
    )
        .into_response()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EmbedExchange)]
struct Exchange {
    /// A launch token from `POST /v1/embed/sessions`.
    #[schema(pattern = "^eml_")]
    token: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = EmbedExchanged)]
struct Exchanged {
    /// Send as `Authorization: Bearer ems_…` (the `embedSession` scheme).
    #[schema(pattern = "^ems_")]
    session: String,
    #[schema(inline)]
    workspace: WorkspaceView,
    #[schema(value_type = crate::api::openapi_schemas::Timestamp)]
    expires_at: String,
    /// The page posts to its host only at these origins (see `host.js`).
    allowed_origins: Vec<String>,
}

#[derive(Serialize, ToSchema)]
struct WorkspaceView {
    id: WorkspaceId,
    name: String,
}

/// Exchange a launch token for a session token
///
/// Launch token → session token with the same expiry and workspace, once:
/// the launch URL sits in an iframe `src`, where history, logs or a
/// `Referer` can leak it, so a second exchange gets 401 (the first session
/// goes on).
#[utoipa::path(
    post,
    path = "/embed/session",
    operation_id = "exchangeEmbedToken",
    tag = "embed",
    security(),
    request_body = Exchange,
    responses(
        (status = 200, description = "A session token with the launch token's workspace and expiry.", body = Exchanged),
        (status = 400, response = BadRequest),
        (status = 401, description = "A forged, expired or already exchanged launch token, or its workspace is gone (`unauthorized`).", body = crate::api::openapi_schemas::Error),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn exchange(
    State(app): State<AppState>,
    JsonBody(body): JsonBody<Exchange>,
) -> Result<Json<Exchanged>, ApiError> {
    let claims = open_launch(&app, &body.token)
        .await
        .ok_or_else(|| ApiError::unauthorized("this session has expired or is not valid"))?;
    let workspace = app
        .store()
        .workspace(WorkspaceId(claims.workspace))
        .await?
        .ok_or_else(|| ApiError::unauthorized("this session's workspace no longer exists"))?;
    let first_use = app
        .store()
        .use_launch_token(launch_digest(&body.token), claims.expires_at_ms)
        .await?;
    if !first_use {
        return Err(ApiError::unauthorized(
            "this launch link has already been used; open the page again from your product",
        ));
    }
    let session = seal(
        &app,
        &Claims {
            kind: TokenKind::Session,
            ..claims.clone()
        },
    )?;
    Ok(Json(Exchanged {
        session,
        workspace: WorkspaceView {
            id: workspace.id,
            name: workspace.name,
        },
        expires_at: format_timestamp_ms(claims.expires_at_ms),
        allowed_origins: claims.allowed_origins,
    }))
}

/// What the used-token table keys a launch token by: 128 bits of its
/// SHA-256 (the token itself is a bearer secret, not stored).
fn launch_digest(token: &str) -> u128 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(token.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// A static asset of the tenant UI
#[utoipa::path(
    get,
    path = "/embed/assets/{file}",
    operation_id = "embedAsset",
    tag = "embed",
    security(),
    params(("file" = String, Path, pattern = "^app\\.(js|css)$", description = "`app.js` or `app.css`.")),
    responses(
        (status = 200, description = "The asset.", content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "No such asset (`not_found`).", body = crate::api::openapi_schemas::Error),
    ),
)]
async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "app.css" => (APP_CSS, "text/css; charset=utf-8"),
        _ => return ApiError::not_found("asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// The host page's helper script
///
/// Mounts the UI in an iframe and speaks its postMessage contract (see the
/// README, "Embedding"). Loaded by the host page from another origin: a
/// plain script, so no CORS header is needed.
#[utoipa::path(
    get,
    path = "/embed/host.js",
    operation_id = "embedHostHelper",
    tag = "embed",
    security(),
    responses(
        (status = 200, description = "The script.", body = String, content_type = "text/javascript"),
    ),
)]
async fn host_helper() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        HOST_JS,
    )
        .into_response()
}
