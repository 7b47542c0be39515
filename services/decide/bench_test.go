package decide

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/whisperhq/whisper/internal/auth"
)

// BenchmarkDecide measures one decision end to end in process: claim,
// audience, consent, variant, contact policy, the decision row and its
// record on whisper.decisions, one user per decision.
func BenchmarkDecide(b *testing.B) {
	h := newHarness(b)
	c := emailCampaign("unused")
	c.Audience = `profile.engagement_score < 90`
	c = h.create(b, tokenA, c)
	ctx := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: wsA})
	b.ResetTimer()
	start := time.Now()
	i := 0
	for b.Loop() {
		i++
		if _, err := h.svc.decideNow(ctx, wsA, c.GetId(), fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(i)/time.Since(start).Seconds(), "decisions/s")
}

// BenchmarkDecideParallel is BenchmarkDecide from concurrent callers, as
// the Decide RPC is used.
func BenchmarkDecideParallel(b *testing.B) {
	h := newHarness(b)
	c := h.create(b, tokenA, emailCampaign("unused"))
	ctx := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: wsA})
	var seq atomic.Int64
	b.SetParallelism(8)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			if _, err := h.svc.decideNow(ctx, wsA, c.GetId(), fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i), nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(seq.Load())/time.Since(start).Seconds(), "decisions/s")
}
