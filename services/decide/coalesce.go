package decide

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/structpb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
)

// Decide calls are coalesced into batches, group-commit style: a call
// that finds fewer than maxDecideBatches batches running starts one at
// once with every call queued; the others queue, and when a batch ends it
// hands the queue to the first call waiting, which runs the next batch.
// An idle service therefore adds no delay to a call, and a busy one makes
// one transaction (one commit, one contact-policy pipeline, one produce)
// per batch instead of per call: at 1,000 calls a second, a few batches a
// millisecond apart rather than 1,000 fsyncs.
const (
	// maxDecideBatches is how many batches of Decide calls run at once:
	// two, so one can be committing while the next is deciding. More
	// make smaller batches: at 1,000 calls/s with four, nearly every call
	// was a batch of its own (seven round trips each), and the p99 through
	// whisper dev was 8.5-11.2 ms against 6.9-8.0 ms with two.
	maxDecideBatches = 2
	maxDecideBatch   = 256
	// decideBatchTimeout bounds a batch, which runs detached from the
	// caller that runs it (its cancellation must not fail the others).
	decideBatchTimeout = 30 * time.Second
)

// decideCall is one Decide call waiting for its batch.
type decideCall struct {
	ctx                             context.Context
	ws, campaignID, user, requestID string
	props                           *structpb.Struct

	// done is closed when d and err are set.
	done chan struct{}
	d    *decisionv1.Decision
	err  error
	// lead is closed when the call is to run the next batch; leading
	// says so under the coalescer's lock.
	lead    chan struct{}
	leading bool
}

func (c *decideCall) finish(d *decisionv1.Decision, err error) {
	c.d, c.err = d, err
	close(c.done)
}

// coalescer queues Decide calls for their batches.
type coalescer struct {
	mu      sync.Mutex
	queue   []*decideCall
	running int
}

// decideNow runs a campaign for a user on request (the Decide RPC), in a
// batch with the calls made at the same time. A call whose context ends
// while it waits returns at once; one already in a running batch may still
// be decided, and a retry with its request id then finds that decision.
func (s *Service) decideNow(ctx context.Context, ws, campaignID, user, requestID string, props *structpb.Struct) (*decisionv1.Decision, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	call := &decideCall{
		ctx: ctx, ws: ws, campaignID: campaignID, user: user, requestID: requestID, props: props,
		done: make(chan struct{}), lead: make(chan struct{}),
	}
	co := &s.calls
	co.mu.Lock()
	co.queue = append(co.queue, call)
	starts := co.running < maxDecideBatches
	if starts {
		co.running++
		call.leading = true
	}
	co.mu.Unlock()
	if !starts {
		select {
		case <-call.done:
		case <-call.lead:
		case <-ctx.Done():
			co.mu.Lock()
			if !call.leading {
				for i, c := range co.queue {
					if c == call {
						co.queue = append(co.queue[:i:i], co.queue[i+1:]...)
						break
					}
				}
			}
			co.mu.Unlock()
		}
	}
	// A call handed the next batch runs it whatever else happened to it
	// (decided by another batch meanwhile, or its context ended): the
	// calls queued behind it wait for that. Once out of the queue (done,
	// or removed above) a call can no longer be handed one.
	co.mu.Lock()
	leading := call.leading
	co.mu.Unlock()
	if leading {
		s.runDecideBatch(ctx)
	}
	select {
	case <-call.done:
		return call.d, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// runDecideBatch decides the queued calls (up to maxDecideBatch), then
// hands what queued meanwhile to the first call waiting, or ends its run.
func (s *Service) runDecideBatch(ctx context.Context) {
	co := &s.calls
	co.mu.Lock()
	n := min(len(co.queue), maxDecideBatch)
	calls := make([]*decideCall, n)
	copy(calls, co.queue)
	co.queue = append(co.queue[:0:0], co.queue[n:]...)
	co.mu.Unlock()

	// Hand on even if deciding panics, so the calls queued behind are not
	// stranded; this batch's calls get an error.
	defer s.handOff()
	defer func() {
		if r := recover(); r != nil {
			for _, c := range calls {
				select {
				case <-c.done:
				default:
					c.finish(nil, fmt.Errorf("deciding the batch panicked: %v", r))
				}
			}
			panic(r)
		}
	}()
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), decideBatchTimeout)
	defer cancel()
	s.decideCalls(bctx, calls)
}

// handOff gives the queue to the first call waiting that no batch has
// been handed to yet, or ends a batch's run when none waits.
func (s *Service) handOff() {
	co := &s.calls
	co.mu.Lock()
	defer co.mu.Unlock()
	for _, next := range co.queue {
		// A call handed a batch already (by another batch that ended)
		// takes the queue when it runs; hand the next one to another.
		if !next.leading {
			next.leading = true
			close(next.lead)
			return
		}
	}
	co.running--
}

