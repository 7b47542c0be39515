package deliver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/tracing"
	"github.com/whisperhq/whisper/services/deliver/channel"
)

// ErrNoProfile is what Profiles returns (wrapped) for a user without one.
var ErrNoProfile = errors.New("no profile")

// Service delivers decisions.
type Service struct {
	o       Options
	pool    *pgxpool.Pool
	client  *kgo.Client
	metrics *metrics
	lag     *kafka.ConsumerLag
	logger  *slog.Logger
	limiter *limiter
	hub     *hub

	wake      chan struct{} // wakes the scheduler after new rows
	relayWake chan struct{}
	sem       chan struct{} // global send concurrency

	mu     sync.Mutex
	wsSems map[string]chan struct{}
}

// New returns the service; Run starts it.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.BaseBackoff, DefaultBaseBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	def(&o.ClaimLease, DefaultClaimLease)
	def(&o.PollInterval, DefaultPollInterval)
	def(&o.InboxPoll, DefaultInboxPoll)
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.WorkspaceConcurrency <= 0 {
		o.WorkspaceConcurrency = DefaultWorkspaceConcurrency
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	lag, err := kafka.NewConsumerLag(o.Registerer)
	if err != nil {
		panic(err) // a conflicting collector of that name: as newMetrics's MustRegister
	}
	s := &Service{
		o: o, pool: o.Pool, client: o.Client, metrics: newMetrics(o.Registerer), lag: lag, logger: o.Logger,
		hub: newHub(), wake: make(chan struct{}, 1), relayWake: make(chan struct{}, 1),
		sem: make(chan struct{}, o.Concurrency), wsSems: map[string]chan struct{}{},
	}
	if o.Redis != nil {
		s.limiter = &limiter{rdb: o.Redis, rates: o.Rates, prefix: RateLimitPrefix}
	}
	return s
}

// Run consumes decisions, schedules and sends them, and relays outcome
// events until ctx ends. Sends in flight when ctx ends finish and are
// recorded before Run returns.
func (s *Service) Run(ctx context.Context) error {
	if s.pool == nil || s.client == nil || s.o.Renderer == nil || s.o.Profiles == nil {
		return errors.New("deliver: Pool, Client, Renderer and Profiles are required")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.scheduleLoop(ctx) })
	wg.Go(func() { s.relayLoop(ctx) })
	for {
		fetches := s.client.PollRecords(ctx, maxPollRecords)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			s.client.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			s.logger.WarnContext(ctx, "fetch", "topic", topic, "partition", p, "err", err)
		})
		recs := fetches.Records()
		if len(recs) > 0 {
			if err := s.record(ctx, recs); err != nil {
				s.client.AllowRebalance()
				return nil // only when ctx ended: nothing of it is committed
			}
			fetches.EachPartition(func(p kgo.FetchTopicPartition) { s.lag.Observe(DefaultGroup, p) })
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := s.client.CommitRecords(cctx, recs...); err != nil {
				s.logger.WarnContext(ctx, "commit offsets; the records will be recorded again, harmlessly", "err", err)
			}
			cancel()
			poke(s.wake)
		}
		s.client.AllowRebalance()
	}
}

