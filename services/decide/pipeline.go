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
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
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
	// The contact reservation to release if tx does not commit; nil when
	// none was made.
	held *contactRequest
}

// run decides campaign c for tr inside tx, or returns the decision an
// earlier delivery of tr made.
func (s *Service) run(ctx context.Context, tx pgx.Tx, c *campaignv1.Campaign, tr trigger, rng *rand.Rand) (runResult, error) {
	now := s.now()
	d := &decisionv1.Decision{
		DecisionId: uuid.NewString(), WorkspaceId: tr.ws, CampaignId: c.GetId(), CampaignVersion: c.GetVersion(),
		UserId: tr.user, TriggerId: tr.id, DecideTime: timestamppb.New(now), Transactional: c.GetTransactional(),
		Steps: []*decisionv1.Step{tr.step}, TriggerProperties: tr.props,
	}
	var channels []string
	for _, v := range c.GetVariants() {
		channels = append(channels, channelNames[v.GetChannel()])
	}
	ok, in, err := s.store.claimAndRead(ctx, tx, d, channels)
	if err != nil {
		return runResult{}, err
	}
	if !ok {
		s.metrics.duplicates.Inc()
		d, pending, err := s.store.claimed(ctx, tx, tr.ws, c.GetId(), tr.id)
		return runResult{decision: d, publish: pending}, err
	}
	if w := c.GetWait(); w.GetDelay().AsDuration() > 0 {
		due := now.Add(w.GetDelay().AsDuration())
		d.Outcome = decisionv1.Outcome_OUTCOME_WAITING
		d.Steps = append(d.Steps, &decisionv1.Step{Name: "wait", Result: "waiting", Inputs: map[string]string{
			"delay": w.GetDelay().AsDuration().String(), "due": due.UTC().Format(time.RFC3339),
			"wait_for_event": w.GetWaitForEvent(), "exit_events": strings.Join(w.GetExitEvents(), ","),
		}})
		if err := s.store.saveDecision(ctx, tx, d, "", time.Time{}); err != nil {
			return runResult{}, err
		}
		if err := s.store.insertWait(ctx, tx, d, due, w.GetWaitForEvent(), w.GetExitEvents()); err != nil {
			return runResult{}, err
		}
		return runResult{decision: d, fresh: true, waiting: true}, nil
	}
	if tr.profile != nil {
		in.profile = tr.profile
	}
	held, err := s.evaluate(ctx, tx, c, d, &in, rng)
	if err != nil {
		return runResult{}, err
	}
	return runResult{decision: d, fresh: true, publish: true, held: held}, nil
}

