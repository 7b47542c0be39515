// Package profiles is the profiles target: it consumes whisper.events and
// keeps, in PostgreSQL, a live profile of every user of every workspace
// (identities, traits, seen times, per-event counts), and serves them over
// the Connect ProfileService.
//
// Delivery is at least once with idempotent effects. Each partition's share
// of a poll is applied in one transaction that also records the message ids
// it applied; a message id already recorded is skipped, so a record
// delivered again (after a crash, a rebalance, a replay) changes nothing.
// Offsets are committed only after that transaction commits, and rebalances
// wait until the poll's records are applied and committed. While PostgreSQL
// is unreachable the consumer retries with backoff and commits nothing; if
// that outlasts the group's rebalance timeout, the member is evicted, its
// commit fails and the partition's next owner applies the records again,
// which is harmless.
//
// A record that can never be applied (not an Event, no workspace, no
// identity) is copied to whisper.events.dlq with the reason in a header, and
// the consumer moves on.
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
	// produces to whisper.events.dlq.
	Client     *kgo.Client
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// TracerProvider, when set, gives each partition batch process spans
	// in the traces its records carry (see tracing.StartProcess).
	TracerProvider trace.TracerProvider
}

// Service consumes events into profiles.
type Service struct {
	store   *Store
	client  *kgo.Client
	metrics *metrics
	logger  *slog.Logger
	now     func() time.Time
	tracing trace.TracerProvider
}

// New returns the service; Run starts its consumer.
func New(o Options) *Service {
	s := &Service{store: o.Store, client: o.Client, metrics: newMetrics(o.Registerer), logger: o.Logger, now: o.Now, tracing: o.TracerProvider}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Run consumes until ctx ends, purging old applied message ids meanwhile.
// It returns nil when ctx ends; records not applied by then are consumed
// again by whoever owns their partition next.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { s.purgeLoop(ctx) })
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
	ctx, spans := tracing.StartProcess(ctx, s.tracing, "", recs)
	defer func() { spans.End(err) }()
	start := s.now()
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
		if err := s.retry(ctx, "dead-letter records", func() error {
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
		if err := s.retry(ctx, "apply events", func() (err error) {
			res, err = s.store.applyEvents(ctx, events)
			return err
		}); err != nil {
			return err
		}
		s.metrics.records.WithLabelValues(outcomeApplied).Add(float64(res.applied))
		s.metrics.records.WithLabelValues(outcomeDuplicate).Add(float64(res.duplicates))
	}
	s.metrics.batchDuration.Observe(s.now().Sub(start).Seconds())
	return nil
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
