package auth

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
)

// fakeStore is an in-memory CredentialStore that counts lookups.
type fakeStore struct {
	mu        sync.Mutex
	writeKeys map[string]string   // hex digest → workspace id
	apiTokens map[string]tokenRef // hex digest → token
	calls     int
	err       error         // returned by every lookup when set
	gate      chan struct{} // when set, lookups wait for it to close
}

func newFakeStore() *fakeStore {
	return &fakeStore{writeKeys: map[string]string{}, apiTokens: map[string]tokenRef{}}
}

func (s *fakeStore) addWriteKey(secret, workspaceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writeKeys[hex.EncodeToString(HashSecret(secret))] = workspaceID
}

func (s *fakeStore) addAPIToken(secret, workspaceID, tokenID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiTokens[hex.EncodeToString(HashSecret(secret))] = tokenRef{workspaceID, tokenID}
}

func (s *fakeStore) revoke(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.writeKeys, hex.EncodeToString(HashSecret(secret)))
	delete(s.apiTokens, hex.EncodeToString(HashSecret(secret)))
}

func (s *fakeStore) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// begin counts a lookup and returns what the store says now: a lookup
// held at the gate answers from the moment it started, like a database
// read that raced a revocation.
func (s *fakeStore) begin(hash []byte) (ws string, ref tokenRef, wsOK, refOK bool, err error) {
	s.mu.Lock()
	s.calls++
	ws, wsOK = s.writeKeys[hex.EncodeToString(hash)]
	ref, refOK = s.apiTokens[hex.EncodeToString(hash)]
	gate, err := s.gate, s.err
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	return ws, ref, wsOK, refOK, err
}

func (s *fakeStore) LookupWriteKey(ctx context.Context, hash []byte) (string, error) {
	ws, _, ok, _, err := s.begin(hash)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", ErrUnknownCredential
	}
	return ws, nil
}

func (s *fakeStore) LookupAPIToken(ctx context.Context, hash []byte) (string, string, error) {
	_, t, _, ok, err := s.begin(hash)
	if err != nil {
		return "", "", err
	}
	if !ok {
		return "", "", ErrUnknownCredential
	}
	return t.workspaceID, t.tokenID, nil
}

// fakeClock is a settable clock for TTL tests.
type fakeClock struct {
	mu sync.Mutex
	t  int64
}

func (c *fakeClock) now() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t += int64(d)
}

func newTestAuthenticator(store CredentialStore, admin string) (*Authenticator, *fakeClock) {
	clock := &fakeClock{t: 1}
	a := NewAuthenticator(store, admin, 10*time.Second, nil)
	a.now = clock.now
	return a, clock
}

func TestNewSecret(t *testing.T) {
	for _, prefix := range []string{WriteKeyPrefix, APITokenPrefix} {
		seen := map[string]bool{}
		for range 200 {
			s, err := NewSecret(prefix)
			if err != nil {
				t.Fatalf("NewSecret(%q): %v", prefix, err)
			}
			if !strings.HasPrefix(s, prefix) || len(s) != len(prefix)+secretDigits {
				t.Fatalf("NewSecret(%q) = %q; want %q and %d base-62 digits", prefix, s, prefix, secretDigits)
			}
			if i := strings.IndexFunc(s[len(prefix):], func(r rune) bool {
				return !('0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z')
			}); i >= 0 {
				t.Fatalf("NewSecret(%q) = %q: not base 62 at %d", prefix, s, i)
			}
			if seen[s] {
				t.Fatalf("NewSecret(%q) repeated %q", prefix, s)
			}
			seen[s] = true
		}
	}
}

func TestHashSecret(t *testing.T) {
	// echo -n abc | sha256sum
	const want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
	if got := hex.EncodeToString(HashSecret("abc")); got != want {
		t.Errorf("HashSecret(abc) = %s; want %s", got, want)
	}
}

