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
// ReserveBatch does the same for many requests with one read pipeline and
// one reservation pipeline for the whole batch, so a consumer deciding a
// poll's worth of events pays two Redis round trips, not two per decision.
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

// job is one request of a batch on its way through the rounds of Reserve.
type job struct {
	r                Request
	ch               string
	rules            Rules
	cr               ChannelRules
	loc              *time.Location
	tzName           string
	k                keys
	gap              bool
	at               time.Time
	deferRule        string
	steps            []Step
	c                counters
	limits           limits
	done             bool
	v                Verdict
	heldCmd          *redis.FloatCmd
	dayCmd, weekCmd  *redis.IntCmd
	prevCmd, nextCmd *redis.ZSliceCmd
	reserveCmd       *redis.Cmd
}

// queueRead adds the reads of j's counters at j.at to pipe.
func (j *job) queueRead(ctx context.Context, pipe redis.Pipeliner) {
	j.c = counters{daySpan: dayOf(j.at, j.loc), weekSpan: weekOf(j.at, j.loc)}
	j.heldCmd = pipe.ZScore(ctx, j.k.channel, j.r.DecisionID)
	j.dayCmd = pipe.ZCount(ctx, j.k.channel, ms(j.c.daySpan.start), "("+ms(j.c.daySpan.end))
	j.weekCmd = pipe.ZCount(ctx, j.k.channel, ms(j.c.weekSpan.start), "("+ms(j.c.weekSpan.end))
	j.prevCmd, j.nextCmd = nil, nil
	if j.gap {
		j.prevCmd = pipe.ZRevRangeByScoreWithScores(ctx, j.k.gap, &redis.ZRangeBy{Max: ms(j.at), Min: "-inf", Count: 1})
		j.nextCmd = pipe.ZRangeByScoreWithScores(ctx, j.k.gap, &redis.ZRangeBy{Min: "(" + ms(j.at), Max: "+inf", Count: 1})
	}
}

// takeRead reads the replies queueRead asked for.
func (j *job) takeRead() error {
	if s, err := j.heldCmd.Result(); err == nil {
		j.c.held, j.c.heldAt = true, time.UnixMilli(int64(s))
		return nil
	} else if !errors.Is(err, redis.Nil) {
		return err
	}
	var err error
	if j.c.day, err = j.dayCmd.Result(); err != nil {
		return err
	}
	if j.c.week, err = j.weekCmd.Result(); err != nil {
		return err
	}
	if j.gap {
		prev, err := j.prevCmd.Result()
		if err != nil {
			return err
		}
		next, err := j.nextCmd.Result()
		if err != nil {
			return err
		}
		if len(prev) > 0 {
			j.c.previous = time.UnixMilli(int64(prev[0].Score))
		}
		if len(next) > 0 {
			j.c.next = time.UnixMilli(int64(next[0].Score))
		}
	}
	return nil
}

func (j *job) finish(v Verdict) {
	v.Steps = j.steps
	j.v, j.done = v, true
}

// Reserve decides whether the message may be sent and when, and when it may,
// counts it against the user's caps. The error is for bad input, Redis or
// the policy failing, never for a denial.
func (p *Policy) Reserve(ctx context.Context, r Request) (Verdict, error) {
	vs, err := p.ReserveBatch(ctx, []Request{r})
	if err != nil {
		return Verdict{}, err
	}
	return vs[0], nil
}

// ReserveBatch is Reserve for many requests at once, in two Redis round
// trips for the whole batch (a read and a reservation pipeline; one more
// of each when quiet hours defer some), which is what makes thousands of
// decisions a second cheap. Requests are reserved in order: when two in
// the batch compete for one user's last slot, the first gets it and the
// second is refused by the reservation script. Verdicts are in the order
// of the requests.
//
// An invalid request fails the whole batch before anything is reserved.
// A Redis or policy error fails it too, possibly after some reservations
// were made: Release every request of a failed batch (Release is
// idempotent) or let the reservations expire.
func (p *Policy) ReserveBatch(ctx context.Context, rs []Request) ([]Verdict, error) {
	now := p.now()
	jobs := make([]*job, len(rs))
	for i, r := range rs {
		if err := r.validate(); err != nil {
			if len(rs) > 1 {
				return nil, fmt.Errorf("requests[%d]: %w", i, err)
			}
			return nil, err
		}
		j := &job{r: r, ch: channel(r.Channel), at: r.SendAt}
		j.rules = p.cfg.rulesFor(r.WorkspaceID)
		j.cr = j.rules.forChannel(j.ch)
		var known bool
		j.loc, j.tzName, known = p.zone(r.Timezone)
		if j.at.IsZero() || j.at.Before(now) {
			j.at = now
		}
		if !known {
			j.steps = append(j.steps, Step{Name: "timezone", Result: "unknown zone, using UTC", Inputs: map[string]string{"timezone": r.Timezone}})
		}
		j.k = keysFor(r.WorkspaceID, r.UserID, j.ch)
		j.gap = j.cr.MinGap && j.rules.MinGap > 0 && !r.Transactional
		jobs[i] = j
	}
	// Quiet hours end at a time outside them, so one deferral round is
	// all a request needs; the third round only catches a clock moving
	// under us.
	for range 3 {
		if err := p.round(ctx, jobs, now); err != nil {
			return nil, err
		}
	}
	vs := make([]Verdict, len(jobs))
	for i, j := range jobs {
		if !j.done {
			return nil, fmt.Errorf("contact policy deferred decision %s three times; check quiet_start/quiet_end", j.r.DecisionID)
		}
		vs[i] = j.v
	}
	return vs, nil
}

