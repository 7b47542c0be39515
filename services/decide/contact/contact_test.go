package contact_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/services/decide/contact"
)

func zone(t testing.TB, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.t = t }

func newPolicy(t testing.TB, rdb *redis.Client, clk *clock, cfg contact.Config) *contact.Policy {
	t.Helper()
	p, err := contact.New(contact.Options{Redis: rdb, Now: clk.Now, Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rules returns DefaultRules changed by f.
func rules(f func(*contact.Rules)) contact.Config {
	r := contact.DefaultRules()
	r.Channels = map[string]contact.ChannelRules{}
	for k, v := range contact.DefaultRules().Channels {
		r.Channels[k] = v
	}
	if f != nil {
		f(&r)
	}
	return contact.Config{Rules: r}
}

var seq atomic.Int64

// req is a marketing email to a fresh decision of user u in ws.
func req(ws, u string, mod ...func(*contact.Request)) contact.Request {
	r := contact.Request{WorkspaceID: ws, UserID: u, CampaignID: "c1", DecisionID: fmt.Sprintf("d%d", seq.Add(1)), Channel: "email", Priority: 50}
	for _, m := range mod {
		m(&r)
	}
	return r
}

func mustReserve(t *testing.T, p *contact.Policy, r contact.Request) contact.Verdict {
	t.Helper()
	v, err := p.Reserve(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCapsHoldUnderConcurrency: 64 goroutines on two Policy instances (two
// Redis connections pools, as two replicas) reserve for one user at once;
// exactly the cap is allowed.
func TestCapsHoldUnderConcurrency(t *testing.T) {
	tests := []struct {
		name string
		cfg  contact.Config
		want int
		rule string
	}{
		{"daily cap of 3", rules(func(r *contact.Rules) {
			r.Channels["email"] = contact.ChannelRules{PerDay: 3, PerWeek: 10, QuietHours: true}
			r.PriorityHeadroom = 0
		}), 3, "daily_cap"},
		{"weekly cap of 2", rules(func(r *contact.Rules) {
			r.Channels["email"] = contact.ChannelRules{PerDay: 5, PerWeek: 2}
			r.PriorityHeadroom = 0
		}), 2, "weekly_cap"},
		{"minimum gap", rules(func(r *contact.Rules) {
			r.Channels["email"] = contact.ChannelRules{PerDay: 50, PerWeek: 50, MinGap: true}
		}), 1, "min_gap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
			p1 := newPolicy(t, redistest.New(t), clk, tt.cfg)
			p2 := newPolicy(t, redistest.New(t), clk, tt.cfg)
			ws := uuid.NewString()
			var allowed, denied atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 64 {
				p := p1
				if i%2 == 1 {
					p = p2
				}
				r := req(ws, "u1")
				wg.Go(func() {
					<-start
					v, err := p.Reserve(context.Background(), r)
					if err != nil {
						t.Error(err)
						return
					}
					if v.Allowed {
						allowed.Add(1)
					} else {
						denied.Add(1)
						if v.Rule != tt.rule {
							t.Errorf("denied by %q, want %q", v.Rule, tt.rule)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			if got := allowed.Load(); got != int64(tt.want) {
				t.Errorf("allowed %d of 64, want exactly %d", got, tt.want)
			}
		})
	}
}

func TestQuietHoursDeferToLocalMorning(t *testing.T) {
	rdb := redistest.New(t)
	tests := []struct {
		name string
		tz   string
		now  time.Time
		want time.Time
		rule string
	}{
		{"Paris evening", "Europe/Paris", time.Date(2026, 11, 27, 22, 30, 0, 0, zone(t, "Europe/Paris")), time.Date(2026, 11, 28, 8, 0, 0, 0, zone(t, "Europe/Paris")), "quiet_hours"},
		{"Tokyo early morning", "Asia/Tokyo", time.Date(2026, 11, 27, 6, 0, 0, 0, zone(t, "Asia/Tokyo")), time.Date(2026, 11, 27, 8, 0, 0, 0, zone(t, "Asia/Tokyo")), "quiet_hours"},
		{"Tokyo daytime is not quiet", "Asia/Tokyo", time.Date(2026, 11, 27, 13, 0, 0, 0, zone(t, "Asia/Tokyo")), time.Date(2026, 11, 27, 13, 0, 0, 0, zone(t, "Asia/Tokyo")), ""},
		{"the same instant is quiet in Paris but not in New York", "America/New_York", time.Date(2026, 11, 27, 22, 30, 0, 0, zone(t, "Europe/Paris")), time.Date(2026, 11, 27, 22, 30, 0, 0, zone(t, "Europe/Paris")), ""},
		{"New York the night clocks spring forward", "America/New_York", time.Date(2026, 3, 7, 23, 0, 0, 0, zone(t, "America/New_York")), time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC), "quiet_hours"},
		{"New York the night clocks fall back", "America/New_York", time.Date(2026, 10, 31, 22, 0, 0, 0, zone(t, "America/New_York")), time.Date(2026, 11, 1, 13, 0, 0, 0, time.UTC), "quiet_hours"},
		{"Kolkata half-hour offset", "Asia/Kolkata", time.Date(2026, 6, 10, 23, 15, 0, 0, zone(t, "Asia/Kolkata")), time.Date(2026, 6, 11, 8, 0, 0, 0, zone(t, "Asia/Kolkata")), "quiet_hours"},
		{"no timezone is UTC", "", time.Date(2026, 6, 10, 3, 0, 0, 0, time.UTC), time.Date(2026, 6, 10, 8, 0, 0, 0, time.UTC), "quiet_hours"},
		{"an unknown timezone is UTC", "Mars/Olympus_Mons", time.Date(2026, 6, 10, 3, 0, 0, 0, time.UTC), time.Date(2026, 6, 10, 8, 0, 0, 0, time.UTC), "quiet_hours"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := &clock{t: tt.now}
			p := newPolicy(t, rdb, clk, contact.Config{})
			v := mustReserve(t, p, req(uuid.NewString(), "u1", func(r *contact.Request) { r.Timezone = tt.tz }))
			if !v.Allowed || v.Rule != tt.rule || !v.SendAt.Equal(tt.want) {
				t.Errorf("Reserve = allowed %v rule %q at %s, want allowed at %s rule %q", v.Allowed, v.Rule, v.SendAt.UTC(), tt.want.UTC(), tt.rule)
			}
			if tt.tz == "Mars/Olympus_Mons" && (len(v.Steps) == 0 || v.Steps[0].Name != "timezone") {
				t.Errorf("steps do not mention the unknown zone: %+v", v.Steps)
			}
		})
	}
}

// TestDeferredMessageCountsOnItsOwnDay: a message deferred past midnight is
// capped by the next day's counter, not today's.
func TestDeferredMessageCountsOnItsOwnDay(t *testing.T) {
	paris := zone(t, "Europe/Paris")
	clk := &clock{t: time.Date(2026, 6, 10, 12, 0, 0, 0, paris)}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["email"] = contact.ChannelRules{PerDay: 1, PerWeek: 10, QuietHours: true}
	}))
	ws := uuid.NewString()
	tz := func(r *contact.Request) { r.Timezone = "Europe/Paris" }
	if v := mustReserve(t, p, req(ws, "u1", tz)); !v.Allowed || v.Rule != "" {
		t.Fatalf("first message of the day: %+v", v)
	}
	if v := mustReserve(t, p, req(ws, "u1", tz)); v.Allowed || v.Rule != "daily_cap" {
		t.Fatalf("second message of the day: allowed %v rule %q", v.Allowed, v.Rule)
	}
	clk.Set(time.Date(2026, 6, 10, 22, 0, 0, 0, paris))
	v := mustReserve(t, p, req(ws, "u1", tz))
	if want := time.Date(2026, 6, 11, 8, 0, 0, 0, paris); !v.Allowed || v.Rule != "quiet_hours" || !v.SendAt.Equal(want) {
		t.Fatalf("evening message: allowed %v rule %q at %s, want deferred to %s", v.Allowed, v.Rule, v.SendAt, want)
	}
	v = mustReserve(t, p, req(ws, "u1", tz))
	if v.Allowed || v.Rule != "daily_cap" {
		t.Errorf("second evening message: allowed %v rule %q, want denied by tomorrow's daily_cap", v.Allowed, v.Rule)
	}
}

func TestMinGapAcrossChannels(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(t, redistest.New(t), clk, contact.Config{})
	ws := uuid.NewString()
	channel := func(c string) func(*contact.Request) {
		return func(r *contact.Request) { r.Channel = c; r.Priority = 90 }
	}
	steps := []struct {
		at      time.Duration
		channel string
		allowed bool
		rule    string
	}{
		{0, "email", true, ""},
		{30 * time.Minute, "email", false, "min_gap"},
		{30 * time.Minute, "CHANNEL_SMS", false, "min_gap"},
		{30 * time.Minute, "in_app", true, ""},
		{59 * time.Minute, "push", false, "min_gap"},
		{60 * time.Minute, "push", true, ""},
	}
	for _, st := range steps {
		clk.Set(time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC).Add(st.at))
		v := mustReserve(t, p, req(ws, "u1", channel(st.channel)))
		if v.Allowed != st.allowed || v.Rule != st.rule {
			t.Errorf("%s at +%s: allowed %v rule %q, want %v %q", st.channel, st.at, v.Allowed, v.Rule, st.allowed, st.rule)
		}
	}
}

func TestTransactionalBypassesAndIsNotCounted(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 23, 30, 0, 0, time.UTC)}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["sms"] = contact.ChannelRules{PerDay: 1, PerWeek: 1, QuietHours: true, MinGap: true}
	}))
	ws := uuid.NewString()
	sms := func(r *contact.Request) { r.Channel = "sms" }
	tx := func(r *contact.Request) { r.Transactional = true; r.Priority = 0 }
	for i := range 5 {
		v := mustReserve(t, p, req(ws, "u1", sms, tx))
		if !v.Allowed || v.Rule != "" || !v.SendAt.Equal(clk.Now()) {
			t.Fatalf("transactional %d at night: allowed %v rule %q at %s, want now", i, v.Allowed, v.Rule, v.SendAt)
		}
	}
	// The five receipts used none of the marketing cap or gap.
	v := mustReserve(t, p, req(ws, "u1", sms))
	if !v.Allowed || v.Rule != "quiet_hours" {
		t.Errorf("marketing SMS after receipts: allowed %v rule %q, want deferred and allowed", v.Allowed, v.Rule)
	}
}

