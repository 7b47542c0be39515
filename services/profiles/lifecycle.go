package profiles

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Lifecycle stages, in the order the rules test them.
const (
	StageNew       = "new"
	StageActivated = "activated"
	StageEngaged   = "engaged"
	StageAtRisk    = "at_risk"
	StageDormant   = "dormant"
	StageChurned   = "churned"
)

// Rules are one workspace's lifecycle rules (see the package doc).
type Rules struct {
	ActivationEvent   string
	NewDays           int
	EngagedActiveDays int
	AtRiskIdleDays    int
	AtRiskTrend       float64
	DormantIdleDays   int
	ChurnedIdleDays   int
}

// DefaultRules apply to a workspace that has set none.
var DefaultRules = Rules{
	ActivationEvent:   "Signed Up",
	NewDays:           7,
	EngagedActiveDays: 3,
	AtRiskIdleDays:    7,
	AtRiskTrend:       0.5,
	DormantIdleDays:   14,
	ChurnedIdleDays:   30,
}

// RuleError names the rule field that is invalid.
type RuleError struct{ Field, Problem string }

func (e *RuleError) Error() string { return e.Field + ": " + e.Problem }

// Validate returns a *RuleError for the first invalid field, in the order
// of the LifecycleRules message.
func (r Rules) Validate() error {
	switch {
	case r.ActivationEvent == "" || len(r.ActivationEvent) > maxNameBytes:
		return &RuleError{"activation_event", "must be 1-1024 bytes"}
	case r.NewDays < 1 || r.NewDays > 365:
		return &RuleError{"new_days", fmt.Sprintf("must be 1-365, got %d", r.NewDays)}
	case r.EngagedActiveDays < 1 || r.EngagedActiveDays > 7:
		return &RuleError{"engaged_active_days", fmt.Sprintf("must be 1-7, got %d", r.EngagedActiveDays)}
	case r.AtRiskIdleDays < 1 || r.AtRiskIdleDays >= r.DormantIdleDays:
		return &RuleError{"at_risk_idle_days", fmt.Sprintf("must be at least 1 and below dormant_idle_days (%d), got %d", r.DormantIdleDays, r.AtRiskIdleDays)}
	case math.IsNaN(r.AtRiskTrend) || r.AtRiskTrend < 0 || r.AtRiskTrend > 1:
		return &RuleError{"at_risk_trend", fmt.Sprintf("must be 0-1, got %v", r.AtRiskTrend)}
	case r.DormantIdleDays >= r.ChurnedIdleDays:
		return &RuleError{"dormant_idle_days", fmt.Sprintf("must be below churned_idle_days (%d), got %d", r.ChurnedIdleDays, r.DormantIdleDays)}
	case r.ChurnedIdleDays > 365:
		return &RuleError{"churned_idle_days", fmt.Sprintf("must be at most 365, got %d", r.ChurnedIdleDays)}
	}
	return nil
}

// rollingDays is how many UTC days of activity a profile keeps.
const rollingDays = 28

const (
	microsPerDay = int64(24 * time.Hour / time.Microsecond)
	dayDuration  = 24 * time.Hour
)

// dayOf is the UTC day number (days since 1970-01-01) of a time in Unix
// microseconds.
func dayOf(micros int64) int64 { return micros / microsPerDay } // micros > 0: decode refuses earlier

// dayBucket is one UTC day of a profile's activity.
type dayBucket struct {
	// All counts events of any kind; Names track events per name.
	All   int64            `json:"all"`
	Names map[string]int64 `json:"names,omitempty"`
}

// activity is a profile's recent activity by UTC day number.
type activity map[int64]*dayBucket

// add counts an event at micros (name empty when it is not a track). An
// event dated after now counts on now's day; one older than the window is
// not counted (it cannot count in any window).
func (a activity) add(micros int64, name string, now int64) {
	day := dayOf(min(micros, now))
	if day <= dayOf(now)-rollingDays {
		return
	}
	b := a[day]
	if b == nil {
		b = &dayBucket{}
		a[day] = b
	}
	b.All++
	if name != "" {
		if b.Names == nil {
			b.Names = map[string]int64{}
		}
		b.Names[name]++
	}
}

// absorb adds src's buckets to a.
func (a activity) absorb(src activity) {
	for day, sb := range src {
		b := a[day]
		if b == nil {
			b = &dayBucket{}
			a[day] = b
		}
		b.All += sb.All
		for name, n := range sb.Names {
			if b.Names == nil {
				b.Names = map[string]int64{}
			}
			b.Names[name] += n
		}
	}
}

// trim forgets the days that no window ending at now's day covers.
func (a activity) trim(now int64) {
	for day := range a {
		if day <= dayOf(now)-rollingDays {
			delete(a, day)
		}
	}
}

// windowCounts counts track events per name over the windows ending at
// now's day: the last 1, 7 and 28 UTC days, today included.
type windowCounts struct{ d1, d7, d28 int64 }

func (a activity) windows(now int64) map[string]windowCounts {
	today := dayOf(now)
	out := map[string]windowCounts{}
	for day, b := range a {
		age := today - day
		if age < 0 || age >= rollingDays {
			continue
		}
		for name, n := range b.Names {
			w := out[name]
			w.d28 += n
			if age < 7 {
				w.d7 += n
			}
			if age < 1 {
				w.d1 += n
			}
			out[name] = w
		}
	}
	return out
}

