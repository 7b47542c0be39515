package decide

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/services/decide/contact"
)

var t0 = time.Now().UTC().Truncate(time.Second)

func outcomes(ds []*decisionv1.Decision) map[string]decisionv1.Outcome {
	m := map[string]decisionv1.Outcome{}
	for _, d := range ds {
		m[d.GetUserId()] = d.GetOutcome()
	}
	return m
}

// An event triggers exactly one decision, even when it is delivered twice
// and when a second consumer group replays the topic.
func TestEventTriggersOneDecision(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Cart Abandoned")
	c.GetTrigger().GetEvent().Condition = `event.properties.total > 50` // a double against an int
	c = h.create(t, tokenA, c)
	h.run(t)
	ev := track(h.wsA, "m1", "u1", "Cart Abandoned", t0, `{"total": 80}`)
	h.produce(t, kafka.TopicEvents, h.wsA, "u1",
		ev,
		ev, // redelivered
		track(h.wsA, "m2", "u2", "Cart Abandoned", t0, `{"total": 10}`), // condition false
		track(h.wsA, "m3", "u1", "Viewed", t0, `{}`),                    // another event
	)
	h.decisionsOf(t, c.GetId(), 1)
	got := h.settledDecisions(t, c.GetId(), 1)
	if len(got) != 1 {
		t.Fatalf("got %d decisions, want 1: %v", len(got), got)
	}
	d := got[0]
	want := &decisionv1.Decision{
		WorkspaceId: h.wsA, CampaignId: c.GetId(), CampaignVersion: 1, UserId: "u1", TriggerId: "event:m1",
		Outcome: decisionv1.Outcome_OUTCOME_SEND, VariantId: "A", Channel: campaignv1.Channel_CHANNEL_EMAIL,
		ContentRef: "cart/a", Topic: "marketing",
		// The trigger's properties travel with the decision, for deliver's templates.
		TriggerProperties: []byte(`{"total": 80}`),
	}
	opts := cmpDecision()
	if diff := cmp.Diff(want, d, opts...); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}
	// The contact policy's own steps come between send_time and its verdict.
	names := stepNames(d)
	if len(names) < 7 || !slices.Equal(names[:5], []string{"trigger", "audience", "consent", "variant", "send_time"}) ||
		names[len(names)-1] != "policy" || !slices.Contains(names, "policy.daily_cap") {
		t.Errorf("steps %v", names)
	}

	// The four records are processed: their whisper.events partitions
	// report no lag under decide's group.
	waitFor(t, func() bool {
		mfs, err := h.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var lag float64
		partitions := 0
		for _, mf := range mfs {
			if mf.GetName() != "whisper_kafka_consumer_lag_records" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["group"] == DefaultGroup && labels["topic"] == kafka.TopicEvents {
					lag += m.GetGauge().GetValue()
					partitions++
				}
			}
		}
		return lag == 0 && partitions >= 1
	})

	// A second service in another group replays the topic from the start:
	// the claims hold, nothing new is decided or published.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(h.brokers...)}, ConsumerOpts("decide-replay")...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	replay, err := New(Options{Store: h.store, Client: cl, Policy: h.policy, Bandit: h.svc.bandit, SendTime: h.svc.sendTime})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- replay.Run(ctx) }()
	// Until the replay has applied all four records (counted after its
	// poll's transaction commits).
	waitFor(t, func() bool {
		var m dto.Metric
		replay.metrics.records.WithLabelValues(kafka.TopicEvents, "applied").Write(&m)
		return m.GetCounter().GetValue() == 4
	})
	cancel()
	<-done
	if got := h.settledDecisions(t, c.GetId(), 1); len(got) != 1 {
		t.Errorf("after replay: %d decisions on the topic, want 1", len(got))
	}
	list, err := h.decisions[tokenA].ListDecisions(context.Background(), &decisionv1.ListDecisionsRequest{CampaignId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetDecisions()) != 1 {
		t.Errorf("ListDecisions: %d, want 1", len(list.GetDecisions()))
	}
	if n := h.banditRows(t, "exposure"); n != 1 {
		t.Errorf("exposures recorded: %d, want 1", n)
	}
	explained, err := h.decisions[tokenA].ExplainDecision(context.Background(), &decisionv1.ExplainDecisionRequest{DecisionId: d.GetDecisionId()})
	if err != nil {
		t.Fatal(err)
	}
	if explained.GetCampaign().GetVersion() != 1 || explained.GetCampaign().GetTrigger().GetEvent().GetCondition() == "" {
		t.Errorf("ExplainDecision campaign = %v", explained.GetCampaign())
	}
}

