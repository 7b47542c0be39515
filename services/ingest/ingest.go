// Package ingest is the ingestion target: it accepts product events over the
// Segment-compatible HTTP API and the Connect IngestService, and writes them
// to the whisper.events topic.
//
// The contract with clients is durability: a 200 (or an OK RPC) is sent only
// after the broker acknowledged every record of the request, with an
// idempotent producer and acks from all in-sync replicas. A request is all or
// nothing for validation: one bad item refuses the whole batch, naming it,
// and nothing of it is produced. A request that fails at the broker may have
// been partly written; the client's retry is then absorbed by the message-id
// dedup window, so nothing acknowledged is lost and nothing is doubled.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/tracing"
)

// WriteKeyResolver finds the workspace of a write key. It returns an error
// for an unknown or revoked key.
type WriteKeyResolver interface {
	ResolveWriteKey(ctx context.Context, key string) (workspaceID string, err error)
}

// ErrUnavailable means the broker could not take the events now; the client
// should retry later.
var ErrUnavailable = errors.New("event broker unavailable")

// Options are the dependencies of the service.
type Options struct {
	// Producer writes to whisper.events; see kafka.NewClient.
	Producer *kgo.Client
	// Redis keeps the dedup window; nil disables dedup.
	Redis      *redis.Client
	WriteKeys  WriteKeyResolver
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// AckTimeout bounds the wait for the broker's acknowledgement; 10 s
	// when zero.
	AckTimeout time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// TracerProvider, when set, traces each request's send to the broker
	// and writes its trace context into the records' headers; nil: no spans.
	TracerProvider trace.TracerProvider
}

// Service accepts events.
type Service struct {
	producer   *kgo.Client
	dedup      *dedup
	flights    *flights
	keys       WriteKeyResolver
	metrics    *metrics
	logger     *slog.Logger
	now        func() time.Time
	ackTimeout time.Duration
	tracing    trace.TracerProvider
}

// New returns the service.
func New(o Options) *Service {
	s := &Service{
		producer:   o.Producer,
		keys:       o.WriteKeys,
		flights:    newFlights(),
		metrics:    newMetrics(o.Registerer, o.Producer),
		logger:     o.Logger,
		now:        o.Now,
		ackTimeout: o.AckTimeout,
		tracing:    o.TracerProvider,
	}
	if s.ackTimeout <= 0 {
		s.ackTimeout = 10 * time.Second
	}
	if s.now == nil {
		s.now = time.Now
	}
	if o.Redis != nil {
		s.dedup = newDedup(o.Redis, s.now)
	}
	return s
}

