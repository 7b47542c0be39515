package telemetry

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/redistest"
)

// sample reads every series of c by name (with the reason label appended
// for the one metric that has one). The collector is registered on a
// pedantic registry, which fails when Collect sends what Describe did not
// announce, or with another type or label set.
func sample(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" {
					key += "/" + lp.GetValue()
				}
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s: neither counter nor gauge", key)
			}
		}
	}
	return out
}

// positive removes the named (timing) series from got after checking they
// are above zero, or zero when wantZero: their exact values depend on the
// machine.
func positive(t *testing.T, step string, got map[string]float64, wantZero bool, names ...string) {
	t.Helper()
	for _, n := range names {
		v, ok := got[n]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", step, n)
		case wantZero && v != 0:
			t.Errorf("%s: %s = %g, want 0", step, n, v)
		case !wantZero && v <= 0:
			t.Errorf("%s: %s = %g, want > 0", step, n, v)
		}
		delete(got, n)
	}
}

func TestPgxPoolCollectorLintAndLabels(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("postgres://nobody@127.0.0.1:1/none?pool_max_conns=7")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg) // dials lazily
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c := NewPgxPoolCollector("main", pool)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Errorf("lint problems: %v", problems)
	}
	const want = `
# HELP whisper_pgxpool_max_connections Maximum size of the PostgreSQL pool (pool_max_conns).
# TYPE whisper_pgxpool_max_connections gauge
whisper_pgxpool_max_connections{pool="main"} 7
# HELP whisper_pgxpool_destroyed_connections_total Connections the PostgreSQL pool closed for age, by reason: max_lifetime or max_idle.
# TYPE whisper_pgxpool_destroyed_connections_total counter
whisper_pgxpool_destroyed_connections_total{pool="main",reason="max_idle"} 0
whisper_pgxpool_destroyed_connections_total{pool="main",reason="max_lifetime"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"whisper_pgxpool_max_connections", "whisper_pgxpool_destroyed_connections_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c); n != 13 {
		t.Errorf("collected %d series, want 13 (12 metrics, destroyed by two reasons)", n)
	}
}

// TestPgxPoolCollectorFollowsThePool drives a real two-connection pool
// through acquiring, exhaustion, a canceled acquire and a waiting acquire,
// and checks each step moves the series it should.
func TestPgxPoolCollectorFollowsThePool(t *testing.T) {
	cfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	c := NewPgxPoolCollector("profiles", pool)
	const (
		acquired     = "whisper_pgxpool_acquired_connections"
		idle         = "whisper_pgxpool_idle_connections"
		constructing = "whisper_pgxpool_constructing_connections"
		total        = "whisper_pgxpool_connections"
		maxConns     = "whisper_pgxpool_max_connections"
		acquires     = "whisper_pgxpool_acquires_total"
		acquireSecs  = "whisper_pgxpool_acquire_duration_seconds_total"
		empty        = "whisper_pgxpool_empty_acquires_total"
		emptyWait    = "whisper_pgxpool_empty_acquire_wait_seconds_total"
		canceled     = "whisper_pgxpool_canceled_acquires_total"
		newConns     = "whisper_pgxpool_new_connections_total"
		lifetime     = "whisper_pgxpool_destroyed_connections_total/max_lifetime"
		idleDestroy  = "whisper_pgxpool_destroyed_connections_total/max_idle"
	)
	check := func(step string, want map[string]float64, timingsZero bool) {
		t.Helper()
		got := sample(t, c)
		positive(t, step, got, timingsZero, acquireSecs)
		delete(got, emptyWait) // checked on its own below
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step, diff)
		}
	}
	zero := map[string]float64{acquired: 0, idle: 0, constructing: 0, total: 0, maxConns: 2,
		acquires: 0, empty: 0, canceled: 0, newConns: 0, lifetime: 0, idleDestroy: 0}
	check("new pool", zero, true)

	// Two acquires on an empty pool: each found nothing idle and waited
	// for a new connection.
	c1, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	exhausted := map[string]float64{acquired: 2, idle: 0, constructing: 0, total: 2, maxConns: 2,
		acquires: 2, empty: 2, canceled: 0, newConns: 2, lifetime: 0, idleDestroy: 0}
	check("both connections acquired", exhausted, false)

	// The pool is exhausted: an acquire with a short deadline gives up.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = pool.Acquire(short)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire on an exhausted pool: got %v, want deadline exceeded", err)
	}
	exhausted[canceled] = 1
	check("an acquire canceled", exhausted, false)

	// A waiting acquire gets the connection c1 gives back.
	waitedBefore := sample(t, c)[emptyWait]
	got := make(chan *pgxpool.Conn)
	go func() {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- conn
	}()
	time.Sleep(50 * time.Millisecond) // let it queue
	c1.Release()
	c3 := <-got
	if c3 == nil {
		t.FailNow()
	}
	exhausted[acquires], exhausted[empty] = 3, 3
	check("a waiting acquire served", exhausted, false)
	if waited := sample(t, c)[emptyWait]; waited-waitedBefore < 0.04 {
		t.Errorf("empty acquire wait grew by %gs, want at least the 50ms the acquire queued", waited-waitedBefore)
	}

	c2.Release()
	c3.Release()
	released := map[string]float64{acquired: 0, idle: 2, constructing: 0, total: 2, maxConns: 2,
		acquires: 3, empty: 3, canceled: 1, newConns: 2, lifetime: 0, idleDestroy: 0}
	check("all released", released, false)
}

func TestRedisPoolCollectorLint(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", PoolSize: 4}) // dials lazily
	defer rdb.Close()
	c := NewRedisPoolCollector("ingest", rdb)
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Errorf("lint problems: %v", problems)
	}
	const want = `