func cmpDecision() []cmp.Option {
	return []cmp.Option{
		protocmpTransform(),
		ignore("decision_id", "profile_id", "send_time", "decide_time", "steps"),
	}
}

func stepNames(d *decisionv1.Decision) []string {
	var out []string
	for _, s := range d.GetSteps() {
		out = append(out, s.GetName())
	}
	return out
}

// Unsubscribed users are never contacted, transactional or not; the
// latest consent event wins.
func TestUnsubscribedUsersAreSkipped(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Password Reset")
	c.Transactional = true
	c.Variants[0].Topic = ""
	c = h.create(t, tokenA, c)
	h.run(t)
	h.produce(t, kafka.TopicEvents, h.wsA, "u1",
		track(h.wsA, "c1", "u1", EventUnsubscribed, t0.Add(-time.Hour), `{"channel":"email"}`))
	h.produce(t, kafka.TopicEvents, h.wsA, "u2",
		track(h.wsA, "c2", "u2", EventUnsubscribed, t0.Add(-time.Hour), `{"channel":"email"}`),
		track(h.wsA, "c3", "u2", EventSubscribed, t0.Add(-time.Minute), `{"channel":"email"}`))
	h.produce(t, kafka.TopicEvents, h.wsA, "u3",
		track(h.wsA, "c4", "u3", EventUnsubscribed, t0.Add(-time.Hour), `{"channel":"sms"}`))
	for _, u := range []string{"u1", "u2", "u3"} {
		h.produce(t, kafka.TopicEvents, h.wsA, u, track(h.wsA, "r-"+u, u, "Password Reset", t0, ""))
	}
	got := outcomes(h.decisionsOf(t, c.GetId(), 3))
	want := map[string]decisionv1.Outcome{
		"u1": decisionv1.Outcome_OUTCOME_SKIPPED_CONSENT,
		"u2": decisionv1.Outcome_OUTCOME_SEND, // subscribed again later
		"u3": decisionv1.Outcome_OUTCOME_SEND, // left sms, not email
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}

	// Users who left a topic on one channel are reached on the other
	// variant's channel: the bandit only sees the variants they accept.
	multi := emailCampaign("Order Shipped")
	multi.Variants[0].Topic = "orders"
	multi.Variants = append(multi.Variants, &campaignv1.Variant{Id: "S", Weight: 1, Channel: campaignv1.Channel_CHANNEL_SMS, ContentRef: "ship/sms", Topic: "orders"})
	multi = h.create(t, tokenA, multi)
	const leavers = 8
	for i := range leavers {
		u := fmt.Sprintf("l%d", i)
		h.produce(t, kafka.TopicEvents, h.wsA, u,
			track(h.wsA, "c-"+u, u, EventUnsubscribed, t0.Add(-time.Hour), `{"channel":"email","topic":"orders"}`),
			track(h.wsA, "o-"+u, u, "Order Shipped", t0, ""))
	}
	ds := h.decisionsOf(t, multi.GetId(), leavers)
	if len(ds) != leavers {
		t.Fatalf("%d decisions, want %d", len(ds), leavers)
	}
	for _, d := range ds {
		if d.GetVariantId() != "S" || d.GetChannel() != campaignv1.Channel_CHANNEL_SMS {
			t.Errorf("%s: variant %q on %v, want S on sms", d.GetUserId(), d.GetVariantId(), d.GetChannel())
		}
		if got := d.GetSteps()[2].GetInputs()["variant A (email/orders)"]; got != "unsubscribed from topic" {
			t.Errorf("%s: consent step says %q for variant A", d.GetUserId(), got)
		}
	}
}

