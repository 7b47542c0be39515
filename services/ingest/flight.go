package ingest

import (
	"context"
	"hash/maphash"
	"math/bits"
	"sync"
	"time"
)

// flights tracks the client message ids this process is producing right
// now. When a client retries a request whose first attempt is still waiting
// for the broker (it timed out on the client's side, or got a 503 from the
// ack timeout), the retry waits for that attempt's outcome instead of
// producing the same event a second time. Across processes the Redis window
// does this once the first attempt is acknowledged.
//
// Every request claims about a hundred ids, so the bookkeeping is per
// request, not per id: the ids one claim takes share one flight (one
// channel, one allocation). The map is keyed by a seeded 64-bit hash of
// workspace and id, and an entry is 24 bytes: at 32 connections about
// 3,200 ids are in flight, and a map keyed by the two strings (48-byte
// entries) missed the CPU caches on nearly every lookup, a tenth of the
// ingest target's CPU. The flight keeps the ids it claimed, so two ids with
// one hash (about one chance in 2^64 per pair, the seed unknown to
// clients) are told apart: the later waits for the earlier's flight, then
// claims.
type flights struct {
	mu   sync.Mutex
	seed maphash.Seed
	// mask is all ones; a test clears it to make every id collide.
	mask uint64
	m    map[uint64]claimRef
}

// flight is the ids one claim took. done closes when the last of them is
// released; produced[i] is then the outcome of the claim's i-th id.
type flight struct {
	done     chan struct{}
	open     int // ids not yet released, under flights.mu
	ws       string
	ids      []string
	produced []bool
}

// claimRef is one id's place in the flight that claimed it: f.ids[i].
type claimRef struct {
	f *flight
	i int
}

func (r claimRef) is(ws, id string) bool { return r.f.ws == ws && r.f.ids[r.i] == id }

func newFlights() *flights {
	return &flights{seed: maphash.MakeSeed(), mask: ^uint64(0), m: map[uint64]claimRef{}}
}

// keyer makes the map keys of one workspace's ids.
type keyer struct {
	seed     maphash.Seed
	ws, mask uint64
}

func (f *flights) keyer(ws string) keyer {
	return keyer{f.seed, bits.RotateLeft64(maphash.String(f.seed, ws), 31), f.mask}
}

func (k keyer) key(id string) uint64 { return (maphash.String(k.seed, id) ^ k.ws) & k.mask }

// claim makes the caller the producer of each of ids that no earlier
// flight produced, waiting up to wait for earlier flights of any of them to
// end. It returns which ids an earlier flight produced (those are not
// claimed), and the claimed ids, which the caller must release. Claims are
// taken for all ids at once, under one lock, so no outcome of an earlier
// flight is missed while waiting for another. An error means an earlier
// flight is still unanswered; nothing is then claimed.
//
// A waiter wakes when the whole earlier flight has ended, which may be a
// little after its own id was released: it never sees an outcome early.
func (f *flights) claim(ctx context.Context, ws string, ids []string, wait time.Duration) (produced []bool, err error) {
	produced = make([]bool, len(ids))
	pending := make([]int, len(ids))
	for i := range ids {
		pending[i] = i
	}
	var claimed []string
	var timer *time.Timer
	keys := f.keyer(ws)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(pending) > 0 {
		var waitOn []claimRef
		var waitIdx []int
		var fl *flight
		f.mu.Lock()
		for _, i := range pending {
			key := keys.key(ids[i])
			if prev, busy := f.m[key]; busy {
				waitOn = append(waitOn, prev)
				waitIdx = append(waitIdx, i)
				continue
			}
			if fl == nil {
				fl = &flight{done: make(chan struct{}), ws: ws, ids: make([]string, 0, len(pending)), produced: make([]bool, 0, len(pending))}
			}
			f.m[key] = claimRef{fl, len(fl.produced)}
			fl.ids = append(fl.ids, ids[i])
			fl.produced = append(fl.produced, false)
			fl.open++
			claimed = append(claimed, ids[i])
		}
		f.mu.Unlock()
		pending = pending[:0]
		if len(waitOn) > 0 && timer == nil {
			timer = time.NewTimer(wait)
		}
		for k, prev := range waitOn {
			select {
			case <-prev.f.done:
			case <-timer.C:
				f.release(ws, claimed, nil)
				return nil, context.DeadlineExceeded
			case <-ctx.Done():
				f.release(ws, claimed, nil)
				return nil, ctx.Err()
			}
			switch {
			case !prev.is(ws, ids[waitIdx[k]]):
				pending = append(pending, waitIdx[k]) // another id of the same hash
			case prev.f.produced[prev.i]:
				produced[waitIdx[k]] = true
			default:
				pending = append(pending, waitIdx[k])
			}
		}
	}
	return produced, nil
}

// release ends the claims of ids (empty ones are skipped), recording which
// were produced; a nil produced means none was.
func (f *flights) release(ws string, ids []string, produced []bool) {
	keys := f.keyer(ws)
	f.mu.Lock()
	defer f.mu.Unlock()
	for j, id := range ids {
		if id == "" {
			continue
		}
		key := keys.key(id)
		ref, ok := f.m[key]
		if !ok || !ref.is(ws, id) {
			continue
		}
		delete(f.m, key)
		ref.f.produced[ref.i] = produced != nil && produced[j]
		if ref.f.open--; ref.f.open == 0 {
			close(ref.f.done)
		}
	}
}
