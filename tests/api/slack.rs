//! Slack end to end against the fake Slack Web API: the OAuth install,
//! channels, messages, rate limits, revoked and expiring tokens.

use crate::fake_slack::{self, FakeSlack};
use crate::helpers::{TestApp, TestWorkspace, example_event};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

async fn app_with(slack: &FakeSlack) -> TestApp {
    let api_base = slack.api_base.clone();
    let oauth_base = slack.oauth_base.clone();
    TestApp::spawn_with(move |config| {
        config.slack.api_base = api_base;
        config.slack.oauth_base = oauth_base;
        config.slack.client_id = Some(fake_slack::CLIENT_ID.into());
        config.slack.client_secret =
            Some(switchyard::secret::Secret::new(fake_slack::CLIENT_SECRET));
        config.delivery.retry_schedule = vec![0, 0];
    })
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs the install like a browser: authorize URL → Slack's page → the
/// callback. Returns the callback's answer.
pub(crate) async fn install(app: &TestApp, ws: &TestWorkspace, body: Value) -> reqwest::Response {
    let (status, answer) = app
        .send(
            app.post("/v1/connections/slack/authorize", &ws.secret_key)
                .json(&body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let browser = no_redirects();
    let slack_page = browser
        .get(answer["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(slack_page.status(), StatusCode::FOUND);
    let callback = slack_page.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    browser.get(callback).send().await.unwrap()
}

pub(crate) async fn slack_connections(app: &TestApp, ws: &TestWorkspace) -> Vec<Value> {
    let (_, list) = app.send(app.get("/v1/connections", &ws.secret_key)).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "slack")
        .cloned()
        .collect()
}

#[tokio::test]
async fn the_install_flow_creates_the_connection_without_exposing_tokens() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;

    let (_, answer) = app
        .send(
            app.post("/v1/connections/slack/authorize", &ws.secret_key)
                .json(&json!({})),
        )
        .await;
    let url = reqwest::Url::parse(answer["url"].as_str().unwrap()).unwrap();
    assert_eq!(
        format!("{}{}", url.origin().ascii_serialization(), url.path()),
        format!("{}/oauth/v2/authorize", slack.oauth_base)
    );
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(query["client_id"], fake_slack::CLIENT_ID);
    assert_eq!(
        query["scope"],
        "chat:write,chat:write.public,channels:read,groups:read"
    );
    assert_eq!(
        query["redirect_uri"],
        format!("{}/oauth/slack/callback", app.url)
    );
    assert!(query["state"].len() > 40);

    let page = install(&app, &ws, json!({})).await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Slack connected") && html.contains(fake_slack::TEAM_NAME),
        "{html}"
    );

    let connections = slack_connections(&app, &ws).await;
    assert_eq!(connections.len(), 1);
    let connection = &connections[0];
    assert_eq!(connection["status"], "active");
    assert_eq!(connection["config"]["team_id"], fake_slack::TEAM_ID);
    assert_eq!(connection["config"]["team_name"], fake_slack::TEAM_NAME);
    let token = slack.last_access_token().unwrap();
    assert!(
        !connection.to_string().contains(&token),
        "token in the API answer"
    );
    assert!(
        !crate::backend::stored_text(app.data_dir())
            .await
            .contains(&token),
        "token in the database"
    );

    // A second install of the same team updates the same connection.
    let page = install(
        &app,
        &ws,
        json!({"return_url": "https://host.example.com/settings"}),
    )
    .await;
    assert_eq!(page.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        page.headers()["location"],
        "https://host.example.com/settings"
    );
    assert_eq!(slack_connections(&app, &ws).await.len(), 1);
}

#[tokio::test]
async fn forged_reused_and_cancelled_installs_store_nothing() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    let browser = no_redirects();
    let callback = |query: &str| format!("{}/oauth/slack/callback?{query}", app.url);

    let forged = browser
        .get(callback(
            "code=x&state=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::BAD_REQUEST);
    let missing = browser.get(callback("code=x")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::BAD_REQUEST);

    // Reuse: the same callback URL twice.
    let (_, answer) = app
        .send(app.post("/v1/connections/slack/authorize", &ws.secret_key))
        .await;
    let to_slack = browser
        .get(answer["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let back = to_slack.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        browser.get(&back).send().await.unwrap().status(),
        StatusCode::OK
    );
    let again = browser.get(&back).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(again.text().await.unwrap().contains("already used"));
    assert_eq!(slack_connections(&app, &ws).await.len(), 1);

    // Cancelled in Slack.
    let other = app.create_workspace("other").await;
    slack.deny_next_authorize();
    let page = install(&app, &other, json!({})).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("cancelled"));
    assert!(slack_connections(&app, &other).await.is_empty());

    // Slack refuses the exchange (wrong client secret).
    slack.set_client_credentials(fake_slack::CLIENT_ID, "another-secret");
    let page = install(&app, &other, json!({})).await;
    assert_eq!(page.status(), StatusCode::BAD_GATEWAY);
    assert!(page.text().await.unwrap().contains("Slack install failed"));
    assert!(slack_connections(&app, &other).await.is_empty());
}

/// Installs, picks the first channel and makes a rule for alerts.
async fn installed_with_rule(app: &TestApp, ws: &TestWorkspace, channel: &str) -> String {
    assert_eq!(install(app, ws, json!({})).await.status(), StatusCode::OK);
    let connection = slack_connections(app, ws).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.create_rule(ws, &connection, json!({"target": {"channel": channel}}))
        .await;
    connection
}

#[tokio::test]
async fn channels_are_listed_across_pages_without_archived_ones() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    assert_eq!(install(&app, &ws, json!({})).await.status(), StatusCode::OK);
    let connection = slack_connections(&app, &ws).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, list) = app
        .send(app.get(
            &format!("/v1/connections/{connection}/channels"),
            &ws.secret_key,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let channels = list["data"].as_array().unwrap();
    assert_eq!(channels.len(), slack.active_channels().len());
    assert!(slack.calls("conversations.list") > 1, "paginated");
    assert!(channels.contains(&json!({"id": "C0000001", "name": "general", "is_private": false})));
    assert!(channels.iter().any(|c| c["is_private"] == true));
    // Cached briefly: a second call does not go to Slack again. On
    // PostgreSQL the node's change feed may still drop the list once for
    // the install's own writes (within 250 ms), so the property is checked
    // as "eventually": two calls in a row with no Slack call between.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        app.send(app.get(
            &format!("/v1/connections/{connection}/channels"),
            &ws.secret_key,
        ))
        .await;
        let calls = slack.calls("conversations.list");
        app.send(app.get(
            &format!("/v1/connections/{connection}/channels"),
            &ws.secret_key,
        ))
        .await;
        if slack.calls("conversations.list") == calls {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every listing went to Slack: the channel list is not cached"
        );
    }
}