// A user who converts during the wait exits it; one who does not is
// decided when the delay elapses, with the exit event of another user
// leaving it alone.
func TestWaitExitsWhenTheUserConverts(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Cart Abandoned")
	c.Wait = &campaignv1.Wait{Delay: durationpb.New(5 * time.Second), ExitEvents: []string{"Order Completed"}}
	c = h.create(t, tokenA, c)
	h.run(t)
	now := time.Now()
	h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, "w1", "u1", "Cart Abandoned", now, ""))
	h.produce(t, kafka.TopicEvents, h.wsA, "u2", track(h.wsA, "w2", "u2", "Cart Abandoned", now, ""))
	// Both wait: the Decide-like claim exists with outcome waiting.
	waitFor(t, func() bool {
		list, err := h.decisions[tokenA].ListDecisions(context.Background(), &decisionv1.ListDecisionsRequest{CampaignId: c.GetId()})
		return err == nil && len(list.GetDecisions()) == 2
	})
	h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, "w3", "u1", "Order Completed", time.Now(), ""))
	got := h.decisionsOf(t, c.GetId(), 2)
	want := map[string]decisionv1.Outcome{
		"u1": decisionv1.Outcome_OUTCOME_EXITED,
		"u2": decisionv1.Outcome_OUTCOME_SEND,
	}
	if diff := cmp.Diff(want, outcomes(got)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	for _, d := range got {
		if d.GetUserId() == "u2" && !slices.Contains(stepNames(d), "wait") {
			t.Errorf("u2's decision does not explain its wait: %v", stepNames(d))
		}
	}
}

// A wait for an event decides as soon as the event comes, and exits when
// it does not come in time.
func TestWaitForEvent(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Signed Up")
	c.Wait = &campaignv1.Wait{Delay: durationpb.New(5 * time.Second), WaitForEvent: "Verified Email"}
	c = h.create(t, tokenA, c)
	h.run(t)
	now := time.Now()
	h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, "s1", "u1", "Signed Up", now, ""))
	h.produce(t, kafka.TopicEvents, h.wsA, "u2", track(h.wsA, "s2", "u2", "Signed Up", now, ""))
	h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, "s3", "u1", "Verified Email", now.Add(time.Millisecond), ""))
	got := h.decisionsOf(t, c.GetId(), 2)
	want := map[string]decisionv1.Outcome{
		"u1": decisionv1.Outcome_OUTCOME_SEND,
		"u2": decisionv1.Outcome_OUTCOME_EXITED,
	}
	if diff := cmp.Diff(want, outcomes(got)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

// Held-out users get a decision with outcome holdout and no message.
func TestHoldoutUsersGetNoMessage(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Viewed Pricing")
	c.HoldoutShare = 0.5
	c = h.create(t, tokenA, c)
	h.run(t)
	const users = 40
	for i := range users {
		u := fmt.Sprintf("u%d", i)
		h.produce(t, kafka.TopicEvents, h.wsA, u, track(h.wsA, "h"+u, u, "Viewed Pricing", t0, ""))
	}
	got := h.decisionsOf(t, c.GetId(), users)
	if len(got) != users {
		t.Fatalf("%d decisions, want %d", len(got), users)
	}
	held := 0
	for _, d := range got {
		switch d.GetOutcome() {
		case decisionv1.Outcome_OUTCOME_HOLDOUT:
			held++
			if d.GetVariantId() != "" || d.GetChannel() != campaignv1.Channel_CHANNEL_UNSPECIFIED || d.GetSendTime() != nil {
				t.Errorf("holdout decision carries a message: %v", d)
			}
		case decisionv1.Outcome_OUTCOME_SEND:
		default:
			t.Errorf("outcome %v", d.GetOutcome())
		}
	}
	if held == 0 || held == users {
		t.Errorf("%d of %d held out with share 0.5", held, users)
	}
	if n := h.banditRows(t, "exposure"); n != users-held {
		t.Errorf("exposures %d, want %d (sent only)", n, users-held)
	}
}

// A goal event within the window converts the sent decision once, however
// often it happens.
func TestGoalEventRewardsOnce(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Trial Started")
	c.GoalEvent = "Subscribed To Plan"
	c.AttributionWindow = durationpb.New(time.Hour)
	c = h.create(t, tokenA, c)
	h.run(t)
	h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, "g1", "u1", "Trial Started", t0, ""))
	h.decisionsOf(t, c.GetId(), 1)
	h.produce(t, kafka.TopicEvents, h.wsA, "u1",
		track(h.wsA, "g2", "u1", "Subscribed To Plan", time.Now().Add(time.Minute), ""),
		track(h.wsA, "g3", "u1", "Subscribed To Plan", time.Now().Add(2*time.Minute), ""),
		track(h.wsA, "g4", "u1", "Subscribed To Plan", time.Now().Add(3*time.Hour), ""), // outside the window
	)
	waitFor(t, func() bool { return h.banditRows(t, "conversion") >= 1 })
	time.Sleep(500 * time.Millisecond)
	if n := h.banditRows(t, "conversion"); n != 1 {
		t.Errorf("conversions %d, want 1", n)
	}
}