func poke(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// record writes a ledger row for every decision of recs that sends,
// retrying until it succeeds or ctx ends.
func (s *Service) record(ctx context.Context, recs []*kgo.Record) (err error) {
	ctx, spans := tracing.StartProcess(ctx, s.o.TracerProvider, DefaultGroup, recs)
	defer func() { spans.End(err) }()
	type row struct {
		d           *decisionv1.Decision
		raw         []byte
		traceparent string
	}
	var rows []row
	var dead []*kgo.Record
	deadLetter := func(r *kgo.Record, reason string) {
		s.logger.WarnContext(ctx, "a whisper.decisions record deliver cannot use; dead-lettered", "offset", r.Offset, "partition", r.Partition, "reason", reason)
		s.metrics.invalid.Inc()
		dead = append(dead, &kgo.Record{Topic: kafka.TopicDecisionsDLQ, Key: r.Key, Value: r.Value, Headers: append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(reason)}, kgo.RecordHeader{Key: HeaderDLQSource, Value: []byte(kafka.TopicDecisions)})})
	}
	for _, r := range recs {
		d := &decisionv1.Decision{}
		if err := proto.Unmarshal(r.Value, d); err != nil {
			deadLetter(r, "not a whisper.decision.v1.Decision: "+err.Error())
			continue
		}
		if o := d.GetOutcome(); o != decisionv1.Outcome_OUTCOME_SEND && o != decisionv1.Outcome_OUTCOME_DEFERRED {
			continue
		}
		if d.GetDecisionId() == "" || len(d.GetDecisionId()) > 512 {
			deadLetter(r, "decision_id: must be 1-512 bytes")
			continue
		}
		if _, err := uuid.Parse(d.GetWorkspaceId()); err != nil {
			deadLetter(r, "workspace_id: not a valid id")
			continue
		}
		var tp string
		for _, h := range r.Headers {
			if h.Key == "traceparent" {
				tp = string(h.Value)
			}
		}
		rows = append(rows, row{d, r.Value, tp})
	}
	backoff := 100 * time.Millisecond
	for len(dead) > 0 {
		err := s.client.ProduceSync(ctx, dead...).FirstErr()
		if err == nil {
			break
		}
		s.logger.WarnContext(ctx, "dead-letter decisions; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	if len(rows) == 0 {
		return nil
	}
	backoff = 100 * time.Millisecond
	for {
		b := &pgx.Batch{}
		now := s.o.Now()
		for _, r := range rows {
			d := r.d
			at := d.GetSendTime().AsTime()
			if d.GetSendTime() == nil {
				at = now
			}
			b.Queue(`INSERT INTO deliver_deliveries (delivery_id, workspace_id, campaign_id, variant_id, user_id, channel,
				content_ref, topic, decision, traceparent, state, send_time, next_attempt_at)
				VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,'scheduled',$11,$11) ON CONFLICT (delivery_id) DO NOTHING`,
				d.GetDecisionId(), d.GetWorkspaceId(), d.GetCampaignId(), d.GetVariantId(), d.GetUserId(), int16(d.GetChannel()),
				d.GetContentRef(), d.GetTopic(), r.raw, r.traceparent, at)
		}
		err := s.pool.SendBatch(ctx, b).Close()
		if err == nil {
			return nil
		}
		s.logger.WarnContext(ctx, "record decisions; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// claimed is a ledger row claimed for sending.
type claimed struct {
	id, ws, campaign, variant, user, contentRef, topic, traceparent string
	channel                                                         campaignv1.Channel
	decision                                                        []byte
	attempt                                                         int
	token                                                           uuid.UUID
	sendTime                                                        time.Time
	// claimedAt is when the lease started (by this process's clock).
	claimedAt time.Time
}

func (s *Service) scheduleLoop(ctx context.Context) {
	var inflight sync.WaitGroup
	defer inflight.Wait()
	t := time.NewTicker(s.o.PollInterval)
	defer t.Stop()
	gauges := time.NewTicker(5 * time.Second)
	defer gauges.Stop()
	for {
		// Claim while there are due rows and free send slots; a send
		// that ends pokes wake, so a backlog larger than the slots drains
		// at the senders' pace, not the poll interval's.
		for ctx.Err() == nil {
			more, err := s.claimAndSend(ctx, &inflight)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.WarnContext(ctx, "claim due deliveries", "err", err)
				}
				break
			}
			if !more {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		case <-gauges.C:
			s.updateGauges(ctx)
		}
	}
}

// claimAndSend claims up to as many due rows as there are free send slots
// and starts their sends. more says that it claimed all it asked for, so
// more rows may be due.
func (s *Service) claimAndSend(ctx context.Context, inflight *sync.WaitGroup) (more bool, err error) {
	free := cap(s.sem) - len(s.sem)
	if free <= 0 {
		return false, nil // a send that ends wakes the loop
	}
	limit := min(free, claimBatch)
	token := uuid.New()
	now := s.o.Now()
	rows, err := s.pool.Query(ctx, `UPDATE deliver_deliveries d SET state = 'sending', claim_token = $1,
			claimed_until = $2, attempts = d.attempts + 1, update_time = $3
		WHERE d.delivery_id IN (SELECT delivery_id FROM deliver_deliveries
			WHERE next_attempt_at <= $3 AND state IN ('scheduled', 'retrying', 'sending')
				AND (state <> 'sending' OR claimed_until < $3)
			ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
		RETURNING delivery_id, workspace_id::text, campaign_id, variant_id, user_id, channel, content_ref, topic, decision,
			traceparent, attempts, send_time`,
		token, now.Add(s.o.ClaimLease), now, limit)
	if err != nil {
		return false, err
	}
	var cs []claimed
	for rows.Next() {
		c := claimed{token: token, claimedAt: time.Now()}
		var ch int16
		if err := rows.Scan(&c.id, &c.ws, &c.campaign, &c.variant, &c.user, &ch, &c.contentRef, &c.topic, &c.decision,
			&c.traceparent, &c.attempt, &c.sendTime); err != nil {
			rows.Close()
			return false, err
		}
		c.channel = campaignv1.Channel(ch)
		cs = append(cs, c)
	}
	if err := rows.Err(); err != nil {
		return false, err
	}
	for _, c := range cs {
		s.sem <- struct{}{}
		inflight.Go(func() {
			defer func() {
				<-s.sem
				poke(s.wake)
			}()
			// A stop must not cut a send short between the provider and the
			// ledger: the send runs detached from Run's ctx, within the
			// claim lease (deliver bounds the attempt and the record).
			s.deliver(context.WithoutCancel(ctx), c)
		})
	}
	return len(cs) == limit, nil
}

func (s *Service) wsSem(ws string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.wsSems[ws]
	if c == nil {
		c = make(chan struct{}, s.o.WorkspaceConcurrency)
		s.wsSems[ws] = c
	}
	return c
}

// result is how one attempt ended.
type result struct {
	state    string // sent, retrying, failed, skipped
	attempt  string // sent, retryable, failed, bounced, skipped
	reason   string
	code     string
	to       string
	receipt  string
	retryAt  time.Time
	event    string // outcome event name, "" for none
	dlq      bool
	inbox    *contentv1.Content
	channelS string
}

func (s *Service) deliver(ctx context.Context, c claimed) {
	if c.traceparent != "" {
		ctx = tracing.ContextFromRecord(ctx, &kgo.Record{Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(c.traceparent)}}})
	}
	var span trace.Span
	if s.o.TracerProvider != nil {
		ctx, span = s.o.TracerProvider.Tracer("github.com/whisperhq/whisper/services/deliver").Start(ctx, "deliver "+channelName(c.channel))
		defer span.End()
		// The outcome's records continue from this span, not from the
		// decision record's producer.
		r := &kgo.Record{}
		tracing.InjectRecords(ctx, r)
		for _, h := range r.Headers {
			if h.Key == "traceparent" {
				c.traceparent = string(h.Value)
			}
		}
	}
	start := s.o.Now()
	// The attempt (rate-limit wait, render, provider call) must end well
	// inside the lease so its outcome is recorded before another replica
	// may take the claim over; the record gets the rest of the lease.
	// (Measured from the claim: waiting for the workspace's semaphore
	// uses up the lease too.)
	actx, cancel := context.WithDeadline(ctx, c.claimedAt.Add(s.o.ClaimLease*3/4))
	var res result
	sem := s.wsSem(c.ws)
	select {
	case sem <- struct{}{}:
		res = s.attempt(actx, c)
		<-sem
	case <-actx.Done():
		res = s.retry(c, errors.New("the workspace's concurrency limit was reached for the whole claim"), "wait")
	}
	cancel()
	res.channelS = channelName(c.channel)
	fctx, cancel := context.WithDeadline(ctx, c.claimedAt.Add(s.o.ClaimLease))
	defer cancel()
	if err := s.finish(fctx, c, start, res); err != nil {
		s.logger.ErrorContext(ctx, "record a delivery outcome; the claim will expire and the send be tried again", "delivery_id", c.id, "err", err)
		return
	}
	s.metrics.observe(res.channelS, res, c.sendTime)
	poke(s.relayWake)
}

