package workspace_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/whisperhq/whisper/internal/auth"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/workspace"
)

const adminToken = "test-admin-token-0123456789"

// unknownID is a well-formed id that no row has.
const unknownID = "00000000-0000-4000-8000-000000000000"

func newStore(t *testing.T) (*workspace.Store, *pgxpool.Pool) {
	t.Helper()
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	// Twice: a restart must find nothing left to apply.
	for range 2 {
		if err := postgres.Migrate(ctx, pool, workspace.Migrations, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatalf("migrate: %v", err)
		}
	}
	return workspace.NewStore(pool), pool
}

// testServer is WorkspaceService behind authn middleware on a real TLS
// listener speaking HTTP/2, as clients reach it.
type testServer struct {
	t      *testing.T
	store  *workspace.Store
	pool   *pgxpool.Pool
	authn  *auth.Authenticator
	server *httptest.Server
}

func newServer(t *testing.T) *testServer {
	t.Helper()
	store, pool := newStore(t)
	logger := slog.New(slog.DiscardHandler)
	// A long TTL: anything that takes effect in these tests does so
	// through Forget, not expiry.
	a := auth.NewAuthenticator(store, adminToken, time.Hour, logger)
	path, handler := workspacev1connect.NewWorkspaceServiceHandler(workspace.NewHandler(store, a, logger))
	mux := http.NewServeMux()
	mux.Handle(path, authn.NewMiddleware(a.AuthenticateBearer).Wrap(handler))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &testServer{t: t, store: store, pool: pool, authn: a, server: srv}
}

// client returns a client that sends token as its bearer token, or no
// Authorization header when token is empty.
func (s *testServer) client(token string) workspacev1connect.WorkspaceServiceClient {
	return workspacev1connect.NewWorkspaceServiceClient(s.server.Client(), s.server.URL,
		connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
			return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
				if token != "" {
					req.Header().Set("Authorization", "Bearer "+token)
				}
				return next(ctx, req)
			}
		})))
}

func (s *testServer) admin() workspacev1connect.WorkspaceServiceClient { return s.client(adminToken) }

func (s *testServer) createWorkspace(name string) *workspacev1.Workspace {
	s.t.Helper()
	resp, err := s.admin().CreateWorkspace(context.Background(), &workspacev1.CreateWorkspaceRequest{Name: name})
	if err != nil {
		s.t.Fatalf("CreateWorkspace(%q): %v", name, err)
	}
	return resp.GetWorkspace()
}

func (s *testServer) createWriteKey(workspaceID string) *workspacev1.CreateWriteKeyResponse {
	s.t.Helper()
	resp, err := s.admin().CreateWriteKey(context.Background(), &workspacev1.CreateWriteKeyRequest{WorkspaceId: workspaceID, Name: "web"})
	if err != nil {
		s.t.Fatalf("CreateWriteKey: %v", err)
	}
	return resp
}

func (s *testServer) createAPIToken(workspaceID string) *workspacev1.CreateAPITokenResponse {
	s.t.Helper()
	resp, err := s.admin().CreateAPIToken(context.Background(), &workspacev1.CreateAPITokenRequest{WorkspaceId: workspaceID, Name: "ci"})
	if err != nil {
		s.t.Fatalf("CreateAPIToken: %v", err)
	}
	return resp
}

// wantCode fails t unless err is a Connect error with code and a message
// containing msg.
func wantCode(t *testing.T, what string, err error, code connect.Code, msg string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded; want %v", what, code)
		return
	}
	if got := connect.CodeOf(err); got != code {
		t.Errorf("%s: code %v (%v); want %v", what, got, err, code)
		return
	}
	if !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: error %q; want it to contain %q", what, err, msg)
	}
}

