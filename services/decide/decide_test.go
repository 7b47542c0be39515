package decide

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/decide/bandit"
	"github.com/whisperhq/whisper/services/decide/contact"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

// Bearer tokens of the test authn: one per workspace of a harness.
const (
	tokenA = "token-a"
	tokenB = "token-b"
)

// harness runs the decide service with the real contact policy, bandit and
// send-time optimizer on kfake, a fresh database and the test Redis, with
// its APIs behind a bearer authn that knows tokenA (workspace wsA) and
// tokenB (wsB). The workspace ids are new for every harness, so the Redis
// keys of one test (caps, activity) never meet another's.
type harness struct {
	wsA, wsB  string
	brokers   []string
	producer  *kgo.Client
	store     *Store
	svc       *Service
	policy    *contact.Policy
	arms      *bandit.Store
	campaigns map[string]campaignv1connect.CampaignServiceClient
	decisions map[string]decisionv1connect.DecisionServiceClient
	reg       *prometheus.Registry // the service's metrics
	url       string               // the Connect server's base URL
}

// testRules are the contact rules of the harness: generous caps and no
// quiet hours, so that outcomes do not depend on the time of day the test
// runs at; TestCapsHoldUnderConcurrentTriggers sets its own.
func testRules() contact.Rules {
	r := contact.DefaultRules()
	for ch, cr := range r.Channels {
		cr.PerDay, cr.PerWeek, cr.QuietHours, cr.MinGap = 1000, 1000, false, false
		r.Channels[ch] = cr
	}
	r.OtherChannels = contact.ChannelRules{PerDay: 1000, PerWeek: 1000}
	r.MinGap = 0
	return r
}

func newHarness(t testing.TB) *harness {
	return newHarnessWith(t, contact.Config{Rules: testRules()})
}

func newHarnessWith(t testing.TB, cfg contact.Config) *harness {
	t.Helper()
	_, brokers := kafkatest.NewCluster(t, kfake.SeedTopics(3, kafka.TopicEvents, kafka.TopicProfiles, kafka.TopicDecisions))
	dbURL := pgtest.NewDatabase(t)
	var pools [2]*pgxpool.Pool
	for i := range pools {
		p, err := pgxpool.New(context.Background(), dbURL+"&pool_max_conns=16")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.Close)
		pools[i] = p
	}
	pool, banditPool := pools[0], pools[1]
	// (pool_max_conns=16: the default, 4 on this machine, queues the
	// concurrent Decide calls of the benchmarks.)
	logger := slog.New(slog.DiscardHandler)
	if err := postgres.Migrate(context.Background(), pool, Migrations, logger); err != nil {
		t.Fatal(err)
	}
	if err := postgres.Migrate(context.Background(), pool, bandit.Migrations, logger); err != nil {
		t.Fatal(err)
	}
	rdb := redistest.New(t)
	policy, err := contact.New(contact.Options{Redis: rdb, Logger: logger, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	h := &harness{
		wsA: uuid.NewString(), wsB: uuid.NewString(),
		brokers: brokers, producer: producer, store: NewStore(pool), policy: policy, arms: bandit.NewStore(banditPool),
		campaigns: map[string]campaignv1connect.CampaignServiceClient{},
		decisions: map[string]decisionv1connect.DecisionServiceClient{},
		reg:       prometheus.NewRegistry(),
	}
	// The service's own client produces decisions; Run gives it a group.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, ConsumerOpts("decide-test")...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	h.svc, err = New(Options{
		Store: h.store, Client: cl, Policy: h.policy, Bandit: h.arms, SendTime: sendtime.New(rdb),
		WaitInterval: 50 * time.Millisecond, Logger: logger, Registerer: h.reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	handler := NewHandler(h.svc, logger)
	path, ch := handler.CampaignRoutes()
	mux.Handle(path, ch)
	path, dh := handler.DecisionRoutes()
	mux.Handle(path, dh)
	principals := map[string]*auth.Principal{
		tokenA: {WorkspaceID: h.wsA, CredentialID: "a"},
		tokenB: {WorkspaceID: h.wsB, CredentialID: "b"},
	}
	srv := httptest.NewUnstartedServer(authn.NewMiddleware(func(_ context.Context, r authn.Request) (any, error) {
		p, ok := principals[strings.TrimPrefix(r.Header().Get("Authorization"), "Bearer ")]
		if !ok {
			return nil, authn.Errorf("unknown token")
		}
		return p, nil
	}).Wrap(mux))
	// HTTP/1.1 and h2c, as internal/rpc serves.
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	h.url = srv.URL
	for _, tok := range []string{tokenA, tokenB} {
		h.campaigns[tok] = campaignv1connect.NewCampaignServiceClient(srv.Client(), srv.URL, rpctest.Bearer(tok))
		h.decisions[tok] = decisionv1connect.NewDecisionServiceClient(srv.Client(), srv.URL, rpctest.Bearer(tok))
	}
	return h
}

// run starts the service's consumer and loops until the test ends.
func (h *harness) run(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func (h *harness) produce(t testing.TB, topic string, ws, user string, msgs ...proto.Message) {
	t.Helper()
	var recs []*kgo.Record
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, &kgo.Record{Topic: topic, Key: kafka.Key(ws, user), Value: b})
	}
	if err := h.producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) create(t testing.TB, token string, c *campaignv1.Campaign) *campaignv1.Campaign {
	t.Helper()
	res, err := h.campaigns[token].CreateCampaign(context.Background(), &campaignv1.CreateCampaignRequest{Campaign: c, Activate: true})
	if err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}
	return res.GetCampaign()
}

