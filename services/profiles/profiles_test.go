package profiles_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/metricstest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/services/profiles"
)

const (
	wsA = "6a0d3c1e-2f4b-4c8d-9e1a-0b2c3d4e5f60"
	wsB = "7b1e4d2f-3a5c-4d9e-8f2b-1c3d4e5f6071"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

type harness struct {
	dbURL    string
	brokers  []string
	producer *kgo.Client
	store    *profiles.Store
	handler  *profiles.Handler
	rdb      *redis.Client
	clock    *clock
}

// clock is a controlled clock, at t0 plus an hour unless set.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	_, brokers := kafkatest.NewCluster(t, kfake.SeedTopics(3, kafka.TopicEvents, kafka.TopicEventsDLQ, kafka.TopicProfiles))
	dbURL := pgtest.NewDatabase(t)
	pool, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := postgres.Migrate(context.Background(), pool, profiles.Migrations, logger); err != nil {
		t.Fatal(err)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.DefaultProduceTopic(kafka.TopicEvents))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	store := profiles.NewStore(pool)
	return &harness{
		dbURL: dbURL, brokers: brokers, producer: producer, store: store, handler: profiles.NewHandler(store, logger),
		rdb: redistest.New(t), clock: &clock{t: t0.Add(time.Hour)},
	}
}

// consume runs a consumer in group until the test ends; its metrics are
// on the returned registry.
func (h *harness) consume(t *testing.T, group string) *prometheus.Registry {
	t.Helper()
	return h.consumeWith(t, group, h.rdb)
}

// consumeWith is consume with another Redis client.
func (h *harness) consumeWith(t *testing.T, group string, rdb *redis.Client) *prometheus.Registry {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(h.brokers...)}, profiles.ConsumerOpts(group)...)...)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	svc := profiles.New(profiles.Options{
		Store: h.store, Client: cl, Redis: rdb, Registerer: reg, Now: h.clock.now,
		SweepInterval: 50 * time.Millisecond, RelayInterval: 50 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		cl.Close()
	})
	return reg
}

func (h *harness) produce(t *testing.T, evs ...*eventv1.Event) {
	t.Helper()
	var recs []*kgo.Record
	for _, ev := range evs {
		b, err := proto.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		user := ev.GetUserId()
		if user == "" {
			user = ev.GetAnonymousId()
		}
		recs = append(recs, &kgo.Record{Key: kafka.Key(ev.GetWorkspaceId(), user), Value: b})
	}
	if err := h.producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

var msgSeq int

func ev(ws string, typ eventv1.EventType, user, anon string, at time.Duration, mutate ...func(*eventv1.Event)) *eventv1.Event {
	msgSeq++
	e := &eventv1.Event{
		MessageId: fmt.Sprintf("m%d", msgSeq), WorkspaceId: ws, Type: typ, UserId: user, AnonymousId: anon,
		Timestamp: timestamppb.New(t0.Add(at)),
	}
	for _, m := range mutate {
		m(e)
	}
	return e
}

func track(ws, user, anon, name string, at time.Duration) *eventv1.Event {
	return ev(ws, eventv1.EventType_EVENT_TYPE_TRACK, user, anon, at, func(e *eventv1.Event) { e.Event = name })
}

func identify(ws, user, anon, traits string, at time.Duration) *eventv1.Event {
	return ev(ws, eventv1.EventType_EVENT_TYPE_IDENTIFY, user, anon, at, func(e *eventv1.Event) { e.Traits = []byte(traits) })
}

func alias(ws, user, previous string, at time.Duration) *eventv1.Event {
	return ev(ws, eventv1.EventType_EVENT_TYPE_ALIAS, user, "", at, func(e *eventv1.Event) { e.PreviousId = previous })
}

func as(ws string) context.Context {
	return auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: ws, CredentialID: "tok"})
}

// waitProfile polls GetProfile until it returns want (ignoring the
// generated profile id, the write time, the computed lifecycle fields and
// the sessions, which TestSessionsEndToEnd and TestIdentityAliasAndReplay
// check) or the deadline passes.
func (h *harness) waitProfile(t *testing.T, ctx context.Context, req *profilev1.GetProfileRequest, want *profilev1.Profile) *profilev1.Profile {
	t.Helper()
	return h.waitProfileCmp(t, ctx, req, want, protocmp.IgnoreFields(&profilev1.Profile{},
		"stage", "stage_time", "engagement_score", "churn_risk", "score_inputs", "rolling_counts",
		"session_count", "session_start_time"))
}