// attempt renders and sends one claimed delivery.
func (s *Service) attempt(ctx context.Context, c claimed) result {
	d := &decisionv1.Decision{}
	if err := proto.Unmarshal(c.decision, d); err != nil {
		return result{state: "failed", attempt: "failed", reason: "undecodable decision: " + err.Error(), event: EventFailed}
	}
	p, err := s.o.Profiles.Profile(ctx, c.ws, c.user)
	noProfile := errors.Is(err, ErrNoProfile)
	switch {
	case noProfile:
		// The trigger event may be decided on before profiles has applied
		// it. In-app and webhook messages need no recipient from the
		// profile, so they render with the user id alone.
		p = &profilev1.Profile{UserId: c.user}
	case err != nil:
		return s.retry(c, err, "read profile")
	}
	req := &contentv1.RenderRequest{WorkspaceId: c.ws, TemplateId: c.contentRef, User: &contentv1.RenderRequest_Profile{Profile: p},
		Campaign: &contentv1.Campaign{Id: c.campaign}}
	if props := d.GetTriggerProperties(); len(props) > 0 {
		st := &structpb.Struct{}
		if err := st.UnmarshalJSON(props); err == nil {
			req.EventProperties = st
		}
	}
	msg, err := s.o.Renderer.Render(ctx, req)
	if err != nil {
		return s.retry(c, err, "render")
	}
	if c.channel == campaignv1.Channel_CHANNEL_IN_APP {
		return result{state: "sent", attempt: "sent", inbox: msg.GetContent(), event: EventDelivered}
	}
	to := recipient(c.channel, p.GetTraits(), msg.GetContent())
	if to == "" {
		reason := "no recipient: the profile has no " + recipientTrait(c.channel)
		if noProfile {
			reason = "no recipient: the user has no profile"
		}
		return result{state: "skipped", attempt: "skipped", reason: reason}
	}
	sender := s.o.Senders[c.channel]
	if sender == nil {
		return result{state: "failed", attempt: "failed", to: to, reason: "no sender configured for " + channelName(c.channel), event: EventFailed}
	}
	if s.limiter != nil {
		waited, err := s.limiter.wait(ctx, c.channel)
		s.metrics.rateWait.WithLabelValues(channelName(c.channel)).Observe(waited.Seconds())
		if err != nil {
			return s.retry(c, err, "rate limit")
		}
	}
	m := channel.Message{DeliveryID: c.id, WorkspaceID: c.ws, UserID: c.user, To: to, Content: msg}
	if c.channel == campaignv1.Channel_CHANNEL_EMAIL && s.o.Tracking != nil {
		m.UnsubscribeURL = s.o.Tracking.UnsubscribeURL(c.ws, c.id, c.user, channelName(c.channel), c.topic)
		if html := msg.GetContent().GetHtml(); html != "" {
			// An email whose links cannot be rewritten is still worth
			// sending: it goes untracked rather than not at all.
			if tracked, err := s.o.Tracking.RewriteHTML(html, c.ws, c.id, c.user); err != nil {
				s.logger.WarnContext(ctx, "rewrite email links for tracking; sent untracked", "delivery_id", c.id, "err", err)
			} else {
				m.Content = proto.CloneOf(msg)
				m.Content.Content.Html = tracked
			}
		}
	}
	t0 := time.Now()
	rc, err := sender.Send(ctx, m)
	s.metrics.latency.WithLabelValues(channelName(c.channel)).Observe(time.Since(t0).Seconds())
	if err == nil {
		return result{state: "sent", attempt: "sent", to: to, receipt: rc.ProviderMessageID, event: EventDelivered}
	}
	var pe *channel.Error
	code := ""
	if errors.As(err, &pe) {
		code = pe.Code
	}
	if channel.Retryable(err) {
		r := s.retry(c, err, "send")
		r.to, r.code = to, code
		return r
	}
	if pe != nil && pe.Bounce {
		return result{state: "failed", attempt: "bounced", to: to, code: code, reason: "bounced: " + err.Error(), event: EventBounced}
	}
	return result{state: "failed", attempt: "failed", to: to, code: code, reason: err.Error(), event: EventFailed}
}