// A profile entering a stage triggers a campaign whose audience reads the
// changed profile; a change that stays in the stage does not.
func TestProfileChangeTrigger(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("")
	c.Trigger = &campaignv1.Trigger{Kind: &campaignv1.Trigger_ProfileChange{ProfileChange: &campaignv1.ProfileChangeTrigger{
		Change: &campaignv1.ProfileChangeTrigger_EnteredStage{EnteredStage: "at_risk"}}}}
	c.Audience = `profile.engagement_score < 40.5` // an int against a double
	c = h.create(t, tokenA, c)
	h.run(t)
	change := func(id, user, prev string, score int32, kinds ...profilev1.ProfileChangeKind) *profilev1.ProfileChange {
		return &profilev1.ProfileChange{
			ChangeId: id, WorkspaceId: h.wsA, Kinds: kinds, PreviousStage: prev, ChangeTime: timestamppb.New(t0),
			Profile: &profilev1.Profile{WorkspaceId: h.wsA, ProfileId: "p-" + user, UserId: user, Stage: "at_risk", EngagementScore: score},
		}
	}
	stage := profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_STAGE
	h.produce(t, kafka.TopicProfiles, h.wsA, "u1", change("ch1", "u1", "engaged", 20, stage))
	h.produce(t, kafka.TopicProfiles, h.wsA, "u2", change("ch2", "u2", "engaged", 70, stage))
	h.produce(t, kafka.TopicProfiles, h.wsA, "u3", change("ch3", "u3", "at_risk", 10, profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_TRAITS))
	got := h.decisionsOf(t, c.GetId(), 2)
	want := map[string]decisionv1.Outcome{
		"u1": decisionv1.Outcome_OUTCOME_SEND,
		"u2": decisionv1.Outcome_OUTCOME_SKIPPED_AUDIENCE,
	}
	if diff := cmp.Diff(want, outcomes(got)); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
	for _, d := range got {
		if d.GetUserId() == "u1" && d.GetProfileId() != "p-u1" {
			t.Errorf("profile id %q", d.GetProfileId())
		}
	}
}

// Decide is idempotent by request id and publishes its decision once.
func TestDecideRPC(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused"))
	req := &decisionv1.DecideRequest{CampaignId: c.GetId(), UserId: "u1", RequestId: "r1"}
	first, err := h.decisions[tokenA].Decide(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.decisions[tokenA].Decide(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.GetDecision().GetDecisionId() != again.GetDecision().GetDecisionId() {
		t.Errorf("a repeated request id decided twice: %s, %s", first.GetDecision().GetDecisionId(), again.GetDecision().GetDecisionId())
	}
	if got := first.GetDecision().GetOutcome(); got != decisionv1.Outcome_OUTCOME_SEND {
		t.Errorf("outcome %v", got)
	}
	if got := h.settledDecisions(t, c.GetId(), 1); len(got) != 1 {
		t.Errorf("%d decisions published, want 1", len(got))
	}
	if _, err := h.campaigns[tokenA].PauseCampaign(ctx, &campaignv1.PauseCampaignRequest{CampaignId: c.GetId()}); err != nil {
		t.Fatal(err)
	}
	_, err = h.decisions[tokenA].Decide(ctx, &decisionv1.DecideRequest{CampaignId: c.GetId(), UserId: "u2"})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("Decide on a paused campaign: %v, want FailedPrecondition", err)
	}
	for _, req := range []*decisionv1.DecideRequest{
		{CampaignId: c.GetId()},
		{CampaignId: c.GetId(), UserId: "u\x00"},
		{CampaignId: "c1", UserId: "u1"},
	} {
		_, err = h.decisions[tokenA].Decide(ctx, req)
		if connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("Decide(%v): %v, want InvalidArgument", req, err)
		}
	}
}