// waitProfileCmp is waitProfile comparing what opts do not ignore.
func (h *harness) waitProfileCmp(t *testing.T, ctx context.Context, req *profilev1.GetProfileRequest, want *profilev1.Profile, opts ...cmp.Option) *profilev1.Profile {
	t.Helper()
	opts = append(opts, protocmp.Transform(), protocmp.IgnoreFields(&profilev1.Profile{}, "profile_id", "update_time"))
	deadline := time.Now().Add(20 * time.Second)
	var diff string
	for time.Now().Before(deadline) {
		res, err := h.handler.GetProfile(ctx, req)
		if err == nil {
			if diff = cmp.Diff(want, res.GetProfile(), opts...); diff == "" {
				return res.GetProfile()
			}
		} else {
			diff = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("GetProfile(%v) never matched; last (-want +got):\n%s", req, diff)
	return nil
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIdentityAliasAndReplay(t *testing.T) {
	h := newHarness(t)
	reg1 := h.consume(t, "g1")
	h.produce(t,
		track(wsA, "", "anon-1", "Viewed", 0),
		identify(wsA, "u1", "anon-1", `{"plan":"free","name":"Ann"}`, time.Minute),
		track(wsA, "u1", "", "Viewed", 2*time.Minute),
		track(wsA, "u1", "", "Bought", 3*time.Minute),
		// A second user, merged into u1 by an alias keyed on the old id.
		track(wsA, "old-id", "", "Viewed", -time.Hour),
		identify(wsA, "old-id", "", `{"city":"Oslo","plan":"trial"}`, -time.Hour),
		alias(wsA, "u1", "old-id", 4*time.Minute),
		track(wsA, "old-id", "", "Bought", 5*time.Minute),
		track(wsA, "u1", "", "Signed Up", 6*time.Minute),
		// Same user id in another workspace: a different profile. Its
		// events share one key, so one partition applies them in this
		// order: two sessions (a gap of 2h45m), the late event at -4h
		// starting none, the last one within 30 minutes of t0.
		track(wsB, "u1", "", "Viewed", -3*time.Hour),
		track(wsB, "u1", "", "Viewed", -3*time.Hour+15*time.Minute),
		track(wsB, "u1", "", "Viewed", 0),
		track(wsB, "u1", "", "Viewed", -4*time.Hour),
		track(wsB, "u1", "", "Viewed", 10*time.Minute),
	)
	now := t0.Add(time.Hour) // the harness's clock
	want := &profilev1.Profile{
		WorkspaceId:    wsA,
		UserId:         "u1",
		AnonymousIds:   []string{"anon-1", "old-id"},
		Traits:         mustStruct(t, map[string]any{"plan": "free", "name": "Ann", "city": "Oslo"}),
		FirstSeenTime:  timestamppb.New(t0.Add(-time.Hour)),
		LastSeenTime:   timestamppb.New(t0.Add(6 * time.Minute)),
		EventCounts:    map[string]int64{"Viewed": 3, "Bought": 2, "Signed Up": 1},
		LastEventTimes: map[string]*timestamppb.Timestamp{"Viewed": timestamppb.New(t0.Add(2 * time.Minute)), "Bought": timestamppb.New(t0.Add(5 * time.Minute)), "Signed Up": timestamppb.New(t0.Add(6 * time.Minute))},
		// Every event is of t0's day: one active day, nine events, no
		// earlier activity (trend 1), the activation event seen.
		Stage:     profiles.StageActivated,
		StageTime: timestamppb.New(now),
		// 100·σ(-3 + 0.6·1 + 0.1·1) = 100·σ(-2.3) = 9.1
		EngagementScore: 9,
		// σ(-1.5 - 0.4·1 - 0.05·1) = σ(-1.95) = 0.12455
		ChurnRisk: 0.1246,
		ScoreInputs: &profilev1.ScoreInputs{
			ComputedTime: timestamppb.New(now), DaysSinceLastSeen: 0, DaysSinceFirstSeen: 0,
			ActiveDays_7D: 1, ActiveDays_28D: 1, Events_7D: 9, Events_28D: 9, Trend: 1, Activated: true,
		},
		RollingCounts: map[string]*profilev1.WindowCounts{
			"Viewed":    {Last_1D: 3, Last_7D: 3, Last_28D: 3},
			"Bought":    {Last_1D: 2, Last_7D: 2, Last_28D: 2},
			"Signed Up": {Last_1D: 1, Last_7D: 1, Last_28D: 1},
		},
	}
	// The alias and the later event may be applied by other partitions'
	// batches in either order; the end state is the same, but for the
	// sessions, checked below.
	ignoreSessions := protocmp.IgnoreFields(&profilev1.Profile{}, "session_count", "session_start_time")
	got := h.waitProfileCmp(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}}, want, ignoreSessions)
	// Sessions depend on the order in which the three keys' partitions
	// (anon-1: the first track; u1: identify and tracks; old-id: old-id's
	// events and the alias) are applied, for a late event starts no session
	// and a merge adds counts up. Applying every interleaving in memory
	// (TestSessionsOfEveryInterleaving) gives exactly these outcomes.
	type sessions struct {
		Count int64
		Start time.Time
	}
	gotSessions := sessions{got.GetSessionCount(), got.GetSessionStartTime().AsTime()}
	if !slices.Contains([]sessions{
		{2, t0},                      // anon-1 and u1 one session, old-id's merged in
		{2, t0.Add(time.Minute)},     // identify before anon-1's track: that one is late
		{2, t0.Add(4 * time.Minute)}, // the alias before u1's events, 64 min after old-id's
		{3, t0.Add(4 * time.Minute)}, // as above, anon-1's profile merged by the identify
	}, gotSessions) {
		t.Errorf("u1's sessions are %+v, not an outcome of any order of application", gotSessions)
	}
	wantB := sessions{2, t0}
	waitFor(t, "wsB's u1 to have all its events", func() bool {
		res, err := h.handler.GetProfile(as(wsB), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}})
		return err == nil && res.GetProfile().GetEventCounts()["Viewed"] == 5
	})
	resB, err := h.handler.GetProfile(as(wsB), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}})
	if err != nil {
		t.Fatal(err)
	}
	if gotB := (sessions{resB.GetProfile().GetSessionCount(), resB.GetProfile().GetSessionStartTime().AsTime()}); gotB != wantB {
		t.Errorf("wsB's u1 has sessions %+v, want %+v", gotB, wantB)
	}
	for _, req := range []*profilev1.GetProfileRequest{
		{Id: &profilev1.GetProfileRequest_AnonymousId{AnonymousId: "anon-1"}},
		{Id: &profilev1.GetProfileRequest_UserId{UserId: "old-id"}},
	} {
		res, err := h.handler.GetProfile(as(wsA), req)
		if err != nil {
			t.Fatalf("GetProfile(%v): %v", req, err)
		}
		if diff := cmp.Diff(got, res.GetProfile(), protocmp.Transform()); diff != "" {
			t.Errorf("GetProfile(%v) is not the merged profile (-want +got):\n%s", req, diff)
		}
	}
	list, err := h.handler.ListProfiles(as(wsA), &profilev1.ListProfilesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetProfiles()) != 1 {
		t.Errorf("ListProfiles: %d profiles, want 1 (the alias merged two): %v", len(list.GetProfiles()), list.GetProfiles())
	}

	// Every partition that had records reports its lag: none left.
	waitFor(t, "the consumer lag to reach 0", func() bool {
		lag, partitions := gaugeSum(reg1, "whisper_kafka_consumer_lag_records")
		return lag == 0 && partitions >= 2 // the four user keys hash to at least two of the three partitions
	})
	if n := metricValue(reg1, "whisper_profiles_records_total", map[string]string{"outcome": "applied"}); n != 14 {
		t.Errorf("%v records applied, want 14", n)
	}

	// Redis mirrors the day's buckets, absolutely.
	day := strconv.FormatInt(t0.Unix()/86400, 10)
	wantRolling := map[string]string{day: "9", day + ":Viewed": "3", day + ":Bought": "2", day + ":Signed Up": "1"}
	rolling := h.waitRolling(t, wsA, got.GetProfileId(), wantRolling)

	// whisper.profiles: the last change of u1's profile carries the state
	// GetProfile shows. (Whether old-id's profile existed before the alias
	// merged it depends on how the partitions' batches interleave; see
	// TestProfileChanges for MERGED.)
	h.waitOutboxEmpty(t)
	published := h.topicSize(t, kafka.TopicProfiles)
	changes := h.readChanges(t, published)
	var last *profilev1.ProfileChange
	kinds := map[profilev1.ProfileChangeKind]bool{}
	for _, c := range changes {
		if c.GetProfile().GetProfileId() == got.GetProfileId() {
			last = c
			for _, k := range c.GetKinds() {
				kinds[k] = true
			}
		}
	}
	if diff := cmp.Diff(got, last.GetProfile(), protocmp.Transform()); diff != "" {
		t.Errorf("last published change of u1 (-GetProfile +change):\n%s", diff)
	}
	if !kinds[profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_CREATED] {
		t.Errorf("u1's changes are of kinds %v; want CREATED among them", kinds)
	}

	// Replay: a fresh group consumes the whole topic again; every record is
	// a duplicate and nothing changes, not even the write time, nothing is
	// published again and the Redis mirror holds the same values.
	reg := h.consume(t, "g2-replay")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && recordCount(t, reg, "duplicate") < 14 {
		time.Sleep(50 * time.Millisecond)
	}
	if n := recordCount(t, reg, "duplicate"); n != 14 {
		t.Fatalf("replay: %v duplicates, want 14", n)
	}
	if n := recordCount(t, reg, "applied"); n != 0 {
		t.Errorf("replay: %v records applied again, want 0", n)
	}
	res, err := h.handler.GetProfile(as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, res.GetProfile(), protocmp.Transform()); diff != "" {
		t.Errorf("profile changed by the replay (-before +after):\n%s", diff)
	}
	time.Sleep(300 * time.Millisecond) // several relay intervals
	h.waitOutboxEmpty(t)
	if n := h.topicSize(t, kafka.TopicProfiles); n != published {
		t.Errorf("whisper.profiles has %d records after the replay, %d before", n, published)
	}
	after, err := h.rdb.HGetAll(context.Background(), profiles.RollingKey(wsA, got.GetProfileId())).Result()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rolling, after); diff != "" {
		t.Errorf("redis mirror changed by the replay (-before +after):\n%s", diff)
	}
}

