package decide

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/services/decide/bandit"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

// trigger is one reason to run a campaign for a user.
type trigger struct {
	ws, user string
	// "event:<message id>", "change:<change id>" or "request:<id>": with
	// the campaign, the idempotency key of the decision.
	id string
	// The profile the trigger carries (a profile change); nil means the
	// latest snapshot.
	profile *profilev1.Profile
	// The trigger step of the explanation.
	step *decisionv1.Step
	// The trigger event's properties (JSON object), carried on the
	// decision so deliver renders with them as `event`.
	props []byte
}

// runResult is what run did for one trigger.
type runResult struct {
	decision *decisionv1.Decision
	// fresh: decided now (not found from an earlier delivery).
	fresh bool
	// waiting: a wait now holds the decision.
	waiting bool
	// publish: final and not yet on whisper.decisions.
	publish bool
	// record is the decision's record as saved (fresh ones only), for
	// whisper.decisions.
	record []byte
}

// pendingRun is one campaign's run for one trigger, waiting for the
// batched decision step (runAll) of its poll or of its Decide calls.
type pendingRun struct {
	c  *campaignv1.Campaign
	tr trigger
	// rec is the record that triggered the run (the consumer's), whose
	// trace its decision's record continues; nil for a Decide call.
	rec *kgo.Record
	res runResult
}

// triggerKey is a decision's idempotency key.
type triggerKey struct{ ws, campaign, trigger string }

func (p *pendingRun) key() triggerKey { return triggerKey{p.tr.ws, p.c.GetId(), p.tr.id} }

// runAll decides, inside tx, each pending run (campaign c for trigger tr),
// or finds the decision an earlier delivery of its trigger made, and sets
// its res. It is the decision step done for a whole batch at once: one
// PostgreSQL round trip reads which triggers are decided already and every
// user, the contact policy reserves for all of them in one Redis pipeline,
// and one more round trip inserts every decision (each row written once,
// final), its outbox row, wait and bandit exposure. The runs of one user
// are decided in their order (the contact policy reserves in order). A
// batch must hold each trigger key once.
//
// A trigger decided meanwhile by another transaction (a rebalance handing
// its partition over, one Decide request id sent to two replicas) loses
// the INSERT. runAll then returns errLostRace: the caller rolls tx back
// (which undoes the loser's bandit exposure; its wait was not inserted),
// releases the contact reservations and decides again, finding the
// winner's decision.
//
// It returns the contact reservations to release if tx does not commit,
// on error too.
func (s *Service) runAll(ctx context.Context, tx pgx.Tx, ps []*pendingRun, rng *rand.Rand) ([]*contactRequest, error) {
	if len(ps) == 0 {
		return nil, nil
	}
	now := s.now()
	abandonedBefore := now.Add(-s.outboxDelay)
	keys, users := make([]triggerKey, len(ps)), make([]userKey, len(ps))
	for i, p := range ps {
		keys[i], users[i] = p.key(), userKey{p.tr.ws, p.tr.user}
	}
	found, in, err := s.store.readAll(ctx, tx, keys, users, abandonedBefore)
	if err != nil {
		return nil, err
	}
	var (
		w     writes
		items []*evalItem
	)
	for i, p := range ps {
		if e, ok := found[keys[i]]; ok {
			s.metrics.duplicates.Inc()
			p.res = runResult{decision: e.d, publish: e.pending}
			continue
		}
		c, tr := p.c, p.tr
		d := &decisionv1.Decision{
			DecisionId: uuid.NewString(), WorkspaceId: tr.ws, CampaignId: c.GetId(), CampaignVersion: c.GetVersion(),
			UserId: tr.user, TriggerId: tr.id, DecideTime: timestamppb.New(now), Transactional: c.GetTransactional(),
			Steps: []*decisionv1.Step{tr.step}, TriggerProperties: tr.props,
		}
		if wt := c.GetWait(); wt.GetDelay().AsDuration() > 0 {
			due := now.Add(wt.GetDelay().AsDuration())
			d.Outcome = decisionv1.Outcome_OUTCOME_WAITING
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "wait", Result: "waiting", Inputs: map[string]string{
				"delay": wt.GetDelay().AsDuration().String(), "due": due.UTC().Format(time.RFC3339),
				"wait_for_event": wt.GetWaitForEvent(), "exit_events": strings.Join(wt.GetExitEvents(), ","),
			}})
			w.saves = append(w.saves, decisionSave{d: d})
			w.waits = append(w.waits, waitInsert{d: d, due: due, waitFor: wt.GetWaitForEvent(), exits: wt.GetExitEvents()})
			p.res = runResult{decision: d, fresh: true, waiting: true}
			continue
		}
		in := *in[users[i]]
		if tr.profile != nil {
			in.profile = tr.profile
		}
		items = append(items, &evalItem{c: c, d: d, in: in})
		p.res = runResult{decision: d, fresh: true, publish: true}
	}
	held, err := s.evaluateAll(ctx, items, rng, &w)
	if err != nil {
		return held, err
	}
	lost, err := w.write(ctx, tx)
	if err != nil {
		return held, err
	}
	if lost {
		s.metrics.duplicates.Inc()
		return held, errLostRace
	}
	for _, p := range ps {
		if p.res.fresh {
			p.res.record = w.records[p.res.decision]
		}
	}
	return held, nil
}

