//! What attempts derive from a connection, kept per connection instead of
//! made again per attempt: the opened secrets (every attempt used to
//! decrypt them, XChaCha20-Poly1305, and parse their JSON, for the same
//! bytes each time), and what a kind prepares from them (the webhook's
//! checked URL, headers and HMAC keys).
//!
//! An entry is keyed by the connection and holds the config and the sealed
//! bytes it was made from; a lookup hits only if the connection read for
//! this attempt carries exactly those. Any change of the secrets (an
//! update, a rotation, a Slack token refresh) reseals them under a fresh
//! nonce, so the next attempt misses and makes the entry again: nothing
//! needs invalidating, and what an attempt sees is always what is stored.
//!
//! Bounded at [`MAX_CONNECTIONS`] connections per cache; past that an
//! arbitrary entry makes room (as the rule index does). Opened secrets are
//! wiped, best effort, when their last user drops them.

use super::open_secrets;
use crate::crypto::{CryptoError, MasterKey};
use crate::model::{Connection, ConnectionId, IdMap};
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Connections whose derived values a cache keeps. An entry is a few
/// hundred bytes, so a cache stays under a megabyte or so.
pub const MAX_CONNECTIONS: usize = 1024;

/// Values derived from a connection's config and sealed secrets.
pub struct PerConnection<T> {
    entries: Mutex<IdMap<ConnectionId, Entry<T>>>,
}

struct Entry<T> {
    config: Value,
    sealed: Vec<u8>,
    value: Arc<T>,
}

impl<T> Default for PerConnection<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<T> PerConnection<T> {
    /// The value made from this very config and these sealed secrets:
    /// kept from an earlier attempt, or made now (and kept if it could be).
    pub fn get_or_make<E>(
        &self,
        connection: &Connection,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Arc<T>, E> {
        if let Some(entry) = self.lock().get(&connection.id)
            && entry.sealed == connection.sealed_secrets
            && entry.config == connection.config
        {
            return Ok(entry.value.clone());
        }
        // Made outside the lock: attempts of other connections do not
        // wait for a decryption.
        let value = Arc::new(make()?);
        let mut entries = self.lock();
        if entries.len() >= MAX_CONNECTIONS
            && !entries.contains_key(&connection.id)
            && let Some(&evicted) = entries.keys().next()
        {
            entries.remove(&evicted);
        }
        entries.insert(
            connection.id,
            Entry {
                config: connection.config.clone(),
                sealed: connection.sealed_secrets.clone(),
                value: value.clone(),
            },
        );
        Ok(value)
    }

    fn lock(&self) -> MutexGuard<'_, IdMap<ConnectionId, Entry<T>>> {
        // The map is consistent between statements, so a panic elsewhere
        // while it was held leaves nothing half-done.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A connection's decrypted secrets, wiped when dropped.
pub struct OpenedSecrets(Value);

impl OpenedSecrets {
    pub fn value(&self) -> &Value {
        &self.0
    }
}

impl Drop for OpenedSecrets {
    // Best effort without a zeroize dependency, as `MasterKey` does:
    // `black_box` keeps the compiler from dropping the wipe as dead stores.
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => {
            let mut bytes = std::mem::take(text).into_bytes();
            bytes.fill(0);
            std::hint::black_box(&bytes);
        }
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(fields) => fields.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Connections' secrets opened for attempts.
pub type OpenedCache = PerConnection<OpenedSecrets>;

impl OpenedCache {
    /// The connection's secrets, opened now or kept from an attempt that
    /// opened the same sealed bytes.
    pub fn open(
        &self,
        key: &MasterKey,
        connection: &Connection,
    ) -> Result<Arc<OpenedSecrets>, CryptoError> {
        self.get_or_make(connection, || {
            open_secrets(key, connection).map(OpenedSecrets)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::seal_secrets;
    use crate::model::{ConnectionKind, ConnectionStatus, WorkspaceId};
    use serde_json::json;

    fn key() -> MasterKey {
        MasterKey::from_bytes([7; 32])
    }

    fn connection(key: &MasterKey, id: u128, secrets: &Value) -> Connection {
        let id = ConnectionId(id);
        Connection {
            id,
            workspace_id: WorkspaceId(1),
            name: "hook".into(),
            kind: ConnectionKind::Webhook,
            status: ConnectionStatus::Active,
            config: json!({"url": "https://example.com/hook"}),
            sealed_secrets: seal_secrets(key, id, secrets).unwrap(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn the_same_sealed_bytes_are_opened_once() {
        let key = key();
        let cache = OpenedCache::default();
        let connection = connection(&key, 1, &json!({"signing_secret": "a"}));
        let first = cache.open(&key, &connection).unwrap();
        let second = cache.open(&key, &connection).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(second.value(), &json!({"signing_secret": "a"}));
    }

    #[test]
    fn resealed_secrets_are_opened_again() {
        let key = key();
        let cache = OpenedCache::default();
        let before = connection(&key, 1, &json!({"signing_secret": "old"}));
        assert_eq!(
            cache.open(&key, &before).unwrap().value()["signing_secret"],
            "old"
        );
        let rotated = Connection {
            sealed_secrets: seal_secrets(&key, before.id, &json!({"signing_secret": "new"}))
                .unwrap(),
            ..before.clone()
        };
        assert_eq!(
            cache.open(&key, &rotated).unwrap().value()["signing_secret"],
            "new"
        );
        // And back: whatever the attempt read is what it gets.
        assert_eq!(
            cache.open(&key, &before).unwrap().value()["signing_secret"],
            "old"
        );
    }

    #[test]
    fn a_changed_config_is_a_miss() {
        let cache = PerConnection::<u32>::default();
        let key = key();
        let mut connection = connection(&key, 1, &json!({}));
        let made = |n| move || Ok::<_, ()>(n);
        assert_eq!(*cache.get_or_make(&connection, made(1)).unwrap(), 1);
        assert_eq!(*cache.get_or_make(&connection, made(2)).unwrap(), 1);
        connection.config = json!({"url": "https://example.com/other"});
        assert_eq!(*cache.get_or_make(&connection, made(3)).unwrap(), 3);
    }

    #[test]
    fn secrets_that_do_not_open_are_an_error_and_not_cached() {
        let key = key();
        let cache = OpenedCache::default();
        let mut connection = connection(&key, 1, &json!({}));
        connection.sealed_secrets[5] ^= 1;
        assert!(cache.open(&key, &connection).is_err());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_cache_is_bounded() {
        let key = key();
        let cache = OpenedCache::default();
        for id in 0..(MAX_CONNECTIONS as u128 + 10) {
            cache
                .open(&key, &connection(&key, id, &json!({"n": id.to_string()})))
                .unwrap();
        }
        assert_eq!(cache.len(), MAX_CONNECTIONS);
    }

    #[test]
    fn wiping_clears_every_string() {
        let mut value = json!({"a": "secret", "b": ["x", {"c": "y"}], "n": 1});
        wipe(&mut value);
        assert_eq!(value, json!({"a": "", "b": ["", {"c": ""}], "n": 1}));
    }
}
