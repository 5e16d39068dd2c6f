-- Webhook endpoints and the outbox of their deliveries (persistence/src/webhooks.rs).
-- Same shape as migrations/postgres/0006_webhooks.sql; times are the fixed-width UTC
-- text of 0001.

-- A team's endpoints. The secrets are kept in the clear: a delivery is signed with
-- them (HMAC), so a hash would not do. `previous_secret` still signs until
-- `previous_until` (24 h after a rotation).
CREATE TABLE webhook_endpoints (
    id             TEXT PRIMARY KEY NOT NULL,
    team_id        TEXT NOT NULL,
    url            TEXT NOT NULL,
    -- A JSON array of type prefixes.
    events         TEXT NOT NULL CHECK (json_valid(events)),
    description    TEXT NOT NULL,
    enabled        INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    secret         TEXT NOT NULL,
    previous_secret TEXT,
    previous_until TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
CREATE INDEX webhook_endpoints_team ON webhook_endpoints (team_id, created_at, id);

-- The outbox: one row per (endpoint, event), written in the transaction that writes
-- the event's activity row. SQLite serves one node, which still claims rows through
-- the lease columns, so a restarted node takes over what it had in flight.
CREATE TABLE webhook_deliveries (
    id               TEXT PRIMARY KEY NOT NULL,
    endpoint_id      TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    team_id          TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error       TEXT,
    next_attempt_at  TEXT NOT NULL,
    lease_owner      TEXT,
    lease_until      TEXT,
    created_at       TEXT NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC, id DESC);