// errLostRace is a batch with a decision whose trigger another
// transaction decided meanwhile (see runAll): rare, and undone by deciding
// the batch again in a new transaction. Undoing only the loser in place
// would need a savepoint per batch, and a transaction with more than 64
// subtransactions that wrote slows every session's snapshots.
var errLostRace = errors.New("a trigger was decided meanwhile by another transaction")

// evalItem is one decision going through evaluateAll.
type evalItem struct {
	c  *campaignv1.Campaign
	d  *decisionv1.Decision
	in userInputs

	// Set once the decision has a variant (variant, the user's timezone)
	// and a send time (sendAt, req).
	variant *campaignv1.Variant
	tz      string
	sendAt  time.Time
	req     *contactRequest
}

// writes are what a batch writes to PostgreSQL when its decisions are
// made: sent in one round trip by write.
type writes struct {
	saves     []decisionSave
	exposures []bandit.Exposure
	waits     []waitInsert
	// ending: the saves finish decisions their waits held, whose rows
	// exist; otherwise they are new rows.
	ending bool
	// records are the saved decisions' records, once written.
	records map[*decisionv1.Decision][]byte
}

type waitInsert struct {
	d       *decisionv1.Decision
	due     time.Time
	waitFor string
	exits   []string
}

// write sends the batch's writes in one round trip: the decisions' rows
// (and outbox rows) in one statement, the bandit's exposures in another,
// and the waits. It reports whether a new decision was not inserted
// because its trigger was decided meanwhile by another transaction: the
// batch must then be rolled back and decided again (errLostRace); the
// waits' statements insert only for decisions inserted, so that the
// batch still succeeds and says so.
func (w *writes) write(ctx context.Context, tx pgx.Tx) (lost bool, err error) {
	b := &pgx.Batch{}
	inserted := map[string]bool{}
	var recs [][]byte
	if w.ending {
		recs, err = queueUpdates(b, w.saves)
	} else {
		recs, err = queueInserts(b, w.saves, inserted)
	}
	if err != nil {
		return false, fmt.Errorf("save decisions: %w", err)
	}
	w.records = make(map[*decisionv1.Decision][]byte, len(recs))
	for i, r := range recs {
		w.records[w.saves[i].d] = r
	}
	if err := bandit.QueueExposures(b, w.exposures); err != nil {
		return false, err
	}
	for _, wt := range w.waits {
		queueWait(b, wt.d, wt.due, wt.waitFor, wt.exits)
	}
	if b.Len() == 0 {
		return false, nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return false, fmt.Errorf("save %d decisions, %d exposures and %d waits: %w", len(w.saves), len(w.exposures), len(w.waits), err)
	}
	return !w.ending && len(inserted) < len(w.saves), nil
}

