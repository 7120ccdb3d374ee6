//! Benchmarks. Every server they measure runs as a child process of this
//! binary, so the load generator never shares a runtime with it.
//!
//! - `switchyard bench ingest` (here): drives durable ingest with N
//!   keep-alive connections and, in the same run, a bare hyper server that
//!   answers 202 to the same requests, then prints both and their ratio.
//! - `switchyard bench e2e` ([`e2e`]): events in, webhook deliveries out to
//!   a local receiver ([`receiver`]), against a bare reqwest baseline.
//! - `switchyard bench backlog` ([`backlog`]): a large backlog to an
//!   endpoint that is down; memory, restart-to-ready time, drain rate.

mod backlog;
mod cpu;
mod e2e;
mod load;
mod probe;
mod receiver;

pub use backlog::{BacklogBenchOptions, backlog};
pub use e2e::{E2eBenchOptions, e2e};
pub use receiver::receiver;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// The example event used throughout the docs and tests.
pub const EXAMPLE_EVENT: &str = r#"{"event":"alert.triggered","resource":"alert","resource_id":"alrt_tyrion_42","payload":{"alert_id":"alrt_tyrion_42","account_id":"acc_casterly","severity":"high","resource":"api_latency_p95","value":1840,"threshold":1000,"triggered_at":"2026-04-17T16:02:00Z"}}"#;

#[derive(Args, Debug, Clone)]
pub struct IngestBenchOptions {
    /// A running server to drive; by default one is started on a temp dir.
    #[arg(long, requires = "key")]
    pub url: Option<String>,
    /// Publishable key for --url.
    #[arg(long, env = "SWITCHYARD_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Seconds of measured load per target (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
}

pub async fn ingest(options: IngestBenchOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let duration = Duration::from_secs(options.duration);

    let mut baseline = spawn_listening(Command::new(&exe).args([
        "bench",
        "baseline-server",
        "--listen",
        "127.0.0.1:0",
    ]))
    .await?;
    let data_dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let (target, key, mut server) = match (&options.url, &options.key) {
        (Some(url), Some(key)) => (url.clone(), key.clone(), None),
        _ => {
            let admin = format!("adm_{}", crate::api::random_token());
            let server = spawn_listening(&mut serve_command(&exe, data_dir.path(), &admin))
                .await
                .context("cannot start switchyard serve")?;
            let keys = create_workspace(&server.url, &admin).await?;
            (server.url.clone(), keys.publishable, Some(server))
        }
    };

    println!(
        "ingest benchmark: {} connections, {}s per target, example alert.triggered event ({} bytes)",
        options.connections,
        options.duration,
        EXAMPLE_EVENT.len()
    );
    // Each target's CPU line shows what else took the machine meanwhile
    // (other processes, the hypervisor's steal): a ratio is only as good
    // as the two phases were alike.
    let meter = cpu::CpuMeter::new(vec![
        ("bare hyper", baseline.child.id()),
        (
            "server",
            server.as_ref().and_then(|server| server.child.id()),
        ),
        ("load generator", Some(std::process::id())),
    ]);
    let start = meter.snapshot();
    let bare = drive(&baseline.url, "", options.connections, duration).await?;
    report("bare hyper 202", &bare);
    print_cpu(&meter, &start);
    let start = meter.snapshot();
    let durable = drive(&target, &key, options.connections, duration).await?;
    report("switchyard durable ingest", &durable);
    if server.is_some() {
        print_cpu(&meter, &start);
    } else {
        // Its CPU would show as other processes' and flag every run.
        println!("(no CPU line: the server at --url is not one this bench started)");
    }
    println!(
        "ratio durable/bare: {:.1}% of throughput",
        100.0 * durable.per_second() / bare.per_second().max(f64::MIN_POSITIVE)
    );

    baseline.stop().await;
    if let Some(server) = server.as_mut() {
        server.stop().await;
    }
    Ok(())
}

