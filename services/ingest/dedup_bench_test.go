package ingest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/proccpu"
	"github.com/whisperhq/whisper/internal/redistest"
)

// BenchmarkDedup measures the dedup window's work per request of 100 new
// UUID message ids, as the ingest path does it: fingerprints, the check,
// and the mark after the broker's answer. Today's set starts with a million
// members, so Redis works on a set of the size a busy workspace has. It
// reports the CPU per event of this process and of a local redis-server.
//
//   - first-day: no set for yesterday (a workspace's first day, and the
//     load benchmark's fresh Redis).
//   - steady: yesterday's set holds a million members too, and is checked.
//   - upgrade: as steady, plus a text-id set of the version before
//     fingerprints, checked as text while it exists.
func BenchmarkDedup(b *testing.B) {
	for _, c := range []struct {
		name              string
		yesterday, legacy bool
	}{
		{"first-day", false, false},
		{"steady", true, false},
		{"upgrade", true, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			rdb := redistest.New(b)
			now := time.Date(2024, 5, 2, 12, 0, 0, 0, time.UTC)
			d := newDedup(rdb, func() time.Time { return now })
			ws := uuid.NewString()
			fill := func(key string, members func(i int) any) {
				b.Helper()
				const n, per = 1_000_000, 1000
				batch := make([]any, per)
				pipe := rdb.Pipeline()
				for i := 0; i < n; i += per {
					for j := range batch {
						batch[j] = members(i + j)
					}
					pipe.SAdd(ctx, key, batch...)
					if pipe.Len() == 50 {
						if _, err := pipe.Exec(ctx); err != nil {
							b.Fatal(err)
						}
					}
				}
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { rdb.Del(context.Background(), key) })
			}
			fingerprint := func(int) any { return fingerprints([]string{uuid.NewString()})[0] }
			fill(dedupKey(ws, now), fingerprint)
			if c.yesterday {
				fill(dedupKey(ws, now.Add(-24*time.Hour)), fingerprint)
			}
			if c.legacy {
				fill(legacyKey(ws, now.Add(-24*time.Hour)), func(int) any { return uuid.NewString() })
			}
			// Ids shaped like UUIDs, from a counter: generating random
			// ones would cost more CPU than the dedup itself.
			ids := make([]string, 100)
			next := uint64(0)
			redisCPU := proccpu.Named("redis-server")
			cpu0, err := proccpu.Self()
			if err != nil {
				b.Fatal(err)
			}
			redis0 := redisCPU()
			b.ResetTimer()
			for b.Loop() {
				for i := range ids {
					next++
					hex := strconv.FormatUint(next, 16)
					ids[i] = "0196b3e0-7c2a-7d41-9a7e-" + strings.Repeat("0", 12-len(hex)) + hex
				}
				members := fingerprints(ids)
				seen, err := d.seen(ctx, ws, ids, members)
				if err != nil {
					b.Fatal(err)
				}
				for i, yes := range seen {
					if yes {
						b.Fatalf("new id %s reported seen", ids[i])
					}
				}
				if err := d.mark(ctx, ws, members); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu, err := proccpu.Self()
			if err != nil {
				b.Fatal(err)
			}
			events := float64(b.N * len(ids))
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64((cpu-cpu0).Microseconds())/events, "cpu-µs/event")
			if r := redisCPU(); r >= 0 && redis0 >= 0 {
				b.ReportMetric(float64((r-redis0).Microseconds())/events, "redis-cpu-µs/event")
			}
		})
	}
}