// evaluateAll runs the steps of decisions not made before: audience, consent,
// variant, send time, contact policy. It fills each decision and adds its
// row (and exposure) to w. The contact reservations it returns (also on
// error: the policy may have made some) must be released if w is not
// committed.
//
// The variant is chosen before the contact policy (the design lists policy
// first) because caps are per channel and the channel is the variant's.
func (s *Service) evaluateAll(ctx context.Context, items []*evalItem, rng *rand.Rand, w *writes) ([]*contactRequest, error) {
	var (
		reqs    []contactRequest
		waiting []*evalItem
	)
	for _, it := range items {
		reached, err := s.evaluateUntilSendTime(ctx, it, rng, w)
		if err != nil {
			return nil, err
		}
		if reached {
			waiting = append(waiting, it)
		}
	}
	if len(waiting) == 0 {
		return nil, nil
	}
	if err := s.sendTimes(ctx, waiting); err != nil {
		return nil, err
	}
	for _, it := range waiting {
		reqs = append(reqs, *it.req)
	}
	start := time.Now()
	verdicts, err := s.policy.ReserveBatch(ctx, reqs)
	s.metrics.policyDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		held := make([]*contactRequest, len(waiting))
		for i, it := range waiting {
			held[i] = it.req
		}
		return held, fmt.Errorf("contact policy: %w", err)
	}
	var held []*contactRequest
	for i, it := range waiting {
		if s.applyVerdict(it, verdicts[i], w) {
			held = append(held, it.req)
		}
	}
	return held, nil
}

// save adds decision it.d, final with outcome, to w; goal: a conversion
// may be attributed to it.
func (it *evalItem) save(w *writes, outcome decisionv1.Outcome, goal bool) {
	d, c := it.d, it.c
	d.Outcome = outcome
	sv := decisionSave{d: d}
	if goal && c.GetGoalEvent() != "" {
		sv.goal, sv.deadline = c.GetGoalEvent(), d.DecideTime.AsTime().Add(c.GetAttributionWindow().AsDuration())
	}
	w.saves = append(w.saves, sv)
}

