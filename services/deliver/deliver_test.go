package deliver

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	deliveryv1 "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1/deliveryv1connect"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/services/deliver/channel"
)

// fakeRenderer renders "<template>:<user>:<event.item>" into every part,
// and the content url for webhooks from the profile's hook trait.
type fakeRenderer struct{}

func (fakeRenderer) Render(_ context.Context, req *contentv1.RenderRequest) (*contentv1.Message, error) {
	if req.GetTemplateId() == "broken" {
		return nil, errors.New("template broken: line 1: unknown tag")
	}
	s := req.GetTemplateId() + ":" + req.GetProfile().GetUserId() + ":" + req.GetEventProperties().GetFields()["item"].GetStringValue()
	c := &contentv1.Content{Subject: s, Text: s, Html: "<p>" + s + "</p>", Title: s, Body: `{"m":"` + s + `"}`}
	if req.GetTemplateId() == "hook" {
		c.Url = req.GetProfile().GetTraits().GetFields()["hook"].GetStringValue()
	}
	return &contentv1.Message{TemplateId: req.GetTemplateId(), Content: c}, nil
}

type fakeProfiles struct{}

func (fakeProfiles) Profile(_ context.Context, ws, user string) (*profilev1.Profile, error) {
	if user == "ghost" {
		return nil, fmt.Errorf("user %s: %w", user, ErrNoProfile)
	}
	traits, _ := structpb.NewStruct(map[string]any{"email": user + "@example.com", "phone": "+15550001", "push_token": "tok-" + user,
		"hook": "https://hooks.example.com/" + user})
	if user == "nobody" {
		traits = &structpb.Struct{}
	}
	return &profilev1.Profile{UserId: user, Traits: traits}, nil
}

// fakeSender records every message it accepts, by delivery id; fail, when
// set, decides the error of each call (n counts calls for that id from 1).
type fakeSender struct {
	mu    sync.Mutex
	got   map[string][]channel.Message
	calls map[string]int
	fail  func(m channel.Message, n int) error
	delay time.Duration
}

func newFakeSender() *fakeSender {
	return &fakeSender{got: map[string][]channel.Message{}, calls: map[string]int{}}
}

func (f *fakeSender) Send(ctx context.Context, m channel.Message) (channel.Receipt, error) {
	if f.delay > 0 {
		time.Sleep(f.delay)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[m.DeliveryID]++
	if f.fail != nil {
		if err := f.fail(m, f.calls[m.DeliveryID]); err != nil {
			return channel.Receipt{}, err
		}
	}
	f.got[m.DeliveryID] = append(f.got[m.DeliveryID], m)
	return channel.Receipt{ProviderMessageID: "p-" + m.DeliveryID}, nil
}

func (f *fakeSender) count() (ids, msgs int, dup []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, ms := range f.got {
		ids++
		msgs += len(ms)
		if len(ms) > 1 {
			dup = append(dup, id)
		}
	}
	return
}

type harness struct {
	ws       string
	brokers  []string
	pool     *pgxpool.Pool
	producer *kgo.Client
	senders  map[campaignv1.Channel]*fakeSender
	opts     Options
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	_, brokers := kafkatest.NewCluster(t, kfake.SeedTopics(3, kafka.TopicDecisions, kafka.TopicEvents, kafka.TopicDecisionsDLQ))
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(context.Background(), pool, Migrations, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	h := &harness{ws: uuid.NewString(), brokers: brokers, pool: pool, producer: producer, senders: map[campaignv1.Channel]*fakeSender{}}
	senders := map[campaignv1.Channel]channel.Sender{}
	for _, c := range []campaignv1.Channel{campaignv1.Channel_CHANNEL_EMAIL, campaignv1.Channel_CHANNEL_SMS,
		campaignv1.Channel_CHANNEL_PUSH, campaignv1.Channel_CHANNEL_WEBHOOK} {
		h.senders[c] = newFakeSender()
		senders[c] = h.senders[c]
	}
	h.opts = Options{Pool: pool, Renderer: fakeRenderer{}, Profiles: fakeProfiles{}, Senders: senders,
		BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, PollInterval: 20 * time.Millisecond,
		InboxPoll: 50 * time.Millisecond, ClaimLease: 5 * time.Second, MaxAttempts: 3}
	return h
}

// start runs a deliver Service (its own consumer client in the test
// group) until the returned stop is called; stop waits for Run to return.
func (h *harness) start(t testing.TB) (*Service, func()) {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(h.brokers...)}, ConsumerOpts("deliver-test")...)...)
	if err != nil {
		t.Fatal(err)
	}
	o := h.opts
	o.Client = cl
	s := New(o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			cl.Close()
		})
	}
	t.Cleanup(stop)
	return s, stop
}

