//! `/v1/deliveries`: the delivery log with every attempt, and manual retry.

use super::{ApiError, ApiQuery, AppState, JsonBody, SecretKey};
use crate::model::{
    Attempt, ConnectionId, Delivery, DeliveryId, DeliveryStatus, EventId, RuleId, alert_label,
    format_timestamp_ms, now_ms,
};
use crate::store::{DeliveryQuery, Requeue};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/deliveries", get(list))
        .route("/v1/deliveries/retry", post(retry_many))
        .route("/v1/deliveries/{id}", get(get_one))
        .route("/v1/deliveries/{id}/retry", post(retry_one))
}

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;
/// Most deliveries one bulk retry queues; call again for more.
pub const MAX_BULK_RETRY: usize = 10_000;

#[derive(Serialize)]
pub struct DeliveryView {
    id: DeliveryId,
    event_id: EventId,
    rule_id: RuleId,
    connection_id: ConnectionId,
    status: DeliveryStatus,
    /// The alert its event belongs to (`resource:resource_id`, else the
    /// payload's `alert_id`), for lifecycle events.
    alert: Option<String>,
    /// Deliveries of its rule suppressed since the previous one went out.
    suppressed_before: u32,
    attempt_count: u32,
    next_attempt_at: Option<String>,
    created_at: String,
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

#[derive(Serialize)]
struct AttemptView {
    at: String,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
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

#[derive(Serialize)]
struct DeliveryWithAttempts {
    #[serde(flatten)]
    delivery: DeliveryView,
    attempts: Vec<AttemptView>,
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    event_id: Option<String>,
    connection_id: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

#[derive(Serialize)]
struct DeliveryList {
    data: Vec<DeliveryView>,
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

/// Queues a dead or succeeded delivery again, with a fresh retry schedule.
async fn retry_one(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Json(json!({"id": id, "queued": newly_queued})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryMany {
    status: String,
    since: Option<String>,
}

async fn retry_many(
    State(app): State<AppState>,
    SecretKey(workspace): SecretKey,
    JsonBody(body): JsonBody<RetryMany>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    Ok((StatusCode::ACCEPTED, Json(json!({"queued": count}))))
}
