-- Switchyard's PostgreSQL schema, version 3: cross-node cache invalidation.
--
-- Every transaction that changes what a node caches about a workspace (its
-- keys, rules, connections, or the workspace itself) bumps its row here
-- before it commits. Each node polls the rows changed lately and drops that
-- workspace's cached keys and rules. `changed_at_ms` is the database's
-- clock (never a node's), `version` counts the bumps, so a node can tell a
-- new bump from one it has already seen. A deleted workspace's row goes
-- once its purge is over.

CREATE TABLE workspace_changes (
    workspace_id bytea PRIMARY KEY,
    version bigint NOT NULL,
    changed_at_ms bigint NOT NULL
);
CREATE INDEX workspace_changes_by_time ON workspace_changes (changed_at_ms);
