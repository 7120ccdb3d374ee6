//! Several `switchyard serve` processes on one PostgreSQL database (issue
//! 11, item 4): every delivery is attempted by one node with no crash, a
//! killed node's connections pass to the others after its lease, and the
//! per-connection cap, order and Retry-After pauses hold across nodes; and a
//! key rotated through one node fails on another within a second (item 5).
//! PostgreSQL only: on redb there is one node per file by construction.
//!
//! The nodes share one data dir (so one database, see `backend.rs`), the
//! master key and the admin token; a local receiver counts requests by
//! `webhook-id` (the delivery id) per hook path and tracks how many are in
//! flight at once.

use crate::helpers::{ADMIN_TOKEN, ChildServer, TestWorkspace, send, workspace_from};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

const MASTER_KEY: &str = "5eb63bbbe01eeed093cb22bb8f5acdc35eb63bbbe01eeed093cb22bb8f5acdc3";

/// What the receiver saw of one request.
#[derive(Debug, Clone)]
struct Arrival {
    delivery: String,
    seq: Option<u64>,
    at: Instant,
}

#[derive(Default)]
struct Seen {
    arrivals: Vec<Arrival>,
    in_flight: HashMap<usize, usize>,
    most_in_flight: HashMap<usize, usize>,
    /// Answers to give, per hook, before the default 200.
    script: HashMap<usize, VecDeque<(u16, Option<&'static str>)>>,
}

/// Webhook endpoints `/hook/{n}` that answer after `delay`.
#[derive(Clone)]
struct Hooks {
    base: String,
    seen: Arc<Mutex<Seen>>,
}

impl Hooks {
    async fn start(delay: Duration) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let app = axum::Router::new()
            .route("/hook/{n}", axum::routing::post(answer))
            .with_state((seen.clone(), delay));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { base, seen }
    }

    fn url(&self, hook: usize) -> String {
        format!("{}/hook/{hook}", self.base)
    }

    fn script(&self, hook: usize, answers: impl IntoIterator<Item = (u16, Option<&'static str>)>) {
        let mut seen = self.seen.lock().unwrap();
        seen.script.entry(hook).or_default().extend(answers);
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.seen.lock().unwrap().arrivals.clone()
    }

    fn most_in_flight(&self, hook: usize) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.most_in_flight.get(&hook).copied().unwrap_or(0)
    }

