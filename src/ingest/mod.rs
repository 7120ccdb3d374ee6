//! `/v1/events`: validated, durable ingest (single and batch, with
//! `Idempotency-Key`) and the event log (list and get).
//!
//! An event is answered 202 only after the group commit holding it is
//! durable. Every check happens before the write, so a rejected request
//! stores nothing.

mod limit;
mod meshes;
mod validate;

use crate::api::openapi_responses::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, RateLimited, Unauthorized, Unavailable,
    Unprocessable,
};
use crate::api::{
    ApiError, ApiQuery, AppState, EmitKey, IdempotencyHeader, JsonBody, RawBody, SecretKey,
};
use crate::delivery::{WarmContext, warm};
use crate::model::{
    AlertState, Delivery, DeliveryId, DeliveryStatus, Event, EventId, WorkspaceId,
    format_timestamp_ms,
};
use crate::store::{
    DeliveryQuery, EventNameFilter, EventQuery, IdempotentAnswer, IngestBatch, IngestOutcome,
    NoiseCheck, QueueEntry,
};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validate::{EventBody, idempotency_key, validate_event};

pub use limit::{IngestLimiter, Refusal};
pub use validate::{EventBody as EventInput, MAX_IDEMPOTENCY_KEY_LEN};

/// Parses and validates one event body as `POST /v1/events` would, without
/// storing it (`POST /v1/rules/test` uses it).
pub fn parse_event_body(bytes: &[u8], workspace: WorkspaceId) -> Result<Event, ApiError> {
    let body: EventBody = crate::api::parse_json(bytes)?;
    validate_event(body, workspace, "")
}

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(emit_one, list))
        .routes(routes!(emit_batch))
        .routes(routes!(get_one))
        .routes(routes!(meshes::emit))
        .routes(routes!(meshes::emit_bulk))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EventBatchInput)]
struct BatchBody {
    /// 1 to `limits.max_batch_events` (default 500) events; all are stored
    /// or none.
    #[schema(value_type = Vec<EventBody>, min_items = 1, max_items = 500)]
    events: Vec<Box<RawValue>>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = EventAccepted)]
struct Accepted {
    id: EventId,
    /// How many deliveries the event fanned out to.
    deliveries: usize,
}

#[derive(Serialize, ToSchema)]
#[schema(as = EventBatchAccepted)]
struct BatchAccepted {
    /// In the order sent.
    data: Vec<Accepted>,
}

/// Takes `events` from the workspace's ingest allowance, or answers 429
/// (422 for a batch larger than the whole burst). Called before the events
/// are parsed, so a flood costs little, and before the write, so a refused
/// request stores nothing.
pub fn admit(app: &AppState, workspace: WorkspaceId, events: usize) -> Result<(), ApiError> {
    let refusal = match app.ingest_limiter().check(workspace, events) {
        Ok(()) => return Ok(()),
        Err(refusal) => refusal,
    };
    metrics::counter!("switchyard_events_rate_limited_total").increment(events as u64);
    tracing::debug!(%workspace, events, %refusal, "ingest refused by the rate limit");
    Err(match refusal {
        Refusal::RateLimited {
            retry_after_secs, ..
        } => ApiError::rate_limited(refusal.to_string(), retry_after_secs),
        Refusal::OverBurst { .. } => ApiError::invalid("events", refusal),
    })
}