#[tokio::test]
async fn an_alert_lands_in_the_channel_with_blocks_and_fallback() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    installed_with_rule(&app, &ws, "C0000002").await;
    let event = app.emit_example(&ws.publishable_key).await;
    let message = slack.next_message().await;
    assert_eq!(message.channel, "C0000002");
    let text = message.text.unwrap();
    assert!(
        text.contains("api_latency_p95") && text.contains("1840") && text.contains("1000"),
        "{text}"
    );
    let blocks = message.blocks.unwrap().to_string();
    assert!(blocks.contains("\"header\""), "{blocks}");
    assert!(
        blocks.contains("1840") && blocks.contains(&event),
        "{blocks}"
    );
    let delivery = app.deliveries_of(&ws, &event).await.remove(0);
    app.wait_for_delivery(&ws, &delivery, |d| d["status"] == "succeeded")
        .await;
}

/// Emits the example alert as `name`, for `alert_id`; waits until its one
/// delivery succeeded.
async fn alert_event(app: &TestApp, ws: &TestWorkspace, name: &str, alert_id: &str) {
    let mut event = example_event();
    event["event"] = json!(name);
    event["resource_id"] = json!(alert_id);
    let (status, answer) = app
        .send(app.post("/v1/events", &ws.publishable_key).json(&event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let event_id = answer["id"].as_str().unwrap();
    let delivery = app.deliveries_of(ws, event_id).await.remove(0);
    app.wait_for_delivery(ws, &delivery, |d| d["status"] == "succeeded")
        .await;
}

fn header_text(blocks: &Option<Value>) -> String {
    blocks.as_ref().unwrap()[0]["text"]["text"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn an_alerts_life_stays_in_one_thread_and_updates_its_first_message() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    installed_with_rule(&app, &ws, "C0000002").await;

    alert_event(&app, &ws, "alert.triggered", "alrt_1").await;
    let first = slack.next_message().await;
    assert_eq!(first.thread_ts, None);

    for (name, state) in [
        ("alert.acknowledged", "Acknowledged"),
        ("alert.resolved", "Resolved"),
    ] {
        alert_event(&app, &ws, name, "alrt_1").await;
        let reply = slack.next_message().await;
        assert_eq!(reply.channel, "C0000002");
        assert_eq!(
            reply.thread_ts.as_deref(),
            Some(first.ts.as_str()),
            "{name}"
        );
        assert!(
            header_text(&reply.blocks).contains(state),
            "{:?}",
            reply.blocks
        );
        assert!(reply.text.unwrap().starts_with(&format!("{state}: ")));
        let update = slack.updates().pop().expect("the first message is updated");
        assert_eq!(
            (update.channel.as_str(), update.ts.as_str()),
            ("C0000002", first.ts.as_str())
        );
        assert!(
            header_text(&update.blocks).contains(state),
            "{:?}",
            update.blocks
        );
        assert!(update.text.unwrap().starts_with(&format!("{state}: ")));
    }
    assert_eq!(slack.updates().len(), 2);
    assert!(header_text(&slack.updates()[1].blocks).starts_with("✅ Resolved"));

    // An alert whose first message is unknown: a message of its own.
    alert_event(&app, &ws, "alert.resolved", "alrt_never_seen").await;
    let alone = slack.next_message().await;
    assert_eq!(alone.thread_ts, None);
    assert!(header_text(&alone.blocks).contains("Resolved"));
    assert_eq!(slack.updates().len(), 2);
}

#[tokio::test]
async fn rate_limits_and_the_per_channel_pace_are_honoured() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    installed_with_rule(&app, &ws, "C0000002").await;
    slack.rate_limit_next_post(1);
    let first = app.emit_example(&ws.publishable_key).await;
    let delivered = slack.next_message().await;
    let attempts = slack.post_attempts();
    assert_eq!(attempts[0].status, 429);
    assert!(
        delivered.at - attempts[0].at >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    let delivery = app.deliveries_of(&ws, &first).await.remove(0);
    let done = app
        .wait_for_delivery(&ws, &delivery, |d| d["status"] == "succeeded")
        .await;
    assert_eq!(done["attempts"].as_array().unwrap().len(), 2);

    // Three alerts at once to one channel go out about a second apart.
    for _ in 0..3 {
        app.emit_example(&ws.publishable_key).await;
    }
    let times = [
        slack.next_message().await.at,
        slack.next_message().await.at,
        slack.next_message().await.at,
    ];
    assert!(
        times[1] - times[0] >= Duration::from_millis(900),
        "{:?}",
        times[1] - times[0]
    );
    assert!(
        times[2] - times[1] >= Duration::from_millis(900),
        "{:?}",
        times[2] - times[1]
    );
}

#[tokio::test]
async fn a_revoked_token_is_dead_at_once_and_needs_reauth() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    let connection = installed_with_rule(&app, &ws, "C0000002").await;
    slack.revoke(&slack.last_access_token().unwrap());
    let event = app.emit_example(&ws.publishable_key).await;
    let delivery = app.deliveries_of(&ws, &event).await.remove(0);
    let dead = app
        .wait_for_delivery(&ws, &delivery, |d| d["status"] == "dead")
        .await;
    assert_eq!(dead["attempts"].as_array().unwrap().len(), 1, "no retry");
    assert!(
        dead["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("token_revoked"),
        "{dead}"
    );
    let (_, connection) = app
        .send(app.get(&format!("/v1/connections/{connection}"), &ws.secret_key))
        .await;
    assert_eq!(connection["status"], "needs_reauth");

    // A bad channel is dead with the reason shown.
    let other = app.create_workspace("other").await;
    installed_with_rule(&app, &other, "C0000002").await;
    slack.fail_next_post("channel_not_found");
    let event = app.emit_example(&other.publishable_key).await;
    let delivery = app.deliveries_of(&other, &event).await.remove(0);
    let dead = app
        .wait_for_delivery(&other, &delivery, |d| d["status"] == "dead")
        .await;
    assert!(
        dead["attempts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("channel_not_found"),
        "{dead}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_under_concurrency() {
    let slack = FakeSlack::start().await;
    slack.enable_rotation(fake_slack::DEFAULT_EXPIRES_IN);
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    // Five channels so the per-channel pace does not serialise the posts.
    assert_eq!(install(&app, &ws, json!({})).await.status(), StatusCode::OK);
    let connection = slack_connections(&app, &ws).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for channel in ["C0000002", "C0000003", "C0000004", "C0000005", "C0000006"] {
        app.create_rule(&ws, &connection, json!({"target": {"channel": channel}}))
            .await;
    }
    let first_token = slack.last_access_token().unwrap();
    slack.expire(&first_token);
    let (status, accepted) = app
        .send(
            app.post("/v1/events", &ws.publishable_key)
                .json(&example_event()),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(accepted["deliveries"], 5);
    for _ in 0..5 {
        let message = slack.next_message().await;
        assert_ne!(message.token, first_token);
    }
    assert_eq!(slack.refresh_count(), 1, "refreshed exactly once");
    for delivery in app
        .deliveries_of(&ws, accepted["id"].as_str().unwrap())
        .await
    {
        app.wait_for_delivery(&ws, &delivery, |d| d["status"] == "succeeded")
            .await;
    }
}

#[tokio::test]
async fn a_bot_token_connection_is_checked_with_auth_test() {
    let slack = FakeSlack::start().await;
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    let token = slack.issue_bot_token();
    let body = json!({"type": "slack", "name": "Our Slack", "config": {"bot_token": token}});
    let (status, created) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["config"]["team_id"], fake_slack::TEAM_ID);
    assert!(!created.to_string().contains(&token));
    let bad = json!({"type": "slack", "name": "x", "config": {"bot_token": "xoxb-not-issued"}});
    let (status, answer) = app
        .send(app.post("/v1/connections", &ws.secret_key).json(&bad))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_auth")
    );

    // The connection test posts a real message to the chosen channel.
    let id = created["id"].as_str().unwrap();
    let (status, result) = app
        .send(
            app.post(&format!("/v1/connections/{id}/test"), &ws.secret_key)
                .json(&json!({"target": {"channel": "C0000009"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    assert_eq!(slack.next_message().await.channel, "C0000009");
}

/// Tokens must not reach the logs, even at debug level, nor the database
/// file, across an install, deliveries and a refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    use crate::helpers::{ADMIN_TOKEN, ChildServer, send, workspace_from};
    let slack = FakeSlack::start().await;
    slack.enable_rotation(fake_slack::DEFAULT_EXPIRES_IN);
    let data_dir = tempfile::tempdir().unwrap();
    let log = data_dir.path().join("server.log");
    let env = [
        ("SWITCHYARD_LOG__LEVEL", "debug"),
        ("SWITCHYARD_SLACK__API_BASE", slack.api_base.as_str()),
        ("SWITCHYARD_SLACK__OAUTH_BASE", slack.oauth_base.as_str()),
        ("SWITCHYARD_SLACK__CLIENT_ID", fake_slack::CLIENT_ID),
        ("SWITCHYARD_SLACK__CLIENT_SECRET", fake_slack::CLIENT_SECRET),
    ];
    let server =
        ChildServer::start_logging_to(data_dir.path(), Some(ADMIN_TOKEN), &env, Some(&log)).await;
    let http = reqwest::Client::new();
    let (_, body) = send(
        http.post(format!("{}/v1/workspaces", server.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "a"})),
    )
    .await;
    let ws = workspace_from(&body);
    let (_, answer) = send(
        http.post(format!("{}/v1/connections/slack/authorize", server.url))
            .bearer_auth(&ws.secret_key),
    )
    .await;
    let browser = no_redirects();
    let to_slack = browser
        .get(answer["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let back = to_slack.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        browser.get(back).send().await.unwrap().status(),
        StatusCode::OK
    );
    let (_, list) = send(
        http.get(format!("{}/v1/connections", server.url))
            .bearer_auth(&ws.secret_key),
    )
    .await;
    let connection = list["data"][0]["id"].as_str().unwrap().to_string();
    let rule = json!({"name": "r", "events": ["*"], "connection_id": connection, "target": {"channel": "C0000002"}});
    let (status, _) = send(
        http.post(format!("{}/v1/rules", server.url))
            .bearer_auth(&ws.secret_key)
            .json(&rule),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    slack.expire(&slack.last_access_token().unwrap());
    let (status, _) = send(
        http.post(format!("{}/v1/events", server.url))
            .bearer_auth(&ws.publishable_key)
            .json(&example_event()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    slack.next_message().await;
    assert_eq!(slack.refresh_count(), 1);
    assert_eq!(server.terminate().await.code(), Some(0));

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("Slack token refreshed"),
        "debug log was captured:\n{logged}"
    );
    let stored = crate::backend::stored_text(data_dir.path()).await;
    for token in slack.issued_tokens() {
        assert!(!logged.contains(&token), "a token is in the log");
        assert!(!stored.contains(&token), "a token is in the database file");
    }
    assert!(
        !logged.contains(fake_slack::CLIENT_SECRET),
        "the client secret is in the log"
    );
    assert!(!logged.contains(&ws.secret_key), "an API key is in the log");
    assert!(
        !logged.contains("fake-code-"),
        "an OAuth code is in the log"
    );
    let state = answer["url"]
        .as_str()
        .unwrap()
        .split("state=")
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!logged.contains(&state), "the OAuth state is in the log");
}

/// A token about to expire is refreshed before it is used.
#[tokio::test]
async fn a_token_near_expiry_is_refreshed_ahead() {
    let slack = FakeSlack::start().await;
    slack.enable_rotation(60); // inside the five-minute refresh margin
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    installed_with_rule(&app, &ws, "C0000002").await;
    let installed = slack.last_access_token().unwrap();
    app.emit_example(&ws.publishable_key).await;
    let message = slack.next_message().await;
    assert_ne!(message.token, installed, "posted with a fresh token");
    assert_eq!(slack.refresh_count(), 1);
    assert!(
        slack
            .post_attempts()
            .iter()
            .all(|attempt| attempt.error.is_none()),
        "no token_expired round trip"
    );
}

/// The event after a refresh is posted with the refreshed token at once:
/// the rule index, whose connections first attempts are sent with, is told
/// of the swap.
#[tokio::test]
async fn the_event_after_a_refresh_is_posted_with_the_new_token() {
    let slack = FakeSlack::start().await;
    slack.enable_rotation(fake_slack::DEFAULT_EXPIRES_IN);
    let app = app_with(&slack).await;
    let ws = app.create_workspace("acme").await;
    installed_with_rule(&app, &ws, "C0000002").await;
    let installed = slack.last_access_token().unwrap();
    slack.expire(&installed);

    app.emit_example(&ws.publishable_key).await;
    let refreshed = slack.next_message().await.token;
    assert_ne!(refreshed, installed);
    app.emit_example(&ws.publishable_key).await;
    assert_eq!(slack.next_message().await.token, refreshed);
    assert_eq!(slack.refresh_count(), 1);
    let expired = slack
        .post_attempts()
        .iter()
        .filter(|attempt| attempt.error.as_deref() == Some("token_expired"))
        .count();
    assert_eq!(expired, 1, "only the first event met the expired token");
}
