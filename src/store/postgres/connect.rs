//! The connection pool: deadpool over tokio-postgres, plain or over rustls.
//!
//! Why these crates: tokio-postgres is the maintained async driver the
//! rest of the Rust PostgreSQL ecosystem builds on (no compile-time database
//! checks, no macros, plain SQL strings we can read and test); deadpool is
//! its small, runtime-agnostic pool with timeouts; tokio-postgres-rustls
//! plugs in the same rustls (aws-lc-rs provider) and platform verifier that
//! reqwest and lettre already link, so TLS adds no second crypto stack.

use crate::config::{PostgresConfig, PostgresTls};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
use std::str::FromStr;
use std::time::Duration;

/// How long opening a connection or waiting for a free one may take before
/// the caller gets an error (and ingest a 503) instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("storage.postgres.url is not set")]
    MissingUrl,
    /// The parser's message never includes the URL (and its password).
    #[error("storage.postgres.url is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(String),
    #[error("cannot set up TLS for PostgreSQL: {0}")]
    Tls(String),
    #[error("cannot build the PostgreSQL pool: {0}")]
    Pool(String),
}

/// Parses the URL (`postgres://…` or libpq's `key=value` form).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, ConnectError> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|error| ConnectError::InvalidUrl(error.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("switchyard");
    }
    Ok(config)
}

/// Where the URL points, without its password: for logs and errors.
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("(default)");
    let user = config.get_user().unwrap_or("(default)");
    format!("{host}:{port}/{database} as {user}")
}

/// Builds the pool; connections are opened on first use.
pub fn pool(settings: &PostgresConfig) -> Result<(Pool, String), ConnectError> {
    let url = settings.url.as_ref().ok_or(ConnectError::MissingUrl)?;
    let mut config = parse_url(url.expose())?;
    let described = describe(&config);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match settings.tls {
        PostgresTls::Disable => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            Manager::from_config(config, tokio_postgres::NoTls, manager_config)
        }
        PostgresTls::VerifyFull => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            Manager::from_config(config, rustls_connector()?, manager_config)
        }
    };
    let pool = Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(CONNECT_TIMEOUT),
            create: Some(CONNECT_TIMEOUT),
            recycle: Some(CONNECT_TIMEOUT),
        })
        .build()
        .map_err(|error| ConnectError::Pool(error.to_string()))?;
    Ok((pool, described))
}

/// A connection of its own, outside the pool, whose server messages
/// (notifications) arrive on the receiver; the receiver ends when the
/// connection does. For `LISTEN`, which a pooled connection cannot serve.
pub async fn dedicated(
    settings: &PostgresConfig,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    ),
    super::error::PgError,
> {
    let url = settings.url.as_ref().ok_or_else(|| {
        crate::store::StoreError::Unavailable(ConnectError::MissingUrl.to_string())
    })?;
    let mut config = parse_url(url.expose())
        .map_err(|error| crate::store::StoreError::Unavailable(error.to_string()))?;
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    let client = match settings.tls {
        PostgresTls::Disable => {
            config.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(forward_messages(connection, sender));
            client
        }
        PostgresTls::VerifyFull => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = rustls_connector()
                .map_err(|error| crate::store::StoreError::Unavailable(error.to_string()))?;
            let (client, connection) = config.connect(tls).await?;
            tokio::spawn(forward_messages(connection, sender));
            client
        }
    };
    Ok((client, receiver))
}

/// Drives a connection, handing on what the server sends unasked, until
/// it ends or nobody listens.
async fn forward_messages<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    messages: tokio::sync::mpsc::UnboundedSender<tokio_postgres::AsyncMessage>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
        if messages.send(message).is_err() {
            return;
        }
    }
}

/// TLS with the system's roots (rustls-platform-verifier): the certificate
/// must chain to a trusted root and name the host.
fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, ConnectError> {
    let config =
        crate::tls::client_config().map_err(|error| ConnectError::Tls(error.to_string()))?;
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_never_holds_the_password() {
        for url in [
            "postgres://switchyard:hunter2@db.example:6543/events",
            "host=db.example port=6543 user=switchyard password=hunter2 dbname=events",
        ] {
            let described = describe(&parse_url(url).unwrap());
            assert_eq!(described, "db.example:6543/events as switchyard");
        }
        let error = parse_url("postgres://switchyard:hunter2@db.example:notaport/x").unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn both_tls_modes_build_a_pool_without_connecting() {
        for tls in [PostgresTls::Disable, PostgresTls::VerifyFull] {
            let settings = PostgresConfig {
                url: Some(crate::secret::Secret::new(
                    "postgres://switchyard:hunter2@db.example/events",
                )),
                pool_size: 2,
                tls,
                lease_seconds: 30,
            };
            let (pool, described) = pool(&settings).unwrap();
            assert_eq!(described, "db.example:5432/events as switchyard");
            assert_eq!(pool.status().max_size, 2);
        }
        let missing = PostgresConfig {
            url: None,
            pool_size: 2,
            tls: PostgresTls::Disable,
            lease_seconds: 30,
        };
        assert!(matches!(pool(&missing), Err(ConnectError::MissingUrl)));
    }
}
