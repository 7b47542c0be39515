package auth

import (
	"crypto/sha256"
	"sync"
)

// Cache bounds. Valid credentials are few (people create them), so the
// known side only needs a bound against surprises; unknown secrets are
// whatever a client makes up, so that side is kept small and is dropped
// whole when a flood of distinct bad secrets fills it.
const (
	maxKnown   = 1 << 17
	maxUnknown = 1 << 14
)

// cache remembers what the store said about presented secrets.
//
// It is keyed by the secret as presented, not by its digest: a hit then
// costs one map lookup and no SHA-256, which matters at ingestion rates.
// The secrets live only in this process's memory, as they already do while
// their requests are served; they are never logged or persisted. byHash
// maps digests back to secrets so that a revocation, which knows only the
// digest, can drop the entry.
type cache[V any] struct {
	mu      sync.RWMutex
	known   map[string]knownEntry[V]
	byHash  map[[sha256.Size]byte]string
	unknown map[string]int64 // secret → expiry on the Authenticator's clock
	// gen counts forgets. A lookup that started before a forget must not
	// store its (possibly revoked) answer after it.
	gen uint64
}

type knownEntry[V any] struct {
	val     V
	hash    [sha256.Size]byte
	expires int64
}

func newCache[V any]() *cache[V] {
	return &cache[V]{
		known:   make(map[string]knownEntry[V]),
		byHash:  make(map[[sha256.Size]byte]string),
		unknown: make(map[string]int64),
	}
}

// get reports what is cached for secret at now: cached is false when the
// store must be asked; otherwise known says whether the secret is valid.
func (c *cache[V]) get(secret string, now int64) (val V, cached, known bool) {
	c.mu.RLock()
	e, ok := c.known[secret]
	if ok && now < e.expires {
		c.mu.RUnlock()
		return e.val, true, true
	}
	exp, ok := c.unknown[secret]
	c.mu.RUnlock()
	if ok && now < exp {
		return val, true, false
	}
	return val, false, false
}

// generation is read before asking the store and passed to put.
func (c *cache[V]) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *cache[V]) putKnown(secret string, hash [sha256.Size]byte, val V, expires, now int64, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	delete(c.unknown, secret)
	if _, ok := c.known[secret]; !ok && len(c.known) >= maxKnown {
		c.evictKnownLocked(now)
	}
	c.known[secret] = knownEntry[V]{val: val, hash: hash, expires: expires}
	c.byHash[hash] = secret
}

func (c *cache[V]) putUnknown(secret string, expires, now int64, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if e, ok := c.known[secret]; ok {
		// Revoked elsewhere, and the TTL ran out here.
		delete(c.known, secret)
		delete(c.byHash, e.hash)
	}
	if _, ok := c.unknown[secret]; !ok && len(c.unknown) >= maxUnknown {
		for s, exp := range c.unknown {
			if now >= exp {
				delete(c.unknown, s)
			}
		}
		if len(c.unknown) >= maxUnknown {
			clear(c.unknown)
		}
	}
	c.unknown[secret] = expires
}

// evictKnownLocked drops expired entries and, if that is not enough, an
// arbitrary eighth of the rest, so a full cache is not swept on every put.
func (c *cache[V]) evictKnownLocked(now int64) {
	for s, e := range c.known {
		if now >= e.expires {
			delete(c.known, s)
			delete(c.byHash, e.hash)
		}
	}
	for s, e := range c.known {
		if len(c.known) < maxKnown-maxKnown/8 {
			break
		}
		delete(c.known, s)
		delete(c.byHash, e.hash)
	}
}

// forget drops the entry of the secret whose digest is hash, if cached,
// and returns that secret.
func (c *cache[V]) forget(hash [sha256.Size]byte) (secret string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	secret, ok = c.byHash[hash]
	if ok {
		delete(c.byHash, hash)
		delete(c.known, secret)
	}
	return secret, ok
}
