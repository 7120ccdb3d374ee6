//! `TestApp`: an in-process server on a temp data dir, and a child-process
//! variant for tests that kill the binary.

use crate::backend;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use switchyard::config::Config;
use switchyard::secret::Secret;
use switchyard::server::{Server, ServerOptions};
use switchyard::store::FaultSwitch;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub const EXAMPLE_EVENT: &str = switchyard::bench::EXAMPLE_EVENT;

pub fn example_event() -> Value {
    serde_json::from_str(EXAMPLE_EVENT).unwrap()
}

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    data_dir: TempDir,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
}

/// A workspace with its keys.
#[derive(Debug, Clone)]
pub struct TestWorkspace {
    pub id: String,
    pub publishable_key: String,
    pub secret_key: String,
}

pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::defaults().unwrap();
    config.listen = "127.0.0.1:0".into();
    config.data_dir = data_dir.to_path_buf();
    config.admin_token = Some(Secret::new(ADMIN_TOKEN));
    // Webhooks saved at these names with the guard on have their host
    // resolved; pinned, that needs no DNS query (no test reaches the
    // internet). No test sends to them.
    for name in ["example.com", "hooks.example.com"] {
        config
            .delivery
            .hosts
            .insert(name.into(), vec![EXAMPLE_COM_ADDRESS]);
    }
    config
}

/// A public address (example.com's): it passes the private-network guard.
pub const EXAMPLE_COM_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(93, 184, 215, 14));

/// How a child server gets `test_config`'s pinned names
/// (`cli.rs` checks that the binary reads them).
pub const PINNED_HOSTS_VARIABLE: &str = "SWITCHYARD_DELIVERY__HOSTS";

