-- Rolling features, lifecycle stages, scores and the whisper.profiles
-- outbox.
--
-- daily holds the profile's activity of the last 28 UTC days: day number
-- (days since 1970-01-01) -> {"all": events of any kind, "names": {track
-- event name -> count}}. It is merged on alias like event_counts and is
-- covered by the same idempotence (profile_applied_messages); Redis only
-- mirrors it. version grows by one on every write of the row, so that a
-- late mirror write can never replace a newer one.

-- +goose Up
ALTER TABLE profiles
    ADD COLUMN daily            jsonb            NOT NULL DEFAULT '{}',
    ADD COLUMN version          bigint           NOT NULL DEFAULT 0,
    ADD COLUMN stage            text             NOT NULL DEFAULT 'new',
    ADD COLUMN stage_time       timestamptz,
    ADD COLUMN engagement_score integer          NOT NULL DEFAULT 0,
    ADD COLUMN churn_risk       double precision NOT NULL DEFAULT 0,
    -- The ScoreInputs (protojson) the stage and scores were computed from.
    ADD COLUMN score_inputs     jsonb            NOT NULL DEFAULT '{}',
    -- When the stage or score band would next change by the passage of
    -- time alone; NULL when never. The sweeper recomputes due profiles.
    ADD COLUMN stage_due_at     timestamptz;

-- Rows that exist already are due at once: the sweeper gives them a stage.
UPDATE profiles SET stage_due_at = 'epoch';

CREATE INDEX profiles_stage_due_idx ON profiles (stage_due_at) WHERE stage_due_at IS NOT NULL;

-- Per-workspace lifecycle rules; a workspace without a row uses the
-- defaults documented in the profiles package.
CREATE TABLE profiles_lifecycle_rules (
    workspace_id        uuid             PRIMARY KEY,
    activation_event    text             NOT NULL,
    new_days            integer          NOT NULL,
    engaged_active_days integer          NOT NULL,
    at_risk_idle_days   integer          NOT NULL,
    at_risk_trend       double precision NOT NULL,
    dormant_idle_days   integer          NOT NULL,
    churned_idle_days   integer          NOT NULL,
    updated_at          timestamptz      NOT NULL DEFAULT now()
);

-- Changes to publish on whisper.profiles, written in the transaction that
-- makes them and deleted once the broker has acknowledged them. id orders
-- them: a profile's rows are inserted under its row lock, so its changes
-- are numbered (and so produced) in commit order.
CREATE TABLE profile_outbox (
    id         bigserial   PRIMARY KEY,
    change_id  uuid        NOT NULL,
    key        bytea       NOT NULL,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE profile_outbox;
DROP TABLE profiles_lifecycle_rules;
DROP INDEX profiles_stage_due_idx;
ALTER TABLE profiles
    DROP COLUMN daily, DROP COLUMN version, DROP COLUMN stage, DROP COLUMN stage_time,
    DROP COLUMN engagement_score, DROP COLUMN churn_risk, DROP COLUMN score_inputs, DROP COLUMN stage_due_at;
