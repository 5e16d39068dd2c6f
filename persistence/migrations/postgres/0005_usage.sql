-- Usage per team per UTC day (persistence/src/usage/). Same shape as
-- migrations/sqlite/0005_usage.sql.
CREATE TABLE usage_days (
    team_id            TEXT   NOT NULL,
    day                DATE   NOT NULL,
    messages           BIGINT NOT NULL DEFAULT 0,
    api_calls          BIGINT NOT NULL DEFAULT 0,
    peak_connections   BIGINT NOT NULL DEFAULT 0,
    webhook_deliveries BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (team_id, day)
);
-- The batches already added, so a retried batch is not counted twice.
CREATE TABLE usage_batches (
    id       UUID        PRIMARY KEY,
    node_id  TEXT        NOT NULL,
    added_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX usage_batches_added_at ON usage_batches (added_at);
