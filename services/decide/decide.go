// Package decide is the decide target: it turns events and profile changes
// into decisions (whom to contact, with which message variant, on which
// channel, and when) for the campaigns a workspace defines, and serves the
// Connect CampaignService and DecisionService.
//
// # Pipeline
//
// One consumer group reads whisper.events and whisper.profiles. For each
// active campaign a record triggers (a track event of the trigger's name
// whose condition holds, or a profile change of the trigger's kind), the
// steps are: audience (CEL over the user's profile: the one a profile change
// carries, else the latest snapshot this package keeps from
// whisper.profiles) -> consent -> variant (the bandit subpackage's Thompson
// sampling, or the holdout, which is recorded but never messaged) -> send
// time (the sendtime subpackage, when the campaign optimizes it) -> contact
// policy (the contact subpackage: cross-campaign caps in Redis, minimum gap,
// quiet hours, priority; it reserves the message atomically) -> a decision
// row in PostgreSQL -> a record on whisper.decisions. The variant comes
// before the contact policy because caps are per channel and the channel is
// the variant's. Every step is recorded with its inputs in the decision.
//
// Consent comes from track events named "Unsubscribed" and "Subscribed"
// with properties {"channel": ..., "topic": ...}; an empty topic is the
// whole channel; the latest event time wins. Unsubscribed users are never
// contacted, transactional campaigns included.
//
// # Guarantees
//
// A trigger yields at most one decision per campaign: the decision row is
// inserted under the unique key (workspace, campaign, trigger id), once,
// final (a wait's row is inserted 'waiting' and updated when the wait
// ends), so a redelivered event, a replayed change or a repeated Decide
// request id finds the decision and changes nothing. Two transactions
// deciding one trigger at once (a rebalance, one request id on two
// replicas) both decide it, but only one row is inserted: the other's
// transaction is rolled back, its contact reservations released, and
// decided again, finding that decision. The consumer applies each partition's share of a
// poll in one transaction (one commit per poll, not per decision) and
// reads each workspace's campaigns once per poll, so a campaign change
// takes effect from the next poll. Within the transaction the decisions
// are made in batches (runAll): one round trip reads which triggers are
// decided already and every user, one contact policy call reserves for
// all of them, one round trip writes the decisions, their outbox rows,
// waits and bandit exposures. A record that reads or changes what a
// queued decision of its user reads or writes (consent, the profile
// snapshot, waits, conversions) decides the queue first, so the outcome
// is that of deciding the records one by one. Decide calls made together
// are coalesced into such batches too (see coalescer). Contact
// reservations are made inside the transaction and released if it does
// not commit; a process that dies in between leaves its reservations
// counted until they expire (contact keeps them 8 days).
//
// Every final decision enters a transactional outbox (the
// decision_outbox table) in the transaction that makes it. Once that
// commits, its record is handed to the producer without waiting for the
// broker (in order: a partition's records keep the order they were
// produced in), and the consumer commits its offsets; a Decide call is
// answered on the commit and its decision published right after. The
// broker's acknowledgements are deleted from the outbox in batches by one
// loop of Run, and Run waits for the outstanding ones (a while) on its
// way out. A decision still in the outbox outboxDelay after it was made
// (its produce failed, or its process died first) is published by a
// sweeper. whisper.decisions is therefore at least once: consumers
// deduplicate by decision id.
//
// Waits are rows in PostgreSQL. A scheduler loop ends those that are due
// (deciding them then, with audience, consent and policy checked again, or
// exiting those that waited in vain for their event); an exit event or the
// awaited event ends a user's waits at once. Replicas share the work with
// row locks (SKIP LOCKED).
//
// A goal event converts, per campaign, the user's latest unconverted
// decision whose attribution window holds the event's time; the bandit is
// rewarded once per decision. Held-out decisions convert too (for lift),
// without reward.
package decide

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/tracing"
	"github.com/whisperhq/whisper/services/decide/sendtime"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the schema of the decide target (the bandit subpackage has
// its own).
var Migrations = postgres.Migrations{Name: "decide", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // dir is a literal that go:embed has checked
	}
	return sub
}

// Consent event names.
const (
	EventUnsubscribed = "Unsubscribed"
	EventSubscribed   = "Subscribed"
)

