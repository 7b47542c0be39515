-- Workspaces and their credentials. Secrets are never stored: only their
-- SHA-256 digest (hash) and a short prefix to recognise them by.

-- +goose Up
CREATE TABLE workspaces (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- ListWorkspaces pages by (created_at, id).
CREATE INDEX workspaces_created_at_id_idx ON workspaces (created_at, id);

CREATE TABLE write_keys (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    prefix       text        NOT NULL,
    hash         bytea       NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

-- Authentication looks up valid keys by digest; the index covers the
-- answer so the lookup need not visit the table.
CREATE INDEX write_keys_valid_hash_idx ON write_keys (hash) INCLUDE (workspace_id) WHERE revoked_at IS NULL;
CREATE INDEX write_keys_workspace_idx ON write_keys (workspace_id, created_at, id);

CREATE TABLE api_tokens (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    workspace_id uuid        NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    prefix       text        NOT NULL,
    hash         bytea       NOT NULL UNIQUE CHECK (octet_length(hash) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);

CREATE INDEX api_tokens_valid_hash_idx ON api_tokens (hash) INCLUDE (workspace_id, id) WHERE revoked_at IS NULL;
CREATE INDEX api_tokens_workspace_idx ON api_tokens (workspace_id, created_at, id);

-- +goose Down
DROP TABLE api_tokens;
DROP TABLE write_keys;
DROP TABLE workspaces;
