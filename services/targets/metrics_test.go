package targets

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/whisperhq/whisper/internal/observability/contract"
)

// repoRoot holds dashboards/ and alerts/.
var repoRoot = filepath.Join("..", "..")

func TestMetricCatalogue(t *testing.T) {
	cat, err := MetricCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		typ    contract.Type
		labels []string
		bucket float64 // a boundary that must exist; 0 for none
	}{
		{"whisper_rpc_requests_total", contract.Counter, []string{"code", "procedure"}, 0},
		{"whisper_rpc_request_duration_seconds", contract.Histogram, []string{"procedure"}, 0.25},
		{"whisper_http_request_duration_seconds", contract.Histogram, []string{"route"}, 1},
		// Never observed: only Describe and the recorder's placeholder
		// child make these visible.
		{"whisper_ingest_events_accepted_total", contract.Counter, []string{"api", "type"}, 0},
		{"whisper_ingest_producer_failed_records_total", contract.Counter, []string{"cause"}, 0},
		{"whisper_ingest_request_events", contract.Histogram, nil, 1024},
		{"whisper_ingest_stage_duration_seconds", contract.Histogram, []string{"stage"}, 0.001},
		{"whisper_ingest_producer_buffered_records", contract.Gauge, nil, 0},
		// kprom registers when the client is created, with a constant
		// client_id label.
		{"whisper_kafka_produce_bytes_total", contract.Counter, []string{"client_id", "node_id", "topic"}, 0},
		{"whisper_kafka_request_duration_e2e_seconds", contract.Histogram, []string{"client_id", "node_id"}, 0},
		// Consumer lag, one gauge shared by profiles, decide and deliver.
		{"whisper_kafka_consumer_lag_records", contract.Gauge, []string{"group", "partition", "topic"}, 0},
		// Profiles: the consumer, the lifecycle and the outbox.
		{"whisper_profiles_records_total", contract.Counter, []string{"outcome"}, 0},
		{"whisper_profiles_failures_total", contract.Counter, []string{"operation"}, 0},
		{"whisper_profiles_batch_records", contract.Histogram, nil, 1024},
		{"whisper_profiles_apply_duration_seconds", contract.Histogram, nil, 0.001},
		{"whisper_profiles_stage_transitions_total", contract.Counter, []string{"from", "to"}, 0},
		{"whisper_profiles_sweep_recomputed_total", contract.Counter, nil, 0},
		{"whisper_profiles_outbox_published_total", contract.Counter, nil, 0},
		{"whisper_profiles_outbox_backlog_records", contract.Gauge, nil, 0},
		{"whisper_profiles_outbox_oldest_age_seconds", contract.Gauge, nil, 0},
		{"whisper_decide_outbox_backlog_records", contract.Gauge, nil, 0},
		{"whisper_decide_outbox_oldest_age_seconds", contract.Gauge, nil, 0},
		// Connection pools, read at scrape time by telemetry's collectors.
		{"whisper_pgxpool_acquired_connections", contract.Gauge, []string{"pool"}, 0},
		{"whisper_pgxpool_empty_acquires_total", contract.Counter, []string{"pool"}, 0},
		{"whisper_pgxpool_destroyed_connections_total", contract.Counter, []string{"pool", "reason"}, 0},
		{"whisper_redis_pool_timeouts_total", contract.Counter, []string{"client"}, 0},
		{"whisper_redis_pool_connections", contract.Gauge, []string{"client"}, 0},
		{"go_goroutines", contract.Gauge, nil, 0},
		{"process_cpu_seconds_total", contract.Counter, nil, 0},
	}
	for _, tt := range tests {
		m, ok := cat.Metric(tt.name)
		if !ok {
			t.Errorf("%s: not in the catalogue", tt.name)
			continue
		}
		if m.Type != tt.typ || !slices.Equal(m.Labels, tt.labels) {
			t.Errorf("%s: got %s %v, want %s %v", tt.name, m.Type, m.Labels, tt.typ, tt.labels)
		}
		if tt.bucket != 0 && !slices.Contains(m.Buckets, tt.bucket) {
			t.Errorf("%s: buckets %v lack %g", tt.name, m.Buckets, tt.bucket)
		}
	}
}

// TestObservabilityContract holds the committed dashboards and rules to
// the metrics the code registers: what `platformctl check` does.
func TestObservabilityContract(t *testing.T) {
	cat, err := MetricCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	vs, err := contract.Check(repoRoot, cat)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		t.Error(v)
	}
}

// TestObservabilityContractCatches breaks a copy of the real dashboards and
// rules one way at a time; each break must be reported where it is.
func TestObservabilityContractCatches(t *testing.T) {
	cat, err := MetricCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		file     string // relative to the root; empty content deletes it
		old, new string
		kind     string
		where    string
		rule     string
	}{
		{
			name: "renamed metric on a dashboard", file: "dashboards/ingest.json",
			old: "whisper_ingest_events_deduplicated_total", new: "whisper_ingest_events_dedup_total",
			kind: "Panel", where: "Deduplicated events", rule: contract.RuleUnknownMetric,
		},
		{
			name: "label the metric lacks", file: "dashboards/ingest.json",
			old: `whisper_ingest_producer_buffered_bytes{`, new: `whisper_ingest_producer_buffered_bytes{topic=\"whisper.events\",`,
			kind: "Panel", where: "Buffered bytes", rule: contract.RuleUnknownLabel,
		},
		{
			name: "le that is no bucket boundary", file: "alerts/slo.yaml",
			old: `le="0.25"`, new: `le="0.3"`,
			kind: "RecordingRule", where: "slo:sli_error:ratio_rate5m", rule: contract.RuleBucket,
		},
		{
			name: "runbook that does not exist", file: "alerts/runbooks/ingest-dedup-errors.md",
			kind: "AlertingRule", where: "IngestDedupErrors", rule: contract.RuleRunbook,
		},
		{
			name: "unknown metric in an alert", file: "alerts/ingest.yaml",
			old: "whisper_ingest_producer_buffered_records)", new: "whisper_ingest_producer_buffered)",
			kind: "AlertingRule", where: "IngestProducerBufferHigh", rule: contract.RuleUnknownMetric,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for _, dir := range []string{"dashboards", "alerts"} {
				if err := os.CopyFS(filepath.Join(root, dir), os.DirFS(filepath.Join(repoRoot, dir))); err != nil {
					t.Fatal(err)
				}
			}
			path := filepath.Join(root, filepath.FromSlash(tt.file))
			if tt.old == "" {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				data, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(data), tt.old) {
					t.Fatalf("%s does not contain %s: the test is out of date", tt.file, tt.old)
				}
				if err := os.WriteFile(path, []byte(strings.Replace(string(data), tt.old, tt.new, 1)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			vs, err := contract.Check(root, cat)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, v := range vs {
				found = found || (v.Kind == tt.kind && v.Name == tt.where && v.Rule == tt.rule)
			}
			if !found {
				t.Errorf("no %s violation on %s %q; got %v", tt.rule, tt.kind, tt.where, vs)
			}
		})
	}
}
