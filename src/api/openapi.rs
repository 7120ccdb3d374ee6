//! `GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, generated
//! by utoipa. Each handler carries a `#[utoipa::path]` (method, path,
//! parameters, body, every status it answers, the keys it takes) and each
//! request and response type derives `ToSchema`; the resource modules
//! register their handlers with utoipa-axum's `routes!`, which adds the
//! route and its operation together, so a route cannot be served without
//! being documented. What no handler owns lives here: the document's info
//! and tags, the security schemes, the shared error answers and the
//! webhook a `webhook` connection receives.

use super::AppState;
use super::error::ErrorBody;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::LazyLock;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Paths, PathsBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response};
use utoipa::{Modify, OpenApi, PartialSchema, ToResponse, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The parts of the document that no handler owns.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard",
        description = "Self-hosted event router: durable ingest, per-workspace rules, fan-out to Slack, webhooks, email, PagerDuty, Microsoft Teams and Discord.\n\nEvery `/v1` call takes `Authorization: Bearer <key>`: the admin token for `/v1/workspaces*`; a workspace's secret key `sk_…` (or an embed session `ems_…`, which stands for it except when minting embed sessions) for everything in that workspace; its publishable key `pk_…` only for `POST /v1/events` and `POST /v1/events/batch`. A key of another workspace sees 404 for this workspace's objects. Errors are `{\"error\":{\"code\",\"message\"}}`; a rejected request stores nothing. An unknown route answers 404 `not_found` (\"no such route\"); a known route with another method answers 405 `method_not_allowed`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    servers((url = "/")),
    tags(
        (name = "workspaces", description = "Tenants, managed with the admin token."),
        (name = "events", description = "Durable ingest and the event log."),
        (name = "meshes", description = "Drop-in ingest for Meshes' events client (`@mesheshq/events`): set its `apiBaseUrl` to `{public_url}/api/v1`."),
        (name = "connections", description = "Destination accounts: webhooks, Slack, email, PagerDuty, Teams, Discord."),
        (name = "slack", description = "Slack OAuth install and channel picker."),
        (name = "rules", description = "Which events go where."),
        (name = "deliveries", description = "The delivery log and manual retry."),
        (name = "embed", description = "The embeddable tenant UI."),
        (name = "operations", description = "Health, readiness, metrics, backups and this document."),
        (name = "webhooks", description = "What Switchyard sends to webhook connections."),
    ),
    components(
        schemas(ErrorBody, crate::destinations::webhook::WebhookPayload<'static>),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            Unprocessable,
            RateLimited,
            BadGateway,
            Unavailable
        ),
    ),
    modifiers(&SecuritySchemes, &Webhooks),
)]
struct ApiDoc;

/// The documented API: every route with its operation. [`super::router`]
/// serves it; the document is what it collected.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(super::health::routes())
        .merge(super::workspaces::routes())
        .merge(super::backup::routes())
        .merge(super::queue::routes())
        .merge(super::capabilities::routes())
        .merge(crate::ingest::routes())
        .merge(super::slack::routes())
        .merge(crate::embed::routes())
        .merge(super::connections::routes())
        .merge(super::rules::routes())
        .merge(super::deliveries::routes())
        .routes(routes!(document))
}

/// The generated document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The document as served: built once, from the same router the server runs.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    // Serialising a tree of strings, maps and numbers cannot fail; should
    // it ever, the answer says so rather than panicking in a handler.
    openapi()
        .to_pretty_json()
        .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
});

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    security(),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", body = Object, content_type = "application/json"),
    ),
)]
async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// The four kinds of bearer credential, and the Meshes key's header.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format(format)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme(
            "adminToken",
            bearer(
                "admin token",
                "The instance admin token (`admin_token`): only `/v1/workspaces*`, `/v1/backup` and `/v1/queue`. Other keys get 403 there.",
            ),
        );
        components.add_security_scheme(
            "secretKey",
            bearer(
                "sk_…",
                "A workspace's secret key: everything of its own workspace, including emitting events.",
            ),
        );
        components.add_security_scheme(
            "publishableKey",
            bearer(
                "pk_…",
                "A workspace's publishable key: only `POST /v1/events` and `POST /v1/events/batch`; 403 elsewhere.",
            ),
        );
        components.add_security_scheme(
            "embedSession",
            bearer(
                "ems_…",
                "An embed session token from `POST /embed/session`: stands for its workspace's secret key on every secret-key endpoint except `POST /v1/embed/sessions`; 401 once expired.",
            ),
        );
        components.add_security_scheme(
            "meshesPublishableKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Meshes-Publishable-Key",
                "A workspace's Meshes-format publishable key (`mesh_pub_…`, from `meshes_publishable_key`): only `POST /api/v1/events` and `POST /api/v1/events/bulk`. Any other key in this header gets 401; a bearer key on these paths gets 403, and this key gets 403 on `/v1`.",
            ))),
        );
    }
}

/// OpenAPI 3.1 `webhooks`: what a `webhook` connection receives.
struct Webhooks;

impl Modify for Webhooks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let webhooks: Paths = PathsBuilder::new()
            .path_from::<__path_webhook_delivery>()
            .build();
        openapi.webhooks = Some(webhooks);
    }
}

