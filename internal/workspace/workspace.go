// Package workspace owns workspaces, the tenants of Whisper, and their
// credentials: write keys for ingestion and API tokens for the management
// APIs. It stores them in PostgreSQL (Store), serves WorkspaceService
// (Handler) and sets up the demo workspace of `whisper dev` (Bootstrap).
//
// Every other component trusts the workspace id that auth resolves from a
// credential, so this package is where tenant isolation starts: a
// credential's secret is shown once and stored only as a digest, and a
// workspace API token can reach nothing outside its own workspace.
package workspace

import (
	"embed"
	"errors"
	"io/fs"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/postgres"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is this package's schema; apply it with postgres.Migrate
// before using a Store.
var Migrations = postgres.Migrations{Name: "workspace", FS: mustSub(migrationFiles, "migrations")}

func mustSub(fsys fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(err) // dir is a literal that go:embed has checked
	}
	return sub
}

// Workspace is one tenant.
type Workspace struct {
	ID         string
	Name       string
	CreateTime time.Time
}

// Credential is a write key or API token, without its secret.
type Credential struct {
	ID          string
	WorkspaceID string
	Name        string
	// Prefix is the start of the secret, to recognise it by.
	Prefix     string
	CreateTime time.Time
	// RevokeTime is zero while the credential is valid.
	RevokeTime time.Time

	// hash is the digest of the secret, which a revocation needs to drop
	// the credential from authentication caches.
	hash []byte
}

// ErrNotFound is returned for a workspace or credential that does not
// exist (or, for a credential, is not in the given workspace).
var ErrNotFound = errors.New("not found")

// FieldError is a caller's mistake in one input field.
type FieldError struct {
	// Field is the input's name as the API spells it, e.g. "workspace_id".
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Limits of the API.
const (
	maxNameLen      = 200
	defaultPageSize = 100
	maxPageSize     = 1000
)

// parseID returns the canonical form of a UUID, or a FieldError naming
// field. Only the canonical 36-character form is accepted, in either case,
// so every id has one spelling in comparisons.
func parseID(field, id string) (string, error) {
	if len(id) != 36 {
		return "", &FieldError{Field: field, Problem: "not a valid id"}
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return "", &FieldError{Field: field, Problem: "not a valid id"}
	}
	return u.String(), nil
}

// validateName checks a display name: 1-200 characters, not all blank, no
// control characters (names end up in logs, terminals and dashboards).
func validateName(field, name string) error {
	n := utf8.RuneCountInString(name)
	if !utf8.ValidString(name) || n < 1 || n > maxNameLen || strings.TrimSpace(name) == "" {
		return &FieldError{Field: field, Problem: "must be 1-200 characters"}
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return &FieldError{Field: field, Problem: "must not contain control characters"}
	}
	return nil
}
