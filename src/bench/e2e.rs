//! `switchyard bench e2e`: events in through `POST /v1/events`, signed
//! webhook deliveries out to a local receiver, one rule per event.
//!
//! Three processes: `switchyard serve` on a temp dir, the receiver
//! (`bench receiver`) and this load generator. Every event's payload
//! carries `sent_at_us` (Unix µs when the request was built); the receiver
//! subtracts it from its clock on arrival, so its histogram is event →
//! receiver latency, ingest and queueing included.
//!
//! - Phase A, throughput: N connections in a closed loop for `--duration`,
//!   one line a second (events accepted, deliveries received, queue depth),
//!   then waits for the queue to drain.
//! - Phase B, latency at a fixed `--rate` for 10 s.
//! - Phase C, baseline: one bare `reqwest::Client` posting the same webhook
//!   body straight to the receiver as fast as it can for 10 s; phase C2 the
//!   same through the client the server sends webhooks with
//!   (`destinations/tenant_http.rs`). Each prints its HTTP pair: the CPU of
//!   one request served (receiver) plus one sent (client).
//! - Phase D, ceiling: the ingest bench's bare hyper server answering 202
//!   (`bench baseline-server`), driven by the same number of connections
//!   for 10 s, so phase A's rate is also printed as a share of what HTTP
//!   alone does on this machine in this run.
//!
//! `--workspaces N` is the multi-tenant scenario: N workspaces, each with
//! one webhook connection and one rule to the receiver, every connection
//! of the load taking their publishable keys in turn, and the server in its
//! default configuration (unless `--per-connection` is given).
//!
//! `--nodes N` starts N `switchyard serve` processes on the one PostgreSQL
//! database the environment names (`SWITCHYARD_STORAGE__BACKEND=postgres`,
//! `SWITCHYARD_STORAGE__POSTGRES__URL`): workspaces are created through
//! the nodes in turn and each workspace's events are posted to the node it
//! was created through, the load's connections spread over the nodes.

use super::cpu::{CpuMeter, CpuSplit};
use super::load::{Bodies, BodyTemplate, Counters, Poster, Target};
use super::probe::Probe;
use super::receiver::{ReceiverStats, now_us};
use super::{
    create_workspace, drive, new_histogram, print_cpu, report, serve_command, spawn_listening,
};
use crate::destinations::tenant_http::TenantHttp;
use crate::model::now_ms;
use anyhow::Context;
use clap::Args;
use clap::builder::RangedU64ValueParser;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;
use tokio::time::{MissedTickBehavior, interval_at};

#[derive(Args, Debug, Clone)]
pub struct E2eBenchOptions {
    /// Keep-alive connections posting events in the throughput phase; also
    /// the concurrent requests of the HTTP baselines (phases C and C2).
    #[arg(long, default_value_t = 32, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub connections: usize,
    /// Seconds of the throughput phase.
    #[arg(long, default_value_t = 30, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub duration: u64,
    /// Events per second of the fixed-rate latency phase.
    #[arg(long, default_value_t = TARGET_RATE, value_parser = RangedU64ValueParser::<u64>::new().range(1..))]
    pub rate: u64,
    /// `delivery.max_in_flight_per_connection` of the server under test;
    /// by default 64 with one workspace, the built-in default (8) with
    /// several.
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub per_connection: Option<usize>,
    /// Workspaces, each with one webhook connection and one rule to the
    /// receiver; the load takes their publishable keys in turn.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub workspaces: usize,
    /// `switchyard serve` processes sharing the PostgreSQL database set in
    /// the environment (1 to 4); needs at least as many workspaces, since
    /// one node at a time delivers a connection.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=4))]
    pub nodes: usize,
}

/// The CPU meter's names of the server processes, one per node.
const NODE_LABELS: [&str; 4] = ["server", "server 2", "server 3", "server 4"];

/// In-flight cap per connection of the single-workspace scenario: the
/// built-in 8 caps one connection at about 8 / round trip.
const SINGLE_WORKSPACE_PER_CONNECTION: usize = 64;

