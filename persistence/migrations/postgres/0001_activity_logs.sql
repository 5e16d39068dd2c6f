-- activity_logs: the team activity log (PROTOCOL.md section 7). Reporting tools and the
-- teams' own backends read this table directly, so its shape is part of the public
-- contract and must match migrations/sqlite/0001_activity_logs.sql column for column.
--
-- id is a UUID v7 (time-ordered) generated once when the event is created; a retried
-- write reuses it, so the primary key makes the retry a no-op
-- (INSERT ... ON CONFLICT (id) DO NOTHING).
CREATE TABLE activity_logs (
    id            UUID PRIMARY KEY,
    team_id       TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource_type TEXT NULL,
    resource_id   TEXT NULL,
    metadata      JSONB NOT NULL DEFAULT '{}'::jsonb,
    ip_address    INET NULL,
    user_agent    TEXT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);

-- "Activity of a team, newest first" (the admin activity page and its exports).
CREATE INDEX activity_logs_team_time
    ON activity_logs (team_id, created_at DESC, id DESC);

-- The same filtered by user (`?user=`).
CREATE INDEX activity_logs_team_user_time
    ON activity_logs (team_id, user_id, created_at DESC, id DESC);
