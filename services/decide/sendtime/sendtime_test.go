package sendtime_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	l, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// activity is one user's history: on each of days consecutive days before
// now, one event at each of the given local hours.
type activity struct {
	hours []int
	days  int
}

func observe(t *testing.T, o *sendtime.Optimizer, ws, user string, now time.Time, loc *time.Location, acts []activity, times int) {
	t.Helper()
	ctx := context.Background()
	for range times {
		for _, a := range acts {
			for d := 1; d <= a.days; d++ {
				day := now.In(loc).AddDate(0, 0, -d)
				for _, h := range a.hours {
					at := time.Date(day.Year(), day.Month(), day.Day(), h, 17, 0, 0, loc)
					if err := o.Observe(ctx, ws, user, at); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
}

func TestBest(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	paris := mustZone(t, "Europe/Paris")
	ny := mustZone(t, "America/New_York")
	tests := []struct {
		name     string
		tz       string
		loc      *time.Location
		now      time.Time
		maxDelay time.Duration
		acts     []activity
		wantAt   time.Time
		wantHour int
		reason   string
	}{
		{
			name:     "no history sends now",
			tz:       "Europe/Paris",
			loc:      paris,
			now:      time.Date(2026, 3, 10, 9, 12, 0, 0, paris),
			maxDelay: 24 * time.Hour,
			wantAt:   time.Date(2026, 3, 10, 9, 12, 0, 0, paris),
			wantHour: 9,
			reason:   "no activity",
		},
		{
			name:     "dominant hour later today",
			tz:       "Europe/Paris",
			loc:      paris,
			now:      time.Date(2026, 3, 10, 9, 12, 0, 0, paris),
			maxDelay: 24 * time.Hour,
			acts:     []activity{{hours: []int{20}, days: 10}, {hours: []int{12}, days: 3}},
			wantAt:   time.Date(2026, 3, 10, 20, 0, 0, 0, paris),
			wantHour: 20,
			reason:   "most active at 20:00 (10 of the last 28 days)",
		},
		{
			name:     "dominant hour out of reach takes the best reachable",
			tz:       "Europe/Paris",
			loc:      paris,
			now:      time.Date(2026, 3, 10, 9, 12, 0, 0, paris),
			maxDelay: 4 * time.Hour,
			acts:     []activity{{hours: []int{20}, days: 10}, {hours: []int{12}, days: 3}, {hours: []int{11}, days: 2}},
			wantAt:   time.Date(2026, 3, 10, 12, 0, 0, 0, paris),
			wantHour: 12,
			reason:   "best reachable hour is 12:00",
		},
		{
			name:     "only unreachable hours sends now",
			tz:       "Europe/Paris",
			loc:      paris,
			now:      time.Date(2026, 3, 10, 9, 12, 0, 0, paris),
			maxDelay: 2 * time.Hour,
			acts:     []activity{{hours: []int{20}, days: 10}},
			wantAt:   time.Date(2026, 3, 10, 9, 12, 0, 0, paris),
			wantHour: 9,
			reason:   "no activity in any hour reachable",
		},
		{
			name:     "current hour is the best",
			tz:       "Europe/Paris",
			loc:      paris,
			now:      time.Date(2026, 3, 10, 20, 40, 0, 0, paris),
			maxDelay: 24 * time.Hour,
			acts:     []activity{{hours: []int{20}, days: 10}, {hours: []int{8}, days: 9}},
			wantAt:   time.Date(2026, 3, 10, 20, 40, 0, 0, paris),
			wantHour: 20,
			reason:   "sending now",
		},
		{
			name:     "tomorrow morning in New York",
			tz:       "America/New_York",
			loc:      ny,
			now:      time.Date(2026, 6, 10, 22, 5, 0, 0, ny),
			maxDelay: 24 * time.Hour,
			acts:     []activity{{hours: []int{7}, days: 12}},
			wantAt:   time.Date(2026, 6, 11, 7, 0, 0, 0, ny),
			wantHour: 7,
			reason:   "most active at 07:00",
		},
		{
			// Clocks jump from 02:00 to 03:00 tonight: 07:00 is six hours
			// of absolute time after midnight, not seven.
			name:     "the morning clocks spring forward",
			tz:       "America/New_York",
			loc:      ny,
			now:      time.Date(2026, 3, 8, 0, 30, 0, 0, ny),
			maxDelay: 12 * time.Hour,
			acts:     []activity{{hours: []int{7}, days: 5}},
			wantAt:   time.Date(2026, 3, 8, 11, 0, 0, 0, time.UTC),
			wantHour: 7,
			reason:   "most active at 07:00 (5 of the last 28 days)",
		},
		{
			// History spans the spring-forward change of 8 March 2026: the
			// events at 07:17 local are 12:17 UTC before it and 11:17 UTC
			// after it, and must all count for 07:00.
			name:     "history across a daylight saving change keeps the local hour",
			tz:       "America/New_York",
			loc:      ny,
			now:      time.Date(2026, 3, 15, 5, 0, 0, 0, ny),
			maxDelay: 12 * time.Hour,
			acts:     []activity{{hours: []int{7}, days: 14}, {hours: []int{9}, days: 13}},
			wantAt:   time.Date(2026, 3, 15, 7, 0, 0, 0, ny),
			wantHour: 7,
			reason:   "14 of the last 28 days",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws, user := uuid.NewString(), "u1"
			observe(t, o, ws, user, tt.now, tt.loc, tt.acts, 1)
			got, err := o.Best(context.Background(), ws, user, tt.now, tt.maxDelay, tt.tz)
			if err != nil {
				t.Fatal(err)
			}
			if !got.At.Equal(tt.wantAt) || got.Hour != tt.wantHour {
				t.Errorf("Best = %s hour %d, want %s hour %d (%s)", got.At.In(tt.loc), got.Hour, tt.wantAt, tt.wantHour, got.Reason)
			}
			if !strings.Contains(got.Reason, tt.reason) {
				t.Errorf("reason %q does not say %q", got.Reason, tt.reason)
			}
			want := 0
			for _, a := range tt.acts {
				want += a.days * len(a.hours)
			}
			total := 0
			for _, n := range got.Histogram {
				total += n
			}
			if total != want {
				t.Errorf("histogram holds %d days-hours, want %d: %v", total, want, got.Histogram)
			}
		})
	}
}

// TestObserveIsIdempotent: redelivered events and many events in one hour
// count as one day active in that hour.
func TestObserveIsIdempotent(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	ws, user := uuid.NewString(), "u1"
	now := time.Date(2026, 5, 4, 6, 0, 0, 0, time.UTC)
	acts := []activity{{hours: []int{18}, days: 5}, {hours: []int{9}, days: 2}}
	observe(t, o, ws, user, now, time.UTC, acts, 3)
	// More events in the same hours, at other minutes.
	for d := 1; d <= 5; d++ {
		at := time.Date(2026, 5, 4-d, 18, 59, 59, 0, time.UTC)
		if err := o.Observe(context.Background(), ws, user, at); err != nil {
			t.Fatal(err)
		}
	}
	got, err := o.Best(context.Background(), ws, user, now, 24*time.Hour, "")
	if err != nil {
		t.Fatal(err)
	}
	var want [24]int
	want[18], want[9] = 5, 2
	if got.Histogram != want {
		t.Errorf("histogram = %v, want %v", got.Histogram, want)
	}
	if got.Hour != 18 {
		t.Errorf("hour = %d, want 18", got.Hour)
	}
}

// TestHistoryOutsideTheWindowIsIgnored: activity older than Window does not
// count, and an observation far in the past does not erase recent history.
func TestHistoryOutsideTheWindowIsIgnored(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	ctx := context.Background()
	ws, user := uuid.NewString(), "u1"
	now := time.Date(2026, 5, 30, 6, 0, 0, 0, time.UTC)
	for d := 1; d <= 3; d++ {
		if err := o.Observe(ctx, ws, user, now.Add(-time.Duration(d)*24*time.Hour+4*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for d := 30; d <= 40; d++ {
		if err := o.Observe(ctx, ws, user, now.Add(-time.Duration(d)*24*time.Hour+8*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := o.Best(ctx, ws, user, now, 24*time.Hour, "UTC")
	if err != nil {
		t.Fatal(err)
	}
	var want [24]int
	want[10] = 3
	if got.Histogram != want {
		t.Errorf("histogram = %v, want %v", got.Histogram, want)
	}
}

func TestUnknownTimezoneFallsBackToUTC(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	ws := uuid.NewString()
	now := time.Date(2026, 5, 4, 6, 0, 0, 0, time.UTC)
	observe(t, o, ws, "u1", now, time.UTC, []activity{{hours: []int{15}, days: 4}}, 1)
	got, err := o.Best(context.Background(), ws, "u1", now, 24*time.Hour, "Mars/Olympus_Mons")
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 5, 4, 15, 0, 0, 0, time.UTC); !got.At.Equal(want) {
		t.Errorf("At = %s, want %s", got.At, want)
	}
	if !strings.Contains(got.Reason, `unknown timezone "Mars/Olympus_Mons", using UTC`) {
		t.Errorf("reason %q does not name the unknown zone", got.Reason)
	}
}

func TestObserveNeedsIDs(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	if err := o.Observe(context.Background(), "", "u", time.Now()); err == nil {
		t.Error("Observe without a workspace succeeded")
	}
}

// TestObserveBatch: a batch records what the same Observe calls would, and
// a bad activity fails it before anything is written.
func TestObserveBatch(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	ctx := context.Background()
	ws := uuid.NewString()
	now := time.Date(2026, 5, 4, 6, 0, 0, 0, time.UTC)
	var acts []sendtime.Activity
	for d := 1; d <= 6; d++ {
		day := now.AddDate(0, 0, -d)
		for _, m := range []int{1, 20, 59} {
			acts = append(acts, sendtime.Activity{WorkspaceID: ws, UserID: "u1", At: time.Date(day.Year(), day.Month(), day.Day(), 19, m, 0, 0, time.UTC)})
		}
		if d <= 2 {
			acts = append(acts, sendtime.Activity{WorkspaceID: ws, UserID: "u2", At: time.Date(day.Year(), day.Month(), day.Day(), 7, 0, 0, 0, time.UTC)})
		}
	}
	if err := o.ObserveBatch(ctx, append(acts, sendtime.Activity{WorkspaceID: ws, At: now})); err == nil {
		t.Fatal("a batch with an activity without user id succeeded")
	}
	if err := o.ObserveBatch(ctx, acts); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		id   string
		hour int
		days int
	}{{"u1", 19, 6}, {"u2", 7, 2}} {
		got, err := o.Best(ctx, ws, u.id, now, 24*time.Hour, "")
		if err != nil {
			t.Fatal(err)
		}
		var want [24]int
		want[u.hour] = u.days
		if got.Histogram != want {
			t.Errorf("%s: histogram %v, want %v", u.id, got.Histogram, want)
		}
	}
}

// BestBatch answers each query as Best would, in the order asked, for
// users with and without history and in different zones.
func TestBestBatchIsBestForEach(t *testing.T) {
	rdb := redistest.New(t)
	o := sendtime.New(rdb)
	ctx := context.Background()
	ws := uuid.NewString()
	now := time.Date(2026, 5, 4, 6, 0, 0, 0, time.UTC)
	observe(t, o, ws, "evening", now, time.UTC, []activity{{hours: []int{19}, days: 5}}, 1)
	observe(t, o, ws, "morning", now, mustZone(t, "Asia/Tokyo"), []activity{{hours: []int{9}, days: 3}}, 1)
	qs := []sendtime.Query{
		{WorkspaceID: ws, UserID: "evening", Now: now, MaxDelay: 24 * time.Hour},
		{WorkspaceID: ws, UserID: "nobody", Now: now, MaxDelay: 24 * time.Hour, Timezone: "Europe/Paris"},
		{WorkspaceID: ws, UserID: "morning", Now: now, MaxDelay: 24 * time.Hour, Timezone: "Asia/Tokyo"},
		{WorkspaceID: ws, UserID: "evening", Now: now, MaxDelay: time.Hour, Timezone: "Nowhere/Else"},
	}
	got, err := o.BestBatch(ctx, qs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(qs) {
		t.Fatalf("%d picks for %d queries", len(got), len(qs))
	}
	for i, q := range qs {
		want, err := o.Best(ctx, q.WorkspaceID, q.UserID, q.Now, q.MaxDelay, q.Timezone)
		if err != nil {
			t.Fatal(err)
		}
		if got[i] != want {
			t.Errorf("query %d (%s): BestBatch %+v, Best %+v", i, q.UserID, got[i], want)
		}
	}
	if got[0].Hour != 19 || got[2].Hour != 9 || got[1].At != now {
		t.Errorf("picks %+v: want 19:00 for evening, now for nobody, 09:00 Tokyo for morning", got)
	}
}