func TestCredentialLifecycle(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()

	ws := s.createWorkspace("Acme")
	if ws.GetId() == "" || ws.GetName() != "Acme" || ws.GetCreateTime() == nil {
		t.Fatalf("CreateWorkspace = %v; want an id, the name and a create time", ws)
	}

	key := s.createWriteKey(ws.GetId())
	tok := s.createAPIToken(ws.GetId())
	for _, c := range []struct {
		cred           *workspacev1.Credential
		secret, prefix string
	}{{key.GetWriteKey(), key.GetSecret(), auth.WriteKeyPrefix}, {tok.GetApiToken(), tok.GetSecret(), auth.APITokenPrefix}} {
		if !strings.HasPrefix(c.secret, c.prefix) || len(c.secret) < 40 {
			t.Errorf("secret %q; want %q and at least 40 characters", c.secret, c.prefix)
		}
		if c.cred.GetPrefix() != c.secret[:8] || c.cred.GetWorkspaceId() != ws.GetId() || c.cred.GetRevokeTime() != nil {
			t.Errorf("credential %v; want prefix %q, workspace %s, not revoked", c.cred, c.secret[:8], ws.GetId())
		}
	}

	// The write key authenticates ingestion.
	if got, err := s.authn.ResolveWriteKey(ctx, key.GetSecret()); err != nil || got != ws.GetId() {
		t.Fatalf("ResolveWriteKey = %q, %v; want %s", got, err, ws.GetId())
	}

	// The API token acts on its own workspace.
	c := s.client(tok.GetSecret())
	got, err := c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: ws.GetId()})
	if err != nil {
		t.Fatalf("GetWorkspace with the workspace's token: %v", err)
	}
	if diff := cmp.Diff(ws, got.GetWorkspace(), protocmp.Transform()); diff != "" {
		t.Errorf("GetWorkspace (-created +got):\n%s", diff)
	}
	// Upper case is the same id.
	if _, err := c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: strings.ToUpper(ws.GetId())}); err != nil {
		t.Errorf("GetWorkspace(upper-case id): %v", err)
	}
	keys, err := c.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: ws.GetId()})
	if err != nil {
		t.Fatalf("ListWriteKeys: %v", err)
	}
	if diff := cmp.Diff([]*workspacev1.Credential{key.GetWriteKey()}, keys.GetWriteKeys(), protocmp.Transform()); diff != "" {
		t.Errorf("ListWriteKeys (-want +got):\n%s", diff)
	}

	// Revoking through the API shuts the key out at once, long before the
	// cache's TTL.
	rev, err := c.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: ws.GetId(), WriteKeyId: key.GetWriteKey().GetId()})
	if err != nil {
		t.Fatalf("RevokeWriteKey: %v", err)
	}
	if rev.GetWriteKey().GetRevokeTime() == nil {
		t.Errorf("RevokeWriteKey = %v; want a revoke time", rev.GetWriteKey())
	}
	if _, err := s.authn.ResolveWriteKey(ctx, key.GetSecret()); !errors.Is(err, auth.ErrUnknownCredential) {
		t.Errorf("ResolveWriteKey after revoke: %v; want ErrUnknownCredential", err)
	}
	// Revoking again succeeds and changes nothing.
	again, err := c.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: ws.GetId(), WriteKeyId: key.GetWriteKey().GetId()})
	if err != nil {
		t.Fatalf("RevokeWriteKey again: %v", err)
	}
	if diff := cmp.Diff(rev, again, protocmp.Transform()); diff != "" {
		t.Errorf("second RevokeWriteKey (-first +second):\n%s", diff)
	}
	keys, err = c.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: ws.GetId()})
	if err != nil {
		t.Fatalf("ListWriteKeys: %v", err)
	}
	if diff := cmp.Diff([]*workspacev1.Credential{rev.GetWriteKey()}, keys.GetWriteKeys(), protocmp.Transform()); diff != "" {
		t.Errorf("ListWriteKeys after revoke (-want +got):\n%s", diff)
	}

	// A token may issue and list tokens of its workspace, and revoke
	// itself, which takes effect on its next call.
	second, err := c.CreateAPIToken(ctx, &workspacev1.CreateAPITokenRequest{WorkspaceId: ws.GetId(), Name: "second"})
	if err != nil {
		t.Fatalf("CreateAPIToken with a token: %v", err)
	}
	toks, err := c.ListAPITokens(ctx, &workspacev1.ListAPITokensRequest{WorkspaceId: ws.GetId()})
	if err != nil {
		t.Fatalf("ListAPITokens: %v", err)
	}
	if diff := cmp.Diff([]*workspacev1.Credential{tok.GetApiToken(), second.GetApiToken()}, toks.GetApiTokens(), protocmp.Transform()); diff != "" {
		t.Errorf("ListAPITokens (-want +got):\n%s", diff)
	}
	if _, err := c.RevokeAPIToken(ctx, &workspacev1.RevokeAPITokenRequest{WorkspaceId: ws.GetId(), ApiTokenId: tok.GetApiToken().GetId()}); err != nil {
		t.Fatalf("RevokeAPIToken(self): %v", err)
	}
	_, err = c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: ws.GetId()})
	wantCode(t, "GetWorkspace with a revoked token", err, connect.CodeUnauthenticated, "unknown or revoked API token")
	if _, err := s.client(second.GetSecret()).GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: ws.GetId()}); err != nil {
		t.Errorf("GetWorkspace with the other token: %v", err)
	}
}

