package contact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

// policyInput is everything the Rego policy sees, as a comparable value:
// the policy is a pure function of it (contact.rego uses no clock and no
// data), so its decision is memoized by it. Times are whole minutes, the
// policy's resolution, which is what makes the memo hit: the decisions of
// one minute for users with the same counters share one evaluation. The
// reservation script re-checks the gap at millisecond precision, so the
// rounding can only let the policy allow what the script then refuses,
// never deny what it would accept.
type policyInput struct {
	channel       string
	priority      int
	transactional bool
	sendAt        int64 // Unix ns, whole minutes
	timezone      string
	day, week     int64
	previous      int64 // Unix ns, whole minutes; 0 when none
	next          int64
	rules         ChannelRules
	quietStart    string
	quietEnd      string
	minGap        time.Duration
	threshold     int
	headroom      int
}

func minute(t time.Time) int64 { return t.Truncate(time.Minute).UnixNano() }

func newPolicyInput(r Request, ch string, rules Rules, cr ChannelRules, at time.Time, tzName string, c counters) policyInput {
	in := policyInput{
		channel: ch, priority: r.Priority, transactional: r.Transactional,
		sendAt: minute(at), timezone: tzName, day: c.day, week: c.week,
		rules: cr, quietStart: rules.QuietStart, quietEnd: rules.QuietEnd,
		threshold: rules.PriorityThreshold, headroom: rules.PriorityHeadroom,
	}
	if cr.MinGap {
		in.minGap = rules.MinGap
	}
	if !c.previous.IsZero() {
		in.previous = minute(c.previous)
	}
	if !c.next.IsZero() {
		in.next = minute(c.next)
	}
	return in
}

// localLayout is how local times read in the steps.
const localLayout = "2006-01-02 15:04 MST"

// value is the Rego input document (see contact.rego for its contract).
func (in policyInput) value(loc *time.Location) ast.Value {
	l := time.Unix(0, in.sendAt).In(loc)
	counters := [][2]*ast.Term{item("day", ast.IntNumberTerm(int(in.day))), item("week", ast.IntNumberTerm(int(in.week)))}
	if in.previous != 0 {
		counters = append(counters, item("previous_ns", ast.NumberTerm(ns64(in.previous))),
			item("previous_text", ast.StringTerm(time.Unix(0, in.previous).In(loc).Format(localLayout))))
	}
	if in.next != 0 {
		counters = append(counters, item("next_ns", ast.NumberTerm(ns64(in.next))),
			item("next_text", ast.StringTerm(time.Unix(0, in.next).In(loc).Format(localLayout))))
	}
	qs, _ := parseClock(in.quietStart) // validated by New
	qe, _ := parseClock(in.quietEnd)
	return ast.NewObject(
		item("request", ast.ObjectTerm(
			item("channel", ast.StringTerm(in.channel)),
			item("priority", ast.IntNumberTerm(in.priority)),
			item("transactional", ast.BooleanTerm(in.transactional)),
		)),
		item("time", ast.ObjectTerm(
			item("send_at_ns", ast.NumberTerm(ns64(in.sendAt))),
			item("timezone", ast.StringTerm(in.timezone)),
			item("local", ast.ObjectTerm(
				item("date", ast.StringTerm(l.Format("2006-01-02"))),
				item("minute_of_day", ast.IntNumberTerm(l.Hour()*60+l.Minute())),
				item("text", ast.StringTerm(l.Format(localLayout))),
			)),
		)),
		item("counters", ast.ObjectTerm(counters...)),
		item("config", ast.ObjectTerm(
			item("per_day", ast.IntNumberTerm(in.rules.PerDay)),
			item("per_week", ast.IntNumberTerm(in.rules.PerWeek)),
			item("quiet_hours", ast.BooleanTerm(in.rules.QuietHours)),
			item("quiet_start", ast.StringTerm(in.quietStart)),
			item("quiet_end", ast.StringTerm(in.quietEnd)),
			item("quiet_start_minute", ast.IntNumberTerm(qs)),
			item("quiet_end_minute", ast.IntNumberTerm(qe)),
			item("min_gap_ns", ast.NumberTerm(ns64(in.minGap.Nanoseconds()))),
			item("priority_threshold", ast.IntNumberTerm(in.threshold)),
			item("priority_headroom", ast.IntNumberTerm(in.headroom)),
		)),
	)
}