/// Answers 202 with a small JSON body to every request, after reading it.
pub async fn baseline_server(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
                let _ = request.into_body().collect().await;
                let body = Full::new(Bytes::from_static(
                    br#"{"id":"evt_01JS2ZB6Y6R7K1T4V8W9X0Y1Z2","deliveries":0}"#,
                ));
                Response::builder()
                    .status(StatusCode::ACCEPTED)
                    .header("content-type", "application/json")
                    .body(body)
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct Child2 {
    child: Child,
    url: String,
}

impl Child2 {
    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `switchyard serve` on a free port of 127.0.0.1 with its data in
/// `data_dir`, the given admin token and warnings only.
fn serve_command(exe: &Path, data_dir: &Path, admin: &str) -> Command {
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .env("SWITCHYARD_LISTEN", "127.0.0.1:0")
        .env("SWITCHYARD_DATA_DIR", data_dir)
        .env("SWITCHYARD_ADMIN_TOKEN", admin)
        .env("SWITCHYARD_LOG__LEVEL", "warn");
    command
}

/// Starts a child that prints `listening on http://…` and returns its URL.
async fn spawn_listening(command: &mut Command) -> anyhow::Result<Child2> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start a child process")?;
    let stdout = child.stdout.take().context("child has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.strip_prefix("listening on ") {
            let url = address.trim().to_string();
            // Keep draining stdout so the child never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(Child2 { child, url });
        }
    }
    bail!("child exited before listening")
}

/// The keys of a freshly created workspace.
struct WorkspaceKeys {
    publishable: String,
    secret: String,
}

async fn create_workspace(url: &str, admin: &str) -> anyhow::Result<WorkspaceKeys> {
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{url}/v1/workspaces"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await
        .context("cannot reach the server to create a workspace")?
        .error_for_status()
        .context("cannot create a workspace")?
        .json()
        .await?;
    let key = |field: &str| {
        answer[field]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no {field} in the answer"))
    };
    Ok(WorkspaceKeys {
        publishable: key("publishable_key")?,
        secret: key("secret_key")?,
    })
}

struct LoadResult {
    histogram: Histogram<u64>,
    elapsed: Duration,
    errors: u64,
}

impl LoadResult {
    fn per_second(&self) -> f64 {
        self.histogram.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// The phase's CPU line since `start`, when `/proc` gave readings.
fn print_cpu(meter: &cpu::CpuMeter, start: &Option<cpu::CpuSnapshot>) {
    if let Some(line) = meter.report(start) {
        println!("{line}");
    }
}

fn report(label: &str, result: &LoadResult) {
    let h = &result.histogram;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{label:<28} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  p99.9 {:>6.2} ms  max {:>7.2} ms  ({} requests, {} errors)",
        result.per_second(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0,
        h.len(),
        result.errors
    );
}

/// Runs `connections` keep-alive HTTP/1.1 connections posting the example
/// event for one second of warm-up plus `duration`; records latencies in µs.
async fn drive(
    url: &str,
    key: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<LoadResult> {
    let authority = url
        .strip_prefix("http://")
        .context("only http:// targets are supported")?
        .trim_end_matches('/')
        .to_string();
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop_at = warm_until + duration;
    let mut workers = Vec::with_capacity(connections);
    for _ in 0..connections {
        let authority = authority.clone();
        let auth = format!("Bearer {key}");
        workers.push(tokio::spawn(async move {
            connection_loop(&authority, &auth, warm_until, stop_at).await
        }));
    }
    let mut histogram = new_histogram()?;
    let mut errors = 0;
    for worker in workers {
        let (partial, failed) = worker.await??;
        histogram.add(partial)?;
        errors += failed;
    }
    Ok(LoadResult {
        histogram,
        elapsed: stop_at - warm_until,
        errors,
    })
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000, 3).context("cannot build a histogram")
}

async fn connection_loop(
    authority: &str,
    auth: &str,
    warm_until: Instant,
    stop_at: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut histogram = new_histogram()?;
    let mut errors = 0;
    let body = Bytes::from_static(EXAMPLE_EVENT.as_bytes());
    loop {
        let started = Instant::now();
        if started >= stop_at {
            break;
        }
        let request = Request::post("/v1/events")
            .header("host", authority)
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))?;
        let response = sender.send_request(request).await?;
        let ok = response.status() == StatusCode::ACCEPTED;
        response.into_body().collect().await?;
        if started >= warm_until {
            if ok {
                histogram.record(started.elapsed().as_micros().max(1) as u64)?;
            } else {
                errors += 1;
            }
        }
    }
    Ok((histogram, errors))
}
