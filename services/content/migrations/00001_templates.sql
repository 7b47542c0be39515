-- +goose Up
-- One row per template: its channel (fixed) and latest version.
CREATE TABLE content_templates (
    workspace_id   uuid        NOT NULL,
    template_id    uuid        NOT NULL,
    name           text        NOT NULL,
    channel        smallint    NOT NULL,
    latest_version integer     NOT NULL,
    create_time    timestamptz NOT NULL DEFAULT now(),
    update_time    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, template_id)
);

-- Every version, immutable once written: the definition is the
-- whisper.content.v1.Template as protojson, without its server-set fields.
CREATE TABLE content_template_versions (
    workspace_id uuid        NOT NULL,
    template_id  uuid        NOT NULL,
    version      integer     NOT NULL CHECK (version > 0),
    definition   jsonb       NOT NULL,
    create_time  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace_id, template_id, version),
    FOREIGN KEY (workspace_id, template_id) REFERENCES content_templates ON DELETE CASCADE
);

-- +goose Down
DROP TABLE content_template_versions;
DROP TABLE content_templates;
