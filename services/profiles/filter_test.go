package profiles

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
)

func TestFilters(t *testing.T) {
	f, err := newFilters()
	if err != nil {
		t.Fatal(err)
	}
	traits, _ := structpb.NewStruct(map[string]any{"plan": "pro", "seats": 3})
	p := &profilev1.Profile{
		UserId: "u1", Traits: traits, EventCounts: map[string]int64{"Bought": 2},
		Stage: StageAtRisk, EngagementScore: 35, ChurnRisk: 0.62,
		ScoreInputs:   &profilev1.ScoreInputs{DaysSinceLastSeen: 9, Trend: 0.4},
		RollingCounts: map[string]*profilev1.WindowCounts{"Bought": {Last_7D: 0, Last_28D: 2}},
		SessionCount:  4, SessionStartTime: timestamppb.New(time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)),
	}
	ten := "[0,1,2,3,4,5,6,7,8,9]"
	for _, tt := range []struct {
		expr    string
		want    bool
		wantErr string // in the compile or evaluation error
	}{
		{expr: `profile.traits.plan == "pro" && profile.event_counts["Bought"] > 1`, want: true},
		{expr: `profile.traits.seats >= 3.0 && profile.user_id == "u1"`, want: true},
		{expr: `profile.traits.plan == "free"`, want: false},
		{expr: `profile.traits.missing == "x"`, want: false},
		{expr: `profile.event_counts["Viewed"] > 0`, want: false},
		// The lifecycle fields decide reads.
		{expr: `profile.stage == "at_risk" && profile.traits.plan == "pro"`, want: true},
		{expr: `profile.churn_risk > 0.5 && profile.engagement_score < 40 && profile.score_inputs.trend < 0.5`, want: true},
		{expr: `profile.rolling_counts["Bought"].last_28d >= 2 && profile.rolling_counts["Bought"].last_7d == 0`, want: true},
		{expr: `profile.stage in ["dormant", "churned"]`, want: false},
		// So do the sessions.
		{expr: `profile.session_count >= 3 && profile.session_start_time < timestamp("2026-11-02T00:00:00Z")`, want: true},
		{expr: `profile.session_count > 4`, want: false},
		{expr: `profile.user_id ==`, wantErr: "<input>:1:"},
		{expr: `profile.nope`, wantErr: "undefined field 'nope'"},
		{expr: `profile.user_id`, wantErr: "must be of type bool, not string"},
		{expr: strings.Repeat(" ", maxFilterBytes+1) + "true", wantErr: "longer than"},
		{expr: ten + ".all(a, " + ten + ".all(b, " + ten + ".all(c, " + ten + ".all(d, " + ten + ".all(e, true)))))", wantErr: errFilterCost.Error()},
	} {
		prg, err := f.compile(tt.expr)
		var got bool
		if err == nil {
			got, err = match(context.Background(), prg, p)
		}
		switch {
		case tt.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%.60s: err = %v, want one containing %q", tt.expr, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%.60s: %v", tt.expr, err)
		case got != tt.want:
			t.Errorf("%.60s = %v, want %v", tt.expr, got, tt.want)
		}
	}

	// A cancelled context stops evaluation.
	prg, err := f.compile(`profile.user_id == "u1"`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := match(ctx, prg, p); !errors.Is(err, context.Canceled) && err != nil {
		t.Errorf("match after cancel = %v, want nil or context.Canceled", err)
	}
}

func TestFiltersCache(t *testing.T) {
	f, err := newFilters()
	if err != nil {
		t.Fatal(err)
	}
	first, err := f.compile(`profile.user_id == "a"`)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := f.compile(`profile.user_id == "a"`)
	if first != again {
		t.Errorf("the same expression was compiled twice")
	}
	for i := range filterCacheSize {
		if _, err := f.compile(`profile.user_id == "` + strings.Repeat("x", i) + `b"`); err != nil {
			t.Fatal(err)
		}
	}
	if len(f.byExpr) != filterCacheSize || f.order.Len() != filterCacheSize {
		t.Errorf("cache holds %d/%d entries, want %d", len(f.byExpr), f.order.Len(), filterCacheSize)
	}
	if _, ok := f.byExpr[`profile.user_id == "a"`]; ok {
		t.Errorf("the least recently used expression was not evicted")
	}
}

// TestListProfilesFilterScanBudget: a filtered call stops at the scan
// budget, and its page token resumes the scan where it stopped, through
// pages that hold no match, to every match once.
func TestListProfilesFilterScanBudget(t *testing.T) {
	pool := pgtest.NewPool(t)
	ctx := context.Background()
	if err := postgres.Migrate(ctx, pool, Migrations, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	s := NewStore(pool)
	var events []event
	for i := range 12 {
		e := event{ws: ws, messageID: fmt.Sprintf("m%d", i), typ: eventv1.EventType_EVENT_TYPE_TRACK, userID: fmt.Sprintf("u%02d", i), name: "Viewed", micros: 1000}
		if i%4 == 0 {
			e.name = "Bought"
		}
		events = append(events, e)
	}
	if _, err := s.applyEvents(ctx, events, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(s, nil)
	h.scanBudget = 2

	var got []string
	calls := 0
	for req := (&profilev1.ListProfilesRequest{Filter: `"Bought" in profile.event_counts`, PageSize: 10}); ; {
		calls++
		resp, err := h.ListProfiles(auth.NewContext(ctx, &auth.Principal{WorkspaceID: ws, CredentialID: "tok"}), req)
		if err != nil {
			t.Fatalf("call %d: %v", calls, err)
		}
		for _, p := range resp.GetProfiles() {
			got = append(got, p.GetUserId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
		if calls > 20 {
			t.Fatal("the scan never ended")
		}
	}
	slices.Sort(got)
	if want := []string{"u00", "u04", "u08"}; !slices.Equal(got, want) {
		t.Errorf("matches = %v, want %v", got, want)
	}
	// 12 profiles, 2 per call: 6 calls, and a 7th to learn there are no more.
	if calls < 6 || calls > 7 {
		t.Errorf("%d calls for 12 profiles at 2 per call, want 6 or 7", calls)
	}
}