func TestSecretPrefix(t *testing.T) {
	tests := []struct{ secret, want string }{
		{"wk_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "wk_01234"},
		{"dev-write-key", "dev"},
		{"abc", ""},
		{"", ""},
		{"éééééééééééé", "ééé"}, // 24 bytes: 6 is a rune boundary
		{"aéééééééééééé", "aéé"},
	}
	for _, tt := range tests {
		if got := SecretPrefix(tt.secret); got != tt.want {
			t.Errorf("SecretPrefix(%q) = %q; want %q", tt.secret, got, tt.want)
		}
	}
}

func TestResolveWriteKeyCache(t *testing.T) {
	const good, bad = "wk_good", "wk_bad"
	type step struct {
		advance   time.Duration
		key       string
		revoke    bool // revoke key in the store before resolving
		forget    bool // and tell the Authenticator
		want      string
		wantErr   error
		wantCalls int // store lookups so far
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"miss then hit", []step{
			{key: good, want: "ws1", wantCalls: 1},
			{key: good, want: "ws1", wantCalls: 1},
			{advance: 9 * time.Second, key: good, want: "ws1", wantCalls: 1},
		}},
		{"expiry asks again", []step{
			{key: good, want: "ws1", wantCalls: 1},
			{advance: 10 * time.Second, key: good, want: "ws1", wantCalls: 2},
			{key: good, want: "ws1", wantCalls: 2},
		}},
		{"unknown cached briefly", []step{
			{key: bad, wantErr: ErrUnknownCredential, wantCalls: 1},
			{advance: 500 * time.Millisecond, key: bad, wantErr: ErrUnknownCredential, wantCalls: 1},
			{advance: 500 * time.Millisecond, key: bad, wantErr: ErrUnknownCredential, wantCalls: 2},
		}},
		{"empty and oversized keys never reach the store", []step{
			{key: "", wantErr: ErrUnknownCredential, wantCalls: 0},
			{key: strings.Repeat("k", maxSecretLen+1), wantErr: ErrUnknownCredential, wantCalls: 0},
		}},
		{"revoked elsewhere is noticed after the TTL", []step{
			{key: good, want: "ws1", wantCalls: 1},
			{revoke: true, key: good, want: "ws1", wantCalls: 1},
			{advance: 10 * time.Second, key: good, wantErr: ErrUnknownCredential, wantCalls: 2},
			{key: good, wantErr: ErrUnknownCredential, wantCalls: 2},
		}},
		{"revoked here is noticed at once", []step{
			{key: good, want: "ws1", wantCalls: 1},
			{revoke: true, forget: true, key: good, wantErr: ErrUnknownCredential, wantCalls: 2},
		}},
		{"an API token is not a write key", []step{
			{key: "wt_token", wantErr: ErrUnknownCredential, wantCalls: 1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeStore()
			store.addWriteKey(good, "ws1")
			store.addAPIToken("wt_token", "ws1", "tok1")
			a, clock := newTestAuthenticator(store, "")
			for i, s := range tt.steps {
				clock.advance(s.advance)
				if s.revoke {
					store.revoke(s.key)
				}
				if s.forget {
					a.Forget(HashSecret(s.key))
				}
				got, err := a.ResolveWriteKey(context.Background(), s.key)
				if got != s.want || !errors.Is(err, s.wantErr) || (err != nil) != (s.wantErr != nil) {
					t.Errorf("step %d: ResolveWriteKey(%.10q) = %q, %v; want %q, %v", i, s.key, got, err, s.want, s.wantErr)
				}
				if calls := store.callCount(); calls != s.wantCalls {
					t.Errorf("step %d: store lookups = %d; want %d", i, calls, s.wantCalls)
				}
			}
		})
	}
}

func TestResolveWriteKeyStoreError(t *testing.T) {
	store := newFakeStore()
	store.addWriteKey("wk_good", "ws1")
	store.err = errors.New("connection refused")
	a, _ := newTestAuthenticator(store, "")
	for i := range 2 {
		_, err := a.ResolveWriteKey(context.Background(), "wk_good")
		if err == nil || errors.Is(err, ErrUnknownCredential) || !errors.Is(err, store.err) {
			t.Fatalf("try %d: err = %v; want the store's error, wrapped", i, err)
		}
	}
	if got := store.callCount(); got != 2 {
		t.Errorf("store lookups = %d; want 2 (failures are not cached)", got)
	}
	store.mu.Lock()
	store.err = nil
	store.mu.Unlock()
	if ws, err := a.ResolveWriteKey(context.Background(), "wk_good"); ws != "ws1" || err != nil {
		t.Errorf("after recovery: ResolveWriteKey = %q, %v; want ws1, nil", ws, err)
	}
}

// TestForgetDuringLookup checks that a lookup which started before a
// revocation does not put its stale answer back into the cache.
func TestForgetDuringLookup(t *testing.T) {
	store := newFakeStore()
	store.addWriteKey("wk_good", "ws1")
	store.gate = make(chan struct{})
	a, _ := newTestAuthenticator(store, "")
	done := make(chan error)
	go func() {
		_, err := a.ResolveWriteKey(context.Background(), "wk_good")
		done <- err
	}()
	for store.callCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	store.revoke("wk_good")
	a.Forget(HashSecret("wk_good"))
	close(store.gate)
	if err := <-done; err != nil {
		t.Fatalf("in-flight ResolveWriteKey: %v", err)
	}
	if _, err := a.ResolveWriteKey(context.Background(), "wk_good"); !errors.Is(err, ErrUnknownCredential) {
		t.Errorf("after Forget: err = %v; want ErrUnknownCredential", err)
	}
}

func TestConcurrentMissesShareOneLookup(t *testing.T) {
	store := newFakeStore()
	store.addWriteKey("wk_good", "ws1")
	store.gate = make(chan struct{})
	a, _ := newTestAuthenticator(store, "")
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			ws, err := a.ResolveWriteKey(context.Background(), "wk_good")
			if err == nil && ws != "ws1" {
				err = fmt.Errorf("workspace %q; want ws1", ws)
			}
			errs <- err
		})
	}
	for store.callCount() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the others join the flight
	close(store.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	// Goroutines that had not yet reached the cache when the flight ended
	// hit the cache; none may start a second lookup.
	if got := store.callCount(); got != 1 {
		t.Errorf("store lookups = %d; want 1", got)
	}
}

