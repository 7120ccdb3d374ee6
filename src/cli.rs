//! Command-line parsing and the client commands that talk to a running
//! server over its HTTP API.

mod progress;
mod transfer;

use crate::bench::{self, BacklogBenchOptions, E2eBenchOptions, IngestBenchOptions};
use crate::config::Config;
use crate::server::{AdminTokenSource, Server};
use anyhow::{Context, bail};
use clap::{Args, CommandFactory, Parser, Subcommand};
use progress::{Progress, duration_text};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `0.1.0 (cd05efc 2026-12-01)`: the version and the commit it was built
/// from, stamped by build.rs (`unknown` when built outside a git checkout
/// without `SWITCHYARD_BUILD_COMMIT`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BUILD_COMMIT_STAMP"),
    ")"
);

#[derive(Parser)]
#[command(name = "switchyard", version = VERSION, about = "Self-hosted event router")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve {
        /// TOML configuration file (default: ./config/switchyard.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage workspaces on a running server (admin token).
    Workspace {
        #[command(subcommand)]
        command: WorkspaceCommand,
    },
    /// Emit one event to a running server; prints its id.
    Emit(EmitArgs),
    /// Download a consistent backup of a running server's database (admin
    /// token; redb store only). Restore: stop the server, put the file in
    /// place of `data_dir/switchyard.redb`, start it with the same master key.
    Backup(BackupArgs),
    /// Give the space freed inside the redb database file back to the file
    /// system (redb store only). Run it with the server stopped; it refuses
    /// while the server holds the database.
    Compact {
        /// TOML configuration file naming `data_dir` (default:
        /// ./config/switchyard.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create or upgrade the storage schema and exit: the redb file's
    /// tables, or PostgreSQL's migrations (`storage.backend`). `serve` does
    /// the same at start; this lets a deploy run it once, before the nodes.
    Migrate {
        /// TOML configuration file (default: ./config/switchyard.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write every durable row of the configured store into a dump file,
    /// to move it to another store with `import`. On redb run it with the
    /// server stopped (it refuses while the server holds the database); on
    /// PostgreSQL it reads one snapshot. Sealed secrets stay sealed, so the
    /// import needs the same master key.
    Export {
        /// TOML configuration file (default: ./config/switchyard.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The dump file to write; must not exist yet.
        #[arg(long)]
        output: PathBuf,
    },
    /// Load a dump written by `export` into the configured store
    /// (PostgreSQL, or redb with the server stopped), which must be empty:
    /// all or nothing, in one transaction. Refuses a damaged dump or
    /// another master key before writing.
    Import {
        /// TOML configuration file (default: ./config/switchyard.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The dump file `switchyard export` wrote.
        #[arg(long)]
        input: PathBuf,
    },
    /// Print a shell completion script, e.g.
    /// `switchyard completions bash > /etc/bash_completion.d/switchyard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Exit 0 when the server answers `GET /healthz`, 1 otherwise (the
    /// container image's HEALTHCHECK; no curl needed).
    Healthcheck {
        /// Base URL of the server (default: the configuration's `listen`
        /// address, with 0.0.0.0 or [::] read as loopback).
        #[arg(long)]
        url: Option<String>,
        /// TOML configuration file (default: ./config/switchyard.toml if present).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load generators and benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values, secrets masked.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServerArgs {
    /// Base URL of the running server.
    #[arg(
        long,
        env = "SWITCHYARD_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:7600"
    )]
    url: String,
}

#[derive(Args)]
struct AdminArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The instance admin token (default: read from the data dir's
    /// `admin_token` file).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The server's data dir, where a generated admin token is stored
    /// (default: `data_dir` of the configuration, `./data`).
    #[arg(long, env = "SWITCHYARD_DATA_DIR", hide_env_values = true)]
    data_dir: Option<PathBuf>,
}

