// Package profiles is the profiles target: it consumes whisper.events and
// keeps, in PostgreSQL, a live profile of every user of every workspace
// (identities, traits, seen times, per-event counts, rolling activity,
// lifecycle stage and scores), mirrors its rolling activity to Redis,
// publishes the changes that matter on whisper.profiles, and serves
// profiles over the Connect ProfileService.
//
// # Delivery
//
// Delivery is at least once with idempotent effects. Each partition's share
// of a poll is applied in one transaction that also records the message ids
// it applied; a message id already recorded is skipped, so a record
// delivered again (after a crash, a rebalance, a replay) changes nothing.
// Offsets are committed only after that transaction commits and the Redis
// mirror is written, and rebalances wait until the poll's records are
// applied and committed. While PostgreSQL or Redis is unreachable the
// consumer retries with backoff and commits nothing (a committed
// transaction is not applied again: only its mirror write is retried); if
// that outlasts the group's rebalance timeout, the member is evicted, its
// commit fails and the partition's next owner gets the records again,
// which is harmless.
//
// A record that can never be applied (not an Event, no workspace, no
// identity) is copied to whisper.events.dlq with the reason in a header, and
// the consumer moves on.
//
// # Sessions
//
// A session is a run of events without 30 minutes of inactivity, as in web
// analytics (sessionGap). An applied event starts a new session when it is
// the profile's first, or when its time is more than 30 minutes after the
// profile's last_seen before it is applied; any other event, including a
// late one (dated before last_seen), belongs to the latest session and
// starts none. The profile keeps only the count (session_count) and the
// start of the latest session (session_start_time), in its row, written
// with the rest of the batch, so the message-id idempotence covers them.
// Sessions are counted in the order events are applied, not re-derived
// from event times: events that arrive out of order are not
// re-sessionized.
//
// When an alias (or identify) merges two profiles, their counts add up and
// the later session start wins. The two histories are not kept, so this is
// an approximation: two sessions of the two ids that overlapped in time (or
// followed each other within 30 minutes) count as two, and the merging
// event is sessionized against the merged profile's last_seen.
//
// Rows from before sessions (migration 00003) start with one session,
// started at their last_seen.
//
// # Rolling activity
//
// PostgreSQL is the source of truth: the profile row keeps its activity per
// UTC day for the last 28 days (column daily), events of any kind and
// track events per name. It is written in the batch transaction, so the
// message-id idempotence covers it, merged on alias like the counters, and
// days older than the window are dropped on every write. An event dated in
// the future counts on the day it is applied; one older than the window
// counts in no window.
//
// Windows are UTC calendar days ending with the day of the computation:
// last_1d is that day, last_7d it and the 6 before, last_28d it and the 27
// before. Profile.rolling_counts are computed as of update_time.
//
// After the transaction commits, the buckets of every profile it wrote are
// mirrored to Redis, pipelined, one round trip per batch, for decide's hot
// path. Each profile is one hash with a TTL of 29 days (RollingTTL),
// refreshed on every write:
//
//	whisper:profiles:rolling:<workspace_id>:<profile_id>   (RollingKey)
//	  v             the profile version the hash was written from
//	  <day>         events of any kind on UTC day <day> (days since 1970-01-01)
//	  <day>:<name>  track events named <name> on that day
//
// Values are absolute and each hash is replaced whole by a script that
// refuses to replace a newer version with an older one: a retry or a
// replay can never double count, and two batches that reach Redis out of
// commit order cannot leave the older state. A batch whose records were
// all applied before mirrors their profiles again from PostgreSQL, so a
// crash between commit and mirror heals when the records are redelivered.
// The hash of a profile merged away by an alias is deleted (or, if that
// write is lost to a crash, expires).
//
// # Lifecycle stage
//
// Every change to a profile recomputes, at the consumer's clock (now), its
// score inputs (ScoreInputs): whole days since the last and first events,
// active days and events of the last 7 and 28 days, the trend (events of
// the last 7 days against the weekly average of the 21 days before; 1
// without earlier activity) and whether the workspace's activation event
// was ever tracked. "Idle" below is whole days since the last event. The
// first rule that holds gives the stage:
//
//	churned    idle >= churned_idle_days (30)
//	dormant    idle >= dormant_idle_days (14)
//	engaged    active days in the last 7 >= engaged_active_days (3)
//	at_risk    idle >= at_risk_idle_days (7), or trend < at_risk_trend (0.5),
//	           or not activated by new_days (7) after the first event
//	activated  the activation event ("Signed Up") was tracked
//	new        otherwise: first seen less than new_days ago, not activated
//
// Activation is by a track event only, not by identify: an identify says
// who the user is, not that they reached the product's first value. The
// thresholds in parentheses are the defaults (DefaultRules); a workspace
// sets its own with UpdateLifecycleRules (table profiles_lifecycle_rules),
// after which the sweeper re-stages all its profiles.
//
// # Scores
//
// Both scores are logistic functions of the inputs, with these
// coefficients, where a7 and a28 are the active days of the last 7 and 28
// days, idle as above and lt the natural log of the trend clamped to
// [0.05, 20]:
//
//	engagement_score = round(100·σ(-3 + 0.6·a7 + 0.1·a28 - 0.2·idle + 0.8·lt))
//	churn_risk       = round4(σ(-1.5 + 0.25·idle - 0.4·a7 - 0.05·a28 - 0.8·lt))
//
// so a user active every day scores about 98 with a churn risk near 0, a
// user seen once today 9 and 0.12, and a month of silence 0 and 0.998. The
// score band is score/20 (0-4; 100 is band 4).
//
// # Time
//
// Stages and scores change with time alone (a user goes dormant by doing
// nothing). With each computation the profile stores stage_due_at, the
// first instant at which, without a new event, its stage or score band
// would change: inputs change only at UTC midnights (days leave the
// windows) and whole days after the first and last events, so those are
// the only candidates tried. A sweeper in Run recomputes due profiles
// every sweep interval, in batches of 500 (FOR UPDATE SKIP LOCKED: a
// profile a batch is applying is left to that batch), and records their
// changes like the consumer does.
//
// # whisper.profiles
//
// A change that matters (created, stage, traits, score band, merged; see
// ProfileChange) is written to the profile_outbox table in the transaction
// that makes it, with its change_id: a redelivered event is a duplicate and
// writes nothing, so it never publishes again. After the commit a relay
// loop in Run is woken; it produces the outbox in id order with ProduceSync
// and deletes what was acknowledged, and it also runs every relay interval
// to drain what a stopped process left. Records are keyed like events (the
// user id, else the first anonymous id, see kafka.Key). A profile's changes
// are numbered in its commit order (they are written under its row lock)
// and only one relay runs at a time across replicas (an advisory lock), so
// they are produced in order. With several replicas, a change committed by
// one while another's relay holds the lock waits for the next pass, at most
// a relay interval (1 s). Delivery is at least once: a relay that
// stops between produce and delete publishes those changes again, with
// the same change_id. Limitation: when an anonymous profile gets a user
// id, its key changes, and its changes before and after may sit on
// different partitions.
package profiles

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/tracing"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the schema of the profiles target.
var Migrations = postgres.Migrations{Name: "profiles", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err) // dir is a literal that go:embed has checked
	}
	return sub
}