// round reads the counters of every open job, evaluates the policy on
// each, and reserves the allowed ones.
func (p *Policy) round(ctx context.Context, jobs []*job, now time.Time) error {
	var open []*job
	for _, j := range jobs {
		if !j.done && !j.r.Transactional {
			open = append(open, j)
		}
	}
	if len(open) > 0 {
		pipe := p.rdb.Pipeline()
		for _, j := range open {
			j.queueRead(ctx, pipe)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read contact counters: %w", err)
		}
		for _, j := range open {
			if err := j.takeRead(); err != nil {
				return fmt.Errorf("read contact counters: %w", err)
			}
		}
	}
	var reserve []*job
	for _, j := range jobs {
		if j.done {
			continue
		}
		if j.c.held {
			j.steps = append(j.steps, Step{Name: "reserve", Result: "already reserved by this decision", Inputs: map[string]string{
				"decision_id": j.r.DecisionID, "send_at": j.c.heldAt.In(j.loc).Format(time.RFC3339),
			}})
			j.finish(Verdict{Allowed: true, SendAt: j.c.heldAt})
			continue
		}
		out, err := p.eval(ctx, newPolicyInput(j.r, j.ch, j.rules, j.cr, j.at, j.tzName, j.c), j.loc)
		if err != nil {
			return err
		}
		j.steps = append(j.steps, out.steps...)
		switch {
		case !out.allow:
			j.finish(Verdict{SendAt: j.at, Rule: out.rule})
		case out.deferUntil.After(j.at):
			j.at, j.deferRule = out.deferUntil, out.rule
		case j.r.Transactional:
			j.steps = append(j.steps, Step{Name: "reserve", Result: "not counted: transactional", Inputs: map[string]string{}})
			j.finish(Verdict{Allowed: true, SendAt: j.at, Rule: j.deferRule})
		default:
			j.limits = out.limits
			reserve = append(reserve, j)
		}
	}
	return p.reserve(ctx, reserve, now)
}

// reserve runs the reservation script for each job, in one pipeline, with
// the limits the policy returned.
func (p *Policy) reserve(ctx context.Context, jobs []*job, now time.Time) error {
	if len(jobs) == 0 {
		return nil
	}
	run := func(js []*job, sha bool) error {
		pipe := p.rdb.Pipeline()
		for _, j := range js {
			keys := []string{j.k.channel, j.k.gap}
			args := []any{
				j.r.DecisionID, ms(j.at),
				ms(j.c.daySpan.start), ms(j.c.daySpan.end), ms(j.c.weekSpan.start), ms(j.c.weekSpan.end),
				j.limits.day, j.limits.week, j.limits.minGap.Milliseconds(), ms(now), keep.Milliseconds(),
				j.cr.PerDay, j.cr.PerWeek,
			}
			if sha {
				j.reserveCmd = reserveScript.EvalSha(ctx, pipe, keys, args...)
			} else {
				j.reserveCmd = reserveScript.Eval(ctx, pipe, keys, args...)
			}
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run(jobs, true)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis lost its script cache (a restart, SCRIPT FLUSH): none of
		// the scripts ran, so sending them whole is safe.
		err = run(jobs, false)
	}
	if err != nil {
		return fmt.Errorf("reserve contact slots: %w", err)
	}
	for _, j := range jobs {
		res, err := j.reserveCmd.Slice()
		if err != nil || len(res) < 2 {
			return fmt.Errorf("reserve contact slot of decision %s: unexpected reply %v: %w", j.r.DecisionID, res, err)
		}
		ok, _ := res[0].(int64)
		rule, _ := res[1].(string)
		if ok != 1 {
			// Another decision took the slot between our read and now.
			p.logger.DebugContext(ctx, "contact reservation lost a race", "workspace_id", j.r.WorkspaceID, "decision_id", j.r.DecisionID, "rule", rule)
			j.steps = append(j.steps, Step{Name: "reserve", Result: "refused at reservation: " + rule, Inputs: map[string]string{"decision_id": j.r.DecisionID}})
			j.finish(Verdict{SendAt: j.at, Rule: rule})
			continue
		}
		j.steps = append(j.steps, Step{Name: "reserve", Result: "reserved", Inputs: map[string]string{
			"decision_id": j.r.DecisionID, "send_at": j.at.In(j.loc).Format(time.RFC3339),
		}})
		j.finish(Verdict{Allowed: true, SendAt: j.at, Rule: j.deferRule})
	}
	return nil
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