// Versions are immutable; pause and activate do not make versions; lists
// page.
func TestCampaignLifecycle(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cl := h.campaigns[tokenA]
	c := h.create(t, tokenA, emailCampaign("Cart Abandoned"))
	upd := proto.CloneOf(c)
	upd.Name = "cart reminder v2"
	upd.Variants[0].ContentRef = "cart/b"
	res, err := cl.UpdateCampaign(ctx, &campaignv1.UpdateCampaignRequest{Campaign: upd})
	if err != nil {
		t.Fatal(err)
	}
	if res.GetCampaign().GetVersion() != 2 || res.GetCampaign().GetStatus() != campaignv1.CampaignStatus_CAMPAIGN_STATUS_ACTIVE {
		t.Errorf("update: version %d status %v", res.GetCampaign().GetVersion(), res.GetCampaign().GetStatus())
	}
	v1, err := cl.GetCampaign(ctx, &campaignv1.GetCampaignRequest{CampaignId: c.GetId(), Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := v1.GetCampaign().GetVariants()[0].GetContentRef(); got != "cart/a" {
		t.Errorf("version 1 content %q, want cart/a", got)
	}
	p, err := cl.PauseCampaign(ctx, &campaignv1.PauseCampaignRequest{CampaignId: c.GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if p.GetCampaign().GetVersion() != 2 || p.GetCampaign().GetStatus() != campaignv1.CampaignStatus_CAMPAIGN_STATUS_PAUSED {
		t.Errorf("pause: version %d status %v", p.GetCampaign().GetVersion(), p.GetCampaign().GetStatus())
	}
	for range 2 {
		h.create(t, tokenA, emailCampaign("Other"))
	}
	var ids []string
	token := ""
	for {
		page, err := cl.ListCampaigns(ctx, &campaignv1.ListCampaignsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.GetCampaigns() {
			ids = append(ids, c.GetId())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(ids) != 3 || ids[0] != c.GetId() {
		t.Errorf("listed %v", ids)
	}
	_, err = cl.UpdateCampaign(ctx, &campaignv1.UpdateCampaignRequest{Campaign: func() *campaignv1.Campaign {
		x := proto.CloneOf(upd)
		x.Id = "00000000-0000-0000-0000-000000000001"
		return x
	}()})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("update of an unknown campaign: %v", err)
	}
}

// No call reaches another workspace's campaigns or decisions, and events
// of one workspace trigger only its own campaigns.
func TestWorkspaceIsolation(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.create(t, tokenA, emailCampaign("Cart Abandoned"))
	h.run(t)
	_, err := h.campaigns[tokenB].GetCampaign(ctx, &campaignv1.GetCampaignRequest{CampaignId: a.GetId()})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("B reads A's campaign: %v, want NotFound", err)
	}
	_, err = h.campaigns[tokenB].GetCampaign(ctx, &campaignv1.GetCampaignRequest{WorkspaceId: h.wsA, CampaignId: a.GetId()})
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("B names A's workspace: %v, want PermissionDenied", err)
	}
	_, err = h.campaigns[tokenB].PauseCampaign(ctx, &campaignv1.PauseCampaignRequest{CampaignId: a.GetId()})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("B pauses A's campaign: %v, want NotFound", err)
	}
	_, err = h.decisions[tokenB].Decide(ctx, &decisionv1.DecideRequest{CampaignId: a.GetId(), UserId: "u1"})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("B decides with A's campaign: %v, want NotFound", err)
	}
	h.produce(t, kafka.TopicEvents, h.wsB, "u1", track(h.wsB, "i1", "u1", "Cart Abandoned", t0, ""))
	h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, "i2", "u1", "Cart Abandoned", t0, ""))
	h.decisionsOf(t, a.GetId(), 1)
	got := h.settledDecisions(t, a.GetId(), 1)
	if len(got) != 1 || got[0].GetWorkspaceId() != h.wsA {
		t.Fatalf("decisions %v", got)
	}
	list, err := h.decisions[tokenB].ListDecisions(ctx, &decisionv1.ListDecisionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetDecisions()) != 0 {
		t.Errorf("B lists %d decisions, want 0", len(list.GetDecisions()))
	}
	_, err = h.decisions[tokenB].ExplainDecision(ctx, &decisionv1.ExplainDecisionRequest{DecisionId: got[0].GetDecisionId()})
	if connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("B explains A's decision: %v, want NotFound", err)
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if ok() {
			return
		}
	}
	t.Fatal("condition never held")
}