func (h *harness) decision(user string, ch campaignv1.Channel, ref string, at time.Time) *decisionv1.Decision {
	return &decisionv1.Decision{
		DecisionId: uuid.NewString(), WorkspaceId: h.ws, CampaignId: "camp-1", VariantId: "A", UserId: user,
		Outcome: decisionv1.Outcome_OUTCOME_SEND, Channel: ch, ContentRef: ref, Topic: "promo",
		SendTime: timestamppb.New(at), TriggerProperties: []byte(`{"item":"socks"}`),
	}
}

func (h *harness) produce(t testing.TB, ds ...*decisionv1.Decision) {
	t.Helper()
	var recs []*kgo.Record
	for _, d := range ds {
		b, err := proto.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: kafka.TopicDecisions, Key: kafka.Key(d.GetWorkspaceId(), d.GetUserId()), Value: b})
	}
	if err := h.producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// waitState waits until the delivery is in state, and returns its row.
func (h *harness) waitState(t *testing.T, id string, state deliveryv1.State) *deliveryv1.GetDeliveryResponse {
	t.Helper()
	hd := NewHandler(New(h.opts), nil)
	ctx := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: h.ws})
	deadline := time.Now().Add(15 * time.Second)
	var last *deliveryv1.GetDeliveryResponse
	for time.Now().Before(deadline) {
		res, err := hd.GetDelivery(ctx, &deliveryv1.GetDeliveryRequest{DeliveryId: id})
		if err == nil {
			last = res
			if res.GetDelivery().GetState() == state {
				return res
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("delivery %s did not reach %v; last %v", id, state, last)
	return nil
}

func events(t *testing.T, brokers []string, want int) map[string]*eventv1.Event {
	t.Helper()
	out := map[string]*eventv1.Event{}
	for _, r := range kafkatest.ReadAll(t, brokers, kafka.TopicEvents, want, 10*time.Second) {
		ev := &eventv1.Event{}
		if err := proto.Unmarshal(r.Value, ev); err != nil {
			t.Fatal(err)
		}
		if string(r.Key) != string(kafka.Key(ev.GetWorkspaceId(), ev.GetUserId())) {
			t.Errorf("event %s keyed %q", ev.GetMessageId(), r.Key)
		}
		if _, dup := out[ev.GetMessageId()]; dup {
			t.Errorf("event %s published twice", ev.GetMessageId())
		}
		out[ev.GetMessageId()] = ev
	}
	return out
}

// Every channel gets exactly one message per decision, with the rendered
// content, even when the decision is delivered twice; each outcome is one
// "Message Delivered" event; in-app reaches a stream.
func TestDeliverEachChannelOnce(t *testing.T) {
	h := newHarness(t)
	// Only the running service registers (waitState builds its own).
	reg := prometheus.NewRegistry()
	h.opts.Registerer = reg
	s, _ := h.start(t)
	h.opts.Registerer = nil
	now := time.Now()
	ds := map[campaignv1.Channel]*decisionv1.Decision{}
	for _, c := range []campaignv1.Channel{campaignv1.Channel_CHANNEL_EMAIL, campaignv1.Channel_CHANNEL_SMS,
		campaignv1.Channel_CHANNEL_PUSH, campaignv1.Channel_CHANNEL_WEBHOOK, campaignv1.Channel_CHANNEL_IN_APP} {
		ref := "t"
		if c == campaignv1.Channel_CHANNEL_WEBHOOK {
			ref = "hook"
		}
		ds[c] = h.decision("u1", c, ref, now)
	}
	// A decision that does not send is not recorded.
	skipped := h.decision("u1", campaignv1.Channel_CHANNEL_EMAIL, "t", now)
	skipped.Outcome = decisionv1.Outcome_OUTCOME_CAPPED

	// An in-app stream open before the message arrives.
	mux := http.NewServeMux()
	mux.Handle(NewHandler(s, nil).Routes())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mux.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), &auth.Principal{WorkspaceID: h.ws})))
	}))
	t.Cleanup(srv.Close)
	client := deliveryv1connect.NewDeliveryServiceClient(srv.Client(), srv.URL)
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The call returns with the first message (headers come with it), so
	// it is made concurrently with the produce.
	type streamResult struct {
		m   *deliveryv1.InAppMessage
		err error
	}
	streamed := make(chan streamResult, 1)
	go func() {
		stream, err := client.StreamInApp(sctx, &deliveryv1.StreamInAppRequest{UserId: "u1"})
		if err != nil {
			streamed <- streamResult{err: err}
			return
		}
		defer stream.Close()
		// The stream says it is caught up (no backlog) before the message.
		for stream.Receive() {
			if m := stream.Msg().GetMessage(); m != nil {
				streamed <- streamResult{m: m}
				return
			}
		}
		streamed <- streamResult{err: fmt.Errorf("receive: %w", stream.Err())}
	}()

	var all []*decisionv1.Decision
	for _, d := range ds {
		all = append(all, d, d) // each redelivered
	}
	h.produce(t, append(all, skipped)...)

	sr := <-streamed
	if sr.err != nil {
		t.Fatalf("StreamInApp: %v", sr.err)
	}
	got := sr.m
	if got.GetDeliveryId() != ds[campaignv1.Channel_CHANNEL_IN_APP].GetDecisionId() || got.GetContent().GetTitle() != "t:u1:socks" {
		t.Errorf("in-app message %v", got)
	}
	for c, d := range ds {
		h.waitState(t, d.GetDecisionId(), deliveryv1.State_STATE_SENT)
		if c == campaignv1.Channel_CHANNEL_IN_APP {
			continue
		}
		f := h.senders[c]
		f.mu.Lock()
		ms := f.got[d.GetDecisionId()]
		f.mu.Unlock()
		if len(ms) != 1 {
			t.Fatalf("%v: %d messages, want 1", c, len(ms))
		}
		wantTo := map[campaignv1.Channel]string{campaignv1.Channel_CHANNEL_EMAIL: "u1@example.com", campaignv1.Channel_CHANNEL_SMS: "+15550001",
			campaignv1.Channel_CHANNEL_PUSH: "tok-u1", campaignv1.Channel_CHANNEL_WEBHOOK: "https://hooks.example.com/u1"}[c]
		if ms[0].To != wantTo || ms[0].Content.GetContent().GetText() != ms[0].Content.GetTemplateId()+":u1:socks" {
			t.Errorf("%v: sent to %q content %v", c, ms[0].To, ms[0].Content)
		}
	}
	// Every decision is recorded: each partition that had some reports
	// no lag, under the group and topic it consumes.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mfs, err := reg.Gather()
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
				if labels["group"] != DefaultGroup || labels["topic"] != kafka.TopicDecisions {
					t.Errorf("lag reported for %v, want group %s topic %s", labels, DefaultGroup, kafka.TopicDecisions)
				}
				lag += m.GetGauge().GetValue()
				partitions++
			}
		}
		if lag == 0 && partitions >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer lag %v over %d partitions, want 0 over at least 1", lag, partitions)
		}
		time.Sleep(20 * time.Millisecond)
	}
	evs := events(t, h.brokers, len(ds))
	for c, d := range ds {
		ev := evs[d.GetDecisionId()+":delivered"]
		if ev.GetEvent() != EventDelivered {
			t.Errorf("%v: no Message Delivered event (have %d events)", c, len(evs))
			continue
		}
		props, _ := structpbFromJSON(ev.GetProperties())
		want := map[string]any{"delivery_id": d.GetDecisionId(), "decision_id": d.GetDecisionId(), "campaign_id": "camp-1",
			"variant_id": "A", "channel": channelName(c), "topic": "promo"}
		if diff := cmp.Diff(want, props); diff != "" {
			t.Errorf("%v event properties (-want +got):\n%s", c, diff)
		}
	}
	var n int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM deliver_deliveries`).Scan(&n); err != nil || n != len(ds) {
		t.Errorf("ledger has %d rows (%v), want %d", n, err, len(ds))
	}
	// Read state: a read message is not in the next stream's backlog.
	ctx := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: h.ws})
	res, err := NewHandler(s, nil).MarkInAppRead(ctx, &deliveryv1.MarkInAppReadRequest{UserId: "u1", DeliveryIds: []string{got.GetDeliveryId()}})
	if err != nil || res.GetMarked() != 1 {
		t.Errorf("MarkInAppRead = %v, %v; want 1 marked", res, err)
	}
	// A new stream starts with the unread backlog: the next message, not the read one.
	next := h.decision("u1", campaignv1.Channel_CHANNEL_IN_APP, "next", time.Now())
	h.produce(t, next)
	h.waitState(t, next.GetDecisionId(), deliveryv1.State_STATE_SENT)
	// This time as a browser calls it: Connect protocol, JSON, HTTP/1.1.
	browser := deliveryv1connect.NewDeliveryServiceClient(srv.Client(), srv.URL, connect.WithProtoJSON())
	stream, err := browser.StreamInApp(sctx, &deliveryv1.StreamInAppRequest{UserId: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("second stream: %v", stream.Err())
	}
	if got := stream.Msg().GetMessage(); got.GetDeliveryId() != next.GetDecisionId() || got.GetContent().GetTitle() != "next:u1:socks" {
		t.Errorf("second stream starts with %v, want the unread %s", got, next.GetDecisionId())
	}
}

func structpbFromJSON(b []byte) (map[string]any, error) {
	s := &structpb.Struct{}
	if err := s.UnmarshalJSON(b); err != nil {
		return nil, err
	}
	return s.AsMap(), nil
}

// Stopping deliver while decisions are scheduled and being sent, then
// starting another on the same database and topic, sends each exactly once.
func TestRestartNoDuplicateNoLoss(t *testing.T) {
	h := newHarness(t)
	hook := h.senders[campaignv1.Channel_CHANNEL_WEBHOOK]
	hook.delay = 2 * time.Millisecond
	const n = 300
	var ds []*decisionv1.Decision
	now := time.Now()
	for i := range n {
		// Some due now, some a little later (scheduled across the restart).
		ds = append(ds, h.decision(fmt.Sprintf("u%d", i%20), campaignv1.Channel_CHANNEL_WEBHOOK, "hook", now.Add(time.Duration(i%3)*300*time.Millisecond)))
	}
	h.produce(t, ds...)
	_, stop := h.start(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ids, _, _ := hook.count(); ids >= n/5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	stop()
	before, _, _ := hook.count()
	if before >= n {
		t.Logf("all %d were sent before the stop; the restart proves less", n)
	}
	h.produce(t, ds[:50]...) // and some are delivered again by Kafka
	h.start(t)
	deadline = time.Now().Add(20 * time.Second)
	for {
		ids, _, _ := hook.count()
		if ids >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // a duplicate would come now
	ids, msgs, dup := hook.count()
	if ids != n || msgs != n || len(dup) > 0 {
		t.Errorf("after a restart (%d sent before it): %d deliveries, %d messages, duplicated %v; want %d each once", before, ids, msgs, dup, n)
	}
	var sent int
	if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM deliver_deliveries WHERE state = 'sent'`).Scan(&sent); err != nil || sent != n {
		t.Errorf("%d sent in the ledger (%v), want %d", sent, err, n)
	}
}