/// An event delivered to a webhook connection
///
/// Each delivery to a `webhook` connection is a POST following the Standard
/// Webhooks specification (https://www.standardwebhooks.com), here for an
/// `alert.triggered` event; every event type has the same shape with its own
/// `type`. Custom headers of the connection are added. Redirects are not
/// followed.
#[utoipa::path(
    post,
    path = "alert.triggered",
    operation_id = "webhookDelivery",
    tag = "webhooks",
    params(
        ("webhook-id" = crate::model::DeliveryId, Header, description = "The delivery id: the same on every attempt, so receivers can deduplicate."),
        ("webhook-timestamp" = String, Header, pattern = "^[0-9]+$", description = "Unix seconds of this attempt."),
        ("webhook-signature" = String, Header, pattern = "^v1,[A-Za-z0-9+/=]+( v1,[A-Za-z0-9+/=]+)*$", description = "`v1,<base64 HMAC-SHA256 of \"{webhook-id}.{webhook-timestamp}.{body}\">`, keyed with the base64-decoded part of the `whsec_…` signing secret; during a rotation two signatures separated by a space."),
    ),
    request_body = crate::destinations::webhook::WebhookPayload<'static>,
    responses(
        (status = "2XX", description = "Delivered."),
        (status = 410, description = "The delivery is dead and the connection is disabled."),
        (status = 429, description = "Retried after `Retry-After` (capped at one hour; the whole connection waits).", headers(("Retry-After" = String))),
        (status = 503, description = "Retried after `Retry-After` (capped at one hour; the whole connection waits).", headers(("Retry-After" = String))),
        (status = "default", description = "Any other answer or a network error is retried on `delivery.retry_schedule`, then the delivery is dead."),
    ),
)]
#[allow(dead_code)] // documents what we send; never routed
fn webhook_delivery() {}

/// An error answer: `{"error":{"code","message"}}` with this description.
fn error_answer(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(utoipa::openapi::Ref::from_schema_name(
                ErrorBody::name(),
            )))
            .build(),
    )
}

/// A header holding whole seconds, at least 1.
fn seconds_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1)),
        ))
        .description(Some(description))
        .build()
}

/// Declares the shared error answers, each a `components/responses` entry.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => $build:expr;)*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                let build: fn() -> ResponseBuilder = $build;
                (stringify!($name), build().build().into())
            }
        }
    )*};
}

error_responses! {
    /// 400.
    BadRequest => || error_answer("Malformed JSON (`malformed_json`).");
    /// 401, with `WWW-Authenticate: Bearer`.
    Unauthorized => || {
        error_answer("Missing or unknown key, or an expired embed session (`unauthorized`).").header(
            "WWW-Authenticate",
            HeaderBuilder::new()
                .schema(Some(String::schema()))
                .description(Some("`Bearer`."))
                .build(),
        )
    };
    /// 403.
    Forbidden => || error_answer("A key of the wrong kind (`forbidden`).");
    /// 404.
    NotFound => || error_answer("Unknown, or another workspace's (`not_found`).");
    /// 409.
    Conflict => || error_answer("Conflict (`conflict`, `connection_in_use`, `backup_running`).");
    /// 413.
    PayloadTooLarge => || error_answer("Body over `limits.max_body_bytes`, default 262144 (`payload_too_large`).");
    /// 422.
    Unprocessable => || error_answer("A missing or invalid field; the message names it (`invalid_request` and the specific codes listed on the operation).");
    /// 429, with `Retry-After`.
    RateLimited => || {
        error_answer("Over the workspace's ingest limit (`limits.events_per_second`; `rate_limited`). Retry after the `Retry-After` seconds; nothing was stored.")
            .header("Retry-After", seconds_header("Whole seconds (at least 1) after which the same request fits the limit."))
    };
    /// 502.
    BadGateway => || error_answer("Slack could not be reached or refused (`slack_error`).");
    /// 503, with `Retry-After` when storage is failing.
    Unavailable => || {
        error_answer("Shutting down (`unavailable`), or storage failing, e.g. a full disk (`storage_unavailable`, with `Retry-After`; nothing of the request was stored, and a request with the same `Idempotency-Key` may be sent again); retry later.")
            .header("Retry-After", seconds_header("Seconds to wait before retrying; sent with `storage_unavailable`."))
    };
}

/// Declares a documentation-only string schema: the API carries these as
/// plain strings, checked by the handlers.
macro_rules! string_schemas {
    ($($(#[$doc:meta])* $name:ident { $($method:ident($value:expr)),* $(,)? })*) => {$(
        $(#[$doc])*
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    $(.$method($value))*
                    .into()
            }
        }

        impl ToSchema for $name {}
    )*};
}

string_schemas! {
    /// RFC 3339 in UTC with milliseconds, as `model::format_timestamp_ms` writes.
    Timestamp {
        format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::DateTime))),
        description(Some("RFC 3339 UTC timestamp with millisecond precision.")),
        examples(["2026-04-17T16:02:00.123Z"]),
    }
    /// `model::EventName`.
    EventName {
        min_length(Some(1)),
        max_length(Some(128)),
        pattern(Some("^[A-Za-z0-9_.:-]{1,128}$")),
        description(Some("An event type.")),
        examples(["alert.triggered"]),
    }
    /// `rules::EventPattern`.
    EventPattern {
        min_length(Some(1)),
        max_length(Some(128)),
        pattern(Some(r"^(\*|[A-Za-z0-9_.:-]+(\.\*)?)$")),
        description(Some("An exact event name (`alert.triggered`), a prefix wildcard (`alert.*`, which matches `alert.x` but not `alert`) or `*` for every event.")),
        examples(["alert.*"]),
    }
    /// `rules::Severity`.
    Severity {
        enum_values(Some(["info", "low", "medium", "high", "critical"])),
        description(Some("Severity scale, low to high. Compared with the payload's top-level `severity` string, case-insensitively; input is accepted in any case and stored lowercase.")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_for_this_version() {
        let document: serde_json::Value = serde_json::from_str(&super::DOCUMENT).unwrap();
        assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