func TestPriorityHeadroom(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["email"] = contact.ChannelRules{PerDay: 3, PerWeek: 10}
		r.PriorityThreshold, r.PriorityHeadroom = 80, 1
	}))
	ws := uuid.NewString()
	prio := func(n int) func(*contact.Request) { return func(r *contact.Request) { r.Priority = n } }
	steps := []struct {
		priority int
		allowed  bool
		rule     string
	}{
		{10, true, ""},
		{79, true, ""},
		{50, false, "priority_headroom"},
		{80, true, ""},
		{100, false, "daily_cap"},
	}
	for i, st := range steps {
		v := mustReserve(t, p, req(ws, "u1", prio(st.priority)))
		if v.Allowed != st.allowed || v.Rule != st.rule {
			t.Errorf("message %d, priority %d: allowed %v rule %q, want %v %q", i, st.priority, v.Allowed, v.Rule, st.allowed, st.rule)
		}
	}
}

func TestReleaseAndIdempotentReserve(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["email"] = contact.ChannelRules{PerDay: 2, PerWeek: 10}
		r.PriorityHeadroom = 0
	}))
	ctx := context.Background()
	ws := uuid.NewString()
	a, b := req(ws, "u1"), req(ws, "u1")
	for _, r := range []contact.Request{a, a, b} {
		if v := mustReserve(t, p, r); !v.Allowed {
			t.Fatalf("reserve %s: %+v", r.DecisionID, v)
		}
	}
	// a reserved twice counts once, so the cap of 2 is now full.
	if v := mustReserve(t, p, req(ws, "u1")); v.Allowed {
		t.Fatal("third decision allowed past a cap of 2")
	}
	for range 2 {
		if err := p.Release(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Release(ctx, req(ws, "u1")); err != nil {
		t.Fatalf("release of a decision that never reserved: %v", err)
	}
	if v := mustReserve(t, p, req(ws, "u1")); !v.Allowed {
		t.Errorf("after releasing one, a new decision is refused: %+v", v.Rule)
	}
	if v := mustReserve(t, p, req(ws, "u1")); v.Allowed {
		t.Error("released twice but freed two slots")
	}
}

func TestWeeklyCapFollowsTheISOWeek(t *testing.T) {
	clk := &clock{}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["push"] = contact.ChannelRules{PerDay: 5, PerWeek: 2}
		r.PriorityHeadroom = 0
	}))
	ws := uuid.NewString()
	push := func(r *contact.Request) { r.Channel = "push"; r.Timezone = "Europe/Berlin" }
	berlin := zone(t, "Europe/Berlin")
	steps := []struct {
		at      time.Time
		allowed bool
	}{
		{time.Date(2026, 6, 8, 12, 0, 0, 0, berlin), true},   // Monday
		{time.Date(2026, 6, 10, 12, 0, 0, 0, berlin), true},  // Wednesday
		{time.Date(2026, 6, 14, 20, 0, 0, 0, berlin), false}, // Sunday evening, same week
		{time.Date(2026, 6, 15, 8, 30, 0, 0, berlin), true},  // next Monday
	}
	for _, st := range steps {
		clk.Set(st.at)
		v := mustReserve(t, p, req(ws, "u1", push))
		if v.Allowed != st.allowed || (!st.allowed && v.Rule != "weekly_cap") {
			t.Errorf("%s: allowed %v rule %q, want %v", st.at.Format("Mon 2006-01-02 15:04"), v.Allowed, v.Rule, st.allowed)
		}
	}
}