func TestConcurrentUse(t *testing.T) {
	store := newFakeStore()
	keys := make([]string, 20)
	for i := range keys {
		keys[i] = fmt.Sprintf("wk_key%02d", i)
		store.addWriteKey(keys[i], fmt.Sprintf("ws%d", i))
	}
	store.addAPIToken("wt_token", "ws0", "tok")
	a := NewAuthenticator(store, "admin", 50*time.Millisecond, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				k := (g + i) % len(keys)
				ws, err := a.ResolveWriteKey(context.Background(), keys[k])
				if err != nil || ws != fmt.Sprintf("ws%d", k) {
					t.Errorf("ResolveWriteKey(%s) = %q, %v", keys[k], ws, err)
					return
				}
				if _, err := a.ResolveWriteKey(context.Background(), "wk_missing"); !errors.Is(err, ErrUnknownCredential) {
					t.Errorf("ResolveWriteKey(wk_missing) err = %v", err)
					return
				}
				if p, err := a.ResolveAPIToken(context.Background(), "wt_token"); err != nil || p.WorkspaceID != "ws0" {
					t.Errorf("ResolveAPIToken = %v, %v", p, err)
					return
				}
				if i%100 == 0 {
					a.Forget(HashSecret(keys[k]))
				}
			}
		})
	}
	wg.Wait()
}

func TestCacheBounds(t *testing.T) {
	c := newCache[string]()
	now := int64(1)
	for i := range maxUnknown + 10 {
		c.putUnknown(fmt.Sprint("bad", i), now+int64(time.Second), now, c.generation())
	}
	if n := len(c.unknown); n > maxUnknown {
		t.Errorf("unknown entries = %d; want at most %d", n, maxUnknown)
	}
	for i := range maxKnown + 10 {
		s := fmt.Sprint("good", i)
		c.putKnown(s, [32]byte(HashSecret(s)), "ws", now+int64(time.Minute), now, c.generation())
	}
	if n, m := len(c.known), len(c.byHash); n > maxKnown || n != m {
		t.Errorf("known entries = %d, digests = %d; want equal and at most %d", n, m, maxKnown)
	}
}

