package workspace

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/whisperhq/whisper/internal/auth"
)

// Store keeps workspaces and credentials in PostgreSQL. It implements
// auth.CredentialStore.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool, whose database must have Migrations
// applied.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

var _ auth.CredentialStore = (*Store)(nil)

// CreateWorkspace creates a workspace named name.
func (s *Store) CreateWorkspace(ctx context.Context, name string) (Workspace, error) {
	if err := validateName("name", name); err != nil {
		return Workspace{}, err
	}
	var w Workspace
	err := s.pool.QueryRow(ctx,
		`INSERT INTO workspaces (name) VALUES ($1) RETURNING id, name, created_at`, name,
	).Scan(&w.ID, &w.Name, &w.CreateTime)
	if err != nil {
		return Workspace{}, fmt.Errorf("create workspace: %w", err)
	}
	return w, nil
}

// GetWorkspace returns the workspace id.
func (s *Store) GetWorkspace(ctx context.Context, id string) (Workspace, error) {
	id, err := parseID("workspace_id", id)
	if err != nil {
		return Workspace{}, err
	}
	var w Workspace
	err = s.pool.QueryRow(ctx,
		`SELECT id, name, created_at FROM workspaces WHERE id = $1`, id,
	).Scan(&w.ID, &w.Name, &w.CreateTime)
	if errors.Is(err, pgx.ErrNoRows) {
		return Workspace{}, fmt.Errorf("workspace %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Workspace{}, fmt.Errorf("get workspace %s: %w", id, err)
	}
	return w, nil
}

// ListWorkspaces returns workspaces oldest first, pageSize at a time (100
// when zero, at most 1000), from the position pageToken names (the first
// page when empty). nextPageToken is empty on the last page.
//
// Pages are keyed by (created_at, id), not by offset, so a page costs the
// same wherever it is and workspaces created meanwhile are neither skipped
// nor repeated.
func (s *Store) ListWorkspaces(ctx context.Context, pageSize int, pageToken string) (workspaces []Workspace, nextPageToken string, err error) {
	switch {
	case pageSize < 0:
		return nil, "", &FieldError{Field: "page_size", Problem: "must not be negative"}
	case pageSize == 0:
		pageSize = defaultPageSize
	case pageSize > maxPageSize:
		pageSize = maxPageSize
	}
	var rows pgx.Rows
	if pageToken == "" {
		rows, err = s.pool.Query(ctx,
			`SELECT id, name, created_at FROM workspaces ORDER BY created_at, id LIMIT $1`, pageSize+1)
	} else {
		after, afterID, perr := decodePageToken(pageToken)
		if perr != nil {
			return nil, "", perr
		}
		rows, err = s.pool.Query(ctx,
			`SELECT id, name, created_at FROM workspaces
			 WHERE (created_at, id) > ($1, $2)
			 ORDER BY created_at, id LIMIT $3`, after, afterID, pageSize+1)
	}
	if err != nil {
		return nil, "", fmt.Errorf("list workspaces: %w", err)
	}
	workspaces, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Workspace, error) {
		var w Workspace
		err := row.Scan(&w.ID, &w.Name, &w.CreateTime)
		return w, err
	})
	if err != nil {
		return nil, "", fmt.Errorf("list workspaces: %w", err)
	}
	if len(workspaces) > pageSize {
		workspaces = workspaces[:pageSize]
		last := workspaces[len(workspaces)-1]
		nextPageToken = encodePageToken(last.CreateTime, last.ID)
	}
	return workspaces, nextPageToken, nil
}

// Page tokens are opaque to clients: a version byte, the last row's
// created_at in Unix microseconds (PostgreSQL's precision, so the position
// is exact) and its id.
const pageTokenVersion = 1