const (
	// DefaultGroup is the consumer group of the decide target.
	DefaultGroup   = "whisper-decide"
	maxPollRecords = 1000
	maxBackoff     = 5 * time.Second
	waitBatch      = 100
	// outboxDelay is how old an unpublished decision must be before the
	// sweeper publishes it: long enough that its own publisher has
	// normally done so.
	outboxDelay = 30 * time.Second
	outboxBatch = 500
)

// ConsumerOpts are the kgo options of the client Run consumes with (see
// kafka.NewClient): group, topics, manual commits, rebalances held while a
// poll is processed.
func ConsumerOpts(group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(kafka.TopicEvents, kafka.TopicProfiles),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
	}
}

// Options are the dependencies of the service.
type Options struct {
	Store *Store
	// Client consumes whisper.events and whisper.profiles (built with
	// ConsumerOpts) and produces to whisper.decisions. Run needs it; the
	// Decide RPC alone needs only its producing side.
	Client *kgo.Client
	Policy contactPolicy
	// Bandit must not draw connections from Store's pool: Choose reads
	// while a decision's transaction holds a connection, so on one shared
	// pool as many concurrent decisions as it has connections would wait
	// for each other forever. Give it a pool of its own.
	Bandit   variantChooser
	SendTime sendTimer
	// WaitInterval is how often due waits are looked for; 1s when zero.
	WaitInterval time.Duration
	Registerer   prometheus.Registerer
	Logger       *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// TracerProvider, when set, gives each partition batch process spans
	// in the traces its records carry, and each decision record the trace
	// of its trigger (see tracing.StartProcess).
	TracerProvider trace.TracerProvider
}

// Service makes decisions.
type Service struct {
	tracing      trace.TracerProvider
	store        *Store
	client       *kgo.Client
	policy       contactPolicy
	bandit       variantChooser
	sendTime     sendTimer
	exprs        *expressions
	waitInterval time.Duration
	// outboxDelay and outboxEvery: see outboxLoop; variables for tests.
	outboxDelay, outboxEvery time.Duration
	metrics                  *metrics
	lag                      *kafka.ConsumerLag
	// calls are the Decide calls waiting for their batch.
	calls coalescer
	// campaignCache holds the campaigns Decide calls named lately.
	campaignCache campaigns
	pub           *publisher
	logger        *slog.Logger
	now           func() time.Time
}

// New returns the service; Run starts its consumer and loops.
func New(o Options) (*Service, error) {
	exprs, err := newExpressions()
	if err != nil {
		return nil, err
	}
	lag, err := kafka.NewConsumerLag(o.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Service{
		tracing: o.TracerProvider,
		store:   o.Store, client: o.Client, policy: o.Policy, bandit: o.Bandit, sendTime: o.SendTime,
		exprs: exprs, waitInterval: o.WaitInterval, metrics: newMetrics(o.Registerer), lag: lag, logger: o.Logger, now: o.Now,
		outboxDelay: outboxDelay, outboxEvery: outboxDelay / 3,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.waitInterval <= 0 {
		s.waitInterval = time.Second
	}
	s.pub = newPublisher(s.client, s.store, func(op string) { s.metrics.failures.WithLabelValues(op).Inc() }, s.logger)
	return s, nil
}

// Run consumes triggers, ends due waits, sweeps the outbox and deletes
// what the broker acknowledged from it until ctx ends; it returns nil
// then, after waiting (a while: drainTimeout) for the acknowledgements of
// what it published. Records not processed by then are consumed again by
// whoever owns their partition next, harmlessly.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer s.pub.drain()
	defer wg.Wait()
	wg.Go(func() { s.pub.run(ctx) })
	wg.Go(func() { s.waitLoop(ctx) })
	wg.Go(func() { s.outboxLoop(ctx) })
	if p, ok := s.bandit.(exposurePruner); ok {
		wg.Go(func() { s.pruneLoop(ctx, p) })
	}
	for {
		fetches := s.client.PollRecords(ctx, maxPollRecords)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			s.client.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, p int32, err error) {
			s.logger.WarnContext(ctx, "fetch", "topic", topic, "partition", p, "err", err)
		})
		var (
			mu   sync.Mutex
			done []*kgo.Record
			pwg  sync.WaitGroup
		)
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			pwg.Go(func() {
				if err := s.processPartition(ctx, p.Records); err != nil {
					return // only when ctx ended: nothing of it is committed
				}
				s.lag.Observe(DefaultGroup, p)
				mu.Lock()
				done = append(done, p.Records...)
				mu.Unlock()
			})
		})
		pwg.Wait()
		if len(done) > 0 {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := s.client.CommitRecords(cctx, done...); err != nil {
				s.logger.WarnContext(ctx, "commit offsets; the records will be processed again, harmlessly", "err", err)
			}
			cancel()
		}
		s.client.AllowRebalance()
	}
}

