package decide

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/durationpb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/services/decide/contact"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

// callFor is a Decide call as the handler makes it, for decideCalls.
func callFor(ctx context.Context, ws, campaign, user, requestID string) *decideCall {
	return &decideCall{ctx: ctx, ws: ws, campaignID: campaign, user: user, requestID: requestID, done: make(chan struct{}), lead: make(chan struct{})}
}

// decisionCount counts the decisions of a trigger.
func (h *harness) decisionCount(t *testing.T, triggerID string) int {
	t.Helper()
	var n int
	if err := h.store.pool.QueryRow(context.Background(), `SELECT count(*) FROM decisions WHERE trigger_id = $1`, triggerID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Each call of a batch gets its own answer: a call for an unknown or a
// paused campaign, one whose context ended and one PostgreSQL refuses (a
// NUL byte in the user id fails the batch's transaction, so the calls are
// decided again one by one) fail alone; the others are decided, and two
// calls with one request id share one decision.
func TestDecideCallsIsolateErrors(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	active := h.create(t, tokenA, emailCampaign("unused")).GetId()
	paused := h.create(t, tokenA, emailCampaign("unused")).GetId()
	if _, err := h.campaigns[tokenA].PauseCampaign(ctx, &campaignv1.PauseCampaignRequest{CampaignId: paused}); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	calls := []*decideCall{
		callFor(ctx, h.wsA, active, "u1", "r1"),
		callFor(ctx, h.wsA, "7d3f9a52-0000-4000-8000-000000000000", "u2", "r2"),
		callFor(ctx, h.wsA, paused, "u3", "r3"),
		callFor(cancelled, h.wsA, active, "u4", "r4"),
		callFor(ctx, h.wsA, active, "u\x00", "r5"),
		callFor(ctx, h.wsA, active, "u6", "r6"),
		callFor(ctx, h.wsA, active, "u1", "r1"),
	}
	h.svc.decideCalls(ctx, calls)
	for i, want := range []error{nil, ErrNotFound, errNotActive, context.Canceled, nil, nil, nil} {
		c := calls[i]
		<-c.done
		switch {
		case i == 4:
			if c.err == nil {
				t.Errorf("call %d (a NUL in the user id): no error", i)
			}
		case !errors.Is(c.err, want):
			t.Errorf("call %d: error %v, want %v", i, c.err, want)
		case want == nil && c.d.GetOutcome() != decisionv1.Outcome_OUTCOME_SEND:
			t.Errorf("call %d: outcome %v, want send", i, c.d.GetOutcome())
		}
	}
	if a, b := calls[0].d.GetDecisionId(), calls[6].d.GetDecisionId(); a != b {
		t.Errorf("one request id, two decisions: %s, %s", a, b)
	}
	for trigger, want := range map[string]int{"request:r1": 1, "request:r4": 0, "request:r5": 0, "request:r6": 1} {
		if got := h.decisionCount(t, trigger); got != want {
			t.Errorf("%s: %d decisions, want %d", trigger, got, want)
		}
	}
}

// A user's calls in one batch are decided in their order: with one
// message a day allowed, the first is sent and the second capped.
func TestDecideCallsKeepTheOrderOfAUsersCalls(t *testing.T) {
	rules := testRules()
	rules.Channels["email"] = contact.ChannelRules{PerDay: 1, PerWeek: 100}
	rules.PriorityHeadroom = 0
	h := newHarnessWith(t, contact.Config{Rules: rules})
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused")).GetId()
	var calls []*decideCall
	for i, user := range []string{"u1", "u2", "u1", "u1", "u2"} {
		calls = append(calls, callFor(ctx, h.wsA, c, user, fmt.Sprint(i)))
	}
	h.svc.decideCalls(ctx, calls)
	var got []decisionv1.Outcome
	for _, call := range calls {
		<-call.done
		if call.err != nil {
			t.Fatal(call.err)
		}
		got = append(got, call.d.GetOutcome())
	}
	send, capped := decisionv1.Outcome_OUTCOME_SEND, decisionv1.Outcome_OUTCOME_CAPPED
	if diff := cmp.Diff([]decisionv1.Outcome{send, send, capped, capped, capped}, got); diff != "" {
		t.Errorf("outcomes in call order (-want +got):\n%s", diff)
	}
	if n := policyCalls(t, h); n != 1 {
		t.Errorf("%d contact-policy calls for one batch, want 1", n)
	}
}

// Calls made while the batches are busy wait in the queue: one whose
// context ends returns at once and leaves the queue; the others are all
// decided by the next batch, in one contact-policy call.
func TestDecideNowWaitsForABatch(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused")).GetId()
	// As if maxDecideBatches batches were running.
	h.svc.calls.mu.Lock()
	h.svc.calls.running = maxDecideBatches
	h.svc.calls.mu.Unlock()
	queued := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			h.svc.calls.mu.Lock()
			got := len(h.svc.calls.queue)
			h.svc.calls.mu.Unlock()
			if got == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d calls queued, want %d", got, n)
			}
			time.Sleep(time.Millisecond)
		}
	}

	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := h.svc.decideNow(cctx, h.wsA, c, "gone", "gone", nil)
		errc <- err
	}()
	queued(1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled call waiting for its batch: %v, want context.Canceled", err)
	}
	queued(0)

	const n = 20
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[string]bool{}
	)
	for i := range n {
		wg.Go(func() {
			d, err := h.svc.decideNow(ctx, h.wsA, c, fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i), nil)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			ids[d.GetDecisionId()] = true
			mu.Unlock()
		})
	}
	queued(n)
	before := policyCalls(t, h)
	// One of the running batches ends: it decides the queue.
	h.svc.runDecideBatch(ctx)
	wg.Wait()
	if len(ids) != n {
		t.Errorf("%d decisions for %d calls", len(ids), n)
	}
	if got := policyCalls(t, h) - before; got != 1 {
		t.Errorf("%d contact-policy calls for one batch, want 1", got)
	}
	if got := h.decisionCount(t, "request:gone"); got != 0 {
		t.Errorf("the cancelled call was decided (%d decisions)", got)
	}
	h.svc.calls.mu.Lock()
	defer h.svc.calls.mu.Unlock()
	if h.svc.calls.running != maxDecideBatches-1 || len(h.svc.calls.queue) != 0 {
		t.Errorf("after the batch: %d running, %d queued; want %d, 0", h.svc.calls.running, len(h.svc.calls.queue), maxDecideBatches-1)
	}
}

