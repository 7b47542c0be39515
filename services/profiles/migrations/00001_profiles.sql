-- Live profiles built from whisper.events.
--
-- A profile is found through its identities: every user id and anonymous id
-- ever linked to it by identify or alias. Traits keep, per key, the event
-- time of the value they hold (trait_times) so that the latest event wins
-- whatever order events are applied in. Times inside jsonb columns are Unix
-- microseconds.

-- +goose Up
CREATE TABLE profiles (
    workspace_id     uuid        NOT NULL,
    profile_id       uuid        NOT NULL,
    -- NULL while the user is known only anonymously.
    user_id          text,
    -- key -> JSON value; a key set to null by the latest identify is absent.
    traits           jsonb       NOT NULL DEFAULT '{}',
    -- key -> event time of the value (or deletion) that traits holds.
    trait_times      jsonb       NOT NULL DEFAULT '{}',
    -- track event name -> count.
    event_counts     jsonb       NOT NULL DEFAULT '{}',
    -- track event name -> event time of the latest one.
    last_event_times jsonb       NOT NULL DEFAULT '{}',
    first_seen       timestamptz NOT NULL,
    last_seen        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, profile_id)
);

CREATE TABLE profile_identities (
    workspace_id uuid NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('user', 'anonymous')),
    id           text NOT NULL,
    profile_id   uuid NOT NULL,
    PRIMARY KEY (workspace_id, kind, id),
    FOREIGN KEY (workspace_id, profile_id) REFERENCES profiles (workspace_id, profile_id) ON DELETE CASCADE
);

-- Reading a profile lists its identities; an alias re-points them.
CREATE INDEX profile_identities_profile_idx ON profile_identities (workspace_id, profile_id);

-- Message ids already applied, so that a record delivered again (the
-- consumer is at least once) changes nothing. Rows older than the purge
-- horizon (7 days, far beyond any redelivery) are deleted periodically.
CREATE TABLE profile_applied_messages (
    workspace_id uuid        NOT NULL,
    message_id   text        NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, message_id)
);

CREATE INDEX profile_applied_messages_applied_at_idx ON profile_applied_messages (applied_at);

-- +goose Down
DROP TABLE profile_applied_messages;
DROP TABLE profile_identities;
DROP TABLE profiles;
