//! The engine's side of [`ThreadPort`]: alert threads read from the Store
//! and recorded through the write coordinator.

use crate::destinations::{BoxFuture, ThreadError, ThreadPort};
use crate::model::{ThreadKey, now_ms};
use crate::store::Store;
use std::sync::Arc;

pub struct StoreThreads {
    store: Arc<dyn Store>,
}

impl StoreThreads {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

impl ThreadPort for StoreThreads {
    fn load<'a>(
        &'a self,
        key: &'a ThreadKey,
    ) -> BoxFuture<'a, Result<Option<String>, ThreadError>> {
        Box::pin(async move {
            self.store
                .slack_thread(key.clone())
                .await
                .map_err(|error| ThreadError(error.to_string()))
        })
    }

    fn save<'a>(
        &'a self,
        key: &'a ThreadKey,
        ts: &'a str,
    ) -> BoxFuture<'a, Result<(), ThreadError>> {
        Box::pin(async move {
            self.store
                .save_slack_thread(key.clone(), ts.to_string(), now_ms())
                .await
                .map_err(|error| ThreadError(error.to_string()))
        })
    }
}
