package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// withDependencies adds the "Dependencies" row of a service dashboard: the
// saturation of the PostgreSQL pools (pools selects them by name, as
// targets.Run names them) and of the Redis client (redisClient selects
// it). Pools are per pod, so every series keeps the pod: one saturated
// replica must not hide behind the average of the others.
func withDependencies(b *dashboard.DashboardBuilder, pools, redisClient string) *dashboard.DashboardBuilder {
	pg := ns + `,` + pools
	rd := ns + `,` + redisClient
	return b.
		WithRow(row("Dependencies")).
		WithPanel(panel{title: "PostgreSQL pool usage", unit: units.PercentUnit, width: 8,
			description: "Share of each pgx pool's connections acquired (in use), per pod and pool. At 100% new queries queue for a connection: see acquire waits. Alert PostgresPoolExhausted fires when it stays there with acquires queueing.",
			queries: q(query(`max by (pod, pool) (whisper_pgxpool_acquired_connections{`+pg+`}) / max by (pod, pool) (whisper_pgxpool_max_connections{`+pg+`})`,
				"{{pod}} {{pool}}"))}.timeseries()).
		WithPanel(panel{title: "PostgreSQL acquire waits", unit: units.OpsPerSecond, width: 8,
			description: "Acquires per second that found no idle connection and waited (for one to be released or opened), and acquires canceled while waiting (the caller's deadline passed first: those requests failed). Sustained waits mean the pool is too small or queries hold connections too long.",
			queries: q(
				query(`sum by (pod, pool) (rate(whisper_pgxpool_empty_acquires_total{`+pg+`}[$__rate_interval]))`, "{{pod}} {{pool}} waited"),
				query(`sum by (pod, pool) (rate(whisper_pgxpool_canceled_acquires_total{`+pg+`}[$__rate_interval]))`, "{{pod}} {{pool}} canceled"),
			)}.timeseries()).
		WithPanel(panel{title: "PostgreSQL mean acquire time", unit: units.Seconds, width: 8,
			description: "Mean time to get a connection from the pool, waits included, per pool: the delay every query pays before it even reaches PostgreSQL.",
			queries: q(query(`sum by (pool) (rate(whisper_pgxpool_acquire_duration_seconds_total{`+pg+`}[$__rate_interval])) / sum by (pool) (rate(whisper_pgxpool_acquires_total{`+pg+`}[$__rate_interval]))`,
				"{{pool}}"))}.timeseries()).
		WithPanel(panel{title: "Redis pool usage", unit: units.PercentUnit, width: 8,
			description: "Share of the Redis client's pool size in use (open connections that are not idle), per pod. At 100% commands wait for a connection and time out after the pool timeout.",
			queries: q(query(`(max by (pod) (whisper_redis_pool_connections{`+rd+`}) - max by (pod) (whisper_redis_pool_idle_connections{`+rd+`})) / max by (pod) (whisper_redis_pool_max_connections{`+rd+`})`,
				"{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Redis pool waits and timeouts", unit: units.OpsPerSecond, width: 8,
			description: "Commands per second that waited for a pool connection and got one, and that gave up after the pool timeout (they failed). Any timeout is worth a look: alert RedisPoolTimeouts fires after 5 minutes of them.",
			queries: q(
				query(`sum by (pod) (rate(whisper_redis_pool_waits_total{`+rd+`}[$__rate_interval]))`, "{{pod}} waited"),
				query(`sum by (pod) (rate(whisper_redis_pool_timeouts_total{`+rd+`}[$__rate_interval]))`, "{{pod}} timed out"),
			)}.timeseries()).
		WithPanel(panel{title: "Redis pool misses", unit: units.PercentUnit, width: 8,
			description: "Share of commands that found no idle connection in the pool (and opened or waited for one). A high share under steady load means the pool churns connections or is undersized.",
			queries: q(query(`sum by (pod) (rate(whisper_redis_pool_misses_total{`+rd+`}[$__rate_interval])) / (sum by (pod) (rate(whisper_redis_pool_hits_total{`+rd+`}[$__rate_interval])) + sum by (pod) (rate(whisper_redis_pool_misses_total{`+rd+`}[$__rate_interval])))`,
				"{{pod}}"))}.timeseries())
}

// withRuntime adds the "Runtime" row of a service dashboard: CPU, memory
// against the limit, goroutines and restarts of the whisper container of
// the target's pods (Deployment target: pods named <target>-<hash>-<id>),
// from the Go collectors, cAdvisor and kube-state-metrics.
func withRuntime(b *dashboard.DashboardBuilder, target string) *dashboard.DashboardBuilder {
	sel := ns + `,container="whisper",pod=~"` + target + `-.+"`
	return b.
		WithRow(row("Runtime")).
		WithPanel(panel{title: "CPU", unit: units.Short, width: 6,
			description: "CPU cores used per pod, as the process sees it and as the container is charged (cAdvisor).",
			queries: q(
				query(`sum by (pod) (rate(process_cpu_seconds_total{`+sel+`}[$__rate_interval]))`, "{{pod}} process"),
				query(`sum by (pod) (rate(container_cpu_usage_seconds_total{`+sel+`}[$__rate_interval]))`, "{{pod}} container"),
			)}.timeseries()).
		WithPanel(panel{title: "Memory", unit: units.BytesIEC, width: 6,
			description: "Go heap in use and the container's working set per pod; the working set is what the OOM killer compares with the limit.",
			queries: q(
				query(`sum by (pod) (go_memstats_heap_inuse_bytes{`+sel+`})`, "{{pod}} heap"),
				query(`sum by (pod) (container_memory_working_set_bytes{`+sel+`})`, "{{pod}} working set"),
			)}.timeseries()).
		WithPanel(panel{title: "Memory used of limit", unit: units.PercentUnit, width: 6,
			description: "Working set per pod as a share of its memory limit. Alert WhisperMemoryNearLimit fires above 90% for 15 minutes; at 100% the container is OOM-killed.",
			queries:     q(query(`max by (pod) (container_memory_working_set_bytes{`+sel+`}) / max by (pod) (kube_pod_container_resource_limits{`+sel+`,resource="memory"})`, "{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Goroutines", unit: units.Short, width: 6,
			description: "Goroutines per pod. Steady growth under steady load is a leak.",
			queries:     q(query(`sum by (pod) (go_goroutines{`+sel+`})`, "{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Container restarts", unit: units.Short, width: 24,
			description: "Restarts of the whisper container per pod (kube-state-metrics). Check the previous container's logs and OOM kills.",
			queries:     q(query(`sum by (pod) (increase(kube_pod_container_status_restarts_total{`+sel+`}[$__rate_interval]))`, "{{pod}}"))}.timeseries())
}
