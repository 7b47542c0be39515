package dashboards

import (
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// Selectors of the public ingestion APIs: the Segment routes and the
// Connect IngestService.
const (
	segmentRoutes  = `route=~"/v1/.+"`
	ingestProcs    = `procedure=~"/whisper[.]ingest[.]v1[.]IngestService/.+"`
	publicProcs    = `procedure=~"/whisper[.].+"`
	sloAvail       = `slo="ingest-availability"`
	sloLatency     = `slo="ingest-latency"`
	ingestClientID = `client_id="whisper-ingest"`
)

// Overview is the first page on call: are the public APIs (ingestion, the
// ProfileService and those of slo.APIs) meeting their SLOs, how much error
// budget is left, and how much traffic is there.
func Overview() *dashboard.DashboardBuilder {
	availBudget := 1 - AvailabilityObjective
	latencyBudget := 1 - LatencyObjective
	green, red, orange := "green", "red", "orange"
	b := newDashboard("whisper-overview", "Whisper / Overview",
		"SLOs of the public APIs (ingestion: Segment HTTP and Connect IngestService; the Profile, Campaign, Decision, Content, Delivery and Workspace services), error budgets and traffic. Start here when paged.", "slo").
		WithRow(row("Ingestion SLOs")).
		WithPanel(panel{title: "Availability (30 days)", unit: units.PercentUnit,
			description: fmt.Sprintf("Share of ingestion requests over the last 30 days that did not fail on our side (HTTP 5xx, Connect unavailable/internal/unknown/deadline_exceeded/data_loss). Objective %.2f%%.", AvailabilityObjective*100),
			queries:     q(query(`1 - slo:sli_error:ratio_rate30d{`+sloAvail+`}`, "availability"))}.
			stat(3, step(nil, red), step(cog.ToPtr(AvailabilityObjective), green))).
		WithPanel(panel{title: "Availability error budget remaining", unit: units.PercentUnit,
			description: "Share of the 30-day availability error budget not yet spent. Below zero the SLO is missed: freeze risky changes and work on reliability.",
			queries:     q(query(fmt.Sprintf(`1 - slo:sli_error:ratio_rate30d{%s} / %g`, sloAvail, availBudget), "budget left"))}.
			stat(1, step(nil, red), step(cog.ToPtr(0.0), orange), step(cog.ToPtr(0.25), green))).
		WithPanel(panel{title: "Latency SLI (30 days)", unit: units.PercentUnit,
			description: fmt.Sprintf("Share of ingestion requests over the last 30 days answered within their threshold: 250 ms for single calls, 1 s for batches. Objective %.0f%%.", LatencyObjective*100),
			queries:     q(query(`1 - slo:sli_error:ratio_rate30d{`+sloLatency+`}`, "fast enough"))}.
			stat(2, step(nil, red), step(cog.ToPtr(LatencyObjective), green))).
		WithPanel(panel{title: "Latency error budget remaining", unit: units.PercentUnit,
			description: "Share of the 30-day latency error budget not yet spent. Below zero the latency SLO is missed.",
			queries:     q(query(fmt.Sprintf(`1 - slo:sli_error:ratio_rate30d{%s} / %g`, sloLatency, latencyBudget), "budget left"))}.
			stat(1, step(nil, red), step(cog.ToPtr(0.0), orange), step(cog.ToPtr(0.25), green))).
		WithPanel(panel{title: "Error budget burn rate (1h)", unit: units.Short,
			description: "How many times faster than sustainable each error budget is being spent, over the last hour. 1 spends the budget in exactly 30 days; the page fires at 14.4 (with the 5-minute window agreeing).",
			queries: q(
				query(fmt.Sprintf(`slo:sli_error:ratio_rate1h{%s} / %g`, sloAvail, availBudget), "availability"),
				query(fmt.Sprintf(`slo:sli_error:ratio_rate1h{%s} / %g`, sloLatency, latencyBudget), "latency"),
			)}.timeseries()).
		WithPanel(panel{title: "SLI error ratio (5m)", unit: units.PercentUnit,
			description: "Short-window error ratios of the SLIs: failed requests (availability) and requests slower than their threshold (latency). Spikes here precede burn-rate alerts.",
			queries: q(
				query(`slo:sli_error:ratio_rate5m{`+sloAvail+`}`, "availability errors"),
				query(`slo:sli_error:ratio_rate5m{`+sloLatency+`}`, "too slow"),
			)}.timeseries())
	return withAPISLOs(withProfileSLOs(b)).
		WithRow(row("Traffic")).
		WithPanel(panel{title: "Requests per second", unit: units.RequestsPerSecond,
			description: "Requests to the public APIs: Segment HTTP routes and Connect procedures (ingestion and workspace management).",
			queries: q(
				query(`sum(rate(whisper_http_requests_total{`+segmentRoutes+`}[$__rate_interval]))`, "Segment HTTP"),
				query(`sum(rate(whisper_rpc_requests_total{`+publicProcs+`}[$__rate_interval]))`, "Connect"),
			)}.timeseries()).
		WithPanel(panel{title: "Events accepted per second", unit: units.CountsPerSecond,
			description: "Events acknowledged by the broker and answered 200/OK, by API. A drop with steady requests means rejections.",
			queries:     q(query(`sum by (api) (rate(whisper_ingest_events_accepted_total[$__rate_interval]))`, "{{api}}"))}.timeseries()).
		WithPanel(panel{title: "Server error ratio", unit: units.PercentUnit,
			description: "Share of public API requests failing on our side. Client errors (4xx, invalid_argument, unauthenticated) are excluded.",
			queries: q(
				query(`sum(rate(whisper_http_requests_total{`+segmentRoutes+`,code=~"5.."}[$__rate_interval])) / sum(rate(whisper_http_requests_total{`+segmentRoutes+`}[$__rate_interval]))`, "Segment HTTP"),
				query(`sum(rate(whisper_rpc_requests_total{`+publicProcs+`,code=~"unavailable|internal|unknown|deadline_exceeded|data_loss"}[$__rate_interval])) / sum(rate(whisper_rpc_requests_total{`+publicProcs+`}[$__rate_interval]))`, "Connect"),
			)}.timeseries()).
		WithPanel(panel{title: "p99 latency", unit: units.Seconds,
			description: "99th percentile time to answer, per API. Ingestion waits for the broker's acknowledgement, so this includes Kafka's write latency.",
			queries: q(
				query(`histogram_quantile(0.99, sum by (le) (rate(whisper_http_request_duration_seconds_bucket{`+segmentRoutes+`}[$__rate_interval])))`, "Segment HTTP"),
				query(`histogram_quantile(0.99, sum by (le) (rate(whisper_rpc_request_duration_seconds_bucket{`+publicProcs+`}[$__rate_interval])))`, "Connect"),
			)}.timeseries())
}

// Ingest is the ingest target's service dashboard: RED per route and
// procedure, what happens to events, the producer, the Kafka client, the
// saturation of its PostgreSQL and Redis pools, and the runtime.
func Ingest() *dashboard.DashboardBuilder {
	b := withNamespace(newDashboard("whisper-ingest", "Whisper / Ingest",
		"The ingest target: Segment HTTP routes and Connect IngestService, event outcomes, dedup, the whisper.events producer, its Kafka client, its PostgreSQL and Redis pools and the Go runtime.", "ingest")).
		WithRow(row("Requests (RED)")).
		WithPanel(panel{title: "HTTP requests by route and code", unit: units.RequestsPerSecond, width: 8,
			description: "Segment-compatible HTTP requests per second, by route and status code.",
			queries:     q(query(`sum by (route, code) (rate(whisper_http_requests_total{`+ns+`,`+segmentRoutes+`}[$__rate_interval]))`, "{{route}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "HTTP server error ratio by route", unit: units.PercentUnit, width: 8,
			description: "Share of requests per route answered 5xx (503 when the broker cannot take events).",
			queries:     q(query(`sum by (route) (rate(whisper_http_requests_total{`+ns+`,`+segmentRoutes+`,code=~"5.."}[$__rate_interval])) / sum by (route) (rate(whisper_http_requests_total{`+ns+`,`+segmentRoutes+`}[$__rate_interval]))`, "{{route}}"))}.timeseries()).
		WithPanel(panel{title: "HTTP p99 latency by route", unit: units.Seconds, width: 8,
			description: "99th percentile time to answer per route, including the wait for the broker's acknowledgement. SLO threshold: 250 ms (single calls), 1 s (batch, import).",
			queries:     q(query(`histogram_quantile(0.99, sum by (route, le) (rate(whisper_http_request_duration_seconds_bucket{`+ns+`,`+segmentRoutes+`}[$__rate_interval])))`, "{{route}}"))}.timeseries()).
		WithPanel(panel{title: "RPCs by procedure and code", unit: units.RequestsPerSecond, width: 8,
			description: "Connect calls per second, by procedure and Connect code (ok when successful).",
			queries:     q(query(`sum by (procedure, code) (rate(whisper_rpc_requests_total{`+ns+`,`+ingestProcs+`}[$__rate_interval]))`, "{{procedure}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "RPC error ratio by procedure", unit: units.PercentUnit, width: 8,
			description: "Share of Connect calls per procedure that did not end ok, client errors included (see the codes panel to tell them apart).",
			queries:     q(query(`sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+ingestProcs+`,code!="ok"}[$__rate_interval])) / sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+ingestProcs+`}[$__rate_interval]))`, "{{procedure}}"))}.timeseries()).
		WithPanel(panel{title: "RPC p99 latency by procedure", unit: units.Seconds, width: 8,
			description: "99th percentile time to handle a Connect call per procedure. SLO threshold: 250 ms (Track, Identify), 1 s (Batch).",
			queries:     q(query(`histogram_quantile(0.99, sum by (procedure, le) (rate(whisper_rpc_request_duration_seconds_bucket{`+ns+`,`+ingestProcs+`}[$__rate_interval])))`, "{{procedure}}"))}.timeseries()).
		WithRow(row("Events")).
		WithPanel(panel{title: "Events accepted by API and type", unit: units.CountsPerSecond, width: 8,
			description: "Events the broker acknowledged, per second, by API (segment, connect) and call type.",
			queries:     q(query(`sum by (api, type) (rate(whisper_ingest_events_accepted_total{`+ns+`}[$__rate_interval]))`, "{{api}} {{type}}"))}.timeseries()).
		WithPanel(panel{title: "Requests rejected by reason", unit: units.RequestsPerSecond, width: 8,
			description: "Requests refused as a whole, by API and reason: malformed, invalid, too_large, unauthorized (client side), unavailable (our side: the broker).",
			queries:     q(query(`sum by (api, reason) (rate(whisper_ingest_requests_rejected_total{`+ns+`}[$__rate_interval]))`, "{{api}} {{reason}}"))}.timeseries()).
		WithPanel(panel{title: "Events per request", unit: units.Short, width: 8,
			description: "Median and 99th percentile events per accepted request: batching by SDKs. Bigger batches mean fewer, longer requests.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (le) (rate(whisper_ingest_request_events_bucket{`+ns+`}[$__rate_interval])))`, "p50"),
				query(`histogram_quantile(0.99, sum by (le) (rate(whisper_ingest_request_events_bucket{`+ns+`}[$__rate_interval])))`, "p99"),
			)}.timeseries()).
		WithPanel(panel{title: "Deduplicated events", unit: units.CountsPerSecond, width: 8,
			description: "Events not produced again because their message id was produced within the dedup window: client retries absorbed.",
			queries:     q(query(`sum(rate(whisper_ingest_events_deduplicated_total{`+ns+`}[$__rate_interval]))`, "deduplicated"))}.timeseries()).
		WithPanel(panel{title: "Dedup errors", unit: units.OpsPerSecond, width: 8,
			description: "Failed dedup lookups or marks in Redis. Events are still produced (at least once), but retries may then be doubled downstream. Check Redis.",
			queries:     q(query(`sum by (pod) (rate(whisper_ingest_dedup_errors_total{`+ns+`}[$__rate_interval]))`, "{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Request stage p99 latency", unit: units.Seconds, width: 8,
			description: "99th percentile time a request spends per stage: dedup_check (Redis lookup, on the request's path), produce (until the broker acknowledged every record), dedup_mark (Redis write after the answer, off the path). Tells a slow Redis from a slow broker.",
			queries:     q(query(`histogram_quantile(0.99, sum by (stage, le) (rate(whisper_ingest_stage_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "{{stage}}"))}.timeseries()).
		WithRow(row("Producer (whisper.events)")).
		WithPanel(panel{title: "Records acknowledged and failed", unit: units.CountsPerSecond, width: 8,
			description: "Records the broker acknowledged, and records the producer could not write by cause: buffer_full, broker, ack_timeout (may still land).",
			queries: q(
				query(`sum(rate(whisper_ingest_producer_acked_records_total{`+ns+`}[$__rate_interval]))`, "acked"),
				query(`sum by (cause) (rate(whisper_ingest_producer_failed_records_total{`+ns+`}[$__rate_interval]))`, "failed {{cause}}"),
			)}.timeseries()).
		WithPanel(panel{title: "Buffered records", unit: units.Short, width: 8,
			description: "Records handed to the producer and not yet acknowledged, per pod. Growth means the broker is slow or unreachable; at the byte limit requests fail with buffer_full.",
			queries:     q(query(`sum by (pod) (whisper_ingest_producer_buffered_records{`+ns+`})`, "{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Buffered bytes", unit: units.BytesIEC, width: 8,
			description: "Bytes handed to the producer and not yet acknowledged, per pod (limit: --kafka-max-buffered-bytes, 64 MiB by default).",
			queries:     q(query(`sum by (pod) (whisper_ingest_producer_buffered_bytes{`+ns+`})`, "{{pod}}"))}.timeseries()).
		WithRow(row("Kafka client")).
		WithPanel(panel{title: "Produced bytes by topic", unit: units.BytesPerSecondIEC, width: 8,
			description: "Uncompressed bytes produced per second by the ingest client, by topic.",
			queries:     q(query(`sum by (topic) (rate(whisper_kafka_produce_bytes_total{`+ns+`,`+ingestClientID+`}[$__rate_interval]))`, "{{topic}}"))}.timeseries()).
		WithPanel(panel{title: "Broker request p99 latency", unit: units.Seconds, width: 8,
			description: "99th percentile end-to-end time of requests to each broker (write, wait and read). Rising values explain slow ingestion.",
			queries:     q(query(`histogram_quantile(0.99, sum by (node_id, le) (rate(whisper_kafka_request_duration_e2e_seconds_bucket{`+ns+`,`+ingestClientID+`}[$__rate_interval])))`, "broker {{node_id}}"))}.timeseries()).
		WithPanel(panel{title: "Connection errors", unit: units.OpsPerSecond, width: 8,
			description: "Failed connects, reads and writes to brokers per second. Any sustained value means a broker or the network is unhealthy.",
			queries: q(
				query(`sum by (node_id) (rate(whisper_kafka_connect_errors_total{`+ns+`,`+ingestClientID+`}[$__rate_interval]))`, "connect {{node_id}}"),
				query(`sum by (node_id) (rate(whisper_kafka_write_errors_total{`+ns+`,`+ingestClientID+`}[$__rate_interval]))`, "write {{node_id}}"),
				query(`sum by (node_id) (rate(whisper_kafka_read_errors_total{`+ns+`,`+ingestClientID+`}[$__rate_interval]))`, "read {{node_id}}"),
			)}.timeseries())
	// Ingest processes use the main pool (write keys) and their own
	// Redis client (the dedup window).
	return withRuntime(withDependencies(b, `pool="main"`, `client="main"`), "ingest")
}

// Business is what the product does, for product and growth people: which
// events arrive and through which API, how users move between lifecycle
// stages, what the campaigns decide and convert, and what is delivered on
// which channel.
//
// Users per stage come from a periodic count (whisper_profiles_users),
// beside the transitions that move them. One view is an approximation,
// said so in its description: conversions carry no campaign label
// (decide counts them in total, to keep the label set of a hot counter
// small), so the conversion panel compares them with sends.
func Business() *dashboard.DashboardBuilder {
	return withNamespace(newDashboard("whisper-business", "Whisper / Business",
		"Product events accepted by the platform, lifecycle stage changes, decisions and conversions per campaign, and deliveries per channel.", "business")).
		WithRow(row("Events")).
		WithPanel(panel{title: "Events accepted in range", unit: units.Short, width: 8,
			description: "Events accepted over the selected time range, all types and APIs.",
			queries:     q(query(`sum(increase(whisper_ingest_events_accepted_total{`+ns+`}[$__range]))`, "events"))}.stat(0)).
		WithPanel(panel{title: "Events accepted in range by API", unit: units.Short, width: 16,
			description: "Events accepted over the selected time range per API: segment (Segment-compatible HTTP, existing SDKs) and connect (Connect IngestService).",
			queries:     q(query(`sum by (api) (increase(whisper_ingest_events_accepted_total{`+ns+`}[$__range]))`, "{{api}}"))}.stat(0)).
		WithPanel(panel{title: "Events accepted by type", unit: units.CountsPerSecond, width: 24,
			description: "Events accepted per second by call type (track, identify, page, screen, group, alias).",
			queries:     q(query(`sum by (type) (rate(whisper_ingest_events_accepted_total{`+ns+`}[$__rate_interval]))`, "{{type}}"))}.timeseries()).
		WithPanel(panel{title: "Events accepted by API", unit: units.CountsPerSecond, width: 24,
			description: "Events accepted per second by API: how much traffic comes through existing Segment SDKs versus Connect clients.",
			queries:     q(query(`sum by (api) (rate(whisper_ingest_events_accepted_total{`+ns+`}[$__rate_interval]))`, "{{api}}"))}.timeseries()).
		WithRow(row("Lifecycle stages")).
		WithPanel(panel{title: "Active users by stage", unit: units.Short, width: 12,
			description: "Profiles in each lifecycle stage (new, activated, engaged, at_risk, dormant, churned), all workspaces together, counted by the profiles target every minute. Every replica counts the same table, hence max. Active users are those not dormant or churned.",
			queries:     q(query(`max by (stage) (whisper_profiles_users{`+ns+`})`, "{{stage}}"))}.timeseries()).
		WithPanel(panel{title: "Active users now", unit: units.Short, width: 6,
			description: "Profiles in the new, activated, engaged and at_risk stages at the last count: seen within the dormant threshold (14 days by default).",
			queries:     q(query(`sum(max by (stage) (whisper_profiles_users{`+ns+`,stage=~"new|activated|engaged|at_risk"}))`, "active"))}.stat(0)).
		WithPanel(panel{title: "Engaged share of active users", unit: units.PercentUnit, width: 6,
			description: "Engaged profiles (active at least 3 of the last 7 days by default) as a share of active ones (new, activated, engaged, at_risk).",
			queries:     q(query(`max(whisper_profiles_users{`+ns+`,stage="engaged"}) / sum(max by (stage) (whisper_profiles_users{`+ns+`,stage=~"new|activated|engaged|at_risk"}))`, "engaged"))}.stat(1)).
		WithPanel(panel{title: "Users entering each stage", unit: units.CountsPerSecond, width: 24,
			description: "Profiles entering each lifecycle stage per second, by events or by the sweeper as time passes: the flows that change the populations above.",
			queries:     q(query(`sum by (to) (rate(whisper_profiles_stage_transitions_total{`+ns+`}[$__rate_interval]))`, "{{to}}"))}.timeseries()).
		WithRow(row("Campaigns")).
		WithPanel(panel{title: "Decisions by campaign and outcome", unit: units.CountsPerSecond, width: 12,
			description: "Final decisions per second, by campaign id and outcome: send, deferred, skipped_audience, skipped_consent, capped (contact policy), holdout, exited.",
			queries:     q(query(`sum by (campaign, outcome) (rate(whisper_decide_decisions_total{`+ns+`}[$__rate_interval]))`, "{{campaign}} {{outcome}}"))}.timeseries()).
		WithPanel(panel{title: "Decisions in range by campaign", unit: units.Short, width: 12,
			description: "Decisions to send over the selected range, per campaign id: how many messages each campaign chose to send.",
			queries:     q(query(`sum by (campaign) (increase(whisper_decide_decisions_total{`+ns+`,outcome="send"}[$__range]))`, "{{campaign}}"))}.stat(0)).
		WithPanel(panel{title: "Conversions by campaign", unit: units.CountsPerSecond, width: 12,
			description: "Goal events per second attributed to a decision within its campaign's attribution window, per campaign id, next to all decisions to send.",
			queries: q(
				query(`sum by (campaign) (rate(whisper_decide_conversions_total{`+ns+`}[$__rate_interval]))`, "{{campaign}} conversions"),
				query(`sum(rate(whisper_decide_decisions_total{`+ns+`,outcome="send"}[$__rate_interval]))`, "all sends"),
			)}.timeseries()).
		WithPanel(panel{title: "Conversions per send in range, by campaign", unit: units.PercentUnit, width: 12,
			description: "Per campaign id: conversions over the selected range divided by its decisions to send over the same range. Conversions of sends made before the range count too, so short ranges overstate it; a campaign with no send in the range shows none.",
			queries:     q(query(`sum by (campaign) (increase(whisper_decide_conversions_total{`+ns+`}[$__range])) / sum by (campaign) (increase(whisper_decide_decisions_total{`+ns+`,outcome="send"}[$__range]))`, "{{campaign}}"))}.stat(1)).
		WithRow(row("Deliveries")).
		WithPanel(panel{title: "Deliveries by channel and status", unit: units.CountsPerSecond, width: 12,
			description: "Deliveries reaching a final state per second, by channel and status: sent, failed (bounces included), skipped (no recipient).",
			queries:     q(query(`sum by (channel, status) (rate(whisper_deliver_deliveries_total{`+ns+`}[$__rate_interval]))`, "{{channel}} {{status}}"))}.timeseries()).
		WithPanel(panel{title: "Sent in range by channel", unit: units.Short, width: 12,
			description: "Deliveries sent over the selected range, per channel (email, sms, push, webhook, in_app).",
			queries:     q(query(`sum by (channel) (increase(whisper_deliver_deliveries_total{`+ns+`,status="sent"}[$__range]))`, "{{channel}}"))}.stat(0))
}

func q(qs ...*prometheus.DataqueryBuilder) []*prometheus.DataqueryBuilder { return qs }
