package channel

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"golang.org/x/oauth2/jwt"
)

// FCMScope is the OAuth 2.0 scope an access token needs to send through
// FCM's HTTP v1 API.
const FCMScope = "https://www.googleapis.com/auth/firebase.messaging"

// ServiceAccountTokens issues FCM access tokens from a Google service
// account key: a JWT signed with the key is exchanged at the key's
// token_uri (the JWT bearer grant of RFC 7523), and the access token is
// reused until shortly before it expires. It is safe for concurrent use;
// concurrent callers wait for one exchange.
type ServiceAccountTokens struct {
	conf      *jwt.Config
	projectID string
	client    *http.Client
	now       func() time.Time

	mu        sync.Mutex
	token     string
	refreshAt time.Time
}

// NewServiceAccountTokens parses a service account key (the JSON file a
// Google Cloud console download holds). Its token_uri is where JWTs are
// exchanged (Google's endpoint when absent), so a test can point it at a
// local token server. Token exchanges use client (its
// Timeout bounds each one); nil means a client with a 10 s timeout.
func NewServiceAccountTokens(key []byte, client *http.Client) (*ServiceAccountTokens, error) {
	var head struct {
		Type      string `json:"type"`
		ProjectID string `json:"project_id"`
	}
	if err := json.Unmarshal(key, &head); err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	if head.Type != "service_account" {
		return nil, fmt.Errorf("service account key: type %q, want \"service_account\"", head.Type)
	}
	conf, err := google.JWTConfigFromJSON(key, FCMScope)
	if err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	if conf.Email == "" {
		return nil, errors.New("service account key: client_email is empty")
	}
	if err := checkPrivateKey(conf.PrivateKey); err != nil {
		return nil, fmt.Errorf("service account key: private_key: %w", err)
	}
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &ServiceAccountTokens{conf: conf, projectID: head.ProjectID, client: client, now: time.Now}, nil
}

// checkPrivateKey fails at start-up on a key the first exchange could not
// sign with.
func checkPrivateKey(b []byte) error {
	block, _ := pem.Decode(b)
	if block == nil {
		return errors.New("not PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return fmt.Errorf("neither PKCS #8 nor PKCS #1: %w", err)
	}
	return nil
}

// ProjectID is the key's project_id: the Firebase project it belongs to.
func (s *ServiceAccountTokens) ProjectID() string { return s.projectID }

// Token returns a cached access token, exchanging a new JWT for one when
// none is cached or the cached one is in the last fifth of its lifetime
// (at most five minutes before it expires), so a send never starts with a
// token about to lapse.
func (s *ServiceAccountTokens) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.token != "" && now.Before(s.refreshAt) {
		return s.token, nil
	}
	// The jwt package's own source caches without a way to drop a token
	// the API refused: a new source per exchange, with this call's context.
	t, err := s.conf.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, s.client)).Token()
	if err != nil {
		return "", fmt.Errorf("exchange a service account JWT at %s: %w", s.conf.TokenURL, err)
	}
	s.token = t.AccessToken
	switch {
	case t.Expiry.IsZero():
		s.refreshAt = now.Add(time.Hour) // no expires_in: Google's tokens last an hour
	default:
		s.refreshAt = t.Expiry.Add(-min(5*time.Minute, t.Expiry.Sub(now)/5))
	}
	return s.token, nil
}

// Invalidate drops token if it is the cached one, so the next Token call
// exchanges a new JWT: FCM answered UNAUTHENTICATED to it (revoked, or
// expired early by the clocks' disagreement).
func (s *ServiceAccountTokens) Invalidate(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == token {
		s.token = ""
	}
}
