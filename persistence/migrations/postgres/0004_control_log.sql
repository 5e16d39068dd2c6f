-- Commands for every node, kept for a while (persistence/src/control_log.rs). Same
-- shape as migrations/sqlite/0004_control_log.sql.
CREATE TABLE control_log (
    seq        BIGSERIAL PRIMARY KEY,
    command    TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX control_log_created_at ON control_log (created_at);