// retry is the result of a retryable failure: retrying after a backoff,
// or failed and dead-lettered when the attempts are spent.
func (s *Service) retry(c claimed, err error, what string) result {
	reason := what + ": " + err.Error()
	if c.attempt >= s.o.MaxAttempts {
		return result{state: "failed", attempt: "retryable", reason: fmt.Sprintf("retries exhausted after %d attempts: %s", c.attempt, reason),
			event: EventFailed, dlq: true}
	}
	wait := backoff(c.attempt, s.o.BaseBackoff, s.o.MaxBackoff)
	var pe *channel.Error
	if errors.As(err, &pe) && pe.RetryAfter > wait {
		wait = pe.RetryAfter
	}
	return result{state: "retrying", attempt: "retryable", reason: reason, retryAt: s.o.Now().Add(wait)}
}

// backoff is full jitter: a uniform wait in [0, min(max, base·2^(n-1))].
func backoff(n int, base, max time.Duration) time.Duration {
	ceil := base
	for i := 1; i < n && ceil < max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, max)
	return time.Duration(rand.Int64N(int64(ceil) + 1))
}

// finish records an attempt's result if the claim is still ours, with
// its outcome event, DLQ copy and inbox row, atomically. The common case
// (no inbox row, no DLQ copy) is one statement, one round trip.
func (s *Service) finish(ctx context.Context, c claimed, start time.Time, r result) error {
	if r.inbox != nil || r.dlq {
		return s.finishTx(ctx, c, start, r)
	}
	now := s.o.Now()
	next := now
	if r.state == "retrying" {
		next = r.retryAt
	}
	var event []byte
	if r.event != "" {
		var err error
		if event, err = eventValue(c.ws, c.user, c.id+":"+eventSuffix(r.event), r.event, outcomeProps(c, r), now); err != nil {
			return err
		}
	}
	var n int
	err := s.pool.QueryRow(ctx, `WITH upd AS (
			UPDATE deliver_deliveries SET state = $3, reason = $4, recipient = $5, provider_message_id = $6, next_attempt_at = $7,
				claim_token = NULL, claimed_until = NULL, update_time = $8
			WHERE delivery_id = $1 AND claim_token = $2 AND state = 'sending' RETURNING delivery_id),
		att AS (INSERT INTO deliver_attempts (delivery_id, number, start_time, end_time, result, code, error)
			SELECT delivery_id, $9, $10, $8, $11, $12, $4 FROM upd ON CONFLICT DO NOTHING),
		ob AS (INSERT INTO deliver_outbox (topic, key, value, traceparent)
			SELECT $13, $14, $15, $16 FROM upd WHERE $15::bytea IS NOT NULL)
		SELECT count(*) FROM upd`,
		c.id, c.token, r.state, r.reason, r.to, r.receipt, next, now, c.attempt, start, r.attempt, r.code,
		kafka.TopicEvents, kafka.Key(c.ws, c.user), event, c.traceparent).Scan(&n)
	if err != nil {
		return fmt.Errorf("record outcome: %w", err)
	}
	if n == 0 {
		// Our lease expired and another replica claimed it: its record wins.
		s.logger.WarnContext(ctx, "a delivery's claim expired before its outcome was recorded", "delivery_id", c.id)
	}
	return nil
}