// policyCalls is how many contact-policy calls the service made.
func policyCalls(t *testing.T, h *harness) uint64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "whisper_decide_policy_reserve_duration_seconds" {
			return mf.GetMetric()[0].GetHistogram().GetSampleCount()
		}
	}
	return 0
}

// A poll's records are decided as if one by one although their decisions
// are batched: a trigger before the user unsubscribes is sent, the one
// after it is skipped, and a trigger delivered twice in the poll makes one
// decision.
func TestAPollKeepsTheOrderOfAUsersRecords(t *testing.T) {
	h := newHarness(t)
	c := emailCampaign("Cart Abandoned")
	c.Variants[0].Topic = ""
	c = h.create(t, tokenA, c)
	// Produced before the consumer starts, so that they come in one poll.
	h.produce(t, kafka.TopicEvents, h.wsA, "u1",
		track(h.wsA, "o1", "u1", "Cart Abandoned", t0, ""),
		track(h.wsA, "o1", "u1", "Cart Abandoned", t0, ""),
		track(h.wsA, "o2", "u1", EventUnsubscribed, t0.Add(time.Minute), `{"channel":"email"}`),
		track(h.wsA, "o3", "u1", "Cart Abandoned", t0.Add(2*time.Minute), ""))
	h.run(t)
	got := map[string]decisionv1.Outcome{}
	for _, d := range h.decisionsOf(t, c.GetId(), 2) {
		got[d.GetTriggerId()] = d.GetOutcome()
	}
	want := map[string]decisionv1.Outcome{"event:o1": decisionv1.Outcome_OUTCOME_SEND, "event:o3": decisionv1.Outcome_OUTCOME_SKIPPED_CONSENT}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcomes by trigger (-want +got):\n%s", diff)
	}
	if n := h.decisionCount(t, "event:o1"); n != 1 {
		t.Errorf("o1, delivered twice: %d decisions, want 1", n)
	}
}

