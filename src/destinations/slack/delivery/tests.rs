//! Unit tests of Slack delivery: token refresh through the secrets port,
//! alert threads through an in-memory thread port, the caches and pacer.

use super::*;
use crate::model::WorkspaceId;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The port over memory: one connection's secrets and a version bumped
/// by each swap.
struct MemorySecrets {
    stored: Mutex<StoredSecrets>,
    swaps: AtomicUsize,
}

impl SecretsPort for MemorySecrets {
    fn load<'a>(
        &'a self,
        _connection: &'a Connection,
    ) -> BoxFuture<'a, Result<Option<StoredSecrets>, SecretsError>> {
        Box::pin(async { Ok(Some(self.stored.lock().unwrap().clone())) })
    }

    fn swap<'a>(
        &'a self,
        _connection: &'a Connection,
        expected: &'a StoredSecrets,
        fresh: &'a Value,
    ) -> BoxFuture<'a, Result<Swap, SecretsError>> {
        Box::pin(async move {
            let mut stored = self.stored.lock().unwrap();
            if stored.version != expected.version {
                return Ok(Swap::Stale(stored.clone()));
            }
            let version = self.swaps.fetch_add(1, Ordering::SeqCst) as u8 + 1;
            *stored = StoredSecrets {
                secrets: fresh.clone(),
                version: vec![version],
            };
            Ok(Swap::Swapped)
        })
    }
}

/// Slack's `oauth.v2.access` on loopback, counting refreshes.
async fn fake_refresh_endpoint() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let app = axum::Router::new().route(
        "/oauth.v2.access",
        axum::routing::post(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                axum::Json(serde_json::json!({
                    "ok": true,
                    "access_token": format!("xoxe.xoxb-fresh-{n}"),
                    "refresh_token": format!("xoxe-1-refresh-{n}"),
                    "expires_in": 43200,
                    "token_type": "bot",
                }))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, calls)
}

#[tokio::test]
async fn two_deliveries_with_an_expired_token_refresh_once() {
    let (base, refreshes) = fake_refresh_endpoint().await;
    let expired = SlackSecrets {
        bot_token: "xoxe.xoxb-old".into(),
        refresh_token: Some("xoxe-1-refresh-0".into()),
        expires_at_ms: Some(now_ms() - 1),
    };
    let port = Arc::new(MemorySecrets {
        stored: Mutex::new(StoredSecrets {
            secrets: serde_json::to_value(&expired).unwrap(),
            version: vec![0],
        }),
        swaps: AtomicUsize::new(0),
    });
    let tokens = SlackTokens {
        api: SlackApi::new(reqwest::Client::new(), base),
        secrets: port.clone(),
        client: Some(("client-id".into(), Secret::new("client-secret"))),
        locks: RefreshLocks::default(),
        wait_for_other_nodes: Duration::from_secs(1),
    };
    let connection = Connection {
        id: ConnectionId::new(),
        workspace_id: WorkspaceId::new(),
        name: "slack".into(),
        kind: ConnectionKind::Slack,
        status: ConnectionStatus::Active,
        config: serde_json::json!({}),
        sealed_secrets: Vec::new(),
        created_at_ms: 0,
        updated_at_ms: 0,
    };

    let (first, second) = tokio::join!(
        tokens.token(&connection, &expired, None),
        tokens.token(&connection, &expired, None),
    );

    assert_eq!(first.unwrap(), "xoxe.xoxb-fresh-1");
    assert_eq!(second.unwrap(), "xoxe.xoxb-fresh-1");
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(port.swaps.load(Ordering::SeqCst), 1);
    let stored: SlackSecrets =
        serde_json::from_value(port.stored.lock().unwrap().secrets.clone()).unwrap();
    assert_eq!(stored.refresh_token.as_deref(), Some("xoxe-1-refresh-1"));
}

