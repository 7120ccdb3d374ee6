//! The HTTP API: one module per resource, each owning its routes and its
//! request and response types.

mod auth;
mod backup;
mod capabilities;
mod connections;
mod deliveries;
mod docs;
mod error;
mod extract;
mod health;
mod openapi;
mod queue;
mod rules;
mod slack;
mod workspaces;

pub use auth::{
    EmitKey, MESHES_KEY_HEADER, MeshesKey, RealSecretKey, SecretKey, generate_key,
    generate_meshes_key, hash_key, random_token,
};
pub use error::ApiError;
pub use openapi::openapi;
/// The shared error answers, for `#[utoipa::path]` outside `api/`.
pub mod openapi_responses {
    pub use super::openapi::{
        BadGateway, BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, RateLimited,
        Unauthorized, Unavailable, Unprocessable,
    };
}
/// Documentation-only string formats, for `#[schema(value_type = …)]`
/// outside `api/`.
pub mod openapi_schemas {
    pub use super::error::ErrorBody as Error;
    pub use super::openapi::{EventName, EventPattern, Severity, Timestamp};
}
pub use extract::{ApiQuery, IdempotencyHeader, JsonBody, RawBody, parse_json};

use crate::config::Config;
use crate::crypto::MasterKey;
use crate::delivery::Engine;
use crate::destinations::Destinations;
use crate::routing::RuleIndex;
use crate::store::{CacheChange, KeyHash, Store};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The parts an [`AppState`] is made of.
pub struct AppParts {
    pub store: Arc<dyn Store>,
    pub config: Config,
    pub admin_token_hash: KeyHash,
    pub master_key: Arc<MasterKey>,
    pub rule_index: Arc<RuleIndex>,
    pub engine: Engine,
    pub destinations: Arc<Destinations>,
    pub shutdown: CancellationToken,
}

struct Inner {
    parts: AppParts,
    key_cache: auth::KeyCache,
    ingest_limiter: crate::ingest::IngestLimiter,
    /// One backup at a time: each needs the database's size again in free
    /// space.
    backup_running: std::sync::atomic::AtomicBool,
}

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                ingest_limiter: crate::ingest::IngestLimiter::from_config(&parts.config.limits),
                parts,
                key_cache: auth::KeyCache::default(),
                backup_running: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.parts.store.as_ref()
    }

    pub(crate) fn backup_running(&self) -> &std::sync::atomic::AtomicBool {
        &self.inner.backup_running
    }

    pub(crate) fn key_cache(&self) -> &auth::KeyCache {
        &self.inner.key_cache
    }

    /// `limits.events_per_second`, per workspace; every emit endpoint
    /// checks it before parsing events.
    pub fn ingest_limiter(&self) -> &crate::ingest::IngestLimiter {
        &self.inner.ingest_limiter
    }

    pub fn rule_index(&self) -> &RuleIndex {
        &self.inner.parts.rule_index
    }

    /// Runs a store write that may change the workspace's rules or
    /// connections, then drops its compiled rules, in a task of its own: a
    /// client that goes away cannot cancel the drop after a write that
    /// commits anyway. (First attempts are sent with the connections the
    /// index holds, `delivery/warm.rs`.)
    pub async fn change_routing<T: Send + 'static>(
        &self,
        workspace: crate::model::WorkspaceId,
        write: crate::store::StoreFuture<T>,
    ) -> Result<T, crate::store::StoreError> {
        let index = self.inner.parts.rule_index.clone();
        tokio::spawn(async move {
            let written = write.await;
            index.invalidate(workspace);
            written
        })
        .await
        .map_err(|error| crate::store::StoreError::Unavailable(error.to_string()))?
    }

    /// Drops what this node caches about a workspace another node changed:
    /// its keys (and so the embed sessions they minted), its compiled rules
    /// and its Slack channel lists. Everything else a request or an attempt
    /// needs is read from the store each time.
    pub fn forget_cached(&self, change: CacheChange) {
        self.destinations().forget_cached(change);
        match change {
            CacheChange::Workspace(workspace) => {
                self.key_cache().forget_workspace(workspace);
                self.rule_index().invalidate(workspace);
            }
            CacheChange::Everything => {
                self.key_cache().forget_all();
                self.rule_index().invalidate_all();
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.parts.engine
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.inner.parts.master_key
    }

    pub fn destinations(&self) -> &Destinations {
        &self.inner.parts.destinations
    }

    pub fn config(&self) -> &Config {
        &self.inner.parts.config
    }

    fn admin_token_hash(&self) -> KeyHash {
        self.inner.parts.admin_token_hash
    }

    fn is_shutting_down(&self) -> bool {
        self.inner.parts.shutdown.is_cancelled()
    }
}

/// The whole HTTP surface: every documented route (see [`openapi`]) and
/// the API reference page.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().limits.max_body_bytes;
    let (documented, _) = openapi::api_router().split_for_parts();
    documented
        .merge(docs::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            // Paths only: query strings can carry launch tokens and OAuth
            // codes, which must not reach the logs.
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |request: &axum::http::Request<axum::body::Body>| {
                    tracing::debug_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                    )
                },
            ),
        )
        .with_state(state)
}
