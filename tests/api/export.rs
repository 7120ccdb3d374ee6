//! Moving a redb instance to PostgreSQL with `switchyard export` and
//! `switchyard import`, through the real binary: an instance filled over
//! the API, stopped, exported, imported into a new database and served
//! from it. The source is redb and the target PostgreSQL in both passes
//! of `scripts/test` (it needs `SWITCHYARD_TEST_POSTGRES_URL` either way).

use crate::backend;
use crate::fake_slack::FakeSlack;
use crate::helpers::{ADMIN_TOKEN, ChildServer, TestWorkspace, binary, example_event, send};
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The same key on both sides: sealed secrets move as bytes.
const MASTER_KEY: &str = "0101010101010101010101010101010101010101010101010101010101010101";
const OTHER_MASTER_KEY: &str = "0202020202020202020202020202020202020202020202020202020202020202";

/// What a `switchyard export` or `import` run printed.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .env_remove("SWITCHYARD_STORAGE__BACKEND")
        .env_remove("SWITCHYARD_STORAGE__POSTGRES__URL")
        .env_remove("SWITCHYARD_MASTER_KEY");
    for name in crate::helpers::SUITE_ONLY_VARIABLES {
        command.env_remove(name);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().await.unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn export(data_dir: &Path, output: &Path) -> Run {
    let data_dir = data_dir.to_str().unwrap();
    run(
        &["export", "--output", output.to_str().unwrap()],
        &[
            ("SWITCHYARD_DATA_DIR", data_dir),
            ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
        ],
    )
    .await
}

async fn import(database: &str, input: &Path, master_key: &str) -> Run {
    run(
        &["import", "--input", input.to_str().unwrap()],
        &[
            ("SWITCHYARD_STORAGE__BACKEND", "postgres"),
            ("SWITCHYARD_STORAGE__POSTGRES__URL", database),
            ("SWITCHYARD_MASTER_KEY", master_key),
        ],
    )
    .await
}

/// Rows per table of the database (no tables at all: empty).
async fn row_counts(database: &str) -> Vec<(String, i64)> {
    let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let tables = client
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'
             AND tablename <> 'schema_migrations' ORDER BY tablename",
            &[],
        )
        .await
        .unwrap();
    let mut counts = Vec::new();
    for table in tables {
        let name: String = table.get(0);
        let row = client
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
            .unwrap();
        counts.push((name, row.get(0)));
    }
    counts
}

fn total_rows(counts: &[(String, i64)]) -> i64 {
    counts.iter().map(|(_, rows)| rows).sum()
}

/// A database of its own on the test server.
async fn new_database() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = backend::database_for(dir.path()).await;
    (dir, url)
}

async fn get(server: &ChildServer, path: &str, key: &str) -> (StatusCode, Value) {
    send(
        reqwest::Client::new()
            .get(format!("{}{path}", server.url))
            .bearer_auth(key),
    )
    .await
}

async fn post(server: &ChildServer, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    send(
        reqwest::Client::new()
            .post(format!("{}{path}", server.url))
            .bearer_auth(key)
            .json(&body),
    )
    .await
}

/// Polls `GET path` until `done` holds, failing after 30 s.
async fn wait_for(
    server: &ChildServer,
    path: &str,
    key: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(server, path, key).await;
        if status == StatusCode::OK && done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path} never settled: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the API shows of a workspace's events and deliveries (with their
/// attempts), to compare before and after the move.
/// The workspace's events, its deliveries in detail, and each event's
/// delivery ids (so a move that loses the link between them shows).
async fn listing(server: &ChildServer, ws: &TestWorkspace) -> (Value, Vec<Value>, Vec<Value>) {
    let (status, events) = get(server, "/v1/events?limit=100", &ws.secret_key).await;
    assert_eq!(status, StatusCode::OK, "{events}");
    let (status, deliveries) = get(server, "/v1/deliveries?limit=100", &ws.secret_key).await;
    assert_eq!(status, StatusCode::OK, "{deliveries}");
    let mut details = Vec::new();
    for delivery in deliveries["data"].as_array().unwrap() {
        let id = delivery["id"].as_str().unwrap();
        let (status, detail) = get(server, &format!("/v1/deliveries/{id}"), &ws.secret_key).await;
        assert_eq!(status, StatusCode::OK, "{detail}");
        details.push(detail);
    }
    let mut links = Vec::new();
    for event in events["data"].as_array().unwrap() {
        let id = event["id"].as_str().unwrap();
        let path = format!("/v1/deliveries?event_id={id}&limit=100");
        let (status, of_event) = get(server, &path, &ws.secret_key).await;
        assert_eq!(status, StatusCode::OK, "{of_event}");
        let ids: Vec<&Value> = of_event["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|delivery| &delivery["id"])
            .collect();
        links.push(json!({"event": id, "deliveries": ids}));
    }
    (events["data"].clone(), details, links)
}

fn source_env(slack: &FakeSlack) -> Vec<(&'static str, String)> {
    vec![
        ("SWITCHYARD_MASTER_KEY", MASTER_KEY.into()),
        ("SWITCHYARD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true".into()),
        ("SWITCHYARD_DELIVERY__RETRY_SCHEDULE", "[0,0]".into()),
        ("SWITCHYARD_SLACK__API_BASE", slack.api_base.clone()),
    ]
}

fn as_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter()
        .map(|(key, value)| (*key, value.as_str()))
        .collect()
}