// A decision committed but never published (the process died between the
// two) is published by the outbox sweeper; one published leaves the outbox.
func TestOutboxPublishesWhatWasNotPublished(t *testing.T) {
	h := newHarness(t)
	h.svc.outboxDelay, h.svc.outboxEvery = time.Second, 100*time.Millisecond
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused"))
	h.run(t)
	res, err := h.decisions[tokenA].Decide(ctx, &decisionv1.DecideRequest{CampaignId: c.GetId(), UserId: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := h.decisionsOf(t, c.GetId(), 1); len(got) != 1 {
		t.Fatalf("%d decisions published, want 1", len(got))
	}
	outbox := func() int {
		var n int
		if err := h.store.pool.QueryRow(ctx, `SELECT count(*) FROM decision_outbox`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor(t, func() bool { return outbox() == 0 })
	// As if the produce had never happened.
	if _, err := h.store.pool.Exec(ctx, `INSERT INTO decision_outbox SELECT workspace_id, decision_id, decided_at FROM decisions`); err != nil {
		t.Fatal(err)
	}
	got := h.decisionsOf(t, c.GetId(), 2)
	if len(got) != 2 || got[1].GetDecisionId() != res.GetDecision().GetDecisionId() {
		t.Fatalf("after the sweep: %v", got)
	}
	waitFor(t, func() bool { return outbox() == 0 })
}

// The sweeper measures the outbox: its size and the age of its oldest
// decision, whether or not that decision is old enough to publish yet.
func TestOutboxBacklogIsMeasured(t *testing.T) {
	h := newHarness(t)
	h.svc.outboxDelay, h.svc.outboxEvery = time.Hour, 50*time.Millisecond
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused"))
	h.run(t)
	if _, err := h.decisions[tokenA].Decide(ctx, &decisionv1.DecideRequest{CampaignId: c.GetId(), UserId: "u1"}); err != nil {
		t.Fatal(err)
	}
	h.decisionsOf(t, c.GetId(), 1)
	gauges := func() (float64, float64) {
		return testutil.ToFloat64(h.svc.metrics.outbox.Items), testutil.ToFloat64(h.svc.metrics.outbox.OldestAge)
	}
	waitFor(t, func() bool { n, age := gauges(); return n == 0 && age == 0 })
	// A decision ten minutes old, as if its publisher had died then.
	if _, err := h.store.pool.Exec(ctx, `INSERT INTO decision_outbox SELECT workspace_id, decision_id, now() - interval '10 minutes' FROM decisions`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, age := gauges(); return n == 1 && age >= 600 && age < 660 })
}

// Run, on its way out, waits for the broker to acknowledge the decisions
// just published and deletes them from the outbox: a clean stop leaves
// nothing for another replica's sweeper to publish again.
func TestRunDrainsTheOutboxOnItsWayOut(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused"))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(runCtx) }()
	for i := range 20 {
		if _, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), fmt.Sprintf("u%d", i), fmt.Sprint(i), nil); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var n int
	if err := h.store.pool.QueryRow(ctx, `SELECT count(*) FROM decision_outbox`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d decisions left in the outbox after Run returned, want 0", n)
	}
	if got := h.decisionsOf(t, c.GetId(), 20); len(got) != 20 {
		t.Errorf("%d decisions published, want 20", len(got))
	}
}

// Caps hold when one user's triggers are decided concurrently: by the
// consumer and by many Decide calls at once, across campaigns. The cap is
// counted atomically in Redis, so exactly the cap's worth is sent.
func TestCapsHoldUnderConcurrentTriggers(t *testing.T) {
	const cap = 3
	rules := testRules()
	rules.Channels["email"] = contact.ChannelRules{PerDay: cap, PerWeek: 100}
	rules.PriorityHeadroom = 0
	h := newHarnessWith(t, contact.Config{Rules: rules})
	ctx := context.Background()
	var ids []string
	for range 3 {
		ids = append(ids, h.create(t, tokenA, emailCampaign("Sale Started")).GetId())
	}
	h.run(t)
	for i := range 10 {
		h.produce(t, kafka.TopicEvents, h.wsA, "u1", track(h.wsA, fmt.Sprintf("s%d", i), "u1", "Sale Started", time.Now(), ""))
	}
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			_, err := h.decisions[tokenA].Decide(ctx, &decisionv1.DecideRequest{CampaignId: ids[i%len(ids)], UserId: "u1", RequestId: fmt.Sprint(i)})
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	const total = 10*3 + 30
	var got []*decisionv1.Decision
	waitFor(t, func() bool {
		got = got[:0]
		token := ""
		for {
			page, err := h.decisions[tokenA].ListDecisions(ctx, &decisionv1.ListDecisionsRequest{UserId: "u1", PageSize: 25, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, page.GetDecisions()...)
			if token = page.GetNextPageToken(); token == "" {
				return len(got) == total
			}
		}
	})
	counts := map[decisionv1.Outcome]int{}
	for _, d := range got {
		counts[d.GetOutcome()]++
	}
	want := map[decisionv1.Outcome]int{decisionv1.Outcome_OUTCOME_SEND: cap, decisionv1.Outcome_OUTCOME_CAPPED: total - cap}
	if diff := cmp.Diff(want, counts); diff != "" {
		t.Errorf("outcomes (-want +got):\n%s", diff)
	}
}

// Two transactions deciding one trigger at once (a rebalance, or one
// Decide request id on two replicas): both read it undecided and decide
// it, the second's INSERT waits for the first and then inserts nothing.
// The second is rolled back, releasing its contact reservation and bandit
// exposure, and decided again: it answers with the first's decision. One
// decision, one exposure, one message counted against the user's cap.
func TestALostRaceLeavesOneDecision(t *testing.T) {
	const cap = 2
	rules := testRules()
	rules.Channels["email"] = contact.ChannelRules{PerDay: cap, PerWeek: 100}
	rules.PriorityHeadroom = 0
	h := newHarnessWith(t, contact.Config{Rules: rules})
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused"))
	run := func() *pendingRun {
		return &pendingRun{c: c, tr: trigger{ws: h.wsA, user: "u1", id: "request:race", step: &decisionv1.Step{Name: "trigger", Result: "request"}}}
	}

	first, err := h.store.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	won := run()
	if _, err := h.svc.runAll(ctx, first, []*pendingRun{won}, rand.New(rand.NewPCG(1, 2))); err != nil {
		t.Fatal(err)
	}

	lost := run()
	second := make(chan error, 1)
	go func() {
		_, err := h.svc.decideRuns(ctx, []*pendingRun{lost})
		second <- err
	}()
	// The second's INSERT waits for the first transaction's row.
	waitFor(t, func() bool {
		var n int
		err := h.store.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n)
		return err == nil && n == 1
	})
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if lost.res.fresh || lost.res.publish || lost.res.decision.GetDecisionId() != won.res.decision.GetDecisionId() {
		t.Errorf("the loser's result: fresh %v, publish %v, decision %s; want the winner's decision %s, not fresh, not to publish",
			lost.res.fresh, lost.res.publish, lost.res.decision.GetDecisionId(), won.res.decision.GetDecisionId())
	}
	if n := h.decisionCount(t, "request:race"); n != 1 {
		t.Errorf("%d decisions, want 1", n)
	}
	if n := h.banditRows(t, "exposure"); n != 1 {
		t.Errorf("%d bandit exposures, want 1", n)
	}
	var outbox int
	if err := h.store.pool.QueryRow(ctx, `SELECT count(*) FROM decision_outbox`).Scan(&outbox); err != nil {
		t.Fatal(err)
	}
	if outbox != 1 {
		t.Errorf("%d decisions in the outbox, want 1", outbox)
	}
	// One message of the cap's two is counted: one more is sent, the next
	// is capped.
	var got []decisionv1.Outcome
	for _, id := range []string{"after1", "after2"} {
		d, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), "u1", id, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, d.GetOutcome())
	}
	if diff := cmp.Diff([]decisionv1.Outcome{decisionv1.Outcome_OUTCOME_SEND, decisionv1.Outcome_OUTCOME_CAPPED}, got); diff != "" {
		t.Errorf("the user's next decisions (-want +got):\n%s", diff)
	}
}

