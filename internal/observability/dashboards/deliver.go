package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// Selectors of the deliver target's Connect service and its Kafka client.
// StreamInApp is a server stream that lives as long as the inbox is open,
// so latency panels leave it out: its "latency" is a session length.
const (
	deliverProcs      = `procedure=~"/whisper[.]delivery[.]v1[.]DeliveryService/.+"`
	deliverUnaryProcs = `procedure=~"/whisper[.]delivery[.]v1[.]DeliveryService/.+",procedure!="/whisper.delivery.v1.DeliveryService/StreamInApp"`
	deliverClientID   = `client_id="whisper-deliver"`
	trackingRoute     = `route="/t/"`
)

// Deliver is the deliver target's service dashboard: what reaches users
// (deliveries by channel and final status), what it costs to get there
// (attempts, retries, provider latency, rate-limit waits), whether the
// durable scheduler keeps its times (lateness, backlog, oldest overdue),
// what is given up (DLQ, invalid records), the DeliveryService and the
// saturation of its PostgreSQL pool and Redis client.
//
// deliveries_total counts a delivery once, at its final state (sent,
// failed, skipped; a bounce is failed); attempts_total counts every
// provider call by result, which is where bounces and retryable failures
// are told apart.
func Deliver() *dashboard.DashboardBuilder {
	green, orange, red := "green", "orange", "red"
	b := withNamespace(newDashboard("whisper-deliver", "Whisper / Deliver",
		"The deliver target: deliveries by channel and status, attempts and retries, provider latency, lateness against the scheduled time, the scheduled backlog, rate-limit waits, dead letters, the DeliveryService and its PostgreSQL and Redis pools.", "deliver")).
		WithRow(row("Deliveries")).
		WithPanel(panel{title: "Deliveries by channel and status", unit: units.CountsPerSecond, width: 8,
			description: "Deliveries reaching a final state per second, by channel and status: sent, failed (bounces and exhausted retries included), skipped (no recipient: no profile, or no address trait for the channel).",
			queries:     q(query(`sum by (channel, status) (rate(whisper_deliver_deliveries_total{`+ns+`}[$__rate_interval]))`, "{{channel}} {{status}}"))}.timeseries()).
		WithPanel(panel{title: "Failure ratio by channel", unit: units.PercentUnit, width: 8,
			description: "Share of each channel's final deliveries, sent or failed, that failed (bounced or exhausted retries included); skipped ones (no recipient) are left out, as in alert DeliveryFailureRatioHigh, which fires above 10% for 15 minutes with at least 30 such deliveries.",
			queries:     q(query(`sum by (channel) (rate(whisper_deliver_deliveries_total{`+ns+`,status="failed"}[$__rate_interval])) / sum by (channel) (rate(whisper_deliver_deliveries_total{`+ns+`,status=~"sent|failed"}[$__rate_interval]))`, "{{channel}}"))}.timeseries()).
		WithPanel(panel{title: "Deliveries in range by status", unit: units.Short, width: 8,
			description: "Final deliveries over the selected range, all channels, by status.",
			queries:     q(query(`sum by (status) (increase(whisper_deliver_deliveries_total{`+ns+`}[$__range]))`, "{{status}}"))}.stat(0)).
		WithPanel(panel{title: "Attempts by channel and result", unit: units.OpsPerSecond, width: 8,
			description: "Provider calls per second, by channel and result: sent, retryable (will be tried again, or given up when retries are exhausted), failed, bounced (the provider refused the address), skipped.",
			queries:     q(query(`sum by (channel, result) (rate(whisper_deliver_attempts_total{`+ns+`}[$__rate_interval]))`, "{{channel}} {{result}}"))}.timeseries()).
		WithPanel(panel{title: "Retries scheduled by channel", unit: units.OpsPerSecond, width: 8,
			description: "Attempts per second that failed retryably and were scheduled again with backoff, by channel. A rise means a provider is throttling or unavailable.",
			queries:     q(query(`sum by (channel) (rate(whisper_deliver_retries_total{`+ns+`}[$__rate_interval]))`, "{{channel}}"))}.timeseries()).
		WithPanel(panel{title: "Bounce ratio by channel", unit: units.PercentUnit, width: 8,
			description: "Share of each channel's attempts the provider bounced. High on email means a stale or bought list; on push, expired device tokens.",
			queries:     q(query(`sum by (channel) (rate(whisper_deliver_attempts_total{`+ns+`,result="bounced"}[$__rate_interval])) / sum by (channel) (rate(whisper_deliver_attempts_total{`+ns+`}[$__rate_interval]))`, "{{channel}}"))}.timeseries()).
		WithRow(row("Latency and schedule")).
		WithPanel(panel{title: "Provider latency by channel", unit: units.Seconds, width: 8,
			description: "Median and 99th percentile time of one provider call (the send itself, not the wait for a rate-limit token), by channel.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (channel, le) (rate(whisper_deliver_send_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50 {{channel}}"),
				query(`histogram_quantile(0.99, sum by (channel, le) (rate(whisper_deliver_send_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99 {{channel}}"),
			)}.timeseries()).
		WithPanel(panel{title: "Lateness by channel", unit: units.Seconds, width: 8,
			description: "Median and 99th percentile time from a delivery's scheduled send time to its final outcome, by channel: scheduler delay, rate-limit waits, retries and the provider call together.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (channel, le) (rate(whisper_deliver_lateness_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50 {{channel}}"),
				query(`histogram_quantile(0.99, sum by (channel, le) (rate(whisper_deliver_lateness_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99 {{channel}}"),
			)}.timeseries()).
		WithPanel(panel{title: "Rate-limit wait by channel", unit: units.Seconds, width: 8,
			description: "Median and 99th percentile time a send waited for its channel's rate-limit token. Long waits with a growing backlog mean the configured rate is below demand.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (channel, le) (rate(whisper_deliver_rate_limit_wait_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50 {{channel}}"),
				query(`histogram_quantile(0.99, sum by (channel, le) (rate(whisper_deliver_rate_limit_wait_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99 {{channel}}"),
			)}.timeseries()).
		WithPanel(panel{title: "Scheduled backlog", unit: units.Short, width: 8,
			description: "Deliveries not final yet (scheduled for later, retrying or sending), across replicas; every replica reports the same shared count, so the panel takes the max. Growth with no overdue deliveries is only future schedules.",
			queries:     q(query(`max(whisper_deliver_scheduled_backlog{`+ns+`})`, "backlog"))}.timeseries()).
		WithPanel(panel{title: "Oldest overdue delivery", unit: units.Seconds, width: 8,
			description: "How long the most overdue pending delivery has been due (0 when none is). Alert ScheduledSendsOverdue fires above 5 minutes for 10 minutes.",
			queries:     q(query(`max(whisper_deliver_oldest_overdue_seconds{`+ns+`})`, "oldest overdue"))}.timeseries()).
		WithPanel(panel{title: "Oldest overdue now", unit: units.Seconds, width: 8,
			description: "The current age of the most overdue pending delivery. Orange from one minute, red from five (the alert's threshold).",
			queries:     q(query(`max(whisper_deliver_oldest_overdue_seconds{`+ns+`})`, "oldest overdue"))}.
			stat(0, step(nil, green), step(cog.ToPtr(60.0), orange), step(cog.ToPtr(300.0), red))).
		WithRow(row("Consumer (whisper.decisions)")).
		WithPanel(panel{title: "Consumer lag by partition", unit: units.Short, width: 24,
			description: "Records of whisper.decisions behind each partition's high watermark after the last batch recorded in the ledger by the whisper-deliver group. Growing lag means decisions wait before they are even scheduled: check PostgreSQL.",
			queries:     q(query(`max by (partition) (whisper_kafka_consumer_lag_records{`+ns+`,group="whisper-deliver",topic="whisper.decisions"})`, "partition {{partition}}"))}.timeseries()).
		WithRow(row("Dead letters")).
		WithPanel(panel{title: "Dead letters and invalid records", unit: units.CountsPerSecond, width: 12,
			description: "Decisions copied to whisper.decisions.dlq per second after their retries were exhausted, and records of whisper.decisions deliver could not use (not a decision, no valid ids), also copied there. Alert DeliverDeadLetters fires on any.",
			queries: q(
				query(`sum(rate(whisper_deliver_dlq_total{`+ns+`}[$__rate_interval]))`, "dead letters"),
				query(`sum(rate(whisper_deliver_invalid_records_total{`+ns+`}[$__rate_interval]))`, "invalid records"),
			)}.timeseries()).
		WithPanel(panel{title: "Dead letters in range", unit: units.Short, width: 12,
			description: "Decisions and invalid records copied to whisper.decisions.dlq over the selected range. Any is worth a look: each is a message a user did not get.",
			queries:     q(query(`sum(increase(whisper_deliver_dlq_total{`+ns+`}[$__range])) + sum(increase(whisper_deliver_invalid_records_total{`+ns+`}[$__range]))`, "dead letters"))}.
			stat(0, step(nil, green), step(cog.ToPtr(1.0), orange))).
		WithRow(row("DeliveryService (RED)")).
		WithPanel(panel{title: "RPCs by procedure and code", unit: units.RequestsPerSecond, width: 8,
			description: "DeliveryService calls per second, by procedure and Connect code (ok when successful). StreamInApp counts streams, at their end.",
			queries:     q(query(`sum by (procedure, code) (rate(whisper_rpc_requests_total{`+ns+`,`+deliverProcs+`}[$__rate_interval]))`, "{{procedure}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "RPC error ratio by procedure", unit: units.PercentUnit, width: 8,
			description: "Share of DeliveryService calls per procedure that did not end ok, client errors (invalid_argument, not_found) and canceled streams included: see the codes panel to tell them apart.",
			queries:     q(query(`sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+deliverProcs+`,code!="ok"}[$__rate_interval])) / sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+deliverProcs+`}[$__rate_interval]))`, "{{procedure}}"))}.timeseries()).
		WithPanel(panel{title: "RPC p99 latency by procedure", unit: units.Seconds, width: 8,
			description: "99th percentile time to handle a DeliveryService call per unary procedure. StreamInApp is left out: its duration is how long an inbox stays open.",
			queries:     q(query(`histogram_quantile(0.99, sum by (procedure, le) (rate(whisper_rpc_request_duration_seconds_bucket{`+ns+`,`+deliverUnaryProcs+`}[$__rate_interval])))`, "{{procedure}}"))}.timeseries()).
		WithRow(row("Tracking links (/t/)")).
		WithPanel(panel{title: "Tracking requests by method and code", unit: units.RequestsPerSecond, width: 8,
			description: "Requests to tracking links per second (open pixel, click redirect: GET; one-click unsubscribe: POST), by status code. 4xx are forged or expired tokens; 5xx (Kafka could not take the event) spend the DeliveryService availability budget.",
			queries:     q(query(`sum by (method, code) (rate(whisper_http_requests_total{`+ns+`,`+trackingRoute+`}[$__rate_interval]))`, "{{method}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "Tracking server error ratio", unit: units.PercentUnit, width: 8,
			description: "Share of tracking requests answered 5xx: opens, clicks or unsubscribes lost.",
			queries:     q(query(`sum(rate(whisper_http_requests_total{`+ns+`,`+trackingRoute+`,code=~"5.."}[$__rate_interval])) / sum(rate(whisper_http_requests_total{`+ns+`,`+trackingRoute+`}[$__rate_interval]))`, "5xx"))}.timeseries()).
		WithPanel(panel{title: "Tracking p99 latency", unit: units.Seconds, width: 8,
			description: "99th percentile time to answer a tracking link, including the wait for Kafka to acknowledge the event. SLO threshold: 250 ms.",
			queries:     q(query(`histogram_quantile(0.99, sum by (le) (rate(whisper_http_request_duration_seconds_bucket{`+ns+`,`+trackingRoute+`}[$__rate_interval])))`, "p99"))}.timeseries()).
		WithRow(row("Consumer (whisper.decisions)")).
		WithPanel(panel{title: "Kafka records fetched by topic", unit: units.CountsPerSecond, width: 8,
			description: "Records the deliver client fetched per second, by topic (kprom); the lag is in the panel above.",
			queries:     q(query(`sum by (topic) (rate(whisper_kafka_fetch_records_total{`+ns+`,`+deliverClientID+`}[$__rate_interval]))`, "{{topic}}"))}.timeseries()).
		WithPanel(panel{title: "Kafka buffered fetch records", unit: units.Short, width: 8,
			description: "Records fetched and not yet polled, per pod (kprom). A full buffer with low throughput means sending, not Kafka, is the bottleneck.",
			queries:     q(query(`max by (pod) (whisper_kafka_buffered_fetch_records_total{`+ns+`,`+deliverClientID+`})`, "{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Kafka errors", unit: units.OpsPerSecond, width: 8,
			description: "Connection, write and read errors per second of the deliver client, by broker. The client retries; dead letters and events are produced through it.",
			queries: q(
				query(`sum by (node_id) (rate(whisper_kafka_connect_errors_total{`+ns+`,`+deliverClientID+`}[$__rate_interval]))`, "connect {{node_id}}"),
				query(`sum by (node_id) (rate(whisper_kafka_write_errors_total{`+ns+`,`+deliverClientID+`}[$__rate_interval]))`, "write {{node_id}}"),
				query(`sum by (node_id) (rate(whisper_kafka_read_errors_total{`+ns+`,`+deliverClientID+`}[$__rate_interval]))`, "read {{node_id}}"),
			)}.timeseries())
	// The main pool holds the delivery ledger and the schedule; deliver
	// opens its own Redis client, named "deliver" (rate-limit tokens), not
	// the "main" one of ingest and decide.
	return withRuntime(withDependencies(b, `pool="main"`, `client="deliver"`), "deliver")
}
