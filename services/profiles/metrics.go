package profiles

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/telemetry"
)

// Record outcomes, the values of the outcome label.
const (
	outcomeApplied      = "applied"
	outcomeDuplicate    = "duplicate"
	outcomeDeadLettered = "dead_lettered"
)

// Operations that can fail and are retried, the values of the operation
// label of whisper_profiles_failures_total.
const (
	opApply      = "apply events"
	opDeadLetter = "dead-letter records"
	opMirror     = "mirror to redis"
	opPublish    = "publish changes"
	opSweep      = "sweep"
)

type metrics struct {
	records       *prometheus.CounterVec
	failures      *prometheus.CounterVec
	batchDuration prometheus.Histogram
	applyDuration prometheus.Histogram
	batchRecords  prometheus.Histogram
	lag           *kafka.ConsumerLag // shared with the other consumers of the process
	transitions   *prometheus.CounterVec
	swept         prometheus.Counter
	published     prometheus.Counter
	outbox        telemetry.BacklogGauges
	users         *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_profiles_records_total",
			Help: "Records of whisper.events consumed, by outcome: applied, duplicate (message id applied before), dead_lettered (copied to whisper.events.dlq).",
		}, []string{"outcome"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_profiles_failures_total",
			Help: "Failed attempts, by operation (apply events, dead-letter records, mirror to redis, publish changes, sweep); each is retried with backoff and no offset is committed meanwhile.",
		}, []string{"operation"}),
		batchDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "whisper_profiles_partition_batch_duration_seconds",
			Help:    "Time to apply one partition's share of a poll, retries included.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		applyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "whisper_profiles_apply_duration_seconds",
			Help:    "Time of one successful attempt to apply a partition batch: the PostgreSQL transaction, then the Redis mirror.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		batchRecords: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "whisper_profiles_batch_records",
			Help:    "Records per partition batch (one partition's share of a poll).",
			Buckets: prometheus.ExponentialBuckets(1, 4, 8),
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_profiles_stage_transitions_total",
			Help: "Lifecycle stage changes, by previous and new stage, made by events or by the sweeper.",
		}, []string{"from", "to"}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_profiles_sweep_recomputed_total",
			Help: "Profiles recomputed by the sweeper because their stage or score band was due to change with time.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_profiles_outbox_published_total",
			Help: "Profile changes produced to whisper.profiles from the outbox.",
		}),
		outbox: telemetry.NewBacklogGauges("whisper_profiles_outbox",
			"Profile changes waiting in the outbox to be produced to whisper.profiles.",
			"Age of the oldest profile change waiting in the outbox; 0 when it is empty."),
		users: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "whisper_profiles_users",
			Help: "Profiles in each lifecycle stage, all workspaces together, as of the last periodic count.",
		}, []string{"stage"}),
	}
	lag, err := kafka.NewConsumerLag(reg)
	if err != nil {
		panic(err) // a conflicting collector of that name: as MustRegister below
	}
	m.lag = lag
	if reg != nil {
		reg.MustRegister(m.records, m.failures, m.batchDuration, m.applyDuration, m.batchRecords,
			m.transitions, m.swept, m.published, m.outbox.Items, m.outbox.OldestAge, m.users)
	}
	return m
}

func (m *metrics) transitioned(ts [][2]string) {
	for _, t := range ts {
		m.transitions.WithLabelValues(t[0], t[1]).Inc()
	}
}