// waitRolling polls the Redis mirror of a profile until its bucket fields
// are want, and returns the whole hash (version included).
func (h *harness) waitRolling(t *testing.T, ws, profileID string, want map[string]string) map[string]string {
	t.Helper()
	var got map[string]string
	var err error
	waitFor(t, "the redis mirror", func() bool {
		got, err = h.rdb.HGetAll(context.Background(), profiles.RollingKey(ws, profileID)).Result()
		if err != nil || got[profiles.RollingVersionField] == "" {
			return false
		}
		buckets := maps.Clone(got)
		delete(buckets, profiles.RollingVersionField)
		return cmp.Equal(want, buckets)
	})
	ttl := h.rdb.PTTL(context.Background(), profiles.RollingKey(ws, profileID)).Val()
	if ttl <= profiles.RollingTTL-time.Minute || ttl > profiles.RollingTTL {
		t.Errorf("rolling key TTL %v, want about %v", ttl, profiles.RollingTTL)
	}
	return got
}

// waitOutboxEmpty waits until every change in the outbox is published.
func (h *harness) waitOutboxEmpty(t *testing.T) {
	t.Helper()
	pool := h.pool(t)
	waitFor(t, "the outbox to drain", func() bool {
		var n int
		return pool.QueryRow(context.Background(), `SELECT count(*) FROM profile_outbox`).Scan(&n) == nil && n == 0
	})
}

func (h *harness) pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), h.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// topicSize sums the end offsets of topic's partitions.
func (h *harness) topicSize(t *testing.T, topic string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) { n += o.Offset })
	return n
}

// readChanges reads n records of whisper.profiles, in partition order,
// checking that no change id repeats.
func (h *harness) readChanges(t *testing.T, n int64) []*profilev1.ProfileChange {
	t.Helper()
	recs := kafkatest.ReadAll(t, h.brokers, kafka.TopicProfiles, int(n), 10*time.Second)
	if int64(len(recs)) != n {
		t.Fatalf("read %d records of whisper.profiles, want %d", len(recs), n)
	}
	seen := map[string]bool{}
	var out []*profilev1.ProfileChange
	for _, r := range recs {
		c := &profilev1.ProfileChange{}
		if err := proto.Unmarshal(r.Value, c); err != nil {
			t.Fatal(err)
		}
		if seen[c.GetChangeId()] {
			t.Errorf("change %s published twice", c.GetChangeId())
		}
		seen[c.GetChangeId()] = true
		if want := kafka.Key(c.GetWorkspaceId(), c.GetProfile().GetUserId()); c.GetProfile().GetUserId() != "" && string(r.Key) != string(want) {
			t.Errorf("change of %s keyed %q, want %q", c.GetProfile().GetUserId(), r.Key, want)
		}
		out = append(out, c)
	}
	return out
}

