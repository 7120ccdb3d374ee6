//! Property tests: arbitrary JSON never makes validation or matching panic,
//! and a few laws hold for every payload.

use super::*;
use proptest::prelude::*;
use serde_json::json;

/// Object keys and strings biased towards the paths and ops in play, so
/// generated conditions and payloads meet often.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "value", "labels", "env", "severity", "path", "op", "0", "1", "high", "LOW", "eq",
            "in", "exists", "",
        ])
        .prop_map(String::from),
        "[a-z0-9.*]{0,8}",
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become null, as serde_json does.
        any::<f64>().prop_map(Value::from),
        word().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(word(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// Mostly well-formed condition objects, with the occasional bad part.
fn condition_like() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        4 => prop::sample::select(vec![
            "value", "labels.env", "labels", "tags.0", "items.1.id", "severity", "0",
        ])
        .prop_map(Value::from),
        1 => "[a-z0-9.]{0,10}".prop_map(Value::from),
        1 => json_value(),
    ];
    let fitting = prop::sample::select(Op::ALL.to_vec()).prop_flat_map(|op| {
        let value = match op {
            Op::Exists => prop::option::of(any::<bool>().prop_map(Value::Bool)).boxed(),
            Op::In => prop::collection::vec(json_value(), 0..5)
                .prop_map(|items| Some(Value::Array(items)))
                .boxed(),
            Op::Gt | Op::Gte | Op::Lt | Op::Lte => prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(Value::from),
                word().prop_map(Value::String),
            ]
            .prop_map(Some)
            .boxed(),
            Op::Eq | Op::Ne | Op::Contains => json_value().prop_map(Some).boxed(),
        };
        (Just(Value::from(op.as_str())), value)
    });
    let op_and_value = prop_oneof![
        5 => fitting,
        1 => (json_value(), prop::option::of(json_value())),
    ];
    let extra = prop::option::weighted(0.05, json_value());
    (path, op_and_value, extra).prop_map(|(path, (op, value), extra)| {
        let mut object = json!({"path": path, "op": op});
        if let Some(value) = value {
            object["value"] = value;
        }
        if let Some(extra) = extra {
            object["extra"] = extra;
        }
        object
    })
}

fn payload() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => json_value(),
        4 => prop::collection::btree_map(word(), json_value(), 0..8)
            .prop_map(|map| Value::Object(map.into_iter().collect())),
    ]
}

proptest! {
    #[test]
    fn validation_never_panics_on_arbitrary_json(raw in json_value()) {
        let _ = validate_conditions(&raw);
        let _ = validate_events(&raw);
        let _ = parse_min_severity(&raw);
    }

    #[test]
    fn patterns_never_panic_and_round_trip(text in any::<String>(), name in any::<String>()) {
        if let Ok(pattern) = EventPattern::parse(&text) {
            prop_assert_eq!(pattern.as_str(), text.as_str());
            let _ = pattern.matches(&name);
            if !text.ends_with('*') {
                prop_assert!(pattern.matches(&text));
            }
        }
        let _ = validate_events(&json!([text, name]));
    }

    #[test]
    fn valid_conditions_match_without_panicking(
        raw in prop::collection::vec(condition_like(), 0..6),
        payload in payload(),
        name in word(),
        min in prop::option::of(prop::sample::select(Severity::ALL.to_vec())),
    ) {
        let _ = validate_conditions(&Value::Array(raw.clone()));
        // Keep each condition that validates on its own, so that filters
        // with several conditions are common.
        let conditions: Vec<Condition> = raw
            .into_iter()
            .filter_map(|raw| validate_conditions(&json!([raw])).ok())
            .flatten()
            .collect();
        for condition in &conditions {
            // The wire shape round-trips. Through `Value`, not text:
            // without `float_roundtrip` serde_json may re-read a float
            // one ulp off.
            let wire = serde_json::to_value(condition).unwrap();
            prop_assert_eq!(&serde_json::from_value::<Condition>(wire).unwrap(), condition);
            let with = |op, value| Condition { path: condition.path.clone(), op, value };
            // `ne` negates `eq`, and `exists: false` negates `exists`.
            if let Some(value) = &condition.value {
                prop_assert_ne!(
                    with(Op::Eq, Some(value.clone())).holds(&payload),
                    with(Op::Ne, Some(value.clone())).holds(&payload)
                );
            }
            prop_assert_ne!(
                with(Op::Exists, None).holds(&payload),
                with(Op::Exists, Some(Value::Bool(false))).holds(&payload)
            );
        }
        let filter = RuleFilter {
            events: vec![EventPattern::parse("*").unwrap()],
            min_severity: min,
            conditions,
        };
        let _ = filter.matches(&name, &payload);
    }
}