func TestWorkspaceOverride(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	generous, strict := uuid.NewString(), uuid.NewString()
	r := contact.DefaultRules()
	r.Channels = map[string]contact.ChannelRules{"sms": {PerDay: 3, PerWeek: 3}}
	p := newPolicy(t, redistest.New(t), clk, contact.Config{Workspaces: map[string]contact.Rules{generous: r}})
	sms := func(r *contact.Request) { r.Channel = "sms"; r.Priority = 100 }
	count := func(ws string) int {
		n := 0
		for range 5 {
			if mustReserve(t, p, req(ws, "u1", sms)).Allowed {
				n++
			}
		}
		return n
	}
	if got := count(generous); got != 3 {
		t.Errorf("overridden workspace sent %d SMS, want 3", got)
	}
	if got := count(strict); got != 1 {
		t.Errorf("default workspace sent %d SMS, want 1", got)
	}
}

func TestStepsExplainTheVerdict(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 22, 0, 0, 0, time.UTC)}
	p := newPolicy(t, redistest.New(t), clk, contact.Config{})
	v := mustReserve(t, p, req(uuid.NewString(), "u1"))
	var names []string
	for _, s := range v.Steps {
		names = append(names, s.Name+": "+s.Result)
	}
	want := []string{
		"transactional: no: guardrails apply",
		"quiet_hours: deferred to the end of quiet hours",
		"weekly_cap: checked at the deferred time",
		"daily_cap: checked at the deferred time",
		"min_gap: checked at the deferred time",
		"transactional: no: guardrails apply",
		"quiet_hours: outside quiet hours",
		"weekly_cap: ok",
		"daily_cap: ok",
		"min_gap: ok",
		"reserve: reserved",
	}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if got := v.Steps[1].Inputs["defer_until"]; got != "2026-06-11 08:00 UTC" {
		t.Errorf("quiet_hours step defer_until = %q", got)
	}
	wantCap := map[string]string{"channel": "email", "sent": "0", "cap": "7", "limit_for_priority": "6", "priority": "50", "priority_threshold": "80"}
	if diff := cmp.Diff(wantCap, v.Steps[7].Inputs); diff != "" {
		t.Errorf("weekly_cap inputs (-want +got):\n%s", diff)
	}
}

