//! Start-up and shutdown: bind, open the store, resolve the admin token,
//! serve until the shutdown token fires, then drain.

use crate::api::{self, AppParts, AppState, hash_key, random_token};
use crate::config::Config;
use crate::config::StorageBackend;
use crate::crypto::{CryptoError, MasterKey, MasterKeySource};
use crate::delivery::retry::RetryPolicy;
use crate::delivery::{Engine, EngineDeps};
use crate::delivery::{StoreSecrets, StoreThreads};
use crate::destinations::{Destinations, Ports};
use crate::model::now_ms;
use crate::routing::RuleIndex;
use crate::secret::Secret;
use crate::store::postgres::PgStore;
use crate::store::{CacheChange, FaultSwitch, RedbStore, Store, StoreError, StoreOptions};
use axum::serve::{ListenerExt, TapIo};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {address} (key `listen`): {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot use data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] crate::store::postgres::OpenError),
    #[error("master key: {0}")]
    MasterKey(#[from] CryptoError),
    #[error(transparent)]
    Destinations(#[from] crate::destinations::SetupError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the admin token came from; where a generated one was written is
/// printed once (the token itself never is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTokenSource {
    Configured,
    Stored(PathBuf),
    Generated(PathBuf),
}

/// What a server takes beyond its configuration.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Test and chaos seam: makes the database file's writes fail on demand
    /// (as a full disk does). `None` in production.
    pub storage_faults: Option<FaultSwitch>,
}

/// A bound server that has not started serving yet.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    config: Config,
    store: Arc<dyn Store>,
    admin_token_hash: [u8; 32],
    admin_token_source: AdminTokenSource,
    master_key: Arc<MasterKey>,
    master_key_source: MasterKeySource,
}

/// How often expired idempotency keys and OAuth states are swept.
const PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// How long an alert's Slack thread is remembered when `retention.events`
/// keeps everything (otherwise as long as events are kept).
const SLACK_THREAD_TTL: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// How often the server looks for deleted workspaces left to purge.
const DELETED_WORKSPACE_CHECK: Duration = Duration::from_secs(1);
/// Rows of deleted workspaces removed per transaction.
const PURGE_ROWS_PER_COMMIT: usize = 2_000;

