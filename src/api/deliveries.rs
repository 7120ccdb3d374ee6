//! `/v1/deliveries`: the delivery log with every attempt, and manual retry.

use super::openapi::{
    BadRequest, Forbidden, NotFound, PayloadTooLarge, Timestamp, Unauthorized, Unavailable,
    Unprocessable,
};
use super::{ApiError, ApiQuery, AppState, JsonBody, SecretKey};
use crate::model::{
    Attempt, ConnectionId, Delivery, DeliveryId, DeliveryStatus, EventId, RuleId, alert_label,
    format_timestamp_ms, now_ms,
};
use crate::store::{DeliveryQuery, Requeue};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry_many))
        .routes(routes!(get_one))
        .routes(routes!(retry_one))
}

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
/// Most deliveries one bulk retry queues; call again for more.
pub const MAX_BULK_RETRY: usize = 10_000;

/// One event going to one connection through one rule. Its id is the
/// webhook's `webhook-id` and Resend's `Idempotency-Key`.
#[derive(Serialize, ToSchema)]
#[schema(as = Delivery)]
pub struct DeliveryView {
    id: DeliveryId,
    event_id: EventId,
    rule_id: RuleId,
    connection_id: ConnectionId,
    status: DeliveryStatus,
    /// The alert its event belongs to (`resource:resource_id`, else the
    /// payload's `alert_id`), for lifecycle events.
    #[schema(required = true)]
    alert: Option<String>,
    /// Deliveries of its rule suppressed since the previous one went out.
    suppressed_before: u32,
    attempt_count: u32,
    /// When it is due next; null when not queued.
    #[schema(value_type = Option<Timestamp>, required = true)]
    next_attempt_at: Option<String>,
    #[schema(value_type = Timestamp)]
    created_at: String,
    #[schema(value_type = Timestamp)]
    updated_at: String,
}