func item(k string, v *ast.Term) [2]*ast.Term { return [2]*ast.Term{ast.StringTerm(k), v} }

func ns64(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }

// limits are what the reservation must re-check.
type limits struct {
	day, week int64
	minGap    time.Duration
}

// outcome is the policy's decision.
type outcome struct {
	allow      bool
	rule       string
	deferUntil time.Time
	limits     limits
	steps      []Step
}

// memoSize bounds the memo. Entries are keyed by the minute, so old ones
// are useless; dropping them all when full is as good as an LRU here.
const memoSize = 8192

type memo struct {
	mu sync.Mutex
	m  map[policyInput]outcome
}

func (m *memo) get(k policyInput) (outcome, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.m[k]
	return o, ok
}

func (m *memo) put(k policyInput, o outcome) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) >= memoSize {
		m.m = make(map[policyInput]outcome, memoSize)
	}
	m.m[k] = o
}

// eval returns the policy's decision on in, from the memo when it has it.
// The steps are copied: a caller may keep or change them.
func (p *Policy) eval(ctx context.Context, in policyInput, loc *time.Location) (outcome, error) {
	start := time.Now()
	o, ok := p.memo.get(in)
	if !ok {
		var err error
		if o, err = p.evalRego(ctx, in.value(loc)); err != nil {
			return outcome{}, err
		}
		p.memo.put(in, o)
	}
	if p.observeEval != nil {
		p.observeEval(time.Since(start), ok)
	}
	steps := make([]Step, len(o.steps))
	for i, s := range o.steps {
		steps[i] = Step{Name: s.Name, Result: s.Result, Inputs: maps.Clone(s.Inputs)}
	}
	o.steps = steps
	return o, nil
}

func (p *Policy) evalRego(ctx context.Context, in ast.Value) (outcome, error) {
	rs, err := p.query.Eval(ctx, rego.EvalParsedInput(in))
	if err != nil {
		return outcome{}, fmt.Errorf("evaluate contact policy: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return outcome{}, errors.New("evaluate contact policy: no decision (policy undefined for this input)")
	}
	m, ok := rs[0].Expressions[0].Value.(map[string]any)
	if !ok {
		return outcome{}, fmt.Errorf("evaluate contact policy: decision is %T, not an object", rs[0].Expressions[0].Value)
	}
	return parseOutcome(m)
}

func parseOutcome(m map[string]any) (outcome, error) {
	var o outcome
	var bad error
	fail := func(f string) {
		if bad == nil {
			bad = fmt.Errorf("evaluate contact policy: malformed decision field %s in %v", f, m)
		}
	}
	num := func(v any, f string) int64 {
		n, ok := v.(json.Number)
		if !ok {
			fail(f)
			return 0
		}
		i, err := n.Int64()
		if err != nil {
			fail(f)
		}
		return i
	}
	var okb bool
	if o.allow, okb = m["allow"].(bool); !okb {
		fail("allow")
	}
	if o.rule, okb = m["rule"].(string); !okb {
		fail("rule")
	}
	if v, present := m["defer_until_ns"]; present {
		o.deferUntil = time.Unix(0, num(v, "defer_until_ns"))
	}
	lm, okb := m["limits"].(map[string]any)
	if !okb {
		fail("limits")
	}
	o.limits = limits{day: num(lm["day"], "limits.day"), week: num(lm["week"], "limits.week"), minGap: time.Duration(num(lm["min_gap_ns"], "limits.min_gap_ns"))}
	steps, okb := m["steps"].([]any)
	if !okb {
		fail("steps")
	}
	for _, s := range steps {
		sm, _ := s.(map[string]any)
		st := Step{Inputs: map[string]string{}}
		st.Name, _ = sm["name"].(string)
		st.Result, _ = sm["result"].(string)
		in, _ := sm["inputs"].(map[string]any)
		for k, v := range in {
			// Scalars only (contact_test.rego checks): numbers and
			// booleans print as Rego writes them.
			st.Inputs[k] = fmt.Sprint(v)
		}
		o.steps = append(o.steps, st)
	}
	return o, bad
}