/// Seconds of the fixed-rate phase and of the baseline.
const PHASE_SECONDS: u64 = 10;
/// Longest wait for the receiver to catch up after a phase.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Most connections the paced sender spreads its events over.
const PACED_CONNECTIONS: usize = 16;
/// Samples (seconds) compared at each end of phase A to tell queue growth.
const GROWTH_WINDOW: usize = 5;
/// The targets of the issue, for a 2-core machine.
const TARGET_EVENTS_PER_SECOND: f64 = 10_000.0;
const TARGET_P99_US: u64 = 50_000;
const TARGET_RATE: u64 = 1000;

pub async fn e2e(options: E2eBenchOptions) -> anyhow::Result<()> {
    if options.nodes > 1 {
        let backend = std::env::var("SWITCHYARD_STORAGE__BACKEND").unwrap_or_default();
        anyhow::ensure!(
            backend == "postgres",
            "--nodes {} needs one database shared by the nodes: set SWITCHYARD_STORAGE__BACKEND=postgres and SWITCHYARD_STORAGE__POSTGRES__URL",
            options.nodes
        );
        anyhow::ensure!(
            options.workspaces >= options.nodes,
            "--nodes {} needs --workspaces {0} or more: one node at a time delivers a connection",
            options.nodes
        );
    }
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let bodies = Bodies::new()?;

    let mut receiver =
        spawn_listening(Command::new(&exe).args(["bench", "receiver", "--listen", "127.0.0.1:0"]))
            .await
            .context("cannot start the receiver")?;
    let mut ceiling = spawn_listening(Command::new(&exe).args([
        "bench",
        "baseline-server",
        "--listen",
        "127.0.0.1:0",
    ]))
    .await
    .context("cannot start the bare hyper server")?;
    let admin = format!("adm_{}", crate::api::random_token());
    let per_connection = options
        .per_connection
        .or((options.workspaces == 1).then_some(SINGLE_WORKSPACE_PER_CONNECTION));
    let mut data_dirs = Vec::with_capacity(options.nodes);
    let mut servers = Vec::with_capacity(options.nodes);
    for _ in 0..options.nodes {
        let data_dir = tempfile::tempdir().context("cannot create a temp dir")?;
        let mut command = serve_command(&exe, data_dir.path(), &admin);
        command.env("SWITCHYARD_DELIVERY__ALLOW_PRIVATE_NETWORKS", "true");
        if let Some(cap) = per_connection {
            command.env(
                "SWITCHYARD_DELIVERY__MAX_IN_FLIGHT_PER_CONNECTION",
                cap.to_string(),
            );
        }
        servers.push(
            spawn_listening(&mut command)
                .await
                .context("cannot start switchyard serve")?,
        );
        data_dirs.push(data_dir);
    }

    let probes = servers
        .iter()
        .map(|server| Probe::new(&server.url, &receiver.url))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The queue depth in /metrics counts every node's entries: one probe
    // watches the pipeline for all.
    let probe = &probes[0];
    // A workspace is set up through the node that receives its events: a
    // node's caches hear only of changes made through it, and the node
    // ingesting for a connection nobody holds claims its lease.
    let mut publishable = vec![Vec::new(); options.nodes];
    for n in 0..options.workspaces {
        let node = n % options.nodes;
        let keys = create_workspace(&servers[node].url, &admin).await?;
        probes[node]
            .create_route(&keys.secret, &format!("{}/hook", receiver.url))
            .await?;
        publishable[node].push(keys.publishable);
    }
    let mut targets = Vec::with_capacity(options.nodes);
    for (server, keys) in servers.iter().zip(&publishable) {
        let authority = server
            .url
            .strip_prefix("http://")
            .context("the server's URL is not http://")?
            .trim_end_matches('/')
            .to_string();
        targets.push(Target {
            authority,
            auths: keys.iter().map(|key| format!("Bearer {key}")).collect(),
            body: Arc::new(bodies.event.clone()),
        });
    }

    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "e2e benchmark: switchyard serve, webhook receiver and load generator as three processes on {cores} cores"
    );
    if options.nodes > 1 {
        println!(
            "  {} switchyard serve nodes on one PostgreSQL database, the load's connections spread over them",
            options.nodes
        );
    }
    println!(
        "  {} workspace(s), each with one webhook connection to the receiver and one rule (events [\"*\"]): one delivery per event",
        options.workspaces
    );
    println!(
        "  event body {} bytes (example alert.triggered + payload.sent_at_us), webhook body {} bytes",
        bodies.event.len(),
        bodies.webhook.len()
    );
    match per_connection {
        Some(cap) => println!(
            "  delivery.max_in_flight_per_connection = {cap} (built-in default 8: one connection delivers at most cap / round trip)"
        ),
        None => println!("  the server's default configuration"),
    }
    let first = probe
        .check_pipeline(&publishable[0][0], &bodies.event)
        .await?;
    println!(
        "  pipeline check: first event delivered in {:.1} ms",
        first.as_secs_f64() * 1000.0
    );

    let mut processes: Vec<(&'static str, Option<u32>)> = NODE_LABELS
        .iter()
        .zip(&servers)
        .map(|(label, server)| (*label, server.child.id()))
        .collect();
    processes.push(("receiver", receiver.child.id()));
    processes.push(("load generator", Some(std::process::id())));
    let meter = CpuMeter::new(processes);
    // What the server's caps let be in flight at once, all workspaces.
    let cap = match per_connection {
        Some(cap) => cap,
        None => {
            crate::config::Config::defaults()?
                .delivery
                .max_in_flight_per_connection
        }
    };
    let slack = (cap * options.workspaces).max(options.connections) as f64;
    let a = throughput(probe, &probes, &targets, &options, &meter, slack).await?;
    let b = fixed_rate(probe, &targets, &options, &meter).await?;
    let c = baseline(
        probe,
        &receiver.url,
        &bodies.webhook,
        options.connections,
        &meter,
        BaselineClient::Reqwest,
    )
    .await?;
    let c2 = baseline(
        probe,
        &receiver.url,
        &bodies.webhook,
        options.connections,
        &meter,
        BaselineClient::Tenant,
    )
    .await?;
    println!();
    println!(
        "phase D, ceiling: the bare hyper server answering 202, {} connections for {PHASE_SECONDS} s",
        options.connections
    );
    let ceiling_meter = CpuMeter::new(vec![
        ("bare hyper", ceiling.child.id()),
        ("load generator", Some(std::process::id())),
    ]);
    let cpu = ceiling_meter.snapshot();
    let d = drive(
        &ceiling.url,
        "",
        options.connections,
        Duration::from_secs(PHASE_SECONDS),
    )
    .await?;
    report("bare hyper 202", &d);
    print_cpu(&ceiling_meter, &cpu);

    println!();
    println!(
        "ratio switchyard deliveries/s (phase A) / bare reqwest requests/s (phase C): {:.1}%",
        100.0 * a.delivered_per_second / c.per_second().max(f64::MIN_POSITIVE)
    );
    println!(
        "ratio switchyard deliveries/s (phase A) / bare hyper requests/s (phase D): {:.3}",
        a.delivered_per_second / d.per_second().max(f64::MIN_POSITIVE)
    );
    if let Some(split) = a.server_us_per_delivery {
        let us = split.total();
        println!(
            "server CPU per delivered event (phase A): {us:.1} µs (user {:.1}, kernel {:.1})",
            split.user, split.kernel
        );
        // An event is one request served and one sent: this pair is the
        // baseline of its HTTP work, whatever the server does besides.
        for (phase, result) in [("C2, the server's client", &c2), ("C, reqwest", &c)] {
            if let Some(pair) = result.http_pair {
                println!(
                    "  {:.1} times one HTTP request served plus one sent (phase {phase}: {:.1} µs)",
                    us / pair.total_us(),
                    pair.total_us()
                );
            }
        }
    }
    let sustained = a.accepted_per_second.min(a.delivered_per_second);
    let stable = a.growth.as_ref().is_some_and(|growth| !growth.growing);
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("targets (2-core machine; this one has {cores}):");
    println!(
        "  >= {TARGET_EVENTS_PER_SECOND:.0} events/s end to end, queue not growing: {sustained:.0} events/s, queue {} -> {}",
        a.growth.as_ref().map_or("unknown", Growth::verdict),
        verdict(sustained >= TARGET_EVENTS_PER_SECOND && stable)
    );
    println!(
        "  p99 event -> receiver < {} ms at {TARGET_RATE} events/s: p99 {:.2} ms at {} events/s -> {}",
        TARGET_P99_US / 1000,
        b.latency.p99_us as f64 / 1000.0,
        options.rate,
        if options.rate != TARGET_RATE {
            "not comparable (other --rate)"
        } else {
            verdict(b.latency.recorded > 0 && b.latency.p99_us < TARGET_P99_US)
        }
    );

    receiver.stop().await;
    for server in &mut servers {
        server.stop().await;
    }
    ceiling.stop().await;
    Ok(())
}

