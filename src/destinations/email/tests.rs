//! Unit tests of email rendering, classification and config.
use super::*;
use crate::model::{EventId, EventName, RuleId, WorkspaceId};

fn event(payload: Value) -> Event {
    Event {
        id: EventId(7),
        workspace_id: WorkspaceId(1),
        name: EventName::parse("alert.triggered").unwrap(),
        resource: Some("alert".into()),
        resource_id: Some("alrt_tyrion_42".into()),
        payload: serde_json::to_vec(&payload).unwrap(),
        received_at_ms: 0,
    }
}

fn example_payload() -> Value {
    json!({
        "alert_id": "alrt_tyrion_42", "account_id": "acc_casterly", "severity": "high",
        "resource": "api_latency_p95", "value": 1840, "threshold": 1000,
        "triggered_at": "2026-04-17T16:02:00Z"
    })
}

fn rendered(payload: Value, template: Option<Value>) -> (Event, RenderedEmail) {
    let event = event(payload);
    let summary = AlertSummary::from_event(&event);
    let email = render(&event, &summary, template.as_ref()).unwrap();
    (event, email)
}

fn instance() -> Config {
    Config::defaults().unwrap()
}

#[test]
fn the_example_renders_subject_text_and_html() {
    let (event, email) = rendered(example_payload(), None);
    assert_eq!(
        email.subject,
        "[HIGH] api_latency_p95 is 1840 (threshold 1000)"
    );
    let id = event.id.to_string();
    assert_eq!(
        email.text,
        format!(
            "[HIGH] api_latency_p95 is 1840 (threshold 1000)\n\nValue: 1840\nThreshold: 1000\n\
             Account: acc_casterly\nTime: 2026-04-17T16:02:00Z\nalert_id: alrt_tyrion_42\n\n\
             Event: {id} (alert.triggered)\n"
        )
    );
    for needle in [
        "max-width:600px",
        "role=\"presentation\"",
        ">HIGH</span>",
        "background-color:#d9480f",
        "api_latency_p95 is 1840 (threshold 1000)</h1>",
        ">Value</td>",
        ">1840</td>",
        ">acc_casterly</td>",
        ">alrt_tyrion_42</td>",
        &format!("Event {id} &middot; alert.triggered"),
    ] {
        assert!(
            email.html.contains(needle),
            "{needle} missing from {}",
            email.html
        );
    }
    assert!(!email.custom_subject);
    assert!(email.resend_template.is_none());
}

#[test]
fn hostile_payload_text_is_escaped_in_html() {
    let mut payload = example_payload();
    payload["resource"] = json!("<img src=x onerror=alert(1)>");
    payload["note"] = json!("<script>alert(2)</script>");
    let (_, email) = rendered(payload, None);
    assert!(!email.html.contains("<img"), "{}", email.html);
    assert!(!email.html.contains("<script"), "{}", email.html);
    assert!(
        email.html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{}",
        email.html
    );
    // Plain text parts are not HTML and stay as they are.
    assert!(email.subject.contains("<img src=x onerror=alert(1)>"));
    assert!(email.text.contains("note: <script>alert(2)</script>"));
}

#[test]
fn subjects_are_one_line_and_bounded() {
    let mut payload = example_payload();
    payload["resource"] = json!(format!("multi\r\nline\t{}", "x".repeat(300)));
    let (_, email) = rendered(payload, None);
    assert!(!email.subject.contains(['\r', '\n', '\t']));
    assert!(email.subject.starts_with("[HIGH] multi line x"));
    assert_eq!(email.subject.chars().count(), MAX_SUBJECT_CHARS);
    let (_, email) = rendered(example_payload(), Some(json!({"subject": "  \n "})));
    assert_eq!(
        email.subject,
        "[HIGH] api_latency_p95 is 1840 (threshold 1000)"
    );
}

