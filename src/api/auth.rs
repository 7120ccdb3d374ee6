//! API keys and the extractors that check them. Keys carry 256 random bits,
//! so a plain SHA-256 is a sound storage hash: a slow password hash would
//! add nothing against guessing and cost every request.

use super::{ApiError, AppState};
use crate::model::{KeyKind, WorkspaceId};
use crate::store::{KeyHash, Store, StoreError};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A fresh key: the kind's prefix, then 32 random bytes in URL-safe base64.
pub fn generate_key(kind: KeyKind) -> String {
    format!("{}{}", kind.prefix(), random_token())
}

/// 32 bytes from the OS-seeded CSPRNG, URL-safe base64 without padding.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A Meshes-format publishable key, `mesh_pub_<workspace>_<key id>_<secret>`,
/// which passes the Meshes events client's own check
/// (`^mesh_pub_([A-Za-z0-9\-.]+)_([A-Za-z0-9\-.]+)_([^_]+)$`): the
/// workspace's ULID in lower case, a short random key id (named as an
/// event's `created_by`), then 32 random bytes in hex, so the secret part
/// carries 256 bits and never holds a `_`.
pub fn generate_meshes_key(workspace: WorkspaceId) -> String {
    let mut key_id = [0u8; 4];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut key_id);
    rand::rng().fill_bytes(&mut secret);
    format!(
        "{}{}_{}_{}",
        KeyKind::MeshesPublishable.prefix(),
        ulid::Ulid(workspace.0).to_string().to_ascii_lowercase(),
        lower_hex(&key_id),
        lower_hex(&secret)
    )
}

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The key id of a Meshes key (its second `_`-separated part after the
/// prefix); `None` for anything not shaped like one.
fn meshes_key_id(key: &str) -> Option<&str> {
    let mut parts = key
        .strip_prefix(KeyKind::MeshesPublishable.prefix())?
        .split('_');
    let (_workspace, key_id, _secret) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().is_none().then_some(key_id)
}

pub fn hash_key(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Known keys, so most requests authenticate without a storage read.
/// Only hits are cached. A rotation or deletion forgets the workspace's
/// entries before it answers, and bumps an epoch so a lookup that raced it
/// cannot put an old key back.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<KeyHash, (WorkspaceId, KeyKind)>>,
    epoch: AtomicU64,
}

/// Beyond this many cached keys, lookups go to the store.
const MAX_CACHED_KEYS: usize = 100_000;

impl KeyCache {
    pub async fn lookup(
        &self,
        store: &dyn Store,
        hash: &KeyHash,
    ) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError> {
        self.lookup_with(hash, |hash| store.key(hash)).await
    }

    async fn lookup_with<Load>(
        &self,
        hash: &KeyHash,
        load: impl FnOnce(KeyHash) -> Load,
    ) -> Result<Option<(WorkspaceId, KeyKind)>, StoreError>
    where
        Load: Future<Output = Result<Option<(WorkspaceId, KeyKind)>, StoreError>>,
    {
        if let Some(hit) = self.read().get(hash) {
            return Ok(Some(*hit));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let found = load(*hash).await?;
        if let Some(found) = found {
            let mut entries = self.write();
            if self.epoch.load(Ordering::Acquire) == epoch && entries.len() < MAX_CACHED_KEYS {
                entries.insert(*hash, found);
            }
        }
        Ok(found)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Call after a workspace's keys changed or it was deleted (here or,
    /// told by the store's change feed, on another node).
    pub fn forget_workspace(&self, workspace: WorkspaceId) {
        let mut entries = self.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, (owner, _)| *owner != workspace);
    }

    /// Call when other nodes' changes cannot be followed.
    pub fn forget_all(&self) {
        let mut entries = self.write();
        self.epoch.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<KeyHash, (WorkspaceId, KeyKind)>> {
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<KeyHash, (WorkspaceId, KeyKind)>> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The instance admin token.
pub struct Admin;

/// A workspace's secret key: full management of that workspace.
pub struct SecretKey(pub WorkspaceId);

/// A publishable or secret key: may emit events.
pub struct EmitKey(pub WorkspaceId);

/// The header the Meshes events client sends its publishable key in.
pub const MESHES_KEY_HEADER: &str = "x-meshes-publishable-key";

/// A workspace's Meshes publishable key from `X-Meshes-Publishable-Key`:
/// may emit through `/api/v1/events` only. No other key is accepted there
/// (401), so a `pk_` key pasted into a Meshes client fails loudly.
pub struct MeshesKey {
    pub workspace: WorkspaceId,
    /// The key's public id, named as `created_by` on the events it emits.
    pub key_id: String,
}

enum Caller {
    Admin,
    Workspace(WorkspaceId, KeyKind, KeyHash),
    /// An embedded UI session: stands for the workspace's secret key,
    /// except where a real one is required.
    Embed(WorkspaceId),
}

/// A workspace's real secret key, not an embed session (minting embed
/// sessions needs it), with the key's hash.
pub struct RealSecretKey(pub WorkspaceId, pub KeyHash);

/// The token of an `Authorization: Bearer <token>` value. The scheme name
/// is case-insensitive (RFC 9110, section 11.1), the token is not.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn identify(parts: &Parts, app: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key> header"))?;
    let token = header
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(|| ApiError::unauthorized("expected Authorization: Bearer <key>"))?;
    let hash = hash_key(token);
    // Comparing digests keeps the comparison independent of the token's
    // bytes, so timing reveals nothing about the admin token.
    if hash == app.admin_token_hash() {
        return Ok(Caller::Admin);
    }
    if crate::embed::is_session_token(token) {
        return crate::embed::session_workspace(app, token)
            .await
            .map(Caller::Embed)
            .ok_or_else(|| ApiError::unauthorized("this session has expired or is not valid"));
    }
    match app.key_cache().lookup(app.store(), &hash).await? {
        Some((workspace, kind)) => Ok(Caller::Workspace(workspace, kind, hash)),
        None => Err(ApiError::unauthorized("unknown API key")),
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match identify(parts, app).await? {
            Caller::Admin => Ok(Admin),
            Caller::Workspace(..) | Caller::Embed(_) => Err(ApiError::forbidden(
                "this endpoint needs the admin token, not a workspace key",
            )),
        }
    }
}

impl FromRequestParts<AppState> for SecretKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match identify(parts, app).await? {
            Caller::Workspace(workspace, KeyKind::Secret, _) | Caller::Embed(workspace) => {
                Ok(SecretKey(workspace))
            }
            Caller::Workspace(_, KeyKind::Publishable, _) => Err(ApiError::forbidden(
                "a publishable key can only emit events; use the secret key",
            )),
            Caller::Workspace(_, KeyKind::MeshesPublishable, _) => Err(meshes_key_elsewhere()),
            Caller::Admin => Err(ApiError::forbidden(
                "this endpoint needs a workspace secret key, not the admin token",
            )),
        }
    }
}

impl FromRequestParts<AppState> for EmitKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match identify(parts, app).await? {
            Caller::Workspace(_, KeyKind::MeshesPublishable, _) => Err(meshes_key_elsewhere()),
            Caller::Workspace(workspace, ..) | Caller::Embed(workspace) => Ok(EmitKey(workspace)),
            Caller::Admin => Err(ApiError::forbidden(
                "events are emitted with a workspace key, not the admin token",
            )),
        }
    }
}

