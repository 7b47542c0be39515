package tracking

import (
	"strings"
)

// Signer makes and verifies tracking URLs under one base URL.
type Signer struct {
	key     []byte
	keys    [][]byte // key first, then previous keys still accepted
	baseURL string
}

// NewSigner returns a Signer that signs with key and builds URLs under
// baseURL, the public URL of the deliver HTTP routes (e.g.
// https://t.example.com). An empty key would make every token forgeable,
// so it panics: it is a configuration error caught at startup.
func NewSigner(key []byte, baseURL string) *Signer {
	if len(key) == 0 {
		panic("tracking: NewSigner needs a non-empty key")
	}
	k := append([]byte(nil), key...)
	return &Signer{key: k, keys: [][]byte{k}, baseURL: strings.TrimRight(baseURL, "/")}
}

// AcceptPrevious returns a copy of s that also verifies tokens signed with
// the given previous keys, for key rotation: links in mail sent before the
// rotation keep working while new links use the new key.
func (s *Signer) AcceptPrevious(keys ...[]byte) *Signer {
	c := *s
	c.keys = [][]byte{s.key}
	for _, k := range keys {
		if len(k) > 0 {
			c.keys = append(c.keys, append([]byte(nil), k...))
		}
	}
	return &c
}

// OpenPixelURL is the URL of the open-tracking pixel for one delivery.
func (s *Signer) OpenPixelURL(ws, deliveryID, userID string) string {
	return s.baseURL + "/t/o/" + encodeToken(s.key, claims{Kind: kindOpen, WorkspaceID: ws, DeliveryID: deliveryID, UserID: userID})
}

// ClickURL is a signed redirect to target for one delivery.
func (s *Signer) ClickURL(ws, deliveryID, userID, target string) string {
	return s.baseURL + "/t/c/" + encodeToken(s.key, claims{Kind: kindClick, WorkspaceID: ws, DeliveryID: deliveryID, UserID: userID, Target: target})
}

// UnsubscribeURL is the signed unsubscribe link (and RFC 8058 one-click
// target) for one user's channel and topic.
func (s *Signer) UnsubscribeURL(ws, deliveryID, userID, channel, topic string) string {
	return s.baseURL + "/t/u/" + encodeToken(s.key, claims{Kind: kindUnsub, WorkspaceID: ws, DeliveryID: deliveryID, UserID: userID, Channel: channel, Topic: topic})
}
