package ingest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/whisperhq/whisper/internal/redistest"
)

// newTestDedup returns a dedup on real Redis whose clock reads *now, its
// client, and a new workspace id.
func newTestDedup(t *testing.T, now *time.Time) (*dedup, *redis.Client, string) {
	rdb := redistest.New(t)
	return newDedup(rdb, func() time.Time { return *now }), rdb, "ws-" + randomHex(t)
}

func TestDedupWindowAcrossDays(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2024, 5, 1, 23, 0, 0, 0, time.UTC)
	d, rdb, ws := newTestDedup(t, &now)

	ids := []string{"a", "8d3f1c2e-0b5a-4e0e-9d7c-2f4b1a6c9e10"}
	if err := d.mark(ctx, ws, fingerprints(ids[:1])); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		after time.Duration
		want  []bool
	}{
		{0, []bool{true, false}},
		// Past midnight, a is in yesterday's set.
		{2 * time.Hour, []bool{true, false}},
		// Two days on, the window has passed.
		{26 * time.Hour, []bool{false, false}},
	} {
		now = time.Date(2024, 5, 1, 23, 0, 0, 0, time.UTC).Add(step.after)
		got, err := d.seen(ctx, ws, ids, fingerprints(ids))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, step.want) {
			t.Errorf("%v after the mark: seen = %v, want %v", step.after, got, step.want)
		}
	}
	if ttl := rdb.TTL(ctx, dedupKey(ws, time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC))).Val(); ttl < 2*DedupWindow {
		t.Errorf("TTL of a day's set = %v, want at least %v", ttl, 2*DedupWindow)
	}
}

// A set written by the version before fingerprints holds ids as text; its
// ids are still caught, and once it is gone it is no longer asked about.
func TestDedupReadsLegacySets(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2024, 5, 2, 1, 0, 0, 0, time.UTC)
	d, rdb, ws := newTestDedup(t, &now)
	legacyYesterday := "whisper:ingest:dedup:{" + ws + "}:20240501"
	if err := rdb.SAdd(ctx, legacyYesterday, "old-1").Err(); err != nil {
		t.Fatal(err)
	}
	got, err := d.seen(ctx, ws, []string{"old-1", "new-1"}, fingerprints([]string{"old-1", "new-1"}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []bool{true, false}) {
		t.Errorf("seen = %v, want old-1 caught by the legacy set", got)
	}

	// Gone (expired): for a minute dedup trusts that it was there, then
	// asks again and stops checking it.
	rdb.Del(ctx, legacyYesterday)
	if _, err := d.seen(ctx, ws, []string{"x"}, fingerprints([]string{"x"})); err != nil {
		t.Fatal(err)
	}
	if p, known := d.present(legacyYesterday, now); !known || !p {
		t.Errorf("within a minute, presence of the legacy set = %v (known %v), want still present", p, known)
	}
	now = now.Add(presenceTTL + time.Second)
	if _, err := d.seen(ctx, ws, []string{"x"}, fingerprints([]string{"x"})); err != nil {
		t.Fatal(err)
	}
	if p, known := d.present(legacyYesterday, now); !known || p {
		t.Errorf("after a minute, presence of the legacy set = %v (known %v), want known absent", p, known)
	}
	// A set that appears is found within the minute after.
	rdb.SAdd(ctx, legacyYesterday, "old-2")
	now = now.Add(presenceTTL + time.Second)
	got, err = d.seen(ctx, ws, []string{"old-2"}, fingerprints([]string{"old-2"}))
	if err != nil || !got[0] {
		t.Errorf("seen(old-2) = %v, %v; want caught once the set is asked about again", got, err)
	}
}

func TestDedupForgetsStalePresence(t *testing.T) {
	now := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)
	d := newDedup(nil, func() time.Time { return now })
	for i := range 100 {
		d.learn("k"+strconv.Itoa(i), false, now)
	}
	now = now.Add(2 * presenceTTL)
	d.learn("fresh", true, now)
	if len(d.presence) != 1 {
		t.Errorf("%d keys remembered, want only the fresh one", len(d.presence))
	}
}

func TestFingerprintsAreStableAndDistinct(t *testing.T) {
	a := fingerprints([]string{"m-1", "m-2", "m-1"})
	if a[0] != a[2] || a[0] == a[1] {
		t.Errorf("fingerprints = %q; want equal ids equal, different ids different", a)
	}
	// The member format is what other processes and versions share: pin it
	// (the first 16 bytes of `printf m-1 | sha256sum`).
	if got := hex.EncodeToString([]byte(a[0].(string))); got != "a461b472cb41a9ec3dee5c90cf8e4a78" {
		t.Errorf("fingerprint of m-1 = %s; changing it lets retries through during an upgrade", got)
	}
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
