// Package contact is the contact policy of the decide target: the
// guardrails that keep a user from being over-messaged, written as Rego in
// policies/engagement (package whisper.engagement.contact, tested there with
// opa tests) and enforced atomically in Redis.
//
// The rules (see contact.rego for the exact semantics): caps per user per
// channel per local day and ISO week across all campaigns; quiet hours in
// the user's timezone, which defer a message to their end rather than drop
// it; a minimum gap between two messages of the channels that keep one;
// priority headroom, the last slots of each cap kept for campaigns of high
// priority; transactional messages bypass all of it and are not counted.
// Consent is not this package's concern.
//
// Reserve reads the user's counters for the proposed send time, evaluates
// the prepared Rego query on them, and, when the policy allows, reserves
// the message with one Lua script that re-checks the limits the policy
// returned and records the message, all or nothing. Policy evaluation is
// therefore advisory and the script is the arbiter: two replicas that both
// read "1 of 2 sent" cannot both send past the cap, because the script runs
// serially in Redis and the second one finds the cap full. When quiet hours
// defer the message, the counters of the deferred time are read and the
// policy evaluated again there, so a message counts against the local day
// and week it is actually sent in.
//
// A user's reservations are two sorted sets whose members are decision ids
// and whose scores are send times: one per channel (caps) and one across
// the channels that keep the minimum gap. Counting a day or a week is
// counting a score range, so the same sets serve any timezone (a user whose
// timezone trait changes is counted in the new zone's days), and a
// reservation is keyed by its decision: Reserve again for a decision that
// holds one returns it unchanged, and Release removes it, idempotently.
// Entries older than eight days are trimmed and each set expires eight
// days after its latest message.
//
// Evaluating the Rego policy costs about 100-300 µs, too much for every
// decision at the decide target's rate, so decisions are memoized by the
// policy's whole input (see policyInput): the policy is a pure function of
// it, and with times in whole minutes most decisions of a minute (fresh
// users, the same few counters and zones) share one evaluation. The memo
// changes no outcome; TestMemoMatchesEvaluation holds it to that.
//
// Keys carry a {workspace:user} hash tag, so both sets of a user sit on one
// Redis Cluster slot, as a Lua script over them requires.
package contact

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"
	// The zone database is compiled in: a slim image has none, and without
	// it every user's quiet hours would silently be UTC.
	_ "time/tzdata"

	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/redis/go-redis/v9"

	"github.com/whisperhq/whisper/policies/engagement"
)

// keep is how long a message is remembered after its send time: an ISO
// week reaches back at most 7 days (plus a daylight-saving hour).
const keep = 8 * 24 * time.Hour

// ErrInvalidRequest wraps every reason Reserve or Release refuses a Request.
var ErrInvalidRequest = errors.New("invalid contact request")

//go:embed reserve.lua
var reserveSource string

var reserveScript = redis.NewScript(reserveSource)

// Options configure New.
type Options struct {
	Redis  *redis.Client
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Config Config
	// ObserveEval, when set, is called with the time of every policy
	// evaluation, for the decide target's latency histogram; memoized is
	// true when the decision came from the memo without running Rego.
	ObserveEval func(d time.Duration, memoized bool)
}

// Request is one message the decide target wants to send.
type Request struct {
	WorkspaceID, UserID, CampaignID, DecisionID, Channel string
	// Priority is the campaign's, 0 to 100.
	Priority      int
	Transactional bool
	// Timezone is the user's IANA zone (profile trait "timezone"); empty
	// means UTC. An unknown zone is treated as UTC and the steps say so.
	Timezone string
	// SendAt is the proposed send time; zero or past means now.
	SendAt time.Time
}

// Step is one check of the policy, with what it looked at, for
// ExplainDecision.
type Step struct {
	Name, Result string
	Inputs       map[string]string
}

// Verdict is Reserve's answer.
type Verdict struct {
	// Allowed: the message may be sent at SendAt, and is counted.
	Allowed bool
	// SendAt is the proposed time, or later when quiet hours deferred it.
	SendAt time.Time
	// Rule names the rule that denied or deferred the message: one of
	// daily_cap, weekly_cap, priority_headroom, min_gap, quiet_hours; empty
	// when none did.
	Rule  string
	Steps []Step
}

// Policy evaluates and enforces the contact policy. It is safe for
// concurrent use.
type Policy struct {
	rdb    *redis.Client
	logger *slog.Logger
	now    func() time.Time
	cfg    Config
	query  rego.PreparedEvalQuery
	zones  sync.Map // IANA name -> *time.Location
	memo   memo

	observeEval func(time.Duration, bool)
}