func outcomeProps(c claimed, r result) map[string]any {
	props := map[string]any{"delivery_id": c.id, "decision_id": c.id, "campaign_id": c.campaign, "variant_id": c.variant,
		"channel": channelName(c.channel), "topic": c.topic}
	if r.reason != "" {
		props["reason"] = r.reason
	}
	if r.code != "" {
		props["code"] = r.code
	}
	return props
}

// finishTx is finish for outcomes with an inbox row or a DLQ copy: the
// rare path, in an explicit transaction.
func (s *Service) finishTx(ctx context.Context, c claimed, start time.Time, r result) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		now := s.o.Now()
		next := now
		if r.state == "retrying" {
			next = r.retryAt
		}
		tag, err := tx.Exec(ctx, `UPDATE deliver_deliveries SET state = $3, reason = $4, recipient = $5,
				provider_message_id = $6, next_attempt_at = $7, claim_token = NULL, claimed_until = NULL, update_time = $8
			WHERE delivery_id = $1 AND claim_token = $2 AND state = 'sending'`,
			c.id, c.token, r.state, r.reason, r.to, r.receipt, next, now)
		if err != nil {
			return fmt.Errorf("update delivery: %w", err)
		}
		if tag.RowsAffected() == 0 {
			// Our lease expired and another replica claimed it: its record wins.
			s.logger.WarnContext(ctx, "a delivery's claim expired before its outcome was recorded", "delivery_id", c.id)
			return nil
		}
		if _, err := tx.Exec(ctx, `INSERT INTO deliver_attempts (delivery_id, number, start_time, end_time, result, code, error)
			VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT DO NOTHING`, c.id, c.attempt, start, now, r.attempt, r.code, r.reason); err != nil {
			return fmt.Errorf("insert attempt: %w", err)
		}
		if r.inbox != nil {
			b, err := proto.Marshal(r.inbox)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO deliver_inbox (delivery_id, workspace_id, user_id, campaign_id, content, create_time)
				VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING`, c.id, c.ws, c.user, c.campaign, b, now); err != nil {
				return fmt.Errorf("insert inbox: %w", err)
			}
		}
		if r.event != "" {
			if err := s.queueEvent(ctx, tx, c.ws, c.user, c.id+":"+eventSuffix(r.event), r.event, outcomeProps(c, r), now, c.traceparent); err != nil {
				return err
			}
		}
		if r.dlq {
			h, _ := json.Marshal(map[string]string{HeaderDLQReason: r.reason, HeaderDLQSource: kafka.TopicDecisions})
			if _, err := tx.Exec(ctx, `INSERT INTO deliver_outbox (topic, key, value, headers, traceparent) VALUES ($1,$2,$3,$4,$5)`,
				kafka.TopicDecisionsDLQ, kafka.Key(c.ws, c.user), c.decision, h, c.traceparent); err != nil {
				return fmt.Errorf("queue dlq: %w", err)
			}
		}
		return nil
	})
	if err == nil && r.inbox != nil {
		// Wake streams only now that the row is committed and visible.
		s.hub.publish(c.ws, c.user)
	}
	return err
}

func eventSuffix(name string) string {
	switch name {
	case EventDelivered:
		return "delivered"
	case EventFailed:
		return "failed"
	case EventBounced:
		return "bounced"
	case EventOpened:
		return "opened"
	case EventClicked:
		return "clicked"
	case EventUnsubscribed:
		return "unsubscribed"
	}
	return name
}

// eventValue is the whisper.events record value of a track event.
func eventValue(ws, user, msgID, name string, props map[string]any, at time.Time) ([]byte, error) {
	pj, err := json.Marshal(props)
	if err != nil {
		return nil, err
	}
	ev := &eventv1.Event{MessageId: msgID, WorkspaceId: ws, Type: eventv1.EventType_EVENT_TYPE_TRACK, UserId: user, Event: name,
		Properties: pj, Timestamp: timestamppb.New(at), ReceivedAt: timestamppb.New(at)}
	return proto.Marshal(ev)
}

// queueEvent writes a track event to the outbox in tx.
func (s *Service) queueEvent(ctx context.Context, tx pgx.Tx, ws, user, msgID, name string, props map[string]any, at time.Time, traceparent string) error {
	b, err := eventValue(ws, user, msgID, name, props, at)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO deliver_outbox (topic, key, value, traceparent) VALUES ($1,$2,$3,$4)`,
		kafka.TopicEvents, kafka.Key(ws, user), b, traceparent); err != nil {
		return fmt.Errorf("queue event: %w", err)
	}
	return nil
}

