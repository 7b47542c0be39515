package telemetry

import (
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Connection pools are read at scrape time rather than instrumented per
// call: pgxpool and go-redis already keep cumulative counters, so a
// collector copies them out when Prometheus asks and costs nothing on the
// hot path. The pool's name is a constant label, one collector per pool,
// so cardinality is the number of pools a process builds.

// PgxPool is what the pool collector reads; *pgxpool.Pool implements it.
type PgxPool interface {
	Stat() *pgxpool.Stat
}

// PgxPoolCollector exports one pgx pool's statistics as whisper_pgxpool_*
// with a pool label.
type PgxPoolCollector struct {
	pool PgxPool

	acquired, idle, constructing, total, max  *prometheus.Desc
	acquires, acquireSeconds, emptyAcquires   *prometheus.Desc
	emptyAcquireWaitSeconds, canceledAcquires *prometheus.Desc
	newConns, destroyedConns                  *prometheus.Desc
}

// NewPgxPoolCollector returns a collector of pool, labelled pool=name.
// name must be a fixed word ("main", "profiles"), never built from input.
func NewPgxPoolCollector(name string, pool PgxPool) *PgxPoolCollector {
	l := prometheus.Labels{"pool": name}
	d := func(metric, help string, variable ...string) *prometheus.Desc {
		return prometheus.NewDesc("whisper_pgxpool_"+metric, help, variable, l)
	}
	return &PgxPoolCollector{
		pool:           pool,
		acquired:       d("acquired_connections", "Connections currently acquired (in use) from the PostgreSQL pool."),
		idle:           d("idle_connections", "Idle connections in the PostgreSQL pool."),
		constructing:   d("constructing_connections", "Connections of the PostgreSQL pool being established."),
		total:          d("connections", "Connections in the PostgreSQL pool: acquired, idle and constructing."),
		max:            d("max_connections", "Maximum size of the PostgreSQL pool (pool_max_conns)."),
		acquires:       d("acquires_total", "Successful acquires of a connection from the PostgreSQL pool."),
		acquireSeconds: d("acquire_duration_seconds_total", "Time spent in successful acquires from the PostgreSQL pool, waiting included."),
		emptyAcquires: d("empty_acquires_total",
			"Successful acquires that had to wait because no connection was idle: the pool was exhausted or still growing."),
		emptyAcquireWaitSeconds: d("empty_acquire_wait_seconds_total",
			"Time successful acquires spent waiting for a connection to be released or established because none was idle."),
		canceledAcquires: d("canceled_acquires_total", "Acquires from the PostgreSQL pool abandoned because their context ended first."),
		newConns:         d("new_connections_total", "Connections the PostgreSQL pool opened."),
		destroyedConns: d("destroyed_connections_total",
			"Connections the PostgreSQL pool closed for age, by reason: max_lifetime or max_idle.", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (c *PgxPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.acquired, c.idle, c.constructing, c.total, c.max,
		c.acquires, c.acquireSeconds, c.emptyAcquires, c.emptyAcquireWaitSeconds, c.canceledAcquires,
		c.newConns, c.destroyedConns,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PgxPoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.pool.Stat()
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter := func(d *prometheus.Desc, v float64, lvs ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, lvs...)
	}
	gauge(c.acquired, float64(s.AcquiredConns()))
	gauge(c.idle, float64(s.IdleConns()))
	gauge(c.constructing, float64(s.ConstructingConns()))
	gauge(c.total, float64(s.TotalConns()))
	gauge(c.max, float64(s.MaxConns()))
	counter(c.acquires, float64(s.AcquireCount()))
	counter(c.acquireSeconds, s.AcquireDuration().Seconds())
	counter(c.emptyAcquires, float64(s.EmptyAcquireCount()))
	counter(c.emptyAcquireWaitSeconds, s.EmptyAcquireWaitTime().Seconds())
	counter(c.canceledAcquires, float64(s.CanceledAcquireCount()))
	counter(c.newConns, float64(s.NewConnsCount()))
	counter(c.destroyedConns, float64(s.MaxLifetimeDestroyCount()), "max_lifetime")
	counter(c.destroyedConns, float64(s.MaxIdleDestroyCount()), "max_idle")
}

// RedisPool is what the Redis pool collector reads; *redis.Client
// implements it.
type RedisPool interface {
	PoolStats() *redis.PoolStats
	Options() *redis.Options
}

// RedisPoolCollector exports one go-redis client's connection pool
// statistics as whisper_redis_pool_* with a client label.
type RedisPoolCollector struct {
	rdb RedisPool

	hits, misses, timeouts, waits, waitSeconds, stale *prometheus.Desc
	total, idle, pending, max                         *prometheus.Desc
}

// NewRedisPoolCollector returns a collector of rdb's pool, labelled
// client=name. name must be a fixed word ("ingest", "profiles").
func NewRedisPoolCollector(name string, rdb RedisPool) *RedisPoolCollector {
	l := prometheus.Labels{"client": name}
	d := func(metric, help string) *prometheus.Desc {
		return prometheus.NewDesc("whisper_redis_pool_"+metric, help, nil, l)
	}
	return &RedisPoolCollector{
		rdb:         rdb,
		hits:        d("hits_total", "Commands that found an idle connection in the Redis pool."),
		misses:      d("misses_total", "Commands that found no idle connection in the Redis pool and had to open or wait for one."),
		timeouts:    d("timeouts_total", "Commands that gave up waiting for a Redis pool connection (PoolTimeout): the pool was exhausted."),
		waits:       d("waits_total", "Commands that waited for a Redis pool connection because the pool was at its size."),
		waitSeconds: d("wait_duration_seconds_total", "Time commands spent waiting for a Redis pool connection."),
		stale:       d("stale_connections_total", "Connections the Redis pool closed as stale (idle too long or too old)."),
		total:       d("connections", "Connections in the Redis pool, idle and in use."),
		idle:        d("idle_connections", "Idle connections in the Redis pool."),
		pending:     d("pending_requests", "Commands currently waiting for a Redis pool connection."),
		max:         d("max_connections", "Size of the Redis pool (PoolSize)."),
	}
}

// Describe implements prometheus.Collector.
func (c *RedisPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.hits, c.misses, c.timeouts, c.waits, c.waitSeconds, c.stale,
		c.total, c.idle, c.pending, c.max,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *RedisPoolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.rdb.PoolStats()
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v)
	}
	counter(c.hits, float64(s.Hits))
	counter(c.misses, float64(s.Misses))
	counter(c.timeouts, float64(s.Timeouts))
	counter(c.waits, float64(s.WaitCount))
	counter(c.waitSeconds, float64(s.WaitDurationNs)/1e9)
	counter(c.stale, float64(s.StaleConns))
	gauge(c.total, float64(s.TotalConns))
	gauge(c.idle, float64(s.IdleConns))
	gauge(c.pending, float64(s.PendingRequests))
	gauge(c.max, float64(c.rdb.Options().PoolSize))
}
