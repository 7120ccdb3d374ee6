//! The HTTP API: one module per resource, each owning its routes and its
//! request and response types.

mod auth;
mod error;
mod extract;
mod health;
mod workspaces;

pub use auth::{EmitKey, SecretKey, generate_key, hash_key, random_token};
pub use error::ApiError;
pub use extract::{ApiQuery, JsonBody, parse_json};

use crate::config::Config;
use crate::store::{KeyHash, Store};
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

struct Inner {
    store: Arc<dyn Store>,
    config: Config,
    admin_token_hash: KeyHash,
    shutdown: CancellationToken,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        config: Config,
        admin_token_hash: KeyHash,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                config,
                admin_token_hash,
                shutdown,
            }),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    fn admin_token_hash(&self) -> KeyHash {
        self.inner.admin_token_hash
    }

    fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }
}

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config().limits.max_body_bytes;
    Router::new()
        .merge(health::routes())
        .merge(workspaces::routes())
        .merge(crate::ingest::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