/// Emit an event
///
/// Validates and stores one event, then fans it out to every matching
/// rule. A rejected request stores nothing. Any workspace key or embed
/// session may emit; the admin token gets 403.
#[utoipa::path(
    post,
    path = "/v1/events",
    operation_id = "emitEvent",
    tag = "events",
    security(("publishableKey" = []), ("secretKey" = []), ("embedSession" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters. Within 24 hours the same key in the same workspace returns the first answer (with `Idempotent-Replayed: true`) and stores nothing new, even when the body differs.")),
    request_body = EventBody,
    responses(
        (status = 202, description = "Stored durably (fsync'd) with its deliveries.", body = Accepted, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    ),
)]
async fn emit_one(
    State(app): State<AppState>,
    EmitKey(workspace): EmitKey,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    admit(&app, workspace, 1)?;
    let idempotency = idempotency_key(idempotency.as_ref())?;
    let body: EventBody = crate::api::parse_json(&bytes)?;
    let event = validate_event(body, workspace, "")?;
    let (deliveries, counts) = fan_out(&app, workspace, std::slice::from_ref(&event)).await?;
    let answer = Accepted {
        id: event.id,
        deliveries: counts[0],
    };
    let answer = serde_json::to_vec(&answer).map_err(|error| ApiError::internal(&error))?;
    store_events(
        &app,
        vec![event],
        deliveries,
        idempotency,
        StatusCode::ACCEPTED,
        answer,
    )
    .await
}

/// Emit events in a batch
///
/// All or nothing: one invalid event (422 naming `events[i].field`)
/// rejects the batch. Under `limits.events_per_second` each event counts
/// one; a batch larger than the whole burst (`events_per_second` ×
/// `burst_seconds`) is 422 naming `events`, since waiting cannot help.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    operation_id = "emitEventBatch",
    tag = "events",
    security(("publishableKey" = []), ("secretKey" = []), ("embedSession" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters. Within 24 hours the same key in the same workspace returns the first answer (with `Idempotent-Replayed: true`) and stores nothing new, even when the body differs.")),
    request_body = BatchBody,
    responses(
        (status = 202, description = "All stored durably, in one transaction.", body = BatchAccepted, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    ),
)]
async fn emit_batch(
    State(app): State<AppState>,
    EmitKey(workspace): EmitKey,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Response, ApiError> {
    let idempotency = idempotency_key(idempotency.as_ref())?;
    let max = app.config().limits.max_batch_events;
    if body.events.is_empty() || body.events.len() > max {
        return Err(ApiError::invalid(
            "events",
            format!("must hold 1 to {max} events"),
        ));
    }
    // Only the array was parsed so far; each event is parsed and
    // validated after the limit let the batch in.
    admit(&app, workspace, body.events.len())?;
    let mut events = Vec::with_capacity(body.events.len());
    for (index, raw) in body.events.iter().enumerate() {
        let field = format!("events[{index}]");
        let parsed: EventBody =
            serde_json::from_str(raw.get()).map_err(|error| ApiError::invalid(&field, error))?;
        events.push(validate_event(parsed, workspace, &format!("{field}."))?);
    }
    let (deliveries, counts) = fan_out(&app, workspace, &events).await?;
    let answer = BatchAccepted {
        data: events
            .iter()
            .zip(counts)
            .map(|(event, deliveries)| Accepted {
                id: event.id,
                deliveries,
            })
            .collect(),
    };
    let answer = serde_json::to_vec(&answer).map_err(|error| ApiError::internal(&error))?;
    store_events(
        &app,
        events,
        deliveries,
        idempotency,
        StatusCode::ACCEPTED,
        answer,
    )
    .await
}

/// Deliveries of a batch, the noise controls the writer decides for those
/// whose rule has any, and the contexts of the others for their first
/// attempt (`delivery/warm.rs`).
#[derive(Default)]
struct FannedOut {
    deliveries: Vec<Delivery>,
    noise: HashMap<DeliveryId, NoiseCheck>,
    warm: Vec<WarmContext>,
}

/// One pending delivery, due now, per (event, matching rule); and how many
/// each event got. Whether a rule's noise control suppresses one is decided
/// in the write, where concurrent ingests are applied one after another.
async fn fan_out(
    app: &AppState,
    workspace: WorkspaceId,
    events: &[Event],
) -> Result<(FannedOut, Vec<usize>), ApiError> {
    let rules = app.rule_index().workspace(app.store(), workspace).await?;
    let keep_warm = app.engine().warm_contexts().enabled();
    let mut out = FannedOut::default();
    let mut counts = Vec::with_capacity(events.len());
    for event in events {
        let routes = rules.routes(event);
        counts.push(routes.len());
        if routes.is_empty() {
            continue;
        }
        let alert = event.alert_key();
        let state = AlertState::of(&event.name);
        let mut shared_event: Option<Arc<Event>> = None;
        for route in routes {
            let delivery = Delivery {
                id: DeliveryId::new(),
                workspace_id: workspace,
                event_id: event.id,
                rule_id: route.rule_id,
                connection_id: route.connection_id,
                status: DeliveryStatus::Pending,
                attempt_count: 0,
                next_attempt_at_ms: Some(event.received_at_ms),
                created_at_ms: event.received_at_ms,
                updated_at_ms: event.received_at_ms,
                alert: alert.clone(),
                suppressed_before: 0,
            };
            if let Some(noise) = route.noise {
                let check = NoiseCheck {
                    dedup_seconds: noise.dedup_seconds,
                    max_per_hour: noise.max_per_hour,
                    state,
                };
                out.noise.insert(delivery.id, check);
            } else if keep_warm
                && out.warm.len() < warm::MAX_PER_REQUEST
                && let Some((rule, connection)) = rules.stored(&route)
            {
                // Noise control may change the stored delivery in the
                // write (`suppressed_before`): only the others are kept.
                let event = shared_event
                    .get_or_insert_with(|| Arc::new(event.clone()))
                    .clone();
                out.warm.push(WarmContext::new(
                    rules.clone(),
                    delivery.clone(),
                    event,
                    rule,
                    connection,
                ));
            }
            out.deliveries.push(delivery);
        }
    }
    Ok((out, counts))
}

/// Writes the events (and the idempotency key's answer) in one durable
/// transaction, then answers `status` with `body` (JSON); or replays the
/// key's first answer.
async fn store_events(
    app: &AppState,
    events: Vec<Event>,
    fanned_out: FannedOut,
    idempotency_key: Option<String>,
    status: StatusCode,
    body: Vec<u8>,
) -> Result<Response, ApiError> {
    let FannedOut {
        deliveries,
        noise,
        warm,
    } = fanned_out;
    let workspace_id = events
        .first()
        .map(|event| event.workspace_id)
        .ok_or_else(|| ApiError::invalid("events", "must not be empty"))?;
    let count = events.len();
    let queue: Vec<QueueEntry> = deliveries
        .iter()
        .filter_map(|delivery| {
            Some(QueueEntry {
                due_ms: delivery.next_attempt_at_ms?,
                delivery_id: delivery.id,
                workspace_id,
                connection_id: delivery.connection_id,
            })
        })
        .collect();
    // Kept before the write is submitted: once it commits, a refill may
    // start a delivery before this task hands its entry over, and that
    // first start must find its context. (The contexts of a write that
    // fails or replays are dropped below.)
    let kept: Vec<DeliveryId> = warm.iter().map(WarmContext::delivery_id).collect();
    app.engine().warm_contexts().keep(warm);
    let write = app.store().ingest(IngestBatch {
        workspace_id,
        events,
        deliveries,
        noise,
        idempotency: idempotency_key.map(|key| IdempotentAnswer {
            key,
            status: status.as_u16(),
            response: body.clone(),
        }),
    });
    let outcome = app
        .engine()
        .write_then_schedule(write, move |outcome| match outcome {
            IngestOutcome::Stored { suppressed } if suppressed.is_empty() => queue,
            IngestOutcome::Stored { suppressed } => queue
                .into_iter()
                .filter(|entry| !suppressed.contains(&entry.delivery_id))
                .collect(),
            _ => Vec::new(),
        })
        .await;
    if !matches!(outcome, Ok(IngestOutcome::Stored { .. })) {
        app.engine().warm_contexts().forget(&kept);
    }
    match outcome? {
        IngestOutcome::Stored { suppressed } => {
            tracing::debug!(workspace = %workspace_id, count, "events stored");
            crate::telemetry::count(
                "switchyard_deliveries_suppressed_total",
                &[],
                suppressed.len() as u64,
            );
            crate::telemetry::count("switchyard_events_ingested_total", &[], count as u64);
            Ok(json_response(status, body))
        }
        IngestOutcome::Replayed { status, response } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::ACCEPTED);
            let mut reply = json_response(status, response);
            reply
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(reply)
        }
        IngestOutcome::UnknownWorkspace => Err(ApiError::unauthorized(
            "the workspace of this key no longer exists",
        )),
    }
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from(body),
    )
        .into_response()
}

