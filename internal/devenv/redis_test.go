package devenv

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestRedis(t *testing.T) {
	m, err := startRedis(20 * time.Millisecond)
	if err != nil {
		t.Fatalf("startRedis: %v", err)
	}
	defer m.Close()
	opts, err := redis.ParseURL("redis://" + m.Addr() + "/0")
	if err != nil {
		t.Fatalf("redis.ParseURL: %v", err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	ctx := t.Context()

	if err := rdb.Set(ctx, "greeting", "hello", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := rdb.Get(ctx, "greeting").Result(); err != nil || got != "hello" {
		t.Errorf("GET greeting = %q, %v; want %q, nil", got, err, "hello")
	}

	// Caps, rate limits and dedup windows depend on keys expiring by
	// themselves, which miniredis does not do by default; they expire up to
	// one tick late.
	if err := rdb.Set(ctx, "window", "1", 50*time.Millisecond).Err(); err != nil {
		t.Fatalf("SET with TTL: %v", err)
	}
	time.Sleep(150 * time.Millisecond)
	if got, err := rdb.Get(ctx, "window").Result(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET window after its TTL = %q, %v; want redis.Nil", got, err)
	}
}
