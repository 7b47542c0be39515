package crdschema_test

import (
	"strings"
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/crdschema"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

func TestValidate(t *testing.T) {
	v, err := crdschema.New()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(v.Kinds()); got != 8 {
		t.Errorf("%d kinds, want 8: %v", got, v.Kinds())
	}
	tests := []struct {
		name string
		in   string
		want []string // substrings, one per error
	}{
		{"kafka", `apiVersion: kafka.strimzi.io/v1beta2
kind: Kafka
metadata: {name: k, annotations: {strimzi.io/kraft: enabled}}
spec:
  kafka:
    version: 3.9.0
    listeners: [{name: plain, port: 9092, type: internal, tls: false}]
    config: {offsets.topic.replication.factor: 3}
  entityOperator: {topicOperator: {}, userOperator: {}}
`, nil},
		{"kafka listener typo", `apiVersion: kafka.strimzi.io/v1beta2
kind: Kafka
metadata: {name: k}
spec:
  kafka:
    listeners: [{name: plain, port: 9092, type: internal, tls: false, tsl: true}]
`, []string{`unknown field "spec.kafka.listeners[0].tsl"`}},
		{"topic bounds", "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\nmetadata: {name: t}\nspec: {partitions: 0, replicas: 3}\n",
			[]string{"spec.partitions"}},
		{"node pool enum", "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaNodePool\nmetadata: {name: p}\nspec: {replicas: 3, roles: [leader], storage: {type: ephemeral}}\n",
			[]string{"spec.roles[0]"}},
		{"cnpg cluster", "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg}\nspec: {instances: 3, storage: {size: 10Gi}, monitoring: {enablePodMonitor: true}}\n", nil},
		{"cnpg cluster typo", "apiVersion: postgresql.cnpg.io/v1\nkind: Cluster\nmetadata: {name: pg}\nspec: {instances: 3, storage: {sise: 10Gi}}\n",
			[]string{`unknown field "spec.storage.sise"`}},
		{"scheduled backup missing cluster", "apiVersion: postgresql.cnpg.io/v1\nkind: ScheduledBackup\nmetadata: {name: b}\nspec: {schedule: '0 0 0 * * *'}\n",
			[]string{"spec.cluster"}},
		{"pod monitor", "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: m}\nspec:\n  selector: {matchLabels: {a: b}}\n  podMetricsEndpoints: [{port: http, interval: 30s}]\n", nil},
		{"pod monitor typo and bad interval", "apiVersion: monitoring.coreos.com/v1\nkind: PodMonitor\nmetadata: {name: m}\nspec:\n  selector: {}\n  podMetricsEndpoints: [{port: http, intreval: 30s, scrapeTimeout: soon}]\n",
			[]string{`unknown field "spec.podMetricsEndpoints[0].intreval"`, "scrapeTimeout"}},
		{"prometheus rule", "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r}\nspec:\n  groups: [{name: g, rules: [{alert: A, expr: up == 0, for: 5m, labels: {severity: page}}]}]\n", nil},
		{"prometheus rule without expr", "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r}\nspec:\n  groups: [{name: g, rules: [{alert: A}]}]\n",
			[]string{"expr"}},
		{"service monitor", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: s}\nspec:\n  selector: {}\n  endpoints: [{port: http, path: /metrics}]\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, errs := manifest.Parse("f.yaml", []byte(tt.in))
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			if !v.Knows(docs[0].APIVersion(), docs[0].Kind()) {
				t.Fatalf("no schema for %s", docs[0].Kind())
			}
			got := v.Validate(docs[0])
			if len(got) != len(tt.want) {
				t.Fatalf("errors %v, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i].Error(), w) {
					t.Errorf("error %d = %v, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}
