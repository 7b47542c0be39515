// Package auth turns the secrets that clients present into the workspace
// they act for: write keys for ingestion, bearer API tokens and the admin
// token for the management APIs.
//
// Secrets are random, shown once and stored only as SHA-256 digests (see
// HashSecret). Ingestion resolves a write key on every request, far more
// often than credentials change, so answers are cached in memory for a
// short TTL: a revocation takes effect at once in the process that made it
// (Authenticator.Forget) and within the TTL everywhere else.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"golang.org/x/sync/singleflight"
)

// ErrUnknownCredential is returned for a secret that matches no valid
// credential: never issued, revoked, or of another kind.
var ErrUnknownCredential = errors.New("unknown or revoked credential")

// CredentialStore finds credentials by the digest of their secret. Both
// methods return an error matching ErrUnknownCredential when no valid
// (unrevoked) credential has that digest; any other error means the store
// could not answer.
type CredentialStore interface {
	LookupWriteKey(ctx context.Context, hash []byte) (workspaceID string, err error)
	LookupAPIToken(ctx context.Context, hash []byte) (workspaceID, tokenID string, err error)
}

const (
	// DefaultTTL is how long a store's answer about a valid secret is
	// trusted: the longest a revocation made by another replica goes
	// unnoticed.
	DefaultTTL = 10 * time.Second
	// maxNegativeTTL caps how long an unknown secret is remembered. It is
	// short: long enough to absorb a client hammering with a bad key, short
	// enough that a key registered a moment ago (a pinned development key,
	// a replica that lags) is not refused for long.
	maxNegativeTTL = time.Second
	// maxSecretLen refuses absurd input without asking the store.
	maxSecretLen = 512
	// lookupTimeout bounds one store lookup. The lookup is shared by every
	// request presenting the same secret meanwhile, so it does not follow
	// any one request's cancellation.
	lookupTimeout = 5 * time.Second
)

// Authenticator resolves secrets through a TTL cache over a
// CredentialStore. It is safe for concurrent use.
type Authenticator struct {
	store       CredentialStore
	logger      *slog.Logger
	ttl         time.Duration
	negativeTTL time.Duration
	adminHash   [sha256.Size]byte
	hasAdmin    bool
	// now reads a monotonic clock, in nanoseconds. It is one clock read
	// where time.Now is two (wall and monotonic), and on the hot path the
	// clock read costs more than the cache lookup.
	now func() int64

	writeKeys     *cache[string]
	apiTokens     *cache[tokenRef]
	writeKeyCalls singleflight.Group
	apiTokenCalls singleflight.Group
}

type tokenRef struct {
	workspaceID, tokenID string
}

// NewAuthenticator returns an Authenticator over store. adminToken is the
// operator's token that may act on every workspace; empty disables it.
// ttl is how long answers about valid secrets are cached (DefaultTTL when
// zero or negative); unknown secrets are cached for at most a second.
func NewAuthenticator(store CredentialStore, adminToken string, ttl time.Duration, logger *slog.Logger) *Authenticator {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	a := &Authenticator{
		store:       store,
		logger:      logger,
		ttl:         ttl,
		negativeTTL: min(ttl, maxNegativeTTL),
		now:         monotonicClock(),
		writeKeys:   newCache[string](),
		apiTokens:   newCache[tokenRef](),
	}
	if adminToken != "" {
		a.adminHash = sha256.Sum256([]byte(adminToken))
		a.hasAdmin = true
	}
	return a
}

// ResolveWriteKey returns the workspace of an ingestion write key, or
// ErrUnknownCredential. A cached answer costs a map lookup and allocates
// nothing; only misses reach the store, and concurrent misses for the same
// key share one lookup.
func (a *Authenticator) ResolveWriteKey(ctx context.Context, key string) (workspaceID string, err error) {
	if key == "" || len(key) > maxSecretLen {
		return "", ErrUnknownCredential
	}
	ws, cached, known := a.writeKeys.get(key, a.now())
	if cached {
		if !known {
			return "", ErrUnknownCredential
		}
		return ws, nil
	}
	ws, err = lookup(ctx, a, a.writeKeys, &a.writeKeyCalls, key, a.store.LookupWriteKey)
	if err != nil && !errors.Is(err, ErrUnknownCredential) {
		return "", fmt.Errorf("resolve write key: %w", err)
	}
	return ws, err
}

