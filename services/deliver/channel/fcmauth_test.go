package channel

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// tokenServer is Google's OAuth 2.0 token endpoint as a service account
// uses it: a form POST with grant_type jwt-bearer and an RS256 assertion,
// answered with an access token and its lifetime in seconds.
type tokenServer struct {
	pub      *rsa.PublicKey
	email    string
	url      string
	lifetime time.Duration // what expires_in says
	valid    time.Duration // how long the API accepts the token

	mu      sync.Mutex
	grants  []map[string]any // verified claim sets, in order
	expires map[string]time.Time
	bad     []string
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(msg string) {
		s.mu.Lock()
		s.bad = append(s.bad, msg)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":%q}`, msg)
	}
	if err := r.ParseForm(); err != nil || r.Method != http.MethodPost {
		fail("not a form POST")
		return
	}
	if g := r.PostForm.Get("grant_type"); g != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail("grant_type " + g)
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		fail("assertion is not a JWS")
		return
	}
	var header, claims map[string]any
	for i, v := range []*map[string]any{&header, &claims} {
		b, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil || json.Unmarshal(b, v) != nil {
			fail("undecodable JWS part")
			return
		}
	}
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if header["alg"] != "RS256" || rsa.VerifyPKCS1v15(s.pub, crypto.SHA256, sum[:], sig) != nil {
		fail(fmt.Sprintf("signature does not verify (alg %v)", header["alg"]))
		return
	}
	exp, _ := claims["exp"].(float64)
	switch {
	case claims["iss"] != s.email:
		fail(fmt.Sprintf("iss %v", claims["iss"]))
		return
	case claims["aud"] != s.url:
		fail(fmt.Sprintf("aud %v", claims["aud"]))
		return
	case time.Unix(int64(exp), 0).Before(time.Now()):
		fail("assertion expired")
		return
	}
	s.mu.Lock()
	s.grants = append(s.grants, claims)
	token := fmt.Sprintf("ya29.issued-%d", len(s.grants))
	s.expires[token] = time.Now().Add(s.valid)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":%d,"token_type":"Bearer"}`, token, int(s.lifetime.Seconds()))
}

// authorized is what the FCM fake asks: issued here and not expired.
func (s *tokenServer) authorized(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.expires[token]
	return ok && time.Now().Before(exp)
}

func (s *tokenServer) granted() ([]map[string]any, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.grants...), append([]string(nil), s.bad...)
}

// serviceAccountKey writes the JSON key file a console download holds,
// with token_uri pointing at the test's token server.
func serviceAccountKey(t *testing.T, key *rsa.PrivateKey, email, tokenURI string) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "whisper-test", "private_key_id": "k1",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email": email, "client_id": "1", "token_uri": tokenURI,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The adapter gets its access token by the JWT bearer grant, reuses it,
// and gets a new one before it expires (proactively) or when FCM refuses
// it with 401 UNAUTHENTICATED (the send then succeeds at once).
func TestFCMServiceAccountTokens(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name            string
		lifetime, valid time.Duration
		wantGrants      int
		wantRefused     int
	}{
		// Three sends: two at once, one after the token's last fifth began.
		{"refreshed before expiry", 2 * time.Second, 2 * time.Second, 2, 0},
		// FCM stops accepting the token long before expires_in says.
		{"refreshed after UNAUTHENTICATED", time.Hour, 1500 * time.Millisecond, 2, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := &tokenServer{pub: &key.PublicKey, email: "whisper@whisper-test.iam.gserviceaccount.com",
				lifetime: tt.lifetime, valid: tt.valid, expires: map[string]time.Time{}}
			tokenSrv := httptest.NewServer(ts)
			defer tokenSrv.Close()
			ts.url = tokenSrv.URL + "/token"
			fake := newFCMFake()
			fake.authorized = ts.authorized
			fcmSrv := httptest.NewServer(fake)
			defer fcmSrv.Close()

			tokens, err := NewServiceAccountTokens(serviceAccountKey(t, key, ts.email, ts.url), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tokens.ProjectID() != "whisper-test" {
				t.Errorf("ProjectID() = %q", tokens.ProjectID())
			}
			f, err := NewFCM(FCMConfig{BaseURL: fcmSrv.URL, ProjectID: tokens.ProjectID(), TokenSource: tokens.Token, InvalidateToken: tokens.Invalidate})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			for i, wait := range []time.Duration{0, 0, 1700 * time.Millisecond} {
				time.Sleep(wait)
				if _, err := f.Send(ctx, pushMessage(fmt.Sprintf("dev-%d", i), "Hi", "there", nil)); err != nil {
					t.Fatalf("send %d: %v", i, err)
				}
			}
			grants, bad := ts.granted()
			if len(bad) > 0 {
				t.Errorf("token server refused: %v", bad)
			}
			if len(grants) != tt.wantGrants {
				t.Errorf("%d JWT grants, want %d", len(grants), tt.wantGrants)
			}
			for _, g := range grants {
				if g["scope"] != FCMScope {
					t.Errorf("grant scope %v, want %s", g["scope"], FCMScope)
				}
			}
			if fake.refused != tt.wantRefused || len(fake.got) != 3 {
				t.Errorf("FCM refused %d requests and accepted %d, want %d and 3", fake.refused, len(fake.got), tt.wantRefused)
			}
		})
	}
}

func TestServiceAccountKeyErrors(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	good := map[string]any{}
	if err := json.Unmarshal(serviceAccountKey(t, key, "a@b", "http://127.0.0.1:1/token"), &good); err != nil {
		t.Fatal(err)
	}
	with := func(k string, v any) []byte {
		m := map[string]any{}
		for k, v := range good {
			m[k] = v
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return b
	}
	tests := []struct {
		name string
		key  []byte
		want string
	}{
		{"not json", []byte("{"), "service account key:"},
		{"user credentials", with("type", "authorized_user"), `type "authorized_user"`},
		{"no email", with("client_email", nil), "client_email is empty"},
		{"bad key", with("private_key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "private_key:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewServiceAccountTokens(tt.key, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewServiceAccountTokens() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if _, err := NewServiceAccountTokens(with("token_uri", nil), nil); err != nil {
		t.Errorf("without token_uri (Google's default applies): %v", err)
	}
}
