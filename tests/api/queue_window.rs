//! The scheduler's bounded window over the durable queue: memory holds at
//! most `delivery.queue_window` entries whatever the backlog, each
//! connection is still served in due order, a hanging connection's backlog
//! cannot starve anyone else, and a restart reads only the window.

use crate::helpers::{ADMIN_TOKEN, TestApp, TestWorkspace, example_event};
use crate::receiver::{Receiver, Reply};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use switchyard::config::Config;

const WINDOW: usize = 16;

fn small_window(config: &mut Config) {
    config.delivery.allow_private_networks = true;
    config.delivery.queue_window = WINDOW;
}

/// `GET /v1/queue`.
async fn queue_state(app: &TestApp) -> Value {
    let (status, body) = app.send(app.get("/v1/queue", ADMIN_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Polls `GET /v1/queue` until `done` holds (at most 20 s), checking on
/// every look that the window was never exceeded.
async fn wait_for_queue(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = queue_state(app).await;
        assert!(
            state["peak_in_memory"].as_u64().unwrap() <= WINDOW as u64,
            "the window was exceeded: {state}"
        );
        if done(&state) {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "the queue never got there: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Emits `count` example events in batches of 40; their ids.
async fn emit_many(app: &TestApp, ws: &TestWorkspace, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut left = count;
    while left > 0 {
        let batch = left.min(40);
        left -= batch;
        let events: Vec<Value> = (0..batch).map(|_| example_event()).collect();
        let (status, body) = app
            .send(
                app.post("/v1/events/batch", &ws.publishable_key)
                    .json(&json!({ "events": events })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        for accepted in body["data"].as_array().unwrap() {
            ids.push(accepted["id"].as_str().unwrap().to_string());
        }
    }
    ids
}

#[tokio::test]
async fn the_window_stays_bounded_and_a_connection_is_served_in_due_order() {
    let app = TestApp::spawn_with(|config| {
        small_window(config);
        config.delivery.max_in_flight_per_connection = 1;
        config.delivery.timeout_seconds = 60;
    })
    .await;
    // The first request hangs, so everything after it backs up.
    let mut receiver = Receiver::start(Reply::Status(200)).await;
    receiver.script([Reply::Hang]);
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let events = emit_many(&app, &ws, 10 * WINDOW).await;
    let first = receiver.next().await;

    let state = wait_for_queue(&app, |state| state["backlog"] == 10 * WINDOW).await;
    assert_eq!(state["in_flight"], 1, "{state}");
    assert!(
        state["in_memory"].as_u64().unwrap() <= WINDOW as u64,
        "{state}"
    );

    receiver.release();
    let mut received = vec![first];
    while received.len() < events.len() {
        received.push(receiver.next().await);
    }
    // Queue order is (due time, delivery id); a first attempt is due when
    // its event was received.
    let keys: Vec<(String, String)> = received
        .iter()
        .map(|request| {
            let body = request.json();
            let due = body["timestamp"].as_str().unwrap().to_string();
            (due, request.header("webhook-id").to_string())
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(keys, sorted, "delivered in due order, each once");
    wait_for_queue(&app, |state| {
        state["backlog"] == 0 && state["in_memory"] == 0
    })
    .await;
}

#[tokio::test]
async fn a_hanging_connections_backlog_beyond_the_window_does_not_delay_another_workspace() {
    let app = TestApp::spawn_with(|config| {
        small_window(config);
        config.delivery.max_in_flight_per_connection = 2;
        config.delivery.timeout_seconds = 60;
    })
    .await;
    let mut stuck = Receiver::start(Reply::Hang).await;
    let mut healthy = Receiver::start(Reply::Status(200)).await;
    let (a, _) = app.workspace_with_webhook(&stuck.url).await;
    let (b, _) = app.workspace_with_webhook(&healthy.url).await;
    emit_many(&app, &a, 8 * WINDOW).await;
    stuck.next().await;
    stuck.next().await;
    // A's lane fills the whole window (a refill tops it up to its share,
    // which is all of it while nobody else has a backlog).
    wait_for_queue(&app, |state| {
        state["backlog"] == 8 * WINDOW && state["in_memory"] == WINDOW
    })
    .await;

    for _ in 0..WINDOW + 4 {
        let (_, delivery) = app.emit_for_delivery(&b).await;
        app.wait_for_delivery(&b, &delivery, |delivery| delivery["status"] == "succeeded")
            .await;
        healthy.next().await;
    }
    let state = wait_for_queue(&app, |state| state["in_flight"] == 2).await;
    assert_eq!(
        state["backlog"],
        8 * WINDOW,
        "A's backlog is still there: {state}"
    );
    assert!(stuck.try_next().is_none(), "A stays within its cap");
    stuck.release();
}

#[tokio::test]
async fn after_a_restart_the_backlog_is_read_a_window_at_a_time_and_all_delivered() {
    let adjust = |config: &mut Config| {
        small_window(config);
        config.delivery.max_in_flight_per_connection = 2;
        config.delivery.timeout_seconds = 2;
        config.delivery.retry_schedule = vec![1; 20];
    };
    let mut app = TestApp::spawn_with(adjust).await;
    let mut receiver = Receiver::start(Reply::Hang).await;
    let (ws, _) = app.workspace_with_webhook(&receiver.url).await;
    let events = emit_many(&app, &ws, 6 * WINDOW).await;
    receiver.next().await;
    wait_for_queue(&app, |state| state["backlog"] == 6 * WINDOW).await;

    // Down while it stops; up once it starts again.
    app.restart_with(|config| {
        adjust(config);
        receiver.answer_by_default(Reply::Status(200));
    })
    .await;
    receiver.release();
    for event in &events {
        for delivery in app.deliveries_of(&ws, event).await {
            app.wait_for_delivery(&ws, &delivery, |delivery| delivery["status"] == "succeeded")
                .await;
        }
    }
    let state = wait_for_queue(&app, |state| state["backlog"] == 0).await;
    assert!(
        state["peak_in_memory"].as_u64().unwrap() <= WINDOW as u64,
        "the restart read only the window: {state}"
    );
}