func TestWorkspaceIsolation(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	a, b := s.createWorkspace("A"), s.createWorkspace("B")
	tokA := s.createAPIToken(a.GetId())
	keyB, tokB := s.createWriteKey(b.GetId()), s.createAPIToken(b.GetId())
	c := s.client(tokA.GetSecret())

	// Every call on B, and on a workspace that does not exist, is refused
	// the same way: the answer must not tell which exist.
	for _, target := range []string{b.GetId(), unknownID} {
		tests := []struct {
			name string
			call func() error
		}{
			{"GetWorkspace", func() error {
				_, err := c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: target})
				return err
			}},
			{"CreateWriteKey", func() error {
				_, err := c.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: target, Name: "x"})
				return err
			}},
			{"ListWriteKeys", func() error {
				_, err := c.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: target})
				return err
			}},
			{"RevokeWriteKey", func() error {
				_, err := c.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: target, WriteKeyId: keyB.GetWriteKey().GetId()})
				return err
			}},
			{"CreateAPIToken", func() error {
				_, err := c.CreateAPIToken(ctx, &workspacev1.CreateAPITokenRequest{WorkspaceId: target, Name: "x"})
				return err
			}},
			{"ListAPITokens", func() error {
				_, err := c.ListAPITokens(ctx, &workspacev1.ListAPITokensRequest{WorkspaceId: target})
				return err
			}},
			{"RevokeAPIToken", func() error {
				_, err := c.RevokeAPIToken(ctx, &workspacev1.RevokeAPITokenRequest{WorkspaceId: target, ApiTokenId: tokB.GetApiToken().GetId()})
				return err
			}},
		}
		for _, tt := range tests {
			wantCode(t, tt.name+" on "+target, tt.call(), connect.CodePermissionDenied, "own workspace only")
		}
	}

	// B's credential ids under A's workspace id are simply not there.
	_, err := c.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: a.GetId(), WriteKeyId: keyB.GetWriteKey().GetId()})
	wantCode(t, "RevokeWriteKey(A, B's key)", err, connect.CodeNotFound, "not found")
	_, err = c.RevokeAPIToken(ctx, &workspacev1.RevokeAPITokenRequest{WorkspaceId: a.GetId(), ApiTokenId: tokB.GetApiToken().GetId()})
	wantCode(t, "RevokeAPIToken(A, B's token)", err, connect.CodeNotFound, "not found")

	// Only the admin creates and lists workspaces.
	_, err = c.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "C"})
	wantCode(t, "CreateWorkspace with a token", err, connect.CodePermissionDenied, "only the admin token")
	_, err = c.ListWorkspaces(ctx, &workspacev1.ListWorkspacesRequest{})
	wantCode(t, "ListWorkspaces with a token", err, connect.CodePermissionDenied, "only the admin token")

	// B is untouched.
	if got, err := s.authn.ResolveWriteKey(ctx, keyB.GetSecret()); err != nil || got != b.GetId() {
		t.Errorf("ResolveWriteKey(B's key) = %q, %v; want %s", got, err, b.GetId())
	}
	toks, err := s.admin().ListAPITokens(ctx, &workspacev1.ListAPITokensRequest{WorkspaceId: b.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]*workspacev1.Credential{tokB.GetApiToken()}, toks.GetApiTokens(), protocmp.Transform()); diff != "" {
		t.Errorf("B's tokens (-want +got):\n%s", diff)
	}
}

func TestAuthentication(t *testing.T) {
	s := newServer(t)
	ws := s.createWorkspace("A")
	key := s.createWriteKey(ws.GetId())
	tests := []struct {
		name, token, msg string
	}{
		{"no token", "", "missing bearer token"},
		{"unknown token", "wt_unknown", "unknown or revoked API token"},
		{"write key as token", key.GetSecret(), "unknown or revoked API token"},
		{"admin token with a typo", adminToken + "x", "unknown or revoked API token"},
	}
	for _, tt := range tests {
		_, err := s.client(tt.token).GetWorkspace(context.Background(), &workspacev1.GetWorkspaceRequest{WorkspaceId: ws.GetId()})
		wantCode(t, tt.name, err, connect.CodeUnauthenticated, tt.msg)
	}
}