#[test]
fn rule_templates_override_each_part() {
    let template = json!({
        "subject": "{{ alert.title }} on {{ payload.account_id }}\nsecond line",
        "text": "Value {{ payload.value }} & more",
    });
    let (_, email) = rendered(example_payload(), Some(template));
    assert_eq!(email.subject, "api_latency_p95 on acc_casterly second line");
    assert!(email.custom_subject);
    assert_eq!(email.text, "Value 1840 & more");
    // The default HTML stays.
    assert!(email.html.contains("max-width:600px"));

    let mut payload = example_payload();
    payload["resource"] = json!("<b>bold</b>");
    let (_, email) = rendered(payload, Some(json!({"html": "<p>{{ alert.title }}</p>"})));
    assert_eq!(email.html, "<p>&lt;b&gt;bold&lt;&#x2f;b&gt;</p>");
    assert_eq!(email.subject, "[HIGH] <b>bold</b> is 1840 (threshold 1000)");
}

#[test]
fn a_broken_template_is_an_error() {
    let event = event(example_payload());
    let summary = AlertSummary::from_event(&event);
    let template = json!({"text": "{% if %}"});
    assert!(render(&event, &summary, Some(&template)).is_err());
}

#[test]
fn resend_templates_replace_html_and_text() {
    let template = json!({"resend_template": {
        "id": "alert-template",
        "variables": {"RESOURCE": "{{ alert.title }}", "VALUE": "{{ payload.value }}", "LIMIT": 5, "NOTE": "<i>{{ payload.note }}</i>"}
    }});
    let mut payload = example_payload();
    payload["note"] = json!("<b>x</b>");
    let (_, email) = rendered(payload, Some(template));
    let from: Mailbox = "Alerts <alerts@example.com>".parse().unwrap();
    let to = vec!["oncall@example.com".parse().unwrap()];
    let body = resend_body(&from, &to, &email, None);
    assert_eq!(
        body,
        json!({
            "from": "Alerts <alerts@example.com>",
            "to": ["oncall@example.com"],
            "template": {"id": "alert-template", "variables": {
                "RESOURCE": "api_latency_p95", "VALUE": "1840", "LIMIT": 5,
                "NOTE": "<i>&lt;b&gt;x&lt;&#x2f;b&gt;</i>"
            }},
        })
    );
    let template = json!({"subject": "{{ alert.headline }}", "resend_template": {"id": "t"}});
    let (_, email) = rendered(example_payload(), Some(template));
    let body = resend_body(&from, &to, &email, None);
    assert_eq!(
        body["subject"],
        "[HIGH] api_latency_p95 is 1840 (threshold 1000)"
    );
    assert_eq!(body["template"], json!({"id": "t", "variables": {}}));
    assert!(body.get("html").is_none() && body.get("text").is_none());
}

#[test]
fn the_default_resend_body_has_every_part() {
    let (_, email) = rendered(example_payload(), None);
    let from: Mailbox = "Alerts <alerts@example.com>".parse().unwrap();
    let to = vec![
        "a@example.com".parse().unwrap(),
        "B <b@example.com>".parse().unwrap(),
    ];
    let body = resend_body(&from, &to, &email, None);
    assert_eq!(body["from"], "Alerts <alerts@example.com>");
    assert_eq!(body["to"], json!(["a@example.com", "B <b@example.com>"]));
    assert_eq!(body["subject"], email.subject);
    assert_eq!(body["html"], email.html);
    assert_eq!(body["text"], email.text);
}

fn error_body(status: u16, name: &str, message: &str) -> String {
    json!({"statusCode": status, "name": name, "message": message}).to_string()
}