impl Server {
    /// Binds `config.listen`, prepares `data_dir` and opens the store.
    pub async fn bind(config: Config) -> Result<Self, ServeError> {
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    address: config.listen.clone(),
                    source,
                })?;
        Self::with_listener(listener, config).await
    }

    /// Uses an already bound listener (tests bind port 0 themselves).
    pub async fn with_listener(listener: TcpListener, config: Config) -> Result<Self, ServeError> {
        Self::with_options(listener, config, ServerOptions::default()).await
    }

    /// Like [`Server::with_listener`], with options beyond the configuration.
    pub async fn with_options(
        listener: TcpListener,
        mut config: Config,
        options: ServerOptions,
    ) -> Result<Self, ServeError> {
        let local_addr = listener.local_addr()?;
        prepare_data_dir(&config.data_dir)?;
        let (token, admin_token_source) = resolve_admin_token(&config)?;
        if config.public_url.is_none() {
            config.public_url = Some(format!("http://{local_addr}"));
        }
        let master_key_value = config.master_key.as_ref().map(Secret::expose);
        let (master_key, master_key_source) = MasterKey::load(&config.data_dir, master_key_value)?;
        // The recorder goes in before the store opens: the store's threads
        // keep the metric handles they first look up (`telemetry::count`).
        crate::telemetry::metrics_handle();
        let store = open_store(&config, options).await?;
        Ok(Self {
            listener,
            local_addr,
            config,
            store,
            admin_token_hash: hash_key(token.expose()),
            admin_token_source,
            master_key: Arc::new(master_key),
            master_key_source,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_token_source(&self) -> &AdminTokenSource {
        &self.admin_token_source
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn master_key_source(&self) -> &MasterKeySource {
        &self.master_key_source
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets
    /// in-flight requests finish and commits every queued write.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        // Install the recorder before anything records.
        crate::telemetry::metrics_handle();
        let store = self.store.clone();
        let writable = if store.is_writable() { 1.0 } else { 0.0 };
        metrics::gauge!("switchyard_storage_writable").set(writable);
        let config = self.config;
        let rule_index = Arc::new(RuleIndex::default());
        let destinations = Arc::new(Destinations::new(
            &config,
            Ports {
                secrets: Arc::new(StoreSecrets::new(
                    store.clone(),
                    self.master_key.clone(),
                    rule_index.clone(),
                )),
                threads: Arc::new(StoreThreads::new(store.clone())),
            },
        )?);
        let timeout = Duration::from_secs(config.delivery.timeout_seconds);
        let (engine, engine_done) = Engine::start(
            EngineDeps {
                store: store.clone(),
                destinations: destinations.clone(),
                master_key: self.master_key.clone(),
                policy: RetryPolicy::new(&config.delivery.retry_schedule),
                rule_index: rule_index.clone(),
                max_in_flight_per_connection: config.delivery.max_in_flight_per_connection,
                max_in_flight_per_workspace: config.delivery.max_in_flight_per_workspace,
                max_in_flight: config.delivery.max_in_flight,
                queue_window: config.delivery.queue_window,
                shutdown_grace: timeout + Duration::from_secs(5),
            },
            shutdown.clone(),
        )
        .await?;
        let retention = crate::retention::run(
            store.clone(),
            config.retention.clone(),
            config.database_path(),
            shutdown.clone(),
        );
        let state = AppState::new(AppParts {
            store,
            config,
            admin_token_hash: self.admin_token_hash,
            master_key: self.master_key,
            rule_index,
            engine,
            destinations,
            shutdown: shutdown.clone(),
        });
        let tasks = TaskTracker::new();
        if let Some(changes) = state.store().workspace_changes() {
            tasks.spawn(follow_other_nodes(state.clone(), changes, shutdown.clone()));
        }
        tasks.spawn(purge_expired(state.clone(), shutdown.clone()));
        tasks.spawn(purge_deleted_workspaces(state.clone(), shutdown.clone()));
        tasks.spawn(retention);
        if let Some(metrics) = crate::telemetry::metrics_handle() {
            tasks.spawn(crate::telemetry::metrics_upkeep(
                crate::telemetry::METRICS_UPKEEP_INTERVAL,
                shutdown.clone(),
                crate::telemetry::upkeep(metrics),
            ));
        }
        let app = api::router(state);
        tracing::info!(address = %self.local_addr, "serving");
        let served = axum::serve(without_nagle(self.listener), app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        tasks.close();
        tasks.wait().await;
        if let Err(error) = engine_done.await {
            tracing::error!(%error, "the delivery engine failed");
        }
        // Every request handler has returned and, unless the drain above
        // timed out, every attempt too. Closing commits what is queued and
        // stops the writer; attempts still running past the shutdown grace
        // then fail to record (their deliveries, still queued, run again
        // after the next start). The file closes with the last handle: this
        // one, or at the latest when the process exits.
        if let Err(error) = self.store.close().await {
            tracing::error!(%error, "closing the store");
        }
        let store = self.store;
        tokio::task::spawn_blocking(move || drop(store))
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        tracing::info!("stopped");
        Ok(served?)
    }
}

/// Runs a server on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    Server::with_listener(listener, config)
        .await?
        .run(shutdown)
        .await
}

/// `listener`, with Nagle's algorithm off on every connection it accepts:
/// a response goes out when hyper writes it, never held back until the
/// client acknowledges an earlier segment (tokio leaves it on by default;
/// the delivery client turns it off too, `tenant_http.rs`).
fn without_nagle(listener: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    listener.tap_io(set_nodelay)
}

fn set_nodelay(stream: &mut TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot turn Nagle's algorithm off on an accepted connection");
    }
}

/// Drops this node's cached keys and rules of each workspace that another
/// node sharing the store changed (PostgreSQL: within 250 ms of the commit,
/// see `store/postgres/changes.rs`).
async fn follow_other_nodes(
    app: AppState,
    mut changes: tokio::sync::mpsc::Receiver<CacheChange>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = shutdown.cancelled() => return,
            change = changes.recv() => change,
        };
        match change {
            Some(change) => app.forget_cached(change),
            None => return,
        }
    }
}

