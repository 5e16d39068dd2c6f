-- Usage per team per UTC day (persistence/src/usage/). Same shape as
-- migrations/postgres/0005_usage.sql; days are `YYYY-MM-DD` text, times the
-- fixed-width UTC text of 0001.
CREATE TABLE usage_days (
    team_id            TEXT    NOT NULL,
    day                TEXT    NOT NULL,
    messages           INTEGER NOT NULL DEFAULT 0,
    api_calls          INTEGER NOT NULL DEFAULT 0,
    peak_connections   INTEGER NOT NULL DEFAULT 0,
    webhook_deliveries INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (team_id, day)
);
-- The batches already added, so a retried batch is not counted twice.
CREATE TABLE usage_batches (
    id       TEXT PRIMARY KEY,
    node_id  TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE INDEX usage_batches_added_at ON usage_batches (added_at);