func (s *Service) relayLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if err := s.relay(ctx); err != nil && ctx.Err() == nil {
			s.logger.WarnContext(ctx, "relay outcome events", "err", err)
		}
		select {
		case <-ctx.Done():
			// Produce what the last sends recorded before stopping.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_ = s.relay(cctx)
			cancel()
			return
		case <-t.C:
		case <-s.relayWake:
		}
	}
}

// relay produces the outbox in id order and deletes what was acknowledged.
// An advisory lock keeps one relay at a time across replicas.
func (s *Service) relay(ctx context.Context) error {
	for {
		n, err := s.relayOnce(ctx)
		if err != nil || n < 500 {
			return err
		}
	}
}

func (s *Service) relayOnce(ctx context.Context) (int, error) {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext('whisper-deliver-outbox'))`).Scan(&locked); err != nil || !locked {
		return 0, err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext('whisper-deliver-outbox'))`) //nolint:errcheck
	rows, err := conn.Query(ctx, `SELECT id, topic, key, value, headers, traceparent FROM deliver_outbox ORDER BY id LIMIT 500`)
	if err != nil {
		return 0, err
	}
	var ids []int64
	var recs []*kgo.Record
	for rows.Next() {
		var id int64
		var topic, tp string
		var key, value []byte
		var headers map[string]string
		if err := rows.Scan(&id, &topic, &key, &value, &headers, &tp); err != nil {
			rows.Close()
			return 0, err
		}
		r := &kgo.Record{Topic: topic, Key: key, Value: value}
		for k, v := range headers {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		if tp != "" {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "traceparent", Value: []byte(tp)})
		}
		ids = append(ids, id)
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	if len(recs) == 0 {
		return 0, nil
	}
	if err := s.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return 0, fmt.Errorf("produce: %w", err)
	}
	for _, r := range recs {
		if r.Topic == kafka.TopicDecisionsDLQ {
			s.metrics.dlq.Inc()
		}
	}
	if _, err := conn.Exec(ctx, `DELETE FROM deliver_outbox WHERE id = ANY($1)`, ids); err != nil {
		return 0, err
	}
	return len(recs), nil
}