# HELP whisper_redis_pool_max_connections Size of the Redis pool (PoolSize).
# TYPE whisper_redis_pool_max_connections gauge
whisper_redis_pool_max_connections{client="ingest"} 4
# HELP whisper_redis_pool_timeouts_total Commands that gave up waiting for a Redis pool connection (PoolTimeout): the pool was exhausted.
# TYPE whisper_redis_pool_timeouts_total counter
whisper_redis_pool_timeouts_total{client="ingest"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"whisper_redis_pool_max_connections", "whisper_redis_pool_timeouts_total"); err != nil {
		t.Error(err)
	}
}

// TestRedisPoolCollectorFollowsThePool holds the only connection of a
// one-connection pool with a blocking command, so that the next command
// waits for the pool: once long enough to get the connection, once past
// PoolTimeout.
func TestRedisPoolCollectorFollowsThePool(t *testing.T) {
	opts, err := redis.ParseURL(redistest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	// No retries: a pool timeout is retried otherwise, and counted again.
	opts.PoolSize, opts.PoolTimeout, opts.MinIdleConns, opts.MaxRetries = 1, 500*time.Millisecond, 0, -1
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	c := NewRedisPoolCollector("profiles", rdb)
	const (
		hits, misses, timeouts = "whisper_redis_pool_hits_total", "whisper_redis_pool_misses_total", "whisper_redis_pool_timeouts_total"
		waits, waitSecs, stale = "whisper_redis_pool_waits_total", "whisper_redis_pool_wait_duration_seconds_total", "whisper_redis_pool_stale_connections_total"
		conns, idle            = "whisper_redis_pool_connections", "whisper_redis_pool_idle_connections"
		pending, maxConns      = "whisper_redis_pool_pending_requests", "whisper_redis_pool_max_connections"
	)
	ctx := context.Background()
	check := func(step string, want map[string]float64) map[string]float64 {
		t.Helper()
		got := sample(t, c)
		secs := got[waitSecs]
		delete(got, waitSecs) // timing: checked by the caller
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", step, diff)
		}
		got[waitSecs] = secs
		return got
	}
	check("new client", map[string]float64{hits: 0, misses: 0, timeouts: 0, waits: 0, stale: 0,
		conns: 0, idle: 0, pending: 0, maxConns: 1})

	// First command opens the connection (a miss), the second reuses it.
	for range 2 {
		if err := rdb.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	check("two pings", map[string]float64{hits: 1, misses: 1, timeouts: 0, waits: 0, stale: 0,
		conns: 1, idle: 1, pending: 0, maxConns: 1})

	// A dedicated connection (Client.Conn) holds the pool's only
	// connection until it is closed; a ping queued behind it waits.
	queued := func(hold time.Duration) error {
		held := rdb.Conn()
		if err := held.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error)
		go func() { done <- rdb.Ping(ctx).Err() }()
		time.Sleep(hold)
		held.Close()
		return <-done
	}
	if err := queued(200 * time.Millisecond); err != nil {
		t.Fatalf("ping queued for 200ms of a 500ms pool timeout: %v", err)
	}
	got := check("a ping waited", map[string]float64{hits: 3, misses: 1, timeouts: 0, waits: 1, stale: 0,
		conns: 1, idle: 1, pending: 0, maxConns: 1})
	if got[waitSecs] < 0.15 {
		t.Errorf("wait seconds = %g after a ping queued for 200ms, want about 0.2", got[waitSecs])
	}
	if err := queued(time.Second); !errors.Is(err, redis.ErrPoolTimeout) {
		t.Fatalf("ping on an exhausted pool: got %v, want %v", err, redis.ErrPoolTimeout)
	}
	check("a ping timed out", map[string]float64{hits: 4, misses: 1, timeouts: 1, waits: 1, stale: 0,
		conns: 1, idle: 1, pending: 0, maxConns: 1})
}