// Header names of dead-lettered records.
const (
	HeaderDLQReason = "whisper-dlq-reason"
	HeaderDLQSource = "whisper-dlq-source"
)

const (
	// DefaultGroup is the consumer group of the profiles target.
	DefaultGroup = "whisper-profiles"
	// AppliedRetention is how long applied message ids are remembered: a
	// record redelivered later than that would be applied twice. Offsets
	// are committed after every poll, so redelivery spans seconds to
	// minutes; a replay older than this needs the profiles rebuilt.
	AppliedRetention = 7 * 24 * time.Hour
	maxPollRecords   = 5000
	maxBackoff       = 5 * time.Second
	purgeEvery       = time.Hour
	// DefaultSweepInterval is how often the sweeper looks for profiles
	// whose stage is due to change with time.
	DefaultSweepInterval = 30 * time.Second
	// DefaultRelayInterval is how often the outbox relay looks for changes
	// left behind, besides being woken after every commit that wrote some.
	DefaultRelayInterval = time.Second
	sweepLimit           = 500
	relayLimit           = 1000
)

// ConsumerOpts are the kgo options the consumer client of Run must be built
// with (see kafka.NewClient): group, topic, manual commits, rebalances held
// while a poll is being applied.
func ConsumerOpts(group string) []kgo.Opt {
	return []kgo.Opt{
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(kafka.TopicEvents),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
	}
}