#[tokio::test]
async fn a_redb_instance_moves_to_postgresql_and_carries_on() {
    let slack = FakeSlack::start().await;
    let ok = Receiver::start(Reply::Status(200)).await;
    let failing = Receiver::start(Reply::Status(500)).await;
    let mut later = Receiver::start(Reply::Status(200)).await;
    // Due again 10 s after its first attempt: after the move.
    later.script([Reply::WithHeader(503, "retry-after", "10")]);

    // A redb instance, filled over the API.
    let source_dir = tempfile::tempdir().unwrap();
    let mut env = source_env(&slack);
    env.push(("SWITCHYARD_STORAGE__BACKEND", "redb".into()));
    let source =
        ChildServer::start_with_env(source_dir.path(), Some(ADMIN_TOKEN), &as_refs(&env)).await;
    let ws = source.create_workspace("moving").await;
    let (status, created) = post(
        &source,
        "/v1/workspaces",
        ADMIN_TOKEN,
        json!({"name": "moving-meshes"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let meshes_key = created["meshes_publishable_key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut connections = Vec::new();
    for (name, receiver) in [("ok", &ok), ("failing", &failing), ("later", &later)] {
        let body = json!({"type": "webhook", "name": name, "config": {"url": receiver.url}});
        let (status, answer) = post(&source, "/v1/connections", &ws.secret_key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        connections.push((answer["id"].as_str().unwrap().to_string(), None));
    }
    let token = slack.issue_bot_token();
    let body = json!({"type": "slack", "name": "Slack", "config": {"bot_token": token}});
    let (status, answer) = post(&source, "/v1/connections", &ws.secret_key, body).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    connections.push((
        answer["id"].as_str().unwrap().to_string(),
        Some(json!({"channel": "C0000002"})),
    ));
    for (connection, target) in &connections {
        let mut body = json!({"name": "all", "events": ["*"], "connection_id": connection});
        if let Some(target) = target {
            body["target"] = target.clone();
        }
        let (status, answer) = post(&source, "/v1/rules", &ws.secret_key, body).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let (status, first) = send(
        reqwest::Client::new()
            .post(format!("{}/v1/events", source.url))
            .bearer_auth(&ws.publishable_key)
            .header("Idempotency-Key", "first-event")
            .json(&example_event()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    assert_eq!(first["deliveries"], 4);
    slack.next_message().await;
    // Settled: delivered, dead after three attempts, retrying (due later).
    let event_path = format!("/v1/events/{}", first["id"].as_str().unwrap());
    let settled = wait_for(&source, &event_path, &ws.secret_key, |event| {
        let statuses: Vec<&str> = event["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|delivery| delivery["status"].as_str().unwrap())
            .collect();
        statuses.iter().filter(|s| **s == "succeeded").count() == 2
            && statuses.contains(&"dead")
            && statuses.contains(&"retrying")
    })
    .await;
    let queued = settled["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|delivery| delivery["status"] == "retrying")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An embed launch token left unused, and one already exchanged.
    let (_, unused) = post(&source, "/v1/embed/sessions", &ws.secret_key, json!({})).await;
    let (_, used) = post(&source, "/v1/embed/sessions", &ws.secret_key, json!({})).await;
    let exchange = |server: &ChildServer, launch: &Value| {
        send(
            reqwest::Client::new()
                .post(format!("{}/embed/session", server.url))
                .json(&json!({"token": launch["token"]})),
        )
    };
    let (status, _) = exchange(&source, &used).await;
    assert_eq!(status, StatusCode::OK);
    let before = listing(&source, &ws).await;
    assert_eq!(before.1.len(), 4);
    let linked: usize = before
        .2
        .iter()
        .map(|link| link["deliveries"].as_array().unwrap().len())
        .sum();
    assert_eq!(linked, 4, "each delivery is found through its event");

    // The export refuses while the server holds the file.
    let dump = source_dir.path().join("switchyard.dump");
    let refused = export(source_dir.path(), &dump).await;
    assert!(!refused.ok && refused.stderr.contains("the server is running"));
    assert_eq!(source.terminate().await.code(), Some(0));
    let exported = export(source_dir.path(), &dump).await;
    assert!(exported.ok, "{}", exported.stderr);
    assert!(exported.stdout.contains("exported"), "{}", exported.stdout);
    // An existing file is never overwritten.
    let again = export(source_dir.path(), &dump).await;
    assert!(
        !again.ok && again.stderr.contains("exists"),
        "{}",
        again.stderr
    );

    let (target_dir, database) = new_database().await;
    let imported = import(&database, &dump, MASTER_KEY).await;
    assert!(imported.ok, "{}", imported.stderr);
    assert!(
        imported.stdout.contains("workspaces 2") && imported.stdout.contains("connections 4"),
        "{}",
        imported.stdout
    );

    // Served from PostgreSQL with the same master key.
    let mut env = source_env(&slack);
    env.push(("SWITCHYARD_STORAGE__BACKEND", "postgres".into()));
    env.push(("SWITCHYARD_STORAGE__POSTGRES__URL", database.clone()));
    let target =
        ChildServer::start_with_env(target_dir.path(), Some(ADMIN_TOKEN), &as_refs(&env)).await;
    let after = listing(&target, &ws).await;
    assert_eq!(after.0, before.0, "events differ");
    assert_eq!(after.2, before.2, "events' deliveries differ");
    assert_eq!(after.1.len(), before.1.len());
    for (after, before) in after.1.iter().zip(&before.1) {
        // The queued one may already have had its next attempt.
        if after["id"] == queued.as_str() && after["status"] != "retrying" {
            assert_eq!(after["attempts"][0], before["attempts"][0]);
            continue;
        }
        assert_eq!(after, before, "a delivery differs");
    }

    // Every key kind still authenticates.
    let (status, _) = get(&target, "/v1/workspaces", ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let (status, replay) = send(
        reqwest::Client::new()
            .post(format!("{}/v1/events", target.url))
            .bearer_auth(&ws.publishable_key)
            .header("Idempotency-Key", "first-event")
            .json(&example_event()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(replay, first, "the idempotency key moved too");
    let meshes = reqwest::Client::new()
        .post(format!("{}/api/v1/events", target.url))
        .header("X-Meshes-Publishable-Key", &meshes_key)
        .json(&json!({"event": "moved"}))
        .send()
        .await
        .unwrap();
    assert!(meshes.status().is_success(), "{}", meshes.status());
    let (status, session) = exchange(&target, &unused).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let session = session["session"].as_str().unwrap();
    let (status, _) = get(&target, "/v1/connections", session).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = exchange(&target, &used).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a used launch token stays used"
    );

    // The queued entry is delivered from PostgreSQL once due.
    let path = format!("/v1/deliveries/{queued}");
    let delivered = wait_for(&target, &path, &ws.secret_key, |d| {
        d["status"] == "succeeded"
    })
    .await;
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 2);
    later.next().await;
    later.next().await;

    // A new event reaches Slack with the moved (sealed) token.
    let (status, second) = post(&target, "/v1/events", &ws.secret_key, example_event()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{second}");
    let message = slack.next_message().await;
    assert_eq!(message.channel, "C0000002");
    assert_eq!(message.token, token);
    assert_eq!(target.terminate().await.code(), Some(0));

    // A second import into the now non-empty database is refused and
    // changes nothing.
    let counts = row_counts(&database).await;
    let refused = import(&database, &dump, MASTER_KEY).await;
    assert!(!refused.ok);
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);
    assert_eq!(row_counts(&database).await, counts);

    // Exported from PostgreSQL in turn, the dump rebuilds the same rows.
    let again = source_dir.path().join("from-postgres.dump");
    let env = [
        ("SWITCHYARD_STORAGE__BACKEND", "postgres"),
        ("SWITCHYARD_STORAGE__POSTGRES__URL", database.as_str()),
        ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
    ];
    let exported = run(&["export", "--output", again.to_str().unwrap()], &env).await;
    assert!(exported.ok, "{}", exported.stderr);
    let (_copy_dir, copy) = new_database().await;
    let imported = import(&copy, &again, MASTER_KEY).await;
    assert!(imported.ok, "{}", imported.stderr);
    let rows = dumped_rows(&database).await;
    assert!(rows.len() > 30, "{rows:?}");
    assert_eq!(dumped_rows(&copy).await, rows);
}

/// Every row of every table a dump carries, as text, in order (the
/// queue's lease columns aside: a node's, not the data's).
async fn dumped_rows(database: &str) -> Vec<String> {
    let (client, connection) = tokio_postgres::connect(database, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(connection);
    let mut rows = Vec::new();
    for table in [
        "workspaces",
        "api_keys",
        "workspace_purges",
        "connections",
        "rules",
        "events",
        "deliveries",
        "attempts",
        "delivery_queue",
        "idempotency_keys",
        "oauth_states",
        "used_launch_tokens",
        "alert_noise",
        "rule_noise",
        "slack_threads",
    ] {
        let columns = match table {
            "delivery_queue" => "(t.connection_id, t.due_ms, t.delivery_id, t.workspace_id)",
            _ => "t",
        };
        let query = format!("SELECT {columns}::text FROM {table} t ORDER BY 1");
        for row in client.query(&query, &[]).await.unwrap() {
            rows.push(format!("{table}: {}", row.get::<_, String>(0)));
        }
    }
    rows
}

/// A small instance's dump, for the refusals.
async fn small_dump() -> (tempfile::TempDir, PathBuf, TestWorkspace) {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
        ("SWITCHYARD_STORAGE__BACKEND", "redb"),
    ];
    let server = ChildServer::start_with_env(dir.path(), Some(ADMIN_TOKEN), &env).await;
    let ws = server.create_workspace("small").await;
    let body = json!({"type": "webhook", "name": "w",
                      "config": {"url": "https://hooks.example.com/x"}});
    let (status, _) = post(&server, "/v1/connections", &ws.secret_key, body).await;
    assert_eq!(status, StatusCode::CREATED);
    for _ in 0..3 {
        server.emit_example(&ws.publishable_key).await;
    }
    assert_eq!(server.terminate().await.code(), Some(0));
    let dump = dir.path().join("small.dump");
    let exported = export(dir.path(), &dump).await;
    assert!(exported.ok, "{}", exported.stderr);
    (dir, dump, ws)
}

#[tokio::test]
async fn a_damaged_dump_or_another_master_key_is_refused_and_writes_nothing() {
    let (dir, dump, _) = small_dump().await;
    let bytes = std::fs::read(&dump).unwrap();
    let (_db_dir, database) = new_database().await;

    let damaged = dir.path().join("damaged.dump");
    // Cut at 16 places across the file, and flip a byte at 16 others
    // (every offset is covered by store::dump's unit tests).
    let step = (bytes.len() / 16).max(1);
    for (n, at) in (0..bytes.len()).step_by(step).enumerate() {
        let mut copy = bytes.clone();
        let what = if n % 2 == 0 {
            copy.truncate(at);
            format!("cut at {at}")
        } else {
            copy[at] ^= 0x55;
            format!("byte {at} flipped")
        };
        std::fs::write(&damaged, &copy).unwrap();
        let refused = import(&database, &damaged, MASTER_KEY).await;
        assert!(!refused.ok, "{what}: imported");
        assert!(
            refused.stderr.contains("nothing was written")
                || refused.stderr.contains("not a switchyard dump"),
            "{what}: {}",
            refused.stderr
        );
        assert_eq!(total_rows(&row_counts(&database).await), 0, "{what}");
    }

    let refused = import(&database, &dump, OTHER_MASTER_KEY).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.contains("wrong master key"),
        "{}",
        refused.stderr
    );
    assert_eq!(total_rows(&row_counts(&database).await), 0);

    // The whole dump still goes in.
    let imported = import(&database, &dump, MASTER_KEY).await;
    assert!(imported.ok, "{}", imported.stderr);
    assert!(total_rows(&row_counts(&database).await) > 0);
}

#[tokio::test]
async fn a_dump_also_imports_into_a_new_redb_data_dir() {
    let (source_dir, dump, ws) = small_dump().await;
    let env = [
        ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
        ("SWITCHYARD_STORAGE__BACKEND", "redb"),
    ];
    let source = ChildServer::start_with_env(source_dir.path(), Some(ADMIN_TOKEN), &env).await;
    let before = listing(&source, &ws).await;
    assert_eq!(before.0.as_array().unwrap().len(), 3);
    assert_eq!(source.terminate().await.code(), Some(0));

    let target_dir = tempfile::tempdir().unwrap();
    let data_dir = target_dir.path().join("data");
    let into_redb = async |master_key: &str| {
        let env = [
            ("SWITCHYARD_DATA_DIR", data_dir.to_str().unwrap()),
            ("SWITCHYARD_STORAGE__BACKEND", "redb"),
            ("SWITCHYARD_MASTER_KEY", master_key),
        ];
        run(&["import", "--input", dump.to_str().unwrap()], &env).await
    };
    let refused = into_redb(OTHER_MASTER_KEY).await;
    assert!(!refused.ok && refused.stderr.contains("wrong master key"));
    assert!(!data_dir.join("switchyard.redb").exists());
    let imported = into_redb(MASTER_KEY).await;
    assert!(imported.ok, "{}", imported.stderr);
    assert!(imported.stdout.contains("into redb"), "{}", imported.stdout);
    let again = into_redb(MASTER_KEY).await;
    assert!(
        !again.ok && again.stderr.contains("not empty"),
        "{}",
        again.stderr
    );

    let target = ChildServer::start_with_env(&data_dir, Some(ADMIN_TOKEN), &env).await;
    assert_eq!(listing(&target, &ws).await, before);
    assert_eq!(target.terminate().await.code(), Some(0));
}

#[tokio::test]
async fn postgresql_exports_too_into_either_store() {
    let (source_dir, dump, ws) = small_dump().await;
    let env = [
        ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
        ("SWITCHYARD_STORAGE__BACKEND", "redb"),
    ];
    let source = ChildServer::start_with_env(source_dir.path(), Some(ADMIN_TOKEN), &env).await;
    let before = listing(&source, &ws).await;
    assert_eq!(source.terminate().await.code(), Some(0));
    let (_first_dir, first) = new_database().await;
    let imported = import(&first, &dump, MASTER_KEY).await;
    assert!(imported.ok, "{}", imported.stderr);

    // Out of PostgreSQL (read from one snapshot)…
    let from_postgres = source_dir.path().join("from-postgres.dump");
    let pg_env = [
        ("SWITCHYARD_STORAGE__BACKEND", "postgres"),
        ("SWITCHYARD_STORAGE__POSTGRES__URL", first.as_str()),
    ];
    let mut with_key = pg_env.to_vec();
    with_key.push(("SWITCHYARD_MASTER_KEY", OTHER_MASTER_KEY));
    let output = from_postgres.to_str().unwrap();
    let refused = run(&["export", "--output", output], &with_key).await;
    assert!(
        !refused.ok && refused.stderr.contains("master key"),
        "{}",
        refused.stderr
    );
    assert!(!from_postgres.exists());
    with_key.pop();
    with_key.push(("SWITCHYARD_MASTER_KEY", MASTER_KEY));
    let exported = run(&["export", "--output", output], &with_key).await;
    assert!(exported.ok, "{}", exported.stderr);
    assert!(
        exported.stdout.contains("from PostgreSQL"),
        "{}",
        exported.stdout
    );

    // …into another PostgreSQL database, row for row…
    let (_second_dir, second) = new_database().await;
    let imported = import(&second, &from_postgres, MASTER_KEY).await;
    assert!(imported.ok, "{}", imported.stderr);
    assert_eq!(row_counts(&second).await, row_counts(&first).await);

    // …and back into redb, where the API shows what it showed at first.
    let data_dir = source_dir.path().join("back-to-redb");
    let back = [
        ("SWITCHYARD_DATA_DIR", data_dir.to_str().unwrap()),
        ("SWITCHYARD_STORAGE__BACKEND", "redb"),
        ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
    ];
    let imported = run(&["import", "--input", output], &back).await;
    assert!(imported.ok, "{}", imported.stderr);
    let target = ChildServer::start_with_env(&data_dir, Some(ADMIN_TOKEN), &env).await;
    assert_eq!(listing(&target, &ws).await, before);
    assert_eq!(target.terminate().await.code(), Some(0));
}