func (s *Service) updateGauges(ctx context.Context) {
	var n int64
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT count(*), min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())
		FROM deliver_deliveries WHERE state IN ('scheduled', 'retrying', 'sending')`).Scan(&n, &oldest)
	if err != nil {
		return
	}
	s.metrics.backlog.Set(float64(n))
	if oldest != nil {
		s.metrics.overdue.Set(s.o.Now().Sub(*oldest).Seconds())
	} else {
		s.metrics.overdue.Set(0)
	}
}

// Outcome is a tracked engagement with a delivered message (the tracking
// handler's opened, clicked, unsubscribed).
type Outcome struct {
	Kind                                            string // "opened", "clicked", "unsubscribed"
	WorkspaceID, DeliveryID, UserID, Channel, Topic string
	URL                                             string
	At                                              time.Time
}

// PublishOutcome publishes a tracked outcome as an event on
// whisper.events, through the outbox: "Message Opened", "Message Clicked"
// (each once per delivery: the message id is deterministic) or
// "Unsubscribed" with {channel, topic}, which decide's consent applies.
func (s *Service) PublishOutcome(ctx context.Context, o Outcome) error {
	name := map[string]string{"opened": EventOpened, "clicked": EventClicked, "unsubscribed": EventUnsubscribed}[o.Kind]
	if name == "" {
		return fmt.Errorf("unknown outcome kind %q", o.Kind)
	}
	if o.At.IsZero() {
		o.At = s.o.Now()
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var campaign string
		var ch int16
		err := tx.QueryRow(ctx, `SELECT campaign_id, channel FROM deliver_deliveries WHERE delivery_id = $1 AND workspace_id::text = $2`,
			o.DeliveryID, o.WorkspaceID).Scan(&campaign, &ch)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("delivery %s: %w", o.DeliveryID, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if o.Channel == "" {
			o.Channel = channelName(campaignv1.Channel(ch))
		}
		props := map[string]any{"delivery_id": o.DeliveryID, "decision_id": o.DeliveryID, "campaign_id": campaign,
			"channel": o.Channel, "topic": o.Topic}
		if o.URL != "" {
			props["url"] = o.URL
		}
		return s.queueEvent(ctx, tx, o.WorkspaceID, o.UserID, o.DeliveryID+":"+eventSuffix(name), name, props, o.At, "")
	})
	if err == nil {
		poke(s.relayWake)
	}
	return err
}

// ErrNotFound is returned for a delivery that does not exist.
var ErrNotFound = errors.New("not found")

var channelNames = map[campaignv1.Channel]string{
	campaignv1.Channel_CHANNEL_EMAIL: "email", campaignv1.Channel_CHANNEL_SMS: "sms", campaignv1.Channel_CHANNEL_PUSH: "push",
	campaignv1.Channel_CHANNEL_WEBHOOK: "webhook", campaignv1.Channel_CHANNEL_IN_APP: "in_app",
}

func channelName(c campaignv1.Channel) string {
	if n, ok := channelNames[c]; ok {
		return n
	}
	return "unknown"
}

func recipientTrait(c campaignv1.Channel) string {
	switch c {
	case campaignv1.Channel_CHANNEL_EMAIL:
		return "email trait"
	case campaignv1.Channel_CHANNEL_SMS:
		return "phone trait"
	case campaignv1.Channel_CHANNEL_PUSH:
		return "push_token trait"
	case campaignv1.Channel_CHANNEL_WEBHOOK:
		return "webhook url (content url or webhook_url trait)"
	}
	return "recipient"
}

// recipient finds where to send on channel c.
func recipient(c campaignv1.Channel, traits *structpb.Struct, content *contentv1.Content) string {
	str := func(k string) string { return traits.GetFields()[k].GetStringValue() }
	switch c {
	case campaignv1.Channel_CHANNEL_EMAIL:
		return str("email")
	case campaignv1.Channel_CHANNEL_SMS:
		if p := str("phone"); p != "" {
			return p
		}
		return str("phone_number")
	case campaignv1.Channel_CHANNEL_PUSH:
		if t := str("push_token"); t != "" {
			return t
		}
		if l := traits.GetFields()["device_tokens"].GetListValue().GetValues(); len(l) > 0 {
			return l[len(l)-1].GetStringValue()
		}
		return ""
	case campaignv1.Channel_CHANNEL_WEBHOOK:
		if u := content.GetUrl(); u != "" {
			return u
		}
		return str("webhook_url")
	}
	return ""
}
