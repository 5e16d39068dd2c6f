-- Webhook endpoints and the outbox of their deliveries (persistence/src/webhooks.rs).
-- Same shape as migrations/sqlite/0006_webhooks.sql, in Postgres' own types.

-- A team's endpoints. The secrets are kept in the clear: a delivery is signed with
-- them (HMAC), so a hash would not do. `previous_secret` still signs until
-- `previous_until` (24 h after a rotation).
CREATE TABLE webhook_endpoints (
    id             TEXT PRIMARY KEY,
    team_id        TEXT NOT NULL,
    url            TEXT NOT NULL,
    -- A JSON array of type prefixes.
    events         TEXT NOT NULL,
    description    TEXT NOT NULL,
    enabled        BOOLEAN NOT NULL,
    secret         TEXT NOT NULL,
    previous_secret TEXT,
    previous_until TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_endpoints_team ON webhook_endpoints (team_id, created_at, id);

-- The outbox: one row per (endpoint, event), written in the transaction that writes
-- the event's activity row. A node claims a due row by setting its lease (a
-- conditional UPDATE, so two nodes never hold one row at once); a lease that expires
-- (the node died mid-delivery) makes the row due again.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    team_id          TEXT NOT NULL,
    event_id         UUID NOT NULL,
    event_type       TEXT NOT NULL,
    -- The request body, byte for byte the same on every attempt (TEXT, not JSONB,
    -- which would reorder it).
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    lease_owner      TEXT,
    lease_until      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
-- What the dispatchers poll: pending rows by due time.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
-- The deliveries log of one endpoint, newest first.
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