// A batch reads every user's activity for the send time together, and each
// decision gets its own user's best hour: one active three hours from now
// is sent then, one without history now.
func TestABatchPicksEachUsersSendTime(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := emailCampaign("unused")
	c.OptimizeSendTime = true
	c.MaxSendDelay = durationpb.New(24 * time.Hour)
	id := h.create(t, tokenA, c).GetId()
	now := time.Now().UTC()
	later := now.Add(3 * time.Hour).Truncate(time.Hour)
	var acts []sendtime.Activity
	for d := 1; d <= 3; d++ {
		acts = append(acts, sendtime.Activity{WorkspaceID: h.wsA, UserID: "active", At: later.AddDate(0, 0, -d).Add(10 * time.Minute)})
	}
	if err := h.svc.sendTime.ObserveBatch(ctx, acts); err != nil {
		t.Fatal(err)
	}
	calls := []*decideCall{callFor(ctx, h.wsA, id, "active", "a"), callFor(ctx, h.wsA, id, "new", "n")}
	h.svc.decideCalls(ctx, calls)
	for _, call := range calls {
		<-call.done
		if call.err != nil {
			t.Fatal(call.err)
		}
	}
	if got := calls[0].d.GetSendTime().AsTime(); !got.Equal(later) {
		t.Errorf("active user: send time %v, want %v", got, later)
	}
	if got := calls[1].d.GetSendTime().AsTime(); got.Sub(now).Abs() > time.Minute {
		t.Errorf("new user: send time %v, want about now (%v)", got, now)
	}
}

// However calls end (decided, or their context ended while queued or
// while their batch ran), every batch run ends: once all calls have
// returned none is counted as running and none is queued, so later calls
// start a batch at once.
func TestDecideBatchesEndWithTheirCalls(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused")).GetId()
	var wg sync.WaitGroup
	for i := range 200 {
		wg.Go(func() {
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			if i%3 == 0 {
				// Some give up while queued or deciding.
				cctx, cancel = context.WithTimeout(ctx, time.Duration(i%7)*time.Millisecond)
				defer cancel()
			}
			// Every third call repeats the request id of the one before.
			_, err := h.svc.decideNow(cctx, h.wsA, c, fmt.Sprintf("u%d", i), fmt.Sprint(i-i%3/2), nil)
			if err != nil && cctx.Err() == nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	h.svc.calls.mu.Lock()
	running, queued := h.svc.calls.running, len(h.svc.calls.queue)
	h.svc.calls.mu.Unlock()
	if running != 0 || queued != 0 {
		t.Fatalf("after every call returned: %d batches running, %d calls queued", running, queued)
	}
	if _, err := h.svc.decideNow(ctx, h.wsA, c, "after", "after", nil); err != nil {
		t.Fatal(err)
	}
}

// Decide uses a campaign it read for up to campaignTTL: one paused by
// another replica is still decided for that long, then refused. (One
// paused through this process is refused at once: TestDecideRPC.)
func TestDecideCampaignCache(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	c := h.create(t, tokenA, emailCampaign("unused"))
	now := time.Now()
	h.svc.now = func() time.Time { return now }
	if _, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), "u1", "r1", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.setStatus(ctx, h.wsA, c.GetId(), statusPaused, now); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), "u2", "r2", nil); err != nil {
		t.Fatalf("within campaignTTL of the read: %v, want the campaign as read", err)
	}
	now = now.Add(campaignTTL)
	if _, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), "u3", "r3", nil); !errors.Is(err, errNotActive) {
		t.Fatalf("campaignTTL after the read: %v, want %v", err, errNotActive)
	}
}
