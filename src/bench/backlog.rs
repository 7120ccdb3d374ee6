//! `switchyard bench backlog`: a webhook endpoint that is down while a
//! large backlog builds up, a restart with that backlog, then the drain
//! once the endpoint is back. Reports the server's resident memory
//! throughout (sampled every 200 ms), restart-to-ready time and the drain
//! rate.
//!
//! The endpoint is served by this process: while "down" it accepts
//! requests and never answers (as a dead host behind a load balancer
//! does), so only the connection's in-flight cap of attempts hang and
//! every other delivery stays queued; once "up" it answers 200 at once.

use super::cpu::CpuMeter;
use super::{create_workspace, serve_command, spawn_listening};
use crate::bench::EXAMPLE_EVENT;
use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use clap::builder::RangedU64ValueParser;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::Notify;

#[derive(Args, Debug, Clone)]
pub struct BacklogBenchOptions {
    /// Deliveries to queue while the endpoint is down.
    #[arg(long, default_value_t = 2_000_000, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub deliveries: u64,
    /// Concurrent batch requests while queueing.
    #[arg(long, default_value_t = 8, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub connections: usize,
    /// `delivery.max_in_flight_per_connection` of the server under test.
    #[arg(long, default_value_t = 64, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub per_connection: usize,
    /// `storage.cache_mb` of the server under test (its default when unset).
    #[arg(long)]
    pub cache_mb: Option<usize>,
    /// `delivery.queue_window` of the server under test (its default when
    /// unset).
    #[arg(long)]
    pub queue_window: Option<usize>,
}

/// Events per batch request while queueing (the server's default limit).
const BATCH: u64 = 500;
/// Targets of the issue on a 2-core machine.
const TARGET_RSS_MB: f64 = 100.0;
const TARGET_READY: Duration = Duration::from_secs(2);

