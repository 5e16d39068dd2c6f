-- Pattern library, API keys and member revocations. Same shape as
-- migrations/sqlite/0003_patterns_keys_revocations.sql, in Postgres' own types.

-- API keys: only the SHA-256 (lower-case hex) of a key is stored.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    team_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX api_keys_team ON api_keys (team_id, created_at, id);

-- The latest revocation of a user in a team: tokens issued before it no longer count.
CREATE TABLE member_revocations (
    team_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    revoked_at TIMESTAMPTZ NOT NULL,
    revoked_by TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

-- One version counter per team. A pattern write locks its team's row (SELECT ... FOR
-- UPDATE), so the writes of a team are serialised across every node and commit in
-- version order.
CREATE TABLE pattern_versions (
    team_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);

-- Patterns and tombstones (deleted, content 'null').
CREATE TABLE patterns (
    team_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    BIGINT NOT NULL,
    content    JSONB NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (team_id, name)
);
-- The change feed: `?since_version=V`.
CREATE INDEX patterns_team_version ON patterns (team_id, version);
