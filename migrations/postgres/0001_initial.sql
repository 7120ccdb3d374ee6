-- Switchyard's PostgreSQL schema, version 1.
--
-- Ids are the 128-bit ULIDs the redb store keys by, as 16 big-endian bytes
-- (bytea), so byte order is id order and so receive-time order. Times are
-- Unix milliseconds (bigint). JSON the tenant sent (rule targets,
-- conditions, templates, connection config) is jsonb; an event's payload is
-- the raw bytes received (bytea), kept exactly as sent and still queryable
-- with convert_from(payload, 'UTF8')::jsonb. Sealed connection secrets are
-- the same XChaCha20-Poly1305 bytes the redb store holds.
--
-- No foreign keys: a deleted workspace's events, deliveries and attempts are
-- removed afterwards in bounded steps (workspace_purges), as with redb.

CREATE TABLE workspaces (
    id bytea PRIMARY KEY,
    name text NOT NULL,
    created_at_ms bigint NOT NULL,
    publishable_key_hash bytea NOT NULL,
    secret_key_hash bytea NOT NULL,
    meshes_key_hash bytea NOT NULL
);

-- SHA-256 digests of API keys; the keys themselves are never stored.
CREATE TABLE api_keys (
    hash bytea PRIMARY KEY,
    workspace_id bytea NOT NULL,
    kind text NOT NULL CHECK (kind IN ('publishable', 'secret', 'meshes_publishable'))
);

CREATE TABLE workspace_purges (
    workspace_id bytea PRIMARY KEY,
    deleted_at_ms bigint NOT NULL
);

CREATE TABLE events (
    workspace_id bytea NOT NULL,
    id bytea NOT NULL,
    name text NOT NULL,
    resource text,
    resource_id text,
    payload bytea NOT NULL,
    received_at_ms bigint NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
-- Retention walks old events oldest first across workspaces.
CREATE INDEX events_by_age ON events (id, workspace_id);

CREATE TABLE connections (
    workspace_id bytea NOT NULL,
    id bytea NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    config jsonb NOT NULL,
    sealed_secrets bytea NOT NULL,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

CREATE TABLE rules (
    workspace_id bytea NOT NULL,
    id bytea NOT NULL,
    name text NOT NULL,
    events text[] NOT NULL,
    connection_id bytea NOT NULL,
    target jsonb NOT NULL,
    min_severity text,
    conditions jsonb NOT NULL,
    template jsonb,
    enabled boolean NOT NULL,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    dedup_seconds integer,
    max_per_hour integer,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX rules_by_connection ON rules (workspace_id, connection_id);

CREATE TABLE deliveries (
    workspace_id bytea NOT NULL,
    id bytea NOT NULL,
    event_id bytea NOT NULL,
    rule_id bytea NOT NULL,
    connection_id bytea NOT NULL,
    status text NOT NULL,
    attempt_count integer NOT NULL,
    -- Attempts since the delivery was last queued by hand.
    round_attempts integer NOT NULL,
    -- Set while queued or in flight: also its queue row's due time.
    next_attempt_at_ms bigint,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    alert text,
    suppressed_before integer NOT NULL,
    PRIMARY KEY (workspace_id, id)
);
CREATE INDEX deliveries_by_event ON deliveries (workspace_id, event_id, id);

CREATE TABLE attempts (
    delivery_id bytea NOT NULL,
    n integer NOT NULL,
    at_ms bigint NOT NULL,
    duration_ms bigint NOT NULL,
    status_code integer,
    error text,
    response text,
    PRIMARY KEY (delivery_id, n)
);

-- The queue: one row per delivery waiting for its next attempt, in due
-- order per connection. claimed_by and lease_until_ms are for nodes sharing
-- the queue (a claim with FOR UPDATE SKIP LOCKED and a lease); a single
-- node leaves them NULL.
CREATE TABLE delivery_queue (
    connection_id bytea NOT NULL,
    due_ms bigint NOT NULL,
    delivery_id bytea NOT NULL,
    workspace_id bytea NOT NULL,
    claimed_by text,
    lease_until_ms bigint,
    PRIMARY KEY (connection_id, due_ms, delivery_id)
);

CREATE TABLE idempotency_keys (
    workspace_id bytea NOT NULL,
    key text NOT NULL,
    created_at_ms bigint NOT NULL,
    status integer NOT NULL,
    response bytea NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);

CREATE TABLE oauth_states (
    nonce bytea PRIMARY KEY,
    expires_at_ms bigint NOT NULL
);

CREATE TABLE used_launch_tokens (
    digest bytea PRIMARY KEY,
    expires_at_ms bigint NOT NULL
);

CREATE TABLE slack_threads (
    workspace_id bytea NOT NULL,
    connection_id bytea NOT NULL,
    channel text NOT NULL,
    alert text NOT NULL,
    saved_at_ms bigint NOT NULL,
    ts text NOT NULL,
    PRIMARY KEY (workspace_id, connection_id, channel, alert)
);

-- Noise control (see src/store/postgres/noise.rs): when a deduplicating
-- rule last sent an alert, and each rule's max_per_hour window.
CREATE TABLE alert_noise (
    workspace_id bytea NOT NULL,
    rule_id bytea NOT NULL,
    alert text NOT NULL,
    last_sent_ms bigint NOT NULL,
    PRIMARY KEY (workspace_id, rule_id, alert)
);

CREATE TABLE rule_noise (
    workspace_id bytea NOT NULL,
    rule_id bytea NOT NULL,
    window_start_ms bigint NOT NULL,
    sent_in_window integer NOT NULL,
    suppressed_since_sent integer NOT NULL,
    PRIMARY KEY (workspace_id, rule_id)
);