// Records PostgreSQL cannot store (a NUL byte, a workspace id that is not
// one; protobuf itself refuses invalid UTF-8) are skipped, and the
// partition goes on deciding.
func TestUnstorableRecordsDoNotStallThePartition(t *testing.T) {
	h := newHarness(t)
	c := h.create(t, tokenA, emailCampaign("Cart Abandoned"))
	h.run(t)
	h.produce(t, kafka.TopicEvents, h.wsA, "u1",
		track(h.wsA, "x1", "u\x00nul", "Cart Abandoned", t0, ""),
		track("not-a-workspace", "x3", "u1", "Cart Abandoned", t0, ""),
		track(h.wsA, "x4", "u1", EventUnsubscribed, t0, `{"channel":"sms","topic":"a\u0000b"}`),
		track(h.wsA, "x5", "u1", "Cart Abandoned", t0, ""),
	)
	got := h.decisionsOf(t, c.GetId(), 1)
	if len(got) != 1 || got[0].GetTriggerId() != "event:x5" {
		t.Fatalf("decisions %v, want the one of x5", got)
	}
}

// Quiet hours defer a message to the end of the quiet hours in the user's
// own timezone (the profile's "timezone" trait), through the whole
// pipeline: a user for whom it is 23:00 gets a deferred decision sent at
// 08:00 local, one for whom it is noon is sent now.
func TestQuietHoursDefer(t *testing.T) {
	rules := testRules()
	email := rules.Channels["email"]
	email.QuietHours = true
	rules.Channels["email"] = email
	rules.QuietStart, rules.QuietEnd = "21:00", "08:00"
	h := newHarnessWith(t, contact.Config{Rules: rules})
	c := h.create(t, tokenA, emailCampaign("Checkout Abandoned"))
	h.run(t)

	now := time.Now().UTC()
	// zoneAt names a fixed-offset zone whose local time now is in the
	// given hour (Etc/GMT-3 is UTC+3: the sign is inverted).
	zoneAt := func(hour int) *time.Location {
		off := (hour - now.Hour() + 48) % 24
		if off > 14 {
			off -= 24
		}
		name := fmt.Sprintf("Etc/GMT%+d", -off)
		if off == 0 {
			name = "Etc/GMT"
		}
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		return loc
	}
	night, noon := zoneAt(23), zoneAt(12)
	for user, loc := range map[string]*time.Location{"night": night, "noon": noon} {
		traits, err := structpb.NewStruct(map[string]any{"timezone": loc.String()})
		if err != nil {
			t.Fatal(err)
		}
		h.produce(t, kafka.TopicProfiles, h.wsA, user, &profilev1.ProfileChange{
			ChangeId: "tz-" + user, WorkspaceId: h.wsA, ChangeTime: timestamppb.New(now),
			Kinds:   []profilev1.ProfileChangeKind{profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_TRAITS},
			Profile: &profilev1.Profile{WorkspaceId: h.wsA, ProfileId: "p-" + user, UserId: user, Traits: traits},
		})
	}
	// The snapshots must be there before the triggers: the two topics are
	// not ordered with each other.
	waitFor(t, func() bool {
		var n int
		err := h.store.pool.QueryRow(context.Background(),
			`SELECT count(*) FROM profile_snapshots WHERE workspace_id = $1`, h.wsA).Scan(&n)
		return err == nil && n == 2
	})
	for _, user := range []string{"night", "noon"} {
		h.produce(t, kafka.TopicEvents, h.wsA, user, track(h.wsA, "abandon-"+user, user, "Checkout Abandoned", now, ""))
	}
	ds := h.decisionsOf(t, c.GetId(), 2)
	got := map[string]*decisionv1.Decision{}
	for _, d := range ds {
		got[d.GetUserId()] = d
	}
	if diff := cmp.Diff(map[string]decisionv1.Outcome{
		"night": decisionv1.Outcome_OUTCOME_DEFERRED,
		"noon":  decisionv1.Outcome_OUTCOME_SEND,
	}, outcomes(ds)); diff != "" {
		t.Fatalf("outcomes (-want +got):\n%s", diff)
	}
	// Deferred to the next 08:00 in the user's zone (at most a minute of
	// rounding either way), 9 hours from a 23:xx now.
	localNow := now.In(night)
	morning := time.Date(localNow.Year(), localNow.Month(), localNow.Day()+1, 8, 0, 0, 0, night)
	if at := got["night"].GetSendTime().AsTime(); at.Sub(morning).Abs() > time.Minute {
		t.Errorf("night: send time %v (%v local), want %v", at, at.In(night), morning)
	}
	if at := got["noon"].GetSendTime().AsTime(); at.Sub(now).Abs() > time.Minute {
		t.Errorf("noon: send time %v, want about now (%v)", at, now)
	}
}
