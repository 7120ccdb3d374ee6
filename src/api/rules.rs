//! `/v1/rules`: which events go to which connection and target, under
//! which filter. Every change drops the workspace's compiled rules so the
//! next event is matched against the new set.

use super::openapi::{
    BadRequest, EventPattern, Forbidden, NotFound, PayloadTooLarge, Severity, Timestamp,
    Unauthorized, Unavailable, Unprocessable,
};
use super::{ApiError, AppState, JsonBody, RawBody, SecretKey};
use crate::ingest::parse_event_body;
use crate::model::{ConnectionId, Rule, RuleId, WorkspaceId, format_timestamp_ms, now_ms};
use crate::rules::{RuleError, parse_min_severity, validate_conditions, validate_events};
use crate::store::{MAX_DEDUP_SECONDS, PutRule};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

mod schemas;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(test))
        .routes(routes!(get_one, update, remove))
}

const MAX_NAME_CHARS: usize = 128;

/// A rule as sent; on PATCH every field is optional and only the fields
/// sent change; `null` clears `min_severity`, `conditions`, `template`,
/// `dedup_seconds` and `max_per_hour`. The result is validated as a whole.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateRule)]
struct RuleInput {
    #[schema(min_length = 1, max_length = 128)]
    name: Option<String>,
    #[schema(value_type = Option<Vec<EventPattern>>, min_items = 1, max_items = 50)]
    events: Option<Value>,
    #[schema(value_type = Option<ConnectionId>)]
    connection_id: Option<String>,
    #[schema(value_type = Option<schemas::RuleTarget>)]
    target: Option<Value>,
    /// Events without a recognised `severity` do not match a rule that
    /// sets it.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Severity>)]
    min_severity: Option<Option<Value>>,
    /// Absent leaves them as they are (none on create); null clears them.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<Vec<schemas::Condition>>, max_items = 32)]
    conditions: Option<Option<Value>>,
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<schemas::Template>)]
    template: Option<Option<Value>>,
    /// Default true.
    enabled: Option<bool>,
    /// Noise control: an `alert.triggered` for an alert (same `resource` +
    /// `resource_id`, else `payload.alert_id`) that this rule sent less
    /// than this many seconds ago is recorded as a `suppressed` delivery
    /// instead of being sent. `alert.resolved` ends the window. Null turns
    /// it off.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 86400)]
    dedup_seconds: Option<Option<Value>>,
    /// Noise control: at most this many deliveries per hour window (a fixed
    /// window opened by the first delivery after the previous one ended);
    /// the rest are `suppressed`, and the next delivery that goes out
    /// carries how many (`suppressed_before`). `alert.acknowledged` and
    /// `alert.resolved` are never suppressed. Null turns it off.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 100000)]
    max_per_hour: Option<Option<Value>>,
}

/// The largest `max_per_hour` a rule may set.
const MAX_PER_HOUR_LIMIT: u32 = 100_000;

/// Tells an absent field (keep) from an explicit null (clear).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<serde_json::Value>>, D::Error> {
        Option::<serde_json::Value>::deserialize(deserializer).map(Some)
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Rule)]
struct RuleView {
    id: RuleId,
    name: String,
    #[schema(value_type = Vec<EventPattern>)]
    events: Vec<String>,
    connection_id: ConnectionId,
    #[schema(value_type = Object)]
    target: Value,
    #[schema(value_type = Option<Severity>, required = true)]
    min_severity: Option<String>,
    #[schema(value_type = Vec<schemas::Condition>)]
    conditions: Value,
    #[schema(value_type = Option<schemas::Template>, required = true)]
    template: Option<Value>,
    enabled: bool,
    #[schema(required = true)]
    dedup_seconds: Option<u32>,
    #[schema(required = true)]
    max_per_hour: Option<u32>,
    #[schema(value_type = Timestamp)]
    created_at: String,
    #[schema(value_type = Timestamp)]
    updated_at: String,
}

