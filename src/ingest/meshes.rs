//! `/api/v1/events` and `/api/v1/events/bulk`: ingest on the wire format of
//! Meshes' events client (`@mesheshq/events`), so a team moves its emit
//! calls over by changing the client's `apiBaseUrl` to
//! `{public_url}/api/v1` and its key.
//!
//! Authenticated only by a workspace's Meshes publishable key in
//! `X-Meshes-Publishable-Key`; otherwise the same path as `/v1/events`:
//! the rate limit before parsing, validation, fan-out, one durable write,
//! then the answer. `resource` defaults to `"global"`, as in Meshes.
//!
//! Answers: an emit is 201 `{"event":{…}}` (201 rather than `/v1`'s 202
//! because the answer carries the created event, as Meshes' does; the
//! client takes any 2xx). A bulk request stores every valid event: 201 when
//! all were, 207 when some failed validation (each failure
//! `{"message","error"}` in its place among the `records`), 422 when none
//! could be. Errors keep Switchyard's `{"error":{"code","message"}}`.

use super::validate::{EventBody, idempotency_key, validate_event};
use super::{admit, fan_out, store_events};
use crate::api::openapi_responses::{
    BadRequest, Forbidden, PayloadTooLarge, RateLimited, Unauthorized, Unavailable, Unprocessable,
};
use crate::api::{ApiError, AppState, IdempotencyHeader, MeshesKey, RawBody};
use crate::model::{Event, EventId, WorkspaceId, format_timestamp_ms};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

/// Meshes' default resource when an event names none.
pub const DEFAULT_RESOURCE: &str = "global";
/// Events per bulk request, as the Meshes client allows.
pub const MAX_BULK_EVENTS: usize = 100;

/// One event as the Meshes client sends it. Unlike `/v1`, fields it does
/// not know are ignored: the client may grow some.
#[derive(Deserialize, ToSchema)]
#[schema(as = MeshesEventInput)]
struct MeshesEvent {
    #[schema(value_type = crate::api::openapi_schemas::EventName)]
    event: String,
    /// What the event is about; `global` when left out, as in Meshes.
    #[serde(default)]
    #[schema(max_length = 256, default = "global")]
    resource: Option<String>,
    #[serde(default)]
    #[schema(max_length = 256)]
    resource_id: Option<String>,
    /// Any JSON object, stored as sent (no field is required).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    payload: Option<Box<RawValue>>,
}

/// A stored event as Meshes describes it.
#[derive(Serialize, ToSchema)]
#[schema(as = MeshesEvent)]
struct CreatedEvent<'a> {
    /// Always `event`.
    #[serde(rename = "type")]
    #[schema(pattern = "^event$")]
    kind: &'static str,
    #[schema(value_type = crate::api::openapi_schemas::EventName)]
    event: &'a str,
    id: EventId,
    workspace: WorkspaceId,
    /// The id of the key that emitted it (its public part).
    created_by: &'a str,
    #[schema(value_type = crate::api::openapi_schemas::Timestamp)]
    created_at: String,
    #[schema(required = true)]
    resource: Option<&'a str>,
    #[schema(required = true)]
    resource_id: Option<&'a str>,
}

impl<'a> CreatedEvent<'a> {
    fn of(event: &'a Event, created_by: &'a str) -> Self {
        Self {
            kind: "event",
            event: event.name.as_str(),
            id: event.id,
            workspace: event.workspace_id,
            created_by,
            created_at: format_timestamp_ms(event.received_at_ms),
            resource: event.resource.as_deref(),
            resource_id: event.resource_id.as_deref(),
        }
    }
}

#[derive(Serialize, ToSchema)]
#[schema(as = MeshesEmitted)]
struct Emitted<'a> {
    event: CreatedEvent<'a>,
}

/// A bulk answer's record: the created event, or why one was refused.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[schema(as = MeshesBulkRecord)]
enum BulkRecord<'a> {
    Created(CreatedEvent<'a>),
    /// An event of the bulk request that failed validation, in its place:
    /// the message names the field, `error` is the error code.
    Failed {
        message: String,
        error: &'static str,
    },
}

#[derive(Serialize, ToSchema)]
#[schema(as = MeshesBulkAnswer)]
struct BulkAnswer<'a> {
    /// Events stored.
    count: usize,
    /// One per event sent, in order.
    records: Vec<BulkRecord<'a>>,
    /// Present when some events failed validation.
    #[serde(skip_serializing_if = "Option::is_none")]
    error_count: Option<usize>,
}