func TestValidation(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	ws := s.createWorkspace("A")
	c := s.admin()
	tests := []struct {
		name string
		call func() error
		code connect.Code
		msg  string
	}{
		{"empty name", func() error {
			_, err := c.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{})
			return err
		}, connect.CodeInvalidArgument, "name: must be 1-200 characters"},
		{"blank name", func() error {
			_, err := c.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "   "})
			return err
		}, connect.CodeInvalidArgument, "name: must be 1-200 characters"},
		{"long name", func() error {
			_, err := c.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: strings.Repeat("é", 201)})
			return err
		}, connect.CodeInvalidArgument, "name: must be 1-200 characters"},
		{"control character", func() error {
			_, err := c.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "a\nb"})
			return err
		}, connect.CodeInvalidArgument, "name: must not contain control characters"},
		{"bad workspace id", func() error {
			_, err := c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: "42"})
			return err
		}, connect.CodeInvalidArgument, "workspace_id: not a valid id"},
		{"missing workspace id", func() error {
			_, err := c.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{})
			return err
		}, connect.CodeInvalidArgument, "workspace_id: not a valid id"},
		{"unhyphenated workspace id", func() error {
			_, err := c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: strings.ReplaceAll(ws.GetId(), "-", "")})
			return err
		}, connect.CodeInvalidArgument, "workspace_id: not a valid id"},
		{"empty key name", func() error {
			_, err := c.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ws.GetId()})
			return err
		}, connect.CodeInvalidArgument, "name: must be 1-200 characters"},
		{"bad write key id", func() error {
			_, err := c.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: ws.GetId(), WriteKeyId: "wk_x"})
			return err
		}, connect.CodeInvalidArgument, "write_key_id: not a valid id"},
		{"bad API token id", func() error {
			_, err := c.RevokeAPIToken(ctx, &workspacev1.RevokeAPITokenRequest{WorkspaceId: ws.GetId(), ApiTokenId: "1"})
			return err
		}, connect.CodeInvalidArgument, "api_token_id: not a valid id"},
		{"bad page token", func() error {
			_, err := c.ListWorkspaces(ctx, &workspacev1.ListWorkspacesRequest{PageToken: "bm9wZQ"})
			return err
		}, connect.CodeInvalidArgument, "page_token:"},
		{"negative page size", func() error {
			_, err := c.ListWorkspaces(ctx, &workspacev1.ListWorkspacesRequest{PageSize: -1})
			return err
		}, connect.CodeInvalidArgument, "page_size: must not be negative"},
		{"unknown workspace", func() error {
			_, err := c.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: unknownID})
			return err
		}, connect.CodeNotFound, "not found"},
		{"key for unknown workspace", func() error {
			_, err := c.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: unknownID, Name: "x"})
			return err
		}, connect.CodeNotFound, "not found"},
		{"tokens of unknown workspace", func() error {
			_, err := c.ListAPITokens(ctx, &workspacev1.ListAPITokensRequest{WorkspaceId: unknownID})
			return err
		}, connect.CodeNotFound, "not found"},
		{"revoke unknown key", func() error {
			_, err := c.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: ws.GetId(), WriteKeyId: unknownID})
			return err
		}, connect.CodeNotFound, "not found"},
	}
	for _, tt := range tests {
		wantCode(t, tt.name, tt.call(), tt.code, tt.msg)
	}

	// A workspace without credentials lists none, rather than NotFound.
	keys, err := c.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: ws.GetId()})
	if err != nil || len(keys.GetWriteKeys()) != 0 {
		t.Errorf("ListWriteKeys(new workspace) = %v, %v; want none", keys, err)
	}
}