// Options are the dependencies of the service.
type Options struct {
	Store *Store
	// Client consumes whisper.events (built with ConsumerOpts) and
	// produces to whisper.events.dlq and whisper.profiles.
	Client *kgo.Client
	// Redis holds the mirror of rolling activity (a *redis.Client).
	Redis      redisClient
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock of lifecycles, scores and the sweeper; time.Now
	// when nil.
	Now func() time.Time
	// TracerProvider, when set, gives each partition batch process spans
	// in the traces its records carry (see tracing.StartProcess).
	TracerProvider trace.TracerProvider
	// SweepInterval, RelayInterval and UsersInterval default to
	// DefaultSweepInterval, DefaultRelayInterval and DefaultUsersInterval.
	SweepInterval, RelayInterval, UsersInterval time.Duration
}

// Service consumes events into profiles.
type Service struct {
	store   *Store
	client  *kgo.Client
	redis   redisClient
	metrics *metrics
	logger  *slog.Logger
	now     func() time.Time
	tracing trace.TracerProvider

	sweepEvery, relayEvery, usersEvery time.Duration
	// relayWake wakes the outbox relay after a commit that wrote changes.
	relayWake chan struct{}
}

// New returns the service; Run starts its consumer.
func New(o Options) *Service {
	s := &Service{
		store: o.Store, client: o.Client, redis: o.Redis, metrics: newMetrics(o.Registerer), logger: o.Logger, now: o.Now,
		sweepEvery: o.SweepInterval, relayEvery: o.RelayInterval, usersEvery: o.UsersInterval, relayWake: make(chan struct{}, 1),
		tracing: o.TracerProvider,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.sweepEvery <= 0 {
		s.sweepEvery = DefaultSweepInterval
	}
	if s.relayEvery <= 0 {
		s.relayEvery = DefaultRelayInterval
	}
	if s.usersEvery <= 0 {
		s.usersEvery = DefaultUsersInterval
	}
	return s
}

// Run consumes until ctx ends, and meanwhile sweeps profiles due to change
// stage, relays the outbox to whisper.profiles, counts users per stage and
// purges old applied message ids. It returns nil when ctx ends; records not applied by then
// are consumed again by whoever owns their partition next.
func (s *Service) Run(ctx context.Context) error {
	if s.store == nil || s.client == nil || s.redis == nil {
		return errors.New("profiles: Store, Client and Redis are required")
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.purgeLoop(ctx) })
	wg.Go(func() { s.sweepLoop(ctx) })
	wg.Go(func() { s.relayLoop(ctx) })
	wg.Go(func() { s.usersLoop(ctx) })
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
				s.metrics.lag.Observe(DefaultGroup, p)
				mu.Lock()
				done = append(done, p.Records...)
				mu.Unlock()
			})
		})
		pwg.Wait()
		if len(done) > 0 {
			// Committing what is applied must not be cut short by the stop
			// that may have come meanwhile.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := s.client.CommitRecords(cctx, done...); err != nil {
				s.logger.WarnContext(ctx, "commit offsets; the records will be applied again, harmlessly", "err", err)
			}
			cancel()
		}
		s.client.AllowRebalance()
	}
}

// processPartition dead-letters what cannot be decoded and applies the
// rest, retrying until it succeeds or ctx ends.
func (s *Service) processPartition(ctx context.Context, recs []*kgo.Record) (err error) {
	ctx, spans := tracing.StartProcess(ctx, s.tracing, DefaultGroup, recs)
	defer func() { spans.End(err) }()
	start := time.Now()
	s.metrics.batchRecords.Observe(float64(len(recs)))
	var events []event
	var dead []*kgo.Record
	for _, r := range recs {
		e, err := decodeRecord(r)
		if err != nil {
			dead = append(dead, deadLetter(r, err))
			continue
		}
		events = append(events, e)
	}
	if len(dead) > 0 {
		if err := s.retry(ctx, opDeadLetter, func() error {
			return s.client.ProduceSync(ctx, dead...).FirstErr()
		}); err != nil {
			return err
		}
		for _, r := range dead {
			s.logger.WarnContext(ctx, "dead-lettered a record", "reason", headerValue(r, HeaderDLQReason), "source", headerValue(r, HeaderDLQSource))
		}
		s.metrics.records.WithLabelValues(outcomeDeadLettered).Add(float64(len(dead)))
	}
	if len(events) > 0 {
		var res applyResult
		var applied time.Duration // of the attempt that succeeded
		if err := s.retry(ctx, opApply, func() (err error) {
			attempt := time.Now()
			res, err = s.store.applyEvents(ctx, events, s.now())
			applied = time.Since(attempt)
			return err
		}); err != nil {
			return err
		}
		s.metrics.records.WithLabelValues(outcomeApplied).Add(float64(res.applied))
		s.metrics.records.WithLabelValues(outcomeDuplicate).Add(float64(res.duplicates))
		s.metrics.transitioned(res.transitions)
		if res.changes > 0 {
			s.wakeRelay()
		}
		// The transaction is committed: what remains is to mirror it,
		// which is retried on its own (applying again would find only
		// duplicates). Offsets wait for it.
		var mirrorStart time.Time
		if err := s.retry(ctx, opMirror, func() error {
			mirrorStart = time.Now()
			return writeMirror(ctx, s.redis, res.mirror, res.deleted)
		}); err != nil {
			return err
		}
		s.metrics.applyDuration.Observe((applied + time.Since(mirrorStart)).Seconds())
	}
	s.metrics.batchDuration.Observe(time.Since(start).Seconds())
	return nil
}

