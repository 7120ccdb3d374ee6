//! Two nodes on one PostgreSQL database, each an in-process server with
//! caches of its own: a change made through one takes effect on the other
//! within a second (keys, embed sessions, deleted workspaces, rules, Slack
//! channel lists), and a Slack token both need at once is refreshed once.
//! PostgreSQL only: on redb one process owns the file.

use crate::backend::{self, postgres_only};
use crate::fake_slack::{self, FakeSlack};
use crate::helpers::{ADMIN_TOKEN, TestApp, TestWorkspace, example_event, workspace_from};
use crate::receiver::{Receiver, Reply};
use crate::slack::{install, slack_connections};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard::config::{Config, PostgresTls, StorageBackend};
use switchyard::secret::Secret;

/// Both nodes open connection secrets and embed tokens with one key.
const MASTER_KEY: &str = "6f0c5e1d2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";

/// How soon a change through one node must hold on the others.
const BOUND: Duration = Duration::from_secs(1);

/// Node A on the test's database, node B on the same one; `adjust` applies
/// to both.
async fn two_nodes(adjust: impl Fn(&mut Config)) -> (TestApp, TestApp) {
    let a = TestApp::spawn_with(|config| {
        config.master_key = Some(Secret::new(MASTER_KEY));
        adjust(config);
    })
    .await;
    let shared = backend::database_for(a.data_dir()).await;
    let b = TestApp::spawn_with(|config| {
        config.master_key = Some(Secret::new(MASTER_KEY));
        adjust(config);
        config.storage.backend = StorageBackend::Postgres;
        config.storage.postgres.url = Some(Secret::new(shared));
        config.storage.postgres.pool_size = 8;
        config.storage.postgres.tls = PostgresTls::Disable;
    })
    .await;
    (a, b)
}

/// B first: A's drop takes the shared database with it.
async fn stop(mut a: TestApp, mut b: TestApp) {
    b.stop().await;
    a.stop().await;
}