pub async fn backlog(options: BacklogBenchOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let endpoint = Endpoint::start().await?;
    let data_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let admin = format!("adm_{}", crate::api::random_token());
    let serve = |data_dir: &Path| {
        let mut command = serve_command(&exe, data_dir, &admin);
        command
            .env("SWITCHYARD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true")
            .env(
                "SWITCHYARD_DELIVERY__MAX_IN_FLIGHT_PER_CONNECTION",
                options.per_connection.to_string(),
            )
            // Hanging attempts time out quickly, so a graceful stop is quick.
            .env("SWITCHYARD_DELIVERY__TIMEOUT_SECONDS", "2")
            .env("SWITCHYARD_RETENTION__EVENTS", "0");
        if let Some(cache_mb) = options.cache_mb {
            command.env("SWITCHYARD_STORAGE__CACHE_MB", cache_mb.to_string());
        }
        if let Some(window) = options.queue_window {
            command.env("SWITCHYARD_DELIVERY__QUEUE_WINDOW", window.to_string());
        }
        command
    };

    println!(
        "backlog benchmark: {} deliveries queued to a webhook endpoint that hangs, then a restart, then the endpoint comes back",
        options.deliveries
    );
    let mut server = spawn_listening(&mut serve(data_dir.path()))
        .await
        .context("cannot start switchyard serve")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let keys = create_workspace(&server.url, &admin).await?;
    route_to(&http, &server.url, &keys.secret, &endpoint.url).await?;

    let rss = RssSampler::start(server.child.id());
    let started = Instant::now();
    queue_deliveries(
        &http,
        &server.url,
        &keys.publishable,
        options.deliveries,
        options.connections,
    )
    .await?;
    let queued_in = started.elapsed();
    let backlog = queue_state(&http, &server.url, &admin).await?;
    println!(
        "  queued {} deliveries in {:.1} s ({:.0} events/s); on disk: {}, in memory: {}",
        options.deliveries,
        queued_in.as_secs_f64(),
        options.deliveries as f64 / queued_in.as_secs_f64(),
        backlog["backlog"],
        backlog["in_memory"]
    );
    let database = data_dir.path().join("switchyard.redb");
    let size = std::fs::metadata(&database).map(|m| m.len()).unwrap_or(0);
    println!(
        "  database file {:.0} MiB; server RSS while queueing: max {:.1} MB",
        size as f64 / (1 << 20) as f64,
        rss.stop().await
    );

    terminate(&mut server).await;
    let restarted = Instant::now();
    let mut server = spawn_listening(&mut serve(data_dir.path()))
        .await
        .context("cannot start switchyard serve again")?;
    wait_ready(&http, &server.url).await?;
    let ready_in = restarted.elapsed();
    let rss = RssSampler::start(server.child.id());
    let after_restart = queue_state(&http, &server.url, &admin).await?;
    println!(
        "  restart to ready with the backlog: {:.2} s (process start to /readyz 200); in memory after start: {}",
        ready_in.as_secs_f64(),
        after_restart["in_memory"]
    );

    let meter = CpuMeter::new(vec![
        ("server", server.child.id()),
        ("endpoint and monitor", Some(std::process::id())),
    ]);
    let cpu_start = meter.snapshot();
    endpoint.come_up();
    let draining = Instant::now();
    let total = after_restart["backlog"].as_u64().unwrap_or(0);
    let mut last_report = Instant::now();
    loop {
        let state = queue_state(&http, &server.url, &admin).await?;
        let left = state["backlog"].as_u64().unwrap_or(0);
        if left == 0 {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            println!(
                "    {:>5.0} s: {left} left, {} in memory, {} delivered",
                draining.elapsed().as_secs_f64(),
                state["in_memory"],
                endpoint.delivered()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drained_in = draining.elapsed();
    let server_cores = meter.cores_used(&cpu_start, "server");
    let cpu_line = meter.report(&cpu_start);
    let drain_rss = rss.stop().await;
    println!(
        "  drained {total} deliveries in {:.1} s: {:.0} deliveries/s; server RSS while draining: max {drain_rss:.1} MB",
        drained_in.as_secs_f64(),
        total as f64 / drained_in.as_secs_f64()
    );
    if let Some(cores) = server_cores {
        let per_delivery_us = cores * drained_in.as_secs_f64() * 1e6 / total.max(1) as f64;
        println!("  server CPU while draining: {per_delivery_us:.0} µs per delivery");
    }
    if let Some(line) = cpu_line {
        println!("  {line}");
    }
    println!("targets (2-core machine):");
    println!(
        "  RSS under {TARGET_RSS_MB:.0} MB throughout: see the two maxima above -> {}",
        if drain_rss < TARGET_RSS_MB {
            "met while draining"
        } else {
            "NOT met while draining"
        }
    );
    println!(
        "  ready in under {:.0} s after a restart: {:.2} s -> {}",
        TARGET_READY.as_secs_f64(),
        ready_in.as_secs_f64(),
        if ready_in < TARGET_READY {
            "met"
        } else {
            "NOT met"
        }
    );
    println!("  drain no slower than `bench e2e`'s end-to-end rate: compare with its phase A");
    server.stop().await;
    Ok(())
}

/// One webhook connection to `url` and a rule sending every event to it.
async fn route_to(
    http: &reqwest::Client,
    server: &str,
    secret: &str,
    url: &str,
) -> anyhow::Result<()> {
    let connection: Value = http
        .post(format!("{server}/v1/connections"))
        .bearer_auth(secret)
        .json(&json!({"type": "webhook", "name": "down", "config": {"url": url}}))
        .send()
        .await?
        .error_for_status()
        .context("cannot create the webhook connection")?
        .json()
        .await?;
    let id = connection["id"].as_str().context("no connection id")?;
    http.post(format!("{server}/v1/rules"))
        .bearer_auth(secret)
        .json(&json!({"name": "all", "events": ["*"], "connection_id": id}))
        .send()
        .await?
        .error_for_status()
        .context("cannot create the rule")?;
    Ok(())
}

/// Emits `total` example events in batches over `connections` concurrent
/// requests; each makes one delivery.
async fn queue_deliveries(
    http: &reqwest::Client,
    server: &str,
    key: &str,
    total: u64,
    connections: usize,
) -> anyhow::Result<()> {
    let event: Value = serde_json::from_str(EXAMPLE_EVENT)?;
    let batches = Arc::new(AtomicU64::new(0));
    let count = total.div_ceil(BATCH);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (http, batches, event) = (http.clone(), batches.clone(), event.clone());
        let url = format!("{server}/v1/events/batch");
        let key = key.to_string();
        workers.push(tokio::spawn(async move {
            loop {
                let index = batches.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return anyhow::Ok(());
                }
                let size = BATCH.min(total - index * BATCH) as usize;
                let body = json!({ "events": vec![event.clone(); size] });
                let response = http.post(&url).bearer_auth(&key).json(&body).send().await?;
                if response.status() != reqwest::StatusCode::ACCEPTED {
                    let status = response.status();
                    bail!("a batch got {status}: {}", response.text().await?);
                }
            }
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}

async fn queue_state(http: &reqwest::Client, server: &str, admin: &str) -> anyhow::Result<Value> {
    http.get(format!("{server}/v1/queue"))
        .bearer_auth(admin)
        .send()
        .await?
        .error_for_status()
        .context("cannot read /v1/queue")?
        .json()
        .await
        .context("/v1/queue is not JSON")
}

async fn wait_ready(http: &reqwest::Client, server: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{server}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("the server was not ready within 120 s")
}

/// SIGTERM, then waits for the graceful stop.
async fn terminate(server: &mut super::Child2) {
    if let Some(pid) = server.child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await;
    }
    let _ = server.child.wait().await;
}

/// The webhook endpoint: hangs every request while down, answers 200 once
/// up (and lets the hanging ones answer too).
struct Endpoint {
    url: String,
    up: Arc<AtomicBool>,
    release: Arc<Notify>,
    delivered: Arc<AtomicU64>,
}

impl Endpoint {
    async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let up = Arc::new(AtomicBool::new(false));
        let release = Arc::new(Notify::new());
        let delivered = Arc::new(AtomicU64::new(0));
        let (up2, release2, delivered2) = (up.clone(), release.clone(), delivered.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (up, release, delivered) = (up2.clone(), release2.clone(), delivered2.clone());
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                            let (up, release, delivered) =
                                (up.clone(), release.clone(), delivered.clone());
                            async move {
                                let _ = request.into_body().collect().await;
                                if !up.load(Ordering::Acquire) {
                                    release.notified().await;
                                }
                                delivered.fetch_add(1, Ordering::Relaxed);
                                Response::builder()
                                    .status(StatusCode::OK)
                                    .body(Full::new(Bytes::new()))
                            }
                        });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            up,
            release,
            delivered,
        })
    }

    fn come_up(&self) {
        self.up.store(true, Ordering::Release);
        self.release.notify_waiters();
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// Samples a process's resident memory every 200 ms; `stop` gives the
/// maximum in MB.
struct RssSampler {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<f64>,
}

impl RssSampler {
    fn start(pid: Option<u32>) -> Self {
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut max_kb = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                if let Some(kb) = pid.and_then(rss_kb) {
                    max_kb = max_kb.max(kb);
                }
                tokio::select! {
                    _ = stopped.notified() => break,
                    _ = tick.tick() => {}
                }
            }
            if let Some(kb) = pid.and_then(rss_kb) {
                max_kb = max_kb.max(kb);
            }
            max_kb as f64 / 1000.0
        });
        Self { stop, task }
    }

    async fn stop(self) -> f64 {
        self.stop.notify_one();
        self.task.await.unwrap_or(0.0)
    }
}

/// `VmRSS` of a process, in kB (Linux).
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_processs_resident_memory() {
        let kb = rss_kb(std::process::id()).unwrap();
        assert!(kb > 0);
    }
}