func TestInvalidConfigAndRequests(t *testing.T) {
	rdb := redistest.New(t)
	bad := []struct {
		name  string
		cfg   contact.Config
		field string
	}{
		{"quiet start", rules(func(r *contact.Rules) { r.QuietStart = "25:00" }), "rules.quiet_start"},
		{"quiet end", rules(func(r *contact.Rules) { r.QuietEnd = "8am" }), "rules.quiet_end"},
		{"negative gap", rules(func(r *contact.Rules) { r.MinGap = -time.Second }), "rules.min_gap"},
		{"negative cap", rules(func(r *contact.Rules) { r.Channels["sms"] = contact.ChannelRules{PerDay: -1} }), "rules.channels[sms].per_day"},
		{"channel name", rules(func(r *contact.Rules) { r.Channels["CHANNEL_SMS"] = contact.ChannelRules{} }), "rules.channels[CHANNEL_SMS]"},
		{"workspace override", contact.Config{Workspaces: map[string]contact.Rules{"w1": {QuietStart: "21:00"}}}, "workspaces[w1].quiet_end"},
	}
	for _, tt := range bad {
		_, err := contact.New(contact.Options{Redis: rdb, Config: tt.cfg})
		if !errors.Is(err, contact.ErrInvalidConfig) || !strings.Contains(fmt.Sprint(err), tt.field) {
			t.Errorf("%s: New error %v, want ErrInvalidConfig naming %s", tt.name, err, tt.field)
		}
	}
	p := newPolicy(t, rdb, &clock{t: time.Now()}, contact.Config{})
	for _, f := range []struct {
		name string
		mod  func(*contact.Request)
	}{
		{"workspace_id", func(r *contact.Request) { r.WorkspaceID = "" }},
		{"user_id", func(r *contact.Request) { r.UserID = "" }},
		{"decision_id", func(r *contact.Request) { r.DecisionID = " " }},
		{"channel", func(r *contact.Request) { r.Channel = "" }},
	} {
		r := req("w", "u", f.mod)
		if _, err := p.Reserve(context.Background(), r); !errors.Is(err, contact.ErrInvalidRequest) || !strings.Contains(err.Error(), f.name) {
			t.Errorf("Reserve without %s: %v", f.name, err)
		}
		if err := p.Release(context.Background(), r); !errors.Is(err, contact.ErrInvalidRequest) {
			t.Errorf("Release without %s: %v", f.name, err)
		}
	}
}

