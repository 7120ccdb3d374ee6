//! The in-memory rule index: each workspace's enabled rules compiled into
//! matchers, loaded on first use and dropped when its rules or connections
//! change (or the workspace is deleted), so matching an event at ingest does
//! no I/O. It holds at most [`MAX_CACHED_WORKSPACES`] workspaces: past that,
//! one is dropped for each newcomer and is compiled again on its next event.

use crate::model::{
    Connection, ConnectionId, ConnectionStatus, Event, IdMap, Rule, RuleId, WorkspaceId,
};
use crate::rules::{EventPattern, RuleFilter, Severity, validate_conditions};
use crate::store::{Store, StoreError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Where one event goes through one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub rule_id: RuleId,
    pub connection_id: ConnectionId,
    /// The rule's noise controls, if it has any.
    pub noise: Option<NoiseControls>,
    /// Where the rule sits in the set that routed the event
    /// ([`WorkspaceRules::stored`]).
    position: usize,
}

/// A rule's `dedup_seconds` and `max_per_hour`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoiseControls {
    pub dedup_seconds: Option<u32>,
    pub max_per_hour: Option<u32>,
}

impl NoiseControls {
    fn of(rule: &crate::model::Rule) -> Option<Self> {
        (rule.dedup_seconds.is_some() || rule.max_per_hour.is_some()).then_some(Self {
            dedup_seconds: rule.dedup_seconds,
            max_per_hour: rule.max_per_hour,
        })
    }
}

/// Workspaces whose compiled rules are kept; a miss costs two small reads.
pub const MAX_CACHED_WORKSPACES: usize = 10_000;

pub struct RuleIndex {
    workspaces: RwLock<IdMap<WorkspaceId, Arc<WorkspaceRules>>>,
    /// Bumped by every invalidation: a set loaded while one happened may be
    /// stale and is used once but not cached.
    generation: AtomicU64,
    capacity: usize,
}

impl Default for RuleIndex {
    fn default() -> Self {
        Self::with_capacity(MAX_CACHED_WORKSPACES)
    }
}

/// One workspace's compiled, enabled rules whose connection is not disabled,
/// each with the rule and connection as stored when the set was loaded (an
/// event's first attempt is sent with them, see `delivery/warm.rs`).
#[derive(Default)]
pub struct WorkspaceRules {
    rules: Vec<CompiledRule>,
}

struct CompiledRule {
    id: RuleId,
    connection_id: ConnectionId,
    filter: RuleFilter,
    noise: Option<NoiseControls>,
    stored: Arc<Rule>,
    /// `None` when the rule's connection was not found.
    connection: Option<Arc<Connection>>,
}