func TestAuthenticateBearer(t *testing.T) {
	const admin = "admin-secret-for-tests"
	store := newFakeStore()
	store.addAPIToken("wt_token", "ws1", "tok1")
	store.addWriteKey("wk_key", "ws1")

	tests := []struct {
		name     string
		admin    string
		header   []string
		want     *Principal
		wantCode connect.Code
		wantMsg  string
	}{
		{name: "admin", admin: admin, header: []string{"Bearer " + admin}, want: &Principal{Admin: true}},
		{name: "scheme is case-insensitive", admin: admin, header: []string{"bearer " + admin}, want: &Principal{Admin: true}},
		{name: "api token", admin: admin, header: []string{"Bearer wt_token"}, want: &Principal{WorkspaceID: "ws1", CredentialID: "tok1"}},
		{name: "no header", admin: admin, wantCode: connect.CodeUnauthenticated, wantMsg: "missing bearer token"},
		{name: "basic auth", admin: admin, header: []string{"Basic d2tfa2V5Og=="}, wantCode: connect.CodeUnauthenticated, wantMsg: "missing bearer token"},
		{name: "empty token", admin: admin, header: []string{"Bearer "}, wantCode: connect.CodeUnauthenticated, wantMsg: "missing bearer token"},
		{name: "unknown token", admin: admin, header: []string{"Bearer wt_nope"}, wantCode: connect.CodeUnauthenticated, wantMsg: "unknown or revoked API token"},
		{name: "write key is not a token", admin: admin, header: []string{"Bearer wk_key"}, wantCode: connect.CodeUnauthenticated, wantMsg: "unknown or revoked API token"},
		{name: "admin disabled", admin: "", header: []string{"Bearer " + admin}, wantCode: connect.CodeUnauthenticated, wantMsg: "unknown or revoked API token"},
		{name: "admin prefix is not admin", admin: admin, header: []string{"Bearer " + admin[:5]}, wantCode: connect.CodeUnauthenticated, wantMsg: "unknown or revoked API token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAuthenticator(store, tt.admin, 0, nil)
			var got *Principal
			h := authn.NewMiddleware(a.AuthenticateBearer).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got, _ = PrincipalFrom(r.Context())
			}))
			req := httptest.NewRequest(http.MethodPost, "/whisper.workspace.v1.WorkspaceService/GetWorkspace", strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			for _, v := range tt.header {
				req.Header.Add("Authorization", v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tt.wantCode != 0 {
				if rec.Code != http.StatusUnauthorized {
					t.Errorf("status = %d; want 401", rec.Code)
				}
				if body := rec.Body.String(); !strings.Contains(body, `"code":"unauthenticated"`) || !strings.Contains(body, tt.wantMsg) {
					t.Errorf("body = %s; want code unauthenticated and message %q", body, tt.wantMsg)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("principal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAuthenticateBearerStoreDown(t *testing.T) {
	store := newFakeStore()
	store.err = errors.New("dial tcp 10.0.0.5:5432: connection refused")
	a := NewAuthenticator(store, "", 0, nil)
	h := authn.NewMiddleware(a.AuthenticateBearer).Wrap(http.NotFoundHandler())
	req := httptest.NewRequest(http.MethodPost, "/whisper.workspace.v1.WorkspaceService/GetWorkspace", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer wt_token")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body := rec.Body.String()
	if !strings.Contains(body, `"code":"unavailable"`) || strings.Contains(body, "10.0.0.5") {
		t.Errorf("body = %s; want code unavailable without the store's error", body)
	}
}

func TestPrincipalCanAccess(t *testing.T) {
	tests := []struct {
		name string
		p    *Principal
		ws   string
		want bool
	}{
		{"admin any", &Principal{Admin: true}, "ws2", true},
		{"own workspace", &Principal{WorkspaceID: "ws1"}, "ws1", true},
		{"other workspace", &Principal{WorkspaceID: "ws1"}, "ws2", false},
		{"empty principal", &Principal{}, "", false},
		{"nil", nil, "ws1", false},
	}
	for _, tt := range tests {
		if got := tt.p.CanAccess(tt.ws); got != tt.want {
			t.Errorf("%s: CanAccess(%q) = %v; want %v", tt.name, tt.ws, got, tt.want)
		}
	}
	if _, ok := PrincipalFrom(context.Background()); ok {
		t.Error("PrincipalFrom(empty context) ok; want false")
	}
	p := &Principal{WorkspaceID: "ws1"}
	if got, ok := PrincipalFrom(NewContext(context.Background(), p)); !ok || got != p {
		t.Errorf("PrincipalFrom(NewContext(p)) = %v, %v; want p, true", got, ok)
	}
}

func BenchmarkResolveWriteKeyCached(b *testing.B) {
	store := newFakeStore()
	key, err := NewSecret(WriteKeyPrefix)
	if err != nil {
		b.Fatal(err)
	}
	store.addWriteKey(key, "3f1c2a4e-8d7b-4c1a-9e2f-0a1b2c3d4e5f")
	a := NewAuthenticator(store, "", time.Hour, nil)
	ctx := context.Background()
	if _, err := a.ResolveWriteKey(ctx, key); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.ResolveWriteKey(ctx, key); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if store.callCount() != 1 {
		b.Errorf("store lookups = %d; want 1", store.callCount())
	}
}
