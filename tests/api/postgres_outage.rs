//! PostgreSQL going away and coming back, seen over HTTP: `/readyz` turns
//! 503, ingest answers 503 `storage_unavailable` (never a 202 it could not
//! commit), and both recover without a restart. The database sits behind a
//! TCP proxy the test cuts and restores. This test is about the PostgreSQL
//! backend, so it runs on it in both passes of `scripts/test` (it needs
//! `SWITCHYARD_TEST_POSTGRES_URL` either way).

use crate::backend;
use crate::helpers::{EXAMPLE_EVENT, TestApp};
use reqwest::StatusCode;
use reqwest::header;
use serde_json::Value;
use std::time::{Duration, Instant};
use switchyard::config::StorageBackend;
use switchyard::secret::Secret;
use tokio::sync::watch;

/// A TCP front for the test server that can be cut and restored.
struct Proxy {
    port: u16,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start(server: tokio_postgres::Config) -> Self {
        let port = server.get_ports().first().copied().unwrap_or(5432);
        let upstream = match server.get_hosts().first() {
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                Err(dir.join(format!(".s.PGSQL.{port}")))
            }
            Some(tokio_postgres::config::Host::Tcp(host)) => Ok(format!("{host}:{port}")),
            None => Ok(format!("localhost:{port}")),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let (up, watch) = watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*watch.borrow() {
                    continue; // dropped: refused
                }
                let upstream = upstream.clone();
                let mut cut = watch.clone();
                tokio::spawn(async move {
                    let copy = async {
                        match upstream {
                            Err(socket) => {
                                let mut server = tokio::net::UnixStream::connect(socket).await?;
                                tokio::io::copy_bidirectional(&mut client, &mut server).await
                            }
                            Ok(address) => {
                                let mut server = tokio::net::TcpStream::connect(address).await?;
                                tokio::io::copy_bidirectional(&mut client, &mut server).await
                            }
                        }
                    };
                    tokio::select! {
                        _ = copy => {}
                        _ = cut.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self {
            port: proxy_port,
            up,
        }
    }
}

async fn readyz(app: &TestApp) -> StatusCode {
    let response = app
        .http
        .get(format!("{}/readyz", app.url))
        .send()
        .await
        .unwrap();
    response.status()
}

async fn emit(app: &TestApp, key: &str) -> (StatusCode, Option<String>, Value) {
    let response = app
        .http
        .post(format!("{}/v1/events", app.url))
        .bearer_auth(key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(EXAMPLE_EVENT)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|value| value.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

/// Polls `/readyz` until it answers `wanted`, for at most `within`.
async fn wait_for_readyz(app: &TestApp, wanted: StatusCode, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if readyz(app).await == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "/readyz never answered {wanted}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ingest_answers_503_while_postgres_is_unreachable_and_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let database = backend::database_for(dir.path()).await;
    let target = switchyard::store::postgres::parse_url(&database).unwrap();
    let proxy = Proxy::start(target.clone()).await;
    let through_proxy = format!(
        "host=127.0.0.1 port={} user={} dbname={}",
        proxy.port,
        target.get_user().unwrap_or("postgres"),
        target.get_dbname().unwrap_or("postgres"),
    );
    let app = TestApp::spawn_with(|config| {
        config.data_dir = dir.path().to_path_buf();
        config.storage.backend = StorageBackend::Postgres;
        config.storage.postgres.url = Some(Secret::new(through_proxy));
    })
    .await;
    let ws = app.create_workspace("outage").await;
    assert_eq!(readyz(&app).await, StatusCode::OK);
    assert_eq!(
        emit(&app, &ws.publishable_key).await.0,
        StatusCode::ACCEPTED
    );

    proxy.up.send_replace(false);
    let (status, retry_after, body) = emit(&app, &ws.publishable_key).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(retry_after.is_some(), "503 without Retry-After");
    assert_eq!(body["error"]["code"], "storage_unavailable", "{body}");
    wait_for_readyz(
        &app,
        StatusCode::SERVICE_UNAVAILABLE,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(
        emit(&app, &ws.publishable_key).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    proxy.up.send_replace(true);
    wait_for_readyz(&app, StatusCode::OK, Duration::from_secs(15)).await;
    let (status, _, body) = emit(&app, &ws.publishable_key).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let listed = app
        .http
        .get(format!("{}/v1/events", app.url))
        .bearer_auth(&ws.secret_key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        2,
        "exactly the two acknowledged events: {listed}"
    );
}