impl RuleIndex {
    /// An index holding at most `capacity` workspaces (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            workspaces: RwLock::default(),
            generation: AtomicU64::new(0),
            capacity: capacity.max(1),
        }
    }

    /// The workspace's rules, compiled from the store on first use.
    pub async fn workspace(
        &self,
        store: &dyn Store,
        workspace: WorkspaceId,
    ) -> Result<Arc<WorkspaceRules>, StoreError> {
        if let Some(rules) = self.read().get(&workspace) {
            return Ok(rules.clone());
        }
        let generation = self.generation.load(Ordering::Acquire);
        let compiled = Arc::new(WorkspaceRules::load(store, workspace).await?);
        let mut cache = self.write();
        if self.generation.load(Ordering::Acquire) == generation {
            // Full: drop an arbitrary entry. Tracking recency would cost a
            // write lock on every event; a busy workspace that loses its
            // entry pays one reload.
            if cache.len() >= self.capacity
                && !cache.contains_key(&workspace)
                && let Some(victim) = cache.keys().next().copied()
            {
                cache.remove(&victim);
            }
            cache.insert(workspace, compiled.clone());
        }
        Ok(compiled)
    }

    /// The workspace's rules if they are cached now, without loading them:
    /// a set loaded earlier is still current while this returns that very
    /// set (`Arc::ptr_eq`), since every change drops the cached one.
    pub fn current(&self, workspace: WorkspaceId) -> Option<Arc<WorkspaceRules>> {
        self.read().get(&workspace).cloned()
    }

    /// Workspaces whose compiled rules are held now.
    pub fn cached_workspaces(&self) -> usize {
        self.read().len()
    }

    /// Call after any change to the workspace's rules or connections, their
    /// secrets included (here or, told by the store's change feed, on
    /// another node): first attempts are sent with the rules and
    /// connections a cached set holds (`delivery/warm.rs`).
    pub fn invalidate(&self, workspace: WorkspaceId) {
        let mut cache = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.remove(&workspace);
    }

    /// Call when other nodes' changes cannot be followed.
    pub fn invalidate_all(&self) {
        let mut cache = self.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, IdMap<WorkspaceId, Arc<WorkspaceRules>>> {
        self.workspaces
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, IdMap<WorkspaceId, Arc<WorkspaceRules>>> {
        self.workspaces
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl WorkspaceRules {
    async fn load(store: &dyn Store, workspace: WorkspaceId) -> Result<Self, StoreError> {
        let connections: IdMap<ConnectionId, Arc<Connection>> = store
            .connections(workspace)
            .await?
            .into_iter()
            .map(|connection| (connection.id, Arc::new(connection)))
            .collect();
        let mut rules = Vec::new();
        for rule in store.rules(workspace).await? {
            let connection = connections.get(&rule.connection_id).cloned();
            let disabled = connection
                .as_ref()
                .is_some_and(|connection| connection.status == ConnectionStatus::Disabled);
            if !rule.enabled || disabled {
                continue;
            }
            match compile(&rule) {
                Some(filter) => rules.push(CompiledRule {
                    id: rule.id,
                    connection_id: rule.connection_id,
                    filter,
                    noise: NoiseControls::of(&rule),
                    stored: Arc::new(rule),
                    connection,
                }),
                // Rules are validated before they are stored; one that no
                // longer compiles is skipped loudly rather than guessed at.
                None => tracing::error!(rule = %rule.id, "stored rule does not compile; skipped"),
            }
        }
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule and connection, as loaded with this set, that `route` (one
    /// of this set's routes) goes through; `None` if its connection was
    /// not found.
    pub fn stored(&self, route: &Route) -> Option<(Arc<Rule>, Arc<Connection>)> {
        let rule = self
            .rules
            .get(route.position)
            .filter(|rule| rule.id == route.rule_id)?;
        Some((rule.stored.clone(), rule.connection.clone()?))
    }

    /// The routes of an event, in rule creation order. The payload is parsed
    /// only when a rule whose patterns match the name also filters on it.
    pub fn routes(&self, event: &Event) -> Vec<Route> {
        let name = event.name.as_str();
        let candidates: Vec<(usize, &CompiledRule)> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| {
                rule.filter
                    .events
                    .iter()
                    .any(|pattern| pattern.matches(name))
            })
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        let needs_payload = candidates.iter().any(|(_, rule)| {
            rule.filter.min_severity.is_some() || !rule.filter.conditions.is_empty()
        });
        let payload = if needs_payload {
            match serde_json::from_slice::<serde_json::Value>(&event.payload) {
                Ok(payload) => payload,
                Err(_) => return Vec::new(),
            }
        } else {
            serde_json::Value::Null
        };
        candidates
            .into_iter()
            .filter(|(_, rule)| !needs_payload || rule.filter.matches(name, &payload))
            .map(|(position, rule)| rule.as_route(position))
            .collect()
    }

    pub fn routes_for(&self, event_name: &str, payload: &serde_json::Value) -> Vec<Route> {
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.filter.matches(event_name, payload))
            .map(|(position, rule)| rule.as_route(position))
            .collect()
    }
}

impl CompiledRule {
    fn as_route(&self, position: usize) -> Route {
        Route {
            rule_id: self.id,
            connection_id: self.connection_id,
            noise: self.noise,
            position,
        }
    }
}

/// Builds the matcher of a stored rule.
pub fn compile(rule: &crate::model::Rule) -> Option<RuleFilter> {
    let events = rule
        .events
        .iter()
        .map(|pattern| EventPattern::parse(pattern).ok())
        .collect::<Option<Vec<_>>>()?;
    let min_severity = match &rule.min_severity {
        Some(text) => Some(Severity::parse(text)?),
        None => None,
    };
    let conditions = validate_conditions(&rule.conditions).ok()?;
    Some(RuleFilter {
        events,
        min_severity,
        conditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RedbStore;

    #[tokio::test]
    async fn the_index_holds_at_most_its_capacity_and_forgets_invalidated_workspaces() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(
            &dir.path().join("switchyard.redb"),
            crate::store::StoreOptions::default(),
        )
        .unwrap();
        let index = RuleIndex::with_capacity(3);
        let workspaces: Vec<WorkspaceId> = (0..10).map(|_| WorkspaceId::new()).collect();
        for &workspace in &workspaces {
            index.workspace(store.as_ref(), workspace).await.unwrap();
            assert!(index.cached_workspaces() <= 3);
        }
        assert_eq!(index.cached_workspaces(), 3);
        // The newest is cached: asked again, it is the same compiled set.
        let last = workspaces[9];
        let first = index.workspace(store.as_ref(), last).await.unwrap();
        let again = index.workspace(store.as_ref(), last).await.unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // A deleted workspace (or a rule change) drops its entry.
        index.invalidate(last);
        assert_eq!(index.cached_workspaces(), 2);
    }
}
