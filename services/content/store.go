package content

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

// ErrNotFound is a template, or a version of it, that the workspace does
// not have.
var ErrNotFound = errors.New("template not found")

// ErrChannelChanged is an update that would change a template's channel.
var ErrChannelChanged = errors.New("a template's channel cannot change")

// Store keeps templates and their versions in PostgreSQL (schema:
// Migrations). Every query is scoped by workspace.
type Store struct{ pool *pgxpool.Pool }

// NewStore returns a Store over pool.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// definition is what a version stores: t without its server-set fields.
func definition(t *contentv1.Template) ([]byte, error) {
	d := proto.CloneOf(t)
	d.WorkspaceId, d.TemplateId, d.Version, d.CreateTime = "", "", 0, nil
	return protojson.Marshal(d)
}

// create stores t as version 1 of a new template and returns it as stored.
func (s *Store) create(ctx context.Context, ws string, t *contentv1.Template) (*contentv1.Template, error) {
	def, err := definition(t)
	if err != nil {
		return nil, err
	}
	id := uuid.New().String()
	out := proto.CloneOf(t)
	out.WorkspaceId, out.TemplateId, out.Version = ws, id, 1
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO content_templates (workspace_id, template_id, name, channel, latest_version)
			VALUES ($1, $2, $3, $4, 1)`, ws, id, t.GetName(), int16(t.GetChannel())); err != nil {
			return err
		}
		return s.insertVersion(ctx, tx, out, def)
	})
	if err != nil {
		return nil, fmt.Errorf("create template: %w", err)
	}
	return out, nil
}

func (s *Store) insertVersion(ctx context.Context, tx pgx.Tx, t *contentv1.Template, def []byte) error {
	var ts time.Time
	if err := tx.QueryRow(ctx, `INSERT INTO content_template_versions (workspace_id, template_id, version, definition)
		VALUES ($1, $2, $3, $4) RETURNING create_time`, t.GetWorkspaceId(), t.GetTemplateId(), t.GetVersion(), def).Scan(&ts); err != nil {
		return err
	}
	t.CreateTime = timestamppb.New(ts)
	return nil
}

// update stores t as the next version of its template. The row lock on
// the template serializes concurrent updates, so versions have no gaps.
func (s *Store) update(ctx context.Context, ws string, t *contentv1.Template) (*contentv1.Template, error) {
	def, err := definition(t)
	if err != nil {
		return nil, err
	}
	out := proto.CloneOf(t)
	out.WorkspaceId = ws
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var channel int16
		err := tx.QueryRow(ctx, `SELECT channel FROM content_templates WHERE workspace_id = $1 AND template_id = $2 FOR UPDATE`,
			ws, t.GetTemplateId()).Scan(&channel)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if contentv1.Channel(channel) != t.GetChannel() {
			return ErrChannelChanged
		}
		if err := tx.QueryRow(ctx, `UPDATE content_templates SET latest_version = latest_version + 1, name = $3, update_time = now()
			WHERE workspace_id = $1 AND template_id = $2 RETURNING latest_version`, ws, t.GetTemplateId(), t.GetName()).Scan(&out.Version); err != nil {
			return err
		}
		return s.insertVersion(ctx, tx, out, def)
	})
	if err != nil {
		return nil, fmt.Errorf("update template: %w", err)
	}
	return out, nil
}

// latestVersion returns the latest version number of a template.
func (s *Store) latestVersion(ctx context.Context, ws, id string) (int32, error) {
	if _, err := uuid.Parse(id); err != nil {
		return 0, ErrNotFound
	}
	var v int32
	err := s.pool.QueryRow(ctx, `SELECT latest_version FROM content_templates WHERE workspace_id = $1 AND template_id = $2`, ws, id).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("read template: %w", err)
	}
	return v, nil
}

// get returns one version (which must be positive) of a template.
func (s *Store) get(ctx context.Context, ws, id string, version int32) (*contentv1.Template, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, ErrNotFound
	}
	var def []byte
	var ts time.Time
	err := s.pool.QueryRow(ctx, `SELECT definition, create_time FROM content_template_versions
		WHERE workspace_id = $1 AND template_id = $2 AND version = $3`, ws, id, version).Scan(&def, &ts)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read template: %w", err)
	}
	return decode(ws, id, version, def, ts)
}

func decode(ws, id string, version int32, def []byte, ts time.Time) (*contentv1.Template, error) {
	t := &contentv1.Template{}
	if err := protojson.Unmarshal(def, t); err != nil {
		return nil, fmt.Errorf("decode template %s v%d: %w", id, version, err)
	}
	t.WorkspaceId, t.TemplateId, t.Version, t.CreateTime = ws, id, version, timestamppb.New(ts)
	return t, nil
}

// list returns up to limit templates (latest versions) with ids after
// after, in id order.
func (s *Store) list(ctx context.Context, ws, after string, limit int) ([]*contentv1.Template, error) {
	rows, err := s.pool.Query(ctx, `SELECT t.template_id::text, v.version, v.definition, v.create_time
		FROM content_templates t JOIN content_template_versions v
		  ON v.workspace_id = t.workspace_id AND v.template_id = t.template_id AND v.version = t.latest_version
		WHERE t.workspace_id = $1 AND t.template_id > $2
		ORDER BY t.template_id LIMIT $3`, ws, after, limit)
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	defer rows.Close()
	var out []*contentv1.Template
	for rows.Next() {
		var id string
		var version int32
		var def []byte
		var ts time.Time
		if err := rows.Scan(&id, &version, &def, &ts); err != nil {
			return nil, fmt.Errorf("list templates: %w", err)
		}
		t, err := decode(ws, id, version, def, ts)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	return out, nil
}
