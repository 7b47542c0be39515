-- Thompson-sampling state of the decide target.
--
-- bandit_arms holds the running totals Choose reads, one row per variant of
-- a campaign. bandit_decisions records each exposed decision once, and
-- whether it converted, so that an exposure or a conversion applied again
-- (a redelivered event, a retried transaction) changes no total. Ids are
-- text because they are the caller's (workspace uuids, campaign and
-- decision ids, variant ids chosen by the operator).

-- +goose Up
CREATE TABLE bandit_arms (
    workspace_id text   NOT NULL,
    campaign_id  text   NOT NULL,
    variant_id   text   NOT NULL,
    exposures    bigint NOT NULL DEFAULT 0 CHECK (exposures >= 0),
    conversions  bigint NOT NULL DEFAULT 0 CHECK (conversions >= 0 AND conversions <= exposures),
    PRIMARY KEY (workspace_id, campaign_id, variant_id)
);

CREATE TABLE bandit_decisions (
    workspace_id text        NOT NULL,
    decision_id  text        NOT NULL,
    campaign_id  text        NOT NULL,
    variant_id   text        NOT NULL,
    exposed_at   timestamptz NOT NULL DEFAULT now(),
    -- NULL until the goal event is attributed to the decision.
    converted_at timestamptz,
    PRIMARY KEY (workspace_id, decision_id)
);

-- Prune deletes by age once attribution windows have closed.
CREATE INDEX bandit_decisions_exposed_idx ON bandit_decisions (exposed_at);

-- +goose Down
DROP TABLE bandit_decisions;
DROP TABLE bandit_arms;