// New compiles the policy and validates the configuration.
func New(o Options) (*Policy, error) {
	if o.Redis == nil {
		return nil, errors.New("contact policy: a Redis client is required")
	}
	cfg, err := o.Config.resolve()
	if err != nil {
		return nil, err
	}
	opts := []func(*rego.Rego){rego.Query(engagement.ContactQuery)}
	for name, src := range engagement.Modules() {
		opts = append(opts, rego.Module(name, src))
	}
	// Prepared once: compiling is milliseconds, evaluating microseconds.
	q, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		return nil, fmt.Errorf("prepare contact policy: %w", err)
	}
	p := &Policy{rdb: o.Redis, logger: o.Logger, now: o.Now, cfg: cfg, query: q, observeEval: o.ObserveEval}
	if p.logger == nil {
		p.logger = slog.New(slog.DiscardHandler)
	}
	if p.now == nil {
		p.now = time.Now
	}
	return p, nil
}

func (r Request) validate() error {
	for _, f := range []struct{ name, v string }{
		{"workspace_id", r.WorkspaceID}, {"user_id", r.UserID}, {"decision_id", r.DecisionID}, {"channel", r.Channel},
	} {
		if strings.TrimSpace(f.v) == "" {
			return fmt.Errorf("%w: %s is required", ErrInvalidRequest, f.name)
		}
	}
	return nil
}

// keys are a user's two reservation sets.
type keys struct{ channel, gap string }

func keysFor(ws, userID, ch string) keys {
	base := "whisper:contact:{" + ws + ":" + userID + "}:"
	return keys{channel: base + "ch:" + ch, gap: base + "gap"}
}

// zone resolves an IANA name, caching it (LoadLocation reads the zone
// database on every call). A bad name is user data, not an error.
func (p *Policy) zone(tz string) (*time.Location, string, bool) {
	tz = strings.TrimSpace(tz)
	if tz == "" || tz == "UTC" {
		return time.UTC, "UTC", true
	}
	if l, ok := p.zones.Load(tz); ok {
		return l.(*time.Location), tz, true
	}
	l, err := time.LoadLocation(tz)
	if err != nil || tz == "Local" {
		return time.UTC, "UTC", false
	}
	p.zones.Store(tz, l)
	return l, tz, true
}

// span is a local day or ISO week, [start, end).
type span struct{ start, end time.Time }

func dayOf(t time.Time, loc *time.Location) span {
	l := t.In(loc)
	return span{time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc), time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, loc)}
}

func weekOf(t time.Time, loc *time.Location) span {
	l := t.In(loc)
	back := (int(l.Weekday()) + 6) % 7 // days since Monday
	return span{time.Date(l.Year(), l.Month(), l.Day()-back, 0, 0, 0, 0, loc), time.Date(l.Year(), l.Month(), l.Day()-back+7, 0, 0, 0, 0, loc)}
}