// evaluateUntilSendTime runs audience, consent and variant for one
// decision. It reports whether the decision goes on to the send time and
// the contact policy (it.variant set); when not, the decision is final and
// saved in w.
func (s *Service) evaluateUntilSendTime(ctx context.Context, it *evalItem, rng *rand.Rand, w *writes) (bool, error) {
	c, d := it.c, it.d
	p := it.in.profile
	if p == nil {
		p = &profilev1.Profile{WorkspaceId: d.WorkspaceId, UserId: d.UserId}
	}
	d.ProfileId = p.GetProfileId()

	// Audience.
	if expr := c.GetAudience(); expr != "" {
		prg, err := s.exprs.compile(false, expr)
		if err != nil {
			return false, fmt.Errorf("campaign %s audience: %w", c.GetId(), err)
		}
		ok, evalErr := eval(ctx, prg, map[string]any{"profile": p})
		step := &decisionv1.Step{Name: "audience", Result: "pass", Inputs: map[string]string{
			"expression": expr, "profile_id": p.GetProfileId(), "stage": p.GetStage(),
			"engagement_score": strconv.Itoa(int(p.GetEngagementScore())), "churn_risk": strconv.FormatFloat(p.GetChurnRisk(), 'g', 4, 64),
		}}
		if evalErr != nil {
			step.Inputs["error"] = evalErr.Error()
		}
		d.Steps = append(d.Steps, step)
		if !ok {
			step.Result = "fail"
			it.save(w, decisionv1.Outcome_OUTCOME_SKIPPED_AUDIENCE, false)
			return false, nil
		}
	} else {
		d.Steps = append(d.Steps, &decisionv1.Step{Name: "audience", Result: "pass", Inputs: map[string]string{"expression": ""}})
	}

	// Consent, per variant: variants on a channel or topic the user left
	// are not candidates.
	consentStep := &decisionv1.Step{Name: "consent", Inputs: map[string]string{}}
	d.Steps = append(d.Steps, consentStep)
	var candidates []banditVariant
	byID := map[string]*campaignv1.Variant{}
	for _, v := range c.GetVariants() {
		ch := channelNames[v.GetChannel()]
		st := consentOf(it.in.unsubscribed, ch, v.GetTopic())
		key := "variant " + v.GetId() + " (" + ch + "/" + v.GetTopic() + ")"
		switch {
		case st.channelUnsubscribed:
			consentStep.Inputs[key] = "unsubscribed from channel"
		case st.topicUnsubscribed:
			consentStep.Inputs[key] = "unsubscribed from topic"
		default:
			consentStep.Inputs[key] = "subscribed"
			candidates = append(candidates, banditVariant{ID: v.GetId(), Weight: v.GetWeight()})
			byID[v.GetId()] = v
		}
	}
	if len(candidates) == 0 {
		consentStep.Result = "unsubscribed"
		it.save(w, decisionv1.Outcome_OUTCOME_SKIPPED_CONSENT, false)
		return false, nil
	}
	consentStep.Result = "pass"

	// Variant, or the holdout.
	choice, err := s.bandit.Choose(ctx, banditCampaign{
		WorkspaceID: d.WorkspaceId, CampaignID: c.GetId(), Variants: candidates, HoldoutShare: c.GetHoldoutShare(),
	}, rng)
	if err != nil {
		return false, fmt.Errorf("choose variant: %w", err)
	}
	variantStep := &decisionv1.Step{Name: "variant", Inputs: map[string]string{"holdout_share": strconv.FormatFloat(c.GetHoldoutShare(), 'g', 4, 64)}}
	for _, sc := range choice.Scores {
		variantStep.Inputs["variant "+sc.VariantID] = fmt.Sprintf("alpha=%.4g beta=%.4g sample=%.4g", sc.Alpha, sc.Beta, sc.Sample)
	}
	d.Steps = append(d.Steps, variantStep)
	if choice.Holdout {
		variantStep.Result = "holdout"
		// A held-out user's conversions still count (goal fields set),
		// which is what measuring lift needs; the bandit is not rewarded.
		it.save(w, decisionv1.Outcome_OUTCOME_HOLDOUT, true)
		return false, nil
	}
	v, ok := byID[choice.VariantID]
	if !ok {
		return false, fmt.Errorf("bandit chose variant %q, not a candidate", choice.VariantID)
	}
	variantStep.Result = "variant " + v.GetId()
	d.VariantId, d.Channel, d.ContentRef, d.Topic = v.GetId(), v.GetChannel(), v.GetContentRef(), v.GetTopic()

	it.variant = v
	it.tz = p.GetTraits().GetFields()["timezone"].GetStringValue()
	return true, nil
}

// sendTimes runs the send-time step of the items (one Redis round trip for
// those whose campaigns optimize it) and makes their contact requests.
func (s *Service) sendTimes(ctx context.Context, items []*evalItem) error {
	var (
		qs  []sendtime.Query
		opt []*evalItem
	)
	for _, it := range items {
		if it.c.GetOptimizeSendTime() {
			d := it.d
			qs = append(qs, sendtime.Query{WorkspaceID: d.WorkspaceId, UserID: d.UserId, Now: d.DecideTime.AsTime(), MaxDelay: it.c.GetMaxSendDelay().AsDuration(), Timezone: it.tz})
			opt = append(opt, it)
		}
	}
	picks, err := s.sendTime.BestBatch(ctx, qs)
	if err != nil {
		return fmt.Errorf("send time: %w", err)
	}
	pickOf := make(map[*evalItem]sendPick, len(opt))
	for i, it := range opt {
		pickOf[it] = picks[i]
	}
	for _, it := range items {
		c, d, tz := it.c, it.d, it.tz
		sendAt := d.DecideTime.AsTime()
		if pick, ok := pickOf[it]; ok {
			sendAt = pick.At
			hist := make([]string, len(pick.Histogram))
			for i, n := range pick.Histogram {
				hist[i] = strconv.Itoa(n)
			}
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "send_time", Result: pick.At.UTC().Format(time.RFC3339), Inputs: map[string]string{
				"hour": strconv.Itoa(pick.Hour), "reason": pick.Reason, "histogram": strings.Join(hist, ","),
				"max_delay": c.GetMaxSendDelay().AsDuration().String(), "timezone": tz,
			}})
		} else {
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "send_time", Result: "now", Inputs: map[string]string{"optimize_send_time": "false"}})
		}
		// Contact policy: reserved for the whole batch by evaluateAll.
		v := it.variant
		it.sendAt = sendAt
		it.req = &contactRequest{
			WorkspaceID: d.WorkspaceId, UserID: d.UserId, CampaignID: c.GetId(), DecisionID: d.DecisionId,
			Channel: channelNames[v.GetChannel()], Priority: int(c.GetPriority()), Transactional: c.GetTransactional(),
			Timezone: tz, SendAt: sendAt,
		}
	}
	return nil
}

