-- Switchyard's PostgreSQL schema, version 2: several nodes share the queue.
--
-- The unit of ownership is the connection, not the queue row: a node
-- delivers only the entries of connections it holds an unexpired lease on,
-- so a connection's order, its in-flight cap and its Retry-After pause are
-- kept by one node at a time (docs/postgres.md, "The shared queue").

-- Live nodes; a row whose heartbeat is older than a lease is removed by
-- whichever node notices. Used to share unowned connections fairly.
CREATE TABLE nodes (
    id text PRIMARY KEY,
    started_at_ms bigint NOT NULL,
    heartbeat_ms bigint NOT NULL
);

-- Which node delivers a connection's queue, until when. paused_until_ms is
-- the connection's Retry-After pause, kept here so a node taking the
-- connection over honours it.
CREATE TABLE connection_leases (
    connection_id bytea PRIMARY KEY,
    node_id text NOT NULL,
    lease_until_ms bigint NOT NULL,
    paused_until_ms bigint NOT NULL DEFAULT 0
);
CREATE INDEX connection_leases_by_node ON connection_leases (node_id);

-- Version 1's per-row claim columns were never used.
ALTER TABLE delivery_queue DROP COLUMN claimed_by, DROP COLUMN lease_until_ms;
