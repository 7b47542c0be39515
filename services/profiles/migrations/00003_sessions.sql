-- Sessions: runs of events without a gap of more than 30 minutes (see the
-- package doc). session_count counts them; session_start_time is the event
-- time that started the latest one.
--
-- Rows that exist already were written before sessions were counted and
-- their event history is not kept, so they cannot be sessionized after the
-- fact: every row has had at least one event, so it gets one session,
-- started at its last event. Their next events count on from there.

-- +goose Up
ALTER TABLE profiles
    ADD COLUMN session_count      bigint      NOT NULL DEFAULT 0,
    ADD COLUMN session_start_time timestamptz;

UPDATE profiles SET session_count = 1, session_start_time = last_seen;

ALTER TABLE profiles ALTER COLUMN session_start_time SET NOT NULL;

-- +goose Down
ALTER TABLE profiles DROP COLUMN session_count, DROP COLUMN session_start_time;