impl From<Rule> for RuleView {
    fn from(rule: Rule) -> Self {
        Self {
            id: rule.id,
            name: rule.name,
            events: rule.events,
            connection_id: rule.connection_id,
            target: rule.target,
            min_severity: rule.min_severity,
            conditions: rule.conditions,
            template: rule.template,
            enabled: rule.enabled,
            dedup_seconds: rule.dedup_seconds,
            max_per_hour: rule.max_per_hour,
            created_at: format_timestamp_ms(rule.created_at_ms),
            updated_at: format_timestamp_ms(rule.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
struct RuleList {
    data: Vec<RuleView>,
}

impl From<RuleError> for ApiError {
    fn from(error: RuleError) -> Self {
        ApiError::invalid(&error.field, &error.message)
    }
}

/// Applies `input` over `rule` (a blank rule on create) and validates the
/// result as a whole.
async fn apply(
    app: &AppState,
    rule: &mut Rule,
    input: RuleInput,
    creating: bool,
) -> Result<(), ApiError> {
    let required = |field: &str| ApiError::invalid(field, "is required");
    match input.name {
        Some(name) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
                return Err(ApiError::invalid("name", "must be 1 to 128 characters"));
            }
            rule.name = name.to_string();
        }
        None if creating => return Err(required("name")),
        None => {}
    }
    match input.events {
        Some(events) => {
            rule.events = validate_events(&events)?
                .iter()
                .map(|pattern| pattern.as_str().to_string())
                .collect();
        }
        None if creating => return Err(required("events")),
        None => {}
    }
    match input.connection_id {
        Some(id) => {
            rule.connection_id = id
                .parse()
                .map_err(|_| ApiError::invalid("connection_id", "no such connection"))?;
        }
        None if creating => return Err(required("connection_id")),
        None => {}
    }
    if let Some(min_severity) = input.min_severity {
        rule.min_severity = parse_min_severity(&min_severity.unwrap_or(Value::Null))?
            .map(|severity| severity.as_str().to_string());
    }
    if let Some(conditions) = input.conditions {
        // `null` clears the conditions.
        let conditions = conditions.unwrap_or_else(|| json!([]));
        validate_conditions(&conditions)?;
        rule.conditions = conditions;
    }
    if let Some(template) = input.template {
        if let Some(template) = &template {
            validate_template(template)?;
        }
        rule.template = template;
    }
    if let Some(enabled) = input.enabled {
        rule.enabled = enabled;
    }
    // `null` turns a noise control off.
    if let Some(dedup_seconds) = input.dedup_seconds {
        rule.dedup_seconds = dedup_seconds
            .map(|value| whole_number("dedup_seconds", &value, MAX_DEDUP_SECONDS))
            .transpose()?;
    }
    if let Some(max_per_hour) = input.max_per_hour {
        rule.max_per_hour = max_per_hour
            .map(|value| whole_number("max_per_hour", &value, MAX_PER_HOUR_LIMIT))
            .transpose()?;
    }
    let connection = app
        .store()
        .connection(rule.workspace_id, rule.connection_id)
        .await?
        .ok_or_else(|| ApiError::invalid("connection_id", "no such connection"))?;
    if let Some(target) = input.target {
        rule.target = target;
    }
    // The connection's kind decides what a target is.
    rule.target =
        super::connections::destination(app, connection.kind)?.validate_target(&rule.target)?;
    Ok(())
}

/// A noise-control setting: a whole number from 1 to `max`, or null.
fn whole_number(field: &str, value: &Value, max: u32) -> Result<u32, ApiError> {
    value
        .as_u64()
        .filter(|number| (1..=u64::from(max)).contains(number))
        .and_then(|number| u32::try_from(number).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("must be a whole number from 1 to {max}, or null"),
            )
        })
}

/// A template is `{"text"?, "subject"?, "html"?, "resend_template"?}`;
/// each string must compile, so a typo fails here and not at delivery.
fn validate_template(template: &Value) -> Result<(), ApiError> {
    let map = template
        .as_object()
        .ok_or_else(|| ApiError::invalid("template", "must be an object or null"))?;
    for (key, value) in map {
        match key.as_str() {
            "text" | "subject" | "html" => {
                let source = value
                    .as_str()
                    .filter(|source| source.len() <= 16 * 1024)
                    .ok_or_else(|| {
                        ApiError::invalid(
                            &format!("template.{key}"),
                            "must be a string of at most 16 KiB",
                        )
                    })?;
                crate::destinations::message::check(source)
                    .map_err(|error| ApiError::invalid(&format!("template.{key}"), error))?;
            }
            "resend_template" => {
                if !value.get("id").is_some_and(Value::is_string) {
                    return Err(ApiError::invalid(
                        "template.resend_template.id",
                        "is required",
                    ));
                }
            }
            other => {
                return Err(ApiError::invalid(
                    &format!("template.{other}"),
                    "unknown key; use text, subject, html or resend_template",
                ));
            }
        }
    }
    Ok(())
}

fn parse_id(id: &str) -> Result<RuleId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("rule"))
}

