package tracking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
)

// Token kinds, one per route.
const (
	kindOpen  byte = 'o'
	kindClick byte = 'c'
	kindUnsub byte = 'u'
)

const (
	tokenVersion = 1
	macLen       = 16 // 128 bits of HMAC-SHA256
	// maxTokenLen bounds the work a request can cause before the MAC is
	// checked; real tokens are far shorter unless the click target is
	// huge.
	maxTokenLen = 8 << 10
)

var b64 = base64.RawURLEncoding.Strict()

// ErrInvalidToken is returned for any token that does not verify.
var ErrInvalidToken = errors.New("invalid tracking token")

// claims are the fields a token carries.
type claims struct {
	Kind        byte
	WorkspaceID string
	DeliveryID  string
	UserID      string
	Target      string // click
	Channel     string // unsubscribe
	Topic       string // unsubscribe
}

func (c claims) fields() []string {
	f := []string{c.WorkspaceID, c.DeliveryID, c.UserID}
	switch c.Kind {
	case kindClick:
		f = append(f, c.Target)
	case kindUnsub:
		f = append(f, c.Channel, c.Topic)
	}
	return f
}

func mac(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("whisper.tracking.v1\x00"))
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}

func encodeToken(key []byte, c claims) string {
	payload := []byte{tokenVersion, c.Kind}
	for _, f := range c.fields() {
		payload = binary.AppendUvarint(payload, uint64(len(f)))
		payload = append(payload, f...)
	}
	return b64.EncodeToString(append(payload, mac(key, payload)...))
}

// decodeToken verifies tok under any of keys and returns its claims if it
// is of kind want.
func decodeToken(keys [][]byte, tok string, want byte) (claims, error) {
	if len(tok) > maxTokenLen {
		return claims{}, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, maxTokenLen)
	}
	raw, err := b64.DecodeString(tok)
	if err != nil {
		return claims{}, fmt.Errorf("%w: not base64url", ErrInvalidToken)
	}
	if len(raw) < 2+macLen {
		return claims{}, fmt.Errorf("%w: too short", ErrInvalidToken)
	}
	payload, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	ok := false
	for _, k := range keys {
		// hmac.Equal is constant-time; every key is tried so timing does
		// not reveal which one matched.
		if hmac.Equal(mac(k, payload), sum) {
			ok = true
		}
	}
	if !ok {
		return claims{}, fmt.Errorf("%w: bad signature", ErrInvalidToken)
	}
	if payload[0] != tokenVersion {
		return claims{}, fmt.Errorf("%w: version %d", ErrInvalidToken, payload[0])
	}
	c := claims{Kind: payload[1]}
	if c.Kind != want {
		return claims{}, fmt.Errorf("%w: kind %q where %q was expected", ErrInvalidToken, c.Kind, want)
	}
	n := 3
	switch c.Kind {
	case kindClick:
		n = 4
	case kindUnsub:
		n = 5
	}
	rest := payload[2:]
	fields := make([]string, n)
	for i := range fields {
		l, w := binary.Uvarint(rest)
		if w <= 0 || l > uint64(len(rest)-w) {
			return claims{}, fmt.Errorf("%w: malformed field %d", ErrInvalidToken, i)
		}
		fields[i] = string(rest[w : w+int(l)])
		rest = rest[w+int(l):]
	}
	if len(rest) != 0 {
		return claims{}, fmt.Errorf("%w: trailing bytes", ErrInvalidToken)
	}
	c.WorkspaceID, c.DeliveryID, c.UserID = fields[0], fields[1], fields[2]
	switch c.Kind {
	case kindClick:
		c.Target = fields[3]
	case kindUnsub:
		c.Channel, c.Topic = fields[3], fields[4]
	}
	return c, nil
}
