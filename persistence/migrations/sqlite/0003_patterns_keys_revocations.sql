-- Pattern library, API keys and member revocations. Same shape as
-- migrations/postgres/0003_patterns_keys_revocations.sql; times use the fixed-width
-- UTC text of 0001 ('YYYY-MM-DDTHH:MM:SS.ffffffZ').

-- API keys: only the SHA-256 (lower-case hex) of a key is stored.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY NOT NULL,
    team_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    prefix     TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX api_keys_team ON api_keys (team_id, created_at, id);

-- The latest revocation of a user in a team: tokens issued before it no longer count.
CREATE TABLE member_revocations (
    team_id    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    revoked_at TEXT NOT NULL,
    revoked_by TEXT NOT NULL,
    PRIMARY KEY (team_id, user_id)
);

-- One version counter per team: every pattern change takes the next value, inside the
-- transaction that writes the pattern.
CREATE TABLE pattern_versions (
    team_id TEXT PRIMARY KEY NOT NULL,
    version INTEGER NOT NULL
);

-- Patterns and tombstones (deleted = 1, content 'null').
CREATE TABLE patterns (
    team_id    TEXT NOT NULL,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    content    TEXT NOT NULL CHECK (json_valid(content)),
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    PRIMARY KEY (team_id, name)
);
-- The change feed: `?since_version=V`.
CREATE INDEX patterns_team_version ON patterns (team_id, version);