#[derive(Serialize, ToSchema)]
#[schema(as = Event)]
struct EventView<'a> {
    id: EventId,
    #[schema(value_type = crate::api::openapi_schemas::EventName)]
    event: &'a str,
    #[schema(required = true)]
    resource: Option<&'a str>,
    #[schema(required = true)]
    resource_id: Option<&'a str>,
    /// The payload exactly as sent.
    #[schema(value_type = Object)]
    payload: &'a RawValue,
    #[schema(value_type = crate::api::openapi_schemas::Timestamp)]
    received_at: String,
    /// The event's deliveries, oldest first; only in `GET
    /// /v1/events/{id}` (listings leave it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    deliveries: Option<Vec<DeliverySummary>>,
}

#[derive(Serialize, ToSchema)]
struct DeliverySummary {
    id: DeliveryId,
    rule_id: crate::model::RuleId,
    connection_id: crate::model::ConnectionId,
    status: DeliveryStatus,
    /// The alert the event belongs to: `resource:resource_id`, else
    /// `alert_id:<payload.alert_id>`; null for events that name no alert.
    #[schema(required = true)]
    alert: Option<String>,
}

fn view(event: &Event) -> Result<EventView<'_>, ApiError> {
    // The payload was validated as a JSON object at ingest.
    let payload: &RawValue =
        serde_json::from_slice(&event.payload).map_err(|error| ApiError::internal(&error))?;
    Ok(EventView {
        id: event.id,
        event: event.name.as_str(),
        resource: event.resource.as_deref(),
        resource_id: event.resource_id.as_deref(),
        payload,
        received_at: format_timestamp_ms(event.received_at_ms),
        deliveries: None,
    })
}