    /// Requests per delivery id.
    fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for arrival in self.arrivals() {
            *counts.entry(arrival.delivery).or_default() += 1;
        }
        counts
    }

    /// Waits until `enough` holds for the arrivals, polling, at most
    /// `within`; the arrivals then.
    async fn wait_for(
        &self,
        within: Duration,
        enough: impl Fn(&[Arrival]) -> bool,
    ) -> Vec<Arrival> {
        let deadline = Instant::now() + within;
        loop {
            let arrivals = self.arrivals();
            if enough(&arrivals) {
                return arrivals;
            }
            assert!(
                Instant::now() < deadline,
                "not enough arrivals within {within:?}: {} so far",
                arrivals.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    State((seen, delay)): State<(Arc<Mutex<Seen>>, Duration)>,
    Path(hook): Path<usize>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let arrival = Arrival {
        delivery: headers
            .get("webhook-id")
            .and_then(|id| id.to_str().ok())
            .unwrap_or("")
            .to_string(),
        seq: body["data"]["seq"].as_u64(),
        at: Instant::now(),
    };
    let scripted = {
        let mut seen = seen.lock().unwrap();
        seen.arrivals.push(arrival);
        let now = seen.in_flight.entry(hook).or_default();
        *now += 1;
        let now = *now;
        let most = seen.most_in_flight.entry(hook).or_default();
        *most = (*most).max(now);
        seen.script.get_mut(&hook).and_then(VecDeque::pop_front)
    };
    // A slow endpoint: requests overlap if anything lets them.
    tokio::time::sleep(delay).await;
    *seen.lock().unwrap().in_flight.entry(hook).or_default() -= 1;
    match scripted {
        Some((status, Some(retry_after))) => (
            StatusCode::from_u16(status).unwrap(),
            [("retry-after", retry_after)],
        )
            .into_response(),
        Some((status, None)) => StatusCode::from_u16(status).unwrap().into_response(),
        None => StatusCode::OK.into_response(),
    }
}

/// Nodes on one database, with webhooks to `hooks` set up through the
/// first.
struct Cluster {
    data_dir: TempDir,
    nodes: Vec<Option<ChildServer>>,
    workspace: TestWorkspace,
    http: reqwest::Client,
}

impl Cluster {
    /// `count` nodes with these settings, then one workspace with a webhook
    /// per hook and a rule sending every event to each.
    async fn start(
        count: usize,
        settings: &[(&str, &str)],
        hooks: &Hooks,
        hook_count: usize,
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut env: Vec<(&str, &str)> = vec![
            ("SWITCHYARD_MASTER_KEY", MASTER_KEY),
            ("SWITCHYARD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true"),
            ("SWITCHYARD_DELIVERY__RETRY_SCHEDULE", "[1,1,1,1,1]"),
            ("SWITCHYARD_DELIVERY__TIMEOUT_SECONDS", "2"),
            ("SWITCHYARD_STORAGE__POSTGRES__LEASE_SECONDS", "7"),
        ];
        env.extend_from_slice(settings);
        let mut nodes = Vec::new();
        for _ in 0..count {
            let node = ChildServer::start_with_env(data_dir.path(), Some(ADMIN_TOKEN), &env).await;
            nodes.push(Some(node));
        }
        let http = reqwest::Client::new();
        let first = nodes[0].as_ref().unwrap().url.clone();
        let (status, body) = send(
            http.post(format!("{first}/v1/workspaces"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"name": "multinode"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let workspace = workspace_from(&body);
        for hook in 0..hook_count {
            let connection = json!({"type": "webhook", "name": format!("hook {hook}"),
                                    "config": {"url": hooks.url(hook)}});
            let (status, body) = send(
                http.post(format!("{first}/v1/connections"))
                    .bearer_auth(&workspace.secret_key)
                    .json(&connection),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let rule = json!({"name": format!("to {hook}"), "events": ["*"],
                              "connection_id": body["id"]});
            let (status, body) = send(
                http.post(format!("{first}/v1/rules"))
                    .bearer_auth(&workspace.secret_key)
                    .json(&rule),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        Self {
            data_dir,
            nodes,
            workspace,
            http,
        }
    }

    fn url(&self, node: usize) -> &str {
        &self.nodes[node].as_ref().expect("a live node").url
    }

    /// Emits event `seq` through `node`; true once answered 202.
    async fn emit(&self, node: usize, seq: u64) -> bool {
        let event = json!({"event": "alert.triggered", "payload": {"seq": seq}});
        let sent = self
            .http
            .post(format!("{}/v1/events", self.url(node)))
            .bearer_auth(&self.workspace.publishable_key)
            .json(&event)
            .send()
            .await;
        matches!(sent, Ok(response) if response.status() == StatusCode::ACCEPTED)
    }

    /// Emits events `seqs` in one batch through `node` (one transaction, in
    /// order).
    async fn emit_batch(&self, node: usize, seqs: std::ops::Range<u64>) {
        let events: Vec<Value> = seqs
            .map(|seq| json!({"event": "alert.triggered", "payload": {"seq": seq}}))
            .collect();
        let (status, body) = send(
            self.http
                .post(format!("{}/v1/events/batch", self.url(node)))
                .bearer_auth(&self.workspace.publishable_key)
                .json(&json!({ "events": events })),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }

    async fn kill(&mut self, node: usize) {
        if let Some(node) = self.nodes[node].take() {
            node.kill().await;
        }
    }

    /// SIGTERM to every node left; each drains and exits 0.
    async fn stop(&mut self) {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            let status = node.terminate().await;
            assert!(status.success(), "{status}");
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        crate::backend::drop_database_for(self.data_dir.path());
    }
}

fn every_delivery_once(counts: &HashMap<String, usize>) -> Vec<(&String, &usize)> {
    counts.iter().filter(|(_, n)| **n != 1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_crash_every_delivery_arrives_exactly_once() {
    if crate::backend::postgres_only("with_no_crash_every_delivery_arrives_exactly_once") {
        return;
    }
    let hooks = Hooks::start(Duration::from_millis(5)).await;
    let mut cluster = Cluster::start(3, &[], &hooks, 4).await;
    const EVENTS: u64 = 60;
    let emits = (0..EVENTS).map(|seq| cluster.emit((seq % 3) as usize, seq));
    let acked = futures::future::join_all(emits).await;
    assert!(acked.iter().all(|ok| *ok), "every event accepted");
    let expected = (EVENTS * 4) as usize;
    hooks
        .wait_for(Duration::from_secs(30), |arrivals| {
            let ids: std::collections::HashSet<&str> =
                arrivals.iter().map(|a| a.delivery.as_str()).collect();
            ids.len() >= expected
        })
        .await;
    // Stopped nodes send nothing more: the counts are final.
    cluster.stop().await;
    let counts = hooks.counts();
    assert_eq!(counts.len(), expected);
    assert_eq!(
        every_delivery_once(&counts),
        Vec::<(&String, &usize)>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_connections_are_delivered_by_the_others_after_its_lease() {
    if crate::backend::postgres_only("a_killed_node_s_connections_are_delivered_by_the_others") {
        return;
    }
    // 50 ms an answer, one at a time: each connection's backlog lasts a
    // few seconds, so the node is killed mid-stream.
    let hooks = Hooks::start(Duration::from_millis(50)).await;
    let settings = [("SWITCHYARD_DELIVERY__MAX_IN_FLIGHT_PER_CONNECTION", "1")];
    let mut cluster = Cluster::start(3, &settings, &hooks, 4).await;
    const EVENTS: u64 = 40;
    // Through the node that is killed first: it holds every connection.
    for seq in 0..4 {
        assert!(cluster.emit(0, seq).await);
    }
    let emits = (4..EVENTS).map(|seq| cluster.emit((seq % 3) as usize, seq));
    let acked = futures::future::join_all(emits).await;
    assert!(acked.iter().all(|ok| *ok), "every event accepted");
    cluster.kill(0).await;
    let killed_at = Instant::now();
    let expected = (EVENTS * 4) as usize;
    let ids_at_kill = hooks.counts().len();
    assert!(ids_at_kill < expected, "the kill came mid-stream");

    // The others take over within the lease (7 s, counted from the dead
    // node's last renewal) plus a refill (≤ 1 s) and some slack for a
    // loaded machine; the backlog then drains at 4 × 20/s.
    hooks
        .wait_for(Duration::from_secs(45), |arrivals| {
            let ids: std::collections::HashSet<&str> =
                arrivals.iter().map(|a| a.delivery.as_str()).collect();
            ids.len() >= expected
        })
        .await;
    let takeover = hooks
        .arrivals()
        .iter()
        .filter(|arrival| arrival.at > killed_at)
        .map(|arrival| arrival.at.duration_since(killed_at))
        .min()
        .expect("the others took over");
    assert!(
        takeover <= Duration::from_secs(7 + 5),
        "first delivery by another node {takeover:?} after the kill"
    );
    cluster.stop().await;
    // At least once: an attempt in flight on the killed node may run again.
    assert_eq!(hooks.counts().len(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_connection_cap_and_order_hold_across_three_nodes() {
    if crate::backend::postgres_only("the_per_connection_cap_and_order_hold_across_three_nodes") {
        return;
    }
    let hooks = Hooks::start(Duration::from_millis(20)).await;
    let settings = [("SWITCHYARD_DELIVERY__MAX_IN_FLIGHT_PER_CONNECTION", "1")];
    let mut cluster = Cluster::start(3, &settings, &hooks, 1).await;
    // An ordered run through node 0, and more through the others at the
    // same time, all for the one connection.
    let ordered = cluster.emit_batch(0, 0..30);
    let others =
        futures::future::join_all((100..130).map(|seq| cluster.emit(1 + (seq % 2) as usize, seq)));
    let ((), acked) = tokio::join!(ordered, others);
    assert!(acked.iter().all(|ok| *ok));
    let arrivals = hooks
        .wait_for(Duration::from_secs(30), |arrivals| arrivals.len() >= 60)
        .await;
    assert_eq!(hooks.most_in_flight(0), 1, "never two at once");
    let run: Vec<u64> = arrivals
        .iter()
        .filter_map(|arrival| arrival.seq.filter(|seq| *seq < 100))
        .collect();
    assert_eq!(run, (0..30).collect::<Vec<_>>(), "in queue order");
    cluster.stop().await;
    assert_eq!(
        every_delivery_once(&hooks.counts()),
        Vec::<(&String, &usize)>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_pause_holds_on_every_node_even_after_its_node_dies() {
    if crate::backend::postgres_only("a_retry_after_pause_holds_on_every_node") {
        return;
    }
    let hooks = Hooks::start(Duration::from_millis(5)).await;
    // Longer than the lease (7 s): a node taking over must honour it.
    hooks.script(0, [(429, Some("10"))]);
    let mut cluster = Cluster::start(3, &[], &hooks, 1).await;
    assert!(cluster.emit(0, 0).await, "node 0 holds the connection now");
    let first = hooks
        .wait_for(Duration::from_secs(10), |a| !a.is_empty())
        .await;
    let paused_at = first[0].at;
    // More for the connection through the other nodes, then node 0 dies
    // once its 429 is recorded (the delivery is retrying).
    assert!(cluster.emit(1, 1).await);
    assert!(cluster.emit(2, 2).await);
    wait_for_retrying(&cluster).await;
    cluster.kill(0).await;

    let arrivals = hooks
        .wait_for(Duration::from_secs(25), |arrivals| arrivals.len() >= 4)
        .await;
    for arrival in &arrivals[1..] {
        let after = arrival.at.duration_since(paused_at);
        assert!(
            after >= Duration::from_millis(9_900),
            "seq {:?} sent {after:?} after the 429 with Retry-After: 10",
            arrival.seq
        );
    }
    cluster.stop().await;
}

/// Polls until the first delivery has recorded its 429.
async fn wait_for_retrying(cluster: &Cluster) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = send(
            cluster
                .http
                .get(format!("{}/v1/deliveries?status=retrying", cluster.url(1)))
                .bearer_auth(&cluster.workspace.secret_key),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if !body["data"].as_array().unwrap().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the 429 was never recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_through_one_node_fails_on_another_within_a_second() {
    if crate::backend::postgres_only("a_key_rotated_through_one_node_fails_on_another") {
        return;
    }
    let hooks = Hooks::start(Duration::ZERO).await;
    let mut cluster = Cluster::start(2, &[], &hooks, 1).await;
    // Node 1 has the old key cached: it accepted it just now.
    assert!(cluster.emit(1, 0).await, "the key works on node 1");
    let (status, body) = send(
        cluster
            .http
            .post(format!(
                "{}/v1/workspaces/{}/keys/rotate",
                cluster.url(0),
                cluster.workspace.id
            ))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rotated_at = Instant::now();
    loop {
        let status = cluster
            .http
            .post(format!("{}/v1/events", cluster.url(1)))
            .bearer_auth(&cluster.workspace.publishable_key)
            .json(&json!({"event": "alert.triggered", "payload": {"seq": 1}}))
            .send()
            .await
            .ok()
            .map(|response| response.status());
        if status == Some(StatusCode::UNAUTHORIZED) {
            break;
        }
        assert!(
            rotated_at.elapsed() < Duration::from_secs(1),
            "node 1 still answers {status:?} to the old key a second after the rotation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The new key works there.
    let fresh = workspace_from(&body);
    let (status, _) = send(
        cluster
            .http
            .post(format!("{}/v1/events", cluster.url(1)))
            .bearer_auth(&fresh.publishable_key)
            .json(&json!({"event": "alert.triggered", "payload": {"seq": 2}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    cluster.stop().await;
}
