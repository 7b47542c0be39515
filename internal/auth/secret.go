package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"math/big"
	"unicode/utf8"
)

// Secret prefixes say what a credential is when it turns up in a log, a
// config file or a secret scanner's report.
const (
	WriteKeyPrefix = "wk_"
	APITokenPrefix = "wt_"
)

// secretBytes is the entropy of a secret: 256 bits, far beyond guessing.
const secretBytes = 32

// secretDigits is the length of secretBytes in base 62, so every secret of
// a kind has the same length.
const secretDigits = 43

// NewSecret returns prefix followed by 32 random bytes in base 62. Base 62
// keeps the secret one word: a double click selects all of it, and it needs
// no escaping in URLs, shells or JSON.
func NewSecret(prefix string) (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	digits := new(big.Int).SetBytes(b).Text(62)
	buf := make([]byte, 0, len(prefix)+secretDigits)
	buf = append(buf, prefix...)
	for range secretDigits - len(digits) {
		buf = append(buf, '0')
	}
	buf = append(buf, digits...)
	return string(buf), nil
}

// HashSecret returns the SHA-256 digest under which a secret is stored.
//
// A fast, unsalted hash is right here, unlike for passwords: our secrets
// carry 256 random bits, so no dictionary or brute force can invert the
// digest, and a deterministic digest lets a request find its credential by
// an indexed equality lookup. A slow KDF would only add latency to every
// cache miss.
func HashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// SecretPrefix returns the start of a secret that may be shown and stored
// to recognise it by: for our secrets the kind prefix and five random
// characters, too few to help a guess. A short secret (a pinned
// development key) shows only its first quarter.
func SecretPrefix(secret string) string {
	n := 8
	if len(secret) < 32 {
		n = len(secret) / 4
	}
	// Never cut a character in two: the prefix travels in protobuf
	// strings, which must be valid UTF-8.
	for n > 0 && n < len(secret) && !utf8.RuneStart(secret[n]) {
		n--
	}
	return secret[:n]
}