fn latency_line(h: &Histogram<u64>) -> String {
    ReceiverStats {
        count: h.len(),
        recorded: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
    }
    .latency_line()
}

/// How the queue depth moved between both ends of phase A.
struct Growth {
    /// Seconds (samples) averaged at each end: [`GROWTH_WINDOW`], or half
    /// the samples of a shorter run.
    window: usize,
    /// Mean depth over the first and the last `window` seconds.
    first: f64,
    last: f64,
    max: f64,
    /// Change in depth per second between both windows.
    per_second: f64,
    growing: bool,
}

impl Growth {
    fn verdict(&self) -> &'static str {
        if self.growing { "growing" } else { "stable" }
    }
}

/// Growing means the last window's mean exceeds the first's by more than
/// `slack` (what the in-flight cap alone explains) and rises faster than
/// 1% of the ingest rate: a backlog the engine does not work off.
fn queue_growth(depths: &[Option<f64>], accepted_per_second: f64, slack: f64) -> Option<Growth> {
    let samples: Vec<(f64, f64)> = depths
        .iter()
        .enumerate()
        .filter_map(|(second, depth)| depth.map(|depth| (second as f64, depth)))
        .collect();
    if samples.len() < 2 {
        return None;
    }
    let window = (samples.len() / 2).clamp(1, GROWTH_WINDOW);
    let mean = |part: &[(f64, f64)]| {
        let n = part.len() as f64;
        (
            part.iter().map(|(second, _)| second).sum::<f64>() / n,
            part.iter().map(|(_, depth)| depth).sum::<f64>() / n,
        )
    };
    let (first_at, first) = mean(&samples[..window]);
    let (last_at, last) = mean(&samples[samples.len() - window..]);
    let per_second = (last - first) / (last_at - first_at).max(1.0);
    Some(Growth {
        window,
        first,
        last,
        max: samples.iter().map(|(_, depth)| *depth).fold(0.0, f64::max),
        per_second,
        growing: last - first > slack && per_second > 0.01 * accepted_per_second,
    })
}

