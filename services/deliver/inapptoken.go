package deliver

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/whisperhq/whisper/internal/auth"
)

// In-app tokens let a browser stream one user's in-app messages without
// holding the workspace's API token. A token is
//
//	wu_ base64url(payload || HMAC-SHA256(key, payload))
//	payload = version 1 | expiry, Unix seconds (uvarint) | len ws | ws | len user | user
//
// The key is derived from the deliver signing key (--deliver-tracking-key)
// with HKDF under its own label, so no tracking token, nor anything else
// signed with that key, verifies as an in-app token, and the reverse.
const (
	inAppTokenVersion = 1
	inAppKeyLabel     = "whisper in-app user token v1"
	// maxInAppTokenLen bounds the work a request causes before the MAC is
	// checked: the longest user id fits with room to spare.
	maxInAppTokenLen = 1024

	// DefaultInAppTokenTTL is how long a token is valid when the caller
	// asks for no particular time.
	DefaultInAppTokenTTL = time.Hour
	// MaxInAppTokenTTL caps a token's life: a token cannot be revoked, so
	// a stolen one must die soon.
	MaxInAppTokenTTL = 24 * time.Hour
)

var errInvalidInAppToken = errors.New("invalid in-app token")

// InAppTokens issues and verifies in-app tokens. It implements
// auth.UserTokenVerifier.
type InAppTokens struct {
	key []byte
	now func() time.Time
}

var _ auth.UserTokenVerifier = (*InAppTokens)(nil)

// NewInAppTokens returns InAppTokens keyed from secret, the deliver
// signing key (at least 32 bytes).
func NewInAppTokens(secret []byte) (*InAppTokens, error) {
	if len(secret) < 32 {
		return nil, fmt.Errorf("in-app token key: must be at least 32 bytes, got %d", len(secret))
	}
	key, err := hkdf.Key(sha256.New, secret, nil, inAppKeyLabel, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("derive in-app token key: %w", err)
	}
	return &InAppTokens{key: key, now: time.Now}, nil
}

func (t *InAppTokens) mac(payload []byte) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write(payload)
	return m.Sum(nil)
}

// Issue returns a token for user of workspace ws, valid for ttl, and its
// expiry. The expiry is in whole seconds, rounded down.
func (t *InAppTokens) Issue(ws, user string, ttl time.Duration) (string, time.Time) {
	exp := t.now().Add(ttl).Truncate(time.Second)
	payload := []byte{inAppTokenVersion}
	payload = binary.AppendUvarint(payload, uint64(exp.Unix()))
	for _, f := range []string{ws, user} {
		payload = binary.AppendUvarint(payload, uint64(len(f)))
		payload = append(payload, f...)
	}
	return auth.UserTokenPrefix + base64.RawURLEncoding.EncodeToString(append(payload, t.mac(payload)...)), exp
}

// VerifyUserToken returns the workspace and user of a genuine token; an
// error matching auth.ErrExpiredToken for a genuine one that has expired;
// any other error for anything else. The MAC is checked, in constant time,
// before any field is read.
func (t *InAppTokens) VerifyUserToken(token string) (workspaceID, userID string, err error) {
	body, ok := strings.CutPrefix(token, auth.UserTokenPrefix)
	if !ok || len(token) > maxInAppTokenLen {
		return "", "", errInvalidInAppToken
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(body)
	if err != nil || len(raw) < 1+sha256.Size {
		return "", "", errInvalidInAppToken
	}
	payload, sum := raw[:len(raw)-sha256.Size], raw[len(raw)-sha256.Size:]
	if !hmac.Equal(t.mac(payload), sum) || payload[0] != inAppTokenVersion {
		return "", "", errInvalidInAppToken
	}
	rest := payload[1:]
	exp, n := binary.Uvarint(rest)
	if n <= 0 {
		return "", "", errInvalidInAppToken
	}
	rest = rest[n:]
	var fields [2]string
	for i := range fields {
		l, n := binary.Uvarint(rest)
		if n <= 0 || l > uint64(len(rest)-n) {
			return "", "", errInvalidInAppToken
		}
		fields[i] = string(rest[n : n+int(l)])
		rest = rest[n+int(l):]
	}
	if len(rest) != 0 || fields[0] == "" || fields[1] == "" {
		return "", "", errInvalidInAppToken
	}
	if !t.now().Before(time.Unix(int64(exp), 0)) {
		return "", "", fmt.Errorf("in-app token: %w", auth.ErrExpiredToken)
	}
	return fields[0], fields[1], nil
}