// decisionsOf reads whisper.decisions until it holds want records of
// campaign (or the deadline passes) and returns that campaign's decisions.
func (h *harness) decisionsOf(t *testing.T, campaign string, want int) []*decisionv1.Decision {
	return h.readDecisions(t, campaign, want, 20*time.Second)
}

// settledDecisions gives stray extra decisions a second to appear, then
// returns the campaign's decisions, reading until it finds at least the
// seen ones already read: one read may find none when the reading
// consumer is slow to start on a busy machine.
func (h *harness) settledDecisions(t *testing.T, campaign string, seen int) []*decisionv1.Decision {
	time.Sleep(time.Second)
	return h.readDecisions(t, campaign, seen, 20*time.Second)
}

func (h *harness) readDecisions(t *testing.T, campaign string, want int, wait time.Duration) []*decisionv1.Decision {
	t.Helper()
	var out []*decisionv1.Decision
	deadline := time.Now().Add(wait)
	for {
		out = out[:0]
		for _, r := range kafkatest.ReadAll(t, h.brokers, kafka.TopicDecisions, 1<<20, 300*time.Millisecond) {
			d := &decisionv1.Decision{}
			if err := proto.Unmarshal(r.Value, d); err != nil {
				t.Fatal(err)
			}
			if want := string(kafka.Key(d.GetWorkspaceId(), d.GetUserId())); string(r.Key) != want {
				t.Errorf("record key %q, want %q", r.Key, want)
			}
			if d.GetCampaignId() == campaign {
				out = append(out, d)
			}
		}
		if len(out) >= want || time.Now().After(deadline) {
			return out
		}
	}
}

func track(ws, msgID, user, name string, at time.Time, props string) *eventv1.Event {
	return &eventv1.Event{
		MessageId: msgID, WorkspaceId: ws, Type: eventv1.EventType_EVENT_TYPE_TRACK, UserId: user, Event: name,
		Properties: []byte(props), Timestamp: timestamppb.New(at),
	}
}

func emailCampaign(trigger string) *campaignv1.Campaign {
	return &campaignv1.Campaign{
		Name:    "cart reminder",
		Trigger: &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: trigger}}},
		Variants: []*campaignv1.Variant{
			{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_EMAIL, ContentRef: "cart/a", Topic: "marketing"},
		},
	}
}

