// Package redistest gives tests a client on a real Redis server.
//
// The server is named by WHISPER_TEST_REDIS_URL. Without it the test is
// skipped with a loud message, unless CI is set, where it fails. Tests share
// the server, so they keep apart by using keys under their own workspace ids,
// never by flushing.
package redistest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnvURL names the variable that points at the test server.
const EnvURL = "WHISPER_TEST_REDIS_URL"

// URL returns the server URL, skipping or failing t when there is none.
func URL(t testing.TB) string {
	t.Helper()
	u := os.Getenv(EnvURL)
	if u == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not set; CI must run integration tests against a real Redis", EnvURL)
		}
		t.Skipf("SKIPPING integration test: set %s (e.g. redis://127.0.0.1:6379/0) to run it", EnvURL)
	}
	return u
}

// New returns a client that answered PING, closed when t ends.
func New(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(URL(t))
	if err != nil {
		t.Fatalf("parse %s: %v", EnvURL, err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping redis at %s: %v", opts.Addr, err)
	}
	return c
}
