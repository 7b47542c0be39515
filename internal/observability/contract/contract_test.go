package contract

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/whisperhq/whisper/internal/telemetry"
)

// testCatalogue is built from real collectors: telemetry's RED metrics and
// runtime collectors, plus one business counter.
func testCatalogue(t *testing.T) *Catalogue {
	t.Helper()
	reg := telemetry.NewRegistry()
	rec := NewRecorder(reg)
	telemetry.NewRED(rec)
	rec.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "whisper_ingest_things_total", Help: "Things.",
	}, []string{"kind"}))
	cat, err := rec.Catalogue()
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func TestRecorderCatalogue(t *testing.T) {
	cat := testCatalogue(t)
	type summary struct {
		Type    Type
		Labels  []string
		Buckets int
		Native  bool
	}
	tests := map[string]summary{
		"whisper_rpc_requests_total":            {Counter, []string{"code", "procedure"}, 0, false},
		"whisper_http_request_duration_seconds": {Histogram, []string{"route"}, 14, true},
		"whisper_ingest_things_total":           {Counter, []string{"kind"}, 0, false},
		"go_goroutines":                         {Gauge, nil, 0, false},
		"go_gc_duration_seconds":                {Summary, nil, 0, false},
		"process_cpu_seconds_total":             {Counter, nil, 0, false},
	}
	for name, want := range tests {
		m, ok := cat.Metric(name)
		if !ok {
			t.Errorf("%s missing from the catalogue", name)
			continue
		}
		got := summary{m.Type, m.Labels, len(m.Buckets), m.Native}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}

type panelSpec struct{ title, expr string }

// writeRepo writes a dashboard of panels, a rule file and the runbooks
// into a fresh root.
func writeRepo(t *testing.T, panels []panelSpec, rules string, runbooks ...string) string {
	t.Helper()
	root := t.TempDir()
	var ps []map[string]any
	for _, p := range panels {
		ps = append(ps, map[string]any{
			"type": "timeseries", "title": p.title, "description": "Shows " + p.title + ".",
			"fieldConfig": map[string]any{"defaults": map[string]any{"unit": "short"}},
			"targets":     []map[string]any{{"expr": p.expr}},
		})
	}
	data, err := json.Marshal(map[string]any{"title": "Test", "panels": ps})
	if err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{
		"dashboards/test.json": string(data),
		"alerts/test.yaml":     rules,
	} {
		if err := os.MkdirAll(filepath.Join(root, filepath.Dir(path)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, path), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, RunbooksDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, rb := range runbooks {
		if err := os.WriteFile(filepath.Join(root, RunbooksDir, rb), []byte("# runbook\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// goodPanels show the business metric, so coverage holds.
var goodPanels = []panelSpec{
	{"Things", `sum by (kind) (rate(whisper_ingest_things_total{namespace=~"$namespace"}[$__rate_interval]))`},
	{"RPC p99", `histogram_quantile(0.99, sum by (procedure, le) (rate(whisper_rpc_request_duration_seconds_bucket{procedure=~"$procedure"}[$__rate_interval])))`},
	{"Slow share", `1 - sum(rate(whisper_http_request_duration_seconds_bucket{le="0.25"}[$__rate_interval])) / sum(rate(whisper_http_request_duration_seconds_count[5m]))`},
	{"Native p99", `histogram_quantile(0.99, sum(rate(whisper_rpc_request_duration_seconds[$__rate_interval])))`},
	{"Counter without suffix", `rate(whisper_rpc_requests_total{code="ok"}[${__rate_interval}])`},
	{"GC", `go_gc_duration_seconds{quantile="1",pod=~"$pod"}`},
	{"Restarts", `increase(kube_pod_container_status_restarts_total{container="whisper"}[$__rate_interval])`},
	{"Recorded", `errors:ratio_rate5m{route="/v1/track"}`},
}

const goodRules = `groups:
  - name: test
    rules:
      - record: errors:ratio_rate5m
        expr: sum by (route) (rate(whisper_http_requests_total{code=~"5.."}[5m])) / sum by (route) (rate(whisper_http_requests_total[5m]))
        labels:
          team: ingest
      - alert: ErrorsHigh
        expr: errors:ratio_rate5m{route="/v1/track", team="ingest"} > 0.01
        labels:
          severity: critical
        annotations:
          summary: Requests are failing.
          description: "{{ $value | humanizePercentage }} of requests on {{ $labels.route }} fail."
          runbook_url: https://github.com/whisperhq/whisper/blob/main/alerts/runbooks/errors-high.md
`

type want struct{ Kind, Name, Rule string }

func TestCheck(t *testing.T) {
	cat := testCatalogue(t)
	tests := []struct {
		name     string
		panels   []panelSpec
		rules    string
		runbooks []string
		want     []want
	}{
		{name: "clean", panels: goodPanels, rules: goodRules, runbooks: []string{"errors-high.md"}},
		{
			name:   "unknown metric on a panel",
			panels: append([]panelSpec{{"Typo", `rate(whisper_rpc_request_total[$__rate_interval])`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Typo", RuleUnknownMetric}},
		},
		{
			name:   "classic histogram has no bare series",
			panels: append([]panelSpec{{"Bare", `whisper_rpc_requests_total_bucket`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Bare", RuleUnknownMetric}},
		},
		{
			name:   "label the metric does not have",
			panels: append([]panelSpec{{"Bad label", `rate(whisper_rpc_requests_total{route="/v1/track"}[$__rate_interval])`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Bad label", RuleUnknownLabel}},
		},
		{
			name:   "aggregation by a label the series lack",
			panels: append([]panelSpec{{"Bad by", `sum by (rout) (rate(whisper_http_requests_total[$__rate_interval]))`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Bad by", RuleUnknownLabel}},
		},
		{
			name:   "aggregation by a label a recorded series lacks",
			panels: append([]panelSpec{{"Bad by recorded", `max by (code) (errors:ratio_rate5m)`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Bad by recorded", RuleUnknownLabel}},
		},
		{
			name:   "le on a metric that is not a histogram bucket",
			panels: append([]panelSpec{{"le on counter", `whisper_rpc_requests_total{le="1"}`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "le on counter", RuleUnknownLabel}},
		},
		{
			name:   "le that is not a boundary",
			panels: append([]panelSpec{{"Bad le", `rate(whisper_http_request_duration_seconds_bucket{le="0.3"}[$__rate_interval])`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Bad le", RuleBucket}},
		},
		{
			name:   "le alternation with one bad value",
			panels: append([]panelSpec{{"Bad le regexp", `whisper_http_request_duration_seconds_bucket{le=~"0.25|0.3"}`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Bad le regexp", RuleBucket}},
		},
		{
			name:   "label a recorded series does not keep",
			panels: append([]panelSpec{{"Lost label", `errors:ratio_rate5m{code="500"}`}}, goodPanels...),
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Panel", "Lost label", RuleUnknownLabel}},
		},
		{
			name:   "business metric on no dashboard",
			panels: goodPanels[1:],
			rules:  goodRules, runbooks: []string{"errors-high.md"},
			want: []want{{"Metric", "whisper_ingest_things_total", RuleNotOnDashboard}},
		},
		{
			name:   "fixed range on a panel",
			panels: goodPanels, rules: goodRules, runbooks: []string{"errors-high.md"},
			// The "Slow share" panel uses [5m].
			want: []want{{"Panel", "Slow share", RulePanelStyle}},
		},
		{
			name:   "missing runbook",
			panels: goodPanels, rules: goodRules,
			want: []want{{"AlertingRule", "ErrorsHigh", RuleRunbook}},
		},
		{
			name:     "unknown metric in a rule",
			panels:   goodPanels,
			rules:    strings.Replace(goodRules, "whisper_http_requests_total[5m]", "whisper_http_request_total[5m]", 1),
			runbooks: []string{"errors-high.md"},
			want:     []want{{"RecordingRule", "errors:ratio_rate5m", RuleUnknownMetric}},
		},
		{
			name:   "alert style",
			panels: goodPanels,
			rules: strings.NewReplacer(
				"alert: ErrorsHigh", "alert: errors_high",
				"severity: critical", "severity: page",
				"summary: Requests are failing.", "summary: Requests on {{ $labels.route }} are failing.",
				`description: "{{ $value | humanizePercentage }} of requests on {{ $labels.route }} fail."`, "description: Requests fail.",
				"alerts/runbooks/errors-high.md", "docs/errors-high.md",
			).Replace(goodRules),
			runbooks: []string{"errors-high.md"},
			want: []want{
				{"AlertingRule", "errors_high", RuleAlertName},
				{"AlertingRule", "errors_high", RuleSeverity},
				{"AlertingRule", "errors_high", RuleSummary},
				{"AlertingRule", "errors_high", RuleDescription},
				{"AlertingRule", "errors_high", RuleRunbook},
			},
		},
		{
			name:   "two-sentence summary and no severity",
			panels: goodPanels,
			rules: strings.NewReplacer(
				"summary: Requests are failing.", "summary: Requests are failing. Clients retry.",
				"        labels:\n          severity: critical\n", "",
			).Replace(goodRules),
			runbooks: []string{"errors-high.md"},
			want: []want{
				{"AlertingRule", "ErrorsHigh", RuleSeverity},
				{"AlertingRule", "ErrorsHigh", RuleSummary},
			},
		},
		{
			name: "rule file that does not parse", panels: goodPanels, rules: "groups: [", runbooks: []string{"errors-high.md"},
			// The recorded series is then unknown to the dashboard too.
			want: []want{{"RuleFile", "test.yaml", RuleParse}, {"Panel", "Recorded", RuleUnknownMetric}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := writeRepo(t, tt.panels, tt.rules, tt.runbooks...)
			vs, err := Check(root, cat)
			if err != nil {
				t.Fatal(err)
			}
			var got []want
			for _, v := range vs {
				if tt.name != "fixed range on a panel" && v.Name == "Slow share" {
					continue // the fixed range of a good panel, tested on its own
				}
				got = append(got, want{v.Kind, v.Name, v.Rule})
				if v.File == "" || v.Message == "" {
					t.Errorf("violation without file or message: %+v", v)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("violations (-want +got):\n%s\nall: %v", diff, vs)
			}
		})
	}
}

func TestExpandVariables(t *testing.T) {
	tests := map[string]string{
		`rate(x{a=~"$ns"}[$__rate_interval])`:           `rate(x{a=~"variable"}[5m])`,
		`rate(x{a=~"${ns:regex}"}[${__rate_interval}])`: `rate(x{a=~"variable"}[5m])`,
		`increase(x{a="[[ns]]"}[$__range])`:             `increase(x{a="variable"}[5m])`,
	}
	for in, want := range tests {
		if got := expand(in); got != want {
			t.Errorf("expand(%s) = %s, want %s", in, got, want)
		}
	}
}
