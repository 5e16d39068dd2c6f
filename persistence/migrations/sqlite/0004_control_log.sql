-- Commands for every node, kept for a while (persistence/src/control_log.rs). Same
-- shape as migrations/postgres/0004_control_log.sql; times are the fixed-width UTC
-- text of 0001.
CREATE TABLE control_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    command    TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX control_log_created_at ON control_log (created_at);