// recordCount reads whisper_profiles_records_total{outcome}.
func recordCount(t testing.TB, reg *prometheus.Registry, outcome string) float64 {
	return metricstest.Series(t, reg, "whisper_profiles_records_total", "outcome", outcome).GetCounter().GetValue()
}

func TestOutOfOrderTraits(t *testing.T) {
	h := newHarness(t)
	h.consume(t, "g")
	// The newer identify is produced (and applied) first.
	// Invalid UTF-8 and a lone surrogate, which jsonb refuses, are stored
	// as U+FFFD rather than wedging the partition.
	h.produce(t, identify(wsA, "u1", "", "{\"plan\":\"pro\",\"seats\":5,\"bad\":\"\xff\\ud800\",\"big\":12345678901234567890}", 2*time.Hour))
	h.waitProfile(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}}, &profilev1.Profile{
		WorkspaceId: wsA, UserId: "u1", Traits: mustStruct(t, map[string]any{"plan": "pro", "seats": 5, "bad": "\ufffd\ufffd", "big": 12345678901234567890.0}),
		FirstSeenTime: timestamppb.New(t0.Add(2 * time.Hour)), LastSeenTime: timestamppb.New(t0.Add(2 * time.Hour)),
	})
	h.produce(t, identify(wsA, "u1", "", `{"plan":"free","company":"Acme"}`, time.Hour))
	h.waitProfile(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}}, &profilev1.Profile{
		WorkspaceId: wsA, UserId: "u1", Traits: mustStruct(t, map[string]any{"plan": "pro", "seats": 5, "bad": "\ufffd\ufffd", "big": 12345678901234567890.0, "company": "Acme"}),
		FirstSeenTime: timestamppb.New(t0.Add(time.Hour)), LastSeenTime: timestamppb.New(t0.Add(2 * time.Hour)),
	})
}

func TestUndecodableRecordsGoToTheDLQ(t *testing.T) {
	h := newHarness(t)
	h.consume(t, "g")
	garbage := &kgo.Record{Key: []byte("x"), Value: []byte("\xff\xffnot protobuf")}
	noWorkspace, _ := proto.Marshal(track("not-a-uuid", "u1", "", "Viewed", 0))
	// Valid protobuf that PostgreSQL cannot store: it must not wedge the
	// partition in retries.
	nul, _ := proto.Marshal(identify(wsA, "u1", "", `{"name":"a\u0000b"}`, 0))
	if err := h.producer.ProduceSync(context.Background(), garbage,
		&kgo.Record{Key: []byte("y"), Value: noWorkspace}, &kgo.Record{Key: []byte("z"), Value: nul}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	h.produce(t, track(wsA, "u9", "", "Viewed", 0))
	h.waitProfile(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u9"}}, &profilev1.Profile{
		WorkspaceId: wsA, UserId: "u9", Traits: &structpb.Struct{},
		FirstSeenTime: timestamppb.New(t0), LastSeenTime: timestamppb.New(t0),
		EventCounts:    map[string]int64{"Viewed": 1},
		LastEventTimes: map[string]*timestamppb.Timestamp{"Viewed": timestamppb.New(t0)},
	})
	dead := kafkatest.ReadAll(t, h.brokers, kafka.TopicEventsDLQ, 3, 10*time.Second)
	if len(dead) != 3 {
		t.Fatalf("DLQ has %d records, want 3", len(dead))
	}
	reasons := map[string]string{}
	for _, r := range dead {
		for _, hd := range r.Headers {
			if hd.Key == profiles.HeaderDLQReason {
				reasons[string(r.Key)] = string(hd.Value)
			}
		}
	}
	for key, want := range map[string]string{"x": "not a whisper.event.v1.Event", "y": `workspace_id "not-a-uuid" is not a uuid`, "z": "traits contain a NUL character"} {
		if !strings.Contains(reasons[key], want) {
			t.Errorf("DLQ record %q: reason %q, want one containing %q", key, reasons[key], want)
		}
	}
}