impl From<&Delivery> for DeliveryView {
    fn from(delivery: &Delivery) -> Self {
        Self {
            id: delivery.id,
            event_id: delivery.event_id,
            rule_id: delivery.rule_id,
            connection_id: delivery.connection_id,
            status: delivery.status,
            alert: delivery
                .alert
                .as_deref()
                .map(alert_label)
                .map(str::to_string),
            suppressed_before: delivery.suppressed_before,
            attempt_count: delivery.attempt_count,
            next_attempt_at: delivery.next_attempt_at_ms.map(format_timestamp_ms),
            created_at: format_timestamp_ms(delivery.created_at_ms),
            updated_at: format_timestamp_ms(delivery.updated_at_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = Attempt)]
struct AttemptView {
    #[schema(value_type = Timestamp)]
    at: String,
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

impl From<Attempt> for AttemptView {
    fn from(attempt: Attempt) -> Self {
        Self {
            at: format_timestamp_ms(attempt.at_ms),
            duration_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            error: attempt.error,
            response: attempt.response,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct DeliveryWithAttempts {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// Oldest first.
    attempts: Vec<AttemptView>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[param(value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    #[param(value_type = Option<EventId>)]
    event_id: Option<String>,
    #[param(value_type = Option<ConnectionId>)]
    connection_id: Option<String>,
    /// The `next` cursor of the previous page.
    #[param(value_type = Option<DeliveryId>)]
    after: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 500, default = 50)]
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryPage)]
struct DeliveryList {
    /// Newest first.
    data: Vec<DeliveryView>,
    /// Cursor for the next page (pass it as `after`); `null` only at the
    /// end. A filtered page examines at most 10,000 rows, so it can hold
    /// fewer than `limit` items and still have a `next`.
    #[schema(required = true)]
    next: Option<DeliveryId>,
}

fn parse_status(text: &str, field: &str) -> Result<DeliveryStatus, ApiError> {
    DeliveryStatus::parse(text).ok_or_else(|| {
        ApiError::invalid(
            field,
            "must be pending, succeeded, retrying, dead or suppressed",
        )
    })
}

/// List deliveries
#[utoipa::path(
    get,
    path = "/v1/deliveries",
    operation_id = "listDeliveries",
    tag = "deliveries",
    security(("secretKey" = []), ("embedSession" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of deliveries, newest first.", body = DeliveryList),
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
) -> Result<Json<DeliveryList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    let non_empty = |value: Option<String>| value.filter(|text| !text.is_empty());
    let query = DeliveryQuery {
        status: non_empty(query.status)
            .map(|text| parse_status(&text, "status"))
            .transpose()?,
        event_id: non_empty(query.event_id)
            .map(|text| {
                text.parse()
                    .map_err(|_| ApiError::invalid("event_id", "not an event id"))
            })
            .transpose()?,
        connection_id: non_empty(query.connection_id)
            .map(|text| {
                text.parse()
                    .map_err(|_| ApiError::invalid("connection_id", "not a connection id"))
            })
            .transpose()?,
        before: non_empty(query.after)
            .map(|text| {
                text.parse()
                    .map_err(|_| ApiError::invalid("after", "not a delivery cursor"))
            })
            .transpose()?,
        limit,
    };
    let page = app.store().deliveries(workspace, query).await?;
    Ok(Json(DeliveryList {
        data: page.deliveries.iter().map(Into::into).collect(),
        next: page.next,
    }))
}

fn parse_id(id: &str) -> Result<DeliveryId, ApiError> {
    id.parse().map_err(|_| ApiError::not_found("delivery"))
}

/// Get a delivery with its attempts
#[utoipa::path(
    get,
    path = "/v1/deliveries/{id}",
    operation_id = "getDelivery",
    tag = "deliveries",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = DeliveryId, Path, description = "The delivery.")),
    responses(
        (status = 200, description = "The delivery and every attempt.", body = DeliveryWithAttempts),
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
) -> Result<Json<DeliveryWithAttempts>, ApiError> {
    let (delivery, attempts) = app
        .store()
        .delivery(workspace, parse_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    Ok(Json(DeliveryWithAttempts {
        delivery: (&delivery).into(),
        attempts: attempts.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Serialize, ToSchema)]
#[schema(as = RetryDeliveryAnswer)]
struct RetriedOne {
    id: DeliveryId,
    /// true when a dead or succeeded delivery was queued again; false when
    /// it was still queued (left as is).
    queued: bool,
}

/// Queue a delivery again
///
/// Queues a dead or succeeded delivery again, with a fresh retry schedule.
#[utoipa::path(
    post,
    path = "/v1/deliveries/{id}/retry",
    operation_id = "retryDelivery",
    tag = "deliveries",
    security(("secretKey" = []), ("embedSession" = [])),
    params(("id" = DeliveryId, Path, description = "The delivery.")),
    responses(
        (status = 202, description = "A dead or succeeded delivery is queued again with a fresh schedule; one still queued is left as is.", body = RetriedOne),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, description = "A `suppressed` delivery is never sent: emit the event again instead (code `suppressed`).", body = super::error::ErrorBody),
        (status = 503, response = Unavailable),
    ),
)]
async fn retry_one(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<RetriedOne>), ApiError> {
    let id = parse_id(&id)?;
    let Some((delivery, _)) = app.store().delivery(workspace, id).await? else {
        return Err(ApiError::not_found("delivery"));
    };
    // Held back by its rule's noise control on purpose: sending it now
    // would be the noise the rule asked to stop.
    if delivery.status == DeliveryStatus::Suppressed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "suppressed",
            "a suppressed delivery is never sent; emit the event again to send it",
        ));
    }
    let write = app.store().requeue(workspace, Requeue::One(id), now_ms());
    let queued = app
        .engine()
        .write_then_schedule(write, |queued| queued.clone())
        .await?;
    // A pending or retrying delivery is already queued: nothing to do.
    let newly_queued = !queued.is_empty();
    Ok((
        StatusCode::ACCEPTED,
        Json(RetriedOne {
            id,
            queued: newly_queued,
        }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RetryDeliveries)]
struct RetryMany {
    /// Which deliveries to queue again: `dead` or `succeeded`.
    #[schema(pattern = "^(dead|succeeded)$")]
    status: String,
    /// Only deliveries updated at or after this time.
    #[schema(value_type = Option<Timestamp>)]
    since: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = RetryDeliveriesAnswer)]
struct RetriedMany {
    /// How many were queued (at most 10,000 per call; call again for more).
    #[schema(maximum = 10000)]
    queued: usize,
}

/// Queue deliveries again in bulk
#[utoipa::path(
    post,
    path = "/v1/deliveries/retry",
    operation_id = "retryDeliveries",
    tag = "deliveries",
    security(("secretKey" = []), ("embedSession" = [])),
    request_body(content = RetryMany, example = json!({"status": "dead", "since": "2026-04-17T00:00:00Z"})),
    responses(
        (status = 202, description = "Queued.", body = RetriedMany),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 503, response = Unavailable),
    ),
)]
async fn retry_many(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    JsonBody(body): JsonBody<RetryMany>,
) -> Result<(StatusCode, Json<RetriedMany>), ApiError> {
    let status = parse_status(&body.status, "status")?;
    if !matches!(status, DeliveryStatus::Dead | DeliveryStatus::Succeeded) {
        return Err(ApiError::invalid("status", "must be dead or succeeded"));
    }
    let since_ms = match body.since.as_deref() {
        None => 0,
        Some(text) => humantime::parse_rfc3339_weak(text)
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|elapsed| elapsed.as_millis() as u64)
            .ok_or_else(|| ApiError::invalid("since", "must be an RFC 3339 timestamp"))?,
    };
    let which = Requeue::Matching {
        status,
        since_ms,
        limit: MAX_BULK_RETRY,
    };
    let write = app.store().requeue(workspace, which, now_ms());
    let queued = app
        .engine()
        .write_then_schedule(write, |queued| queued.clone())
        .await?;
    let count = queued.len();
    Ok((StatusCode::ACCEPTED, Json(RetriedMany { queued: count })))
}
