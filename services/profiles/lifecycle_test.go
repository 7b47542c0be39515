package profiles

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStageRules(t *testing.T) {
	tests := []struct {
		name string
		in   scoreInputs
		want string
	}{
		{"first day, not activated", scoreInputs{DaysSinceFirst: 0, ActiveDays7d: 1, Trend: 1}, StageNew},
		{"first day, activated", scoreInputs{ActiveDays7d: 1, Trend: 1, Activated: true}, StageActivated},
		{"six days without activation", scoreInputs{DaysSinceFirst: 6, ActiveDays7d: 2, Trend: 1}, StageNew},
		{"seven days without activation", scoreInputs{DaysSinceFirst: 7, ActiveDays7d: 2, Trend: 1}, StageAtRisk},
		{"three active days", scoreInputs{DaysSinceFirst: 3, ActiveDays7d: 3, Trend: 1}, StageEngaged},
		{"engaged even if declining", scoreInputs{DaysSinceFirst: 20, ActiveDays7d: 3, Trend: 0.2, Activated: true}, StageEngaged},
		{"activated, declining", scoreInputs{DaysSinceFirst: 20, ActiveDays7d: 1, Trend: 0.49, Activated: true}, StageAtRisk},
		{"activated, steady", scoreInputs{DaysSinceFirst: 20, ActiveDays7d: 1, Trend: 0.5, Activated: true}, StageActivated},
		{"idle 6 days", scoreInputs{DaysSinceFirst: 20, DaysSinceLastSeen: 6, Trend: 1, Activated: true}, StageActivated},
		{"idle 7 days", scoreInputs{DaysSinceFirst: 20, DaysSinceLastSeen: 7, Trend: 1, Activated: true}, StageAtRisk},
		{"idle 13 days", scoreInputs{DaysSinceFirst: 20, DaysSinceLastSeen: 13, Trend: 1, Activated: true}, StageAtRisk},
		{"idle 14 days", scoreInputs{DaysSinceFirst: 20, DaysSinceLastSeen: 14, Trend: 1}, StageDormant},
		{"idle 29 days", scoreInputs{DaysSinceFirst: 40, DaysSinceLastSeen: 29, Trend: 1}, StageDormant},
		{"idle 30 days", scoreInputs{DaysSinceFirst: 40, DaysSinceLastSeen: 30, Trend: 1}, StageChurned},
	}
	for _, tt := range tests {
		if got := stageOf(tt.in, DefaultRules); got != tt.want {
			t.Errorf("%s: stageOf(%+v) = %s, want %s", tt.name, tt.in, got, tt.want)
		}
	}
	// Per-workspace rules move the thresholds.
	r := DefaultRules
	r.EngagedActiveDays, r.DormantIdleDays, r.AtRiskTrend = 1, 10, 0
	for _, tt := range []struct {
		in   scoreInputs
		want string
	}{
		{scoreInputs{ActiveDays7d: 1, Trend: 1}, StageEngaged},
		{scoreInputs{DaysSinceFirst: 20, DaysSinceLastSeen: 10, Trend: 1}, StageDormant},
		{scoreInputs{DaysSinceFirst: 20, Trend: 0.01, Activated: true}, StageActivated}, // the trend rule is off
	} {
		if got := stageOf(tt.in, r); got != tt.want {
			t.Errorf("custom rules: stageOf(%+v) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestScoreModel(t *testing.T) {
	sigma := func(z float64) float64 { return 1 / (1 + math.Exp(-z)) }
	tests := []struct {
		name      string
		in        scoreInputs
		score     int32
		risk      float64
		band      int32
		checkZ    float64 // the engagement z by hand, as documented
		checkRisk float64 // the churn z by hand
	}{
		{"seen once today", scoreInputs{ActiveDays7d: 1, ActiveDays28d: 1, Trend: 1}, 9, 0.1246, 0, -2.3, -1.95},
		{"every day for four weeks", scoreInputs{ActiveDays7d: 7, ActiveDays28d: 28, Trend: 1}, 98, 0.0033, 4, 4, -5.7},
		{"a month of silence", scoreInputs{DaysSinceLastSeen: 30, Trend: 1}, 0, 0.9975, 0, -9, 6},
		{"three days, rising", scoreInputs{ActiveDays7d: 3, ActiveDays28d: 4, Trend: 4}, 58, 0.0178, 2, -3 + 1.8 + 0.4 + 0.8*math.Log(4), -1.5 - 1.2 - 0.2 - 0.8*math.Log(4)},
		{"trend clamped at 20", scoreInputs{ActiveDays7d: 1, ActiveDays28d: 2, Trend: 1000}, 55, 0.0122, 2, -3 + 0.6 + 0.2 + 0.8*math.Log(20), -1.5 - 0.4 - 0.1 - 0.8*math.Log(20)},
		{"trend clamped at 0.05", scoreInputs{DaysSinceLastSeen: 3, ActiveDays7d: 1, ActiveDays28d: 10, Trend: 0}, 1, 0.6784, 0, -3 + 0.6 + 1 - 0.6 + 0.8*math.Log(0.05), -1.5 + 0.75 - 0.4 - 0.5 - 0.8*math.Log(0.05)},
	}
	for _, tt := range tests {
		score, risk := engagementScore(tt.in), churnRisk(tt.in)
		if score != tt.score || risk != tt.risk || scoreBand(score) != tt.band {
			t.Errorf("%s: score %d risk %v band %d, want %d %v %d", tt.name, score, risk, scoreBand(score), tt.score, tt.risk, tt.band)
		}
		if want := int32(math.Round(100 * sigma(tt.checkZ))); score != want {
			t.Errorf("%s: score %d, but the documented model gives %d", tt.name, score, want)
		}
		if want := math.Round(sigma(tt.checkRisk)*1e4) / 1e4; risk != want {
			t.Errorf("%s: risk %v, but the documented model gives %v", tt.name, risk, want)
		}
	}
	if scoreBand(100) != 4 || scoreBand(79) != 3 || scoreBand(80) != 4 || scoreBand(19) != 0 {
		t.Error("score bands are not 0-19, 20-39, 40-59, 60-79, 80-100")
	}
}

// at is t0 of the lifecycle tests plus d, in Unix microseconds.
func at(d time.Duration) int64 {
	return time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC).Add(d).UnixMicro()
}

const day = 24 * time.Hour

func TestActivityWindowsAndInputs(t *testing.T) {
	now := at(0)
	a := activity{}
	a.add(at(-30*day), "Old", now) // outside the window: not counted
	a.add(at(-27*day), "Viewed", now)
	a.add(at(-20*day), "Viewed", now)
	a.add(at(-8*day), "", now) // an identify: activity, no name
	a.add(at(-6*day), "Viewed", now)
	a.add(at(-time.Hour), "Bought", now)
	a.add(at(-2*time.Hour), "Viewed", now)
	a.add(at(3*day), "Viewed", now) // from the future: counts today
	got := a.windows(now)
	want := map[string]windowCounts{"Viewed": {d1: 2, d7: 3, d28: 5}, "Bought": {d1: 1, d7: 1, d28: 1}}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(windowCounts{})); diff != "" {
		t.Errorf("windows (-want +got):\n%s", diff)
	}
	in := computeInputs(a, at(-27*day), at(-time.Hour), true, now)
	wantIn := scoreInputs{
		ComputedMicros: now, DaysSinceLastSeen: 0, DaysSinceFirst: 27,
		ActiveDays7d: 2, ActiveDays28d: 5, Events7d: 4, Events28d: 7,
		// 4 events in 7 days against 3 in the 21 before: 4 / (3/3).
		Trend: 4, Activated: true,
	}
	if diff := cmp.Diff(wantIn, in); diff != "" {
		t.Errorf("inputs (-want +got):\n%s", diff)
	}

	// Merging adds buckets; trimming drops what no window covers.
	b := activity{}
	b.add(at(-time.Hour), "Viewed", now)
	b.absorb(a)
	if w := b.windows(now)["Viewed"]; w != (windowCounts{d1: 3, d7: 4, d28: 6}) {
		t.Errorf("merged Viewed windows %+v", w)
	}
	b.trim(at(8 * day))
	for d := range b {
		if d <= dayOf(at(8*day))-rollingDays {
			t.Errorf("day %d survived the trim", d)
		}
	}
	if len(b) != 3 {
		t.Errorf("after the trim %d days remain, want 3 (-8d, -6d and today are within 28 days of +8d): %v", len(b), b)
	}
}

func TestDueAt(t *testing.T) {
	// A user seen once, at noon, not activated: the due time is the first
	// instant its stage or band changes, and nothing changes before it.
	now := at(time.Hour)
	a := activity{}
	a.add(at(0), "Viewed", now)
	due := dueAt(a, at(0), at(0), false, DefaultRules, now)
	if due == 0 {
		t.Fatal("a fresh profile is never due")
	}
	cur := evaluate(a, at(0), at(0), false, DefaultRules, now)
	before := evaluate(a, at(0), at(0), false, DefaultRules, due-1)
	after := evaluate(a, at(0), at(0), false, DefaultRules, due)
	if before.stage != cur.stage || scoreBand(before.score) != scoreBand(cur.score) {
		t.Errorf("state changed before the due time %v", time.UnixMicro(due))
	}
	if after.stage == cur.stage && scoreBand(after.score) == scoreBand(cur.score) {
		t.Errorf("nothing changes at the due time %v", time.UnixMicro(due))
	}

	// Walking from due time to due time visits new, at_risk, dormant and
	// churned, then nothing more.
	var stages []string
	t0 := now
	for i := 0; i < 100; i++ {
		st := evaluate(a, at(0), at(0), false, DefaultRules, t0)
		if len(stages) == 0 || stages[len(stages)-1] != st.stage {
			stages = append(stages, st.stage)
		}
		next := dueAt(a, at(0), at(0), false, DefaultRules, t0)
		if next == 0 {
			break
		}
		if next <= t0 {
			t.Fatalf("due time %v is not after %v", time.UnixMicro(next), time.UnixMicro(t0))
		}
		t0 = next
	}
	if got := strings.Join(stages, ","); got != "new,at_risk,dormant,churned" {
		t.Errorf("stages over time: %s", got)
	}
	if got := time.UnixMicro(t0).Sub(time.UnixMicro(at(0))); got != 30*day {
		t.Errorf("last change %v after the last event, want 30 days (churned)", got)
	}
}

func TestRulesValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Rules)
		field  string
	}{
		{"defaults", func(*Rules) {}, ""},
		{"no activation event", func(r *Rules) { r.ActivationEvent = "" }, "activation_event"},
		{"new_days 0", func(r *Rules) { r.NewDays = 0 }, "new_days"},
		{"engaged over 7", func(r *Rules) { r.EngagedActiveDays = 8 }, "engaged_active_days"},
		{"at risk after dormant", func(r *Rules) { r.AtRiskIdleDays = 14 }, "at_risk_idle_days"},
		{"trend over 1", func(r *Rules) { r.AtRiskTrend = 1.5 }, "at_risk_trend"},
		{"trend NaN", func(r *Rules) { r.AtRiskTrend = math.NaN() }, "at_risk_trend"},
		{"dormant after churned", func(r *Rules) { r.DormantIdleDays = 30 }, "dormant_idle_days"},
		{"churned over a year", func(r *Rules) { r.ChurnedIdleDays = 366 }, "churned_idle_days"},
	}
	for _, tt := range tests {
		r := DefaultRules
		tt.mutate(&r)
		err := r.Validate()
		var field string
		if re, ok := err.(*RuleError); ok {
			field = re.Field
		} else if err != nil {
			t.Errorf("%s: %v is not a *RuleError", tt.name, err)
		}
		if field != tt.field {
			t.Errorf("%s: Validate() = %v, want an error on %q", tt.name, err, tt.field)
		}
	}
}
