//! The embedded UI in a real browser: headless Chromium driven by
//! Playwright (`tests/browser/embed.test.mjs`, run with `node --test`)
//! against the real server, the fake Slack and a webhook receiver.
//!
//! This side sets the stage (workspaces, sessions, a host page that frames
//! the UI, a Slack connection that needs reconnecting) and passes it to the
//! browser test through the environment; afterwards it checks that what the
//! browser did reached the receiver and Slack. `scripts/test` installs
//! Chromium, Node and `playwright-core`; without them this test fails.

use crate::fake_pagerduty::{self, FakePagerDuty};
use crate::fake_resend::{self, FakeResend};
use crate::fake_slack::{self, FakeSlack};
use crate::helpers::{TestApp, TestWorkspace};
use crate::receiver::{Receiver, Reply};
use axum::extract::Query;
use axum::response::Html;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

const BROWSER_TEST: &str = "tests/browser/embed.test.mjs";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

/// The host product's settings page: it frames whatever `?src=` names.
const HOST_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Host product · Settings</title>
<style>
  body { margin: 0; font: 14px system-ui, sans-serif; background: #fafafa; }
  header { height: 40px; display: flex; align-items: center; padding: 0 16px; background: #20242c; color: #fff; }
  iframe { display: block; width: 100%; height: 1100px; border: 0; }
</style>
</head>
<body>
<header>Host product · Settings › Alerts</header>
<iframe id="switchyard" title="Alert routing" allow="clipboard-write"></iframe>
<script>
  document.getElementById("switchyard").src = new URLSearchParams(location.search).get("src");
</script>
</body>
</html>
"#;

/// A host page that mounts the UI with Switchyard's helper (`/embed/host.js`):
/// `?switchyard=` names the server, `?ttl=` the session length, `?theme=` the
/// initial theme. It records every message it sees (type and origin) in
/// `window.seen` and each renewal in `window.renewals`.
const HELPER_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Host product · helper</title></head>
<body>
<div id="mount"></div>
<script>
  const params = new URLSearchParams(location.search);
  const ttl = params.get("ttl") || "1800";
  const session = () => fetch(`/session?ttl=${ttl}`).then((answer) => answer.json());
  window.seen = [];
  window.renewals = 0;
  window.addEventListener("message", (event) => {
    if (event.data && typeof event.data.type === "string") window.seen.push({ type: event.data.type, origin: event.origin, data: event.data });
  });
  const script = document.createElement("script");
  script.src = `${params.get("switchyard")}/embed/host.js`;
  script.onload = async () => {
    const { url } = await session();
    window.mounted = Switchyard.mount(document.getElementById("mount"), {
      url,
      theme: params.get("theme") || "auto",
      onTokenNeeded: async () => {
        window.renewals += 1;
        return (await session()).token;
      },
    });
  };
  document.head.append(script);
</script>
</body>
</html>
"#;

/// A page of another origin that the helper page frames beside the UI: it
/// posts host messages to its sibling, which must ignore them.
const FOREIGN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not the host</title></head>
<body>
<script>
  parent.frames[0].postMessage({ type: "switchyard:init", theme: "light" }, "*");
  parent.frames[0].postMessage({ type: "switchyard:navigate", route: "overview" }, "*");
</script>
</body>
</html>
"#;

#[tokio::test]
async fn the_embedded_ui_works_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = check_prerequisites(root).await;

    let slack = FakeSlack::start().await;
    let mut resend = FakeResend::start().await;
    let api_base = slack.api_base.clone();
    let oauth_base = slack.oauth_base.clone();
    let resend_base = resend.api_base.clone();
    let mut pagerduty = FakePagerDuty::start().await;
    let events_url = pagerduty.events_url.clone();
    let app = TestApp::spawn_with(move |config| {
        config.delivery.allow_private_networks = true;
        config.delivery.retry_schedule = vec![0, 0];
        config.delivery.timeout_seconds = 2;
        config.slack.api_base = api_base;
        config.slack.oauth_base = oauth_base;
        config.slack.client_id = Some(fake_slack::CLIENT_ID.into());
        config.slack.client_secret =
            Some(switchyard::secret::Secret::new(fake_slack::CLIENT_SECRET));
        config.email.resend.api_base = resend_base;
        config.email.resend.api_key = Some(switchyard::secret::Secret::new(fake_resend::API_KEY));
        config.pagerduty.events_url = events_url;
    })
    .await;
    // An instance with neither a Slack app nor an email provider: the UI
    // offers webhooks only and says what the operator must configure. Its
    // deliveries retry an hour later, so one stays `retrying` while the
    // browser looks at it.
    let bare = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.retry_schedule = vec![3600];
    })
    .await;
    let bare_ws = bare.create_workspace("No Slack Inc").await;
    let healthy = Receiver::start(Reply::Status(200)).await;
    let failing = Receiver::start(Reply::Status(500)).await;
    stage_deliveries(&bare, &bare_ws, &healthy.url, &failing.url).await;
    let mut receiver = Receiver::start(Reply::Status(200)).await;

    // A: the tenant whose UI the browser drives. B: someone else's objects.
    let a = app.create_workspace("Acme Corp").await;
    let b = app.create_workspace("Other Tenant").await;
    let (b_connection, _) = app.create_webhook(&b, &receiver.url).await;
    let b_rule = app.create_rule(&b, &b_connection, json!({})).await;
    // C: a tenant whose Slack app was uninstalled, so it needs reconnecting.
    let c = app.create_workspace("Lannister Ops").await;
    make_slack_need_reauth(&app, &slack, &c).await;

    let host_url = serve_host_page(&app, &a).await;
    // A launch URL is single use and several scenarios open A's UI, so A's
    // frame loads the host's own launch route, which mints a fresh one each
    // time (as a host product does on every page view).
    let embed_a = format!("{host_url}/launch");
    let embed_c = mint(&app, &c, json!({"allowed_origins": [host_url.clone()]})).await;
    let expired = mint_expired(&app, &a).await;
    // Launch tokens are single use: one per scenario.
    let embed_no_slack = mint(
        &bare,
        &bare_ws,
        json!({"allowed_origins": [host_url.clone()]}),
    )
    .await;
    let embed_deliveries = mint(
        &bare,
        &bare_ws,
        json!({"allowed_origins": [host_url.clone()]}),
    )
    .await;

    let screenshots = root.join("target/screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let env: Vec<(&str, String)> = vec![
        ("SWITCHYARD_URL", app.url.clone()),
        ("HOST_URL", host_url),
        ("EMBED_URL_A", embed_a),
        ("EMBED_URL_DELIVERIES", embed_deliveries),
        ("EMBED_URL_REAUTH", embed_c),
        ("EMBED_URL_EXPIRED", expired),
        ("EMBED_URL_NO_SLACK", embed_no_slack),
        ("WORKSPACE_A_SECRET_KEY", a.secret_key.clone()),
        ("WORKSPACE_B_RULE_ID", b_rule.clone()),
        ("WORKSPACE_B_CONNECTION_ID", b_connection.clone()),
        ("RECEIVER_URL", receiver.url.clone()),
        ("SLACK_TEAM_NAME", fake_slack::TEAM_NAME.to_string()),
        (
            "PAGERDUTY_ROUTING_KEY",
            fake_pagerduty::ROUTING_KEY.to_string(),
        ),
        ("SCREENSHOT_DIR", screenshots.display().to_string()),
        ("CHROMIUM", chromium.display().to_string()),
    ];
    run_browser_test(root, BROWSER_TEST, &env).await;

    // What the browser did really happened: the test event reached the
    // webhook, signed, and the Slack channel it picked.
    let deadline = Instant::now() + Duration::from_secs(15);
    let webhook = loop {
        let request = receiver.next().await;
        if request.json()["type"] == "alert.triggered" {
            break request;
        }
        assert!(Instant::now() < deadline, "no alert.triggered webhook");
    };
    assert!(webhook.header("webhook-signature").starts_with("v1,"));
    assert_eq!(webhook.json()["data"]["severity"], "critical");
    let channels: Vec<Option<String>> = slack
        .post_attempts()
        .into_iter()
        .filter(|attempt| attempt.error.is_none())
        .map(|attempt| attempt.channel)
        .collect();
    assert!(
        channels
            .iter()
            .any(|channel| channel.as_deref() == Some("C0000001")),
        "no message to #general: {channels:?}"
    );
    // The email test message went out through Resend.
    let emails = resend.received();
    assert!(
        emails
            .iter()
            .any(|email| email.body["to"].to_string().contains("me@acme.test")),
        "no test email: {:?}",
        emails.iter().map(|email| &email.body).collect::<Vec<_>>()
    );
    // The PagerDuty test triggered with the key the browser pasted.
    let pages = pagerduty.received();
    assert!(
        pages.iter().any(
            |page| page.body["routing_key"] == fake_pagerduty::ROUTING_KEY
                && page.body["event_action"] == "trigger"
        ),
        "no PagerDuty test trigger: {:?}",
        pages.iter().map(|page| &page.body).collect::<Vec<_>>()
    );
    // B's objects are untouched by A's attempts.
    let (status, rule) = app
        .send(app.get(&format!("/v1/rules/{b_rule}"), &b.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rule["name"], "rule");
    // C's Slack is active again after "Reconnect Slack".
    let (_, list) = app.send(app.get("/v1/connections", &c.secret_key)).await;
    assert_eq!(list["data"][0]["status"], "active", "{list}");
}