// applyVerdict finishes a decision with the contact policy's verdict and
// reports whether it holds a reservation.
func (s *Service) applyVerdict(it *evalItem, verdict contactVerdict, w *writes) bool {
	d, req := it.d, it.req
	for _, st := range verdict.Steps {
		d.Steps = append(d.Steps, &decisionv1.Step{Name: "policy." + st.Name, Result: st.Result, Inputs: st.Inputs})
	}
	policyStep := &decisionv1.Step{Name: "policy", Result: "allowed", Inputs: map[string]string{
		"channel": req.Channel, "priority": strconv.Itoa(req.Priority), "transactional": strconv.FormatBool(req.Transactional),
		"timezone": req.Timezone, "proposed_send_time": it.sendAt.UTC().Format(time.RFC3339), "rule": verdict.Rule,
	}}
	d.Steps = append(d.Steps, policyStep)
	if !verdict.Allowed {
		policyStep.Result = "capped"
		d.VariantId, d.Channel, d.ContentRef, d.Topic = "", campaignv1.Channel_CHANNEL_UNSPECIFIED, "", ""
		it.save(w, decisionv1.Outcome_OUTCOME_CAPPED, false)
		return false
	}
	// An allowed verdict names a rule only when the rule deferred it (quiet
	// hours). Its SendAt is the time to use either way: the policy counts
	// the message at that time.
	outcome := decisionv1.Outcome_OUTCOME_SEND
	if verdict.Rule != "" {
		outcome = decisionv1.Outcome_OUTCOME_DEFERRED
		policyStep.Result = "deferred"
	}
	sendAt := it.sendAt
	if !verdict.SendAt.IsZero() {
		sendAt = verdict.SendAt
	}
	d.SendTime = timestamppb.New(sendAt)
	w.exposures = append(w.exposures, bandit.Exposure{WorkspaceID: d.WorkspaceId, CampaignID: it.c.GetId(), VariantID: it.variant.GetId(), DecisionID: d.DecisionId})
	it.save(w, outcome, true)
	return true
}

// evaluate runs the steps of one decision whose row a wait held (a wait
// that ends), reading its user first, and saves it. The contact
// reservation it returns (nil when none; also on error) must be released
// if tx does not commit.
func (s *Service) evaluate(ctx context.Context, tx pgx.Tx, c *campaignv1.Campaign, d *decisionv1.Decision, rng *rand.Rand) (*contactRequest, error) {
	var channels []string
	for _, v := range c.GetVariants() {
		channels = append(channels, channelNames[v.GetChannel()])
	}
	it := &evalItem{c: c, d: d}
	var err error
	if it.in.profile, err = s.store.snapshot(ctx, tx, d.WorkspaceId, d.UserId); err != nil {
		return nil, err
	}
	if it.in.unsubscribed, err = s.store.consent(ctx, tx, d.WorkspaceId, d.UserId, channels); err != nil {
		return nil, err
	}
	w := writes{ending: true}
	held, err := s.evaluateAll(ctx, []*evalItem{it}, rng, &w)
	var r *contactRequest
	if len(held) > 0 {
		r = held[0]
	}
	if err != nil {
		return r, err
	}
	_, err = w.write(ctx, tx) // a wait's row exists: nothing to lose
	return r, err
}

