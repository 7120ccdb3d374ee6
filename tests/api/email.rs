//! Email connections end to end: through a fake Resend API (recording every
//! request) and through a real SMTP server (aiosmtpd, `tests/smtp_sink.py`).

use crate::fake_resend::{API_KEY, FakeResend, ResendReply};
use crate::helpers::{TestApp, TestWorkspace};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;
use switchyard::config::{Config, SmtpTls};
use switchyard::secret::Secret;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const SUBJECT: &str = "[HIGH] api_latency_p95 is 1840 (threshold 1000)";

fn status_is(expected: &'static str) -> impl Fn(&Value) -> bool {
    move |delivery| delivery["status"] == expected
}

/// Quick retries, the Resend base at the fake.
fn with_resend(config: &mut Config, fake: &FakeResend, api_key: &str) {
    config.delivery.retry_schedule = vec![0, 0];
    config.delivery.timeout_seconds = 5;
    config.email.resend.api_base = fake.api_base.clone();
    config.email.resend.api_key = Some(Secret::new(api_key));
}

async fn create_email_connection(app: &TestApp, ws: &TestWorkspace, provider: &str) -> String {
    let body = json!({
        "type": "email",
        "name": "mail",
        "config": {"provider": provider, "from": "Alerts <alerts@example.com>"},
    });
    let (status, answer) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["type"], "email");
    answer["id"].as_str().unwrap().to_string()
}

/// A workspace whose `alert.*` events are mailed through `provider` to
/// oncall@example.com; with the connection's id.
async fn workspace_mailing_oncall(app: &TestApp, provider: &str) -> (TestWorkspace, String) {
    let ws = app.create_workspace("acme").await;
    let connection = create_email_connection(app, &ws, provider).await;
    app.create_rule(
        &ws,
        &connection,
        json!({"target": {"to": ["oncall@example.com"]}}),
    )
    .await;
    (ws, connection)
}

/// Emits the example event; its id and its one delivery's.
async fn emit_one(app: &TestApp, ws: &TestWorkspace) -> (String, String) {
    let event_id = app.emit_example(&ws.publishable_key).await;
    let delivery_id = only_delivery(app, ws, &event_id).await;
    (event_id, delivery_id)
}

async fn only_delivery(app: &TestApp, ws: &TestWorkspace, event_id: &str) -> String {
    let deliveries = app.deliveries_of(ws, event_id).await;
    assert_eq!(deliveries.len(), 1, "{deliveries:?}");
    deliveries[0].clone()
}

#[tokio::test]
async fn resend_gets_the_alert_with_the_delivery_id_as_idempotency_key() {
    let mut fake = FakeResend::start().await;
    fake.script([ResendReply::error(
        500,
        "application_error",
        "An unexpected error occurred.",
    )]);
    let app = TestApp::spawn_with(|config| with_resend(config, &fake, API_KEY)).await;
    let (ws, _) = workspace_mailing_oncall(&app, "resend").await;

    let (event_id, delivery_id) = emit_one(&app, &ws).await;

    let first = fake.next_request().await;
    assert_eq!(first.path, "/emails");
    assert_eq!(first.header("authorization"), format!("Bearer {API_KEY}"));
    assert_eq!(first.header("content-type"), "application/json");
    assert!(
        first.header("user-agent").starts_with("switchyard/"),
        "{:?}",
        first.headers
    );
    assert_eq!(first.header("idempotency-key"), delivery_id);
    let body = &first.body;
    assert_eq!(body["from"], "Alerts <alerts@example.com>");
    assert_eq!(body["to"], json!(["oncall@example.com"]));
    assert_eq!(body["subject"], SUBJECT);
    let text = body["text"].as_str().unwrap();
    for line in [
        SUBJECT,
        "Value: 1840",
        "Threshold: 1000",
        "Account: acc_casterly",
        "Time: 2026-04-17T16:02:00Z",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    assert!(text.contains(&format!("Event: {event_id}")), "{text}");
    let html = body["html"].as_str().unwrap();
    assert!(html.contains("max-width:600px"), "{html}");
    assert!(
        html.contains("api_latency_p95 is 1840 (threshold 1000)"),
        "{html}"
    );
    assert!(body.get("template").is_none());

    // The 500 is retried with the same key and the same mail.
    let retry = fake.next_request().await;
    assert_eq!(retry.header("idempotency-key"), delivery_id);
    assert_eq!(retry.body, first.body);
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("succeeded"))
        .await;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{delivery}");
    assert_eq!(attempts[0]["status_code"], 500);
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains("application_error"), "{error}");
    assert_eq!(attempts[1]["status_code"], 200);
    assert!(
        attempts[1]["response"].as_str().unwrap().contains("\"id\""),
        "{delivery}"
    );

    // Another delivery, another key.
    let second_event = app.emit_example(&ws.publishable_key).await;
    let second_delivery = only_delivery(&app, &ws, &second_event).await;
    let request = fake.next_request().await;
    assert_eq!(request.header("idempotency-key"), second_delivery);
    assert_ne!(second_delivery, delivery_id);
    app.wait_for_delivery(&ws, &second_delivery, status_is("succeeded"))
        .await;
}

