//! Shapes of a rule's JSON fields for the API document only: the handler
//! takes them as JSON and `rules/` validates them (conditions, targets by
//! connection type, templates), so no Rust type holds them as sent.

use serde::Deserialize;
use std::collections::BTreeMap;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder};
use utoipa::openapi::{Ref, RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// All of a rule's conditions must hold. A missing field makes every op
/// false except `ne` (true) and `exists`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"path": "value", "op": "gt", "value": 1500}))]
#[allow(dead_code)] // read by utoipa only
pub struct Condition {
    /// Dot path into the payload; digit segments index arrays
    /// (`items.0.id`).
    #[schema(min_length = 1, max_length = 256)]
    path: String,
    #[schema(value_type = String, pattern = "^(eq|ne|gt|gte|lt|lte|in|exists|contains)$")]
    op: String,
    /// Required except for `exists` (where it is `true` or `false`). `gt gte
    /// lt lte`: a number or a string; `in`: an array of at most 100;
    /// `contains`: not null.
    #[schema(value_type = Option<Value>)]
    value: Option<serde_json::Value>,
}

/// Overrides the default message, per part; minijinja templates over
/// `event`, `payload` and `alert`, checked when the rule is saved.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // read by utoipa only
pub struct Template {
    #[schema(max_length = 16384)]
    text: Option<String>,
    #[schema(max_length = 16384)]
    subject: Option<String>,
    #[schema(max_length = 16384)]
    html: Option<String>,
    #[schema(inline)]
    resend_template: Option<ResendTemplate>,
}

#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // read by utoipa only
pub struct ResendTemplate {
    id: String,
    variables: Option<BTreeMap<String, String>>,
}

/// Depends on the connection's type: webhook, pagerduty, teams and discord
/// take none (`{}` or null); slack `{"channel":"C…"}`; email
/// `{"to":["a@b.c", …]}` (1 to 50 addresses).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)] // read by utoipa only
pub struct RuleTarget {
    #[schema(min_length = 1, max_length = 80)]
    channel: Option<String>,
    /// Email addresses.
    #[schema(min_items = 1, max_items = 50)]
    to: Option<Vec<String>>,
}

/// A rule as created: [`super::RuleInput`] with `name`, `events` and
/// `connection_id` required.
pub struct CreateRule;

impl PartialSchema for CreateRule {
    fn schema() -> RefOr<Schema> {
        AllOfBuilder::new()
            .item(Ref::from_schema_name(super::RuleInput::name()))
            .item(
                ObjectBuilder::new()
                    .required("name")
                    .required("events")
                    .required("connection_id"),
            )
            .examples([json_example()])
            .into()
    }
}

impl ToSchema for CreateRule {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((super::RuleInput::name().into(), super::RuleInput::schema()));
        super::RuleInput::schemas(schemas);
    }
}

fn json_example() -> serde_json::Value {
    serde_json::json!({
        "name": "latency to ops",
        "events": ["alert.*"],
        "connection_id": "con_01ARZ3NDEKTSV4RRFFQ69G5FAV",
        "target": {"channel": "C0123456789"},
        "min_severity": "high",
        "conditions": [{"path": "value", "op": "gt", "value": 1500}]
    })
}