#[test]
fn resend_answers_classify() {
    let wait = Some(Duration::from_secs(7));
    assert_eq!(
        classify_resend(200, Some(r#"{"id":"x"}"#), None),
        Verdict::Delivered
    );
    let retry = |status, name: &str, retry_after| {
        matches!(
            classify_resend(status, Some(&error_body(status, name, "m")), retry_after),
            Verdict::Retry { retry_after: got, .. } if got == retry_after
        )
    };
    assert!(retry(429, "rate_limit_exceeded", wait));
    assert!(retry(429, "daily_quota_exceeded", None));
    assert!(retry(500, "internal_server_error", None));
    assert!(retry(500, "application_error", None));
    assert!(retry(503, "", wait));
    assert!(retry(409, "concurrent_idempotent_requests", None));
    // A 5xx without a JSON body still retries.
    assert!(matches!(
        classify_resend(502, Some("<html>bad gateway"), None),
        Verdict::Retry { .. }
    ));

    let permanent = |status, name: &str, message: &str| match classify_resend(
        status,
        Some(&error_body(status, name, message)),
        None,
    ) {
        Verdict::Permanent {
            error,
            connection_status: None,
        } => error,
        other => panic!("{status} {name}: {other:?}"),
    };
    let error = permanent(
        409,
        "invalid_idempotent_request",
        "Same key, different payload",
    );
    assert!(error.contains("Same key, different payload"), "{error}");
    for (status, name) in [
        (401, "missing_api_key"),
        (401, "restricted_api_key"),
        (403, "invalid_api_key"),
    ] {
        let error = permanent(status, name, "API key is invalid");
        assert!(
            error.contains("refused the operator's API key (email.resend.api_key)"),
            "{error}"
        );
        assert!(error.contains(name), "{error}");
    }
    let error = permanent(
        403,
        "validation_error",
        "The example.com domain is not verified",
    );
    assert!(!error.contains("API key"), "{error}");
    assert!(
        error.contains("The example.com domain is not verified"),
        "{error}"
    );
    for (status, name) in [
        (400, "validation_error"),
        (400, "invalid_idempotency_key"),
        (404, "not_found"),
        (422, "missing_required_field"),
        (422, "invalid_parameter"),
    ] {
        let error = permanent(status, name, "Resend's own words");
        assert_eq!(
            error,
            format!("Resend answered {status} {name}: Resend's own words")
        );
    }
}

#[test]
fn smtp_failures_classify() {
    let timeout = Duration::from_secs(3);
    let verdict = classify_smtp(
        &SmtpFailure::Permanent {
            code: 550,
            text: "permanent error (550): mailbox unavailable".into(),
        },
        timeout,
    );
    assert!(
        matches!(&verdict, Verdict::Permanent { error, .. } if error.contains("mailbox unavailable")),
        "{verdict:?}"
    );
    let verdict = classify_smtp(
        &SmtpFailure::Transient {
            code: 451,
            text: "try later".into(),
        },
        timeout,
    );
    assert!(matches!(&verdict, Verdict::Retry { error, .. } if error.contains("try later")));
    let verdict = classify_smtp(&SmtpFailure::Timeout, timeout);
    assert!(matches!(&verdict, Verdict::Retry { error, .. } if error.contains("after 3s")));
    let verdict = classify_smtp(&SmtpFailure::Other("Connection refused".into()), timeout);
    assert!(
        matches!(&verdict, Verdict::Retry { error, .. } if error.contains("Connection refused"))
    );
}

#[test]
fn config_is_validated_against_the_instance() {
    let mut instance = instance();
    let config = json!({"provider": "resend", "from": "Alerts <alerts@example.com>"});
    let error = validate_config(&config, &instance).unwrap_err();
    assert!(error.contains("email.resend.api_key"), "{error}");
    let smtp = json!({"provider": "smtp", "from": "alerts@example.com"});
    let error = validate_config(&smtp, &instance).unwrap_err();
    assert!(error.contains("email.smtp.host"), "{error}");

    instance.email.resend.api_key = Some(Secret::new("re_test"));
    instance.email.smtp.host = Some("127.0.0.1".into());
    assert_eq!(validate_config(&config, &instance).unwrap(), config);
    assert_eq!(
        validate_config(
            &json!({"provider": "smtp", "from": " alerts@example.com "}),
            &instance
        )
        .unwrap(),
        json!({"provider": "smtp", "from": "alerts@example.com"})
    );

    for (bad, says) in [
        (json!("resend"), "expected"),
        (json!({"from": "a@example.com"}), "provider is required"),
        (
            json!({"provider": "sendgrid", "from": "a@example.com"}),
            "unknown",
        ),
        (json!({"provider": "resend"}), "from is required"),
        (
            json!({"provider": "resend", "from": "not an address"}),
            "not an email address",
        ),
        (
            json!({"provider": "resend", "from": "a@example.com", "api_key": "re_x"}),
            "unknown key",
        ),
    ] {
        let error = validate_config(&bad, &instance).unwrap_err();
        assert!(error.contains(says), "{bad}: {error}");
    }
}

#[test]
fn recipients_are_parsed_at_send_time() {
    let to = recipients(&json!({"to": ["a@example.com", "Bee <b@example.com>"]})).unwrap();
    assert_eq!(to.len(), 2);
    assert_eq!(to[1].to_string(), "Bee <b@example.com>");
    let error = recipients(&json!({"to": ["a@example.com", "b@@example.com"]})).unwrap_err();
    assert!(error.contains("target.to[1]"), "{error}");
    assert!(
        recipients(&json!({"to": []}))
            .unwrap_err()
            .contains("no recipients")
    );
    assert!(
        recipients(&Value::Null)
            .unwrap_err()
            .contains("no recipients")
    );
}

#[test]
fn a_mail_after_suppressed_deliveries_says_how_many() {
    let event = event(example_payload());
    let summary = AlertSummary {
        suppressed_before: 4,
        ..AlertSummary::from_event(&event)
    };
    let email = render(&event, &summary, None).unwrap();
    let note = "Suppressed: 4 more were suppressed by this rule since the last message";
    assert!(email.text.contains(note), "{}", email.text);
    assert!(
        email.html.contains("4 more were suppressed"),
        "{}",
        email.html
    );
    let quiet = render(&event, &AlertSummary::from_event(&event), None).unwrap();
    assert!(!quiet.text.contains("Suppressed"));
}

fn named(event: Event, name: &str) -> Event {
    Event {
        name: EventName::parse(name).unwrap(),
        ..event
    }
}

#[test]
fn later_mails_of_an_alert_repeat_the_subject_after_their_state() {
    let (_, triggered) = rendered(json!({"resource": "db"}), None);
    for (name, prefix) in [
        ("alert.acknowledged", "Acknowledged"),
        ("alert.resolved", "Resolved"),
    ] {
        let later = named(event(json!({"resource": "db"})), name);
        let email = render(&later, &AlertSummary::from_event(&later), None).unwrap();
        assert_eq!(email.subject, format!("{prefix}: {}", triggered.subject));
    }
    let template = json!({"subject": "{{ payload.resource }} down"});
    let resolved = named(event(json!({"resource": "db"})), "alert.resolved");
    let email = render(
        &resolved,
        &AlertSummary::from_event(&resolved),
        Some(&template),
    )
    .unwrap();
    assert_eq!(email.subject, "Resolved: db down");
}

#[test]
fn an_alerts_mails_thread_under_one_stable_id() {
    let from = parse_mailbox("Alerts <alerts@example.com>").unwrap();
    let thread = |name: &str, alert: &str, rule: u128| {
        Threading::of(
            &named(event(example_payload()), name),
            Some(alert),
            WorkspaceId(1),
            RuleId(rule),
            &from,
        )
    };
    let Some(Threading::Starts { message_id }) = thread("alert.triggered", "a", 1) else {
        panic!("a triggered alert starts a thread");
    };
    assert!(message_id.starts_with("<alert."), "{message_id}");
    assert!(message_id.ends_with("@example.com>"), "{message_id}");
    for name in ["alert.acknowledged", "alert.resolved"] {
        assert_eq!(
            thread(name, "a", 1),
            Some(Threading::Follows {
                root: message_id.clone()
            })
        );
    }
    assert_ne!(
        thread("alert.triggered", "b", 1),
        thread("alert.triggered", "a", 1)
    );
    assert_ne!(
        thread("alert.triggered", "a", 2),
        thread("alert.triggered", "a", 1)
    );
    assert_eq!(thread("deploy.finished", "a", 1), None);

    let resolved = Threading::Follows {
        root: message_id.clone(),
    };
    let (_, email) = rendered(example_payload(), None);
    let to = [parse_mailbox("oncall@example.com").unwrap()];
    let body = resend_body(&from, &to, &email, Some(&resolved));
    assert_eq!(
        body["headers"],
        json!({"In-Reply-To": message_id, "References": message_id})
    );
    assert!(
        resend_body(&from, &to, &email, None)
            .get("headers")
            .is_none()
    );
}