// banditRows counts the bandit's recorded exposures or conversions.
func (h *harness) banditRows(t *testing.T, kind string) int {
	t.Helper()
	q := `SELECT count(*) FROM bandit_decisions`
	if kind == "conversion" {
		q += ` WHERE converted_at IS NOT NULL`
	}
	var n int
	if err := h.store.pool.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestInvalidCampaigns(t *testing.T) {
	h := newHarness(t)
	valid := emailCampaign("Cart Abandoned")
	tests := []struct {
		name   string
		mutate func(c *campaignv1.Campaign)
		field  string
	}{
		{"no name", func(c *campaignv1.Campaign) { c.Name = "" }, "campaign.name"},
		{"no trigger", func(c *campaignv1.Campaign) { c.Trigger = nil }, "campaign.trigger"},
		{"condition does not compile", func(c *campaignv1.Campaign) { c.GetTrigger().GetEvent().Condition = "event.properties.total >" }, "campaign.trigger.event.condition"},
		{"condition not bool", func(c *campaignv1.Campaign) { c.GetTrigger().GetEvent().Condition = `"yes"` }, "campaign.trigger.event.condition"},
		{"audience does not compile", func(c *campaignv1.Campaign) { c.Audience = "profile.no_such_field == 1" }, "campaign.audience"},
		{"audience not bool", func(c *campaignv1.Campaign) { c.Audience = "profile.engagement_score" }, "campaign.audience"},
		{"unknown stage", func(c *campaignv1.Campaign) {
			c.Trigger = &campaignv1.Trigger{Kind: &campaignv1.Trigger_ProfileChange{ProfileChange: &campaignv1.ProfileChangeTrigger{Change: &campaignv1.ProfileChangeTrigger_EnteredStage{EnteredStage: "sleepy"}}}}
		}, "campaign.trigger.profile_change.entered_stage"},
		{"no variants", func(c *campaignv1.Campaign) { c.Variants = nil }, "campaign.variants"},
		{"unknown channel", func(c *campaignv1.Campaign) { c.Variants[0].Channel = campaignv1.Channel(42) }, "campaign.variants[0].channel"},
		{"zero weight", func(c *campaignv1.Campaign) { c.Variants[0].Weight = 0 }, "campaign.variants[0].weight"},
		{"negative weight", func(c *campaignv1.Campaign) {
			c.Variants = append(c.Variants, &campaignv1.Variant{Id: "B", Weight: -1, Channel: campaignv1.Channel_CHANNEL_SMS, ContentRef: "x"})
		}, "campaign.variants[1].weight"},
		{"duplicate variant", func(c *campaignv1.Campaign) { c.Variants = append(c.Variants, proto.CloneOf(c.Variants[0])) }, "campaign.variants[1].id"},
		{"no content", func(c *campaignv1.Campaign) { c.Variants[0].ContentRef = "" }, "campaign.variants[0].content_ref"},
		{"NUL in the trigger", func(c *campaignv1.Campaign) { c.GetTrigger().GetEvent().Name = "a\x00b" }, "campaign.trigger.event.name"},
		{"NUL in an exit event", func(c *campaignv1.Campaign) {
			c.Wait = &campaignv1.Wait{Delay: durationpb.New(time.Hour), ExitEvents: []string{"ok", "\x00"}}
		}, "campaign.wait.exit_events[1]"},
		{"holdout too big", func(c *campaignv1.Campaign) { c.HoldoutShare = 0.6 }, "campaign.holdout_share"},
		{"holdout negative", func(c *campaignv1.Campaign) { c.HoldoutShare = -0.1 }, "campaign.holdout_share"},
		{"negative delay", func(c *campaignv1.Campaign) { c.Wait = &campaignv1.Wait{Delay: durationpb.New(-time.Hour)} }, "campaign.wait.delay"},
		{"wait for event without timeout", func(c *campaignv1.Campaign) { c.Wait = &campaignv1.Wait{WaitForEvent: "Checkout"} }, "campaign.wait.delay"},
		{"goal without window", func(c *campaignv1.Campaign) { c.GoalEvent = "Order Completed" }, "campaign.attribution_window"},
		{"negative window", func(c *campaignv1.Campaign) { c.AttributionWindow = durationpb.New(-time.Minute) }, "campaign.attribution_window"},
		{"priority out of range", func(c *campaignv1.Campaign) { c.Priority = 101 }, "campaign.priority"},
		{"send time without max delay", func(c *campaignv1.Campaign) { c.OptimizeSendTime = true }, "campaign.max_send_delay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := proto.CloneOf(valid)
			tt.mutate(c)
			_, err := h.campaigns[tokenA].CreateCampaign(context.Background(), &campaignv1.CreateCampaignRequest{Campaign: c})
			if connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Fatalf("CreateCampaign: got %v, want InvalidArgument", err)
			}
			var ce *connect.Error
			errors.As(err, &ce)
			if !strings.HasPrefix(ce.Message(), tt.field+": ") {
				t.Errorf("message %q does not name %s", ce.Message(), tt.field)
			}
		})
	}
	// And the valid one passes, as a draft.
	res, err := h.campaigns[tokenA].CreateCampaign(context.Background(), &campaignv1.CreateCampaignRequest{Campaign: valid})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.GetCampaign().GetStatus(); got != campaignv1.CampaignStatus_CAMPAIGN_STATUS_DRAFT {
		t.Errorf("status %v, want draft", got)
	}
}

func protocmpTransform() cmp.Option { return protocmp.Transform() }

func ignore(fields ...protoreflect.Name) cmp.Option {
	return protocmp.IgnoreFields(&decisionv1.Decision{}, fields...)
}
