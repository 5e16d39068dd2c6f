-- Retention (the hub deletes each team's rows older than its plan allows): the teams
-- on the default plan are swept together, oldest first, by time alone, which neither
-- team index serves.
CREATE INDEX activity_logs_time ON activity_logs (created_at);