pub fn pinned_hosts_value() -> String {
    format!(
        "{{\"example.com\"=[\"{EXAMPLE_COM_ADDRESS}\"], \
         \"hooks.example.com\"=[\"{EXAMPLE_COM_ADDRESS}\"]}}"
    )
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_on(tempfile::tempdir().unwrap(), adjust).await
    }

    /// A server on an existing data dir (e.g. a copied fixture), with the
    /// test defaults adjusted by `adjust`.
    pub async fn spawn_on(data_dir: TempDir, adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config(data_dir.path());
        adjust(&mut config);
        backend::configure(&mut config).await;
        let (url, shutdown, server) = start(config).await;
        Self {
            url,
            http: reqwest::Client::new(),
            data_dir,
            shutdown,
            server: Some(server),
        }
    }

    /// A server whose database file fails every write while `faults` is on,
    /// with the test defaults adjusted by `adjust`.
    pub async fn spawn_with_storage_faults(
        faults: FaultSwitch,
        adjust: impl FnOnce(&mut Config),
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let options = ServerOptions {
            storage_faults: Some(faults),
        };
        let mut config = test_config(data_dir.path());
        adjust(&mut config);
        let (url, shutdown, server) = start_with(config, options).await;
        Self {
            url,
            http: reqwest::Client::new(),
            data_dir,
            shutdown,
            server: Some(server),
        }
    }

    /// A server that may deliver to loopback receivers, with a quick retry
    /// schedule of two immediate retries.
    pub async fn spawn_for_delivery() -> Self {
        Self::spawn_with(|config| {
            config.delivery.allow_private_networks = true;
            config.delivery.retry_schedule = vec![0, 0];
            config.delivery.timeout_seconds = 2;
        })
        .await
    }

    /// Stops gracefully and starts again on the same data dir.
    pub async fn restart(&mut self) {
        self.restart_with(|_| {}).await;
    }

    /// Stops gracefully and starts again on the same data dir, with the
    /// test defaults adjusted by `adjust`.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.stop().await;
        let mut config = test_config(self.data_dir.path());
        adjust(&mut config);
        backend::configure(&mut config).await;
        let (url, shutdown, server) = start(config).await;
        self.url = url;
        self.shutdown = shutdown;
        self.server = Some(server);
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub async fn create_workspace(&self, name: &str) -> TestWorkspace {
        let (status, body) = self
            .send(
                self.post("/v1/workspaces", ADMIN_TOKEN)
                    .json(&json!({"name": name})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        workspace_from(&body)
    }

    pub fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    pub fn post(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    pub fn delete(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .delete(format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    /// Sends and returns the status and the JSON body (`Null` when empty).
    pub async fn send(&self, request: reqwest::RequestBuilder) -> (StatusCode, Value) {
        send(request).await
    }

    /// GETs an unauthenticated page (`/metrics`, `/openapi.json`) as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Emits the example event and expects 202; returns the event id.
    pub async fn emit_example(&self, key: &str) -> String {
        let (status, body) = self
            .send(self.post("/v1/events", key).json(&example_event()))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub fn patch(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http
            .patch(format!("{}{path}", self.url))
            .bearer_auth(key)
    }

    /// Creates a webhook connection; returns its id and signing secret.
    pub async fn create_webhook(&self, ws: &TestWorkspace, url: &str) -> (String, String) {
        let body = json!({"type": "webhook", "name": "hook", "config": {"url": url}});
        let (status, answer) = self
            .send(self.post("/v1/connections", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        (
            answer["id"].as_str().unwrap().to_string(),
            answer["signing_secret"].as_str().unwrap().to_string(),
        )
    }

    /// Creates a rule sending `events` to `connection`; returns its id.
    pub async fn create_rule(&self, ws: &TestWorkspace, connection: &str, extra: Value) -> String {
        let mut body = json!({"name": "rule", "events": ["alert.*"], "connection_id": connection});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let (status, answer) = self
            .send(self.post("/v1/rules", &ws.secret_key).json(&body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer["id"].as_str().unwrap().to_string()
    }

    /// A workspace whose `alert.*` events all go to one webhook at `url`;
    /// with the connection's id.
    pub async fn workspace_with_webhook(&self, url: &str) -> (TestWorkspace, String) {
        let ws = self.create_workspace("acme").await;
        let (connection, _) = self.create_webhook(&ws, url).await;
        self.create_rule(&ws, &connection, json!({})).await;
        (ws, connection)
    }

    /// Emits the example event; its id and its (first) delivery's.
    pub async fn emit_for_delivery(&self, ws: &TestWorkspace) -> (String, String) {
        let event = self.emit_example(&ws.publishable_key).await;
        let delivery = self.deliveries_of(ws, &event).await.remove(0);
        (event, delivery)
    }

    /// The delivery ids of an event (as `GET /v1/events/{id}` lists them).
    pub async fn deliveries_of(&self, ws: &TestWorkspace, event_id: &str) -> Vec<String> {
        let (status, event) = self
            .send(self.get(&format!("/v1/events/{event_id}"), &ws.secret_key))
            .await;
        assert_eq!(status, StatusCode::OK, "{event}");
        event["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|delivery| delivery["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Polls a delivery until `done` holds for it (at most 20 s).
    pub async fn wait_for_delivery(
        &self,
        ws: &TestWorkspace,
        delivery_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let (status, delivery) = self
                .send(self.get(&format!("/v1/deliveries/{delivery_id}"), &ws.secret_key))
                .await;
            assert_eq!(status, StatusCode::OK, "{delivery}");
            if done(&delivery) {
                return delivery;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "delivery never got there: {delivery}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Every event id of the workspace, newest first, across all pages.
    pub async fn all_event_ids(&self, secret_key: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(after) => format!("/v1/events?limit=500&after={after}"),
                None => "/v1/events?limit=500".to_string(),
            };
            let (status, body) = self.send(self.get(&path, secret_key)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for event in body["data"].as_array().unwrap() {
                ids.push(event["id"].as_str().unwrap().to_string());
            }
            match body["next"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return ids,
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        backend::drop_database_for(self.data_dir.path());
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

pub fn workspace_from(body: &Value) -> TestWorkspace {
    TestWorkspace {
        id: body["id"].as_str().unwrap().to_string(),
        publishable_key: body["publishable_key"].as_str().unwrap().to_string(),
        secret_key: body["secret_key"].as_str().unwrap().to_string(),
    }
}

async fn start(config: Config) -> (String, CancellationToken, JoinHandle<()>) {
    start_with(config, ServerOptions::default()).await
}

async fn start_with(
    config: Config,
    options: ServerOptions,
) -> (String, CancellationToken, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::with_options(listener, config, options)
        .await
        .unwrap();
    let url = format!("http://{}", server.local_addr());
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let handle = tokio::spawn(async move { server.run(token).await.unwrap() });
    (url, shutdown, handle)
}

/// The suite's own variables (`scripts/test` sets them): a child binary
/// gets what they stand for as configuration instead, and would otherwise
/// warn that they name no configuration key.
pub const SUITE_ONLY_VARIABLES: [&str; 2] =
    ["SWITCHYARD_TEST_POSTGRES_URL", "SWITCHYARD_TEST_BACKEND"];

/// The real `switchyard serve` binary as a child process.
pub struct ChildServer {
    pub child: Child,
    pub url: String,
    pub stdout_lines: Vec<String>,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_switchyard"))
}

impl ChildServer {
    /// Starts the binary on `data_dir` and waits for its `listening on` line.
    pub async fn start(data_dir: &Path, admin_token: Option<&str>) -> Self {
        Self::start_with_env(data_dir, admin_token, &[]).await
    }

    pub async fn start_with_env(
        data_dir: &Path,
        admin_token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_logging_to(data_dir, admin_token, env, None).await
    }

    /// Like `start_with_env`, writing the server's log (stderr) to `log`.
    pub async fn start_logging_to(
        data_dir: &Path,
        admin_token: Option<&str>,
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
            .env("SWITCHYARD_DATA_DIR", data_dir)
            .env("SWITCHYARD_LOG__LEVEL", "warn")
            .env(PINNED_HOSTS_VARIABLE, pinned_hosts_value())
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for name in SUITE_ONLY_VARIABLES {
            command.env_remove(name);
        }
        if let Some(token) = admin_token {
            command.env("SWITCHYARD_ADMIN_TOKEN", token);
        }
        for (key, value) in backend::child_env(data_dir).await {
            command.env(key, value);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        if let Some(log) = log {
            command.stderr(std::fs::File::create(log).unwrap());
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stdout_lines = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            stdout_lines.push(line.clone());
            if let Some(url) = line.strip_prefix("listening on ") {
                let url = url.to_string();
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                return Self {
                    child,
                    url,
                    stdout_lines,
                };
            }
        }
        panic!("server exited before listening: {stdout_lines:?}");
    }

    /// Creates a workspace with the admin token (the server must have been
    /// started with `ADMIN_TOKEN`).
    pub async fn create_workspace(&self, name: &str) -> TestWorkspace {
        let (status, body) = send(
            reqwest::Client::new()
                .post(format!("{}/v1/workspaces", self.url))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({ "name": name })),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        workspace_from(&body)
    }

    /// Emits the example event with `key`, expecting 202.
    pub async fn emit_example(&self, key: &str) {
        let (status, body) = send(
            reqwest::Client::new()
                .post(format!("{}/v1/events", self.url))
                .bearer_auth(key)
                .json(&example_event()),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM, then the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.child.wait().await.unwrap()
    }
}