// processPartition handles one partition's records in order (one user's
// records are on one partition, so their order holds) in one PostgreSQL
// transaction, retried whole until it commits or ctx ends, then hands the
// decisions they made to the publisher, in order, without waiting for the
// broker: the offsets are committed meanwhile, and a decision the broker
// does not acknowledge stays in the outbox for the sweeper. One commit per
// poll rather than per decision is what makes the consumer fast: a commit
// waits for the disk.
func (s *Service) processPartition(ctx context.Context, recs []*kgo.Record) (err error) {
	ctx, spans := tracing.StartProcess(ctx, s.tracing, DefaultGroup, recs)
	defer func() { spans.End(err) }()
	b := &batch{rng: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())), campaigns: map[string]*campaignSet{}}
	if err := s.retry(ctx, "observe activity", func() error { return s.observe(ctx, recs) }); err != nil {
		return err
	}
	err = s.retry(ctx, "process records", func() error {
		b.reset()
		err := pgx.BeginFunc(ctx, s.store.pool, func(tx pgx.Tx) error {
			for _, r := range recs {
				b.current = r
				if err := s.processRecord(ctx, tx, r, b); err != nil {
					return err
				}
			}
			return s.flush(ctx, tx, b)
		})
		if err != nil {
			for _, r := range b.held {
				s.release(ctx, r)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, d := range b.fresh {
		s.metrics.decided(d)
	}
	s.metrics.waits.WithLabelValues("started").Add(float64(b.waitsStarted))
	s.metrics.waits.WithLabelValues("ended").Add(float64(b.waitsEnded))
	for topic, n := range b.records {
		s.metrics.records.WithLabelValues(topic.topic, topic.outcome).Add(float64(n))
	}
	if len(b.out) == 0 {
		return nil
	}
	var traceOf func(int) context.Context
	if s.tracing != nil {
		traceOf = func(i int) context.Context { return spans.ContextFor(ctx, b.outTriggers[i]) }
	}
	if _, err := s.pub.send(b.out, b.outRecords, traceOf); err != nil {
		// Committed: the outbox sweeper publishes them.
		s.metrics.failures.WithLabelValues("publish decisions").Inc()
		s.logger.WarnContext(ctx, "publish decisions; the outbox sweeper will", "err", err)
	}
	return nil
}

// observe feeds every event of a poll to the send-time optimizer in one
// call (one Redis round trip): one per event, in sequence, would cost more
// than the rest of the poll. Observing is idempotent, so a retried poll
// may observe again.
func (s *Service) observe(ctx context.Context, recs []*kgo.Record) error {
	var acts []sendtime.Activity
	for _, r := range recs {
		if r.Topic != kafka.TopicEvents {
			continue
		}
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil || ev.GetWorkspaceId() == "" || ev.GetUserId() == "" {
			continue
		}
		acts = append(acts, sendtime.Activity{WorkspaceID: ev.GetWorkspaceId(), UserID: ev.GetUserId(), At: ev.GetTimestamp().AsTime()})
	}
	if len(acts) == 0 {
		return nil
	}
	if err := s.sendTime.ObserveBatch(ctx, acts); err != nil {
		return fmt.Errorf("observe activity: %w", err)
	}
	return nil
}

// batch is what the records of one partition's poll share: a random
// source, each workspace's campaigns, read once per poll (so a campaign
// created, changed, paused or activated is seen from the next poll on, a
// second or so later), and what the poll's transaction produced.
type batch struct {
	rng       *rand.Rand
	campaigns map[string]*campaignSet

	// The decisions to publish, each once, and the record that triggered
	// each (whose trace its record continues).
	out         []*decisionv1.Decision
	outRecords  [][]byte // out's records when saved by this poll, else nil
	outTriggers []*kgo.Record
	// current is the record being processed.
	current *kgo.Record
	seen    map[string]bool
	// Decisions made by this poll, for the metrics.
	fresh                    []*decisionv1.Decision
	waitsStarted, waitsEnded int
	// Contact reservations to release if the transaction does not commit.
	held    []*contactRequest
	records map[recordOutcome]int

	// Runs waiting for the batched decision step, their users and keys.
	pending      []*pendingRun
	pendingUsers map[userKey]bool
	pendingKeys  map[triggerKey]bool
}

type recordOutcome struct{ topic, outcome string }

// reset forgets what a failed attempt produced.
func (b *batch) reset() {
	b.out, b.outRecords, b.outTriggers, b.fresh, b.held = nil, nil, nil, nil, nil
	b.seen = map[string]bool{}
	b.records = map[recordOutcome]int{}
	b.waitsStarted, b.waitsEnded = 0, 0
	b.pending = nil
	b.pendingUsers, b.pendingKeys = map[userKey]bool{}, map[triggerKey]bool{}
}

// maxPending bounds a decision step's batch; a poll's records are at most
// maxPollRecords anyway.
const maxPending = 500

// queue adds a run to the next decision step. A trigger already queued
// (delivered twice in one poll) is decided first, so the second finds its
// decision, as it would in two polls.
func (s *Service) queue(ctx context.Context, tx pgx.Tx, b *batch, p *pendingRun) error {
	if b.pendingKeys[p.key()] || len(b.pending) >= maxPending {
		if err := s.flush(ctx, tx, b); err != nil {
			return err
		}
	}
	b.pending = append(b.pending, p)
	b.pendingUsers[userKey{p.tr.ws, p.tr.user}] = true
	b.pendingKeys[p.key()] = true
	return nil
}

// flushUser runs the decision step before a record changes or reads what
// the user's queued runs would read or write (consent, the profile
// snapshot, waits, conversions), so every record sees the effects of the
// records before it, as if they were decided one by one.
func (s *Service) flushUser(ctx context.Context, tx pgx.Tx, b *batch, ws, user string) error {
	if !b.pendingUsers[userKey{ws, user}] {
		return nil
	}
	return s.flush(ctx, tx, b)
}

// flush runs the decision step on the queued runs.
func (s *Service) flush(ctx context.Context, tx pgx.Tx, b *batch) error {
	if len(b.pending) == 0 {
		return nil
	}
	ps := b.pending
	b.pending = nil
	clear(b.pendingUsers)
	clear(b.pendingKeys)
	held, err := s.runAll(ctx, tx, ps, b.rng)
	b.held = append(b.held, held...)
	if err != nil {
		return err
	}
	for _, p := range ps {
		b.add(p.res, p.rec)
	}
	return nil
}

// add keeps the outcome of one trigger of record rec.
func (b *batch) add(r runResult, rec *kgo.Record) {
	switch {
	case r.waiting:
		b.waitsStarted++
	case r.fresh:
		b.fresh = append(b.fresh, r.decision)
	}
	// A decision found again (a trigger delivered twice) is published
	// only once per poll.
	if r.publish && !b.seen[r.decision.GetDecisionId()] {
		b.seen[r.decision.GetDecisionId()] = true
		b.out = append(b.out, r.decision)
		b.outRecords = append(b.outRecords, r.record)
		b.outTriggers = append(b.outTriggers, rec)
	}
}

func (s *Service) campaignsOf(ctx context.Context, tx pgx.Tx, b *batch, ws string) (*campaignSet, error) {
	if set, ok := b.campaigns[ws]; ok {
		return set, nil
	}
	set, err := s.store.campaigns(ctx, tx, ws)
	if err != nil {
		return nil, err
	}
	b.campaigns[ws] = set
	return set, nil
}

func (s *Service) processRecord(ctx context.Context, tx pgx.Tx, r *kgo.Record, b *batch) error {
	switch r.Topic {
	case kafka.TopicEvents:
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil || ev.GetWorkspaceId() == "" || ev.GetUserId() == "" ||
			!storable(ev.GetWorkspaceId(), ev.GetUserId(), ev.GetMessageId(), ev.GetEvent()) {
			// Anonymous events cannot be decided on (nobody to contact
			// yet); undecodable ones are profiles' to dead-letter.
			b.records[recordOutcome{r.Topic, "skipped"}]++
			return nil
		}
		b.records[recordOutcome{r.Topic, "applied"}]++
		return s.processEvent(ctx, tx, &ev, b)
	case kafka.TopicProfiles:
		var ch profilev1.ProfileChange
		if err := proto.Unmarshal(r.Value, &ch); err != nil || ch.GetWorkspaceId() == "" || ch.GetProfile().GetUserId() == "" ||
			!storable(ch.GetWorkspaceId(), ch.GetProfile().GetUserId(), ch.GetChangeId()) {
			b.records[recordOutcome{r.Topic, "skipped"}]++
			return nil
		}
		b.records[recordOutcome{r.Topic, "applied"}]++
		return s.processChange(ctx, tx, &ch, b)
	}
	return nil
}

// processEvent applies one event: activity for send times, consent, the
// waits it ends, the conversions it makes, then the campaigns it triggers.
// Every effect is idempotent, so a redelivered event changes nothing.
func (s *Service) processEvent(ctx context.Context, tx pgx.Tx, ev *eventv1.Event, b *batch) error {
	ws, user := ev.GetWorkspaceId(), ev.GetUserId()
	at := ev.GetTimestamp().AsTime()
	if ev.GetType() != eventv1.EventType_EVENT_TYPE_TRACK || ev.GetEvent() == "" {
		return nil
	}
	name := ev.GetEvent()
	var props map[string]any
	if len(ev.GetProperties()) > 0 {
		if err := json.Unmarshal(ev.GetProperties(), &props); err != nil {
			props = nil // ingestion checked it is an object; be lenient anyway
		}
	}
	if name == EventUnsubscribed || name == EventSubscribed {
		if err := s.flushUser(ctx, tx, b, ws, user); err != nil {
			return err
		}
		ch, _ := props["channel"].(string)
		topic, _ := props["topic"].(string)
		if !slices.Contains([]string{"email", "sms", "push", "webhook", "in_app"}, ch) || !storable(ws, topic) {
			s.logger.WarnContext(ctx, "consent event without a known channel or with an unusable topic; ignored", "workspace_id", ws, "event", name, "channel", ch)
		} else if err := s.store.saveConsent(ctx, tx, ws, user, ch, topic, name == EventSubscribed, at); err != nil {
			return err
		}
	}

	set, err := s.campaignsOf(ctx, tx, b, ws)
	if err != nil {
		return err
	}
	if set.names[name] {
		if err := s.flushUser(ctx, tx, b, ws, user); err != nil {
			return err
		}
		waits, goals, err := s.store.interest(ctx, tx, ws, user, name)
		if err != nil {
			return err
		}
		if waits {
			if err := s.endUserWaits(ctx, tx, ws, user, name, at, b); err != nil {
				return err
			}
		}
		if goals {
			if err := s.convert(ctx, tx, ws, user, name, at); err != nil {
				return err
			}
		}
	}

	for _, c := range set.byEvent[name] {
		step := &decisionv1.Step{Name: "trigger", Result: "event " + name, Inputs: map[string]string{
			"message_id": ev.GetMessageId(), "event_time": at.UTC().Format(time.RFC3339Nano),
		}}
		if cond := c.GetTrigger().GetEvent().GetCondition(); cond != "" {
			prg, err := s.exprs.compile(true, cond)
			if err != nil {
				return fmt.Errorf("campaign %s condition: %w", c.GetId(), err)
			}
			ok, _ := eval(ctx, prg, map[string]any{"event": eventVars(ev, props)})
			if !ok {
				continue // the trigger did not fire: no decision
			}
			step.Inputs["condition"] = cond
		}
		p := &pendingRun{c: c, tr: trigger{ws: ws, user: user, id: "event:" + ev.GetMessageId(), step: step, props: ev.GetProperties()}, rec: b.current}
		if err := s.queue(ctx, tx, b, p); err != nil {
			return err
		}
	}
	return nil
}

// storable reports whether PostgreSQL can store the workspace id (a uuid)
// and the strings (text): a NUL byte, invalid UTF-8 or a malformed id would
// fail the poll's transaction on every retry and stall the partition, so
// such a record is skipped instead.
func storable(ws string, ss ...string) bool {
	if u, err := uuid.Parse(ws); err != nil || u.String() != ws {
		return false
	}
	for _, s := range ss {
		if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

func eventVars(ev *eventv1.Event, props map[string]any) map[string]any {
	var evCtx map[string]any
	if len(ev.GetContext()) > 0 {
		_ = json.Unmarshal(ev.GetContext(), &evCtx)
	}
	if props == nil {
		props = map[string]any{}
	}
	if evCtx == nil {
		evCtx = map[string]any{}
	}
	return map[string]any{
		"message_id": ev.GetMessageId(), "user_id": ev.GetUserId(), "anonymous_id": ev.GetAnonymousId(),
		"name": ev.GetEvent(), "timestamp": ev.GetTimestamp(), "properties": props, "context": evCtx,
	}
}

// endUserWaits ends the user's waits that event name ends. A wait already
// due when the event happened is left to the scheduler, which decides by
// its due time.
func (s *Service) endUserWaits(ctx context.Context, tx pgx.Tx, ws, user, name string, at time.Time, b *batch) error {
	waits, err := s.store.lockWaits(ctx, tx, ws, user, name, at, waitBatch)
	if err != nil {
		return err
	}
	waits = slices.DeleteFunc(waits, func(w pendingWait) bool { return at.After(w.due) })
	ds, held, err := s.endWaits(ctx, tx, waits, name, b.rng)
	b.held = append(b.held, held...)
	if err != nil {
		return err
	}
	for _, d := range ds {
		b.waitsEnded++
		b.add(runResult{decision: d, fresh: true, publish: true}, b.current)
	}
	return nil
}

// convert attributes a goal event and rewards the variants it converts.
func (s *Service) convert(ctx context.Context, tx pgx.Tx, ws, user, name string, at time.Time) error {
	cs, err := s.store.convert(ctx, tx, ws, user, name, at)
	if err != nil {
		return err
	}
	for _, c := range cs {
		if c.variantID == "" {
			continue // held out: counts for lift, rewards nothing
		}
		if err := s.bandit.RecordConversion(ctx, tx, ws, c.campaignID, c.variantID, c.decisionID); err != nil {
			return fmt.Errorf("record conversion: %w", err)
		}
	}
	// Counted before the commit: a retried poll may count a conversion
	// twice here, never in the bandit.
	for _, c := range cs {
		s.metrics.conversions.WithLabelValues(c.campaignID).Inc()
	}
	return nil
}

// processChange keeps the profile snapshot and runs the campaigns the
// change triggers.
func (s *Service) processChange(ctx context.Context, tx pgx.Tx, ch *profilev1.ProfileChange, b *batch) error {
	ws, p := ch.GetWorkspaceId(), ch.GetProfile()
	if err := s.flushUser(ctx, tx, b, ws, p.GetUserId()); err != nil {
		return err
	}
	if err := s.store.saveSnapshot(ctx, tx, ws, p.GetUserId(), p, ch.GetChangeTime().AsTime()); err != nil {
		return err
	}
	set, err := s.campaignsOf(ctx, tx, b, ws)
	if err != nil {
		return err
	}
	for _, c := range set.onChange {
		t := c.GetTrigger().GetProfileChange()
		var fired string
		switch {
		case t.GetEnteredStage() != "":
			if slices.Contains(ch.GetKinds(), profilev1.ProfileChangeKind_PROFILE_CHANGE_KIND_STAGE) &&
				p.GetStage() == t.GetEnteredStage() && ch.GetPreviousStage() != t.GetEnteredStage() {
				fired = "entered stage " + p.GetStage()
			}
		case slices.Contains(ch.GetKinds(), t.GetKind()):
			fired = t.GetKind().String()
		}
		if fired == "" {
			continue
		}
		step := &decisionv1.Step{Name: "trigger", Result: "profile change: " + fired, Inputs: map[string]string{
			"change_id": ch.GetChangeId(), "previous_stage": ch.GetPreviousStage(), "stage": p.GetStage(),
			"change_time": ch.GetChangeTime().AsTime().UTC().Format(time.RFC3339Nano),
		}}
		run := &pendingRun{c: c, tr: trigger{ws: ws, user: p.GetUserId(), id: "change:" + ch.GetChangeId(), profile: p, step: step}, rec: b.current}
		if err := s.queue(ctx, tx, b, run); err != nil {
			return err
		}
	}
	return nil
}

// errNotActive is a Decide call for a campaign that is not active.
var errNotActive = errors.New("the campaign is not active")

// publish hands committed decisions to the publisher (see publisher.send).
func (s *Service) publish(ds []*decisionv1.Decision) (*published, error) {
	return s.pub.send(ds, nil, nil)
}

func (s *Service) waitLoop(ctx context.Context) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	t := time.NewTicker(s.waitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := s.fireDue(ctx, rng, waitBatch)
			if err != nil {
				if ctx.Err() == nil {
					s.metrics.failures.WithLabelValues("end waits").Inc()
					s.logger.WarnContext(ctx, "end due waits; retrying", "err", err)
				}
				break
			}
			if n < waitBatch {
				break
			}
		}
	}
}

// outboxLoop publishes the decisions whose publisher failed or stopped
// (a crash between the commit and the acknowledgement): those still in the
// outbox outboxDelay after they were made. It waits for the broker, and
// deletes what it acknowledged, before the next sweep: a broker that is
// down does not get each decision again every sweep. After each sweep it
// measures the outbox's size and the age of its oldest decision.
func (s *Service) outboxLoop(ctx context.Context) {
	t := time.NewTicker(s.outboxEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ds, err := s.store.unpublished(ctx, s.now().Add(-s.outboxDelay), outboxBatch)
		if err == nil && len(ds) > 0 {
			var p *published
			if p, err = s.publish(ds); err == nil {
				err = p.wait(ctx)
			}
			if err == nil {
				// Before the next sweep, which would find them again.
				err = s.pub.deleteAcked(ctx)
			}
		}
		if err != nil && ctx.Err() == nil {
			s.metrics.failures.WithLabelValues("publish outbox").Inc()
			s.logger.WarnContext(ctx, "publish unpublished decisions; retrying", "err", err)
		}
		s.metrics.outbox.Measure(ctx, s.logger.With("queue", "decision outbox"), func(ctx context.Context) (int64, time.Duration, error) {
			return s.store.outboxBacklog(ctx, s.now())
		})
	}
}

// exposurePruner forgets per-decision bandit rows (bandit.Store has it).
type exposurePruner interface {
	Prune(ctx context.Context, before time.Time) (int64, error)
}

// pruneLoop forgets, hourly, the bandit's per-decision rows older than the
// longest attribution window allowed (plus a day): no conversion can be
// attributed to them any more, and the arms keep their totals.
func (s *Service) pruneLoop(ctx context.Context, p exposurePruner) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := p.Prune(ctx, s.now().Add(-maxAttribution-24*time.Hour))
		if err != nil {
			if ctx.Err() == nil {
				s.metrics.failures.WithLabelValues("prune bandit").Inc()
				s.logger.WarnContext(ctx, "prune bandit decisions", "err", err)
			}
			continue
		}
		s.logger.DebugContext(ctx, "pruned bandit decisions", "rows", n)
	}
}

// retry runs f until it succeeds, backing off up to maxBackoff between
// attempts; it gives up only when ctx ends. A race lost to another
// transaction (errLostRace) is retried at once: the next attempt finds
// the other's decisions.
func (s *Service) retry(ctx context.Context, what string, f func() error) error {
	backoff := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errLostRace) {
			s.logger.DebugContext(ctx, what+": deciding again", "err", err)
			continue
		}
		s.metrics.failures.WithLabelValues(what).Inc()
		s.logger.WarnContext(ctx, what+" failed; retrying", "err", err, "backoff", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