async fn find(app: &AppState, workspace: WorkspaceId, id: &str) -> Result<Rule, ApiError> {
    app.store()
        .rule(workspace, parse_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("rule"))
}

async fn store_rule(app: &AppState, rule: Rule, update: bool) -> Result<Rule, ApiError> {
    let put = app.store().put_rule(rule.clone(), update);
    match app.change_routing(rule.workspace_id, put).await? {
        PutRule::Stored => Ok(rule),
        PutRule::UnknownConnection => Err(ApiError::invalid("connection_id", "no such connection")),
        PutRule::NotFound => Err(ApiError::not_found("rule")),
    }
}

/// Create a rule
#[utoipa::path(
    post,
    path = "/v1/rules",
    operation_id = "createRule",
    tag = "rules",
    security(("secretKey" = []), ("embedSession" = [])),
    request_body = schemas::CreateRule,
    responses(
        (status = 201, description = "Created.", body = RuleView),
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
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<(StatusCode, Json<RuleView>), ApiError> {
    let now = now_ms();
    let mut rule = Rule {
        id: RuleId::new(),
        workspace_id: workspace,
        name: String::new(),
        events: Vec::new(),
        connection_id: ConnectionId(0),
        target: Value::Null,
        min_severity: None,
        conditions: json!([]),
        template: None,
        enabled: true,
        created_at_ms: now,
        updated_at_ms: now,
        dedup_seconds: None,
        max_per_hour: None,
    };
    apply(&app, &mut rule, input, true).await?;
    let rule = store_rule(&app, rule, false).await?;
    Ok((StatusCode::CREATED, Json(rule.into())))
}

/// List rules
#[utoipa::path(
    get,
    path = "/v1/rules",
    operation_id = "listRules",
    tag = "rules",
    security(("secretKey" = []), ("embedSession" = [])),
    responses(
        (status = 200, description = "Every rule of the workspace.", body = RuleList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
) -> Result<Json<RuleList>, ApiError> {
    let data = app
        .store()
        .rules(workspace)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(RuleList { data }))
}

/// Get a rule
#[utoipa::path(
    get,
    path = "/v1/rules/{id}",
    operation_id = "getRule",
    tag = "rules",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = RuleId, Path, description = "The rule.")),
    responses(
        (status = 200, description = "The rule.", body = RuleView),
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
) -> Result<Json<RuleView>, ApiError> {
    Ok(Json(find(&app, workspace, &id).await?.into()))
}

/// Update a rule
#[utoipa::path(
    patch,
    path = "/v1/rules/{id}",
    operation_id = "updateRule",
    tag = "rules",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = RuleId, Path, description = "The rule.")),
    request_body = RuleInput,
    responses(
        (status = 200, description = "The updated rule.", body = RuleView),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn update(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<RuleInput>,
) -> Result<Json<RuleView>, ApiError> {
    let mut rule = find(&app, workspace, &id).await?;
    apply(&app, &mut rule, input, false).await?;
    rule.updated_at_ms = now_ms();
    Ok(Json(store_rule(&app, rule, true).await?.into()))
}

/// Delete a rule
#[utoipa::path(
    delete,
    path = "/v1/rules/{id}",
    operation_id = "deleteRule",
    tag = "rules",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = RuleId, Path, description = "The rule.")),
    responses(
        (status = 204, description = "Deleted."),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 503, response = Unavailable),
    ),
)]
async fn remove(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let delete = app.store().delete_rule(workspace, parse_id(&id)?);
    if !app.change_routing(workspace, delete).await? {
        return Err(ApiError::not_found("rule"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
struct Match {
    rule_id: RuleId,
    connection_id: ConnectionId,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RuleMatches)]
struct TestAnswer {
    matches: Vec<Match>,
}

/// Which rules an event would fire
///
/// Nothing is stored or sent.
#[utoipa::path(
    post,
    path = "/v1/rules/test",
    operation_id = "testRules",
    tag = "rules",
    security(("secretKey" = []), ("embedSession" = [])),
    request_body = crate::ingest::EventInput,
    responses(
        (status = 200, description = "The matching rules; nothing is stored or sent.", body = TestAnswer),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn test(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    RawBody(body): RawBody,
) -> Result<Json<TestAnswer>, ApiError> {
    let event = parse_event_body(&body, workspace)?;
    let rules = app.rule_index().workspace(app.store(), workspace).await?;
    let matches = rules
        .routes(&event)
        .into_iter()
        .map(|route| Match {
            rule_id: route.rule_id,
            connection_id: route.connection_id,
        })
        .collect();
    Ok(Json(TestAnswer { matches }))
}