// Failures: retryable then success, permanent, bounce, exhausted retries
// (dead-lettered), no recipient, no profile.
func TestFailures(t *testing.T) {
	h := newHarness(t)
	sms := h.senders[campaignv1.Channel_CHANNEL_SMS]
	sms.fail = func(m channel.Message, n int) error {
		switch m.UserID {
		case "flaky":
			if n == 1 {
				return &channel.Error{Retryable: true, Code: "503", Err: errors.New("unavailable")}
			}
		case "perm":
			return &channel.Error{Code: "400", Err: errors.New("bad request")}
		case "bounce":
			return &channel.Error{Bounce: true, Code: "21211", Err: errors.New("invalid number")}
		case "down":
			return errors.New("connection refused") // not an *Error: retryable
		}
		return nil
	}
	h.start(t)
	now := time.Now()
	sms1 := func(user, ref string) *decisionv1.Decision {
		return h.decision(user, campaignv1.Channel_CHANNEL_SMS, ref, now)
	}
	tests := []struct {
		d        *decisionv1.Decision
		state    deliveryv1.State
		attempts []string
		event    string // message id suffix of the outcome event, "" for none
		reason   string
	}{
		{d: sms1("flaky", "t"), state: deliveryv1.State_STATE_SENT, attempts: []string{"retryable", "sent"}, event: "delivered"},
		{d: sms1("perm", "t"), state: deliveryv1.State_STATE_FAILED, attempts: []string{"failed"}, event: "failed", reason: "400: bad request"},
		{d: sms1("bounce", "t"), state: deliveryv1.State_STATE_FAILED, attempts: []string{"bounced"}, event: "bounced", reason: "bounced: 21211: invalid number"},
		{d: sms1("down", "t"), state: deliveryv1.State_STATE_FAILED, attempts: []string{"retryable", "retryable", "retryable"}, event: "failed",
			reason: "retries exhausted after 3 attempts: send: connection refused"},
		{d: sms1("nobody", "t"), state: deliveryv1.State_STATE_SKIPPED, attempts: []string{"skipped"}, reason: "no recipient: the profile has no phone trait"},
		{d: sms1("ghost", "t"), state: deliveryv1.State_STATE_SKIPPED, attempts: []string{"skipped"}, reason: "no recipient: the user has no profile"},
	}
	var ds []*decisionv1.Decision
	for _, tt := range tests {
		ds = append(ds, tt.d)
	}
	h.produce(t, ds...)
	wantEvents := 0
	for _, tt := range tests {
		if tt.event != "" {
			wantEvents++
		}
	}
	evs := events(t, h.brokers, wantEvents)
	for _, tt := range tests {
		t.Run(tt.d.GetUserId(), func(t *testing.T) {
			res := h.waitState(t, tt.d.GetDecisionId(), tt.state)
			var got []string
			for _, a := range res.GetAttempts() {
				got = append(got, a.GetResult())
			}
			if diff := cmp.Diff(tt.attempts, got); diff != "" {
				t.Errorf("attempts (-want +got):\n%s", diff)
			}
			if res.GetDelivery().GetReason() != tt.reason && tt.state != deliveryv1.State_STATE_SENT {
				t.Errorf("reason %q, want %q", res.GetDelivery().GetReason(), tt.reason)
			}
			if tt.event != "" {
				ev := evs[tt.d.GetDecisionId()+":"+tt.event]
				if ev == nil {
					t.Errorf("no %s event", tt.event)
				}
			}
		})
	}
	// Exhausted retries dead-letter the decision with the reason.
	dlq := kafkatest.ReadAll(t, h.brokers, kafka.TopicDecisionsDLQ, 1, 10*time.Second)
	if len(dlq) != 1 {
		t.Fatalf("%d records on the DLQ, want 1", len(dlq))
	}
	d := &decisionv1.Decision{}
	if err := proto.Unmarshal(dlq[0].Value, d); err != nil || d.GetUserId() != "down" {
		t.Errorf("DLQ record %v (%v), want the decision of user down", d, err)
	}
	var reason string
	for _, hd := range dlq[0].Headers {
		if hd.Key == HeaderDLQReason {
			reason = string(hd.Value)
		}
	}
	if reason != tests[3].reason {
		t.Errorf("DLQ reason %q, want %q", reason, tests[3].reason)
	}
}