func TestListWorkspacesPagination(t *testing.T) {
	s := newServer(t)
	ctx := context.Background()
	// 1005 workspaces, in threes sharing a creation time, so that pages
	// must break ties by id; more than the largest page.
	const n = 1005
	if _, err := s.pool.Exec(ctx,
		`INSERT INTO workspaces (name, created_at)
		 SELECT 'ws ' || i, timestamptz '2026-01-01 00:00:00+00' + (i / 3) * interval '1 second'
		 FROM generate_series(1, $1) AS i`, n); err != nil {
		t.Fatal(err)
	}
	var want []string
	rows, err := s.pool.Query(ctx, `SELECT id::text FROM workspaces ORDER BY created_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		want = append(want, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		pageSize  int32
		wantPages int
	}{
		{0, 11},   // 100 by default
		{7, 144},  // ceil(1005/7)
		{1000, 2}, // the maximum
		{5000, 2}, // capped at 1000
		{335, 3},  // the last page is exactly full
		{502, 3},  // the last page holds one
	}
	for _, tt := range tests {
		var got []string
		pages, token := 0, ""
		for {
			resp, err := s.admin().ListWorkspaces(ctx, &workspacev1.ListWorkspacesRequest{PageSize: tt.pageSize, PageToken: token})
			if err != nil {
				t.Fatalf("page size %d, page %d: %v", tt.pageSize, pages, err)
			}
			pages++
			for _, w := range resp.GetWorkspaces() {
				got = append(got, w.GetId())
			}
			token = resp.GetNextPageToken()
			if token == "" || pages > n {
				break
			}
		}
		if pages != tt.wantPages {
			t.Errorf("page size %d: %d pages; want %d", tt.pageSize, pages, tt.wantPages)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("page size %d: ids (-want +got):\n%s", tt.pageSize, diff)
		}
	}
}

func TestSecretsAreNotStored(t *testing.T) {
	s := newServer(t)
	ws := s.createWorkspace("A")
	secrets := []string{s.createWriteKey(ws.GetId()).GetSecret(), s.createAPIToken(ws.GetId()).GetSecret()}
	for _, table := range []string{"workspaces", "write_keys", "api_tokens"} {
		var dump string
		// Every column of every row as text, where bytea shows as hex.
		if err := s.pool.QueryRow(context.Background(),
			`SELECT coalesce(string_agg(t::text, E'\n'), '') FROM `+table+` t`,
		).Scan(&dump); err != nil {
			t.Fatal(err)
		}
		for _, secret := range secrets {
			if strings.Contains(dump, secret[8:]) || strings.Contains(dump, hex.EncodeToString([]byte(secret[8:]))) {
				t.Errorf("table %s holds a secret in plaintext", table)
			}
		}
	}
	// What is stored is the digest.
	for table, secret := range map[string]string{"write_keys": secrets[0], "api_tokens": secrets[1]} {
		var hash []byte
		if err := s.pool.QueryRow(context.Background(), `SELECT hash FROM `+table).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256([]byte(secret)); !cmp.Equal(hash, sum[:]) {
			t.Errorf("%s.hash = %x; want SHA-256 of the secret %x", table, hash, sum)
		}
	}
}

func TestStoreWorkspaces(t *testing.T) {
	store, _ := newStore(t)
	ctx := context.Background()
	w, err := store.CreateWorkspace(ctx, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.GetWorkspace(ctx, w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, got, cmpopts.EquateApproxTime(0)); diff != "" {
		t.Errorf("GetWorkspace (-created +got):\n%s", diff)
	}
	tests := []struct {
		id      string
		wantErr func(error) bool
	}{
		{unknownID, func(err error) bool { return errors.Is(err, workspace.ErrNotFound) }},
		{"not-a-uuid", func(err error) bool {
			var fe *workspace.FieldError
			return errors.As(err, &fe) && fe.Field == "workspace_id"
		}},
	}
	for _, tt := range tests {
		if _, err := store.GetWorkspace(ctx, tt.id); !tt.wantErr(err) {
			t.Errorf("GetWorkspace(%q) error = %v", tt.id, err)
		}
	}
	if _, _, err := store.CreateWriteKey(ctx, w.ID, ""); err == nil {
		t.Error("CreateWriteKey with empty name succeeded")
	}
	// Lookups answer ErrUnknownCredential for anything not valid.
	for _, hash := range [][]byte{nil, make([]byte, 32), []byte("short")} {
		if _, err := store.LookupWriteKey(ctx, hash); !errors.Is(err, auth.ErrUnknownCredential) {
			t.Errorf("LookupWriteKey(%x) = %v; want ErrUnknownCredential", hash, err)
		}
		if _, _, err := store.LookupAPIToken(ctx, hash); !errors.Is(err, auth.ErrUnknownCredential) {
			t.Errorf("LookupAPIToken(%x) = %v; want ErrUnknownCredential", hash, err)
		}
	}
	_, secret, err := store.CreateAPIToken(ctx, w.ID, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if wsID, _, err := store.LookupAPIToken(ctx, auth.HashSecret(secret)); err != nil || wsID != w.ID {
		t.Errorf("LookupAPIToken = %q, %v; want %s", wsID, err, w.ID)
	}
	if _, err := store.LookupWriteKey(ctx, auth.HashSecret(secret)); !errors.Is(err, auth.ErrUnknownCredential) {
		t.Errorf("LookupWriteKey(an API token) = %v; want ErrUnknownCredential", err)
	}
}
