package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Rejection reasons, the values of the reason label.
const (
	reasonMalformed    = "malformed"
	reasonInvalid      = "invalid"
	reasonTooLarge     = "too_large"
	reasonUnauthorized = "unauthorized"
	reasonUnavailable  = "unavailable"
)

type metrics struct {
	accepted     *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	deduplicated prometheus.Counter
	dedupErrors  prometheus.Counter
	acked        prometheus.Counter
	produceFails *prometheus.CounterVec
	batchSize    prometheus.Histogram
	// The parts of a request that wait on another service: the dedup
	// check, the broker's acknowledgement, and the dedup mark after it
	// (off the request's path); children of one histogram by stage.
	dedupCheck, produce, dedupMark prometheus.Observer
}

func newMetrics(reg prometheus.Registerer, producer *kgo.Client) *metrics {
	m := &metrics{
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_ingest_events_accepted_total",
			Help: "Events accepted and durable on the broker, by API (segment or connect) and call type.",
		}, []string{"api", "type"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_ingest_requests_rejected_total",
			Help: "Requests refused as a whole (nothing of them produced), by API and reason: malformed, invalid, too_large, unauthorized, unavailable.",
		}, []string{"api", "reason"}),
		deduplicated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_ingest_events_deduplicated_total",
			Help: "Events accepted but not produced again because their message id was produced within the dedup window.",
		}),
		dedupErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_ingest_dedup_errors_total",
			Help: "Failed dedup lookups or marks in Redis; the events were still produced (at least once).",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_ingest_producer_acked_records_total",
			Help: "Records the broker acknowledged.",
		}),
		produceFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_ingest_producer_failed_records_total",
			Help: "Records the producer could not write, by cause: buffer_full, broker (refused or unreachable), ack_timeout (no answer in time; may still land).",
		}, []string{"cause"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "whisper_ingest_request_events",
			Help:    "Events per accepted request.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
	}
	stage := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "whisper_ingest_stage_duration_seconds",
		Help:    "Time per request spent in a stage: dedup_check (Redis lookup of the message ids), produce (until the broker acknowledged every record), dedup_mark (Redis write after the acknowledgement).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
	}, []string{"stage"})
	m.dedupCheck, m.produce, m.dedupMark = stage.WithLabelValues("dedup_check"), stage.WithLabelValues("produce"), stage.WithLabelValues("dedup_mark")
	reg.MustRegister(m.accepted, m.rejected, m.deduplicated, m.dedupErrors, m.acked, m.produceFails, m.batchSize, stage,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "whisper_ingest_producer_buffered_records",
			Help: "Records handed to the producer and not yet acknowledged by the broker.",
		}, func() float64 { return float64(producer.BufferedProduceRecords()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "whisper_ingest_producer_buffered_bytes",
			Help: "Bytes handed to the producer and not yet acknowledged by the broker.",
		}, func() float64 { return float64(producer.BufferedProduceBytes()) }),
	)
	return m
}