func TestHandlerErrors(t *testing.T) {
	h := newHarness(t)
	h.consume(t, "g")
	h.produce(t, track(wsA, "u1", "", "Viewed", 0))
	h.waitProfile(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}}, &profilev1.Profile{
		WorkspaceId: wsA, UserId: "u1", Traits: &structpb.Struct{},
		FirstSeenTime: timestamppb.New(t0), LastSeenTime: timestamppb.New(t0),
		EventCounts:    map[string]int64{"Viewed": 1},
		LastEventTimes: map[string]*timestamppb.Timestamp{"Viewed": timestamppb.New(t0)},
	})
	admin := auth.NewContext(context.Background(), &auth.Principal{Admin: true})
	byUser := func(ws, id string) *profilev1.GetProfileRequest {
		return &profilev1.GetProfileRequest{WorkspaceId: ws, Id: &profilev1.GetProfileRequest_UserId{UserId: id}}
	}
	tests := []struct {
		name     string
		ctx      context.Context
		req      *profilev1.GetProfileRequest
		code     connect.Code
		contains string
	}{
		{"own workspace, implied", as(wsA), byUser("", "u1"), 0, ""},
		{"admin names the workspace", admin, byUser(wsA, "u1"), 0, ""},
		{"admin without a workspace", admin, byUser("", "u1"), connect.CodeInvalidArgument, "workspace_id: required"},
		{"another workspace's token, implied", as(wsB), byUser("", "u1"), connect.CodeNotFound, ""},
		{"another workspace's token, named", as(wsB), byUser(wsA, "u1"), connect.CodePermissionDenied, ""},
		{"unknown user", as(wsA), byUser("", "nobody"), connect.CodeNotFound, ""},
		{"no id", as(wsA), &profilev1.GetProfileRequest{}, connect.CodeInvalidArgument, "id: set user_id or anonymous_id"},
		{"empty user id", as(wsA), byUser("", ""), connect.CodeInvalidArgument, "user_id:"},
		{"bad workspace id", as(wsA), byUser("nope", "u1"), connect.CodeInvalidArgument, "workspace_id: not a valid id"},
		{"no principal", context.Background(), byUser(wsA, "u1"), connect.CodeUnauthenticated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.handler.GetProfile(tt.ctx, tt.req)
			if tt.code == 0 {
				if err != nil || res.GetProfile().GetUserId() != "u1" {
					t.Fatalf("GetProfile = %v, %v; want u1's profile", res, err)
				}
				return
			}
			if connect.CodeOf(err) != tt.code || !strings.Contains(err.Error(), tt.contains) {
				t.Fatalf("GetProfile = %v, %v; want %v containing %q", res, err, tt.code, tt.contains)
			}
			if res.GetProfile() != nil {
				t.Errorf("an error came with data: %v", res)
			}
		})
	}
	if _, err := h.handler.ListProfiles(as(wsA), &profilev1.ListProfilesRequest{PageSize: 1001}); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_size") {
		t.Errorf("ListProfiles(page_size=1001) = %v, want InvalidArgument naming page_size", err)
	}
	if _, err := h.handler.ListProfiles(as(wsA), &profilev1.ListProfilesRequest{PageToken: "zz"}); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "page_token") {
		t.Errorf("ListProfiles(bad token) = %v, want InvalidArgument naming page_token", err)
	}
}