// release undoes a contact reservation whose decision did not persist, so
// a retry does not count the message twice.
func (s *Service) release(ctx context.Context, r *contactRequest) {
	if r == nil {
		return
	}
	if err := s.policy.Release(context.WithoutCancel(ctx), *r); err != nil {
		s.logger.WarnContext(ctx, "release a contact reservation; the user's caps count one message too many", "err", err, "decision_id", r.DecisionID)
	}
}

// endWaits ends, inside tx, the waits it locked: those whose awaited event
// came or that timed out without it are decided now (their audience,
// consent and contact policy checked at this moment); those ended by an
// exit event, a timeout of wait_for_event or a campaign no longer active
// are exited. It returns the final decisions and the reservations to
// release if tx does not commit.
func (s *Service) endWaits(ctx context.Context, tx pgx.Tx, waits []pendingWait, event string, rng *rand.Rand) ([]*decisionv1.Decision, []*contactRequest, error) {
	var (
		out  []*decisionv1.Decision
		held []*contactRequest
	)
	for _, w := range waits {
		d := w.decision
		d.DecideTime = timestamppb.New(s.now())
		exit := func(why string) error {
			d.Outcome = decisionv1.Outcome_OUTCOME_EXITED
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "wait", Result: "exited", Inputs: map[string]string{"reason": why, "event": event}})
			return s.store.saveDecision(ctx, tx, d, "", time.Time{})
		}
		c, err := s.store.getCampaign(ctx, tx, d.WorkspaceId, d.CampaignId, d.CampaignVersion)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, held, err
		}
		switch {
		case err != nil || c.GetStatus() != campaignv1.CampaignStatus_CAMPAIGN_STATUS_ACTIVE:
			err = exit("campaign not active")
		case event != "" && w.waitFor == event:
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "wait", Result: "event arrived", Inputs: map[string]string{"event": event}})
			var r *contactRequest
			r, err = s.evaluate(ctx, tx, c, d, rng)
			if r != nil {
				held = append(held, r)
			}
		case event != "":
			err = exit("exit event")
		case w.waitFor != "":
			err = exit("timed out waiting for " + w.waitFor)
		default:
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "wait", Result: "delay elapsed", Inputs: map[string]string{"due": w.due.UTC().Format(time.RFC3339)}})
			var r *contactRequest
			r, err = s.evaluate(ctx, tx, c, d, rng)
			if r != nil {
				held = append(held, r)
			}
		}
		if err != nil {
			return nil, held, err
		}
		if err := s.store.deleteWait(ctx, tx, d.WorkspaceId, d.DecisionId); err != nil {
			return nil, held, err
		}
		out = append(out, d)
	}
	return out, held, nil
}

// fireDue ends up to limit waits that are due, in one transaction, and
// publishes their decisions; it returns how many it ended.
func (s *Service) fireDue(ctx context.Context, rng *rand.Rand, limit int) (int, error) {
	tx, err := s.store.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(ctx)
	waits, err := s.store.lockWaits(ctx, tx, "", "", "", s.now(), limit)
	if err != nil || len(waits) == 0 {
		return 0, err
	}
	ds, held, err := s.endWaits(ctx, tx, waits, "", rng)
	if err == nil {
		err = tx.Commit(ctx)
	}
	if err != nil {
		for _, r := range held {
			s.release(ctx, r)
		}
		return 0, err
	}
	s.finished(ds)
	if _, err := s.publish(ds); err != nil {
		// Committed: the outbox sweeper publishes them.
		s.logger.WarnContext(ctx, "publish decisions; the outbox sweeper will", "err", err)
	}
	return len(ds), nil
}

// finished counts decisions that ended waits.
func (s *Service) finished(ds []*decisionv1.Decision) {
	for _, d := range ds {
		s.metrics.decided(d)
		s.metrics.waits.WithLabelValues("ended").Inc()
	}
}

func outcomeName(o decisionv1.Outcome) string {
	if o == decisionv1.Outcome_OUTCOME_WAITING {
		return outcomeWaiting
	}
	return strings.ToLower(strings.TrimPrefix(o.String(), "OUTCOME_"))
}