// ResolveAPIToken returns the principal of a workspace API token, or
// ErrUnknownCredential. The admin token is not an API token: see
// AuthenticateBearer.
func (a *Authenticator) ResolveAPIToken(ctx context.Context, token string) (*Principal, error) {
	if token == "" || len(token) > maxSecretLen {
		return nil, ErrUnknownCredential
	}
	ref, cached, known := a.apiTokens.get(token, a.now())
	if cached && !known {
		return nil, ErrUnknownCredential
	}
	if !cached {
		var err error
		ref, err = lookup(ctx, a, a.apiTokens, &a.apiTokenCalls, token, func(ctx context.Context, hash []byte) (tokenRef, error) {
			ws, id, err := a.store.LookupAPIToken(ctx, hash)
			return tokenRef{workspaceID: ws, tokenID: id}, err
		})
		if errors.Is(err, ErrUnknownCredential) {
			return nil, err
		}
		if err != nil {
			return nil, fmt.Errorf("resolve API token: %w", err)
		}
	}
	return &Principal{WorkspaceID: ref.workspaceID, CredentialID: ref.tokenID}, nil
}

// lookup asks the store about secret on a cache miss and caches the answer.
func lookup[V any](ctx context.Context, a *Authenticator, c *cache[V], calls *singleflight.Group, secret string, fetch func(context.Context, []byte) (V, error)) (V, error) {
	v, err, _ := calls.Do(secret, func() (any, error) {
		gen := c.generation()
		// A flight that ended between our cache miss and Do has filled
		// the cache: use that rather than asking again.
		if v, cached, known := c.get(secret, a.now()); cached {
			if !known {
				return nil, ErrUnknownCredential
			}
			return v, nil
		}
		hash := sha256.Sum256([]byte(secret))
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
		defer cancel()
		v, err := fetch(ctx, hash[:])
		now := a.now()
		switch {
		case err == nil:
			// Clone: the caller's string may share memory with a whole
			// request body, which the cache must not keep alive.
			c.putKnown(strings.Clone(secret), hash, v, now+int64(a.ttl), now, gen)
			return v, nil
		case errors.Is(err, ErrUnknownCredential):
			c.putUnknown(strings.Clone(secret), now+int64(a.negativeTTL), now, gen)
			return nil, ErrUnknownCredential
		default:
			return nil, err
		}
	})
	if err != nil {
		var zero V
		return zero, err
	}
	return v.(V), nil
}

// Forget drops the cached answer for the secret whose digest is hash, so a
// revocation takes effect at once in this process. Other processes notice
// when their cached answer expires, within the TTL.
func (a *Authenticator) Forget(hash []byte) {
	if len(hash) != sha256.Size {
		return
	}
	h := [sha256.Size]byte(hash)
	if secret, ok := a.writeKeys.forget(h); ok {
		a.writeKeyCalls.Forget(secret)
	}
	if secret, ok := a.apiTokens.forget(h); ok {
		a.apiTokenCalls.Forget(secret)
	}
}

// AuthenticateBearer is an authn.AuthFunc for the management APIs. It
// reads "Authorization: Bearer <token>" and returns a *Principal: Admin for
// the admin token, else the workspace of a valid API token.
func (a *Authenticator) AuthenticateBearer(ctx context.Context, req authn.Request) (any, error) {
	token, ok := bearerToken(req.Header().Get("Authorization"))
	if !ok {
		return nil, authn.Errorf("missing bearer token: send the header \"Authorization: Bearer <token>\"")
	}
	if a.hasAdmin {
		// Compare digests: equal lengths, and constant time, so the
		// comparison says nothing about how much of a guess was right.
		h := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(h[:], a.adminHash[:]) == 1 {
			return &Principal{Admin: true}, nil
		}
	}
	p, err := a.ResolveAPIToken(ctx, token)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, ErrUnknownCredential):
		return nil, authn.Errorf("unknown or revoked API token")
	case errors.Is(err, context.Canceled):
		return nil, connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return nil, connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		// The store's error stays in the log: it may name hosts or tables.
		a.logger.ErrorContext(ctx, "cannot authenticate API token", "procedure", req.Procedure(), "error", err)
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("cannot check the API token now; retry later"))
	}
}

// monotonicClock returns a clock counting nanoseconds from now.
func monotonicClock() func() int64 {
	epoch := time.Now()
	return func() int64 { return int64(time.Since(epoch)) }
}

// bearerToken extracts the token of an RFC 6750 Authorization header. The
// scheme is case-insensitive (RFC 9110); the token is one word.
func bearerToken(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimLeft(header[len(scheme):], " ")
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", false
	}
	return token, true
}