func TestListProfilesPages(t *testing.T) {
	h := newHarness(t)
	h.consume(t, "g")
	var evs []*eventv1.Event
	for i := range 7 {
		evs = append(evs, track(wsA, fmt.Sprintf("u%d", i), "", "Viewed", 0))
	}
	evs = append(evs, track(wsB, "other", "", "Viewed", 0))
	h.produce(t, evs...)
	h.waitProfile(t, as(wsB), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "other"}}, &profilev1.Profile{
		WorkspaceId: wsB, UserId: "other", Traits: &structpb.Struct{},
		FirstSeenTime: timestamppb.New(t0), LastSeenTime: timestamppb.New(t0),
		EventCounts:    map[string]int64{"Viewed": 1},
		LastEventTimes: map[string]*timestamppb.Timestamp{"Viewed": timestamppb.New(t0)},
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var users []string
		token := ""
		pages := 0
		for {
			res, err := h.handler.ListProfiles(as(wsA), &profilev1.ListProfilesRequest{PageSize: 3, PageToken: token})
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, p := range res.GetProfiles() {
				users = append(users, p.GetUserId())
			}
			if token = res.GetNextPageToken(); token == "" {
				break
			}
		}
		if len(users) == 7 {
			if pages != 3 {
				t.Errorf("7 profiles in %d pages of 3, want 3", pages)
			}
			seen := map[string]bool{}
			for _, u := range users {
				if seen[u] || !strings.HasPrefix(u, "u") {
					t.Errorf("listed %q twice or from another workspace: %v", u, users)
				}
				seen[u] = true
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("listed %v, want u0..u6", users)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setDatabaseUp lets the harness's database accept connections or not;
// refusing also ends the connections it has.
func (h *harness) setDatabaseUp(t *testing.T, up bool) {
	t.Helper()
	u, err := url.Parse(h.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s ALLOW_CONNECTIONS %t", name, up)); err != nil {
		t.Fatal(err)
	}
	if !up {
		if _, err := conn.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name); err != nil {
			t.Fatal(err)
		}
	}
}

// committed returns the offsets group committed on whisper.events, summed
// over partitions.
func (h *harness) committed(t *testing.T, group string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(h.brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	offsets, err := kadm.NewClient(cl).FetchOffsets(context.Background(), group)
	if err != nil {
		t.Fatalf("fetch offsets of %s: %v", group, err)
	}
	var sum int64
	offsets.Each(func(o kadm.OffsetResponse) {
		if o.Topic == kafka.TopicEvents && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

// TestDatabaseDown: while PostgreSQL refuses connections the consumer
// retries and commits nothing; once it is back, the events are applied and
// then committed.
func TestDatabaseDown(t *testing.T) {
	h := newHarness(t)
	reg := h.consume(t, "g")
	h.produce(t, track(wsA, "u0", "", "Viewed", 0))
	want := func(user string) *profilev1.Profile {
		return &profilev1.Profile{
			WorkspaceId: wsA, UserId: user, Traits: &structpb.Struct{},
			FirstSeenTime: timestamppb.New(t0), LastSeenTime: timestamppb.New(t0),
			EventCounts:    map[string]int64{"Viewed": 1},
			LastEventTimes: map[string]*timestamppb.Timestamp{"Viewed": timestamppb.New(t0)},
		}
	}
	h.waitProfile(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u0"}}, want("u0"))
	waitFor(t, "the first event's offset to be committed", func() bool { return h.committed(t, "g") == 1 })

	h.setDatabaseUp(t, false)
	t.Cleanup(func() { h.setDatabaseUp(t, true) })
	h.produce(t, track(wsA, "u1", "", "Viewed", 0), track(wsA, "u2", "", "Viewed", 0))
	waitFor(t, "failed attempts while the database is down", func() bool {
		return metricstest.Series(t, reg, "whisper_profiles_failures_total", "operation", "apply events").GetCounter().GetValue() >= 2
	})
	if n := h.committed(t, "g"); n != 1 {
		t.Fatalf("committed offsets sum to %d while the database was down, want 1", n)
	}

	h.setDatabaseUp(t, true)
	for _, u := range []string{"u1", "u2"} {
		h.waitProfile(t, as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: u}}, want(u))
	}
	waitFor(t, "every offset to be committed", func() bool { return h.committed(t, "g") == 3 })
	if n := recordCount(t, reg, "applied"); n != 3 {
		t.Errorf("%v records applied, want 3", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestProfileChanges applies events one at a time and checks what each
// publishes on whisper.profiles: creation, trait changes, merges and stage
// changes, in order, and nothing for an event that moves no stage, band or
// trait.
func TestProfileChanges(t *testing.T) {
	h := newHarness(t)
	h.consume(t, "g")
	byUser := func(u string) *profilev1.GetProfileRequest {
		return &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: u}}
	}
	type want struct {
		kinds         []profilev1.ProfileChangeKind
		previousStage string
		stage         string
		traits        []string
		merged        bool
	}
	const (
		created = profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_CREATED
		stage   = profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_STAGE
		traits  = profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_TRAITS
		merged  = profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_MERGED
	)
	var u2ID string
	steps := []struct {
		name  string
		event *eventv1.Event
		user  string
		check func(*profilev1.Profile) bool
		want  []want
	}{
		{"identify creates", identify(wsA, "u1", "", `{"plan":"free"}`, 0), "u1",
			func(p *profilev1.Profile) bool { return p != nil },
			[]want{{kinds: []profilev1.ProfileChangeKind{created}, stage: "new", traits: []string{"plan"}}}},
		{"same trait value: nothing that matters", identify(wsA, "u1", "", `{"plan":"free"}`, time.Minute), "u1",
			func(p *profilev1.Profile) bool { return p.GetLastSeenTime().AsTime().Equal(t0.Add(time.Minute)) },
			nil},
		{"a trait changes", identify(wsA, "u1", "", `{"plan":"pro","seats":3}`, 2*time.Minute), "u1",
			func(p *profilev1.Profile) bool { return p.GetTraits().GetFields()["plan"].GetStringValue() == "pro" },
			[]want{{kinds: []profilev1.ProfileChangeKind{traits}, previousStage: "new", stage: "new", traits: []string{"plan", "seats"}}}},
		{"another user", track(wsA, "u2", "", "Viewed", 3*time.Minute), "u2",
			func(p *profilev1.Profile) bool { u2ID = p.GetProfileId(); return p != nil },
			[]want{{kinds: []profilev1.ProfileChangeKind{created}, stage: "new"}}},
		{"alias merges u2 into u1", alias(wsA, "u1", "u2", 4*time.Minute), "u1",
			func(p *profilev1.Profile) bool { return p.GetEventCounts()["Viewed"] == 1 },
			[]want{{kinds: []profilev1.ProfileChangeKind{merged}, previousStage: "new", stage: "new", merged: true}}},
		{"activation", track(wsA, "u1", "", "Signed Up", 5*time.Minute), "u1",
			func(p *profilev1.Profile) bool { return p.GetStage() == "activated" },
			[]want{{kinds: []profilev1.ProfileChangeKind{stage}, previousStage: "new", stage: "activated"}}},
	}
	seen := map[string]bool{}
	for _, st := range steps {
		h.produce(t, st.event)
		var p *profilev1.Profile
		waitFor(t, st.name, func() bool {
			res, err := h.handler.GetProfile(as(wsA), byUser(st.user))
			p = res.GetProfile()
			return err == nil && st.check(p)
		})
		h.waitOutboxEmpty(t)
		n := h.topicSize(t, kafka.TopicProfiles)
		all := h.readChanges(t, n)
		// Each step publishes at most one change: the new ones are those
		// not seen before, whatever partition they are on.
		var got []want
		var fresh []*profilev1.ProfileChange
		for _, c := range all {
			if !seen[c.GetChangeId()] {
				seen[c.GetChangeId()] = true
				fresh = append(fresh, c)
			}
		}
		for _, c := range fresh {
			w := want{kinds: c.GetKinds(), previousStage: c.GetPreviousStage(), stage: c.GetProfile().GetStage(), traits: c.GetChangedTraits(), merged: len(c.GetMergedProfileIds()) > 0}
			got = append(got, w)
			if w.merged && !slices.Equal(c.GetMergedProfileIds(), []string{u2ID}) {
				t.Errorf("%s: merged %v, want [%s]", st.name, c.GetMergedProfileIds(), u2ID)
			}
			if diff := cmp.Diff(p, c.GetProfile(), protocmp.Transform()); diff != "" {
				t.Errorf("%s: the change's profile is not GetProfile's (-get +change):\n%s", st.name, diff)
			}
		}
		if diff := cmp.Diff(st.want, got, cmp.AllowUnexported(want{})); diff != "" {
			t.Errorf("%s: changes published (-want +got):\n%s", st.name, diff)
		}
	}
}

// gaugeSum sums the series of a gauge and counts them.
func gaugeSum(reg *prometheus.Registry, name string) (float64, int) {
	mfs, err := reg.Gather()
	if err != nil {
		return -1, 0
	}
	var sum float64
	n := 0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetGauge().GetValue()
				n++
			}
		}
	}
	return sum, n
}

// metricValue reads a counter or gauge with exactly the given labels; 0
// when absent.
func metricValue(reg *prometheus.Registry, name string, labels map[string]string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestSweeperMovesIdleProfiles: a profile without events becomes dormant,
// then churned, as the clock passes, and each change is published.
func TestSweeperMovesIdleProfiles(t *testing.T) {
	h := newHarness(t)
	reg := h.consume(t, "g")
	h.produce(t, track(wsA, "idle", "", "Viewed", 0))
	byUser := &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "idle"}}
	stageOf := func(want string) func() bool {
		return func() bool {
			res, err := h.handler.GetProfile(as(wsA), byUser)
			return err == nil && res.GetProfile().GetStage() == want
		}
	}
	waitFor(t, "stage new", stageOf("new"))
	h.waitOutboxEmpty(t)
	seen := map[string]bool{}
	for _, c := range h.readChanges(t, h.topicSize(t, kafka.TopicProfiles)) {
		seen[c.GetChangeId()] = true
	}

	for _, step := range []struct {
		after         time.Duration
		stage, before string
		inputs        *profilev1.ScoreInputs
		rolling       *profilev1.WindowCounts
	}{
		{15 * 24 * time.Hour, "dormant", "new",
			// The one event is more than 7 days old: trend 0.
			&profilev1.ScoreInputs{DaysSinceLastSeen: 15, DaysSinceFirstSeen: 15, ActiveDays_28D: 1, Events_28D: 1, Trend: 0},
			&profilev1.WindowCounts{Last_28D: 1}},
		{31 * 24 * time.Hour, "churned", "dormant",
			&profilev1.ScoreInputs{DaysSinceLastSeen: 31, DaysSinceFirstSeen: 31, Trend: 1},
			nil},
	} {
		now := t0.Add(step.after)
		h.clock.set(now)
		waitFor(t, "stage "+step.stage, stageOf(step.stage))
		res, err := h.handler.GetProfile(as(wsA), byUser)
		if err != nil {
			t.Fatal(err)
		}
		p := res.GetProfile()
		step.inputs.ComputedTime = timestamppb.New(now)
		if diff := cmp.Diff(step.inputs, p.GetScoreInputs(), protocmp.Transform()); diff != "" {
			t.Errorf("%s: inputs (-want +got):\n%s", step.stage, diff)
		}
		if !p.GetStageTime().AsTime().Equal(now) || !p.GetUpdateTime().AsTime().Equal(now) {
			t.Errorf("%s: stage time %v, update time %v; want both %v", step.stage, p.GetStageTime().AsTime(), p.GetUpdateTime().AsTime(), now)
		}
		if diff := cmp.Diff(step.rolling, p.GetRollingCounts()["Viewed"], protocmp.Transform()); diff != "" {
			t.Errorf("%s: rolling Viewed (-want +got):\n%s", step.stage, diff)
		}
		h.waitOutboxEmpty(t)
		var fresh []*profilev1.ProfileChange
		for _, c := range h.readChanges(t, h.topicSize(t, kafka.TopicProfiles)) {
			if !seen[c.GetChangeId()] {
				seen[c.GetChangeId()] = true
				fresh = append(fresh, c)
			}
		}
		if len(fresh) != 1 {
			t.Fatalf("%s: %d changes published, want 1: %v", step.stage, len(fresh), fresh)
		}
		c := fresh[0]
		if !slices.Equal(c.GetKinds(), []profilev1.ProfileChangeKind{profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_STAGE}) ||
			c.GetPreviousStage() != step.before || !c.GetChangeTime().AsTime().Equal(now) {
			t.Errorf("%s: published %v", step.stage, c)
		}
		if diff := cmp.Diff(p, c.GetProfile(), protocmp.Transform()); diff != "" {
			t.Errorf("%s: the change's profile is not GetProfile's (-get +change):\n%s", step.stage, diff)
		}
		if n := metricValue(reg, "whisper_profiles_stage_transitions_total", map[string]string{"from": step.before, "to": step.stage}); n != 1 {
			t.Errorf("%s: transitions{from=%s,to=%s} = %v, want 1", step.stage, step.before, step.stage, n)
		}
	}
}

// TestRedisDown: while Redis is unreachable the applied batches are not
// committed; once it is back the mirror is written and the offsets follow,
// with nothing applied twice.
func TestRedisDown(t *testing.T) {
	h := newHarness(t)
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	reg := h.consumeWith(t, "g", rdb)
	profileID := func(user string) string {
		var id string
		waitFor(t, "profile of "+user, func() bool {
			res, err := h.handler.GetProfile(as(wsA), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: user}})
			id = res.GetProfile().GetProfileId()
			return err == nil
		})
		return id
	}
	day := strconv.FormatInt(t0.Unix()/86400, 10)
	mirrored := func(user string) func() bool {
		id := profileID(user)
		return func() bool {
			got, err := rdb.HGetAll(context.Background(), profiles.RollingKey(wsA, id)).Result()
			return err == nil && got[day] == "1" && got[day+":Viewed"] == "1"
		}
	}
	h.produce(t, track(wsA, "u0", "", "Viewed", 0))
	waitFor(t, "u0 mirrored", mirrored("u0"))
	waitFor(t, "the first offset to be committed", func() bool { return h.committed(t, "g") == 1 })

	mr.Close()
	h.produce(t, track(wsA, "u1", "", "Viewed", 0), track(wsA, "u2", "", "Viewed", 0))
	waitFor(t, "failed mirror attempts", func() bool {
		return metricstest.Series(t, reg, "whisper_profiles_failures_total", "operation", "mirror to redis").GetCounter().GetValue() >= 2
	})
	if n := h.committed(t, "g"); n != 1 {
		t.Fatalf("committed offsets sum to %d while Redis was down, want 1", n)
	}

	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "u1 mirrored", mirrored("u1"))
	waitFor(t, "u2 mirrored", mirrored("u2"))
	waitFor(t, "every offset to be committed", func() bool { return h.committed(t, "g") == 3 })
	if n, d := recordCount(t, reg, "applied"), recordCount(t, reg, "duplicate"); n != 3 || d != 0 {
		t.Errorf("%v records applied and %v duplicates, want 3 and 0", n, d)
	}
}