async fn purge_expired(app: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match app.store().purge_idempotency_keys(now_ms()).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys removed"),
            Err(error) => tracing::warn!(%error, "cannot purge idempotency keys"),
        }
        if let Err(error) = app.store().purge_noise_state(now_ms()).await {
            tracing::warn!(%error, "cannot purge expired noise-control state");
        }
        let thread_ttl = app
            .config()
            .retention
            .events
            .duration()
            .unwrap_or(SLACK_THREAD_TTL);
        let thread_cutoff = now_ms().saturating_sub(thread_ttl.as_millis() as u64);
        if let Err(error) = app.store().purge_slack_threads(thread_cutoff).await {
            tracing::warn!(%error, "cannot purge expired Slack threads");
        }
        if let Err(error) = app.store().purge_oauth_states(now_ms()).await {
            tracing::warn!(%error, "cannot purge expired OAuth states");
        }
        if let Err(error) = app.store().purge_used_launch_tokens(now_ms()).await {
            tracing::warn!(%error, "cannot purge expired embed launch tokens");
        }
    }
}

/// Removes deleted workspaces' events and deliveries, a bounded number of
/// rows per transaction so ingest keeps committing in between; resumes after
/// a restart. Checks once a second (a read) whether there is any to do.
async fn purge_deleted_workspaces(app: AppState, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(DELETED_WORKSPACE_CHECK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match app.store().pending_purges().await {
            Ok(0) => continue,
            Ok(pending) => tracing::debug!(pending, "purging deleted workspaces"),
            Err(error) => {
                tracing::warn!(%error, "cannot look for deleted workspaces to purge");
                continue;
            }
        }
        while !shutdown.is_cancelled() {
            match app.store().purge_deleted(PURGE_ROWS_PER_COMMIT).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!("deleted workspaces purged");
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot purge deleted workspaces");
                    break;
                }
            }
        }
    }
}

/// Opens the configured backend: the redb file in `data_dir` (its writer
/// thread started), or the PostgreSQL database (migrated first).
async fn open_store(config: &Config, options: ServerOptions) -> Result<Arc<dyn Store>, ServeError> {
    match config.storage.backend {
        StorageBackend::Redb => {
            let database = config.database_path();
            let store_options = StoreOptions {
                faults: options.storage_faults,
                ..StoreOptions::from_config(&config.storage)
            };
            let store =
                tokio::task::spawn_blocking(move || RedbStore::open(&database, store_options))
                    .await
                    .map_err(|error| StoreError::Unavailable(error.to_string()))??;
            Ok(store)
        }
        StorageBackend::Postgres => {
            let node = crate::store::postgres::NodeOptions::from_config(config);
            let store = PgStore::open_node(&config.storage.postgres, node).await?;
            Ok(Arc::new(store))
        }
    }
}

fn prepare_data_dir(path: &Path) -> Result<(), ServeError> {
    let error = |source| ServeError::DataDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path).map_err(error)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(error)?;
    }
    Ok(())
}

/// The generated admin token's file in the data dir (the client commands
/// read it too).
pub const ADMIN_TOKEN_FILE: &str = "admin_token";

/// The configured admin token, else the one stored in the data dir, else a
/// new one written there with mode 0600.
fn resolve_admin_token(config: &Config) -> Result<(Secret, AdminTokenSource), ServeError> {
    if let Some(token) = &config.admin_token {
        return Ok((token.clone(), AdminTokenSource::Configured));
    }
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    let error = |source| ServeError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok((Secret::new(text.trim()), AdminTokenSource::Stored(path)));
        }
        Ok(_) => {}
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(error(source)),
    }
    let token = Secret::new(format!("adm_{}", random_token()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path).map_err(error)?;
    writeln!(file, "{}", token.expose()).map_err(error)?;
    file.sync_all().map_err(error)?;
    Ok((token, AdminTokenSource::Generated(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() -> anyhow::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mut listener = without_nagle(listener);
        let client = TcpStream::connect(address).await?;
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr()?);
        assert!(accepted.nodelay()?, "TCP_NODELAY set on the accepted side");
        Ok(())
    }
}