func (s *Service) wakeRelay() {
	select {
	case s.relayWake <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// sweepLoop recomputes the profiles whose stage or score band is due to
// change by the passage of time, in batches, every sweep interval.
func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			res, err := s.store.sweep(ctx, s.now(), sweepLimit)
			if err != nil {
				if ctx.Err() == nil {
					s.metrics.failures.WithLabelValues(opSweep).Inc()
					s.logger.WarnContext(ctx, "sweep due profiles; retrying at the next interval", "err", err)
				}
				break
			}
			s.metrics.swept.Add(float64(res.recomputed))
			s.metrics.transitioned(res.transitions)
			if res.changes > 0 {
				s.wakeRelay()
			}
			if res.recomputed < sweepLimit {
				break
			}
		}
	}
}

// relayLoop produces the outbox to whisper.profiles: woken after every
// commit that wrote changes, and every relay interval for what a stopped
// process left behind. It is the only producer of outbox rows in this
// process, and the outbox lock makes it the only one across replicas, so
// rows go out in id order, which is each profile's commit order.
func (s *Service) relayLoop(ctx context.Context) {
	t := time.NewTicker(s.relayEvery)
	defer t.Stop()
	failing := false // since the last drain: retry on the ticker only
	for {
		tick := false
		select {
		case <-ctx.Done():
			return
		case <-s.relayWake:
		case <-t.C:
			tick = true
		}
		if failing && !tick {
			continue
		}
		for {
			n, err := s.store.drainOutbox(ctx, relayLimit, func(ctx context.Context, recs []*kgo.Record) error {
				return s.client.ProduceSync(ctx, recs...).FirstErr()
			})
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.metrics.failures.WithLabelValues(opPublish).Inc()
				s.logger.WarnContext(ctx, "publish profile changes; retrying", "err", err, "in", s.relayEvery)
				failing = true
				break
			}
			failing = false
			s.metrics.published.Add(float64(n))
			if n < relayLimit {
				break
			}
		}
		if tick {
			s.metrics.outbox.Measure(ctx, s.logger.With("queue", "profile outbox"), func(ctx context.Context) (int64, time.Duration, error) {
				return s.store.outboxBacklog(ctx, s.now())
			})
		}
	}
}

// retry runs f until it succeeds, backing off up to maxBackoff between
// attempts; it gives up only when ctx ends.
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
		if !errors.Is(err, errProfileMoved) {
			s.metrics.failures.WithLabelValues(what).Inc()
			s.logger.WarnContext(ctx, what+" failed; retrying", "err", err, "backoff", backoff)
		}
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

func (s *Service) purgeLoop(ctx context.Context) {
	t := time.NewTicker(purgeEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := s.store.purgeApplied(ctx, s.now().Add(-AppliedRetention))
		if err != nil {
			s.logger.WarnContext(ctx, "purge applied message ids", "err", err)
			continue
		}
		s.logger.DebugContext(ctx, "purged applied message ids", "rows", n)
	}
}

func decodeRecord(r *kgo.Record) (event, error) {
	var ev eventv1.Event
	if err := proto.Unmarshal(r.Value, &ev); err != nil {
		return event{}, fmt.Errorf("%w: not a whisper.event.v1.Event: %v", errUndecodable, err)
	}
	return decode(&ev, r.Timestamp)
}

func deadLetter(r *kgo.Record, reason error) *kgo.Record {
	return &kgo.Record{
		Topic: kafka.TopicEventsDLQ,
		Key:   r.Key,
		Value: r.Value,
		Headers: append(append([]kgo.RecordHeader(nil), r.Headers...),
			kgo.RecordHeader{Key: HeaderDLQReason, Value: []byte(reason.Error())},
			kgo.RecordHeader{Key: HeaderDLQSource, Value: fmt.Appendf(nil, "%s/%d/%d", r.Topic, r.Partition, r.Offset)},
		),
	}
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
