package ingest

import (
	"context"
	"sync"
	"time"
)

// flights tracks the client message ids this process is producing right
// now. When a client retries a request whose first attempt is still waiting
// for the broker (it timed out on the client's side, or got a 503 from the
// ack timeout), the retry waits for that attempt's outcome instead of
// producing the same event a second time. Across processes the Redis window
// does this once the first attempt is acknowledged.
type flights struct {
	mu sync.Mutex
	m  map[string]*flight
}

type flight struct {
	done     chan struct{}
	produced bool
}

func newFlights() *flights { return &flights{m: map[string]*flight{}} }

func flightKey(ws, id string) string { return ws + "\x00" + id }

// claim makes the caller the producer of each of ids that no earlier
// flight produced, waiting up to wait for earlier flights of any of them to
// end. It returns which ids an earlier flight produced (those are not
// claimed), and the claimed ids, which the caller must release. Claims are
// taken for all ids at once, under one lock, so no outcome of an earlier
// flight is missed while waiting for another. An error means an earlier
// flight is still unanswered; nothing is then claimed.
func (f *flights) claim(ctx context.Context, ws string, ids []string, wait time.Duration) (produced []bool, err error) {
	produced = make([]bool, len(ids))
	pending := make([]int, len(ids))
	for i := range ids {
		pending[i] = i
	}
	var claimed []string
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(pending) > 0 {
		var waitOn []*flight
		var waitIdx []int
		f.mu.Lock()
		for _, i := range pending {
			key := flightKey(ws, ids[i])
			if prev, busy := f.m[key]; busy {
				waitOn = append(waitOn, prev)
				waitIdx = append(waitIdx, i)
				continue
			}
			f.m[key] = &flight{done: make(chan struct{})}
			claimed = append(claimed, ids[i])
		}
		f.mu.Unlock()
		pending = pending[:0]
		for k, prev := range waitOn {
			select {
			case <-prev.done:
			case <-timer.C:
				f.release(ws, claimed, nil)
				return nil, context.DeadlineExceeded
			case <-ctx.Done():
				f.release(ws, claimed, nil)
				return nil, ctx.Err()
			}
			if prev.produced {
				produced[waitIdx[k]] = true
			} else {
				pending = append(pending, waitIdx[k])
			}
		}
	}
	return produced, nil
}

// release ends the flights of ids (empty ones are skipped), recording which
// were produced; a nil produced means none was.
func (f *flights) release(ws string, ids []string, produced []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for j, id := range ids {
		if id == "" {
			continue
		}
		key := flightKey(ws, id)
		fl, ok := f.m[key]
		if !ok {
			continue
		}
		fl.produced = produced != nil && produced[j]
		delete(f.m, key)
		close(fl.done)
	}
}
