package profiles

import "github.com/prometheus/client_golang/prometheus"

// Record outcomes, the values of the outcome label.
const (
	outcomeApplied      = "applied"
	outcomeDuplicate    = "duplicate"
	outcomeDeadLettered = "dead_lettered"
)

type metrics struct {
	records       *prometheus.CounterVec
	failures      *prometheus.CounterVec
	batchDuration prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_profiles_records_total",
			Help: "Records of whisper.events consumed, by outcome: applied, duplicate (message id applied before), dead_lettered.",
		}, []string{"outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_profiles_failures_total",
			Help: "Failed attempts to apply events or dead-letter records, by operation; each is retried with backoff and nothing is committed meanwhile.",
		}, []string{"operation"}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "whisper_profiles_partition_batch_duration_seconds",
			Help:    "Time to apply one partition's share of a poll, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.records, m.failures, m.batchDuration)
	}
	return m
}