impl AdminArgs {
    /// The token given, else the one the server generated in its data dir:
    /// run next to `data/`, the client commands need no token to be copied.
    fn token(&self) -> anyhow::Result<String> {
        if let Some(token) = &self.admin_token {
            return Ok(token.clone());
        }
        let data_dir = match &self.data_dir {
            Some(dir) => dir.clone(),
            None => Config::load(None)?.data_dir,
        };
        let path = data_dir.join(crate::server::ADMIN_TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_string()),
            Ok(_) => bail!("{} is empty", path.display()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => bail!(
                "no admin token: give --admin-token (or SWITCHYARD_ADMIN_TOKEN), \
                 or run next to the server's data dir ({} does not exist; \
                 --data-dir names another)",
                path.display()
            ),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

#[derive(Subcommand)]
enum WorkspaceCommand {
    /// Create a workspace; prints its id and keys (shown only now).
    Create {
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List workspaces.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Delete a workspace with everything it holds.
    Delete {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace both keys of a workspace; the old ones stop working at once.
    RotateKeys {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Args)]
struct BackupArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// Where to write the backup; must not exist yet.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct EmitArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Publishable or secret key of the workspace.
    #[arg(long, env = "SWITCHYARD_KEY", hide_env_values = true)]
    key: String,
    /// Event type, e.g. alert.triggered.
    #[arg(long, required_unless_present = "file")]
    event: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    #[arg(long)]
    resource_id: Option<String>,
    /// Payload as a JSON object.
    #[arg(long, conflicts_with = "file")]
    payload: Option<String>,
    /// A whole event body as JSON ({"event", "resource", "resource_id", "payload"}).
    #[arg(long, conflicts_with_all = ["event", "resource", "resource_id"])]
    file: Option<PathBuf>,
    /// Idempotency-Key header: the same key within 24 h stores nothing new.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Durable ingest throughput and latency against a bare hyper baseline.
    Ingest(IngestBenchOptions),
    /// End to end: events in, webhook deliveries out to a local receiver;
    /// throughput, queue depth and latency, against a bare reqwest baseline.
    E2e(E2eBenchOptions),
    /// A large backlog to a webhook endpoint that is down: resident memory,
    /// restart-to-ready time with the backlog, drain rate once it is back.
    Backlog(BacklogBenchOptions),
    /// A minimal hyper server answering 202 to everything (the baseline).
    #[command(hide = true)]
    BaselineServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// The webhook receiver of `bench e2e`: answers 200, records event →
    /// receiver latency; `GET /stats`, `POST /reset`.
    #[command(hide = true)]
    Receiver {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

/// The error and its causes for the terminal, each said once: many errors
/// already end with their cause's text (`cannot use data_dir …: File
/// exists`), and anyhow's `{:#}` would repeat it.
pub fn describe_error(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Command::Serve { config } => runtime.block_on(serve(config)),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let config = Config::load(config.as_deref())?;
            print!("{}", config.to_masked_toml());
            for name in crate::config::unknown_environment_variables() {
                eprintln!("warning: {name} names no configuration key; it is ignored");
            }
            eprintln!("configuration is valid");
            Ok(())
        }
        Command::Workspace { command } => runtime.block_on(workspace(command)),
        Command::Emit(args) => runtime.block_on(emit(args)),
        Command::Backup(args) => runtime.block_on(backup(args)),
        Command::Compact { config } => compact(config),
        Command::Migrate { config } => runtime.block_on(migrate(config)),
        Command::Export { config, output } => transfer::export(&runtime, config, &output),
        Command::Import { config, input } => runtime.block_on(transfer::import(config, input)),
        Command::Completions { shell } => completions(shell),
        Command::Healthcheck { url, config } => runtime.block_on(healthcheck(url, config)),
        Command::Bench {
            command: BenchCommand::Ingest(options),
        } => runtime.block_on(bench::ingest(options)),
        Command::Bench {
            command: BenchCommand::E2e(options),
        } => runtime.block_on(bench::e2e(options)),
        Command::Bench {
            command: BenchCommand::Backlog(options),
        } => runtime.block_on(bench::backlog(options)),
        Command::Bench {
            command: BenchCommand::BaselineServer { listen },
        } => runtime.block_on(bench::baseline_server(&listen)),
        Command::Bench {
            command: BenchCommand::Receiver { listen },
        } => runtime.block_on(bench::receiver(&listen)),
    }
}

async fn serve(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    crate::telemetry::init(&config.log)?;
    for name in crate::config::unknown_environment_variables() {
        tracing::warn!("{name} names no configuration key; it is ignored");
    }
    let server = Server::bind(config).await?;
    // The token itself is never printed: under systemd stdout is the
    // journal, kept for ever. Say where it is instead.
    if let AdminTokenSource::Generated(path) = server.admin_token_source() {
        println!(
            "generated an admin token in {} (mode 0600); read it with: cat {}",
            path.display(),
            path.display()
        );
    }
    // Signals are caught from before the listening line: a script that
    // sends SIGTERM as soon as it reads the line gets a clean stop.
    let signals = StopSignals::install();
    let address = server.local_addr();
    // Scripts wait for this stdout line; the log has its own ("serving",
    // with the address), so it is said once on each.
    println!("listening on http://{address}");
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_when_received(shutdown.clone()));
    server.run(shutdown).await?;
    Ok(())
}

/// SIGTERM and SIGINT, registered when installed (not when first awaited).
struct StopSignals {
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(handler) => Some(handler),
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for {name}");
                    None
                }
            };
            Self {
                terminate: install(SignalKind::terminate(), "SIGTERM"),
                interrupt: install(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn cancel_when_received(self, shutdown: CancellationToken) {
        #[cfg(unix)]
        {
            /// A handler that could not be installed never fires.
            async fn received(handler: Option<tokio::signal::unix::Signal>) {
                match handler {
                    Some(mut handler) => {
                        handler.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = received(self.terminate) => {}
                _ = received(self.interrupt) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        shutdown.cancel();
    }
}

fn client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")
}

/// Sends a request and returns the JSON answer, or an error carrying the
/// server's own error message.
async fn call(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request.send().await.context("cannot reach the server")?;
    let status = response.status();
    let text = response.text().await.context("cannot read the answer")?;
    if !status.is_success() {
        return Err(server_error(status, text));
    }
    if text.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).context("the server's answer is not JSON")
}

/// The server's own error message (from its JSON error body) with the
/// status, or the raw body when it is not one.
fn server_error(status: reqwest::StatusCode, text: String) -> anyhow::Error {
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|body| body["error"]["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    anyhow::anyhow!("server answered {status}: {message}")
}

async fn workspace(command: WorkspaceCommand) -> anyhow::Result<()> {
    let http = client()?;
    match command {
        WorkspaceCommand::Create { name, admin } => {
            let url = format!("{}/v1/workspaces", admin.server.url);
            let request = http
                .post(url)
                .bearer_auth(admin.token()?)
                .json(&json!({"name": name}));
            println!("{}", serde_json::to_string_pretty(&call(request).await?)?);
        }
        WorkspaceCommand::List { admin } => {
            let url = format!("{}/v1/workspaces", admin.server.url);
            let answer = call(http.get(url).bearer_auth(admin.token()?)).await?;
            for workspace in answer["data"].as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}",
                    workspace["id"].as_str().unwrap_or(""),
                    workspace["created_at"].as_str().unwrap_or(""),
                    workspace["name"].as_str().unwrap_or("")
                );
            }
        }
        WorkspaceCommand::Delete { id, admin } => {
            let url = format!("{}/v1/workspaces/{id}", admin.server.url);
            call(http.delete(url).bearer_auth(admin.token()?)).await?;
            println!("deleted {id}");
        }
        WorkspaceCommand::RotateKeys { id, admin } => {
            let url = format!("{}/v1/workspaces/{id}/keys/rotate", admin.server.url);
            let request = http.post(url).bearer_auth(admin.token()?);
            println!("{}", serde_json::to_string_pretty(&call(request).await?)?);
        }
    }
    Ok(())
}

/// Streams the backup into a temporary file next to `out`, syncs it and
/// only then gives it its name, so `out` is either complete or absent.
async fn backup(args: BackupArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let directory = match args.out.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let token = args.admin.token()?;
    // The server copies the database before the first byte comes.
    let progress = Progress::spinner("waiting for the server's snapshot");
    let mut partial = tempfile::NamedTempFile::new_in(&directory)
        .with_context(|| format!("cannot write in {}", directory.display()))?;
    // No overall timeout: a big database takes as long as it takes.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let mut response = http
        .post(format!("{}/v1/backup", args.admin.server.url))
        .bearer_auth(&token)
        .send()
        .await
        .context("cannot reach the server")?;
    if !response.status().is_success() {
        let status = response.status();
        return Err(server_error(
            status,
            response.text().await.unwrap_or_default(),
        ));
    }
    let rows = response
        .headers()
        .get("switchyard-backup-rows")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("?")
        .to_string();
    progress.expect_bytes("downloading the backup", response.content_length());
    let mut bytes = 0u64;
    while let Some(chunk) = response
        .chunk()
        .await
        .context("the download was interrupted")?
    {
        partial
            .write_all(&chunk)
            .context("cannot write the backup")?;
        bytes += chunk.len() as u64;
        progress.advance(chunk.len() as u64);
    }
    partial
        .as_file()
        .sync_all()
        .context("cannot write the backup")?;
    partial
        .persist_noclobber(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let elapsed = duration_text(progress.elapsed());
    progress.finish(&format!(
        "backup written to {} ({}, {rows} rows) in {elapsed}",
        args.out.display(),
        size_text(bytes),
    ));
    Ok(())
}

/// Compacts the stopped server's redb file and reports what it freed.
fn compact(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = Config::load(config_path.as_deref())?;
    let path = config.database_path();
    let progress = Progress::spinner(format!("compacting {}", path.display()));
    let report = crate::store::compact(&path)?;
    let elapsed = duration_text(progress.elapsed());
    progress.finish(&format!(
        "compacted {}: before {}, after {}, freed {} in {elapsed}",
        path.display(),
        size_text(report.before_bytes),
        size_text(report.after_bytes),
        size_text(report.freed_bytes()),
    ));
    Ok(())
}

/// Applies the storage backend's migrations and says what it did.
async fn migrate(config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use crate::config::StorageBackend;
    use std::os::unix::fs::DirBuilderExt;
    let config = Config::load(config_path.as_deref())?;
    match config.storage.backend {
        StorageBackend::Redb => {
            let path = config.database_path();
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&config.data_dir)?;
            let options = crate::store::StoreOptions::from_config(&config.storage);
            let opened = path.clone();
            // Opening creates missing tables and moves old layouts; closing
            // (the drop) commits and releases the file.
            tokio::task::spawn_blocking(move || {
                crate::store::RedbStore::open(&opened, options).map(drop)
            })
            .await??;
            println!(
                "redb database {}: tables created or brought up to date",
                path.display()
            );
        }
        StorageBackend::Postgres => {
            let (report, target) =
                crate::store::postgres::PgStore::migrate(&config.storage.postgres).await?;
            if report.applied.is_empty() {
                println!(
                    "PostgreSQL {target}: schema already at version {}, nothing to do",
                    report.from
                );
            }
            for (version, name) in &report.applied {
                println!("PostgreSQL {target}: applied migration {version} ({name})");
            }
            if !report.applied.is_empty() {
                println!(
                    "PostgreSQL {target}: schema version {} -> {}",
                    report.from,
                    report.to()
                );
            }
        }
    }
    Ok(())
}

/// Generated into memory first: clap_complete panics when its writer
/// fails, and stdout fails whenever the reader goes away (`| head`).
fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    use std::io::Write;
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "switchyard", &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completion script")
}

/// `GET {url}/healthz` within 5 s; any answer but 200 is an error (exit 1).
async fn healthcheck(url: Option<String>, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let base = match url {
        Some(url) => url,
        None => local_url(&Config::load(config_path.as_deref())?.listen),
    };
    let url = format!("{}/healthz", base.trim_end_matches('/'));
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("cannot build the HTTP client")?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if status != reqwest::StatusCode::OK {
        bail!("{url} answered {status}");
    }
    println!("healthy: {url} answered {status}");
    Ok(())
}

/// The URL to reach a server listening on `listen` from the same host: a
/// wildcard address (`0.0.0.0`, `[::]`) is reached on loopback.
fn local_url(listen: &str) -> String {
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "7600"));
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        host => host,
    };
    format!("http://{host}:{port}")
}

