//! What can go wrong talking to PostgreSQL, and which of it means the
//! database is unreachable (the store then reports itself unwritable until
//! a probe gets through; see `health.rs`).

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PgError {
    /// The connection failed or the server is going away or out of
    /// connections: nothing about this request, everything about the
    /// database. SQLSTATE classes 08 (connection exception), 53
    /// (insufficient resources) and 57P0x (shutdown, crash recovery).
    pub fn is_connection_failure(&self) -> bool {
        match self {
            PgError::Pool(_) => true,
            PgError::Store(_) => false,
            PgError::Db(error) => {
                if error.is_closed() {
                    return true;
                }
                match error.code() {
                    Some(code) => {
                        let code = code.code();
                        code.starts_with("08") || code.starts_with("53") || code.starts_with("57P")
                    }
                    // No SQLSTATE: an I/O or protocol failure on the socket.
                    None => error.as_db_error().is_none(),
                }
            }
        }
    }
}

impl From<PgError> for StoreError {
    fn from(error: PgError) -> Self {
        let io_failure = error.is_connection_failure();
        match error {
            PgError::Store(error) => error,
            other => StoreError::backend(other, io_failure),
        }
    }
}

/// For code that speaks `StoreError` directly (migrations).
pub fn db_error(error: tokio_postgres::Error) -> StoreError {
    PgError::Db(error).into()
}

pub type PgResult<T> = Result<T, PgError>;

pub fn corrupt(what: impl Into<String>) -> PgError {
    PgError::Store(StoreError::Corrupt(what.into()))
}