/// Polls until `holds` does; fails unless that was within [`BOUND`] of
/// `since` (when the change was answered, so committed).
async fn within_the_bound(since: Instant, what: &str, mut holds: impl AsyncFnMut() -> bool) {
    loop {
        if holds().await {
            let took = since.elapsed();
            assert!(took < BOUND, "{what}: took {took:?}");
            return;
        }
        assert!(since.elapsed() < BOUND, "{what}: not within {BOUND:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(app: &TestApp, request: reqwest::RequestBuilder) -> StatusCode {
    app.send(request).await.0
}

async fn emit_status(app: &TestApp, key: &str) -> StatusCode {
    status_of(app, app.post("/v1/events", key).json(&example_event())).await
}

/// An embed session minted with the secret key through `app`.
async fn embed_session(app: &TestApp, ws: &TestWorkspace) -> String {
    let (status, minted) = app
        .send(
            app.post("/v1/embed/sessions", &ws.secret_key)
                .json(&json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let (status, exchanged) = app
        .send(
            app.http
                .post(format!("{}/embed/session", app.url))
                .json(&json!({"token": minted["token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{exchanged}");
    exchanged["session"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_through_one_node_ends_the_old_keys_and_sessions_on_another() {
    if postgres_only("a_key_rotation_through_one_node_ends_the_old_keys_and_sessions_on_another") {
        return;
    }
    let (a, b) = two_nodes(|_| {}).await;
    let ws = a.create_workspace("acme").await;
    // B has the keys and the session's key cached.
    let session = embed_session(&b, &ws).await;
    assert_eq!(
        status_of(&b, b.get("/v1/connections", &ws.secret_key)).await,
        StatusCode::OK
    );
    assert_eq!(
        status_of(&b, b.get("/v1/connections", &session)).await,
        StatusCode::OK
    );
    assert_eq!(
        emit_status(&b, &ws.publishable_key).await,
        StatusCode::ACCEPTED
    );

    let (status, rotated) = a
        .send(a.post(
            &format!("/v1/workspaces/{}/keys/rotate", ws.id),
            ADMIN_TOKEN,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let rotated_at = Instant::now();
    within_the_bound(rotated_at, "the old secret key on B", async || {
        status_of(&b, b.get("/v1/connections", &ws.secret_key)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    within_the_bound(rotated_at, "the old publishable key on B", async || {
        emit_status(&b, &ws.publishable_key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    within_the_bound(rotated_at, "the embed session minted on B", async || {
        status_of(&b, b.get("/v1/connections", &session)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    let fresh = workspace_from(&rotated);
    assert_eq!(
        status_of(&b, b.get("/v1/connections", &fresh.secret_key)).await,
        StatusCode::OK
    );
    assert_eq!(
        emit_status(&b, &fresh.publishable_key).await,
        StatusCode::ACCEPTED
    );
    stop(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_deleted_through_one_node_loses_its_keys_on_another() {
    if postgres_only("a_workspace_deleted_through_one_node_loses_its_keys_on_another") {
        return;
    }
    let (a, b) = two_nodes(|_| {}).await;
    let ws = a.create_workspace("acme").await;
    assert_eq!(
        status_of(&b, b.get("/v1/connections", &ws.secret_key)).await,
        StatusCode::OK
    );
    assert_eq!(
        emit_status(&b, &ws.publishable_key).await,
        StatusCode::ACCEPTED
    );

    let deleted = a.delete(&format!("/v1/workspaces/{}", ws.id), ADMIN_TOKEN);
    assert_eq!(status_of(&a, deleted).await, StatusCode::NO_CONTENT);
    let deleted_at = Instant::now();
    within_the_bound(deleted_at, "the secret key on B", async || {
        status_of(&b, b.get("/v1/connections", &ws.secret_key)).await == StatusCode::UNAUTHORIZED
    })
    .await;
    within_the_bound(deleted_at, "the publishable key on B", async || {
        emit_status(&b, &ws.publishable_key).await == StatusCode::UNAUTHORIZED
    })
    .await;
    stop(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_created_or_changed_through_one_node_route_events_ingested_on_another() {
    if postgres_only("rules_created_or_changed_through_one_node_route_events_ingested_on_another") {
        return;
    }
    let (a, b) = two_nodes(|config| {
        config.delivery.allow_private_networks = true;
        config.delivery.retry_schedule = vec![0, 0];
        config.delivery.timeout_seconds = 2;
    })
    .await;
    let mut first = Receiver::start(Reply::Status(200)).await;
    let mut second = Receiver::start(Reply::Status(200)).await;
    let ws = a.create_workspace("acme").await;
    let (to_first, _) = a.create_webhook(&ws, &first.url).await;
    let (to_second, _) = a.create_webhook(&ws, &second.url).await;
    a.create_rule(&ws, &to_first, json!({})).await;
    let routes_on_b = async || {
        let (status, accepted) = b
            .send(
                b.post("/v1/events", &ws.publishable_key)
                    .json(&example_event()),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
        accepted["deliveries"].as_u64().unwrap()
    };
    // B has compiled the workspace's rules: one route.
    assert_eq!(routes_on_b().await, 1);
    first.next().await;

    let rule = a.create_rule(&ws, &to_second, json!({})).await;
    let created_at = Instant::now();
    within_the_bound(created_at, "the rule created through A", async || {
        routes_on_b().await == 2
    })
    .await;
    second.next().await;

    let disable = a
        .patch(&format!("/v1/rules/{rule}"), &ws.secret_key)
        .json(&json!({"enabled": false}));
    assert_eq!(status_of(&a, disable).await, StatusCode::OK);
    let changed_at = Instant::now();
    within_the_bound(changed_at, "the rule disabled through A", async || {
        routes_on_b().await == 1
    })
    .await;
    stop(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_refresh_a_slack_token_once_and_drop_changed_channel_lists() {
    if postgres_only("two_nodes_refresh_a_slack_token_once_and_drop_changed_channel_lists") {
        return;
    }
    let slack = FakeSlack::start().await;
    // The installed token expires within the refresh margin, so the next
    // use on either node refreshes it first.
    slack.enable_rotation(60);
    let (api_base, oauth_base) = (slack.api_base.clone(), slack.oauth_base.clone());
    let (a, b) = two_nodes(|config| {
        config.slack.api_base = api_base.clone();
        config.slack.oauth_base = oauth_base.clone();
        config.slack.client_id = Some(fake_slack::CLIENT_ID.into());
        config.slack.client_secret = Some(Secret::new(fake_slack::CLIENT_SECRET));
    })
    .await;
    let ws = a.create_workspace("acme").await;
    assert_eq!(install(&a, &ws, json!({})).await.status(), StatusCode::OK);
    let connection = slack_connections(&a, &ws).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The refreshed token lasts, and the refresh is slow enough for the
    // two nodes' needs to overlap.
    slack.enable_rotation(fake_slack::DEFAULT_EXPIRES_IN);
    slack.delay_refreshes(Duration::from_millis(500));

    let path = format!("/v1/connections/{connection}/channels");
    let (on_a, on_b) = tokio::join!(
        a.send(a.get(&path, &ws.secret_key)),
        b.send(b.get(&path, &ws.secret_key)),
    );
    assert_eq!(on_a.0, StatusCode::OK, "{}", on_a.1);
    assert_eq!(on_b.0, StatusCode::OK, "{}", on_b.1);
    assert_eq!(on_a.1, on_b.1);
    assert_eq!(slack.refresh_count(), 1, "refreshed once");
    assert_eq!(
        slack.calls("oauth.v2.access"),
        2,
        "the install and one refresh: no second refresh with the spent token"
    );

    // The refresh changed the connection, and B may hear of that after it
    // cached its list, dropping it then. A change made after the refresh
    // reaches B after it (notifications arrive in commit order): once B
    // shows the list Slack has after that change, B has heard of both and
    // holds a list no earlier change can drop.
    let mut four = fake_slack::default_channels();
    four.truncate(4);
    slack.set_channels(four);
    let marker = a
        .patch(&format!("/v1/connections/{connection}"), &ws.secret_key)
        .json(&json!({"name": "Slack (marker)"}));
    assert_eq!(status_of(&a, marker).await, StatusCode::OK);
    let marked_at = Instant::now();
    let mut cached = Value::Null;
    within_the_bound(
        marked_at,
        "B's channel list after the refresh",
        async || {
            cached = b.send(b.get(&path, &ws.secret_key)).await.1;
            cached["data"].as_array().map(Vec::len) == Some(4)
        },
    )
    .await;

    // B keeps its list a minute, unless the connection changes on any node.
    let mut fewer = fake_slack::default_channels();
    fewer.truncate(3);
    slack.set_channels(fewer);
    assert_eq!(
        b.send(b.get(&path, &ws.secret_key)).await.1,
        cached,
        "cached"
    );
    let rename = a
        .patch(&format!("/v1/connections/{connection}"), &ws.secret_key)
        .json(&json!({"name": "Slack (ops)"}));
    assert_eq!(status_of(&a, rename).await, StatusCode::OK);
    let renamed_at = Instant::now();
    within_the_bound(
        renamed_at,
        "B's channel list after a change through A",
        async || {
            let (_, list) = b.send(b.get(&path, &ws.secret_key)).await;
            list["data"].as_array().map(Vec::len) == Some(3)
        },
    )
    .await;
    stop(a, b).await;
}
