package devenv

import (
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// ttlTick is how often the in-process Redis runs its TTLs down.
const ttlTick = 5 * time.Second

// devRedis is miniredis on a free loopback port with TTLs that follow the
// wall clock. Its data lives only in memory, so a fixed port would buy
// nothing across restarts.
type devRedis struct {
	*miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
}

// startRedis starts the in-process Redis.
//
// miniredis leaves TTLs frozen unless told otherwise, and the services rely
// on keys expiring (caps, rate limits, dedup windows). Its ClockTTL mode
// would do it, but walks and sorts every key on every command, which makes
// each command cost O(keys log keys) and collapses under load. A ticker
// that fast-forwards every few seconds pays that walk once per tick instead;
// keys then expire up to one tick late, which no service depends on.
//
// tick is how often TTLs run down: ttlTick outside tests.
func startRedis(tick time.Duration) (*devRedis, error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("redis: starting in-process Redis on a free 127.0.0.1 port: %w", err)
	}
	r := &devRedis{Miniredis: m, stop: make(chan struct{}), done: make(chan struct{})}
	go r.runTTLs(tick)
	return r, nil
}

func (r *devRedis) runTTLs(tick time.Duration) {
	defer close(r.done)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			r.FastForward(now.Sub(last))
			last = now
		}
	}
}

// Close stops the TTL ticker and the server.
func (r *devRedis) Close() {
	close(r.stop)
	<-r.done
	r.Miniredis.Close()
}