// scoreInputs are the stored ScoreInputs. Days are whole days, so stages
// and scores change only at whole-day steps, which the sweeper can
// predict.
type scoreInputs struct {
	ComputedMicros    int64   `json:"computed"`
	DaysSinceLastSeen float64 `json:"days_since_last_seen"`
	DaysSinceFirst    float64 `json:"days_since_first_seen"`
	ActiveDays7d      int32   `json:"active_days_7d"`
	ActiveDays28d     int32   `json:"active_days_28d"`
	Events7d          int64   `json:"events_7d"`
	Events28d         int64   `json:"events_28d"`
	Trend             float64 `json:"trend"`
	Activated         bool    `json:"activated"`
}

// lifecycleState is what lifecycle computes for a profile.
type lifecycleState struct {
	stage  string
	score  int32
	risk   float64
	inputs scoreInputs
}

// computeInputs derives the score inputs of a profile at now (Unix
// microseconds).
func computeInputs(a activity, firstSeen, lastSeen int64, activated bool, now int64) scoreInputs {
	in := scoreInputs{
		ComputedMicros:    now,
		DaysSinceLastSeen: float64(max(0, now-lastSeen) / microsPerDay),
		DaysSinceFirst:    float64(max(0, now-firstSeen) / microsPerDay),
		Activated:         activated,
	}
	today := dayOf(now)
	for day, b := range a {
		age := today - day
		if age < 0 || age >= rollingDays || b.All == 0 {
			continue
		}
		in.ActiveDays28d++
		in.Events28d += b.All
		if age < 7 {
			in.ActiveDays7d++
			in.Events7d += b.All
		}
	}
	in.Trend = 1
	if earlier := in.Events28d - in.Events7d; earlier > 0 {
		in.Trend = round4(float64(in.Events7d) / (float64(earlier) / 3))
	}
	return in
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

// stageOf applies the lifecycle rules to inputs.
func stageOf(in scoreInputs, r Rules) string {
	idle := int(in.DaysSinceLastSeen)
	switch {
	case idle >= r.ChurnedIdleDays:
		return StageChurned
	case idle >= r.DormantIdleDays:
		return StageDormant
	case int(in.ActiveDays7d) >= r.EngagedActiveDays:
		return StageEngaged
	case idle >= r.AtRiskIdleDays,
		in.Trend < r.AtRiskTrend,
		!in.Activated && int(in.DaysSinceFirst) >= r.NewDays:
		return StageAtRisk
	case in.Activated:
		return StageActivated
	default:
		return StageNew
	}
}

// The coefficients of the score model (see the package doc).
const (
	engagementBias     = -3.0
	engagementActive7  = 0.6
	engagementActive28 = 0.1
	engagementIdle     = -0.2
	engagementTrend    = 0.8

	churnBias     = -1.5
	churnIdle     = 0.25
	churnActive7  = -0.4
	churnActive28 = -0.05
	churnTrend    = -0.8
)

// logTrend is the trend as the models read it: its logarithm, the trend
// clamped to [0.05, 20] so that a burst or a collapse cannot dominate.
func logTrend(trend float64) float64 { return math.Log(min(max(trend, 0.05), 20)) }

func sigmoid(z float64) float64 { return 1 / (1 + math.Exp(-z)) }

// engagementScore is 100·σ(z), rounded, z linear in the inputs.
func engagementScore(in scoreInputs) int32 {
	z := engagementBias + engagementActive7*float64(in.ActiveDays7d) + engagementActive28*float64(in.ActiveDays28d) +
		engagementIdle*in.DaysSinceLastSeen + engagementTrend*logTrend(in.Trend)
	return int32(math.Round(100 * sigmoid(z)))
}

// churnRisk is σ(z), rounded to 4 decimals, z linear in the inputs.
func churnRisk(in scoreInputs) float64 {
	z := churnBias + churnIdle*in.DaysSinceLastSeen + churnActive7*float64(in.ActiveDays7d) +
		churnActive28*float64(in.ActiveDays28d) + churnTrend*logTrend(in.Trend)
	return round4(sigmoid(z))
}

// scoreBand is the band of an engagement score: 0 (0-19) to 4 (80-100).
func scoreBand(score int32) int32 { return min(score/20, 4) }

// evaluate computes a profile's lifecycle state at now.
func evaluate(a activity, firstSeen, lastSeen int64, activated bool, r Rules, now int64) lifecycleState {
	in := computeInputs(a, firstSeen, lastSeen, activated, now)
	return lifecycleState{stage: stageOf(in, r), score: engagementScore(in), risk: churnRisk(in), inputs: in}
}

// dueAt returns when, with no further event, the stage or the score band
// computed at now would first change: 0 when never. Inputs change only at
// UTC midnights (days leave the windows) and at whole days after the first
// and last events, so those instants are the only candidates.
func dueAt(a activity, firstSeen, lastSeen int64, activated bool, r Rules, now int64) int64 {
	cur := evaluate(a, firstSeen, lastSeen, activated, r, now)
	var cands []int64
	today := dayOf(now)
	for d := int64(1); d <= rollingDays+1; d++ {
		cands = append(cands, (today+d)*microsPerDay)
	}
	// Recency keeps lowering the score until the profile is churned; a
	// day beyond that changes nothing the rules or bands can tell.
	for k := max(1, (now-lastSeen)/microsPerDay); k <= int64(r.ChurnedIdleDays)+1; k++ {
		if t := lastSeen + k*microsPerDay; t > now {
			cands = append(cands, t)
		}
	}
	if t := firstSeen + int64(r.NewDays)*microsPerDay; t > now {
		cands = append(cands, t)
	}
	slices.Sort(cands)
	for _, t := range slices.Compact(cands) {
		next := evaluate(a, firstSeen, lastSeen, activated, r, t)
		if next.stage != cur.stage || scoreBand(next.score) != scoreBand(cur.score) {
			return t
		}
	}
	return 0
}