// TestLifecycleRules: the rules RPCs validate, stay within the caller's
// workspace, and a change re-stages existing profiles.
func TestLifecycleRules(t *testing.T) {
	h := newHarness(t)
	h.consume(t, "g")
	admin := auth.NewContext(context.Background(), &auth.Principal{Admin: true})
	defaults := &profilev1.LifecycleRules{
		ActivationEvent: "Signed Up", NewDays: 7, EngagedActiveDays: 3, AtRiskIdleDays: 7,
		AtRiskTrend: 0.5, DormantIdleDays: 14, ChurnedIdleDays: 30,
	}
	with := func(mutate func(*profilev1.LifecycleRules)) *profilev1.LifecycleRules {
		r := proto.Clone(defaults).(*profilev1.LifecycleRules)
		mutate(r)
		return r
	}
	got, err := h.handler.GetLifecycleRules(as(wsA), &profilev1.GetLifecycleRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&profilev1.GetLifecycleRulesResponse{Rules: defaults, Defaults: true}, got, protocmp.Transform()); diff != "" {
		t.Errorf("GetLifecycleRules before any update (-want +got):\n%s", diff)
	}

	tests := []struct {
		name     string
		ctx      context.Context
		req      *profilev1.UpdateLifecycleRulesRequest
		code     connect.Code
		contains string
	}{
		{"no rules", as(wsA), &profilev1.UpdateLifecycleRulesRequest{}, connect.CodeInvalidArgument, "rules: required"},
		{"no activation event", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: with(func(r *profilev1.LifecycleRules) { r.ActivationEvent = "" })}, connect.CodeInvalidArgument, "rules.activation_event"},
		{"unset thresholds", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: &profilev1.LifecycleRules{ActivationEvent: "x"}}, connect.CodeInvalidArgument, "rules.new_days"},
		{"engaged over 7", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: with(func(r *profilev1.LifecycleRules) { r.EngagedActiveDays = 9 })}, connect.CodeInvalidArgument, "rules.engaged_active_days"},
		{"at risk after dormant", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: with(func(r *profilev1.LifecycleRules) { r.AtRiskIdleDays = 20 })}, connect.CodeInvalidArgument, "rules.at_risk_idle_days"},
		{"negative trend", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: with(func(r *profilev1.LifecycleRules) { r.AtRiskTrend = -1 })}, connect.CodeInvalidArgument, "rules.at_risk_trend"},
		{"dormant after churned", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: with(func(r *profilev1.LifecycleRules) { r.DormantIdleDays = 40 })}, connect.CodeInvalidArgument, "rules.dormant_idle_days"},
		{"churned over a year", as(wsA), &profilev1.UpdateLifecycleRulesRequest{Rules: with(func(r *profilev1.LifecycleRules) { r.ChurnedIdleDays = 400 })}, connect.CodeInvalidArgument, "rules.churned_idle_days"},
		{"another workspace", as(wsB), &profilev1.UpdateLifecycleRulesRequest{WorkspaceId: wsA, Rules: defaults}, connect.CodePermissionDenied, ""},
		{"admin without a workspace", admin, &profilev1.UpdateLifecycleRulesRequest{Rules: defaults}, connect.CodeInvalidArgument, "workspace_id"},
		{"no principal", context.Background(), &profilev1.UpdateLifecycleRulesRequest{Rules: defaults}, connect.CodeUnauthenticated, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.handler.UpdateLifecycleRules(tt.ctx, tt.req)
			if connect.CodeOf(err) != tt.code || !strings.Contains(fmt.Sprint(err), tt.contains) {
				t.Fatalf("UpdateLifecycleRules = %v, %v; want %v containing %q", res, err, tt.code, tt.contains)
			}
		})
	}
	if _, err := h.handler.GetLifecycleRules(as(wsB), &profilev1.GetLifecycleRulesRequest{WorkspaceId: wsA}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("workspace B GetLifecycleRules(workspace A) = %v, want PermissionDenied", err)
	}

	// A user who bought but never signed up is new; once the workspace
	// says buying activates, the sweeper re-stages the user.
	h.produce(t, track(wsA, "buyer", "", "Bought", 0), track(wsB, "buyer", "", "Bought", 0))
	stage := func(ws string) string {
		res, err := h.handler.GetProfile(as(ws), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "buyer"}})
		if err != nil {
			return err.Error()
		}
		return res.GetProfile().GetStage()
	}
	waitFor(t, "both buyers new", func() bool { return stage(wsA) == "new" && stage(wsB) == "new" })
	custom := with(func(r *profilev1.LifecycleRules) { r.ActivationEvent = "Bought" })
	upd, err := h.handler.UpdateLifecycleRules(admin, &profilev1.UpdateLifecycleRulesRequest{WorkspaceId: wsA, Rules: custom})
	if err != nil {
		t.Fatal(err)
	}
	got, err = h.handler.GetLifecycleRules(as(wsA), &profilev1.GetLifecycleRulesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&profilev1.GetLifecycleRulesResponse{Rules: custom, UpdateTime: upd.GetUpdateTime()}, got, protocmp.Transform()); diff != "" {
		t.Errorf("GetLifecycleRules after the update (-want +got):\n%s", diff)
	}
	if got, err := h.handler.GetLifecycleRules(as(wsB), &profilev1.GetLifecycleRulesRequest{}); err != nil || !got.GetDefaults() {
		t.Errorf("workspace B's rules = %v, %v; want still the defaults", got, err)
	}
	waitFor(t, "workspace A's buyer activated", func() bool { return stage(wsA) == "activated" })
	time.Sleep(200 * time.Millisecond) // several sweeps
	if s := stage(wsB); s != "new" {
		t.Errorf("workspace B's buyer is %s, want new: A's rules reached B", s)
	}
}