// decideCalls decides a batch of Decide calls and finishes each: a
// call's own error (an unknown or inactive campaign, its context ended)
// is its alone; when the batch's transaction fails, each call is decided
// again in a transaction of its own, so one bad call cannot fail the
// others. Calls with the same trigger (request id) share one decision.
func (s *Service) decideCalls(ctx context.Context, calls []*decideCall) {
	type lookup struct {
		c   *campaignv1.Campaign
		err error
	}
	campaigns := map[campaignKey]lookup{}
	var (
		runs   []*pendingRun
		owners [][]*decideCall
		byKey  = map[triggerKey]int{}
	)
	for _, call := range calls {
		if err := call.ctx.Err(); err != nil {
			call.finish(nil, err)
			continue
		}
		k := campaignKey{call.ws, call.campaignID}
		l, ok := campaigns[k]
		if !ok {
			l.c, l.err = s.campaignCache.get(ctx, s.store, k, s.now())
			if l.err == nil && l.c.GetStatus() != campaignv1.CampaignStatus_CAMPAIGN_STATUS_ACTIVE {
				l.err = errNotActive
			}
			campaigns[k] = l
		}
		if l.err != nil {
			call.finish(nil, l.err)
			continue
		}
		step := &decisionv1.Step{Name: "trigger", Result: "request", Inputs: map[string]string{"request_id": call.requestID}}
		var propsJSON []byte
		if call.props != nil {
			propsJSON, _ = json.Marshal(call.props.AsMap())
			step.Inputs["properties"] = string(propsJSON)
		}
		p := &pendingRun{c: l.c, tr: trigger{ws: call.ws, user: call.user, id: "request:" + call.requestID, step: step, props: propsJSON}}
		if i, ok := byKey[p.key()]; ok {
			owners[i] = append(owners[i], call)
			continue
		}
		byKey[p.key()] = len(runs)
		runs = append(runs, p)
		owners = append(owners, []*decideCall{call})
	}
	if len(runs) == 0 {
		return
	}
	finish := func(i int, err error) {
		for _, call := range owners[i] {
			if err != nil {
				call.finish(nil, err)
			} else {
				call.finish(runs[i].res.decision, nil)
			}
		}
	}
	out, err := s.decideRuns(ctx, runs)
	if err != nil && len(runs) > 1 {
		s.logger.WarnContext(ctx, "a batch of Decide calls failed; deciding them one by one", "err", err, "calls", len(runs))
		for i := range runs {
			one, err := s.decideRuns(ctx, runs[i:i+1])
			finish(i, err)
			out.add(one)
		}
	} else {
		for i := range runs {
			finish(i, err)
		}
	}
	// The callers have their answers once the decisions are committed (the
	// outbox publishes what this fails to); publishing after them keeps
	// the produce out of every call's latency.
	if len(out.decisions) > 0 {
		if _, err := s.pub.send(out.decisions, out.values, nil); err != nil {
			s.logger.WarnContext(ctx, "publish decisions; the outbox will retry", "err", err, "decisions", len(out.decisions))
		}
	}
}

// decided are committed decisions to publish, with their records.
type decided struct {
	decisions []*decisionv1.Decision
	values    [][]byte
}

func (d *decided) add(o decided) {
	d.decisions, d.values = append(d.decisions, o.decisions...), append(d.values, o.values...)
}

// maxLostRaces bounds how many times in a row a batch of Decide calls is
// decided again because another transaction decided one of its triggers
// meanwhile (errLostRace): each time finds the decisions made before.
const maxLostRaces = 3

// decideRuns decides runs in one transaction and returns the decisions
// to publish.
func (s *Service) decideRuns(ctx context.Context, runs []*pendingRun) (decided, error) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	for attempt := 1; ; attempt++ {
		var held []*contactRequest
		err := pgx.BeginFunc(ctx, s.store.pool, func(tx pgx.Tx) (err error) {
			held, err = s.runAll(ctx, tx, runs, rng)
			return err
		})
		if err == nil {
			break
		}
		for _, r := range held {
			s.release(ctx, r)
		}
		if !errors.Is(err, errLostRace) || attempt == maxLostRaces {
			return decided{}, err
		}
	}
	var out decided
	for _, p := range runs {
		r := p.res
		if r.fresh && !r.waiting {
			s.metrics.decided(r.decision)
		}
		if r.waiting {
			s.metrics.waits.WithLabelValues("started").Inc()
		}
		if r.publish {
			out.decisions, out.values = append(out.decisions, r.decision), append(out.values, r.record)
		}
	}
	return out, nil
}

// campaignTTL is how long Decide batches use a campaign one of them read:
// about as long as the consumer uses the campaigns it reads once per poll,
// so a campaign changed on another replica is decided with its new
// version or status within a second there too. Changes made through this
// process take effect at once (forget). Reading it per batch was a
// transaction of its own in every batch, when batches are often one call.
const campaignTTL = time.Second

// maxCachedCampaigns bounds the cache; past it, it starts over.
const maxCachedCampaigns = 10_000

type campaignKey struct{ ws, id string }

// campaigns caches the latest version of the campaigns Decide calls name.
type campaigns struct {
	mu sync.Mutex
	m  map[campaignKey]cachedCampaign
}

type cachedCampaign struct {
	c    *campaignv1.Campaign
	read time.Time
}

// get returns campaign k, from the cache when it was read less than
// campaignTTL before now. Lookups that fail (not found) are not kept.
func (cs *campaigns) get(ctx context.Context, store *Store, k campaignKey, now time.Time) (*campaignv1.Campaign, error) {
	cs.mu.Lock()
	e, ok := cs.m[k]
	cs.mu.Unlock()
	if ok && now.Sub(e.read) < campaignTTL {
		return e.c, nil
	}
	c, err := store.getCampaign(ctx, store.pool, k.ws, k.id, 0)
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	if cs.m == nil || len(cs.m) >= maxCachedCampaigns {
		cs.m = map[campaignKey]cachedCampaign{}
	}
	cs.m[k] = cachedCampaign{c: c, read: now}
	cs.mu.Unlock()
	return c, nil
}

// forget drops campaign k, changed through this process.
func (cs *campaigns) forget(ws, id string) {
	cs.mu.Lock()
	delete(cs.m, campaignKey{ws, id})
	cs.mu.Unlock()
}
