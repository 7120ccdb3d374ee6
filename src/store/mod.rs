//! Durable storage behind a narrow [`Store`] trait. Only this module knows
//! redb; the rest of the code speaks in domain types.
//!
//! Every mutation goes through one write coordinator (see `writer.rs`) that
//! group-commits whatever is waiting into one durable transaction. Reads are
//! MVCC snapshots and run beside it.

mod codec;
mod records;
mod redb_store;
mod writer;

pub use codec::CodecError;
pub use redb_store::RedbStore;

use crate::model::{Event, EventId, KeyKind, Workspace, WorkspaceId};
use std::future::Future;
use std::pin::Pin;

pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// SHA-256 of an API key; keys are stored only as this hash.
pub type KeyHash = [u8; 32];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database at {path}: {source}")]
    Open {
        path: String,
        source: Box<redb::DatabaseError>,
    },
    #[error("storage error: {0}")]
    Storage(#[from] Box<redb::Error>),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("the write coordinator has stopped")]
    WriterStopped,
}

macro_rules! storage_error_from {
    ($($source:ty),*) => {$(
        impl From<$source> for StoreError {
            fn from(error: $source) -> Self {
                StoreError::Storage(Box::new(error.into()))
            }
        }
    )*};
}
storage_error_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What the store needs to create a workspace; keys arrive already hashed.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub workspace: Workspace,
    pub publishable_key_hash: KeyHash,
    pub secret_key_hash: KeyHash,
}

/// Events to store atomically, with the answer to remember for an
/// `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    pub workspace_id: WorkspaceId,
    pub events: Vec<Event>,
    pub idempotency: Option<IdempotentAnswer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentAnswer {
    pub key: String,
    pub status: u16,
    pub response: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored and durable.
    Stored,
    /// The idempotency key was seen within its lifetime: nothing was stored
    /// and this is the first answer.
    Replayed { status: u16, response: Vec<u8> },
    /// The workspace no longer exists.
    UnknownWorkspace,
}

/// A page of events, newest first, and the cursor for the next page.
#[derive(Debug, Clone, Default)]
pub struct EventPage {
    pub events: Vec<Event>,
    pub next: Option<EventId>,
}

#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Only events whose name matches: exact, or `prefix.*`.
    pub name: Option<String>,
    /// Only events older than this one (the cursor).
    pub before: Option<EventId>,
    pub limit: usize,
}

/// How long an idempotency key's first answer is kept.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// The storage interface. Writes resolve once durable; reads see the latest
/// committed state.
pub trait Store: Send + Sync + 'static {
    fn create_workspace(&self, new: NewWorkspace) -> StoreFuture<()>;
    /// Removes the workspace with its keys, events and idempotency keys.
    /// Resolves to false when it did not exist.
    fn delete_workspace(&self, id: WorkspaceId) -> StoreFuture<bool>;
    /// Replaces both keys at once; the old ones stop working on commit.
    fn rotate_keys(
        &self,
        id: WorkspaceId,
        publishable_key_hash: KeyHash,
        secret_key_hash: KeyHash,
    ) -> StoreFuture<Option<Workspace>>;
    fn ingest(&self, batch: IngestBatch) -> StoreFuture<IngestOutcome>;
    /// Drops idempotency keys older than their lifetime; returns how many.
    fn purge_idempotency_keys(&self, now_ms: u64) -> StoreFuture<usize>;

    fn workspaces(&self) -> Result<Vec<Workspace>, StoreError>;
    fn workspace(&self, id: WorkspaceId) -> Result<Option<Workspace>, StoreError>;
    fn key(&self, hash: &KeyHash) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError>;
    fn event(&self, workspace: WorkspaceId, id: EventId) -> Result<Option<Event>, StoreError>;
    fn events(&self, workspace: WorkspaceId, query: &EventQuery) -> Result<EventPage, StoreError>;
    /// False once the write coordinator has stopped.
    fn is_writable(&self) -> bool;
}

/// Matches an event name against `*`, `prefix.*` or an exact name.
pub fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}
