-- +goose Up
-- One row per decision that sends: the ledger. delivery_id is the
-- decision id, so a redelivered decision inserts nothing.
CREATE TABLE deliver_deliveries (
    delivery_id         text PRIMARY KEY,
    workspace_id        uuid NOT NULL,
    campaign_id         text NOT NULL,
    variant_id          text NOT NULL,
    user_id             text NOT NULL,
    channel             smallint NOT NULL,
    content_ref         text NOT NULL,
    topic               text NOT NULL,
    -- The decision record as consumed, for rendering and the DLQ.
    decision            bytea NOT NULL,
    -- The W3C traceparent of the decision record, so the send continues its trace.
    traceparent         text NOT NULL DEFAULT '',
    state               text NOT NULL,
    reason              text NOT NULL DEFAULT '',
    recipient           text NOT NULL DEFAULT '',
    provider_message_id text NOT NULL DEFAULT '',
    attempts            integer NOT NULL DEFAULT 0,
    send_time           timestamptz NOT NULL,
    next_attempt_at     timestamptz NOT NULL,
    -- The claim of the replica sending it: it expires, so a crashed
    -- replica's claims are taken over.
    claim_token         uuid,
    claimed_until       timestamptz,
    create_time         timestamptz NOT NULL DEFAULT now(),
    update_time         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliver_deliveries_due ON deliver_deliveries (next_attempt_at) WHERE state IN ('scheduled', 'retrying', 'sending');
CREATE INDEX deliver_deliveries_user ON deliver_deliveries (workspace_id, user_id, create_time DESC, delivery_id DESC);
CREATE INDEX deliver_deliveries_campaign ON deliver_deliveries (workspace_id, campaign_id, create_time DESC, delivery_id DESC);
CREATE INDEX deliver_deliveries_ws ON deliver_deliveries (workspace_id, create_time DESC, delivery_id DESC);

CREATE TABLE deliver_attempts (
    delivery_id text NOT NULL REFERENCES deliver_deliveries ON DELETE CASCADE,
    number      integer NOT NULL,
    start_time  timestamptz NOT NULL,
    end_time    timestamptz NOT NULL,
    result      text NOT NULL,
    code        text NOT NULL DEFAULT '',
    error       text NOT NULL DEFAULT '',
    PRIMARY KEY (delivery_id, number)
);

-- In-app inbox.
CREATE TABLE deliver_inbox (
    delivery_id  text PRIMARY KEY,
    workspace_id uuid NOT NULL,
    user_id      text NOT NULL,
    campaign_id  text NOT NULL,
    content      bytea NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    read_time    timestamptz
);
CREATE INDEX deliver_inbox_unread ON deliver_inbox (workspace_id, user_id, create_time) WHERE read_time IS NULL;

-- Records to produce (outcome events, DLQ copies), written in the
-- transaction that records the outcome and relayed after it commits.
CREATE TABLE deliver_outbox (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         bytea NOT NULL,
    value       bytea NOT NULL,
    headers     jsonb NOT NULL DEFAULT '{}',
    traceparent text NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE deliver_outbox;
DROP TABLE deliver_inbox;
DROP TABLE deliver_attempts;
DROP TABLE deliver_deliveries;