// accept produces the calls of req for workspace ws and returns their
// message ids, once every record is acknowledged.
func (s *Service) accept(ctx context.Context, api, ws string, req *request) ([]string, error) {
	receivedAt := s.now().UTC()
	ids := make([]string, len(req.calls))
	// skip[i]: the call's record must not be produced (already produced, or
	// an earlier call of this request carries the same id).
	skip := make([]bool, len(req.calls))
	var clientIDs []string
	var clientIdx []int
	firstOf := make(map[string]struct{}, len(req.calls))
	for i := range req.calls {
		id := req.calls[i].messageID
		if id == "" {
			ids[i] = uuid.Must(uuid.NewV7()).String()
			continue
		}
		ids[i] = id
		if _, dup := firstOf[id]; dup {
			skip[i] = true
			continue
		}
		firstOf[id] = struct{}{}
		clientIDs = append(clientIDs, id)
		clientIdx = append(clientIdx, i)
	}
	// Claim the ids first: a retry arriving while this process still
	// waits on the broker (or on Redis) for an earlier attempt waits out
	// that attempt and takes its outcome. Only then ask Redis, which knows
	// what other processes and earlier attempts produced.
	produced, err := s.flights.claim(ctx, ws, clientIDs, s.ackTimeout)
	if err != nil {
		return nil, fmt.Errorf("%w: an earlier attempt of these events is still unanswered", ErrUnavailable)
	}
	var toCheck []string // claimed ids, in clientIDs order
	var checkIdx []int
	for j, yes := range produced {
		if yes {
			skip[clientIdx[j]] = true
			continue
		}
		toCheck = append(toCheck, clientIDs[j])
		checkIdx = append(checkIdx, clientIdx[j])
	}
	// fingerprint[i]: the dedup set member of call i's client id, when
	// it is checked; computed once for the check and the mark.
	var fingerprint []any
	var members []any
	if s.dedup != nil && len(toCheck) > 0 {
		members = fingerprints(toCheck)
		fingerprint = make([]any, len(req.calls))
		for k, i := range checkIdx {
			fingerprint[i] = members[k]
		}
	}
	// The records are built while Redis answers: a repeat is rare, and
	// its record is then dropped unsent, while the wait for Redis is in
	// every request. The build runs beside and this goroutine waits for
	// Redis, so the answer wakes the request directly.
	var seen []bool
	build := s.buildRecords(req, ws, receivedAt, ids, skip, members != nil)
	if members != nil {
		start := time.Now()
		var err error
		seen, err = s.dedup.seen(ctx, ws, toCheck, members)
		s.metrics.dedupCheck.Observe(time.Since(start).Seconds())
		if err != nil {
			// Dedup is an optimisation over at-least-once delivery:
			// without Redis, produce rather than refuse.
			s.metrics.dedupErrors.Inc()
			s.logger.WarnContext(ctx, "dedup lookup failed; producing without it", "err", err)
		}
	}
	<-build.done
	records, callOf := build.records, build.callOf
	var already, rest []string
	for k, id := range toCheck {
		if k < len(seen) && seen[k] {
			skip[checkIdx[k]] = true
			already = append(already, id)
		} else {
			rest = append(rest, id)
		}
	}
	s.flights.release(ws, already, allTrue(len(already)))
	toCheck = rest // exactly the claims this request will produce
	if build.err != nil {
		s.flights.release(ws, toCheck, nil)
		return nil, build.err
	}
	if len(already) > 0 {
		records, callOf = unskipped(records, callOf, skip)
	}
	s.metrics.deduplicated.Add(float64(len(req.calls) - len(records)))
	// Generated ids are never sent again, so only the client's are kept in
	// the dedup window.
	clientID := make([]string, len(records))
	var marks []any
	if fingerprint != nil {
		marks = make([]any, len(records))
	}
	for j, i := range callOf {
		if req.calls[i].messageID != "" {
			clientID[j] = ids[i]
			if marks != nil {
				marks[j] = fingerprint[i]
			}
		}
	}
	if err := s.produce(ctx, ws, records, clientID, marks); err != nil {
		return nil, err
	}
	s.metrics.batchSize.Observe(float64(len(req.calls)))
	// One counter update per run of calls of the same type, not one per
	// event: a label lookup per event was a measurable share of a batch.
	for i := 0; i < len(req.calls); {
		j := i + 1
		for j < len(req.calls) && req.calls[j].typ == req.calls[i].typ {
			j++
		}
		s.metrics.accepted.WithLabelValues(api, callTypeNames[req.calls[i].typ]).Add(float64(j - i))
		i = j
	}
	return ids, nil
}

// recordsBuild is req.records running beside the request: its results are
// set when done closes.
type recordsBuild struct {
	done    chan struct{}
	records []*kgo.Record
	callOf  []int
	err     error
}

// buildRecords runs req.records, in another goroutine when beside is
// set. skip must not change until done closes.
func (s *Service) buildRecords(req *request, ws string, receivedAt time.Time, ids []string, skip []bool, beside bool) *recordsBuild {
	b := &recordsBuild{done: make(chan struct{})}
	run := func() {
		defer close(b.done)
		b.records, b.callOf, b.err = req.records(ws, receivedAt, ids, skip)
	}
	if beside {
		go run()
	} else {
		run()
	}
	return b
}

// unskipped keeps the records whose calls are not skipped, in place.
func unskipped(records []*kgo.Record, callOf []int, skip []bool) ([]*kgo.Record, []int) {
	n := 0
	for j, i := range callOf {
		if !skip[i] {
			records[n], callOf[n] = records[j], i
			n++
		}
	}
	return records[:n], callOf[:n]
}

