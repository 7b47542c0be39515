package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// Selectors of the decide target's Connect services and its Kafka client.
const (
	decideProcs    = `procedure=~"/whisper[.](campaign[.]v1[.]CampaignService|decision[.]v1[.]DecisionService)/.+"`
	decideClientID = `client_id="whisper-decide"`
)

// Decide is the decide target's service dashboard: the CampaignService and
// DecisionService, what the pipeline decides per campaign, its outbox, the contact
// policy's cost, waits and conversions, its consumer of whisper.events and
// whisper.profiles, and the saturation of its PostgreSQL and Redis pools.
//
// Kafka consumer lag is not shown: kprom exports no lag metric, and decide
// does not measure its own (profiles does); fetched and buffered records
// stand in for it.
func Decide() *dashboard.DashboardBuilder {
	green, orange, red := "green", "orange", "red"
	b := withNamespace(newDashboard("whisper-decide", "Whisper / Decide",
		"The decide target: the CampaignService and DecisionService, decisions per campaign and outcome, contact-policy latency, waits, conversions, its whisper.events and whisper.profiles consumer, and its PostgreSQL and Redis pools.", "decide")).
		WithRow(row("CampaignService and DecisionService (RED)")).
		WithPanel(panel{title: "RPCs by procedure and code", unit: units.RequestsPerSecond, width: 8,
			description: "CampaignService and DecisionService calls per second, by procedure and Connect code (ok when successful).",
			queries:     q(query(`sum by (procedure, code) (rate(whisper_rpc_requests_total{`+ns+`,`+decideProcs+`}[$__rate_interval]))`, "{{procedure}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "RPC error ratio by procedure", unit: units.PercentUnit, width: 8,
			description: "Share of calls per procedure that did not end ok, client errors (invalid_argument, not_found, failed_precondition) included: see the codes panel to tell them apart.",
			queries:     q(query(`sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+decideProcs+`,code!="ok"}[$__rate_interval])) / sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+decideProcs+`}[$__rate_interval]))`, "{{procedure}}"))}.timeseries()).
		WithPanel(panel{title: "RPC p99 latency by procedure", unit: units.Seconds, width: 8,
			description: "99th percentile time to handle a call per procedure. Decide includes the contact-policy reservation in Redis and the decision record in PostgreSQL.",
			queries:     q(query(`histogram_quantile(0.99, sum by (procedure, le) (rate(whisper_rpc_request_duration_seconds_bucket{`+ns+`,`+decideProcs+`}[$__rate_interval])))`, "{{procedure}}"))}.timeseries()).
		WithRow(row("Decisions")).
		WithPanel(panel{title: "Decisions by campaign and outcome", unit: units.CountsPerSecond, width: 12,
			description: "Final decisions per second, by campaign id and outcome: send, deferred, skipped_audience, skipped_consent, capped (contact policy), holdout, exited.",
			queries:     q(query(`sum by (campaign, outcome) (rate(whisper_decide_decisions_total{`+ns+`}[$__rate_interval]))`, "{{campaign}} {{outcome}}"))}.timeseries()).
		WithPanel(panel{title: "Send ratio by campaign", unit: units.PercentUnit, width: 12,
			description: "Share of each campaign's decisions that are sends. A drop with steady triggers means the audience, consent or the contact policy (capped) now holds messages back.",
			queries:     q(query(`sum by (campaign) (rate(whisper_decide_decisions_total{`+ns+`,outcome="send"}[$__rate_interval])) / sum by (campaign) (rate(whisper_decide_decisions_total{`+ns+`}[$__rate_interval]))`, "{{campaign}}"))}.timeseries()).
		WithPanel(panel{title: "Conversions", unit: units.CountsPerSecond, width: 8,
			description: "Goal events per second attributed to a decision within its campaign's attribution window.",
			queries:     q(query(`sum(rate(whisper_decide_conversions_total{`+ns+`}[$__rate_interval]))`, "conversions"))}.timeseries()).
		WithPanel(panel{title: "Waits started and ended", unit: units.CountsPerSecond, width: 8,
			description: "Waits of campaign steps started and ended per second (by delay, awaited event, exit event or timeout). Started above ended for long means waits pile up.",
			queries:     q(query(`sum by (transition) (rate(whisper_decide_waits_total{`+ns+`}[$__rate_interval]))`, "{{transition}}"))}.timeseries()).
		WithPanel(panel{title: "Duplicate triggers", unit: units.CountsPerSecond, width: 8,
			description: "Triggers a campaign had already decided, per second: redelivered events or profile changes, repeated Decide request ids. They decide nothing twice; a burst follows a consumer rebalance or replay.",
			queries:     q(query(`sum(rate(whisper_decide_duplicate_triggers_total{`+ns+`}[$__rate_interval]))`, "duplicates"))}.timeseries()).
		WithRow(row("Contact policy")).
		WithPanel(panel{title: "Policy evaluation latency", unit: units.Seconds, width: 12,
			description: "Median and 99th percentile time of one evaluation of the contact policy's Rego query, memoized (answered from the policy's memo) or not. Alert DecidePolicySlow fires when the p99 stays above 50 ms.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (memoized, le) (rate(whisper_decide_policy_evaluation_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50 memoized={{memoized}}"),
				query(`histogram_quantile(0.99, sum by (memoized, le) (rate(whisper_decide_policy_evaluation_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99 memoized={{memoized}}"),
			)}.timeseries()).
		WithPanel(panel{title: "Reservation latency", unit: units.Seconds, width: 12,
			description: "Median and 99th percentile time of one contact-policy reservation: reading the user's counters in Redis, evaluating the policy and running the reservation script. Above the evaluation latency, the rest is Redis.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (le) (rate(whisper_decide_policy_reserve_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50"),
				query(`histogram_quantile(0.99, sum by (le) (rate(whisper_decide_policy_reserve_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99"),
			)}.timeseries()).
		WithRow(row("Outbox (whisper.decisions)")).
		WithPanel(panel{title: "Outbox backlog", unit: units.Short, width: 12,
			description: "Decisions committed and not yet acknowledged on whisper.decisions (or acknowledged and not yet deleted), as of each replica's last sweep. Every replica measures the same table, hence max. Normally a handful: rows leave within a second.",
			queries:     q(query(`max(whisper_decide_outbox_backlog_records{`+ns+`})`, "backlog"))}.timeseries()).
		WithPanel(panel{title: "Oldest decision in the outbox", unit: units.Seconds, width: 12,
			description: "Age of the oldest decision in the outbox: how late deliver learns of it at worst. The sweeper publishes what is 30 s old; alert DecideOutboxBacklog fires past 5 minutes.",
			queries:     q(query(`max(whisper_decide_outbox_oldest_age_seconds{`+ns+`})`, "age"))}.
			stat(0, step(nil, green), step(cog.ToPtr(60.0), orange), step(cog.ToPtr(300.0), red))).
		WithRow(row("Consumer (whisper.events, whisper.profiles)")).
		WithPanel(panel{title: "Records by topic and outcome", unit: units.CountsPerSecond, width: 8,
			description: "Records consumed per second, by topic and outcome: applied, or skipped (undecodable or without a user id).",
			queries:     q(query(`sum by (topic, outcome) (rate(whisper_decide_records_total{`+ns+`}[$__rate_interval]))`, "{{topic}} {{outcome}}"))}.timeseries()).
		WithPanel(panel{title: "Failed attempts by operation", unit: units.OpsPerSecond, width: 8,
			description: "Failed attempts per second, by operation (process records, observe activity, publish decisions, publish outbox, delete outbox, end waits, prune bandit). Each is retried: records with backoff, no offset committed meanwhile; a decision the broker refused (publish decisions) by the outbox sweeper; acknowledged ones not deleted from the outbox (delete outbox) at the next deletion. Alert DecideFailing fires after 10 minutes of them.",
			queries:     q(query(`sum by (operation) (rate(whisper_decide_failures_total{`+ns+`}[$__rate_interval]))`, "{{operation}}"))}.timeseries()).
		WithPanel(panel{title: "Failed attempts in range", unit: units.Short, width: 8,
			description: "Failed attempts of every operation over the selected range. Any is worth a look at the pods' logs (grep retrying).",
			queries:     q(query(`sum(increase(whisper_decide_failures_total{`+ns+`}[$__range]))`, "failures"))}.
			stat(0, step(nil, green), step(cog.ToPtr(1.0), orange))).
		WithPanel(panel{title: "Kafka records fetched by topic", unit: units.CountsPerSecond, width: 8,
			description: "Records the decide client fetched per second, by topic (kprom). Lag itself is not exported: compare with ingestion's produce rate.",
			queries:     q(query(`sum by (topic) (rate(whisper_kafka_fetch_records_total{`+ns+`,`+decideClientID+`}[$__rate_interval]))`, "{{topic}}"))}.timeseries()).
		WithPanel(panel{title: "Kafka buffered fetch records", unit: units.Short, width: 8,
			description: "Records fetched and not yet polled, per pod (kprom). A full buffer with low throughput means processing, not Kafka, is the bottleneck.",
			queries:     q(query(`max by (pod) (whisper_kafka_buffered_fetch_records_total{`+ns+`,`+decideClientID+`})`, "{{pod}}"))}.timeseries()).
		WithPanel(panel{title: "Kafka errors", unit: units.OpsPerSecond, width: 8,
			description: "Connection, write and read errors per second of the decide client, by broker. The client retries; sustained errors show as failures above.",
			queries: q(
				query(`sum by (node_id) (rate(whisper_kafka_connect_errors_total{`+ns+`,`+decideClientID+`}[$__rate_interval]))`, "connect {{node_id}}"),
				query(`sum by (node_id) (rate(whisper_kafka_write_errors_total{`+ns+`,`+decideClientID+`}[$__rate_interval]))`, "write {{node_id}}"),
				query(`sum by (node_id) (rate(whisper_kafka_read_errors_total{`+ns+`,`+decideClientID+`}[$__rate_interval]))`, "read {{node_id}}"),
			)}.timeseries()).
		WithPanel(panel{title: "Consumer lag by topic and partition", unit: units.Short, width: 24,
			description: "Records of whisper.events and whisper.profiles behind each partition's high watermark after the last processed batch of the whisper-decide group. Growing lag means decisions fall behind events: check failures and policy latency.",
			queries:     q(query(`max by (topic, partition) (whisper_kafka_consumer_lag_records{`+ns+`,group="whisper-decide"})`, "{{topic}} {{partition}}"))}.timeseries())
	// The main pool holds campaigns, decisions and waits; the bandit pool
	// the arms' statistics; Redis "main" the contact-policy counters.
	return withRuntime(withDependencies(b, `pool=~"main|bandit"`, `client="main"`), "decide")
}