/// An event's deliveries, oldest first (at most one per rule).
async fn deliveries_of(app: &AppState, event: &Event) -> Result<Vec<DeliverySummary>, ApiError> {
    let query = DeliveryQuery {
        event_id: Some(event.id),
        limit: MAX_PAGE,
        ..DeliveryQuery::default()
    };
    let mut page = app.store().deliveries(event.workspace_id, query).await?;
    page.deliveries.reverse();
    Ok(page
        .deliveries
        .into_iter()
        .map(|delivery| DeliverySummary {
            id: delivery.id,
            rule_id: delivery.rule_id,
            connection_id: delivery.connection_id,
            status: delivery.status,
            alert: delivery
                .alert
                .as_deref()
                .map(|key| crate::model::alert_label(key).to_string()),
        })
        .collect())
}

/// Get an event
#[utoipa::path(
    get,
    path = "/v1/events/{id}",
    operation_id = "getEvent",
    tag = "events",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = EventId, Path, description = "The event.")),
    responses(
        (status = 200, description = "The event with its payload as sent and its deliveries.", body = EventView),
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
) -> Result<Response, ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::not_found("event"))?;
    let event = app
        .store()
        .event(workspace, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let mut view = view(&event)?;
    view.deliveries = Some(deliveries_of(&app, &event).await?);
    Ok(axum::Json(view).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only events of this type: an exact name or a `prefix.*` pattern.
    #[param(value_type = Option<crate::api::openapi_schemas::EventPattern>)]
    event: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<EventId>)]
    after: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = EventPage)]
struct EventList<'a> {
    /// Newest first.
    data: Vec<EventView<'a>>,
    /// Cursor for the next page (pass it as `after`); `null` only at the
    /// end. A filtered page examines at most 10,000 rows, so it can hold
    /// fewer than `limit` items and still have a `next`.
    #[schema(required = true)]
    next: Option<EventId>,
}

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

/// The store's filter for `?event=`: a rule's event pattern (`name`,
/// `prefix.*` or `*`, which keeps everything).
fn name_filter(pattern: &str) -> Result<Option<EventNameFilter>, ApiError> {
    let pattern = crate::rules::EventPattern::parse(pattern)
        .map_err(|problem| ApiError::invalid("event", problem))?;
    Ok(match pattern.as_str().strip_suffix('*') {
        None => Some(EventNameFilter::Exact(pattern.as_str().to_string())),
        Some("") => None,
        Some(prefix) => Some(EventNameFilter::Prefix(prefix.to_string())),
    })
}

/// List events
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "listEvents",
    tag = "events",
    security(("secretKey" = []), ("embedSession" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of events, newest first.", body = EventList),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn list(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    let before = query
        .after
        .map(|cursor| cursor.parse::<EventId>())
        .transpose()
        .map_err(|_| ApiError::invalid("after", "not an event id cursor"))?;
    let name = query
        .event
        .filter(|name| !name.is_empty())
        .map(|pattern| name_filter(&pattern))
        .transpose()?
        .flatten();
    let query = EventQuery {
        name,
        before,
        limit,
    };
    let page = app.store().events(workspace, query).await?;
    let data = page.events.iter().map(view).collect::<Result<_, _>>()?;
    Ok(axum::Json(EventList {
        data,
        next: page.next,
    })
    .into_response())
}