impl FromRequestParts<AppState> for RealSecretKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        match identify(parts, app).await? {
            Caller::Workspace(workspace, KeyKind::Secret, hash) => {
                Ok(RealSecretKey(workspace, hash))
            }
            Caller::Workspace(_, KeyKind::Publishable | KeyKind::MeshesPublishable, _)
            | Caller::Embed(_)
            | Caller::Admin => Err(ApiError::forbidden(
                "this endpoint needs the workspace's secret key",
            )),
        }
    }
}

fn meshes_key_elsewhere() -> ApiError {
    ApiError::forbidden(
        "a Meshes publishable key only emits at /api/v1/events (X-Meshes-Publishable-Key); \
         use the workspace's pk_ or sk_ key here",
    )
}

impl FromRequestParts<AppState> for MeshesKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let Some(key) = parts.headers.get(MESHES_KEY_HEADER) else {
            // A bearer key is a key of the wrong kind here, whichever it is.
            if parts.headers.contains_key(AUTHORIZATION) {
                return Err(ApiError::forbidden(
                    "this endpoint takes the workspace's Meshes publishable key \
                     (mesh_pub_…) in X-Meshes-Publishable-Key, not a bearer key",
                ));
            }
            return Err(ApiError::unauthorized(
                "missing X-Meshes-Publishable-Key header",
            ));
        };
        let key = key
            .to_str()
            .map_err(|_| ApiError::unauthorized("unknown Meshes publishable key"))?
            .trim();
        let key_id = meshes_key_id(key)
            .ok_or_else(|| ApiError::unauthorized("not a Meshes publishable key (mesh_pub_…)"))?;
        match app.key_cache().lookup(app.store(), &hash_key(key)).await? {
            Some((workspace, KeyKind::MeshesPublishable)) => Ok(MeshesKey {
                workspace,
                key_id: key_id.to_string(),
            }),
            _ => Err(ApiError::unauthorized("unknown Meshes publishable key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::ready;

    #[test]
    fn the_bearer_scheme_is_case_insensitive_and_the_token_is_kept_exactly() {
        assert_eq!(bearer_token("Bearer sk_AbC"), Some("sk_AbC"));
        assert_eq!(bearer_token("bearer sk_AbC"), Some("sk_AbC"));
        assert_eq!(bearer_token("BEARER  sk_AbC "), Some("sk_AbC"));
        for rejected in [
            "Bearer",
            "Bearer ",
            "Basic sk_AbC",
            "Bearersk_AbC",
            "",
            "Token x",
        ] {
            assert_eq!(bearer_token(rejected), None, "{rejected:?}");
        }
    }

    #[tokio::test]
    async fn the_key_cache_stops_growing_at_its_cap_and_still_answers() {
        let cache = KeyCache::default();
        let full = WorkspaceId::new();
        let key_of = |n: usize| hash_key(&format!("pk_{n}"));
        for n in 0..MAX_CACHED_KEYS {
            let found = cache
                .lookup_with(&key_of(n), |_| {
                    ready(Ok(Some((full, KeyKind::Publishable))))
                })
                .await
                .unwrap();
            assert_eq!(found, Some((full, KeyKind::Publishable)));
        }
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        // Past the cap a key is still found, from the store each time.
        let late = WorkspaceId::new();
        let extra = key_of(MAX_CACHED_KEYS);
        for _ in 0..2 {
            let mut loads = 0;
            let found = cache
                .lookup_with(&extra, |_| {
                    loads += 1;
                    ready(Ok(Some((late, KeyKind::Secret))))
                })
                .await
                .unwrap();
            assert_eq!((found, loads), (Some((late, KeyKind::Secret)), 1));
        }
        assert_eq!(cache.len(), MAX_CACHED_KEYS);
        // Misses are never cached; a deleted workspace's keys make room.
        let unknown = cache
            .lookup_with(&key_of(usize::MAX), |_| ready(Ok(None)))
            .await
            .unwrap();
        assert_eq!(unknown, None);
        cache.forget_workspace(full);
        assert!(cache.is_empty());
        cache
            .lookup_with(&extra, |_| ready(Ok(Some((late, KeyKind::Secret)))))
            .await
            .unwrap();
        let cached = cache
            .lookup_with(&extra, |_| async { panic!("cached: no store read") })
            .await
            .unwrap();
        assert_eq!(cached, Some((late, KeyKind::Secret)));
    }

    proptest::proptest! {
        /// The Meshes client refuses, before sending, any key that does
        /// not match its pattern; every key made here must pass it.
        #[test]
        fn meshes_keys_pass_the_meshes_clients_check(workspace in proptest::prelude::any::<u128>()) {
            let pattern =
                regex::Regex::new(r"^mesh_pub_([A-Za-z0-9\-.]+)_([A-Za-z0-9\-.]+)_([^_]+)$").unwrap();
            let key = generate_meshes_key(WorkspaceId(workspace));
            let groups = pattern.captures(&key).expect("matches the Meshes pattern");
            proptest::prop_assert_eq!(
                &groups[1],
                ulid::Ulid(workspace).to_string().to_ascii_lowercase()
            );
            proptest::prop_assert_eq!(meshes_key_id(&key), Some(&groups[2]));
            // 64 hex digits: 256 random bits.
            proptest::prop_assert_eq!(groups[3].len(), 64);
            proptest::prop_assert!(groups[3].bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn meshes_key_ids_come_only_from_meshes_shaped_keys() {
        assert_eq!(meshes_key_id("mesh_pub_ws_kid_secret"), Some("kid"));
        for other in [
            "pk_abc",
            "mesh_pub_a_b",
            "mesh_pub_a_b_c_d",
            "mesh_pubx_a_b_c",
        ] {
            assert_eq!(meshes_key_id(other), None, "{other}");
        }
    }

    #[test]
    fn keys_are_prefixed_random_and_hash_stably() {
        let first = generate_key(KeyKind::Publishable);
        let second = generate_key(KeyKind::Publishable);
        assert!(first.starts_with("pk_") && first.len() == 46, "{first}");
        assert!(generate_key(KeyKind::Secret).starts_with("sk_"));
        assert_ne!(first, second);
        // Stably: stored digests must still match after a restart or an
        // upgrade, so the hash is pinned to SHA-256 of the key's text.
        let digest: String = hash_key("sk_example")
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(
            digest,
            "2408e9af1eb560a89e91ab5aca980fe0d50583214de6afc73b0bb9eceaecd844"
        );
        assert_ne!(hash_key(&first), hash_key(&second));
    }
}