// counters are the user's reservations around one send time.
type counters struct {
	day, week         int64
	previous, next    time.Time // zero when none
	held              bool      // this decision holds a reservation
	heldAt            time.Time
	daySpan, weekSpan span
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// read fetches the counters in one round trip.
func (p *Policy) read(ctx context.Context, k keys, decisionID string, at time.Time, loc *time.Location, gap bool) (counters, error) {
	c := counters{daySpan: dayOf(at, loc), weekSpan: weekOf(at, loc)}
	pipe := p.rdb.Pipeline()
	held := pipe.ZScore(ctx, k.channel, decisionID)
	day := pipe.ZCount(ctx, k.channel, ms(c.daySpan.start), "("+ms(c.daySpan.end))
	week := pipe.ZCount(ctx, k.channel, ms(c.weekSpan.start), "("+ms(c.weekSpan.end))
	var prev, next *redis.ZSliceCmd
	if gap {
		prev = pipe.ZRevRangeByScoreWithScores(ctx, k.gap, &redis.ZRangeBy{Max: ms(at), Min: "-inf", Count: 1})
		next = pipe.ZRangeByScoreWithScores(ctx, k.gap, &redis.ZRangeBy{Min: "(" + ms(at), Max: "+inf", Count: 1})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return c, fmt.Errorf("read contact counters: %w", err)
	}
	if s, err := held.Result(); err == nil {
		c.held, c.heldAt = true, time.UnixMilli(int64(s))
		return c, nil
	}
	c.day, c.week = day.Val(), week.Val()
	if gap {
		if z := prev.Val(); len(z) > 0 {
			c.previous = time.UnixMilli(int64(z[0].Score))
		}
		if z := next.Val(); len(z) > 0 {
			c.next = time.UnixMilli(int64(z[0].Score))
		}
	}
	return c, nil
}

// Reserve decides whether the message may be sent and when, and when it may,
// counts it against the user's caps. The error is for Redis or the policy
// failing, never for a denial.
func (p *Policy) Reserve(ctx context.Context, r Request) (Verdict, error) {
	if err := r.validate(); err != nil {
		return Verdict{}, err
	}
	ch := channel(r.Channel)
	rules := p.cfg.rulesFor(r.WorkspaceID)
	cr := rules.forChannel(ch)
	loc, tzName, known := p.zone(r.Timezone)
	now := p.now()
	at := r.SendAt
	if at.IsZero() || at.Before(now) {
		at = now
	}
	var steps []Step
	if !known {
		steps = append(steps, Step{Name: "timezone", Result: "unknown zone, using UTC", Inputs: map[string]string{"timezone": r.Timezone}})
	}
	k := keysFor(r.WorkspaceID, r.UserID, ch)
	gap := cr.MinGap && rules.MinGap > 0 && !r.Transactional
	deferRule := ""
	// Quiet hours end at a time outside them, so a second deferral means
	// the clock moved under us; a third round is a bug, not a loop.
	for range 3 {
		var c counters
		if !r.Transactional {
			var err error
			if c, err = p.read(ctx, k, r.DecisionID, at, loc, gap); err != nil {
				return Verdict{}, err
			}
			if c.held {
				steps = append(steps, Step{Name: "reserve", Result: "already reserved by this decision", Inputs: map[string]string{
					"decision_id": r.DecisionID, "send_at": c.heldAt.In(loc).Format(time.RFC3339),
				}})
				return Verdict{Allowed: true, SendAt: c.heldAt, Steps: steps}, nil
			}
		}
		out, err := p.eval(ctx, newPolicyInput(r, ch, rules, cr, at, tzName, c), loc)
		if err != nil {
			return Verdict{}, err
		}
		steps = append(steps, out.steps...)
		switch {
		case !out.allow:
			return Verdict{SendAt: at, Rule: out.rule, Steps: steps}, nil
		case out.deferUntil.After(at):
			at, deferRule = out.deferUntil, out.rule
			continue
		case r.Transactional:
			steps = append(steps, Step{Name: "reserve", Result: "not counted: transactional", Inputs: map[string]string{}})
			return Verdict{Allowed: true, SendAt: at, Rule: deferRule, Steps: steps}, nil
		}
		ok, rule, err := p.reserve(ctx, k, r.DecisionID, at, now, c, out.limits)
		if err != nil {
			return Verdict{}, err
		}
		if !ok {
			// Another replica filled the cap between our read and now.
			p.logger.DebugContext(ctx, "contact reservation lost a race", "workspace_id", r.WorkspaceID, "decision_id", r.DecisionID, "rule", rule)
			steps = append(steps, Step{Name: "reserve", Result: "refused at reservation: " + rule, Inputs: map[string]string{"decision_id": r.DecisionID}})
			return Verdict{SendAt: at, Rule: rule, Steps: steps}, nil
		}
		steps = append(steps, Step{Name: "reserve", Result: "reserved", Inputs: map[string]string{
			"decision_id": r.DecisionID, "send_at": at.In(loc).Format(time.RFC3339),
		}})
		return Verdict{Allowed: true, SendAt: at, Rule: deferRule, Steps: steps}, nil
	}
	return Verdict{}, fmt.Errorf("contact policy deferred decision %s three times; check quiet_start/quiet_end", r.DecisionID)
}

// reserve runs the reservation script with the limits the policy returned.
func (p *Policy) reserve(ctx context.Context, k keys, decisionID string, at, now time.Time, c counters, l limits) (bool, string, error) {
	res, err := reserveScript.Run(ctx, p.rdb, []string{k.channel, k.gap},
		decisionID, ms(at),
		ms(c.daySpan.start), ms(c.daySpan.end), ms(c.weekSpan.start), ms(c.weekSpan.end),
		l.day, l.week, l.minGap.Milliseconds(), ms(now), keep.Milliseconds(),
	).Slice()
	if err != nil {
		return false, "", fmt.Errorf("reserve contact slot: %w", err)
	}
	if len(res) < 2 {
		return false, "", fmt.Errorf("reserve contact slot: unexpected reply %v", res)
	}
	ok, _ := res[0].(int64)
	rule, _ := res[1].(string)
	return ok == 1, rule, nil
}

// Release undoes the reservation of r.DecisionID (the decision exited, or
// failed to persist). Releasing twice, or a decision that never reserved,
// changes nothing.
func (p *Policy) Release(ctx context.Context, r Request) error {
	if err := r.validate(); err != nil {
		return err
	}
	k := keysFor(r.WorkspaceID, r.UserID, channel(r.Channel))
	_, err := p.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.ZRem(ctx, k.channel, r.DecisionID)
		pipe.ZRem(ctx, k.gap, r.DecisionID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("release contact slot of decision %s: %w", r.DecisionID, err)
	}
	return nil
}
