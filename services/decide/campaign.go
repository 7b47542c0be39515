package decide

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

// Limits of a campaign definition.
const (
	maxNameBytes        = 200
	maxExprBytes        = 4096
	maxVariants         = 20
	maxExitEvents       = 20
	maxHoldoutShare     = 0.5
	maxPriority         = 100
	maxWait             = 30 * 24 * time.Hour
	maxAttribution      = 90 * 24 * time.Hour
	maxSendDelay        = 7 * 24 * time.Hour
	maxContentRefBytes  = 200
	maxEventNameBytes   = 200
	celCostLimit        = 100_000
	programCacheEntries = 4096
)

var variantIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

var stages = map[string]bool{"new": true, "activated": true, "engaged": true, "at_risk": true, "dormant": true, "churned": true}

// channelNames are the channel names of consent events and contact policy.
var channelNames = map[campaignv1.Channel]string{
	campaignv1.Channel_CHANNEL_EMAIL:   "email",
	campaignv1.Channel_CHANNEL_SMS:     "sms",
	campaignv1.Channel_CHANNEL_PUSH:    "push",
	campaignv1.Channel_CHANNEL_WEBHOOK: "webhook",
	campaignv1.Channel_CHANNEL_IN_APP:  "in_app",
}

// fieldError is a definition the client got wrong; field is the path of
// the offending field from the campaign ("campaign.variants[1].channel").
type fieldError struct{ field, problem string }

func (e *fieldError) Error() string { return e.field + ": " + e.problem }

// expressions compiles the CEL of campaigns: audiences over `profile`,
// trigger conditions over `event`. Programs are cached by expression, since
// every trigger of a campaign evaluates the same ones.
type expressions struct {
	profileEnv *cel.Env
	eventEnv   *cel.Env

	mu       sync.Mutex
	programs map[exprKey]cel.Program
}

type exprKey struct {
	event bool
	expr  string
}

func newExpressions() (*expressions, error) {
	// JSON numbers are doubles and profile scores ints: comparing across
	// numeric types lets operators write `event.properties.total > 50`.
	profileEnv, err := cel.NewEnv(
		cel.CrossTypeNumericComparisons(true),
		cel.Types(&profilev1.Profile{}),
		cel.Variable("profile", cel.ObjectType(string((&profilev1.Profile{}).ProtoReflect().Descriptor().FullName()))),
	)
	if err != nil {
		return nil, fmt.Errorf("cel profile environment: %w", err)
	}
	eventEnv, err := cel.NewEnv(cel.CrossTypeNumericComparisons(true), cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		return nil, fmt.Errorf("cel event environment: %w", err)
	}
	return &expressions{profileEnv: profileEnv, eventEnv: eventEnv, programs: map[exprKey]cel.Program{}}, nil
}

// compile returns the program of expr over `event` (event true) or
// `profile`; the error says why expr is not a bool expression.
func (x *expressions) compile(event bool, expr string) (cel.Program, error) {
	k := exprKey{event, expr}
	x.mu.Lock()
	prg, ok := x.programs[k]
	x.mu.Unlock()
	if ok {
		return prg, nil
	}
	if len(expr) > maxExprBytes {
		return nil, fmt.Errorf("longer than %d bytes", maxExprBytes)
	}
	env := x.profileEnv
	if event {
		env = x.eventEnv
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		return nil, iss.Err()
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) {
		return nil, fmt.Errorf("must be of type bool, not %s", t)
	}
	prg, err := env.Program(ast, cel.CostLimit(celCostLimit), cel.InterruptCheckFrequency(100))
	if err != nil {
		return nil, err
	}
	x.mu.Lock()
	if len(x.programs) >= programCacheEntries {
		clear(x.programs) // campaigns are few; a full cache is a burst of edits
	}
	x.programs[k] = prg
	x.mu.Unlock()
	return prg, nil
}

// errCost means an evaluation exceeded its cost limit.
var errCost = errors.New("expression exceeds its evaluation cost limit")

// eval reports whether prg is true for vars. An evaluation error (a missing
// key, a type mismatch) is false, with the error to explain it.
func eval(ctx context.Context, prg cel.Program, vars map[string]any) (bool, error) {
	out, _, err := prg.ContextEval(ctx, vars)
	if err != nil {
		var cancelled interpreter.EvalCancelledError
		if errors.As(err, &cancelled) && cancelled.Cause == interpreter.CostLimitExceeded {
			return false, errCost
		}
		return false, err
	}
	b, ok := out.Value().(bool)
	return ok && b, nil
}

