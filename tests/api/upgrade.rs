//! Upgrades keep data: the data dir v0.1 wrote (tests/fixtures/upgrade-v0.1,
//! made by `scripts/make-upgrade-fixture`) opens with the current code, every
//! record reads back as the old server answered for it, keys still
//! authenticate, sealed secrets still open and queued deliveries still go.

use crate::fake_pagerduty::FakePagerDuty;
use crate::fake_resend::{self, FakeResend};
use crate::fake_slack::FakeSlack;
use crate::helpers::TestApp;
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard::config::RetentionPeriod;
use switchyard::destinations::webhook::signing::{WebhookSecret, verify};
use switchyard::secret::Secret;

const FIXTURE: &str = "tests/fixtures/upgrade-v0.1";
/// The Slack tokens and PagerDuty routing key the fixture's connections
/// were made with (`scripts/make-upgrade-fixture`), sealed in the file.
const OAUTH_TOKEN: &str = "xoxb-fixture-oauth-token";
const BOT_TOKEN: &str = "xoxb-fixture-bot-token";
const PD_ROUTING_KEY_B: &str = "R0UT1NGKEY0000000000000000000002";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A copy of the fixture's data dir (a checkout does not keep its modes).
fn copy_of_fixture() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    for name in ["switchyard.redb", "master_key", "admin_token"] {
        let to = dir.path().join(name);
        std::fs::copy(fixture_dir().join("data").join(name), &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// `actual` holds everything `expected` does (fields added since are fine).
fn assert_holds(actual: &Value, expected: &Value, at: &str) {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => {
            for (key, value) in expected {
                let found = actual
                    .get(key)
                    .unwrap_or_else(|| panic!("{at}.{key} is missing"));
                assert_holds(found, value, &format!("{at}.{key}"));
            }
        }
        (Value::Array(actual), Value::Array(expected)) => {
            assert_eq!(actual.len(), expected.len(), "{at}: {actual:?}");
            for (i, (actual, expected)) in actual.iter().zip(expected).enumerate() {
                assert_holds(actual, expected, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(actual, expected, "{at}"),
    }
}

fn str_of<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |value, key| &value[key])
        .as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string"))
}

struct Upgraded {
    app: TestApp,
    expected: Value,
    slack: FakeSlack,
    pagerduty: FakePagerDuty,
    resend: FakeResend,
}

impl Upgraded {
    async fn start() -> Self {
        let slack = FakeSlack::start().await;
        slack.add_token(OAUTH_TOKEN);
        slack.add_token(BOT_TOKEN);
        let pagerduty = FakePagerDuty::start().await;
        let resend = FakeResend::start().await;
        let (api_base, events_url) = (slack.api_base.clone(), pagerduty.events_url.clone());
        let resend_base = resend.api_base.clone();
        let app = TestApp::spawn_on(copy_of_fixture(), |config| {
            // The fixture's own token file and master key, as a real upgrade.
            config.admin_token = None;
            config.delivery.allow_private_networks = true;
            config.delivery.retry_schedule = vec![0, 0];
            config.delivery.timeout_seconds = 2;
            // Its events are older than any finite retention one day.
            config.retention.events = RetentionPeriod::Forever;
            config.slack.api_base = api_base;
            config.slack.client_id = Some("1111.2222".into());
            config.slack.client_secret = Some(Secret::new("fixture-client-secret"));
            config.pagerduty.events_url = events_url;
            config.email.resend.api_base = resend_base;
            config.email.resend.api_key = Some(Secret::new(fake_resend::API_KEY));
        })
        .await;
        Self {
            app,
            expected: expected(),
            slack,
            pagerduty,
            resend,
        }
    }

    fn key(&self, workspace: &str) -> &str {
        str_of(&self.expected, &["workspaces", workspace, "secret_key"])
    }

    async fn get(&self, path: &str, key: &str) -> Value {
        let (status, body) = self.app.send(self.app.get(path, key)).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }
}

#[tokio::test]
async fn every_record_of_a_v0_1_data_dir_reads_back() {
    let up = Upgraded::start().await;
    let expected = &up.expected;
    let admin = str_of(expected, &["admin_token"]);

    let workspaces = up.get("/v1/workspaces", admin).await;
    for old in expected["workspace_list"].as_array().unwrap() {
        let now = workspaces["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|ws| ws["id"] == old["id"])
            .unwrap_or_else(|| panic!("workspace {} is gone", old["id"]));
        assert_holds(now, old, "workspace");
    }
    for (name, connection) in expected["connections"].as_object().unwrap() {
        let key = up.key(str_of(connection, &["workspace"]));
        let now = up
            .get(
                &format!("/v1/connections/{}", connection["id"].as_str().unwrap()),
                key,
            )
            .await;
        assert_holds(&now, &connection["read"], name);
    }
    for (name, rule) in expected["rules"].as_object().unwrap() {
        let key = up.key(str_of(rule, &["workspace"]));
        let now = up
            .get(&format!("/v1/rules/{}", rule["id"].as_str().unwrap()), key)
            .await;
        assert_holds(&now, &rule["read"], name);
    }
    for (name, event) in expected["events"].as_object().unwrap() {
        let key = up.key(str_of(event, &["workspace"]));
        let now = up
            .get(
                &format!("/v1/events/{}", event["id"].as_str().unwrap()),
                key,
            )
            .await;
        // Deliveries move on (the queued ones are sent below); which they
        // are does not.
        let mut old = event["read"].clone();
        for delivery in old["deliveries"].as_array_mut().unwrap() {
            delivery.as_object_mut().unwrap().remove("status");
        }
        assert_holds(&now, &old, name);
    }
    for (id, delivery) in expected["deliveries"].as_object().unwrap() {
        let key = if delivery["status"] == "retrying" {
            up.key("b")
        } else {
            up.key("a")
        };
        let now = up.get(&format!("/v1/deliveries/{id}"), key).await;
        assert_holds(&now, delivery, id);
    }
    let statuses: Vec<&str> = expected["deliveries"]
        .as_object()
        .unwrap()
        .values()
        .map(|delivery| delivery["status"].as_str().unwrap())
        .collect();
    for status in ["succeeded", "dead", "suppressed", "retrying"] {
        assert!(statuses.contains(&status), "no {status} delivery checked");
    }
}

#[tokio::test]
async fn keys_still_authenticate_and_rotated_ones_do_not() {
    let up = Upgraded::start().await;
    let ws = &up.expected["workspaces"];
    let emit = json!({"event": "upgrade.checked", "payload": {}});
    for key in [
        str_of(ws, &["a", "publishable_key"]),
        str_of(ws, &["a", "secret_key"]),
        str_of(ws, &["b", "publishable_key"]),
    ] {
        let (status, body) = up
            .app
            .send(up.app.post("/v1/events", key).json(&emit))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{key}: {body}");
    }
    for key in [
        str_of(ws, &["b", "old_publishable_key"]),
        str_of(ws, &["b", "old_secret_key"]),
    ] {
        let (status, _) = up
            .app
            .send(up.app.post("/v1/events", key).json(&emit))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}");
    }
    // A publishable key is still only a publishable key.
    let (status, _) = up
        .app
        .send(
            up.app
                .get("/v1/rules", str_of(ws, &["a", "publishable_key"])),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_queue_delivers_with_secrets_sealed_by_v0_1() {
    let mut up = Upgraded::start().await;
    let expected = up.expected.clone();

    // The delivery queued but never attempted goes out now, with the
    // routing key v0.1 sealed.
    let request = tokio::time::timeout(Duration::from_secs(20), up.pagerduty.next_request())
        .await
        .expect("the queued PagerDuty delivery never went out");
    assert_eq!(request.body["routing_key"], PD_ROUTING_KEY_B);
    let queued = &expected["events"]["backup_queued"]["read"];
    assert_eq!(request.body["payload"]["custom_details"]["attempt"], 2);
    let queued_delivery = queued["deliveries"][0]["id"].as_str().unwrap();
    let ws_b = crate::helpers::TestWorkspace {
        id: str_of(&expected, &["workspaces", "b", "id"]).into(),
        publishable_key: str_of(&expected, &["workspaces", "b", "publishable_key"]).into(),
        secret_key: str_of(&expected, &["workspaces", "b", "secret_key"]).into(),
    };
    let sent = up
        .app
        .wait_for_delivery(&ws_b, queued_delivery, |d| d["status"] == "succeeded")
        .await;
    assert_eq!(sent["attempts"].as_array().unwrap().len(), 1, "{sent}");
    // The one whose attempt timed out at shutdown waits ten years.
    let timed_out = &expected["events"]["backup_timed_out"]["read"]["deliveries"][0]["id"];
    let waiting = up
        .get(
            &format!("/v1/deliveries/{}", timed_out.as_str().unwrap()),
            &ws_b.secret_key,
        )
        .await;
    assert_eq!(waiting["status"], "retrying", "{waiting}");
    assert_eq!(
        waiting["attempts"].as_array().unwrap().len(),
        1,
        "{waiting}"
    );
    assert!(str_of(&waiting, &["next_attempt_at"]) > "2030", "{waiting}");

    // The webhook still signs with its stored secret (moving it to the
    // receiver opens and re-seals its secrets; its custom headers are
    // replaced, as a PATCH of `config` does); Slack posts with the OAuth
    // install's token.
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    let ws_a = str_of(&expected, &["workspaces", "a", "secret_key"]).to_string();
    let webhook = str_of(&expected, &["connections", "webhook", "id"]);
    let (status, body) = up
        .app
        .send(
            up.app
                .patch(&format!("/v1/connections/{webhook}"), &ws_a)
                .json(&json!({"config": {"url": format!("{}/hook", receiver.url)}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alert = json!({"event": "alert.triggered", "resource": "alert", "resource_id": "alrt_after_upgrade",
        "payload": {"alert_id": "alrt_after_upgrade", "severity": "critical", "resource": "api_latency_p95",
                    "value": 2400, "threshold": 1000}});
    let (status, body) = up
        .app
        .send(
            up.app
                .post(
                    "/v1/events",
                    str_of(&expected, &["workspaces", "a", "publishable_key"]),
                )
                .json(&alert),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let request = tokio::time::timeout(Duration::from_secs(20), receiver.next())
        .await
        .expect("the webhook never got the alert");
    let secret = WebhookSecret::parse(str_of(&expected, &["webhook_signing_secret"])).unwrap();
    let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
    assert!(verify(
        &secret,
        request.header("webhook-id"),
        timestamp,
        &request.body,
        request.header("webhook-signature"),
    ));
    let message = tokio::time::timeout(Duration::from_secs(20), up.slack.next_message())
        .await
        .expect("Slack never got the alert");
    assert_eq!(message.token, OAUTH_TOKEN);
    assert_eq!(message.channel, "C0000001");
    // The email connection and its rule's recipients carried over too.
    let mail = up.resend.next_request().await;
    assert_eq!(mail.body["to"], json!(["oncall@example.com"]));
    assert_eq!(mail.body["from"], "Alerts <alerts@example.com>");
}

#[tokio::test]
async fn a_bot_token_slack_connection_of_v0_1_still_posts() {
    let up = Upgraded::start().await;
    let expected = &up.expected;
    let key = up.key("b").to_string();
    let connection = str_of(expected, &["connections", "slack_bot", "id"]);
    let rule = json!({"name": "to slack", "events": ["deploy.*"], "connection_id": connection,
                      "target": {"channel": "C0000002"}});
    let (status, body) = up
        .app
        .send(up.app.post("/v1/rules", &key).json(&rule))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let event = json!({"event": "deploy.finished", "payload": {"service": "api"}});
    let (status, body) = up
        .app
        .send(up.app.post("/v1/events", &key).json(&event))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let message = tokio::time::timeout(Duration::from_secs(20), up.slack.next_message())
        .await
        .expect("Slack never got the event");
    assert_eq!(message.token, BOT_TOKEN);
    assert_eq!(message.channel, "C0000002");
}

#[tokio::test]
async fn a_v0_1_workspace_gets_a_meshes_key_at_its_next_rotation() {
    let up = Upgraded::start().await;
    let expected = &up.expected;
    let admin = str_of(expected, &["admin_token"]);
    let id = str_of(expected, &["workspaces", "a", "id"]);
    let (status, rotated) = up
        .app
        .send(
            up.app
                .post(&format!("/v1/workspaces/{id}/keys/rotate"), admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let meshes_key = str_of(&rotated, &["meshes_publishable_key"]);
    let (status, body) = up
        .app
        .send(
            up.app
                .http
                .post(format!("{}/api/v1/events", up.app.url))
                .header("X-Meshes-Publishable-Key", meshes_key)
                .json(&json!({"event": "user.signed_up", "payload": {}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The v0.1 keys went with the rotation, the new ones work.
    let old = str_of(expected, &["workspaces", "a", "secret_key"]);
    let (status, _) = up.app.send(up.app.get("/v1/rules", old)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let new = str_of(&rotated, &["secret_key"]);
    let (status, _) = up.app.send(up.app.get("/v1/rules", new)).await;
    assert_eq!(status, StatusCode::OK);
}
