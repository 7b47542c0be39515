package decide

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/whisperhq/whisper/internal/kafka"
)

// Conversions are counted per campaign. The trigger and the goal event
// come in one poll: the goal still finds the decision its trigger made,
// although that decision is made in a batch.
func TestConversionsAreCountedPerCampaign(t *testing.T) {
	h := newHarness(t)
	var ids []string
	for _, trigger := range []string{"Trial Started", "Trial Extended"} {
		c := emailCampaign(trigger)
		c.GoalEvent = "Subscribed To Plan"
		c.AttributionWindow = durationpb.New(time.Hour)
		ids = append(ids, h.create(t, tokenA, c).GetId())
	}
	now := time.Now()
	h.produce(t, kafka.TopicEvents, h.wsA, "u1",
		track(h.wsA, "p1", "u1", "Trial Started", now, ""),
		track(h.wsA, "p2", "u1", "Subscribed To Plan", now.Add(time.Minute), ""))
	h.run(t)
	waitFor(t, func() bool { return h.banditRows(t, "conversion") >= 1 })
	for i, want := range []float64{1, 0} {
		if got := testutil.ToFloat64(h.svc.metrics.conversions.WithLabelValues(ids[i])); got != want {
			t.Errorf("conversions of campaign %d: %v, want %v", i, got, want)
		}
	}
}