/// `chat.postMessage` and `chat.update` on loopback: posts get `ts`
/// 1.000001, 1.000002, …; updates answer `update_error` when set. Every
/// request body is kept, with its method.
async fn fake_chat(
    update_error: Option<&'static str>,
) -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let app = axum::Router::new().route(
        "/{method}",
        axum::routing::post(
            move |axum::extract::Path(method): axum::extract::Path<String>,
                  axum::Json(body): axum::Json<Value>| {
                let mut seen = recorded.lock().unwrap();
                seen.push((method.clone(), body));
                let posts = seen.iter().filter(|(m, _)| m == "chat.postMessage").count();
                let answer = match (method.as_str(), update_error) {
                    ("chat.update", Some(error)) => {
                        serde_json::json!({"ok": false, "error": error})
                    }
                    _ => serde_json::json!({"ok": true, "ts": format!("1.{posts:06}")}),
                };
                async move { axum::Json(answer) }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

struct Alert {
    connection: Connection,
    rule: crate::model::Rule,
    secrets: Value,
}

impl Alert {
    fn new() -> Self {
        let workspace = WorkspaceId::new();
        let connection = Connection {
            id: ConnectionId::new(),
            workspace_id: workspace,
            name: "slack".into(),
            kind: ConnectionKind::Slack,
            status: ConnectionStatus::Active,
            config: serde_json::json!({}),
            sealed_secrets: Vec::new(),
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        let rule = crate::model::Rule {
            id: crate::model::RuleId::new(),
            workspace_id: workspace,
            name: "alerts".into(),
            events: vec!["alert.*".into()],
            connection_id: connection.id,
            target: serde_json::json!({"channel": "C1"}),
            min_severity: None,
            conditions: serde_json::json!([]),
            template: None,
            enabled: true,
            created_at_ms: 0,
            updated_at_ms: 0,
            dedup_seconds: None,
            max_per_hour: None,
        };
        let secrets = serde_json::to_value(SlackSecrets {
            bot_token: "xoxb-1".into(),
            refresh_token: None,
            expires_at_ms: None,
        })
        .unwrap();
        Self {
            connection,
            rule,
            secrets,
        }
    }

    async fn send(&self, slack: &Slack, name: &str) -> Outcome {
        let event = crate::model::Event {
            id: crate::model::EventId::new(),
            workspace_id: self.connection.workspace_id,
            name: crate::model::EventName::parse(name).unwrap(),
            resource: Some("db".into()),
            resource_id: Some("1".into()),
            payload: b"{}".to_vec(),
            received_at_ms: 0,
        };
        let delivery = crate::model::Delivery {
            id: crate::model::DeliveryId::new(),
            workspace_id: self.connection.workspace_id,
            event_id: event.id,
            rule_id: self.rule.id,
            connection_id: self.connection.id,
            status: crate::model::DeliveryStatus::Pending,
            attempt_count: 0,
            next_attempt_at_ms: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            alert: event.alert_key(),
            suppressed_before: 0,
        };
        let job = Job {
            delivery: &delivery,
            event: &event,
            rule: &self.rule,
            connection: &self.connection,
            secrets: &self.secrets,
            now: std::time::SystemTime::now(),
        };
        slack.send(&job).await
    }
}

fn slack_at(base: String, threads: Arc<crate::destinations::MemoryThreads>) -> Slack {
    let mut config = Config::defaults().unwrap();
    config.slack.api_base = base;
    let ports = Ports {
        secrets: Arc::new(MemorySecrets {
            stored: Mutex::new(StoredSecrets {
                secrets: Value::Null,
                version: Vec::new(),
            }),
            swaps: AtomicUsize::new(0),
        }),
        threads,
    };
    Slack::new(&config, reqwest::Client::new(), ports)
}

#[tokio::test(start_paused = true)]
async fn a_resolve_updates_the_first_message_and_replies_in_its_thread() {
    let (base, seen) = fake_chat(None).await;
    let threads = Arc::new(crate::destinations::MemoryThreads::default());
    let slack = slack_at(base, threads.clone());
    let alert = Alert::new();

    let triggered = alert.send(&slack, "alert.triggered").await;
    assert_eq!(triggered.verdict, Verdict::Delivered);
    let remembered: Vec<String> = threads.threads.lock().unwrap().values().cloned().collect();
    assert_eq!(remembered, ["1.000001"]);

    let resolved = alert.send(&slack, "alert.resolved").await;
    assert_eq!(resolved.verdict, Verdict::Delivered);
    let seen = seen.lock().unwrap().clone();
    let methods: Vec<&str> = seen.iter().map(|(method, _)| method.as_str()).collect();
    assert_eq!(
        methods,
        ["chat.postMessage", "chat.update", "chat.postMessage"]
    );
    assert_eq!(seen[1].1["ts"], "1.000001");
    assert_eq!(seen[1].1["channel"], "C1");
    assert_eq!(seen[2].1["thread_ts"], "1.000001");
    assert!(seen[0].1.get("thread_ts").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_first_message_that_cannot_be_edited_still_gets_the_reply() {
    let (base, seen) = fake_chat(Some("message_not_found")).await;
    let slack = slack_at(
        base,
        Arc::new(crate::destinations::MemoryThreads::default()),
    );
    let alert = Alert::new();
    alert.send(&slack, "alert.triggered").await;
    let resolved = alert.send(&slack, "alert.resolved").await;
    assert_eq!(resolved.verdict, Verdict::Delivered);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].1["thread_ts"], "1.000001");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_first_message_gets_a_message_of_its_own() {
    let (base, seen) = fake_chat(None).await;
    let slack = slack_at(
        base,
        Arc::new(crate::destinations::MemoryThreads::default()),
    );
    let resolved = Alert::new().send(&slack, "alert.acknowledged").await;
    assert_eq!(resolved.verdict, Verdict::Delivered);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "chat.postMessage");
    assert!(seen[0].1.get("thread_ts").is_none());
}

fn channel(id: &str) -> Channel {
    serde_json::from_value(serde_json::json!({"id": id, "name": id, "is_private": false})).unwrap()
}

#[test]
fn refresh_locks_are_dropped_once_nobody_holds_them() {
    let locks = RefreshLocks::default();
    let held = locks.lock_for(ConnectionId::new());
    for _ in 0..1000 {
        drop(locks.lock_for(ConnectionId::new()));
    }
    // The held one stays, the last handed out, and nothing else.
    assert_eq!(locks.len(), 2);
    let again = locks.lock_for(ConnectionId::new());
    assert_eq!(locks.len(), 2);
    drop((held, again));
    locks.lock_for(ConnectionId::new());
    assert_eq!(locks.len(), 1);
}

#[test]
fn a_held_refresh_lock_is_shared_not_replaced() {
    let locks = RefreshLocks::default();
    let id = ConnectionId::new();
    let first = locks.lock_for(id);
    locks.lock_for(ConnectionId::new());
    assert!(Arc::ptr_eq(&first, &locks.lock_for(id)));
}

#[test]
fn channel_lists_expire_and_stay_under_the_cap() {
    let mut cache = ChannelCache::default();
    let start = Instant::now();
    let lists = Arc::new(vec![channel("C1")]);
    let first = ConnectionId::new();
    let workspace = WorkspaceId::new();
    cache.insert(workspace, first, lists.clone(), start);
    assert!(cache.get(first, start + Duration::from_secs(59)).is_some());
    assert!(cache.get(first, start + CHANNEL_CACHE_TTL).is_none());
    // Many connections within one TTL: the oldest make room.
    for n in 0..2 * MAX_CACHED_CHANNEL_LISTS {
        let now = start + Duration::from_millis(n as u64);
        cache.insert(workspace, ConnectionId::new(), lists.clone(), now);
        assert!(cache.lists.len() <= MAX_CACHED_CHANNEL_LISTS);
    }
    assert!(cache.get(first, start).is_none(), "the oldest went first");
    // Once they expired, the next insert clears them all.
    cache.insert(
        workspace,
        ConnectionId::new(),
        lists,
        start + Duration::from_secs(120),
    );
    assert_eq!(cache.lists.len(), 1);
}

#[test]
fn channel_lists_are_forgotten_by_connection_or_workspace() {
    let slack = slack_at("http://127.0.0.1:9".into(), Arc::default());
    let (ours, theirs) = (WorkspaceId::new(), WorkspaceId::new());
    let (first, second, other) = (
        ConnectionId::new(),
        ConnectionId::new(),
        ConnectionId::new(),
    );
    let now = Instant::now();
    for (workspace, connection) in [(ours, first), (ours, second), (theirs, other)] {
        let list = Arc::new(vec![channel("C1")]);
        slack
            .lock_channels()
            .insert(workspace, connection, list, now);
    }
    slack.forget_channels(|_, connection| connection == first);
    assert!(slack.lock_channels().get(first, now).is_none());
    assert!(slack.lock_channels().get(second, now).is_some());
    slack.forget_channels(|workspace, _| workspace == ours);
    assert!(slack.lock_channels().get(second, now).is_none());
    assert!(
        slack.lock_channels().get(other, now).is_some(),
        "another workspace's stays"
    );
}

#[tokio::test(start_paused = true)]
async fn the_pacer_forgets_channels_whose_turn_has_passed() {
    let pacer = ChannelPacer::default();
    let connection = ConnectionId::new();
    let mut largest = 0;
    for round in 0..10 {
        for n in 0..PACER_PRUNE_MIN {
            pacer.wait_turn(connection, &format!("C{round}_{n}")).await;
            largest = largest.max(pacer.lock().next_slot.len());
        }
        tokio::time::advance(CHANNEL_INTERVAL).await;
    }
    assert!(
        largest <= 2 * PACER_PRUNE_MIN,
        "held {largest} of {} channels seen",
        10 * PACER_PRUNE_MIN
    );
}

#[tokio::test(start_paused = true)]
async fn the_pacer_spaces_one_channels_messages_a_second_apart() {
    let pacer = ChannelPacer::default();
    let connection = ConnectionId::new();
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        pacer.wait_turn(connection, "C1").await;
    }
    pacer.wait_turn(connection, "C2").await;
    assert_eq!(start.elapsed(), 2 * CHANNEL_INTERVAL);
}
