package workspace

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/whisperhq/whisper/internal/auth"
)

// BootstrapOptions says what `whisper dev` wants to find on start.
type BootstrapOptions struct {
	// WorkspaceName names the workspace to find or create; "demo" when
	// empty. The oldest workspace with this name is used.
	WorkspaceName string
	// WriteKey pins the write key's secret (WHISPER_DEV_WRITE_KEY): its
	// digest is registered for the workspace, and stays valid across
	// restarts even if it was revoked meanwhile. Empty issues a new key.
	WriteKey string
	// APIToken pins a workspace API token's secret the same way. Empty
	// issues a new token.
	APIToken string
}

// BootstrapResult is what `whisper dev` prints.
type BootstrapResult struct {
	Workspace Workspace
	// WorkspaceCreated is false when the workspace already existed.
	WorkspaceCreated bool
	WriteKey         Credential
	WriteKeySecret   string
	APIToken         Credential
	APITokenSecret   string
}

// Bootstrap ensures the development workspace exists with a write key and
// an API token whose secrets it returns. It is idempotent for pinned
// secrets: restarting with the same options registers nothing new.
// Unpinned secrets cannot be shown again, so each call issues new ones;
// earlier ones stay valid.
//
// Bootstrap is for development only: production workspaces are created
// through WorkspaceService with the admin token.
func Bootstrap(ctx context.Context, store *Store, opts BootstrapOptions) (BootstrapResult, error) {
	name := opts.WorkspaceName
	if name == "" {
		name = "demo"
	}
	if err := validateName("workspace name", name); err != nil {
		return BootstrapResult{}, fmt.Errorf("bootstrap: %w", err)
	}
	for _, pin := range []struct{ what, secret string }{
		{"write key", opts.WriteKey},
		{"API token", opts.APIToken},
	} {
		if err := validatePinnedSecret(pin.secret); err != nil {
			return BootstrapResult{}, fmt.Errorf("bootstrap: pinned %s: %w", pin.what, err)
		}
	}
	if opts.WriteKey != "" && opts.WriteKey == opts.APIToken {
		// A write key ships inside web pages and apps; it must not also
		// open the management APIs.
		return BootstrapResult{}, errors.New("bootstrap: the pinned write key and API token must differ")
	}

	var res BootstrapResult
	var err error
	res.Workspace, res.WorkspaceCreated, err = store.ensureWorkspace(ctx, name)
	if err != nil {
		return BootstrapResult{}, fmt.Errorf("bootstrap: %w", err)
	}
	res.WriteKey, res.WriteKeySecret, err = store.ensureCredential(ctx, writeKeys, res.Workspace.ID, opts.WriteKey)
	if err != nil {
		return BootstrapResult{}, fmt.Errorf("bootstrap: %w", err)
	}
	res.APIToken, res.APITokenSecret, err = store.ensureCredential(ctx, apiTokens, res.Workspace.ID, opts.APIToken)
	if err != nil {
		return BootstrapResult{}, fmt.Errorf("bootstrap: %w", err)
	}
	return res, nil
}

// validatePinnedSecret accepts what can travel as a Basic-auth user name
// and a bearer token: printable ASCII without spaces or colons.
func validatePinnedSecret(s string) error {
	if len(s) > 512 {
		return errors.New("longer than 512 characters")
	}
	for i := range len(s) {
		if c := s[i]; c <= ' ' || c > '~' || c == ':' {
			return fmt.Errorf("character %d is not printable ASCII other than space and ':'", i+1)
		}
	}
	return nil
}

// ensureWorkspace returns the oldest workspace named name, creating it if
// there is none. An advisory lock keeps two starting processes from
// creating two.
func (s *Store) ensureWorkspace(ctx context.Context, name string) (w Workspace, created bool, err error) {
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('whisper.workspace.bootstrap:' || $1, 0))`, name); err != nil {
			return err
		}
		err := tx.QueryRow(ctx,
			`SELECT id, name, created_at FROM workspaces WHERE name = $1 ORDER BY created_at, id LIMIT 1`, name,
		).Scan(&w.ID, &w.Name, &w.CreateTime)
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		created = true
		return tx.QueryRow(ctx,
			`INSERT INTO workspaces (name) VALUES ($1) RETURNING id, name, created_at`, name,
		).Scan(&w.ID, &w.Name, &w.CreateTime)
	})
	if err != nil {
		return Workspace{}, false, fmt.Errorf("ensure workspace %q: %w", name, err)
	}
	return w, created, nil
}

// ensureCredential registers secret for workspaceID, or issues a new
// credential when secret is empty.
func (s *Store) ensureCredential(ctx context.Context, kind credentialKind, workspaceID, secret string) (Credential, string, error) {
	const name = "whisper dev"
	if secret == "" {
		return s.createCredential(ctx, kind, workspaceID, name)
	}
	// Re-registering the same secret for the same workspace revives it;
	// the WHERE makes a secret of another workspace no row instead.
	c, err := scanCredential(s.pool.QueryRow(ctx,
		`INSERT INTO `+kind.table+` (workspace_id, name, prefix, hash) VALUES ($1, $2, $3, $4)
		 ON CONFLICT (hash) DO UPDATE SET revoked_at = NULL
		 WHERE `+kind.table+`.workspace_id = EXCLUDED.workspace_id
		 RETURNING `+credentialColumns,
		workspaceID, name, auth.SecretPrefix(secret), auth.HashSecret(secret)))
	if errors.Is(err, pgx.ErrNoRows) {
		return Credential{}, "", fmt.Errorf("pinned %s is already registered for another workspace", kind.noun)
	}
	if err != nil {
		return Credential{}, "", fmt.Errorf("register pinned %s: %w", kind.noun, err)
	}
	return c, secret, nil
}
