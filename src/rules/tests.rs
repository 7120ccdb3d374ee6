//! Table-driven tests of the matching semantics, in rust-analyzer's
//! `check(input, expected)` style.

use super::*;
use serde_json::json;

/// The contract's example payload.
fn example_payload() -> Value {
    json!({
        "alert_id": "alrt_tyrion_42",
        "account_id": "acc_casterly",
        "severity": "high",
        "resource": "api_latency_p95",
        "value": 1840,
        "threshold": 1000,
        "triggered_at": "2026-04-17T16:02:00Z"
    })
}

/// A payload with one field of every shape the condition tables need.
fn fixture() -> Value {
    json!({
        "value": 1840,
        "float_value": 1840.0,
        "ratio": 0.5,
        "negative": -5,
        "big": 9_223_372_036_854_775_808_u64,
        "name": "api_latency_p95",
        "triggered_at": "2026-04-17T16:02:00Z",
        "nothing": null,
        "flag": true,
        "labels": {"env": "prod", "region": "eu-west-1", "count": 3},
        "tags": ["a", "b", 3],
        "items": [{"id": 1, "name": "first"}, {"id": 2}],
        "matrix": [[1, 2], [3, 4]],
        "numbered": {"0": "zero"}
    })
}

/// Validates one condition (it must be valid) and checks it against
/// [`fixture`].
fn check(condition: &str, expected: bool) {
    let raw: Value = serde_json::from_str(&format!("[{condition}]")).unwrap();
    let conditions = validate_conditions(&raw).unwrap_or_else(|e| panic!("{condition}: {e}"));
    assert_eq!(conditions[0].holds(&fixture()), expected, "{condition}");
}

fn check_all(table: &[(&str, bool)]) {
    for &(condition, expected) in table {
        check(condition, expected);
    }
}

#[test]
fn event_patterns() {
    let check = |pattern: &str, name: &str, expected: bool| {
        let parsed = EventPattern::parse(pattern).unwrap();
        assert_eq!(parsed.as_str(), pattern);
        assert_eq!(parsed.matches(name), expected, "{pattern} vs {name}");
    };
    check("alert.triggered", "alert.triggered", true);
    check("alert.triggered", "alert.triggered2", false);
    check("alert.triggered", "alert", false);
    check("alert.triggered", "Alert.Triggered", false);
    check("alert.*", "alert.triggered", true);
    check("alert.*", "alert.resolved", true);
    check("alert.*", "alert.a.b", true);
    check("alert.*", "alert.", false);
    check("alert.*", "alert", false);
    check("alert.*", "alerts.x", false);
    check("alert.*", "xalert.triggered", false);
    check("a:b-c_d.*", "a:b-c_d.e", true);
    check("*", "alert.triggered", true);
    check("*", "x", true);
}

#[test]
fn invalid_event_patterns() {
    let long_name = "x".repeat(129);
    let long_prefix = format!("{}.*", "x".repeat(127));
    for pattern in [
        "",
        "al*rt",
        "*.x",
        "alert*",
        "alert.**",
        ".*",
        "**",
        "alert.*.x",
        "alert triggered",
        "alerté",
        long_name.as_str(),
        long_prefix.as_str(),
    ] {
        assert!(EventPattern::parse(pattern).is_err(), "{pattern:?}");
    }
    assert!(EventPattern::parse(&"x".repeat(128)).is_ok());
    assert!(EventPattern::parse(&format!("{}.*", "x".repeat(126))).is_ok());
}

#[test]
fn severity_scale_each_level_against_each_threshold() {
    for min in Severity::ALL {
        let filter = RuleFilter {
            events: vec![EventPattern::parse("*").unwrap()],
            min_severity: Some(min),
            conditions: vec![],
        };
        for level in Severity::ALL {
            let payload = json!({"severity": level.as_str()});
            assert_eq!(
                filter.matches("e", &payload),
                level >= min,
                "{level} vs {min}"
            );
        }
    }
}