// A decision scheduled in the future is not sent before its time.
func TestScheduledSendWaits(t *testing.T) {
	h := newHarness(t)
	h.start(t)
	at := time.Now().Add(1500 * time.Millisecond)
	d := h.decision("u1", campaignv1.Channel_CHANNEL_EMAIL, "t", at)
	h.produce(t, d)
	res := h.waitState(t, d.GetDecisionId(), deliveryv1.State_STATE_SCHEDULED)
	if got := res.GetDelivery().GetNextAttemptTime().AsTime(); !got.Equal(at.Truncate(time.Microsecond)) {
		t.Errorf("next attempt %v, want %v", got, at)
	}
	h.waitState(t, d.GetDecisionId(), deliveryv1.State_STATE_SENT)
	m := h.senders[campaignv1.Channel_CHANNEL_EMAIL]
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.got[d.GetDecisionId()]) != 1 {
		t.Fatalf("sent %d times", len(m.got[d.GetDecisionId()]))
	}
	if time.Now().Before(at) {
		t.Errorf("sent before its send time")
	}
}

// A replica that crashed mid-send leaves its row in sending; once the
// lease expires another replica claims it and sends it, once.
func TestExpiredClaimIsTakenOver(t *testing.T) {
	h := newHarness(t)
	d := h.decision("u1", campaignv1.Channel_CHANNEL_EMAIL, "t", time.Now())
	raw, _ := proto.Marshal(d)
	ctx := context.Background()
	// As the crashed replica left it: claimed, lease running out soon.
	if _, err := h.pool.Exec(ctx, `INSERT INTO deliver_deliveries (delivery_id, workspace_id, campaign_id, variant_id, user_id, channel,
		content_ref, topic, decision, state, send_time, next_attempt_at, claim_token, claimed_until, attempts)
		VALUES ($1,$2,'camp-1','A','u1',$3,'t','promo',$4,'sending',now(),now(),$5,now() + interval '700 milliseconds',1)`,
		d.GetDecisionId(), h.ws, int16(d.GetChannel()), raw, uuid.New()); err != nil {
		t.Fatal(err)
	}
	h.start(t)
	time.Sleep(400 * time.Millisecond)
	email := h.senders[campaignv1.Channel_CHANNEL_EMAIL]
	if ids, _, _ := email.count(); ids != 0 {
		t.Fatalf("sent while another replica's claim was live")
	}
	res := h.waitState(t, d.GetDecisionId(), deliveryv1.State_STATE_SENT)
	if ids, msgs, _ := email.count(); ids != 1 || msgs != 1 {
		t.Errorf("%d deliveries, %d messages; want 1", ids, msgs)
	}
	if got := res.GetDelivery().GetAttempts(); got != 2 {
		t.Errorf("attempts %d, want 2 (the crashed one counts)", got)
	}
}

