-- activity_logs: the team activity log (PROTOCOL.md section 7). Reporting tools and the
-- teams' own backends read this table directly, so its shape is part of the public
-- contract and must match migrations/postgres/0001_activity_logs.sql column for column.
--
-- SQLite has no uuid, inet or timestamptz types, so this file fixes their text encodings:
--   id          lower-case hyphenated UUID v7, e.g. '01890a5d-ac96-774b-bcce-b302099a8057'.
--               v7 ids are time-ordered, and a retry reuses the id, so the primary key
--               is what makes a retried write a no-op (INSERT ... ON CONFLICT(id) DO NOTHING).
--   metadata    JSON text, stored verbatim as published.
--   ip_address  textual IPv4 or IPv6 address ('203.0.113.7', '2001:db8::1').
--   created_at  UTC, fixed width 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (always 27 characters,
--               microseconds, literal Z), e.g. '2025-01-31T09:05:03.000120Z'. Fixed width
--               makes text order equal time order, so ORDER BY created_at and range
--               filters work on the index. The CHECK keeps other writers to that format.
CREATE TABLE activity_logs (
    id            TEXT PRIMARY KEY NOT NULL,
    team_id       TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT,
    resource_id   TEXT,
    metadata      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    ip_address    TEXT,
    user_agent    TEXT,
    created_at    TEXT NOT NULL CHECK (
        created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'
    )
);

-- "Activity of a team, newest first" (the admin activity page and its exports).
CREATE INDEX activity_logs_team_time
    ON activity_logs (team_id, created_at DESC, id DESC);

-- The same filtered by user (`?user=`).
CREATE INDEX activity_logs_team_user_time
    ON activity_logs (team_id, user_id, created_at DESC, id DESC);