#[test]
fn severity_is_case_insensitive_and_unknown_never_matches() {
    let filter = |min_severity| RuleFilter {
        events: vec![EventPattern::parse("*").unwrap()],
        min_severity,
        conditions: vec![],
    };
    let check = |payload: Value, expected: bool| {
        assert_eq!(
            filter(Some(Severity::Info)).matches("e", &payload),
            expected,
            "{payload}"
        );
        // Without a threshold severity is not looked at.
        assert!(filter(None).matches("e", &payload), "{payload}");
    };
    check(json!({"severity": "HIGH"}), true);
    check(json!({"severity": "High"}), true);
    check(json!({"severity": "cRiTiCaL"}), true);
    check(json!({"severity": "urgent"}), false);
    check(json!({"severity": ""}), false);
    check(json!({"severity": " high"}), false);
    check(json!({"severity": 3}), false);
    check(json!({"severity": null}), false);
    check(json!({"severity": true}), false);
    check(json!({"severity": ["high"]}), false);
    check(json!({"severity": {"level": "high"}}), false);
    check(json!({"labels": {"severity": "high"}}), false);
    check(json!({}), false);
    check(json!(null), false);
    check(json!("high"), false);
}

#[test]
fn severity_names_and_serde() {
    assert!(Severity::Info < Severity::Low);
    assert!(Severity::Low < Severity::Medium);
    assert!(Severity::Medium < Severity::High);
    assert!(Severity::High < Severity::Critical);
    for severity in Severity::ALL {
        assert_eq!(Severity::parse(severity.as_str()), Some(severity));
        assert_eq!(
            Severity::parse(&severity.as_str().to_uppercase()),
            Some(severity)
        );
        let text = serde_json::to_string(&severity).unwrap();
        assert_eq!(text, format!("\"{}\"", severity.as_str()));
        assert_eq!(serde_json::from_str::<Severity>(&text).unwrap(), severity);
    }
    assert_eq!(Severity::parse("warning"), None);
}

