package workspace_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/whisperhq/whisper/internal/auth"
	"github.com/whisperhq/whisper/internal/workspace"
)

func TestBootstrapPinned(t *testing.T) {
	store, pool := newStore(t)
	ctx := context.Background()
	opts := workspace.BootstrapOptions{WriteKey: "dev-write-key", APIToken: "dev-api-token"}

	first, err := workspace.Bootstrap(ctx, store, opts)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	if !first.WorkspaceCreated || first.Workspace.Name != "demo" {
		t.Errorf("first Bootstrap: workspace %+v, created %v; want a new workspace named demo", first.Workspace, first.WorkspaceCreated)
	}
	if first.WriteKeySecret != opts.WriteKey || first.APITokenSecret != opts.APIToken {
		t.Errorf("secrets %q, %q; want the pinned ones", first.WriteKeySecret, first.APITokenSecret)
	}

	// A restart finds everything in place and adds nothing.
	second, err := workspace.Bootstrap(ctx, store, opts)
	if err != nil {
		t.Fatalf("second Bootstrap: %v", err)
	}
	opt := cmpopts.IgnoreUnexported(workspace.Credential{})
	if diff := cmp.Diff(first, second, opt, cmpopts.IgnoreFields(workspace.BootstrapResult{}, "WorkspaceCreated")); diff != "" {
		t.Errorf("second Bootstrap (-first +second):\n%s", diff)
	}
	if second.WorkspaceCreated {
		t.Error("second Bootstrap created the workspace again")
	}
	for _, table := range []string{"workspaces", "write_keys", "api_tokens"} {
		var n int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("%s has %d rows after two Bootstraps; want 1", table, n)
		}
	}

	// The pinned secrets authenticate.
	a := auth.NewAuthenticator(store, "", 0, nil)
	if ws, err := a.ResolveWriteKey(ctx, opts.WriteKey); err != nil || ws != first.Workspace.ID {
		t.Errorf("ResolveWriteKey(pinned) = %q, %v; want %s", ws, err, first.Workspace.ID)
	}
	if p, err := a.ResolveAPIToken(ctx, opts.APIToken); err != nil || p.WorkspaceID != first.Workspace.ID {
		t.Errorf("ResolveAPIToken(pinned) = %v, %v; want workspace %s", p, err, first.Workspace.ID)
	}

	// Pinning a revoked secret revives it: the developer asked for it.
	if _, err := store.RevokeWriteKey(ctx, first.Workspace.ID, first.WriteKey.ID); err != nil {
		t.Fatal(err)
	}
	third, err := workspace.Bootstrap(ctx, store, opts)
	if err != nil {
		t.Fatalf("Bootstrap after revoke: %v", err)
	}
	if !third.WriteKey.RevokeTime.IsZero() || third.WriteKey.ID != first.WriteKey.ID {
		t.Errorf("write key after Bootstrap = %+v; want %s valid again", third.WriteKey, first.WriteKey.ID)
	}

	// Another workspace cannot claim the same secret.
	if _, err := workspace.Bootstrap(ctx, store, workspace.BootstrapOptions{WorkspaceName: "other", WriteKey: opts.WriteKey}); err == nil || !strings.Contains(err.Error(), "another workspace") {
		t.Errorf("Bootstrap(other workspace, same key) error = %v; want already registered for another workspace", err)
	}
}

func TestBootstrapIssuesSecrets(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	a := auth.NewAuthenticator(store, "", 0, nil)
	var seen []string
	var workspaceID string
	for i := range 2 {
		res, err := workspace.Bootstrap(ctx, store, workspace.BootstrapOptions{WorkspaceName: "sandbox"})
		if err != nil {
			t.Fatalf("Bootstrap %d: %v", i, err)
		}
		if i == 0 {
			workspaceID = res.Workspace.ID
		} else if res.Workspace.ID != workspaceID {
			t.Errorf("Bootstrap %d: workspace %s; want %s again", i, res.Workspace.ID, workspaceID)
		}
		if !strings.HasPrefix(res.WriteKeySecret, auth.WriteKeyPrefix) || !strings.HasPrefix(res.APITokenSecret, auth.APITokenPrefix) {
			t.Errorf("Bootstrap %d: secrets %q, %q; want issued ones", i, res.WriteKeySecret, res.APITokenSecret)
		}
		seen = append(seen, res.WriteKeySecret)
	}
	if seen[0] == seen[1] {
		t.Error("two Bootstraps issued the same write key")
	}
	// Earlier issued keys stay valid.
	for _, key := range seen {
		if ws, err := a.ResolveWriteKey(ctx, key); err != nil || ws != workspaceID {
			t.Errorf("ResolveWriteKey(%.8s…) = %q, %v; want %s", key, ws, err, workspaceID)
		}
	}
}

func TestBootstrapRejects(t *testing.T) {
	store, _ := newStore(t)
	tests := []struct {
		name string
		opts workspace.BootstrapOptions
		want string
	}{
		{"space in key", workspace.BootstrapOptions{WriteKey: "my key"}, "pinned write key"},
		{"colon in key", workspace.BootstrapOptions{WriteKey: "user:pass"}, "pinned write key"},
		{"non-ASCII token", workspace.BootstrapOptions{APIToken: "tökén"}, "pinned API token"},
		{"same key and token", workspace.BootstrapOptions{WriteKey: "same", APIToken: "same"}, "must differ"},
		{"bad workspace name", workspace.BootstrapOptions{WorkspaceName: strings.Repeat("x", 201)}, "must be 1-200 characters"},
	}
	for _, tt := range tests {
		_, err := workspace.Bootstrap(context.Background(), store, tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error = %v; want one containing %q", tt.name, err, tt.want)
		}
	}
}