/// The example alert in another state of its life.
async fn emit_alert(app: &TestApp, ws: &TestWorkspace, name: &str) {
    let mut event = crate::helpers::example_event();
    event["event"] = json!(name);
    let (status, body) = app
        .send(app.post("/v1/events", &ws.publishable_key).json(&event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

const LIFECYCLE: [&str; 3] = ["alert.triggered", "alert.acknowledged", "alert.resolved"];

#[tokio::test]
async fn an_alerts_mails_thread_through_resend() {
    let mut fake = FakeResend::start().await;
    let app = TestApp::spawn_with(|config| with_resend(config, &fake, API_KEY)).await;
    let (ws, _) = workspace_mailing_oncall(&app, "resend").await;

    let mut mails = Vec::new();
    for name in LIFECYCLE {
        emit_alert(&app, &ws, name).await;
        mails.push(fake.next_request().await.body);
    }
    let root = mails[0]["headers"]["Message-ID"].as_str().unwrap();
    assert!(root.starts_with("<alert."), "{}", mails[0]);
    assert_eq!(mails[0]["subject"], SUBJECT);
    for (mail, state) in mails[1..].iter().zip(["Acknowledged", "Resolved"]) {
        assert_eq!(mail["subject"], format!("{state}: {SUBJECT}"));
        assert_eq!(
            mail["headers"],
            json!({"In-Reply-To": root, "References": root})
        );
    }

    // The alert firing again keeps its thread id.
    emit_alert(&app, &ws, "alert.triggered").await;
    assert_eq!(
        fake.next_request().await.body["headers"]["Message-ID"],
        root
    );
}

#[tokio::test]
async fn an_alerts_mails_thread_through_smtp() {
    let mut sink = SmtpSink::start().await;
    let port = sink.port;
    let app = TestApp::spawn_with(|config| {
        config.delivery.timeout_seconds = 5;
        config.email.smtp.host = Some("127.0.0.1".into());
        config.email.smtp.port = port;
        config.email.smtp.tls = SmtpTls::None;
    })
    .await;
    let (ws, _) = workspace_mailing_oncall(&app, "smtp").await;

    let mut mails = Vec::new();
    for name in LIFECYCLE {
        emit_alert(&app, &ws, name).await;
        mails.push(sink.next_message().await);
    }
    let root = mails[0]["message_id"].as_str().unwrap();
    assert!(root.starts_with("<alert."), "{}", mails[0]);
    assert_eq!(mails[0]["in_reply_to"], "");
    for (mail, state) in mails[1..].iter().zip(["Acknowledged", "Resolved"]) {
        assert_eq!(mail["subject"], format!("{state}: {SUBJECT}"));
        assert_eq!(mail["in_reply_to"], root);
        assert_eq!(mail["references"], root);
        assert_ne!(mail["message_id"], root);
    }
}

#[tokio::test]
async fn resend_validation_errors_are_permanent_and_rate_limits_wait() {
    let mut fake = FakeResend::start().await;
    let message =
        "Invalid `to` field. The email address needs to follow the `email@example.com` format.";
    fake.script([ResendReply::error(422, "validation_error", message)]);
    let app = TestApp::spawn_with(|config| with_resend(config, &fake, API_KEY)).await;
    let (ws, _) = workspace_mailing_oncall(&app, "resend").await;

    let (_, delivery_id) = emit_one(&app, &ws).await;
    fake.next_request().await;
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!(attempts[0]["status_code"], 422);
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains(message), "{error}");
    assert!(
        fake.received().is_empty(),
        "a permanent error is not retried"
    );

    // A 429 waits for its Retry-After (the schedule alone says 0 s).
    fake.script([
        ResendReply::error(429, "rate_limit_exceeded", "Too many requests.")
            .with_header("retry-after", "1"),
    ]);
    let (_, delivery_id) = emit_one(&app, &ws).await;
    let limited = fake.next_request().await;
    let retried = fake.next_request().await;
    assert_eq!(retried.header("idempotency-key"), delivery_id);
    assert!(
        retried.at.duration_since(limited.at) >= Duration::from_millis(900),
        "retried after {:?}",
        retried.at.duration_since(limited.at)
    );
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("succeeded"))
        .await;
    assert_eq!(delivery["attempts"][0]["status_code"], 429);
}

#[tokio::test]
async fn a_refused_resend_key_is_reported_as_the_operators() {
    let mut fake = FakeResend::start().await;
    let app = TestApp::spawn_with(|config| with_resend(config, &fake, "re_wrong_key")).await;
    let (ws, _) = workspace_mailing_oncall(&app, "resend").await;
    let (_, delivery_id) = emit_one(&app, &ws).await;
    assert_eq!(
        fake.next_request().await.header("authorization"),
        "Bearer re_wrong_key"
    );
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    let error = delivery["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("refused the operator's API key"), "{error}");
    assert!(error.contains("email.resend.api_key"), "{error}");
    assert!(!error.contains("re_wrong_key"), "{error}");
}

#[tokio::test]
async fn email_connections_need_a_configured_provider_and_a_sender() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    let create = |config: Value| {
        app.post("/v1/connections", &ws.secret_key)
            .json(&json!({"type": "email", "name": "mail", "config": config}))
    };
    for (config, says) in [
        (
            json!({"provider": "resend", "from": "a@example.com"}),
            "email.resend.api_key",
        ),
        (
            json!({"provider": "smtp", "from": "a@example.com"}),
            "email.smtp.host",
        ),
        (
            json!({"provider": "carrier-pigeon", "from": "a@example.com"}),
            "resend",
        ),
        (json!({"provider": "resend", "from": "nobody"}), "from"),
    ] {
        let (status, answer) = app.send(create(config.clone())).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{config}: {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{config}: {message}");
    }
}

#[tokio::test]
async fn the_connection_test_sends_a_real_mail_through_resend() {
    let mut fake = FakeResend::start().await;
    let app = TestApp::spawn_with(|config| with_resend(config, &fake, API_KEY)).await;
    let ws = app.create_workspace("acme").await;
    let connection = create_email_connection(&app, &ws, "resend").await;
    let path = format!("/v1/connections/{connection}/test");

    let (status, result) = app
        .send(
            app.post(&path, &ws.secret_key)
                .json(&json!({"target": {"to": ["a@example.com"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(result["status_code"], 200);
    let request = fake.next_request().await;
    assert_eq!(request.body["to"], json!(["a@example.com"]));
    assert!(
        request.header("idempotency-key").starts_with("dlv_"),
        "{:?}",
        request.headers
    );
    let text = request.body["text"].as_str().unwrap();
    assert!(text.contains("this connection works"), "{text}");

    // Without recipients nothing is sent, and the answer says why.
    let (status, result) = app.send(app.post(&path, &ws.secret_key)).await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["ok"], false);
    assert!(
        result["error"].as_str().unwrap().contains("no recipients"),
        "{result}"
    );
    assert!(fake.received().is_empty());
}

/// `tests/smtp_sink.py`: a real SMTP server (aiosmtpd) on a free loopback
/// port, saving each message as JSON and announcing it on stdout.
struct SmtpSink {
    port: u16,
    lines: Lines<BufReader<ChildStdout>>,
    // Held: the sink exits when its stdin closes, and is killed on drop.
    _child: Child,
    _dir: TempDir,
}

impl SmtpSink {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run python3 ({error}): the SMTP tests need Python 3 with the aiosmtpd \
                     package (scripts/test installs it: python3 -m pip install aiosmtpd)"
                )
            });
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the SMTP sink did not start within 20 s");
        let port = match ready
            .unwrap()
            .as_deref()
            .and_then(|line| line.strip_prefix("ready "))
        {
            Some(port) => port.parse().unwrap(),
            None => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr).await;
                }
                panic!(
                    "the SMTP sink (tests/smtp_sink.py) did not start; it needs Python 3 with \
                     aiosmtpd (python3 -m pip install aiosmtpd, as scripts/test does): {stderr}"
                );
            }
        };
        Self {
            port,
            lines,
            _child: child,
            _dir: dir,
        }
    }

    /// The next saved message (waits at most 20 s).
    async fn next_message(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(20), self.lines.next_line())
            .await
            .expect("no message reached the SMTP sink within 20 s")
            .unwrap()
            .expect("the SMTP sink exited");
        let path = line
            .strip_prefix("saved ")
            .unwrap_or_else(|| panic!("unexpected: {line}"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }
}

fn text_of(message: &Value, part: &str) -> String {
    message[part]
        .as_str()
        .unwrap_or_else(|| panic!("no {part} part: {message}"))
        .replace("\r\n", "\n")
}

#[tokio::test]
async fn smtp_delivers_a_multipart_mail_to_a_real_server() {
    let mut sink = SmtpSink::start().await;
    let port = sink.port;
    let app = TestApp::spawn_with(|config| {
        config.delivery.retry_schedule = vec![0, 0];
        config.delivery.timeout_seconds = 5;
        config.email.smtp.host = Some("127.0.0.1".into());
        config.email.smtp.port = port;
        config.email.smtp.tls = SmtpTls::None;
    })
    .await;
    let (ws, connection) = workspace_mailing_oncall(&app, "smtp").await;

    let (event_id, delivery_id) = emit_one(&app, &ws).await;
    let message = sink.next_message().await;
    assert_eq!(message["mail_from"], "alerts@example.com");
    assert_eq!(message["rcpt_tos"], json!(["oncall@example.com"]));
    assert_eq!(message["from"], "Alerts <alerts@example.com>");
    assert_eq!(message["to"], "oncall@example.com");
    assert_eq!(message["subject"], SUBJECT);
    assert_eq!(message["content_type"], "multipart/alternative");
    // An alert's first mail: its id is the alert's thread id, the same on
    // every attempt.
    let message_id = message["message_id"].as_str().unwrap();
    assert!(message_id.starts_with("<alert."), "{message_id}");
    assert!(message_id.ends_with("@example.com>"), "{message_id}");
    let text = text_of(&message, "text");
    for line in [
        SUBJECT,
        "Value: 1840",
        "Threshold: 1000",
        "Account: acc_casterly",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    assert!(text.contains(&format!("Event: {event_id}")), "{text}");
    let html = text_of(&message, "html");
    assert!(html.contains("max-width:600px"), "{html}");
    assert!(
        html.contains("api_latency_p95 is 1840 (threshold 1000)"),
        "{html}"
    );
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("succeeded"))
        .await;
    assert_eq!(delivery["attempts"][0]["status_code"], 250, "{delivery}");

    // The connection test sends a real mail too.
    let (status, result) = app
        .send(
            app.post(
                &format!("/v1/connections/{connection}/test"),
                &ws.secret_key,
            )
            .json(&json!({"target": {"to": ["a@example.com"]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    let message = sink.next_message().await;
    assert_eq!(message["rcpt_tos"], json!(["a@example.com"]));
    assert!(text_of(&message, "text").contains("this connection works"));
}

#[tokio::test]
async fn smtp_rejections_are_permanent_and_deferrals_retried() {
    let sink = SmtpSink::start().await;
    let port = sink.port;
    let app = TestApp::spawn_with(|config| {
        config.delivery.retry_schedule = vec![0, 0];
        config.delivery.timeout_seconds = 5;
        config.email.smtp.host = Some("127.0.0.1".into());
        config.email.smtp.port = port;
        config.email.smtp.tls = SmtpTls::None;
    })
    .await;
    let ws = app.create_workspace("acme").await;
    let connection = create_email_connection(&app, &ws, "smtp").await;
    let rejected = app
        .create_rule(
            &ws,
            &connection,
            json!({"target": {"to": ["reject@example.com"]}}),
        )
        .await;
    let (_, delivery_id) = emit_one(&app, &ws).await;
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, status_is("dead"))
        .await;
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivery}");
    assert_eq!(attempts[0]["status_code"], 550);
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(error.contains("mailbox unavailable"), "{error}");

    let (status, _) = app
        .send(app.delete(&format!("/v1/rules/{rejected}"), &ws.secret_key))
        .await;
    assert!(status.is_success(), "{status}");
    app.create_rule(
        &ws,
        &connection,
        json!({"target": {"to": ["tempfail@example.com"]}}),
    )
    .await;
    let (_, delivery_id) = emit_one(&app, &ws).await;
    let delivery = app
        .wait_for_delivery(&ws, &delivery_id, |delivery| {
            delivery["attempts"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
                && delivery["status"] == "dead"
        })
        .await;
    for attempt in delivery["attempts"].as_array().unwrap() {
        assert_eq!(attempt["status_code"], 451, "{delivery}");
        let error = attempt["error"].as_str().unwrap();
        assert!(error.contains("try again later"), "{error}");
    }
}
