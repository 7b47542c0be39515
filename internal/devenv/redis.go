package devenv

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// startRedis starts miniredis on a free loopback port. Its data lives only
// in memory, so a fixed port would buy nothing across restarts.
func startRedis() (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	// miniredis is built for unit tests and leaves TTLs frozen unless told
	// otherwise; the services rely on keys expiring (caps, rate limits,
	// dedup windows), so let the wall clock run them down.
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("redis: starting in-process Redis on a free 127.0.0.1 port: %w", err)
	}
	return m, nil
}