/// Emit an event (Meshes-compatible)
///
/// The Meshes events client's `emit`. Same validation, fan-out,
/// durability, rate limit and body limit as `POST /v1/events`; answered
/// only once stored durably.
#[utoipa::path(
    post,
    path = "/api/v1/events",
    operation_id = "meshesEmitEvent",
    tag = "meshes",
    security(("meshesPublishableKey" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "As on `POST /v1/events`, in a space of its own: the same key sent to `/v1` and `/api/v1` never replays the other's answer.")),
    request_body = MeshesEvent,
    responses(
        (status = 201, description = "Stored durably (fsync'd) with its deliveries.", body = Emitted, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn emit(
    State(app): State<AppState>,
    key: MeshesKey,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    admit(&app, key.workspace, 1)?;
    let idempotency = meshes_idempotency_key(idempotency.as_ref())?;
    let body: MeshesEvent = crate::api::parse_json(&bytes)?;
    let event = to_event(body, key.workspace, "")?;
    let (deliveries, _) = fan_out(&app, key.workspace, std::slice::from_ref(&event)).await?;
    let answer = Emitted {
        event: CreatedEvent::of(&event, &key.key_id),
    };
    let answer = serde_json::to_vec(&answer).map_err(|error| ApiError::internal(&error))?;
    store_events(
        &app,
        vec![event],
        deliveries,
        idempotency,
        StatusCode::CREATED,
        answer,
    )
    .await
}

/// Emit 1 to 100 events (Meshes-compatible)
///
/// The Meshes events client's `emitBatch`: a JSON array of 1 to 100
/// events. Every valid event is stored (in one durable write); invalid ones
/// are reported in their place. 201 when all were stored, 207 when some
/// failed validation, 422 when none could be (or the array is empty or
/// longer than 100).
#[utoipa::path(
    post,
    path = "/api/v1/events/bulk",
    operation_id = "meshesEmitBulk",
    tag = "meshes",
    security(("meshesPublishableKey" = [])),
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "As on `POST /v1/events`, in a space of its own: the same key sent to `/v1` and `/api/v1` never replays the other's answer.")),
    request_body(content = Vec<MeshesEvent>, description = "A JSON array of 1 to 100 events."),
    responses(
        (status = 201, description = "Every event stored durably.", body = BulkAnswer, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`."))),
        (status = 207, description = "The valid events stored durably; the others failed validation (`error_count`).", body = BulkAnswer, headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`."))),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = PayloadTooLarge),
        (status = 422, response = Unprocessable),
        (status = 429, response = RateLimited),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn emit_bulk(
    State(app): State<AppState>,
    key: MeshesKey,
    IdempotencyHeader(idempotency): IdempotencyHeader,
    RawBody(bytes): RawBody,
) -> Result<Response, ApiError> {
    let idempotency = meshes_idempotency_key(idempotency.as_ref())?;
    let items = parse_array(&bytes)?;
    if items.is_empty() || items.len() > MAX_BULK_EVENTS {
        return Err(ApiError::invalid(
            "body",
            format!("must be an array of 1 to {MAX_BULK_EVENTS} events"),
        ));
    }
    // Every item counts against the limit, valid or not, as in a /v1 batch.
    admit(&app, key.workspace, items.len())?;
    let checked: Vec<Result<Event, ApiError>> = items
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            let field = format!("[{index}].");
            serde_json::from_str::<MeshesEvent>(raw.get())
                .map_err(|error| ApiError::invalid(&format!("[{index}]"), error))
                .and_then(|body| to_event(body, key.workspace, &field))
        })
        .collect();
    let failed = checked.iter().filter(|item| item.is_err()).count();
    if failed == checked.len() {
        let first = checked.into_iter().find_map(Result::err);
        return Err(first.unwrap_or_else(|| ApiError::invalid("body", "no valid event")));
    }
    let mut events = Vec::with_capacity(checked.len() - failed);
    let mut slots = Vec::with_capacity(checked.len());
    for item in checked {
        match item {
            Ok(event) => {
                slots.push(Ok(events.len()));
                events.push(event);
            }
            Err(error) => slots.push(Err(error)),
        }
    }
    let (deliveries, _) = fan_out(&app, key.workspace, &events).await?;
    let records = slots
        .into_iter()
        .map(|slot| match slot {
            Ok(index) => BulkRecord::Created(CreatedEvent::of(&events[index], &key.key_id)),
            Err(error) => BulkRecord::Failed {
                message: error.message().to_string(),
                error: error.code(),
            },
        })
        .collect();
    let answer = BulkAnswer {
        count: events.len(),
        records,
        error_count: (failed > 0).then_some(failed),
    };
    let answer = serde_json::to_vec(&answer).map_err(|error| ApiError::internal(&error))?;
    let status = if failed > 0 {
        StatusCode::MULTI_STATUS
    } else {
        StatusCode::CREATED
    };
    store_events(&app, events, deliveries, idempotency, status, answer).await
}

/// `Idempotency-Key`, kept apart from `/v1`'s: the same key sent to both
/// must not replay one API's answer on the other.
fn meshes_idempotency_key(header: Option<&HeaderValue>) -> Result<Option<String>, ApiError> {
    Ok(idempotency_key(header)?.map(|key| format!("meshes:{key}")))
}

fn to_event(body: MeshesEvent, workspace: WorkspaceId, field: &str) -> Result<Event, ApiError> {
    let body = EventBody {
        event: body.event,
        resource: Some(
            body.resource
                .unwrap_or_else(|| DEFAULT_RESOURCE.to_string()),
        ),
        resource_id: body.resource_id,
        payload: body.payload,
    };
    validate_event(body, workspace, field)
}

/// The bulk body: broken JSON is 400, JSON that is not an array 422.
fn parse_array(bytes: &[u8]) -> Result<Vec<Box<RawValue>>, ApiError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|error| ApiError::malformed_json(format!("malformed JSON: {error}")))?;
    serde_json::from_slice(bytes)
        .map_err(|_| ApiError::invalid("body", "must be a JSON array of events"))
}