// BenchmarkReserve: one marketing email through policy evaluation and the
// Redis read and reservation, each to its own user.
func BenchmarkReserve(b *testing.B) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(b, redistest.New(b), clk, contact.Config{})
	ws := uuid.NewString()
	i := 0
	for b.Loop() {
		i++
		v, err := p.Reserve(context.Background(), req(ws, fmt.Sprintf("u%d", i), func(r *contact.Request) { r.Timezone = "Europe/Paris" }))
		if err != nil || !v.Allowed {
			b.Fatal(err, v.Rule)
		}
	}
}

func TestReserveBatch(t *testing.T) {
	paris := zone(t, "Europe/Paris")
	clk := &clock{t: time.Date(2026, 6, 10, 22, 0, 0, 0, paris)}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["email"] = contact.ChannelRules{PerDay: 2, PerWeek: 10}
		r.Channels["push"] = contact.ChannelRules{PerDay: 1, PerWeek: 10, QuietHours: true}
		r.PriorityHeadroom = 0
	}))
	ws := uuid.NewString()
	var batch []contact.Request
	for range 4 {
		batch = append(batch, req(ws, "a"))
	}
	batch = append(batch,
		req(ws, "b", func(r *contact.Request) { r.Transactional = true; r.Channel = "sms" }),
		req(ws, "c", func(r *contact.Request) { r.Channel = "push"; r.Timezone = "Europe/Paris" }),
		req(ws, "c", func(r *contact.Request) { r.Channel = "push"; r.Timezone = "Europe/Paris" }),
	)
	batch = append(batch, batch[0]) // the same decision again
	vs, err := p.ReserveBatch(context.Background(), batch)
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		Allowed bool
		Rule    string
		SendAt  time.Time
	}
	now, morning := clk.Now(), time.Date(2026, 6, 11, 8, 0, 0, 0, paris)
	want := []got{
		{true, "", now}, {true, "", now},
		{false, "daily_cap", now}, {false, "daily_cap", now},
		{true, "", now},
		{true, "quiet_hours", morning}, {false, "daily_cap", morning},
		{true, "", now},
	}
	var gots []got
	for _, v := range vs {
		gots = append(gots, got{v.Allowed, v.Rule, v.SendAt})
	}
	if diff := cmp.Diff(want, gots, cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	if last := vs[2].Steps[len(vs[2].Steps)-1]; last.Result != "refused at reservation: daily_cap" {
		t.Errorf("the third email lost to the first two in the same batch; its last step is %+v", last)
	}

	bad := []contact.Request{req(ws, "a"), req(ws, "")}
	if _, err := p.ReserveBatch(context.Background(), bad); !errors.Is(err, contact.ErrInvalidRequest) || !strings.Contains(err.Error(), "requests[1]: ") {
		t.Errorf("batch with an invalid request: %v", err)
	}
	if v := mustReserve(t, p, req(ws, "a")); v.Allowed {
		t.Error("an invalid batch reserved something")
	}
}