#[test]
fn eq_and_ne() {
    check_all(&[
        (r#"{"path":"value","op":"eq","value":1840}"#, true),
        (r#"{"path":"value","op":"eq","value":1840.0}"#, true),
        (r#"{"path":"float_value","op":"eq","value":1840}"#, true),
        (r#"{"path":"value","op":"eq","value":1841}"#, false),
        (r#"{"path":"value","op":"eq","value":"1840"}"#, false),
        (
            r#"{"path":"big","op":"eq","value":9223372036854775809}"#,
            false,
        ),
        (
            r#"{"path":"name","op":"eq","value":"api_latency_p95"}"#,
            true,
        ),
        (
            r#"{"path":"name","op":"eq","value":"API_LATENCY_P95"}"#,
            false,
        ),
        (r#"{"path":"flag","op":"eq","value":true}"#, true),
        (r#"{"path":"flag","op":"eq","value":1}"#, false),
        (r#"{"path":"nothing","op":"eq","value":null}"#, true),
        (r#"{"path":"nothing","op":"eq","value":0}"#, false),
        (r#"{"path":"missing","op":"eq","value":null}"#, false),
        (r#"{"path":"labels","op":"eq","value":1840}"#, false),
        (
            r#"{"path":"labels","op":"eq","value":{"region":"eu-west-1","env":"prod","count":3.0}}"#,
            true,
        ),
        (
            r#"{"path":"labels","op":"eq","value":{"env":"prod"}}"#,
            false,
        ),
        (r#"{"path":"tags","op":"eq","value":["a","b",3.0]}"#, true),
        (r#"{"path":"tags","op":"eq","value":["b","a",3]}"#, false),
        (r#"{"path":"value","op":"ne","value":1840}"#, false),
        (r#"{"path":"value","op":"ne","value":"1840"}"#, true),
        (r#"{"path":"labels.env","op":"ne","value":"staging"}"#, true),
        (r#"{"path":"nothing","op":"ne","value":null}"#, false),
        (r#"{"path":"missing","op":"ne","value":1}"#, true),
        (r#"{"path":"missing","op":"ne","value":null}"#, true),
    ]);
}

#[test]
fn ordering_ops() {
    check_all(&[
        (r#"{"path":"value","op":"gt","value":1500}"#, true),
        (r#"{"path":"value","op":"gt","value":1840}"#, false),
        (r#"{"path":"value","op":"gte","value":1840}"#, true),
        (r#"{"path":"value","op":"gte","value":1840.5}"#, false),
        (r#"{"path":"value","op":"lt","value":1840.5}"#, true),
        (r#"{"path":"value","op":"lt","value":1840}"#, false),
        (r#"{"path":"value","op":"lte","value":1840.0}"#, true),
        (r#"{"path":"ratio","op":"gt","value":0}"#, true),
        (r#"{"path":"ratio","op":"lt","value":1}"#, true),
        (r#"{"path":"negative","op":"lt","value":0}"#, true),
        (r#"{"path":"negative","op":"gt","value":-5.5}"#, true),
        (
            r#"{"path":"big","op":"gt","value":9223372036854775807}"#,
            true,
        ),
        (
            r#"{"path":"triggered_at","op":"gt","value":"2026-04-17T00:00:00Z"}"#,
            true,
        ),
        (
            r#"{"path":"triggered_at","op":"lt","value":"2026-04-18"}"#,
            true,
        ),
        (
            r#"{"path":"triggered_at","op":"gte","value":"2026-04-17T16:02:00Z"}"#,
            true,
        ),
        (
            r#"{"path":"triggered_at","op":"lte","value":"2026-04-17T16:01:59Z"}"#,
            false,
        ),
        (r#"{"path":"name","op":"gt","value":5}"#, false),
        (r#"{"path":"name","op":"lt","value":5}"#, false),
        (r#"{"path":"value","op":"gt","value":"1000"}"#, false),
        (r#"{"path":"value","op":"lt","value":"9999"}"#, false),
        (r#"{"path":"labels","op":"gt","value":1}"#, false),
        (r#"{"path":"labels","op":"lt","value":1}"#, false),
        (r#"{"path":"tags","op":"gt","value":0}"#, false),
        (r#"{"path":"flag","op":"gt","value":0}"#, false),
        (r#"{"path":"nothing","op":"gt","value":0}"#, false),
        (r#"{"path":"nothing","op":"lte","value":0}"#, false),
        (r#"{"path":"missing","op":"gt","value":0}"#, false),
        (r#"{"path":"missing","op":"lt","value":0}"#, false),
        (r#"{"path":"missing","op":"gte","value":""}"#, false),
    ]);
}

#[test]
fn in_op() {
    check_all(&[
        (r#"{"path":"value","op":"in","value":[1,1840]}"#, true),
        (r#"{"path":"value","op":"in","value":[1840.0]}"#, true),
        (r#"{"path":"value","op":"in","value":["1840"]}"#, false),
        (r#"{"path":"value","op":"in","value":[]}"#, false),
        (
            r#"{"path":"labels.env","op":"in","value":["prod","staging"]}"#,
            true,
        ),
        (
            r#"{"path":"labels.env","op":"in","value":["dev","staging"]}"#,
            false,
        ),
        (r#"{"path":"tags","op":"in","value":[["a","b",3]]}"#, true),
        (r#"{"path":"nothing","op":"in","value":[null]}"#, true),
        (r#"{"path":"missing","op":"in","value":[null]}"#, false),
    ]);
}

#[test]
fn exists_op() {
    check_all(&[
        (r#"{"path":"value","op":"exists"}"#, true),
        (r#"{"path":"nothing","op":"exists"}"#, true),
        (r#"{"path":"missing","op":"exists"}"#, false),
        (r#"{"path":"labels.missing","op":"exists"}"#, false),
        (r#"{"path":"value","op":"exists","value":true}"#, true),
        (r#"{"path":"missing","op":"exists","value":true}"#, false),
        (r#"{"path":"value","op":"exists","value":false}"#, false),
        (r#"{"path":"nothing","op":"exists","value":false}"#, false),
        (r#"{"path":"missing","op":"exists","value":false}"#, true),
    ]);
}

#[test]
fn contains_op() {
    check_all(&[
        (r#"{"path":"name","op":"contains","value":"latency"}"#, true),
        (r#"{"path":"name","op":"contains","value":""}"#, true),
        (
            r#"{"path":"name","op":"contains","value":"LATENCY"}"#,
            false,
        ),
        (r#"{"path":"name","op":"contains","value":1}"#, false),
        (r#"{"path":"tags","op":"contains","value":"a"}"#, true),
        (r#"{"path":"tags","op":"contains","value":3.0}"#, true),
        (r#"{"path":"tags","op":"contains","value":"c"}"#, false),
        (r#"{"path":"tags","op":"contains","value":["a"]}"#, false),
        (r#"{"path":"matrix","op":"contains","value":[1,2]}"#, true),
        (r#"{"path":"labels","op":"contains","value":"env"}"#, false),
        (r#"{"path":"value","op":"contains","value":1840}"#, false),
        (r#"{"path":"value","op":"contains","value":"18"}"#, false),
        (r#"{"path":"nothing","op":"contains","value":"x"}"#, false),
        (r#"{"path":"missing","op":"contains","value":"x"}"#, false),
    ]);
}

#[test]
fn paths() {
    check_all(&[
        (r#"{"path":"labels.env","op":"eq","value":"prod"}"#, true),
        (r#"{"path":"labels.count","op":"gte","value":3}"#, true),
        (r#"{"path":"items.0.id","op":"eq","value":1}"#, true),
        (r#"{"path":"items.1.id","op":"eq","value":2}"#, true),
        (r#"{"path":"items.1.name","op":"exists"}"#, false),
        (r#"{"path":"items.2.id","op":"exists"}"#, false),
        (r#"{"path":"matrix.1.0","op":"eq","value":3}"#, true),
        (r#"{"path":"tags.2","op":"eq","value":3}"#, true),
        // Leading zeros still spell an index.
        (r#"{"path":"tags.01","op":"eq","value":"b"}"#, true),
        (r#"{"path":"numbered.0","op":"eq","value":"zero"}"#, true),
        (r#"{"path":"tags.x","op":"exists"}"#, false),
        (r#"{"path":"tags.-1","op":"exists"}"#, false),
        (r#"{"path":"tags.+1","op":"exists"}"#, false),
        (
            r#"{"path":"tags.99999999999999999999999","op":"exists"}"#,
            false,
        ),
        (r#"{"path":"value.x","op":"exists"}"#, false),
        (r#"{"path":"name.0","op":"exists"}"#, false),
        (r#"{"path":"nothing.x","op":"exists"}"#, false),
        (r#"{"path":"nothing.x","op":"ne","value":1}"#, true),
    ]);
    // Paths start at the payload, whatever its shape.
    let at = |payload: Value| {
        Condition {
            path: "0".into(),
            op: Op::Eq,
            value: Some(json!(7)),
        }
        .holds(&payload)
    };
    assert!(at(json!([7])));
    assert!(at(json!({"0": 7})));
    assert!(!at(json!(null)));
    assert!(!at(json!("7")));
}

#[test]
fn contract_example() {
    let filter = RuleFilter {
        events: validate_events(&json!(["alert.triggered"])).unwrap(),
        min_severity: None,
        conditions: validate_conditions(&json!([{"path":"value","op":"gt","value":1500}])).unwrap(),
    };
    let mut payload = example_payload();
    assert!(filter.matches("alert.triggered", &payload));
    assert!(!filter.matches("alert.resolved", &payload));
    payload["value"] = json!(1200);
    assert!(!filter.matches("alert.triggered", &payload));
}

#[test]
fn filter_needs_a_pattern_the_severity_and_every_condition() {
    let filter = RuleFilter {
        events: validate_events(&json!(["deploy.finished", "alert.*"])).unwrap(),
        min_severity: parse_min_severity(&json!("medium")).unwrap(),
        conditions: validate_conditions(&json!([
            {"path":"value","op":"gt","value":1500},
            {"path":"account_id","op":"in","value":["acc_casterly","acc_winterfell"]},
        ]))
        .unwrap(),
    };
    let payload = example_payload();
    assert!(filter.matches("alert.triggered", &payload));
    assert!(filter.matches("deploy.finished", &payload));
    assert!(!filter.matches("deploy.started", &payload));
    let mut low = payload.clone();
    low["severity"] = json!("low");
    assert!(!filter.matches("alert.triggered", &low));
    let mut other_account = payload.clone();
    other_account["account_id"] = json!("acc_dorne");
    assert!(!filter.matches("alert.triggered", &other_account));
    let no_conditions = RuleFilter {
        conditions: vec![],
        ..filter
    };
    assert!(no_conditions.matches("alert.x", &json!({"severity": "medium"})));
}

#[test]
fn conditions_that_skipped_validation_never_hold() {
    let payload = fixture();
    let holds = |path: &str, op, value: Option<Value>| {
        Condition {
            path: path.into(),
            op,
            value,
        }
        .holds(&payload)
    };
    for path in ["value", "missing"] {
        assert!(!holds(path, Op::Eq, None));
        assert!(!holds(path, Op::Ne, None));
        assert!(!holds(path, Op::In, Some(json!(1840))));
        assert!(!holds(path, Op::Exists, Some(json!(1))));
        assert!(!holds(path, Op::Gt, Some(json!(true))));
        assert!(!holds(path, Op::Contains, None));
    }
}

#[test]
fn condition_serde_shape() {
    let condition: Condition =
        serde_json::from_str(r#"{"path":"value","op":"gt","value":1500}"#).unwrap();
    assert_eq!(
        condition,
        Condition {
            path: "value".into(),
            op: Op::Gt,
            value: Some(json!(1500)),
        }
    );
    assert_eq!(
        serde_json::to_string(&condition).unwrap(),
        r#"{"path":"value","op":"gt","value":1500}"#
    );
    let exists: Condition = serde_json::from_str(r#"{"path":"x","op":"exists"}"#).unwrap();
    assert_eq!(exists.value, None);
    assert_eq!(
        serde_json::to_string(&exists).unwrap(),
        r#"{"path":"x","op":"exists"}"#
    );
    let null: Condition = serde_json::from_str(r#"{"path":"x","op":"eq","value":null}"#).unwrap();
    assert_eq!(null.value, Some(Value::Null));
    assert_eq!(
        serde_json::to_string(&null).unwrap(),
        r#"{"path":"x","op":"eq","value":null}"#
    );
    assert!(serde_json::from_str::<Condition>(r#"{"path":"x","op":"eq","extra":1}"#).is_err());
    assert!(serde_json::from_str::<Condition>(r#"{"path":"x","op":"between"}"#).is_err());
    for op in Op::ALL {
        assert_eq!(Op::parse(op.as_str()), Some(op));
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            format!("\"{}\"", op.as_str())
        );
    }
}

#[test]
fn event_pattern_serde() {
    let patterns: Vec<EventPattern> = serde_json::from_str(r#"["alert.*","*","x"]"#).unwrap();
    assert_eq!(
        serde_json::to_string(&patterns).unwrap(),
        r#"["alert.*","*","x"]"#
    );
    assert!(serde_json::from_str::<EventPattern>(r#""al*rt""#).is_err());
}

/// Checks that `raw` is refused, naming `field`, with a message containing
/// `message`.
fn check_invalid(
    validate: impl Fn(&Value) -> Result<(), RuleError>,
    raw: Value,
    field: &str,
    message: &str,
) {
    let error = validate(&raw).expect_err(&raw.to_string());
    assert_eq!(error.field, field, "{raw}: {error}");
    assert!(error.message.contains(message), "{raw}: {error}");
    assert_eq!(error.to_string(), format!("{field}: {}", error.message));
}

#[test]
fn condition_validation_names_the_field() {
    let validate = |raw: &Value| validate_conditions(raw).map(drop);
    let check =
        |raw: Value, field: &str, message: &str| check_invalid(validate, raw, field, message);
    let valid = json!({"path":"value","op":"gt","value":1});
    check(json!({}), "conditions", "must be an array");
    check(json!(null), "conditions", "must be an array");
    check(json!(vec![valid.clone(); 33]), "conditions", "at most 32");
    check(json!([1]), "conditions[0]", "must be an object");
    check(
        json!([{"op":"eq","value":1}]),
        "conditions[0].path",
        "required",
    );
    check(
        json!([{"path":5,"op":"eq","value":1}]),
        "conditions[0].path",
        "string",
    );
    check(
        json!([{"path":"","op":"exists"}]),
        "conditions[0].path",
        "1 to 256",
    );
    let long = "x".repeat(257);
    check(
        json!([{"path":long,"op":"exists"}]),
        "conditions[0].path",
        "1 to 256",
    );
    for path in ["a..b", ".a", "a.", "."] {
        check(
            json!([{"path":path,"op":"exists"}]),
            "conditions[0].path",
            "empty segments",
        );
    }
    for op in [json!("between"), json!("EQ"), json!(1), json!(null)] {
        check(
            json!([{"path":"x","op":op,"value":1}]),
            "conditions[0].op",
            "one of",
        );
    }
    check(
        json!([{"path":"x","value":1}]),
        "conditions[0].op",
        "one of",
    );
    for op in ["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains"] {
        check(
            json!([{"path":"x","op":op}]),
            "conditions[0].value",
            "required",
        );
    }
    check(
        json!([{"path":"x","op":"in","value":"x"}]),
        "conditions[0].value",
        "array",
    );
    let too_many = vec![1; 101];
    check(
        json!([{"path":"x","op":"in","value":too_many}]),
        "conditions[0].value",
        "at most 100",
    );
    for value in [json!(true), json!(null), json!([1]), json!({})] {
        for op in ["gt", "gte", "lt", "lte"] {
            check(
                json!([{"path":"x","op":op,"value":value}]),
                "conditions[0].value",
                "number or a string",
            );
        }
    }
    check(
        json!([{"path":"x","op":"contains","value":null}]),
        "conditions[0].value",
        "null",
    );
    check(
        json!([{"path":"x","op":"exists","value":"yes"}]),
        "conditions[0].value",
        "true or false",
    );
    check(
        json!([{"path":"x","op":"eq","value":1,"extra":2}]),
        "conditions[0].extra",
        "unknown",
    );
    check(
        json!([valid, valid, {"path":"x","op":"lt","value":[]}]),
        "conditions[2].value",
        "number",
    );
}

#[test]
fn condition_validation_accepts_the_edges() {
    let long = "x".repeat(256);
    let hundred = vec![1; 100];
    let raw = json!([
        {"path":"x","op":"eq","value":null},
        {"path":"x","op":"ne","value":{"a":[1]}},
        {"path":"x","op":"exists"},
        {"path":"x","op":"exists","value":false},
        {"path":"x","op":"contains","value":{}},
        {"path":"x","op":"gte","value":"2026-01-01"},
        {"path":"x","op":"in","value":hundred},
        {"path":"x","op":"in","value":[]},
        {"path":long,"op":"exists"},
        {"path":"items.0.id","op":"exists"},
    ]);
    assert_eq!(validate_conditions(&raw).unwrap().len(), 10);
    assert_eq!(validate_conditions(&json!([])).unwrap(), vec![]);
    let thirty_two = vec![json!({"path":"x","op":"exists"}); 32];
    assert_eq!(validate_conditions(&json!(thirty_two)).unwrap().len(), 32);
}

#[test]
fn events_validation_names_the_field() {
    let validate = |raw: &Value| validate_events(raw).map(drop);
    let check =
        |raw: Value, field: &str, message: &str| check_invalid(validate, raw, field, message);
    check(json!("alert.*"), "events", "array");
    check(json!(null), "events", "array");
    check(json!([]), "events", "1 to 50");
    check(json!(vec!["x"; 51]), "events", "1 to 50");
    check(json!([1]), "events[0]", "string");
    check(json!(["ok", "al*rt"]), "events[1]", "event name");
    check(json!(["ok", ""]), "events[1]", "1 to 128");
    check(json!([".*"]), "events[0]", "prefix");
    assert_eq!(validate_events(&json!(vec!["x"; 50])).unwrap().len(), 50);
}

#[test]
fn min_severity_parsing() {
    assert_eq!(parse_min_severity(&json!(null)), Ok(None));
    assert_eq!(parse_min_severity(&json!("HIGH")), Ok(Some(Severity::High)));
    assert_eq!(parse_min_severity(&json!("info")), Ok(Some(Severity::Info)));
    let validate = |raw: &Value| parse_min_severity(raw).map(drop);
    check_invalid(validate, json!("urgent"), "min_severity", "one of");
    check_invalid(validate, json!(3), "min_severity", "string");
    check_invalid(validate, json!(["high"]), "min_severity", "string");
}