/// `1.5 MiB (1572864 bytes)`: readable, and exact for scripts.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
    }
}

async fn emit(args: EmitArgs) -> anyhow::Result<()> {
    let body: Value = match (&args.file, &args.event) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        }
        (None, Some(event)) => {
            let payload: Value = match &args.payload {
                Some(text) => serde_json::from_str(text).context("--payload is not valid JSON")?,
                None => json!({}),
            };
            json!({
                "event": event,
                "resource": args.resource,
                "resource_id": args.resource_id,
                "payload": payload,
            })
        }
        (None, None) => bail!("give --event or --file"),
    };
    let mut request = client()?
        .post(format!("{}/v1/events", args.server.url))
        .bearer_auth(&args.key)
        .json(&body);
    if let Some(key) = &args.idempotency_key {
        request = request.header("Idempotency-Key", key);
    }
    let answer = call(request).await?;
    println!("{}", answer["id"].as_str().unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{describe_error, local_url, size_text};

    #[test]
    fn an_error_says_its_cause_once() {
        let io = || std::io::Error::from_raw_os_error(17);
        let nested = crate::server::ServeError::DataDir {
            path: "data".into(),
            source: io(),
        };
        let error = anyhow::Error::new(nested).context("cannot start");
        assert_eq!(
            describe_error(&error),
            format!("cannot start: cannot use data_dir data: {}", io())
        );
        let plain = anyhow::Error::new(io()).context("cannot create out.redb");
        assert_eq!(
            describe_error(&plain),
            format!("cannot create out.redb: {}", io())
        );
    }

    #[test]
    fn a_wildcard_listen_address_is_checked_on_loopback() {
        for (listen, url) in [
            ("0.0.0.0:7600", "http://127.0.0.1:7600"),
            ("[::]:8080", "http://[::1]:8080"),
            ("127.0.0.1:7600", "http://127.0.0.1:7600"),
            (
                "switchyard.internal:9000",
                "http://switchyard.internal:9000",
            ),
        ] {
            assert_eq!(local_url(listen), url);
        }
    }

    #[test]
    fn sizes_read_in_binary_units_with_the_exact_bytes() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (1023, "1023 bytes"),
            (1024, "1.0 KiB (1024 bytes)"),
            (2_232_320, "2.1 MiB (2232320 bytes)"),
            (5 << 30, "5.0 GiB (5368709120 bytes)"),
        ] {
            assert_eq!(size_text(bytes), text);
        }
    }
}
