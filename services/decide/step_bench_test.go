package decide

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/proccpu"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

// BenchmarkDecisionStep measures the decision step itself, in process, on
// batches of 256 triggers as the consumer and the Decide batcher make them:
// audience (CEL over the profile), consent, variant (Thompson sampling over
// two variants, a tenth held out), send time (the users' activity
// histograms read from Redis, one round trip per batch), the contact policy
// (per-user daily and weekly caps per channel, minimum gap and quiet hours,
// reserved atomically in Redis in one pipeline per batch) and each
// decision's record encoded as it is stored and published. The PostgreSQL
// round trips around it (claims and reads before, rows after) are the
// consumer's and are measured by BenchmarkConsumerThroughput. Run with
// -cpu 1 for the rate per core; redis-server runs on the same cores, and
// its CPU is reported as well when it is local.
func BenchmarkDecisionStep(b *testing.B) {
	const (
		batchSize = 256
		users     = 20_000
	)
	h := newHarness(b)
	h.arms.SetStaleness(time.Second) // as targets runs it
	c := emailCampaign("unused")
	c.Audience = `profile.engagement_score < 90 && profile.stage != "churned"`
	c.Variants = append(c.Variants, &campaignv1.Variant{Id: "B", Weight: 1, Channel: campaignv1.Channel_CHANNEL_PUSH, ContentRef: "cart/b", Topic: "marketing"})
	c.HoldoutShare = 0.1
	c.OptimizeSendTime = true
	c.MaxSendDelay = durationpb.New(24 * time.Hour)
	c = h.create(b, tokenA, c)

	// Profiles as the snapshots hold them, with a timezone and a week of
	// activity each, so every send time is chosen from a histogram.
	ctx := context.Background()
	now := time.Now()
	profiles := make([]*profilev1.Profile, users)
	var acts []sendtime.Activity
	for i := range profiles {
		traits, err := structpb.NewStruct(map[string]any{"timezone": "Europe/Berlin", "plan": "pro", "email": fmt.Sprintf("u%d@example.com", i)})
		if err != nil {
			b.Fatal(err)
		}
		u := fmt.Sprintf("u%d", i)
		profiles[i] = &profilev1.Profile{
			WorkspaceId: h.wsA, UserId: u, ProfileId: uuid.NewString(), Traits: traits,
			Stage: "active", EngagementScore: int32(i % 100), ChurnRisk: 0.2,
		}
		for d := range 7 {
			acts = append(acts, sendtime.Activity{WorkspaceID: h.wsA, UserID: u, At: now.Add(-time.Duration(d*24+i%24) * time.Hour)})
		}
	}
	for chunk := range slices.Chunk(acts, 5000) {
		if err := h.svc.sendTime.ObserveBatch(ctx, chunk); err != nil {
			b.Fatal(err)
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	redisCPU := proccpu.Named("redis-server")
	cpu0, redis0 := processCPU(b), redisCPU()
	decided, sent, next := 0, 0, 0
	b.ResetTimer()
	for b.Loop() {
		items := make([]*evalItem, batchSize)
		at := time.Now()
		for i := range items {
			p := profiles[next%users]
			next++
			d := &decisionv1.Decision{
				DecisionId: uuid.NewString(), WorkspaceId: h.wsA, CampaignId: c.GetId(), CampaignVersion: c.GetVersion(),
				UserId: p.GetUserId(), TriggerId: fmt.Sprintf("event:m%d", next), DecideTime: timestamppb.New(at),
				Steps: []*decisionv1.Step{{Name: "trigger", Result: "event Cart Abandoned"}},
			}
			items[i] = &evalItem{c: c, d: d, in: userInputs{profile: p, unsubscribed: map[consentKey]bool{}}}
		}
		// The reservations are kept, as committed decisions keep theirs:
		// the harness's caps (1,000 a day) are far above the few
		// decisions per user a run makes.
		var w writes
		if _, err := h.svc.evaluateAll(ctx, items, rng, &w); err != nil {
			b.Fatal(err)
		}
		for _, sv := range w.saves {
			if _, err := proto.Marshal(sv.d); err != nil {
				b.Fatal(err)
			}
			if sv.d.GetOutcome() == decisionv1.Outcome_OUTCOME_SEND {
				sent++
			}
		}
		decided += len(w.saves)
	}
	b.StopTimer()
	// A tenth held out and a tenth outside the audience: the rest must
	// have gone through every step to a send, or this measured a shortcut.
	if sent < decided*7/10 {
		b.Fatalf("%d of %d decisions sent, want about 80 %%", sent, decided)
	}
	cpu := processCPU(b) - cpu0
	b.ReportMetric(float64(decided)/b.Elapsed().Seconds(), "decisions/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(decided), "cpu-µs/decision")
	if r := redisCPU(); r >= 0 && redis0 >= 0 {
		b.ReportMetric(float64((r-redis0).Microseconds())/float64(decided), "redis-cpu-µs/decision")
	}
}