// validate checks a campaign definition, returning a *fieldError naming the
// first offending field.
func (x *expressions) validate(c *campaignv1.Campaign) error {
	bad := func(field, format string, args ...any) error {
		return &fieldError{"campaign." + field, fmt.Sprintf(format, args...)}
	}
	if c == nil {
		return &fieldError{"campaign", "required"}
	}
	if c.GetName() == "" || len(c.GetName()) > maxNameBytes {
		return bad("name", "must be 1-%d bytes", maxNameBytes)
	}
	switch t := c.GetTrigger().GetKind().(type) {
	case *campaignv1.Trigger_Event:
		if n := t.Event.GetName(); n == "" || len(n) > maxEventNameBytes || hasNUL(n) {
			return bad("trigger.event.name", "must be 1-%d bytes without NUL", maxEventNameBytes)
		}
		if cond := t.Event.GetCondition(); cond != "" {
			if _, err := x.compile(true, cond); err != nil {
				return bad("trigger.event.condition", "%v", err)
			}
		}
	case *campaignv1.Trigger_ProfileChange:
		switch ch := t.ProfileChange.GetChange().(type) {
		case *campaignv1.ProfileChangeTrigger_EnteredStage:
			if !stages[ch.EnteredStage] {
				return bad("trigger.profile_change.entered_stage", "unknown stage %q", ch.EnteredStage)
			}
		case *campaignv1.ProfileChangeTrigger_Kind:
			if _, ok := profilev1.ProfileChangeKind_name[int32(ch.Kind)]; !ok || ch.Kind == profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_UNSPECIFIED {
				return bad("trigger.profile_change.kind", "must be a known kind")
			}
		default:
			return bad("trigger.profile_change", "set entered_stage or kind")
		}
	default:
		return bad("trigger", "set event or profile_change")
	}
	if a := c.GetAudience(); a != "" {
		if _, err := x.compile(false, a); err != nil {
			return bad("audience", "%v", err)
		}
	}
	if w := c.GetWait(); w != nil {
		if err := checkDuration(w.GetDelay().AsDuration(), maxWait); err != nil {
			return bad("wait.delay", "%v", err)
		}
		if (w.GetWaitForEvent() != "" || len(w.GetExitEvents()) > 0) && w.GetDelay().AsDuration() <= 0 {
			return bad("wait.delay", "must be positive with wait_for_event or exit_events: it is how long the wait lasts")
		}
		if len(w.GetWaitForEvent()) > maxEventNameBytes || hasNUL(w.GetWaitForEvent()) {
			return bad("wait.wait_for_event", "must be at most %d bytes without NUL", maxEventNameBytes)
		}
		if len(w.GetExitEvents()) > maxExitEvents {
			return bad("wait.exit_events", "at most %d", maxExitEvents)
		}
		for i, e := range w.GetExitEvents() {
			if e == "" || len(e) > maxEventNameBytes || hasNUL(e) {
				return bad(fmt.Sprintf("wait.exit_events[%d]", i), "must be 1-%d bytes without NUL", maxEventNameBytes)
			}
		}
	}
	vs := c.GetVariants()
	if len(vs) == 0 || len(vs) > maxVariants {
		return bad("variants", "need 1-%d variants", maxVariants)
	}
	seen := map[string]bool{}
	for i, v := range vs {
		f := fmt.Sprintf("variants[%d].", i)
		if !variantIDPattern.MatchString(v.GetId()) {
			return bad(f+"id", "must be 1-64 characters of A-Z a-z 0-9 _ -")
		}
		if seen[v.GetId()] {
			return bad(f+"id", "duplicate id %q", v.GetId())
		}
		seen[v.GetId()] = true
		if w := v.GetWeight(); !(w > 0) || math.IsInf(w, 0) {
			return bad(f+"weight", "must be a positive finite number, got %v", w)
		}
		if _, ok := channelNames[v.GetChannel()]; !ok {
			return bad(f+"channel", "must be one of email, sms, push, webhook, in_app")
		}
		if r := v.GetContentRef(); r == "" || len(r) > maxContentRefBytes {
			return bad(f+"content_ref", "must be 1-%d bytes", maxContentRefBytes)
		}
		if len(v.GetTopic()) > maxEventNameBytes || hasNUL(v.GetTopic()) {
			return bad(f+"topic", "must be at most %d bytes without NUL", maxEventNameBytes)
		}
	}
	if h := c.GetHoldoutShare(); !(h >= 0 && h <= maxHoldoutShare) {
		return bad("holdout_share", "must be 0-%v, got %v", maxHoldoutShare, h)
	}
	if len(c.GetGoalEvent()) > maxEventNameBytes || hasNUL(c.GetGoalEvent()) {
		return bad("goal_event", "must be at most %d bytes without NUL", maxEventNameBytes)
	}
	if err := checkDuration(c.GetAttributionWindow().AsDuration(), maxAttribution); err != nil {
		return bad("attribution_window", "%v", err)
	}
	if c.GetGoalEvent() != "" && c.GetAttributionWindow().AsDuration() <= 0 {
		return bad("attribution_window", "must be positive when goal_event is set")
	}
	if p := c.GetPriority(); p < 0 || p > maxPriority {
		return bad("priority", "must be 0-%d, got %d", maxPriority, p)
	}
	if err := checkDuration(c.GetMaxSendDelay().AsDuration(), maxSendDelay); err != nil {
		return bad("max_send_delay", "%v", err)
	}
	if c.GetOptimizeSendTime() && c.GetMaxSendDelay().AsDuration() <= 0 {
		return bad("max_send_delay", "must be positive when optimize_send_time is set")
	}
	return nil
}

// hasNUL reports a NUL byte, which PostgreSQL text cannot hold.
func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

func checkDuration(d, max time.Duration) error {
	switch {
	case d < 0:
		return fmt.Errorf("must not be negative, got %v", d)
	case d > max:
		return fmt.Errorf("must be at most %v, got %v", max, d)
	}
	return nil
}