// evaluate runs the steps of a decision inside tx, which holds its claim:
// audience, consent, variant, send time, contact policy. It fills d and
// saves it; the contact reservation it returns (nil when none) must be
// released if tx does not commit.
//
// The variant is chosen before the contact policy (the design lists policy
// first) because caps are per channel and the channel is the variant's.
//
// in holds what was read of the user already; nil means read it now.
func (s *Service) evaluate(ctx context.Context, tx pgx.Tx, c *campaignv1.Campaign, d *decisionv1.Decision, in *userInputs, rng *rand.Rand) (*contactRequest, error) {
	now := d.DecideTime.AsTime()
	var channels []string
	for _, v := range c.GetVariants() {
		channels = append(channels, channelNames[v.GetChannel()])
	}
	if in == nil {
		in = &userInputs{}
		var err error
		if in.profile, err = s.store.snapshot(ctx, tx, d.WorkspaceId, d.UserId); err != nil {
			return nil, err
		}
		if in.unsubscribed, err = s.store.consent(ctx, tx, d.WorkspaceId, d.UserId, channels); err != nil {
			return nil, err
		}
	}
	p := in.profile
	if p == nil {
		p = &profilev1.Profile{WorkspaceId: d.WorkspaceId, UserId: d.UserId}
	}
	d.ProfileId = p.GetProfileId()
	save := func(outcome decisionv1.Outcome, goal bool) (*contactRequest, error) {
		d.Outcome = outcome
		var (
			goalEvent string
			deadline  time.Time
		)
		if goal && c.GetGoalEvent() != "" {
			goalEvent, deadline = c.GetGoalEvent(), now.Add(c.GetAttributionWindow().AsDuration())
		}
		return nil, s.store.saveDecision(ctx, tx, d, goalEvent, deadline)
	}

	// Audience.
	if expr := c.GetAudience(); expr != "" {
		prg, err := s.exprs.compile(false, expr)
		if err != nil {
			return nil, fmt.Errorf("campaign %s audience: %w", c.GetId(), err)
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
			return save(decisionv1.Outcome_OUTCOME_SKIPPED_AUDIENCE, false)
		}
	} else {
		d.Steps = append(d.Steps, &decisionv1.Step{Name: "audience", Result: "pass", Inputs: map[string]string{"expression": ""}})
	}

	// Consent, per variant: variants on a channel or topic the user left
	// are not candidates.
	consentStep := &decisionv1.Step{Name: "consent", Inputs: map[string]string{}}
	d.Steps = append(d.Steps, consentStep)
	unsubscribed := in.unsubscribed
	var candidates []banditVariant
	byID := map[string]*campaignv1.Variant{}
	for _, v := range c.GetVariants() {
		ch := channelNames[v.GetChannel()]
		st := consentOf(unsubscribed, ch, v.GetTopic())
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
		return save(decisionv1.Outcome_OUTCOME_SKIPPED_CONSENT, false)
	}
	consentStep.Result = "pass"

	// Variant, or the holdout.
	choice, err := s.bandit.Choose(ctx, banditCampaign{
		WorkspaceID: d.WorkspaceId, CampaignID: c.GetId(), Variants: candidates, HoldoutShare: c.GetHoldoutShare(),
	}, rng)
	if err != nil {
		return nil, fmt.Errorf("choose variant: %w", err)
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
		return save(decisionv1.Outcome_OUTCOME_HOLDOUT, true)
	}
	v, ok := byID[choice.VariantID]
	if !ok {
		return nil, fmt.Errorf("bandit chose variant %q, not a candidate", choice.VariantID)
	}
	variantStep.Result = "variant " + v.GetId()
	d.VariantId, d.Channel, d.ContentRef, d.Topic = v.GetId(), v.GetChannel(), v.GetContentRef(), v.GetTopic()

	// Send time.
	tz := p.GetTraits().GetFields()["timezone"].GetStringValue()
	sendAt := now
	if c.GetOptimizeSendTime() {
		pick, err := s.sendTime.Best(ctx, d.WorkspaceId, d.UserId, now, c.GetMaxSendDelay().AsDuration(), tz)
		if err != nil {
			return nil, fmt.Errorf("send time: %w", err)
		}
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

	// Contact policy: reserves the message against the caps.
	req := contactRequest{
		WorkspaceID: d.WorkspaceId, UserID: d.UserId, CampaignID: c.GetId(), DecisionID: d.DecisionId,
		Channel: channelNames[v.GetChannel()], Priority: int(c.GetPriority()), Transactional: c.GetTransactional(),
		Timezone: tz, SendAt: sendAt,
	}
	start := time.Now()
	verdict, err := s.policy.Reserve(ctx, req)
	s.metrics.policyDuration.Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, fmt.Errorf("contact policy: %w", err)
	}
	for _, st := range verdict.Steps {
		d.Steps = append(d.Steps, &decisionv1.Step{Name: "policy." + st.Name, Result: st.Result, Inputs: st.Inputs})
	}
	policyStep := &decisionv1.Step{Name: "policy", Result: "allowed", Inputs: map[string]string{
		"channel": req.Channel, "priority": strconv.Itoa(req.Priority), "transactional": strconv.FormatBool(req.Transactional),
		"timezone": tz, "proposed_send_time": sendAt.UTC().Format(time.RFC3339), "rule": verdict.Rule,
	}}
	d.Steps = append(d.Steps, policyStep)
	if !verdict.Allowed {
		policyStep.Result = "capped"
		d.VariantId, d.Channel, d.ContentRef, d.Topic = "", campaignv1.Channel_CHANNEL_UNSPECIFIED, "", ""
		return save(decisionv1.Outcome_OUTCOME_CAPPED, false)
	}
	// An allowed verdict names a rule only when the rule deferred it (quiet
	// hours). Its SendAt is the time to use either way: the policy counts
	// the message at that time.
	outcome := decisionv1.Outcome_OUTCOME_SEND
	if verdict.Rule != "" {
		outcome = decisionv1.Outcome_OUTCOME_DEFERRED
		policyStep.Result = "deferred"
	}
	if !verdict.SendAt.IsZero() {
		sendAt = verdict.SendAt
	}
	d.SendTime = timestamppb.New(sendAt)
	if err := s.bandit.RecordExposure(ctx, tx, d.WorkspaceId, c.GetId(), v.GetId(), d.DecisionId); err != nil {
		s.release(ctx, &req)
		return nil, fmt.Errorf("record exposure: %w", err)
	}
	if _, err := save(outcome, true); err != nil {
		s.release(ctx, &req)
		return nil, err
	}
	return &req, nil
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
			r, err = s.evaluate(ctx, tx, c, d, nil, rng)
			held = append(held, r)
		case event != "":
			err = exit("exit event")
		case w.waitFor != "":
			err = exit("timed out waiting for " + w.waitFor)
		default:
			d.Steps = append(d.Steps, &decisionv1.Step{Name: "wait", Result: "delay elapsed", Inputs: map[string]string{"due": w.due.UTC().Format(time.RFC3339)}})
			var r *contactRequest
			r, err = s.evaluate(ctx, tx, c, d, nil, rng)
			held = append(held, r)
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
	return len(ds), s.publish(ctx, ds)
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
