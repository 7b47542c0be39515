package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/units"
)

// contentProcs selects the ContentService's procedures.
const contentProcs = `procedure=~"/whisper[.]content[.]v1[.]ContentService/.+"`

// Content is the content target's service dashboard: renders by channel
// and outcome (in process for decide and deliver, and over the API), their
// latency, the compiled-template cache and the ContentService.
func Content() *dashboard.DashboardBuilder {
	green, orange, red := "green", "orange", "red"
	b := withNamespace(newDashboard("whisper-content", "Whisper / Content",
		"The content target: renders by channel and outcome, render latency, the compiled-template cache and the ContentService.", "content")).
		WithRow(row("Renders")).
		WithPanel(panel{title: "Renders by channel and outcome", unit: units.CountsPerSecond, width: 8,
			description: "Renders per second (Render and Preview, in process and over the API), by channel and outcome: ok, template_error (the template or request is at fault), budget_exceeded, not_found, canceled, error (our side).",
			queries:     q(query(`sum by (channel, outcome) (rate(whisper_content_renders_total{`+ns+`}[$__rate_interval]))`, "{{channel}} {{outcome}}"))}.timeseries()).
		WithPanel(panel{title: "Render error ratio by channel", unit: units.PercentUnit, width: 8,
			description: "Share of renders per channel that failed on our side (outcome error). Template errors and budget overruns are the author's and not counted. Alert ContentRenderErrors fires above 5% for 15 minutes.",
			queries:     q(query(`sum by (channel) (rate(whisper_content_renders_total{`+ns+`,outcome="error"}[$__rate_interval])) / sum by (channel) (rate(whisper_content_renders_total{`+ns+`}[$__rate_interval]))`, "{{channel}}"))}.timeseries()).
		WithPanel(panel{title: "Render latency by channel", unit: units.Seconds, width: 8,
			description: "Median and 99th percentile time of one render per channel, template and profile reads included.",
			queries: q(
				query(`histogram_quantile(0.5, sum by (channel, le) (rate(whisper_content_render_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p50 {{channel}}"),
				query(`histogram_quantile(0.99, sum by (channel, le) (rate(whisper_content_render_duration_seconds_bucket{`+ns+`}[$__rate_interval])))`, "p99 {{channel}}"),
			)}.timeseries()).
		WithRow(row("Template cache")).
		WithPanel(panel{title: "Template cache hit ratio", unit: units.PercentUnit, width: 6,
			description: "Share of stored template versions served compiled from the cache over the selected range. Low after a deploy (the cache is per process), then close to 100%: templates change rarely.",
			queries:     q(query(`sum(increase(whisper_content_template_cache_hits_total{`+ns+`}[$__range])) / (sum(increase(whisper_content_template_cache_hits_total{`+ns+`}[$__range])) + sum(increase(whisper_content_template_cache_misses_total{`+ns+`}[$__range])))`, "hit ratio"))}.
			stat(1, step(nil, red), step(cog.ToPtr(0.5), orange), step(cog.ToPtr(0.9), green))).
		WithPanel(panel{title: "Template cache hits and misses", unit: units.OpsPerSecond, width: 18,
			description: "Template versions per second served from the cache (hits) and read from PostgreSQL and compiled (misses).",
			queries: q(
				query(`sum(rate(whisper_content_template_cache_hits_total{`+ns+`}[$__rate_interval]))`, "hits"),
				query(`sum(rate(whisper_content_template_cache_misses_total{`+ns+`}[$__rate_interval]))`, "misses"),
			)}.timeseries()).
		WithRow(row("ContentService (RED)")).
		WithPanel(panel{title: "RPCs by procedure and code", unit: units.RequestsPerSecond, width: 8,
			description: "ContentService calls per second, by procedure and Connect code (ok when successful).",
			queries:     q(query(`sum by (procedure, code) (rate(whisper_rpc_requests_total{`+ns+`,`+contentProcs+`}[$__rate_interval]))`, "{{procedure}} {{code}}"))}.timeseries()).
		WithPanel(panel{title: "RPC error ratio by procedure", unit: units.PercentUnit, width: 8,
			description: "Share of ContentService calls per procedure that did not end ok, client errors (invalid_argument for a bad template, not_found) included: see the codes panel to tell them apart.",
			queries:     q(query(`sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+contentProcs+`,code!="ok"}[$__rate_interval])) / sum by (procedure) (rate(whisper_rpc_requests_total{`+ns+`,`+contentProcs+`}[$__rate_interval]))`, "{{procedure}}"))}.timeseries()).
		WithPanel(panel{title: "RPC p99 latency by procedure", unit: units.Seconds, width: 8,
			description: "99th percentile time to handle a ContentService call per procedure.",
			queries:     q(query(`histogram_quantile(0.99, sum by (procedure, le) (rate(whisper_rpc_request_duration_seconds_bucket{`+ns+`,`+contentProcs+`}[$__rate_interval])))`, "{{procedure}}"))}.timeseries())
	return withRuntime(b, "content")
}
