//! Retention removes old events with their deliveries, never one still
//! queued; `switchyard compact` gives the freed space back, only with the
//! server stopped.

use crate::helpers::{ADMIN_TOKEN, ChildServer, TestApp, binary, send};
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard::config::RetentionPeriod;

/// Polls `check` every 50 ms until it holds, failing after 20 s.
async fn wait_until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_is(status: &'static str) -> impl Fn(&Value) -> bool {
    move |delivery| delivery["status"] == status
}

/// The value of a counter or gauge line such as `name{table="events"} 3`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn old_finished_events_go_while_a_queued_delivery_keeps_its_event() {
    let app = TestApp::spawn_with(|config| {
        config.delivery.allow_private_networks = true;
        // One failure, then the next attempt an hour away: still queued.
        config.delivery.retry_schedule = vec![3600];
        config.delivery.timeout_seconds = 2;
        config.retention.events = RetentionPeriod::For(Duration::from_secs(2));
        config.retention.interval = Duration::from_millis(100);
    })
    .await;
    let mut failing = Receiver::start(Reply::Status(500)).await;
    let mut working = Receiver::start(Reply::Status(200)).await;
    // Created and emitted first, so every sweep that reaches the working
    // workspace's event (newer, and a later key) has already looked at it.
    let (stuck_ws, _) = app.workspace_with_webhook(&failing.url).await;
    let (stuck_event, stuck_delivery) = app.emit_for_delivery(&stuck_ws).await;
    failing.next().await;
    app.wait_for_delivery(&stuck_ws, &stuck_delivery, status_is("retrying"))
        .await;
    let (ws, _) = app.workspace_with_webhook(&working.url).await;
    let (event, delivery) = app.emit_for_delivery(&ws).await;
    // Its one attempt succeeds; the sweeps may take it from then on.
    working.next().await;

    let event_path = format!("/v1/events/{event}");
    let delivery_path = format!("/v1/deliveries/{delivery}");
    wait_until(
        "the old succeeded event and its delivery are removed",
        || async {
            let (event_status, _) = app.send(app.get(&event_path, &ws.secret_key)).await;
            let (delivery_status, _) = app.send(app.get(&delivery_path, &ws.secret_key)).await;
            event_status == StatusCode::NOT_FOUND && delivery_status == StatusCode::NOT_FOUND
        },
    )
    .await;

    // Older still, but its delivery waits for its next attempt.
    let (status, kept) = app
        .send(app.get(&format!("/v1/events/{stuck_event}"), &stuck_ws.secret_key))
        .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["deliveries"][0]["id"], stuck_delivery.as_str());
    let (status, kept) = app
        .send(app.get(
            &format!("/v1/deliveries/{stuck_delivery}"),
            &stuck_ws.secret_key,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["status"], "retrying");
    assert_eq!(kept["attempts"].as_array().unwrap().len(), 1);

    let text = app.get_text("/metrics").await;
    for table in ["events", "deliveries", "attempts"] {
        let series = format!("switchyard_retention_deleted_total{{table=\"{table}\"}}");
        let removed = metric(&text, &series).unwrap_or_else(|| panic!("{series} in:\n{text}"));
        assert!(removed >= 1.0, "{series} = {removed}");
    }
    if crate::backend::on_postgres() {
        return; // switchyard_database_bytes is the redb file's size
    }
    let size = std::fs::metadata(app.data_dir().join("switchyard.redb"))
        .unwrap()
        .len() as f64;
    let gauge = metric(&text, "switchyard_database_bytes").expect("switchyard_database_bytes");
    assert!(gauge > 0.0 && gauge <= size, "gauge {gauge}, file {size}");
}

/// Runs `switchyard compact` on `data_dir`.
async fn compact(data_dir: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(binary())
        .arg("compact")
        .env("SWITCHYARD_DATA_DIR", data_dir)
        .output()
        .await
        .unwrap()
}

/// The exact byte count `compact` reports after `label`, as in
/// `, freed 7.9 MiB (8290304 bytes)`.
fn reported_bytes(text: &str, label: &str) -> u64 {
    let (_, rest) = text.split_once(label).expect(label);
    let (number, _) = rest.split_once(" bytes").expect("a byte count");
    let number = number.rsplit(['(', ' ']).next().unwrap_or(number);
    number
        .parse()
        .unwrap_or_else(|_| panic!("{label} in {text}"))
}

#[tokio::test]
async fn compact_refuses_a_running_server_and_frees_space_once_it_stopped() {
    if crate::backend::redb_only("compact_refuses_a_running_server_and_frees_space_once_it_stopped")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let output = compact(dir.path()).await;
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("there is no database at"), "{error}");

    let log = dir.path().join("server.log");
    let server = ChildServer::start_logging_to(
        dir.path(),
        Some(ADMIN_TOKEN),
        &[("SWITCHYARD_LOG__LEVEL", "info")],
        Some(&log),
    )
    .await;
    let http = reqwest::Client::new();
    let emit_padded = |key: String| {
        let body = json!({"events": vec![json!({"event": "bulk.load", "payload": {"pad": "x".repeat(4000)}}); 50]});
        let request = http
            .post(format!("{}/v1/events/batch", server.url))
            .bearer_auth(key)
            .json(&body);
        async move {
            let (status, answer) = send(request).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
        }
    };
    // About 8 MB of events, then a few that stay, at the end of the file
    // (so it cannot simply be cut short once the first ones are gone).
    let bulky = server.create_workspace("bulky").await;
    for _ in 0..40 {
        emit_padded(bulky.publishable_key.clone()).await;
    }
    let kept = server.create_workspace("kept").await;
    emit_padded(kept.publishable_key.clone()).await;

    let output = compact(dir.path()).await;
    assert!(!output.status.success(), "compacted under a running server");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("the server is running (the database is in use); stop it first"),
        "{error}"
    );

    let (status, answer) = send(
        http.delete(format!("{}/v1/workspaces/{}", server.url, bulky.id))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{answer}");
    wait_until("the deleted workspace's events are purged", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("deleted workspaces purged") }
    })
    .await;
    assert!(server.terminate().await.success());

    let output = compact(dir.path()).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (before, after, freed) = (
        reported_bytes(&text, ": before "),
        reported_bytes(&text, ", after "),
        reported_bytes(&text, ", freed "),
    );
    println!("{text}");
    // 2,000 events of about 4 kB went; compaction gives most of it back.
    assert!(freed >= 4_000_000, "{text}");
    assert_eq!(before - after, freed, "{text}");
    let on_disk = std::fs::metadata(dir.path().join("switchyard.redb"))
        .unwrap()
        .len();
    assert_eq!(on_disk, after, "{text}");
}
