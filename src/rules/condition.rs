//! Conditions on an event's payload: their wire shape, their validation and
//! their evaluation. The semantics are documented in the parent module.

use super::RuleError;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Number, Value};
use std::cmp::Ordering;

/// At most this many conditions on one rule.
pub const MAX_CONDITIONS: usize = 32;
/// Longest `path`, in characters.
pub const MAX_PATH_CHARS: usize = 256;
/// Most elements in the value of an `in` condition.
pub const MAX_IN_VALUES: usize = 100;

/// A comparison operator, spelled in lowercase on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Exists,
    Contains,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Eq,
        Op::Ne,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::In,
        Op::Exists,
        Op::Contains,
    ];

    /// Exact, lowercase spelling only, as on the wire.
    pub fn parse(text: &str) -> Option<Op> {
        Self::ALL.into_iter().find(|op| op.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "eq",
            Op::Ne => "ne",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::In => "in",
            Op::Exists => "exists",
            Op::Contains => "contains",
        }
    }
}

/// One condition: `{"path":"value","op":"gt","value":1500}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub path: String,
    pub op: Op,
    /// `None` when the key is absent; `Some(Value::Null)` for `"value": null`,
    /// which `eq` and `ne` may legitimately compare against.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub value: Option<Value>,
}

impl Condition {
    /// Whether the condition holds for `payload`.
    pub fn holds(&self, payload: &Value) -> bool {
        let field = resolve(payload, &self.path);
        let Some(value) = &self.value else {
            // Only `exists` works without a value.
            return self.op == Op::Exists && field.is_some();
        };
        let Some(field) = field else {
            return match self.op {
                Op::Ne => true,
                Op::Exists => *value == Value::Bool(false),
                _ => false,
            };
        };
        match self.op {
            Op::Exists => *value == Value::Bool(true),
            Op::Eq => json_eq(field, value),
            Op::Ne => !json_eq(field, value),
            Op::Gt => order(field, value).is_some_and(Ordering::is_gt),
            Op::Gte => order(field, value).is_some_and(Ordering::is_ge),
            Op::Lt => order(field, value).is_some_and(Ordering::is_lt),
            Op::Lte => order(field, value).is_some_and(Ordering::is_le),
            Op::In => value
                .as_array()
                .is_some_and(|items| items.iter().any(|item| json_eq(field, item))),
            Op::Contains => match field {
                Value::String(text) => value.as_str().is_some_and(|needle| text.contains(needle)),
                Value::Array(items) => items.iter().any(|item| json_eq(item, value)),
                _ => false,
            },
        }
    }
}

/// Validates a rule's `conditions`: an array of at most 32 condition objects.
/// Errors name the field as the request spells it, e.g. `conditions[2].value`.
pub fn validate_conditions(raw: &Value) -> Result<Vec<Condition>, RuleError> {
    let items = raw
        .as_array()
        .ok_or_else(|| RuleError::new("conditions", "must be an array"))?;
    if items.len() > MAX_CONDITIONS {
        return Err(RuleError::new(
            "conditions",
            format!("must have at most {MAX_CONDITIONS} entries"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| validate_condition(item, &format!("conditions[{index}]")))
        .collect()
}

fn validate_condition(raw: &Value, field: &str) -> Result<Condition, RuleError> {
    let object = raw
        .as_object()
        .ok_or_else(|| RuleError::new(field, "must be an object with path, op and value"))?;
    if let Some(key) = object
        .keys()
        .find(|key| !matches!(key.as_str(), "path" | "op" | "value"))
    {
        return Err(RuleError::new(
            format!("{field}.{key}"),
            "unknown field; a condition has path, op and value",
        ));
    }
    let path = validate_path(object.get("path"))
        .map_err(|message| RuleError::new(format!("{field}.path"), message))?;
    let op = object
        .get("op")
        .and_then(Value::as_str)
        .and_then(Op::parse)
        .ok_or_else(|| {
            RuleError::new(
                format!("{field}.op"),
                "must be one of eq, ne, gt, gte, lt, lte, in, exists, contains",
            )
        })?;
    let value = object.get("value");
    check_value(op, value).map_err(|message| RuleError::new(format!("{field}.value"), message))?;
    Ok(Condition {
        path,
        op,
        value: value.cloned(),
    })
}

fn validate_path(raw: Option<&Value>) -> Result<String, String> {
    let path = match raw {
        None => return Err("is required".to_string()),
        Some(Value::String(path)) => path,
        Some(_) => return Err("must be a string".to_string()),
    };
    if path.is_empty() || path.chars().count() > MAX_PATH_CHARS {
        return Err(format!("must be 1 to {MAX_PATH_CHARS} characters"));
    }
    if path.split('.').any(str::is_empty) {
        return Err("must be a dot path without empty segments, like `labels.env`".to_string());
    }
    Ok(path.clone())
}

fn check_value(op: Op, value: Option<&Value>) -> Result<(), String> {
    match (op, value) {
        (Op::Exists, None | Some(Value::Bool(_))) => Ok(()),
        (Op::Exists, Some(_)) => Err("must be true or false when given".to_string()),
        (_, None) => Err(format!("is required for `{}`", op.as_str())),
        (Op::Eq | Op::Ne, Some(_)) => Ok(()),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(Value::Number(_) | Value::String(_))) => Ok(()),
        (Op::Gt | Op::Gte | Op::Lt | Op::Lte, Some(_)) => Err(format!(
            "must be a number or a string for `{}`",
            op.as_str()
        )),
        (Op::In, Some(Value::Array(items))) if items.len() <= MAX_IN_VALUES => Ok(()),
        (Op::In, Some(Value::Array(_))) => Err(format!(
            "must have at most {MAX_IN_VALUES} entries for `in`"
        )),
        (Op::In, Some(_)) => Err("must be an array for `in`".to_string()),
        (Op::Contains, Some(Value::Null)) => Err("must not be null for `contains`".to_string()),
        (Op::Contains, Some(_)) => Ok(()),
    }
}

/// Keeps `"value": null` apart from an absent value: serde's default for
/// `Option` would read both as `None`.
fn present_value<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Follows a dot path; `None` means the path is missing.
fn resolve<'a>(payload: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(payload, |node, segment| match node {
            Value::Object(map) => map.get(segment),
            // Digits only: `usize::from_str` would also take `+1`.
            Value::Array(items)
                if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) =>
            {
                segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|index| items.get(index))
            }
            _ => None,
        })
}

/// JSON equality with numbers compared by value, so `1500 == 1500.0`.
fn json_eq(left: &Value, right: &Value) -> bool {
    match (left, right) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b) == Some(Ordering::Equal),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(key, x)| b.get(key).is_some_and(|y| json_eq(x, y)))
        }
        _ => left == right,
    }
}

/// The order `gt gte lt lte` use; `None` for pairs that do not compare.
fn order(field: &Value, value: &Value) -> Option<Ordering> {
    match (field, value) {
        (Value::Number(a), Value::Number(b)) => compare_numbers(a, b),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Integers compare exactly (an f64 cannot tell 2^63 from 2^63 + 1); any
/// float makes it an f64 comparison, `None` if either side were NaN.
fn compare_numbers(a: &Number, b: &Number) -> Option<Ordering> {
    match (integer(a), integer(b)) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn integer(number: &Number) -> Option<i128> {
    number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
}
