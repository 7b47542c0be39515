package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// profileProcs selects the Connect ProfileService.
const profileProcs = `procedure=~"/whisper[.]profile[.]v1[.]ProfileService/.+"`

// Profiles is the profiles target's service dashboard: how far its
// consumer is behind whisper.events and how fast it applies, what happens
// to records, the lifecycle it computes, the whisper.profiles outbox, the
// ProfileService and the saturation of its PostgreSQL and Redis pools.
func Profiles() *dashboard.DashboardBuilder {
	green, orange, red := "green", "orange", "red"
	b := withNamespace(newDashboard("whisper-profiles", "Whisper / Profiles",
		"The profiles target: its whisper.events consumer (lag, batches, apply latency, outcomes, retries), lifecycle stages, the whisper.profiles outbox, the ProfileService and its PostgreSQL and Redis pools.", "profiles")).
		WithRow(row("Consumer (whisper.events)")).
		WithPanel(panel{title: "Consumer lag by partition", unit: units.Short, width: 8,
			description: "Records of whisper.events behind each partition's high watermark after the last applied batch. Growing lag means profiles (and decisions) fall behind ingestion: check apply latency and failures.",
			queries:     q(query(`max by (partition) (whisper_kafka_consumer_lag_records{`+ns+`,group="whisper-profiles",topic="whisper.events"})`, "partition {{partition}}"))}.timeseries()).
		WithPanel(panel{title: "Records by outcome", unit: units.CountsPerSecond, width: 8,
			description: "Records consumed per second: applied, duplicate (message id applied before: redelivery or replay) and dead_lettered (copied to whisper.events.dlq).",
			queries:     q(query(`sum by (outcome) (rate(whisper_profiles_records_total{`+ns+`}[$__rate_interval]))`, "{{outcome}}"))}.timeseries()).
		WithPanel(panel{title: "Dead-lettered records in range", unit: units.Short, width: 8,
			description: "Records sent to whisper.events.dlq over the selected range: they could never be applied (not an Event, no workspace, no identity). Any is worth a look at the DLQ's reason header.",
			queries:     q(query(`sum(increase(whisper_profiles_records_total{`+ns+`,outcome="dead_lettered"}[$__range]))`, "dead-lettered"))}.
			stat(0, step(nil, green), step(cog.ToPtr(1.0), orange))).
		WithPanel(panel{title: "Apply latency", unit: units.Seconds, width: 8,
			description: "Median and 99th percentile time of one successful apply of a partition batch: the PostgreSQL transaction, then the Redis mirror. The freshness of profiles is bounded below by it.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (le) (rate(whisper_profiles_apply_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50"),
				query(`histogram_quantile(0.99, sum by (le) (rate(whisper_profiles_apply_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99"),
			)}.timeseries()).
		WithPanel(panel{title: "Partition batch duration p99", unit: units.Seconds, width: 8,
			description: "99th percentile time to get one partition's share of a poll applied, retries and dead-lettering included: long values with failures mean a dependency is down.",
			queries:     q(query(`histogram_quantile(0.99, sum by (le) (rate(whisper_profiles_partition_batch_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99"))}.timeseries()).
		WithPanel(panel{title: "Records per partition batch", unit: units.Short, width: 8,
			description: "Median and 99th percentile records per partition batch. Larger batches amortise round trips; small ones at high lag mean polls return little.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (le) (rate(whisper_profiles_batch_records_bucket{`+ns+`}[$__rate_interval])))`, "p50"),
				query(`histogram_quantile(0.99, sum by (le) (rate(whisper_profiles_batch_records_bucket{`+ns+`}[$__rate_interval])))`, "p99"),
			)}.timeseries()).
		WithPanel(panel{title: "Failed attempts by operation", unit: units.OpsPerSecond, width: 24,
			description: "Failed attempts per second, by operation: apply events (PostgreSQL), mirror to redis, dead-letter records and publish changes (Kafka), sweep. Each is retried; no offset is committed until apply and mirror succeed.",
			queries:     q(query(`sum by (operation) (rate(whisper_profiles_failures_total{`+ns+`}[$__rate_interval]))`, "{{operation}}"))}.timeseries()).
		WithRow(row("Lifecycle")).
		WithPanel(panel{title: "Stage transitions", unit: units.CountsPerSecond, width: 12,
			description: "Profiles changing lifecycle stage per second, by previous and new stage, whether by an event or by the sweeper as time passes.",
			queries:     q(query(`sum by (from, to) (rate(whisper_profiles_stage_transitions_total{`+ns+`}[$__rate_interval]))`, "{{from}} → {{to}}"))}.timeseries()).
		WithPanel(panel{title: "Profiles recomputed by the sweeper", unit: units.CountsPerSecond, width: 12,
			description: "Profiles per second whose stage or score band was due to change with time alone and were recomputed. A burst follows a lifecycle rules update (every profile of the workspace is re-staged).",
			queries:     q(query(`sum(rate(whisper_profiles_sweep_recomputed_total{`+ns+`}[$__rate_interval]))`, "recomputed"))}.timeseries()).
		WithRow(row("Outbox (whisper.profiles)")).
		WithPanel(panel{title: "Changes published", unit: units.CountsPerSecond, width: 8,
			description: "Profile changes produced to whisper.profiles per second (created, stage, traits, score band, merged).",
			queries:     q(query(`sum(rate(whisper_profiles_outbox_published_total{`+ns+`}[$__rate_interval]))`, "published"))}.timeseries()).
		WithPanel(panel{title: "Outbox backlog", unit: units.Short, width: 8,
			description: "Changes written to the outbox and not yet produced. Every replica measures the same table, hence max. Growth means Kafka refuses them: see publish failures.",
			queries:     q(query(`max(whisper_profiles_outbox_backlog_records{`+ns+`})`, "backlog"))}.timeseries()).
		WithPanel(panel{title: "Oldest unpublished change", unit: units.Seconds, width: 8,
			description: "Age of the oldest change waiting in the outbox: how late the decision engine learns of profile changes.",
			queries:     q(query(`max(whisper_profiles_outbox_oldest_age_seconds{`+ns+`})`, "age"))}.
			stat(0, step(nil, green), step(cog.ToPtr(60.0), orange), step(cog.ToPtr(300.0), red))).
		WithRow(row("ProfileService")).
		WithPanel(panel{title: "RPCs by procedure and code", unit: units.RequestsPerSecond, width: 12,
			description: "ProfileService calls per second, by procedure and Connect code (ok when successful). WatchProfile counts when a stream ends.",
			queries:     q(query(`sum by (procedure, code) (rate(whisper_rpc_requests_total{`+ns+`,`+profileProcs+`}[$__rate_interval]))`, "{{procedure}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "RPC p99 latency by procedure", unit: units.Seconds, width: 12,
			description: "99th percentile time to handle a ProfileService call (streams: their whole life). ListProfiles with a filter scans up to 10,000 profiles.",
			queries:     q(query(`histogram_quantile(0.99, sum by (procedure, le) (rate(whisper_rpc_request_duration_seconds_bucket{`+ns+`,`+profileProcs+`}[$__rate_interval])))`, "{{procedure}}"))}.timeseries())
	// The profiles pool carries the consumer and the ProfileService; the
	// main pool authenticates callers.
	return withRuntime(withDependencies(b, `pool=~"main|profiles"`, `client="profiles"`), "profiles")
}