// The token bucket in Redis spaces sends at its rate once the burst is spent.
func TestRateLimit(t *testing.T) {
	l := &limiter{rdb: redistest.New(t), rates: map[campaignv1.Channel]Rate{campaignv1.Channel_CHANNEL_SMS: {PerSecond: 20, Burst: 2}},
		prefix: "whisper:test:ratelimit:" + uuid.NewString() + ":"}
	ctx := context.Background()
	start := time.Now()
	for range 6 { // 2 from the burst, 4 at 20/s: about 200 ms
		if _, err := l.wait(ctx, campaignv1.Channel_CHANNEL_SMS); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("6 tokens at 20/s with a burst of 2 took %v, want about 200ms", took)
	}
	// An unlimited channel does not wait.
	if w, err := l.wait(ctx, campaignv1.Channel_CHANNEL_EMAIL); w != 0 || err != nil {
		t.Errorf("unlimited channel waited %v, %v", w, err)
	}
}

func TestBackoffFullJitter(t *testing.T) {
	for _, tt := range []struct {
		n        int
		ceilWant time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {30, time.Minute}} {
		var maxSeen time.Duration
		for range 200 {
			d := backoff(tt.n, time.Second, time.Minute)
			if d < 0 || d > tt.ceilWant {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", tt.n, d, tt.ceilWant)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < tt.ceilWant/2 {
			t.Errorf("backoff(%d): largest of 200 draws %v, not spread over [0, %v]", tt.n, maxSeen, tt.ceilWant)
		}
	}
}

// Tracked outcomes become events with deterministic ids; "Unsubscribed"
// carries the {channel, topic} decide's consent reads.
func TestPublishOutcome(t *testing.T) {
	h := newHarness(t)
	s, _ := h.start(t)
	d := h.decision("u1", campaignv1.Channel_CHANNEL_EMAIL, "t", time.Now())
	h.produce(t, d)
	h.waitState(t, d.GetDecisionId(), deliveryv1.State_STATE_SENT)
	ctx := context.Background()
	for _, o := range []Outcome{
		{Kind: "opened", WorkspaceID: h.ws, DeliveryID: d.GetDecisionId(), UserID: "u1"},
		{Kind: "clicked", WorkspaceID: h.ws, DeliveryID: d.GetDecisionId(), UserID: "u1", URL: "https://shop.example.com/cart"},
		{Kind: "unsubscribed", WorkspaceID: h.ws, DeliveryID: d.GetDecisionId(), UserID: "u1", Channel: "email", Topic: "promo"},
	} {
		if err := s.PublishOutcome(ctx, o); err != nil {
			t.Fatalf("PublishOutcome(%s): %v", o.Kind, err)
		}
	}
	if err := s.PublishOutcome(ctx, Outcome{Kind: "opened", WorkspaceID: h.ws, DeliveryID: "nope", UserID: "u1"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown delivery: %v, want ErrNotFound", err)
	}
	evs := events(t, h.brokers, 4)
	unsub := evs[d.GetDecisionId()+":unsubscribed"]
	props, _ := structpbFromJSON(unsub.GetProperties())
	if unsub.GetEvent() != "Unsubscribed" || props["channel"] != "email" || props["topic"] != "promo" {
		t.Errorf("unsubscribe event %v %v", unsub.GetEvent(), props)
	}
	click := evs[d.GetDecisionId()+":clicked"]
	props, _ = structpbFromJSON(click.GetProperties())
	if click.GetEvent() != EventClicked || props["url"] != "https://shop.example.com/cart" || props["campaign_id"] != "camp-1" {
		t.Errorf("click event %v %v", click.GetEvent(), props)
	}
	if evs[d.GetDecisionId()+":opened"].GetEvent() != EventOpened {
		t.Errorf("no open event")
	}
}

// The outcome event continues the trace of the decision record, from the
// send's span when tracing is on.
func TestOutcomeEventCarriesTheDecisionTrace(t *testing.T) {
	for _, traced := range []bool{false, true} {
		t.Run(fmt.Sprint("traced=", traced), func(t *testing.T) { testOutcomeTrace(t, traced) })
	}
}

func testOutcomeTrace(t *testing.T, traced bool) {
	h := newHarness(t)
	rec := tracetest.NewSpanRecorder()
	if traced {
		h.opts.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	}
	h.start(t)
	d := h.decision("u1", campaignv1.Channel_CHANNEL_SMS, "t", time.Now())
	b, _ := proto.Marshal(d)
	const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	if err := h.producer.ProduceSync(context.Background(), &kgo.Record{Topic: kafka.TopicDecisions, Key: kafka.Key(h.ws, "u1"), Value: b,
		Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(tp)}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	recs := kafkatest.ReadAll(t, h.brokers, kafka.TopicEvents, 1, 10*time.Second)
	if len(recs) != 1 {
		t.Fatalf("%d events, want 1", len(recs))
	}
	var got string
	for _, hd := range recs[0].Headers {
		if hd.Key == "traceparent" {
			got = string(hd.Value)
		}
	}
	if !traced {
		if got != tp {
			t.Errorf("event traceparent %q, want the decision's %q", got, tp)
		}
		return
	}
	var send sdktrace.ReadOnlySpan
	for deadline := time.Now().Add(5 * time.Second); send == nil && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, sp := range rec.Ended() { // the span may end just after the event is relayed
			if sp.Name() == "deliver sms" {
				send = sp
			}
		}
	}
	if send == nil {
		t.Fatal("no deliver span")
	}
	if send.SpanContext().TraceID().String() != "0af7651916cd43dd8448eb211c80319c" || send.Parent().SpanID().String() != "b7ad6b7169203331" {
		t.Errorf("deliver span in trace %s under %s, want the decision's", send.SpanContext().TraceID(), send.Parent().SpanID())
	}
	if want := "00-0af7651916cd43dd8448eb211c80319c-" + send.SpanContext().SpanID().String() + "-01"; got != want {
		t.Errorf("event traceparent %q, want the deliver span's %q", got, want)
	}
}

// Records deliver cannot use go to the DLQ with the reason; the rest of
// the poll is delivered.
func TestUnusableRecordsAreDeadLettered(t *testing.T) {
	h := newHarness(t)
	h.start(t)
	noWS := h.decision("u1", campaignv1.Channel_CHANNEL_SMS, "t", time.Now())
	noWS.WorkspaceId = "acme"
	good := h.decision("u1", campaignv1.Channel_CHANNEL_SMS, "t", time.Now())
	if err := h.producer.ProduceSync(context.Background(), &kgo.Record{Topic: kafka.TopicDecisions, Key: []byte("k"), Value: []byte("\xff\xff")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	h.produce(t, noWS, good)
	h.waitState(t, good.GetDecisionId(), deliveryv1.State_STATE_SENT)
	var reasons []string
	for _, r := range kafkatest.ReadAll(t, h.brokers, kafka.TopicDecisionsDLQ, 2, 10*time.Second) {
		for _, hd := range r.Headers {
			if hd.Key == HeaderDLQReason {
				reasons = append(reasons, strings.SplitN(string(hd.Value), ":", 2)[0])
			}
		}
	}
	slices.Sort(reasons)
	if diff := cmp.Diff([]string{"not a whisper.decision.v1.Decision", "workspace_id"}, reasons); diff != "" {
		t.Errorf("DLQ reasons (-want +got):\n%s", diff)
	}
}

// concurrencySender records the most sends it had in flight at once.
type concurrencySender struct {
	mu            sync.Mutex
	now, max, got int
}

func (c *concurrencySender) Send(ctx context.Context, m channel.Message) (channel.Receipt, error) {
	c.mu.Lock()
	c.now++
	c.max = max(c.max, c.now)
	c.mu.Unlock()
	time.Sleep(20 * time.Millisecond)
	c.mu.Lock()
	c.now--
	c.got++
	c.mu.Unlock()
	return channel.Receipt{}, nil
}

// A workspace has at most WorkspaceConcurrency sends in flight.
func TestWorkspaceConcurrency(t *testing.T) {
	h := newHarness(t)
	cs := &concurrencySender{}
	h.opts.Senders[campaignv1.Channel_CHANNEL_PUSH] = cs
	h.opts.WorkspaceConcurrency = 2
	h.start(t)
	var ds []*decisionv1.Decision
	for i := range 12 {
		ds = append(ds, h.decision(fmt.Sprintf("u%d", i), campaignv1.Channel_CHANNEL_PUSH, "t", time.Now()))
	}
	h.produce(t, ds...)
	for _, d := range ds {
		h.waitState(t, d.GetDecisionId(), deliveryv1.State_STATE_SENT)
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.got != 12 || cs.max != 2 {
		t.Errorf("%d sent, at most %d at once; want 12, 2", cs.got, cs.max)
	}
}
