//! `limits.events_per_second`: one workspace's flood is refused with 429
//! and `Retry-After` while the others go on, and a refused request stores
//! nothing.

use crate::helpers::{TestApp, example_event};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One event a second, a burst of `burst_seconds` events.
async fn spawn_limited(burst_seconds: u32) -> TestApp {
    TestApp::spawn_with(|config| {
        config.limits.events_per_second = 1;
        config.limits.burst_seconds = burst_seconds;
    })
    .await
}

fn batch(events: usize) -> Value {
    json!({"events": vec![example_event(); events]})
}

/// Emits one event; the status, `Retry-After` (if any) and the body.
async fn emit(
    app: &TestApp,
    key: &str,
    body: &Value,
    path: &str,
) -> (StatusCode, Option<u64>, Value) {
    let response = app.post(path, key).json(body).send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|value| value.to_str().unwrap().parse::<u64>().unwrap());
    let body = response.json::<Value>().await.unwrap();
    (status, retry_after, body)
}

#[tokio::test]
async fn a_flooding_workspace_gets_429_while_another_goes_on() {
    let app = spawn_limited(3).await;
    let flooder = app.create_workspace("flooder").await;
    let neighbour = app.create_workspace("neighbour").await;

    // The burst (3) goes through, then the flood is refused. A slow machine
    // may refill a token between two requests, hence a loop with a bound.
    let mut accepted = 0;
    let refused = loop {
        let (status, retry_after, body) = emit(
            &app,
            &flooder.publishable_key,
            &example_event(),
            "/v1/events",
        )
        .await;
        if status == StatusCode::ACCEPTED {
            accepted += 1;
            assert!(accepted < 20, "the limit never refused anything");
            continue;
        }
        break (status, retry_after, body);
    };
    assert!(accepted >= 3, "the whole burst was allowed: {accepted}");
    let (status, retry_after, body) = refused;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(
        retry_after,
        Some(1),
        "one event a second: it fits again within a second"
    );

    // The same moment, the neighbour's whole burst goes through.
    let (status, _, body) = emit(
        &app,
        &neighbour.publishable_key,
        &batch(3),
        "/v1/events/batch",
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Nothing of the refused request was stored.
    assert_eq!(app.all_event_ids(&flooder.secret_key).await.len(), accepted);

    // After the refill the flooder is let in again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = emit(
            &app,
            &flooder.publishable_key,
            &example_event(),
            "/v1/events",
        )
        .await;
        if status == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert!(Instant::now() < deadline, "still refused after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.all_event_ids(&flooder.secret_key).await.len(),
        accepted + 1
    );

    let metrics = app.get_text("/metrics").await;
    assert!(
        metrics.contains("switchyard_events_rate_limited_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn each_event_of_a_batch_counts_one() {
    // A burst of 10 at one a second: a batch of 8 leaves 2, so a batch of
    // 4 right after is refused (it would pass if a batch counted once),
    // unless the machine took two whole seconds between the two requests.
    let app = spawn_limited(10).await;
    let ws = app.create_workspace("acme").await;
    let (status, _, body) = emit(&app, &ws.publishable_key, &batch(8), "/v1/events/batch").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, retry_after, body) =
        emit(&app, &ws.publishable_key, &batch(4), "/v1/events/batch").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(
        matches!(retry_after, Some(1..=2)),
        "two more events come back in two seconds: {retry_after:?}"
    );
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 8);
}

#[tokio::test]
async fn a_batch_larger_than_the_burst_is_invalid_not_limited() {
    let app = spawn_limited(5).await;
    let ws = app.create_workspace("acme").await;
    let (status, retry_after, body) =
        emit(&app, &ws.publishable_key, &batch(6), "/v1/events/batch").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(retry_after, None, "waiting would not help");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("events:") && message.contains("burst of 5"),
        "{message}"
    );
    // It took nothing from the allowance: the whole burst is still there.
    let (status, _, body) = emit(&app, &ws.publishable_key, &batch(5), "/v1/events/batch").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.all_event_ids(&ws.secret_key).await.len(), 5);
}

#[tokio::test]
async fn without_a_limit_nothing_is_refused() {
    let app = TestApp::spawn().await;
    let ws = app.create_workspace("acme").await;
    for _ in 0..3 {
        let (status, _, body) =
            emit(&app, &ws.publishable_key, &batch(100), "/v1/events/batch").await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
}
