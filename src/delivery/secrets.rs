//! The engine's side of [`SecretsPort`]: connection secrets read from the
//! Store and replaced through the write coordinator, sealed and opened with
//! the master key. Destinations ask for this; only the engine records.

use crate::crypto::MasterKey;
use crate::destinations::{
    BoxFuture, SecretsError, SecretsPort, StoredSecrets, Swap, open_secrets, seal_secrets,
};
use crate::model::Connection;
use crate::routing::RuleIndex;
use crate::store::{ConnectionPatch, PatchOutcome, SharedLock, SharedLockGuard, Store};
use serde_json::Value;
use std::sync::Arc;

pub struct StoreSecrets {
    store: Arc<dyn Store>,
    master_key: Arc<MasterKey>,
    /// Told of every swap: the rule index holds connections as stored.
    rule_index: Arc<RuleIndex>,
}

impl StoreSecrets {
    pub fn new(
        store: Arc<dyn Store>,
        master_key: Arc<MasterKey>,
        rule_index: Arc<RuleIndex>,
    ) -> Self {
        Self {
            store,
            master_key,
            rule_index,
        }
    }

    fn opened(&self, connection: &Connection) -> Result<StoredSecrets, SecretsError> {
        let secrets =
            open_secrets(&self.master_key, connection).map_err(|_| SecretsError::Crypto)?;
        Ok(StoredSecrets {
            secrets,
            version: connection.sealed_secrets.clone(),
        })
    }
}

impl SecretsPort for StoreSecrets {
    fn load<'a>(
        &'a self,
        connection: &'a Connection,
    ) -> BoxFuture<'a, Result<Option<StoredSecrets>, SecretsError>> {
        Box::pin(async move {
            let current = self
                .store
                .connection(connection.workspace_id, connection.id)
                .await
                .map_err(|error| SecretsError::Storage(error.to_string()))?;
            current.map(|current| self.opened(&current)).transpose()
        })
    }

    fn swap<'a>(
        &'a self,
        connection: &'a Connection,
        expected: &'a StoredSecrets,
        fresh: &'a Value,
    ) -> BoxFuture<'a, Result<Swap, SecretsError>> {
        Box::pin(async move {
            let sealed = seal_secrets(&self.master_key, connection.id, fresh)
                .map_err(|_| SecretsError::Crypto)?;
            let patch = ConnectionPatch {
                sealed_secrets: Some(sealed),
                if_secrets_are: Some(expected.version.clone()),
                ..ConnectionPatch::default()
            };
            let outcome = self
                .store
                .update_connection(connection.workspace_id, connection.id, patch)
                .await
                .map_err(|error| SecretsError::Storage(error.to_string()))?;
            Ok(match outcome {
                PatchOutcome::Updated(_) => {
                    self.rule_index.invalidate(connection.workspace_id);
                    Swap::Swapped
                }
                PatchOutcome::Stale(newer) => Swap::Stale(self.opened(&newer)?),
                PatchOutcome::NotFound => Swap::Gone,
            })
        })
    }

    fn hold_refresh<'a>(
        &'a self,
        connection: &'a Connection,
        wait: std::time::Duration,
    ) -> BoxFuture<'a, Result<Option<SharedLockGuard>, SecretsError>> {
        Box::pin(async move {
            self.store
                .shared_lock(SharedLock::SlackRefresh(connection.id), wait)
                .await
                .map_err(|error| SecretsError::Storage(error.to_string()))
        })
    }
}