/// Chromium, Node and `playwright-core` must be installed: fail (never skip)
/// with what to do when they are not.
pub(crate) async fn check_prerequisites(root: &Path) -> PathBuf {
    let help = "run scripts/test, which installs them (apt-get install chromium nodejs npm; \
                npm ci --prefix tests/browser)";
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| DEFAULT_CHROMIUM.to_string()));
    assert!(
        chromium.exists(),
        "the browser test needs Chromium at {}: {help}",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output().await;
    assert!(
        node.is_ok_and(|output| output.status.success()),
        "the browser test needs node on PATH: {help}"
    );
    let playwright = root.join("tests/browser/node_modules/playwright-core");
    assert!(
        playwright.join("package.json").exists(),
        "the browser test needs {}: {help}",
        playwright.display()
    );
    chromium
}

/// Serves [`HOST_PAGE`] on its own origin; `GET /launch`, which mints a new
/// launch URL for `ws` (allowed to be framed by this origin) and redirects
/// to it; [`HELPER_PAGE`] at `/helper` with its backend call
/// `GET /session?ttl=` (the minted session as JSON); and [`FOREIGN_PAGE`] at
/// `/foreign`, meant to be opened through `localhost`, another origin.
/// Returns the origin.
async fn serve_host_page(app: &TestApp, ws: &TestWorkspace) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let sessions = format!("{}/v1/embed/sessions", app.url);
    let secret_key = ws.secret_key.clone();
    let body = json!({"allowed_origins": [origin.clone()]});
    let launch = move || {
        let (sessions, secret_key, body) = (sessions.clone(), secret_key.clone(), body.clone());
        async move {
            let answer: Value = reqwest::Client::new()
                .post(sessions)
                .bearer_auth(secret_key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            axum::response::Redirect::to(answer["url"].as_str().unwrap())
        }
    };
    let sessions = format!("{}/v1/embed/sessions", app.url);
    let secret_key = ws.secret_key.clone();
    let allowed = origin.clone();
    let session = move |Query(query): Query<SessionQuery>| {
        let (sessions, secret_key) = (sessions.clone(), secret_key.clone());
        let body = json!({"allowed_origins": [allowed.clone()], "ttl_seconds": query.ttl});
        async move {
            let answer: Value = reqwest::Client::new()
                .post(sessions)
                .bearer_auth(secret_key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            axum::Json(answer)
        }
    };
    let router = axum::Router::new()
        .route("/", axum::routing::get(|| async { Html(HOST_PAGE) }))
        .route("/launch", axum::routing::get(launch))
        .route(
            "/helper",
            axum::routing::get(|| async { Html(HELPER_PAGE) }),
        )
        .route("/session", axum::routing::get(session))
        .route(
            "/foreign",
            axum::routing::get(|| async { Html(FOREIGN_PAGE) }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    origin
}

#[derive(serde::Deserialize)]
struct SessionQuery {
    ttl: u64,
}

async fn mint(app: &TestApp, ws: &TestWorkspace, body: Value) -> String {
    let (status, answer) = app
        .send(app.post("/v1/embed/sessions", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["url"].as_str().unwrap().to_string()
}

/// A launch URL that has expired: minted for one second, then polled until
/// the page answers 401.
async fn mint_expired(app: &TestApp, ws: &TestWorkspace) -> String {
    let url = mint(app, ws, json!({"ttl_seconds": 1})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.http.get(&url).send().await.unwrap().status();
        if status == StatusCode::UNAUTHORIZED {
            return url;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            Instant::now() < deadline,
            "a one-second session still works after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two webhooks, one answering 200 and one 500, each with a rule, and two
/// alerts: two deliveries succeed and two wait an hour to retry.
async fn stage_deliveries(app: &TestApp, ws: &TestWorkspace, ok_url: &str, failing_url: &str) {
    for (name, url) in [("Ops endpoint", ok_url), ("Flaky endpoint", failing_url)] {
        let body = json!({"type": "webhook", "name": name, "config": {"url": url}});
        let (status, connection) = app
            .send(app.post("/v1/connections", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{connection}");
        let connection_id = connection["id"].as_str().unwrap();
        app.create_rule(
            ws,
            connection_id,
            json!({"name": format!("Alerts to {name}")}),
        )
        .await;
    }
    let latency = app.emit_example(&ws.secret_key).await;
    let errors = json!({"event": "alert.triggered", "resource": "alert", "resource_id": "alrt_errors_7",
        "payload": {"severity": "critical", "resource": "error_rate", "value": 0.12, "threshold": 0.05}});
    let (status, answer) = app
        .send(app.post("/v1/events", &ws.secret_key).json(&errors))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let errors = answer["id"].as_str().unwrap().to_string();
    for event in [latency, errors] {
        for delivery in app.deliveries_of(ws, &event).await {
            let settled = app
                .wait_for_delivery(ws, &delivery, |d| {
                    d["status"] == "succeeded" || d["status"] == "retrying"
                })
                .await;
            assert_ne!(settled["status"], "dead", "{settled}");
        }
    }
}

/// A Slack connection (bot token) whose token Slack then revoked: the next
/// delivery marks it `needs_reauth`.
async fn make_slack_need_reauth(app: &TestApp, slack: &FakeSlack, ws: &TestWorkspace) {
    let token = slack.issue_bot_token();
    let body = json!({"type": "slack", "name": "Slack", "config": {"bot_token": token}});
    let (status, connection) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let connection_id = connection["id"].as_str().unwrap();
    app.create_rule(
        ws,
        connection_id,
        json!({"target": {"channel": "C0000002"}}),
    )
    .await;
    slack.revoke(&token);
    let event = app.emit_example(&ws.secret_key).await;
    let delivery = app.deliveries_of(ws, &event).await.remove(0);
    app.wait_for_delivery(ws, &delivery, |d| d["status"] == "dead")
        .await;
    let (_, connection) = app
        .send(app.get(&format!("/v1/connections/{connection_id}"), &ws.secret_key))
        .await;
    assert_eq!(connection["status"], "needs_reauth", "{connection}");
}

/// Runs `node --test` on a browser test, streaming its output, and fails
/// with its tail when it fails.
pub(crate) async fn run_browser_test(root: &Path, test: &str, env: &[(&str, String)]) {
    let mut command = Command::new("node");
    command
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg(test)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("cannot start node");
    let stdout = tokio::spawn(stream(child.stdout.take().unwrap()));
    let stderr = tokio::spawn(stream(child.stderr.take().unwrap()));
    let status = tokio::time::timeout(NODE_TIMEOUT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the browser test ran past {NODE_TIMEOUT:?}"))
        .unwrap();
    let mut output = stdout.await.unwrap();
    output.extend(stderr.await.unwrap());
    let tail = output[output.len().saturating_sub(80)..].join("\n");
    assert!(
        status.success(),
        "the browser test failed ({status}):\n{tail}"
    );
}

/// Prints each line as it comes (shown with `--nocapture` or on failure)
/// and returns them all.
async fn stream(pipe: impl AsyncRead + Unpin) -> Vec<String> {
    let mut lines = BufReader::new(pipe).lines();
    let mut seen = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        println!("[browser] {line}");
        seen.push(line);
    }
    seen
}