func encodePageToken(created time.Time, id string) string {
	b := make([]byte, 0, 1+8+16)
	b = append(b, pageTokenVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(created.UnixMicro()))
	u := uuid.MustParse(id) // read from the database
	b = append(b, u[:]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(token string) (time.Time, string, error) {
	invalid := &FieldError{Field: "page_token", Problem: "not a page token from a previous response"}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(b) != 1+8+16 || b[0] != pageTokenVersion {
		return time.Time{}, "", invalid
	}
	created := time.UnixMicro(int64(binary.BigEndian.Uint64(b[1:9])))
	id, err := uuid.FromBytes(b[9:])
	if err != nil {
		return time.Time{}, "", invalid
	}
	return created, id.String(), nil
}

// credentialKind says where a kind of credential lives and how the API
// names it.
type credentialKind struct {
	table   string // a constant, never input
	prefix  string // of its secrets
	noun    string
	idField string
}

var (
	writeKeys = credentialKind{table: "write_keys", prefix: auth.WriteKeyPrefix, noun: "write key", idField: "write_key_id"}
	apiTokens = credentialKind{table: "api_tokens", prefix: auth.APITokenPrefix, noun: "API token", idField: "api_token_id"}
)

// CreateWriteKey issues a write key for workspace workspaceID. The secret
// is returned once and not stored.
func (s *Store) CreateWriteKey(ctx context.Context, workspaceID, name string) (Credential, string, error) {
	return s.createCredential(ctx, writeKeys, workspaceID, name)
}

// ListWriteKeys returns the write keys of workspaceID, revoked ones
// included, oldest first.
func (s *Store) ListWriteKeys(ctx context.Context, workspaceID string) ([]Credential, error) {
	return s.listCredentials(ctx, writeKeys, workspaceID)
}

// RevokeWriteKey revokes write key keyID of workspace workspaceID.
// Revoking a revoked key succeeds and keeps its first revocation time.
func (s *Store) RevokeWriteKey(ctx context.Context, workspaceID, keyID string) (Credential, error) {
	return s.revokeCredential(ctx, writeKeys, workspaceID, keyID)
}

// CreateAPIToken issues an API token for workspace workspaceID. The
// secret is returned once and not stored.
func (s *Store) CreateAPIToken(ctx context.Context, workspaceID, name string) (Credential, string, error) {
	return s.createCredential(ctx, apiTokens, workspaceID, name)
}

// ListAPITokens returns the API tokens of workspaceID, revoked ones
// included, oldest first.
func (s *Store) ListAPITokens(ctx context.Context, workspaceID string) ([]Credential, error) {
	return s.listCredentials(ctx, apiTokens, workspaceID)
}

// RevokeAPIToken revokes API token tokenID of workspace workspaceID.
// Revoking a revoked token succeeds and keeps its first revocation time.
func (s *Store) RevokeAPIToken(ctx context.Context, workspaceID, tokenID string) (Credential, error) {
	return s.revokeCredential(ctx, apiTokens, workspaceID, tokenID)
}

// LookupWriteKey returns the workspace of the valid write key whose
// secret has digest hash, or auth.ErrUnknownCredential.
func (s *Store) LookupWriteKey(ctx context.Context, hash []byte) (string, error) {
	if len(hash) != sha256.Size {
		return "", auth.ErrUnknownCredential
	}
	var workspaceID string
	err := s.pool.QueryRow(ctx,
		`SELECT workspace_id FROM write_keys WHERE hash = $1 AND revoked_at IS NULL`, hash,
	).Scan(&workspaceID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", auth.ErrUnknownCredential
	}
	if err != nil {
		return "", fmt.Errorf("look up write key: %w", err)
	}
	return workspaceID, nil
}

// LookupAPIToken returns the workspace and id of the valid API token whose
// secret has digest hash, or auth.ErrUnknownCredential.
func (s *Store) LookupAPIToken(ctx context.Context, hash []byte) (workspaceID, tokenID string, err error) {
	if len(hash) != sha256.Size {
		return "", "", auth.ErrUnknownCredential
	}
	err = s.pool.QueryRow(ctx,
		`SELECT workspace_id, id FROM api_tokens WHERE hash = $1 AND revoked_at IS NULL`, hash,
	).Scan(&workspaceID, &tokenID)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", auth.ErrUnknownCredential
	}
	if err != nil {
		return "", "", fmt.Errorf("look up API token: %w", err)
	}
	return workspaceID, tokenID, nil
}

const credentialColumns = `id, workspace_id, name, prefix, hash, created_at, revoked_at`

func scanCredential(row pgx.Row) (Credential, error) {
	var c Credential
	var revoked *time.Time
	if err := row.Scan(&c.ID, &c.WorkspaceID, &c.Name, &c.Prefix, &c.hash, &c.CreateTime, &revoked); err != nil {
		return Credential{}, err
	}
	if revoked != nil {
		c.RevokeTime = *revoked
	}
	return c, nil
}

func (s *Store) createCredential(ctx context.Context, kind credentialKind, workspaceID, name string) (Credential, string, error) {
	workspaceID, err := parseID("workspace_id", workspaceID)
	if err != nil {
		return Credential{}, "", err
	}
	if err := validateName("name", name); err != nil {
		return Credential{}, "", err
	}
	secret, err := auth.NewSecret(kind.prefix)
	if err != nil {
		return Credential{}, "", fmt.Errorf("create %s: %w", kind.noun, err)
	}
	c, err := s.insertCredential(ctx, kind, workspaceID, name, secret)
	if err != nil {
		return Credential{}, "", err
	}
	return c, secret, nil
}

// insertCredential stores the digest of secret as a credential of
// workspaceID, which must exist.
func (s *Store) insertCredential(ctx context.Context, kind credentialKind, workspaceID, name, secret string) (Credential, error) {
	// Inserting from a SELECT makes a missing workspace a missing row,
	// not a foreign-key violation to decode.
	c, err := scanCredential(s.pool.QueryRow(ctx,
		`INSERT INTO `+kind.table+` (workspace_id, name, prefix, hash)
		 SELECT id, $2, $3, $4 FROM workspaces WHERE id = $1
		 RETURNING `+credentialColumns,
		workspaceID, name, auth.SecretPrefix(secret), auth.HashSecret(secret)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Credential{}, fmt.Errorf("workspace %s: %w", workspaceID, ErrNotFound)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("create %s: %w", kind.noun, err)
	}
	return c, nil
}

func (s *Store) listCredentials(ctx context.Context, kind credentialKind, workspaceID string) ([]Credential, error) {
	workspaceID, err := parseID("workspace_id", workspaceID)
	if err != nil {
		return nil, err
	}
	// One statement, so that "no such workspace" and "no credentials" are
	// told apart consistently: the workspace row is always there when it
	// exists, with NULLs when it has no credentials.
	rows, err := s.pool.Query(ctx,
		`SELECT k.id, w.id, k.name, k.prefix, k.hash, k.created_at, k.revoked_at
		 FROM workspaces w LEFT JOIN `+kind.table+` k ON k.workspace_id = w.id
		 WHERE w.id = $1
		 ORDER BY k.created_at, k.id`, workspaceID)
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", kind.noun, err)
	}
	found := false
	creds, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Credential, error) {
		found = true
		var (
			id, name, prefix *string
			created, revoked *time.Time
			c                Credential
		)
		if err := row.Scan(&id, &c.WorkspaceID, &name, &prefix, &c.hash, &created, &revoked); err != nil {
			return nil, err
		}
		if id == nil {
			return nil, nil // the workspace, without credentials
		}
		c.ID, c.Name, c.Prefix, c.CreateTime = *id, *name, *prefix, *created
		if revoked != nil {
			c.RevokeTime = *revoked
		}
		return &c, nil
	})
	if err != nil {
		return nil, fmt.Errorf("list %ss: %w", kind.noun, err)
	}
	if !found {
		return nil, fmt.Errorf("workspace %s: %w", workspaceID, ErrNotFound)
	}
	out := make([]Credential, 0, len(creds))
	for _, c := range creds {
		if c != nil {
			out = append(out, *c)
		}
	}
	return out, nil
}

func (s *Store) revokeCredential(ctx context.Context, kind credentialKind, workspaceID, id string) (Credential, error) {
	workspaceID, err := parseID("workspace_id", workspaceID)
	if err != nil {
		return Credential{}, err
	}
	id, err = parseID(kind.idField, id)
	if err != nil {
		return Credential{}, err
	}
	c, err := scanCredential(s.pool.QueryRow(ctx,
		`UPDATE `+kind.table+` SET revoked_at = coalesce(revoked_at, now())
		 WHERE id = $1 AND workspace_id = $2
		 RETURNING `+credentialColumns, id, workspaceID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Credential{}, fmt.Errorf("%s %s in workspace %s: %w", kind.noun, id, workspaceID, ErrNotFound)
	}
	if err != nil {
		return Credential{}, fmt.Errorf("revoke %s %s: %w", kind.noun, id, err)
	}
	return c, nil
}