struct ThroughputResult {
    accepted_per_second: f64,
    delivered_per_second: f64,
    growth: Option<Growth>,
    /// The server's CPU time (all threads, all nodes) over the phase
    /// divided by the deliveries received in it, in µs; ingest is
    /// included, as every delivered event was also ingested.
    server_us_per_delivery: Option<CpuSplit>,
}

/// Phase A: a closed loop of `--connections` for `--duration`.
/// `slack`: the queue depth the in-flight caps alone explain.
async fn throughput(
    probe: &Probe,
    every_node: &[Probe],
    targets: &[Target],
    options: &E2eBenchOptions,
    meter: &CpuMeter,
    slack: f64,
) -> anyhow::Result<ThroughputResult> {
    println!();
    println!(
        "phase A, throughput: {} connections posting events in a closed loop for {} s",
        options.connections, options.duration
    );
    println!(
        "{:>5}  {:>11}  {:>12}  {:>11}",
        "s", "accepted/s", "delivered/s", "queue depth"
    );
    let counters = Arc::new(Counters::default());
    let mut posters = Vec::with_capacity(options.connections);
    for lane in 0..options.connections {
        posters.push(connect_lane(targets, lane).await?);
    }
    let cpu = meter.snapshot();
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(options.duration);
    let workers: Vec<_> = posters
        .into_iter()
        .map(|mut poster| {
            let counters = counters.clone();
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    poster.post_counted(&counters).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();

    let mut ticker = interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut depths = Vec::with_capacity(options.duration as usize);
    let (mut last_at, mut last_accepted, mut last_delivered) = (start, 0, 0);
    for _ in 0..options.duration {
        ticker.tick().await;
        let now = Instant::now();
        let accepted = counters.accepted();
        let delivered = probe.stats().await?.count;
        let depth = probe.queue_depth().await;
        let seconds = (now - last_at).as_secs_f64();
        println!(
            "{:>5.0}  {:>11.0}  {:>12.0}  {:>11}",
            (now - start).as_secs_f64(),
            (accepted - last_accepted) as f64 / seconds,
            delivered.saturating_sub(last_delivered) as f64 / seconds,
            depth.map_or("-".to_string(), |depth| format!("{depth:.0}"))
        );
        depths.push(depth);
        (last_at, last_accepted, last_delivered) = (now, accepted, delivered);
    }
    for worker in workers {
        worker.await.context("a load task failed")??;
    }
    let elapsed = start.elapsed();
    let server_cores: Option<CpuSplit> = NODE_LABELS[..targets.len()]
        .iter()
        .map(|label| meter.cores_used_split(&cpu, label))
        .sum();
    let cpu = meter.report(&cpu);
    let accepted = counters.accepted();
    let delivered = probe.stats().await?.count;
    let server_us_per_delivery = server_cores
        .filter(|_| delivered > 0)
        .map(|cores| cores.scaled(elapsed.as_secs_f64() * 1e6 / delivered as f64));
    let accepted_per_second = accepted as f64 / elapsed.as_secs_f64();
    let delivered_per_second = delivered as f64 / elapsed.as_secs_f64();
    let backlog = probe.queue_depth().await;
    let drain_started = Instant::now();
    let (stats, complete) = probe.wait_delivered(accepted, DRAIN_LIMIT).await?;

    println!(
        "load stopped after {:.1} s: {accepted} events accepted, {} errors, {delivered} delivered by then, queue depth {}",
        elapsed.as_secs_f64(),
        counters.errors(),
        backlog.map_or("-".to_string(), |depth| format!("{depth:.0}"))
    );
    if complete {
        println!(
            "every accepted event reached the receiver {:.2} s after the load stopped",
            drain_started.elapsed().as_secs_f64()
        );
        // Deliveries leave the queue once their attempt is recorded.
        match probe.wait_queue_empty(DRAIN_LIMIT).await {
            Some(depth) if depth > 0.0 => println!(
                "the queue still held {depth:.0} entries {} s later",
                DRAIN_LIMIT.as_secs()
            ),
            _ => {}
        }
    } else {
        println!(
            "only {} of {accepted} events reached the receiver within {} s after the load stopped",
            stats.count,
            DRAIN_LIMIT.as_secs()
        );
    }
    // A delivery far behind the rest (an attempt that failed or timed out
    // and was retried) shows here.
    if let Some(results) = Probe::attempt_results(every_node).await {
        let listed: Vec<String> = results
            .iter()
            .map(|(result, count)| format!("{result} {count:.0}"))
            .collect();
        println!("attempts by result    {}", listed.join(", "));
    }
    println!("events accepted       {accepted_per_second:>9.0} /s");
    println!("deliveries received   {delivered_per_second:>9.0} /s  (same window)");
    let growth = queue_growth(&depths, accepted_per_second, slack);
    match &growth {
        Some(growth) => println!(
            "queue depth           first {window} s mean {:.0}, last {window} s mean {:.0}, max {:.0}: {} ({:+.1}/s)",
            growth.first,
            growth.last,
            growth.max,
            growth.verdict(),
            growth.per_second,
            window = growth.window,
        ),
        None => println!("queue depth           unknown (/metrics had no switchyard_queue_depth)"),
    }
    if growth.as_ref().is_some_and(|growth| growth.growing) {
        println!(
            "  ingest outran delivery: the queue grew, so the delivery rate above is the engine's ceiling here; \
             fewer --connections offer less load"
        );
    }
    println!(
        "event -> receiver     {}  ({} deliveries)",
        stats.latency_line(),
        stats.recorded
    );
    if let Some(cpu) = cpu {
        println!("{cpu}");
    }
    if let Some(us) = server_us_per_delivery {
        println!(
            "server CPU            {:>9.1} µs per delivered event (user {:.1}, kernel {:.1})",
            us.total(),
            us.user,
            us.kernel
        );
    }
    Ok(ThroughputResult {
        accepted_per_second,
        delivered_per_second,
        growth,
        server_us_per_delivery,
    })
}

/// Lane `n` posts to node `n % nodes`, taking that node's keys in turn.
async fn connect_lane(targets: &[Target], lane: usize) -> anyhow::Result<Poster> {
    Poster::connect(&targets[lane % targets.len()], lane / targets.len()).await
}

struct FixedRateResult {
    latency: ReceiverStats,
}

/// Phase B: `--rate` events a second for [`PHASE_SECONDS`], each
/// connection on its own schedule offset from the others.
async fn fixed_rate(
    probe: &Probe,
    targets: &[Target],
    options: &E2eBenchOptions,
    meter: &CpuMeter,
) -> anyhow::Result<FixedRateResult> {
    let total = options.rate * PHASE_SECONDS;
    let lanes = options
        .connections
        .min(PACED_CONNECTIONS)
        .min(usize::try_from(total).unwrap_or(usize::MAX))
        .max(1);
    println!();
    println!(
        "phase B, latency at a fixed rate: {} events/s for {PHASE_SECONDS} s, paced over {lanes} connections",
        options.rate
    );
    if let Some(depth) = probe.wait_queue_empty(DRAIN_LIMIT).await
        && depth > 0.0
    {
        println!("  (starting behind {depth:.0} queued deliveries left from phase A)");
    }
    probe.reset().await?;
    let counters = Arc::new(Counters::default());
    let mut posters = Vec::with_capacity(lanes);
    for lane in 0..lanes {
        posters.push(connect_lane(targets, lane).await?);
    }
    let tick = Duration::from_secs_f64(1.0 / options.rate as f64);
    let period = tick * lanes as u32;
    // Tools watching this output (scripts/threads-under-e2e) start here.
    println!("  sending from now");
    let cpu = meter.snapshot();
    let start = Instant::now() + Duration::from_millis(20);
    let workers: Vec<_> = posters
        .into_iter()
        .enumerate()
        .map(|(lane, mut poster)| {
            let counters = counters.clone();
            let count = (total - lane as u64).div_ceil(lanes as u64);
            let first = start + tick * lane as u32;
            tokio::spawn(async move {
                let mut rtt = new_histogram()?;
                let mut lag = new_histogram()?;
                let mut ticker = interval_at(first.into(), period);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
                for _ in 0..count {
                    let due = ticker.tick().await.into_std();
                    let sent = Instant::now();
                    lag.saturating_record((sent - due).as_micros().max(1) as u64);
                    poster.post_counted(&counters).await?;
                    rtt.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                }
                anyhow::Ok((rtt, lag))
            })
        })
        .collect();
    let mut rtt = new_histogram()?;
    let mut lag = new_histogram()?;
    for worker in workers {
        let (partial_rtt, partial_lag) = worker.await.context("a load task failed")??;
        rtt.add(partial_rtt)?;
        lag.add(partial_lag)?;
    }
    let elapsed = start.elapsed();
    let cpu = meter.report(&cpu);
    let accepted = counters.accepted();
    let (stats, complete) = probe.wait_delivered(accepted, DRAIN_LIMIT).await?;
    println!(
        "sent {} in {:.2} s ({:.0} events/s): {accepted} accepted, {} errors; send lag behind schedule p99 {:.2} ms, max {:.2} ms",
        rtt.len(),
        elapsed.as_secs_f64(),
        rtt.len() as f64 / elapsed.as_secs_f64(),
        counters.errors(),
        lag.value_at_quantile(0.99) as f64 / 1000.0,
        lag.max() as f64 / 1000.0
    );
    if !complete {
        println!(
            "only {} of {accepted} events reached the receiver within {} s",
            stats.count,
            DRAIN_LIMIT.as_secs()
        );
    }
    println!("POST /v1/events       {}", latency_line(&rtt));
    println!(
        "event -> receiver     {}  ({} deliveries)",
        stats.latency_line(),
        stats.recorded
    );
    if let Some(cpu) = cpu {
        println!("{cpu}");
    }
    Ok(FixedRateResult { latency: stats })
}

struct BaselineResult {
    requests: u64,
    elapsed: Duration,
    /// CPU per request of the receiver serving it and of the client
    /// sending it: what one event's two HTTP exchanges cost with the same
    /// crates the server uses, before anything is stored or scheduled (a
    /// little more than HTTP alone: the receiver parses and times each
    /// body, the client renders it).
    http_pair: Option<HttpPair>,
}

#[derive(Clone, Copy)]
struct HttpPair {
    served_us: f64,
    sent_us: f64,
}

impl HttpPair {
    fn total_us(&self) -> f64 {
        self.served_us + self.sent_us
    }
}

impl BaselineResult {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// The clients phase C compares: reqwest, and the client the server sends
/// webhooks with.
#[derive(Clone, Copy, PartialEq)]
enum BaselineClient {
    Reqwest,
    Tenant,
}

impl BaselineClient {
    fn name(self) -> &'static str {
        match self {
            BaselineClient::Reqwest => "bare reqwest",
            BaselineClient::Tenant => "server's client",
        }
    }
}

/// One of [`BaselineClient`], built.
#[derive(Clone)]
enum BaselineSender {
    Reqwest(reqwest::Client, String),
    Tenant(Arc<TenantHttp>, http::Uri),
}

impl BaselineSender {
    fn new(client: BaselineClient, url: String, concurrency: usize) -> anyhow::Result<Self> {
        let timeout = Duration::from_secs(15);
        Ok(match client {
            BaselineClient::Reqwest => BaselineSender::Reqwest(
                reqwest::Client::builder()
                    .pool_max_idle_per_host(concurrency)
                    .timeout(timeout)
                    .build()
                    .context("cannot build the HTTP client")?,
                url,
            ),
            BaselineClient::Tenant => BaselineSender::Tenant(
                Arc::new(
                    TenantHttp::new(
                        crate::destinations::net::TargetPolicy::new(true),
                        timeout,
                        concurrency,
                    )
                    .context("cannot build the HTTP client")?,
                ),
                url.parse().context("the receiver's URL")?,
            ),
        })
    }

    /// Posts `body` with headers shaped like the server's signed ones;
    /// true on a 2xx read to its end.
    async fn post(&self, body: bytes::Bytes) -> bool {
        const HEADERS: [(&str, &str); 3] = [
            ("content-type", "application/json"),
            ("webhook-id", "dlv_01JS2ZB6Y6R7K1T4V8W9X0Y1Z2"),
            (
                "webhook-signature",
                "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
            ),
        ];
        let timestamp = (now_ms() / 1000).to_string();
        match self {
            BaselineSender::Reqwest(client, url) => {
                let mut request = client.post(url).header("webhook-timestamp", timestamp);
                for (name, value) in HEADERS {
                    request = request.header(name, value);
                }
                match request.body(body).send().await {
                    Ok(response) => {
                        response.status().is_success() && response.bytes().await.is_ok()
                    }
                    Err(_) => false,
                }
            }
            BaselineSender::Tenant(client, uri) => {
                let mut headers = http::HeaderMap::new();
                for (name, value) in HEADERS {
                    headers.insert(name, http::HeaderValue::from_static(value));
                }
                if let Ok(value) = http::HeaderValue::try_from(timestamp) {
                    headers.insert("webhook-timestamp", value);
                }
                client
                    .post(uri.clone(), headers, body)
                    .await
                    .is_ok_and(|answer| answer.status.is_success())
            }
        }
    }
}

/// Phase C: `concurrency` tasks posting the webhook body straight to the
/// receiver through one `client` for [`PHASE_SECONDS`].
async fn baseline(
    probe: &Probe,
    receiver: &str,
    body: &BodyTemplate,
    concurrency: usize,
    meter: &CpuMeter,
    client: BaselineClient,
) -> anyhow::Result<BaselineResult> {
    println!();
    let (phase, what) = match client {
        BaselineClient::Reqwest => ("phase C", "one reqwest::Client"),
        BaselineClient::Tenant => (
            "phase C2",
            "the client the server sends webhooks with (hyper-util's pool)",
        ),
    };
    println!(
        "{phase}, baseline: {what}, {concurrency} concurrent requests posting the webhook body straight to the receiver for {PHASE_SECONDS} s"
    );
    probe.reset().await?;
    let sender = BaselineSender::new(client, format!("{receiver}/hook"), concurrency)?;
    let body = Arc::new(body.clone());
    let cpu = meter.snapshot();
    let start = Instant::now();
    let stop_at = start + Duration::from_secs(PHASE_SECONDS);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (sender, body) = (sender.clone(), body.clone());
            tokio::spawn(async move {
                let mut histogram = new_histogram()?;
                let mut errors = 0u64;
                while Instant::now() < stop_at {
                    let started = Instant::now();
                    if sender.post(body.render(now_us())).await {
                        histogram.saturating_record(started.elapsed().as_micros().max(1) as u64);
                    } else {
                        errors += 1;
                    }
                }
                anyhow::Ok((histogram, errors))
            })
        })
        .collect();
    let mut histogram = new_histogram()?;
    let mut errors = 0;
    for worker in workers {
        let (partial, failed) = worker.await.context("a baseline task failed")??;
        histogram.add(partial)?;
        errors += failed;
    }
    let elapsed = start.elapsed();
    let requests = histogram.len();
    // Failed requests took CPU too.
    let attempted = requests + errors;
    let per_request_us = |cores: f64| cores * elapsed.as_secs_f64() * 1e6 / attempted as f64;
    let http_pair = match (
        meter.cores_used(&cpu, "receiver"),
        meter.cores_used(&cpu, "load generator"),
    ) {
        (Some(served), Some(sent)) if attempted > 0 => Some(HttpPair {
            served_us: per_request_us(served),
            sent_us: per_request_us(sent),
        }),
        _ => None,
    };
    let result = BaselineResult {
        requests,
        elapsed,
        http_pair,
    };
    let cpu = meter.report(&cpu);
    let stats = probe.stats().await?;
    println!(
        "{:<22}{:>9.0} req/s  ({} requests, {errors} errors)",
        client.name(),
        result.per_second(),
        result.requests
    );
    println!("round trip            {}", latency_line(&histogram));
    println!(
        "sent -> receiver      {}  ({} received)",
        stats.latency_line(),
        stats.count
    );
    if let Some(cpu) = cpu {
        println!("{cpu}");
    }
    if let Some(pair) = result.http_pair {
        println!(
            "HTTP per request      {:.1} µs served (receiver) + {:.1} µs sent (client) = {:.1} µs of CPU",
            pair.served_us,
            pair.sent_us,
            pair.total_us()
        );
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_growth_tells_a_backlog_from_noise() {
        let flat: Vec<_> = [50.0, 70.0, 40.0, 60.0, 55.0, 65.0, 45.0, 50.0, 60.0, 52.0]
            .map(Some)
            .to_vec();
        let growth = queue_growth(&flat, 10_000.0, 64.0).unwrap();
        assert!(!growth.growing);
        let rising: Vec<_> = (0..10).map(|s| Some(2_000.0 * s as f64)).collect();
        let growth = queue_growth(&rising, 10_000.0, 64.0).unwrap();
        assert!(growth.growing);
        assert!((growth.per_second - 2_000.0).abs() < 1e-6);
        assert!(queue_growth(&[None, Some(1.0)], 1.0, 1.0).is_none());
    }
}
