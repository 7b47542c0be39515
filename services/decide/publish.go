package decide

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/tracing"
)

const (
	// A publisher deletes acknowledged decisions from the outbox in one
	// statement per deleteEvery, or sooner once deleteBatch are waiting:
	// one statement for many decisions rather than a transaction per poll.
	deleteEvery = 100 * time.Millisecond
	deleteBatch = 1000
	// drainTimeout bounds how long Run waits, on the way out, for the
	// broker to acknowledge what was produced and for the last deletion.
	// What is not acknowledged by then stays in the outbox for a sweeper.
	drainTimeout = 10 * time.Second
)

// publisher produces decision records to whisper.decisions without
// waiting for them: the consumer, the Decide calls, the wait scheduler and
// the outbox sweeper hand it committed decisions and go on. The decisions
// are in the outbox already (inserted with them); a decision whose record
// the broker acknowledges is deleted from it by the publisher's loop (run,
// in Run), many at a time. One whose produce fails stays there, and a
// sweeper publishes it once it is outboxDelay old.
//
// Records handed over in one call, and calls made one after the other,
// keep their order on each partition: the client produces a partition's
// records in the order Produce was called (idempotently, so retries keep
// it too).
type publisher struct {
	client *kgo.Client
	store  *Store
	// failed counts a failed operation: "publish decisions" (a produce)
	// or "delete outbox".
	failed  func(operation string)
	logger  *slog.Logger
	mu      sync.Mutex
	acked   []outboxKey // acknowledged, to delete from the outbox
	pending int         // produced, not yet acknowledged or failed
	idle    chan struct{}
	// full is signalled when deleteBatch acknowledged keys wait.
	full chan struct{}
}

func newPublisher(client *kgo.Client, store *Store, failed func(operation string), logger *slog.Logger) *publisher {
	return &publisher{client: client, store: store, failed: failed, logger: logger, idle: closed(), full: make(chan struct{}, 1)}
}

func closed() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}

// published is what one send call produced; wait waits for it.
type published struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

// wait returns once every record of the call was acknowledged or failed
// (the first error), or ctx ends.
func (p *published) wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// send produces the committed decisions ds in order and returns without
// waiting for the broker. values[i], when there is one, is ds[i]
// marshaled already; traceOf, when set, gives the context of decision i's
// trigger, whose trace its record carries.
func (p *publisher) send(ds []*decisionv1.Decision, values [][]byte, traceOf func(i int) context.Context) (*published, error) {
	recs := make([]*kgo.Record, len(ds))
	for i, d := range ds {
		var v []byte
		if i < len(values) {
			v = values[i]
		}
		if v == nil {
			var err error
			if v, err = d.MarshalVT(); err != nil {
				return nil, fmt.Errorf("encode decision: %w", err)
			}
		}
		recs[i] = &kgo.Record{Topic: kafka.TopicDecisions, Key: kafka.Key(d.GetWorkspaceId(), d.GetUserId()), Value: v}
		if traceOf != nil {
			tracing.InjectRecords(traceOf(i), recs[i])
		}
	}
	out := &published{}
	out.wg.Add(len(recs))
	p.mu.Lock()
	if p.pending == 0 {
		p.idle = make(chan struct{})
	}
	p.pending += len(recs)
	p.mu.Unlock()
	for i, rec := range recs {
		key := outboxKey{ds[i].GetWorkspaceId(), ds[i].GetDecisionId()}
		// Not the caller's context: the records are committed decisions,
		// to publish whoever asked; Run bounds the wait for them.
		p.client.Produce(context.Background(), rec, func(_ *kgo.Record, err error) {
			p.done(key, err)
			if err != nil {
				out.mu.Lock()
				if out.err == nil {
					out.err = fmt.Errorf("produce decisions: %w", err)
				}
				out.mu.Unlock()
			}
			out.wg.Done()
		})
	}
	return out, nil
}

// done takes note of one record's outcome.
func (p *publisher) done(key outboxKey, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pending--
	if p.pending == 0 {
		close(p.idle)
	}
	if err != nil {
		p.failed("publish decisions")
		p.logger.Warn("produce a decision; the outbox sweeper will publish it", "err", err, "decision_id", key.id)
		return
	}
	p.acked = append(p.acked, key)
	if len(p.acked) == deleteBatch {
		select {
		case p.full <- struct{}{}:
		default:
		}
	}
}

// run deletes acknowledged decisions from the outbox until ctx ends.
func (p *publisher) run(ctx context.Context) {
	t := time.NewTicker(deleteEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.full:
		}
		if err := p.deleteAcked(ctx); err != nil && ctx.Err() == nil {
			p.failed("delete outbox")
			p.logger.WarnContext(ctx, "delete published decisions from the outbox; retrying", "err", err)
		}
	}
}

// deleteAcked deletes the acknowledged decisions from the outbox; on error
// they are kept for the next call.
func (p *publisher) deleteAcked(ctx context.Context) error {
	p.mu.Lock()
	keys := p.acked
	p.acked = nil
	p.mu.Unlock()
	if len(keys) == 0 {
		return nil
	}
	err := p.store.deleteOutbox(ctx, keys)
	if err != nil {
		p.mu.Lock()
		p.acked = append(keys, p.acked...)
		p.mu.Unlock()
	}
	return err
}

// drain waits for the records produced so far to be acknowledged and
// deletes them from the outbox, within drainTimeout: what is left is
// published again by a sweeper, harmlessly.
func (p *publisher) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	p.mu.Lock()
	idle := p.idle
	p.mu.Unlock()
	select {
	case <-idle:
	case <-ctx.Done():
		p.logger.Warn("stopping with decisions not yet acknowledged by the broker; a sweeper will publish them")
	}
	if err := p.deleteAcked(ctx); err != nil {
		p.logger.Warn("delete published decisions from the outbox; a sweeper will publish them again", "err", err)
	}
}