func allTrue(n int) []bool {
	b := make([]bool, n)
	for i := range b {
		b[i] = true
	}
	return b
}

// produce writes records and waits, at most the ack timeout, for the
// broker's answer on each. clientID[j] is the client's message id of
// records[j], claimed by the caller, or empty; marks[j], when marks is not
// nil, is its dedup fingerprint, or nil. Whenever the answers come,
// even after the caller gave up, the acknowledged ids are marked in the
// dedup window and every claim is released with its outcome.
func (s *Service) produce(ctx context.Context, ws string, records []*kgo.Record, clientID []string, marks []any) error {
	if len(records) == 0 {
		return nil
	}
	// A client hanging up must not cancel records already handed over: that
	// would only turn a success into a partial write.
	ctx = context.WithoutCancel(ctx)
	// One span for the request's records, not one per record: they share
	// its context, written once into every record's headers.
	ctx, span := tracing.StartSend(ctx, s.tracing, kafka.TopicEvents, len(records))
	tracing.InjectRecords(ctx, records...)
	var (
		pending  atomic.Int64
		mu       sync.Mutex
		firstErr error
		ok       = make([]bool, len(records))
		acked    = make(chan struct{})
	)
	start := time.Now()
	// The last answer wakes the request itself: no goroutine waits in
	// between, so one fewer hand-over is on every request's path.
	pending.Store(int64(len(records)))
	answered := func() {
		s.metrics.produce.Observe(time.Since(start).Seconds())
		close(acked)
		if firstErr != nil { // no write once all answered
			span.SetStatus(codes.Error, firstErr.Error())
		}
		span.End()
		// Off the producer's goroutine, which answers other requests'
		// records too: remember the acked ids, then end the claims. A
		// retry in this process waits on the claim, so it sees the
		// outcome even before the mark lands in Redis.
		go s.afterAnswer(ctx, ws, clientID, marks, ok)
	}
	for i, r := range records {
		s.producer.TryProduce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cause := "broker"
				if errors.Is(err, kgo.ErrMaxBuffered) {
					cause = "buffer_full"
				}
				s.metrics.produceFails.WithLabelValues(cause).Inc()
			} else {
				ok[i] = true
			}
			if pending.Add(-1) == 0 {
				answered()
			}
		})
	}
	timer := time.NewTimer(s.ackTimeout)
	defer timer.Stop()
	select {
	case <-acked:
	case <-timer.C:
		// An idempotent producer cannot give up on a request the broker may
		// have received, so a broker that stops answering would hold the
		// caller forever. Answer "unavailable" instead; should the records
		// land later, they are marked then and a retry is deduplicated.
		s.metrics.produceFails.WithLabelValues("ack_timeout").Add(float64(len(records)))
		return fmt.Errorf("%w: no broker acknowledgement within %v", ErrUnavailable, s.ackTimeout)
	}
	if firstErr != nil {
		n := 0
		for _, yes := range ok {
			if !yes {
				n++
			}
		}
		return fmt.Errorf("%w: %d of %d records not written: %v", ErrUnavailable, n, len(records), firstErr)
	}
	return nil
}

// afterAnswer counts the acknowledged records, marks the acknowledged
// client ids in the dedup window and releases every claim with its outcome
// (see produce).
func (s *Service) afterAnswer(ctx context.Context, ws string, clientID []string, marks []any, ok []bool) {
	n := 0
	var toMark []any
	for j, yes := range ok {
		if yes {
			n++
			if marks != nil && marks[j] != nil {
				toMark = append(toMark, marks[j])
			}
		}
	}
	s.metrics.acked.Add(float64(n))
	if s.dedup != nil && len(toMark) > 0 {
		markCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		markStart := time.Now()
		err := s.dedup.mark(markCtx, ws, toMark)
		s.metrics.dedupMark.Observe(time.Since(markStart).Seconds())
		if err != nil {
			s.metrics.dedupErrors.Inc()
			s.logger.Warn("dedup mark failed; a retry may produce these events again", "err", err, "events", len(toMark))
		}
		cancel()
	}
	s.flights.release(ws, clientID, ok)
}
