-- Campaigns, decisions, pending waits, consent and the profile snapshots
-- the decide target evaluates audiences against.

-- +goose Up
-- A campaign's current status and a copy of its latest version, with the
-- trigger denormalized so that matching a trigger is one indexed lookup.
CREATE TABLE campaigns (
    workspace_id   uuid        NOT NULL,
    campaign_id    uuid        NOT NULL,
    -- Creation order, for listing.
    seq            bigserial   NOT NULL,
    status         text        NOT NULL CHECK (status IN ('draft', 'active', 'paused')),
    version        int         NOT NULL,
    -- 'event' or 'profile_change'.
    trigger_kind   text        NOT NULL,
    -- The event trigger's event name; NULL for profile-change triggers.
    trigger_event  text,
    -- The goal event name; NULL when none.
    goal_event     text,
    -- Every event name any version waits for, exits on or converts on:
    -- an event of another name cannot end a wait or convert a decision of
    -- the campaign, so the consumer skips those reads for it.
    event_names    text[]      NOT NULL DEFAULT '{}',
    -- whisper.campaign.v1.Campaign of the latest version (without status).
    definition     bytea       NOT NULL,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, campaign_id)
);

CREATE UNIQUE INDEX campaigns_seq_idx ON campaigns (workspace_id, seq);

-- Every version ever made, immutable: a decision names the one it used.
CREATE TABLE campaign_versions (
    workspace_id uuid        NOT NULL,
    campaign_id  uuid        NOT NULL,
    version      int         NOT NULL,
    definition   bytea       NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, campaign_id, version),
    FOREIGN KEY (workspace_id, campaign_id) REFERENCES campaigns (workspace_id, campaign_id) ON DELETE CASCADE
);

-- One row per (campaign, trigger): the unique key is what makes a trigger
-- delivered twice decide once. A row starts as 'waiting' when the campaign
-- has a wait and is completed when the wait ends. published_at is the
-- transactional outbox: NULL until the record is on whisper.decisions.
CREATE TABLE decisions (
    workspace_id       uuid        NOT NULL,
    decision_id        uuid        NOT NULL,
    -- Insertion order, for listing newest first.
    seq                bigserial   NOT NULL,
    campaign_id        uuid        NOT NULL,
    campaign_version   int         NOT NULL,
    user_id            text        NOT NULL,
    trigger_id         text        NOT NULL,
    outcome            text        NOT NULL,
    variant_id         text        NOT NULL DEFAULT '',
    decided_at         timestamptz NOT NULL,
    -- For conversions: the goal event and the end of its window, set only
    -- on decisions that sent a message of a campaign with a goal.
    goal_event         text,
    goal_deadline      timestamptz,
    converted_at       timestamptz,
    -- whisper.decision.v1.Decision, steps included.
    record             bytea       NOT NULL,
    published_at       timestamptz,
    PRIMARY KEY (workspace_id, decision_id),
    UNIQUE (workspace_id, campaign_id, trigger_id)
);

CREATE UNIQUE INDEX decisions_seq_idx ON decisions (seq);
CREATE INDEX decisions_user_idx ON decisions (workspace_id, user_id, seq);
CREATE INDEX decisions_campaign_idx ON decisions (workspace_id, campaign_id, seq);
CREATE INDEX decisions_goal_idx ON decisions (workspace_id, user_id, goal_event) WHERE goal_event IS NOT NULL AND converted_at IS NULL;
CREATE INDEX decisions_unpublished_idx ON decisions (decided_at) WHERE published_at IS NULL AND outcome <> 'waiting';

-- Decisions held by a wait. The decisions row (outcome 'waiting') is the
-- claim on the trigger; this row says when and on what the wait ends.
CREATE TABLE waits (
    workspace_id     uuid        NOT NULL,
    decision_id      uuid        NOT NULL,
    user_id          text        NOT NULL,
    due_at           timestamptz NOT NULL,
    -- Ends the wait early with a decision; NULL when the wait is a delay.
    wait_for_event   text,
    exit_events      text[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (workspace_id, decision_id),
    FOREIGN KEY (workspace_id, decision_id) REFERENCES decisions (workspace_id, decision_id) ON DELETE CASCADE
);

CREATE INDEX waits_due_idx ON waits (due_at);
CREATE INDEX waits_user_idx ON waits (workspace_id, user_id);

-- Subscriptions from "Subscribed"/"Unsubscribed" track events. topic ''
-- is the whole channel. The latest event time wins.
CREATE TABLE consent (
    workspace_id uuid        NOT NULL,
    user_id      text        NOT NULL,
    channel      text        NOT NULL,
    topic        text        NOT NULL,
    subscribed   boolean     NOT NULL,
    event_time   timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id, channel, topic)
);

-- The latest profile of each user from whisper.profiles, for evaluating
-- audiences on event triggers.
CREATE TABLE profile_snapshots (
    workspace_id uuid        NOT NULL,
    user_id      text        NOT NULL,
    -- whisper.profile.v1.Profile
    profile      bytea       NOT NULL,
    change_time  timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

-- +goose Down
DROP TABLE profile_snapshots;
DROP TABLE consent;
DROP TABLE waits;
DROP TABLE decisions;
DROP TABLE campaign_versions;
DROP TABLE campaigns;
