-- The transactional outbox of whisper.decisions as a narrow table of its
-- own: a row per final decision not yet acknowledged by the broker,
-- inserted in the transaction that makes the decision and deleted once the
-- record is acknowledged. Marking decisions published in place rewrote each
-- decision row (a new tuple in every index of a wide table) just to say it
-- had been produced.

-- +goose Up
-- No index on decided_at: the table holds only what the publishers have
-- not had acknowledged yet (normally a few hundred milliseconds' worth),
-- and every index would cost each decision an insert and a delete more.
-- No foreign key either: decisions are never deleted, and its check would
-- be one more lookup per decision.
CREATE TABLE decision_outbox (
    workspace_id uuid        NOT NULL,
    decision_id  uuid        NOT NULL,
    -- The decision's decided_at: the sweeper publishes only rows old
    -- enough that their own publisher has given up.
    decided_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, decision_id)
);

INSERT INTO decision_outbox (workspace_id, decision_id, decided_at)
SELECT workspace_id, decision_id, decided_at FROM decisions
WHERE published_at IS NULL AND outcome <> 'waiting';

-- decisions.published_at is no longer written (nothing reads it); the
-- column stays so that replicas of the previous version, which write it,
-- keep working during a rolling upgrade.
DROP INDEX decisions_unpublished_idx;

-- Deciding a batch first looks its triggers up in decisions by
-- (workspace, campaign, trigger id): the unique index. On a table not yet
-- analyzed the planner rates the campaign index, whose prefix is the same,
-- as cheap, and scans every decision of the campaign for each trigger.
-- Made partial on a predicate only the listing states (seq > 0 holds for
-- every row), it is not a candidate for the lookup whatever the
-- statistics say.
DROP INDEX decisions_campaign_idx;
CREATE INDEX decisions_campaign_idx ON decisions (workspace_id, campaign_id, seq) WHERE seq > 0;

-- +goose Down
DROP INDEX decisions_campaign_idx;
CREATE INDEX decisions_campaign_idx ON decisions (workspace_id, campaign_id, seq);
-- What left the outbox was published.
UPDATE decisions d SET published_at = now()
WHERE published_at IS NULL AND outcome <> 'waiting'
  AND NOT EXISTS (SELECT 1 FROM decision_outbox o WHERE o.workspace_id = d.workspace_id AND o.decision_id = d.decision_id);
CREATE INDEX decisions_unpublished_idx ON decisions (decided_at) WHERE published_at IS NULL AND outcome <> 'waiting';
DROP TABLE decision_outbox;