// TestBatchesHoldTheCap: batches from two replicas racing for one user.
func TestBatchesHoldTheCap(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	cfg := rules(func(r *contact.Rules) {
		r.Channels["email"] = contact.ChannelRules{PerDay: 5, PerWeek: 10}
		r.PriorityHeadroom = 0
	})
	ps := []*contact.Policy{newPolicy(t, redistest.New(t), clk, cfg), newPolicy(t, redistest.New(t), clk, cfg)}
	ws := uuid.NewString()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 8 {
		var batch []contact.Request
		for range 8 {
			batch = append(batch, req(ws, "u1"), req(ws, "other"))
		}
		wg.Go(func() {
			vs, err := ps[i%2].ReserveBatch(context.Background(), batch)
			if err != nil {
				t.Error(err)
				return
			}
			for _, v := range vs {
				if v.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// Both users have a cap of 5.
	if got := allowed.Load(); got != 10 {
		t.Errorf("allowed %d messages to two users with a cap of 5, want 10", got)
	}
}

// TestScriptCacheLoss: on a Redis without the script cached (a fresh
// server, or after SCRIPT FLUSH) the reservation falls back to sending the
// script, once. miniredis stands in so the shared server's cache is left
// alone.
func TestScriptCacheLoss(t *testing.T) {
	mr := miniredis.RunT(t)
	// mr is private to this test, so flushing its script cache disturbs no one.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(t, rdb, clk, contact.Config{})
	for i := range 3 {
		if i == 2 {
			if err := rdb.ScriptFlush(context.Background()).Err(); err != nil {
				t.Fatal(err)
			}
		}
		v := mustReserve(t, p, req("w", fmt.Sprintf("u%d", i)))
		if !v.Allowed {
			t.Fatalf("reserve %d: %+v", i, v)
		}
	}
}

// BenchmarkReserveBatch: batches of 100 marketing emails to distinct users;
// ns/op is per batch, divide by 100 for a decision.
func BenchmarkReserveBatch(b *testing.B) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(b, redistest.New(b), clk, contact.Config{})
	ws := uuid.NewString()
	n := 0
	batch := make([]contact.Request, 100)
	for b.Loop() {
		for i := range batch {
			n++
			batch[i] = req(ws, fmt.Sprintf("u%d", n), func(r *contact.Request) { r.Timezone = "Europe/Paris" })
		}
		vs, err := p.ReserveBatch(context.Background(), batch)
		if err != nil {
			b.Fatal(err)
		}
		for _, v := range vs {
			if !v.Allowed {
				b.Fatal(v.Rule)
			}
		}
	}
}

// TestRefusedAtReservationNamesTheRule: when the reservation script refuses
// a request that lost a race, the rule says whether the cap or only the
// priority headroom was full.
func TestRefusedAtReservationNamesTheRule(t *testing.T) {
	clk := &clock{t: time.Date(2026, 6, 10, 10, 0, 0, 0, time.UTC)}
	p := newPolicy(t, redistest.New(t), clk, rules(func(r *contact.Rules) {
		r.Channels["email"] = contact.ChannelRules{PerDay: 2, PerWeek: 10}
		r.PriorityThreshold, r.PriorityHeadroom = 80, 1
	}))
	ws := uuid.NewString()
	low := func(r *contact.Request) { r.Priority = 10 }
	high := func(r *contact.Request) { r.Priority = 90 }
	vs, err := p.ReserveBatch(context.Background(), []contact.Request{
		req(ws, "u1", low), req(ws, "u1", low), req(ws, "u1", high), req(ws, "u1", high),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range vs {
		got = append(got, fmt.Sprintf("%v %s", v.Allowed, v.Rule))
	}
	want := []string{"true ", "false priority_headroom", "true ", "false daily_cap"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
}
