package deliver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	deliveries *prometheus.CounterVec
	attempts   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	lateness   *prometheus.HistogramVec
	rateWait   *prometheus.HistogramVec
	dlq        prometheus.Counter
	invalid    prometheus.Counter
	backlog    prometheus.Gauge
	overdue    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_deliver_deliveries_total",
			Help: "Deliveries that reached a final state, by channel and status (sent, failed, skipped).",
		}, []string{"channel", "status"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_deliver_attempts_total",
			Help: "Send attempts, by channel and result (sent, retryable, failed, bounced, skipped).",
		}, []string{"channel", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_deliver_retries_total",
			Help: "Attempts that failed retryably and were scheduled again, by channel.",
		}, []string{"channel"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "whisper_deliver_send_duration_seconds",
			Help:    "Provider call latency, by channel.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
		}, []string{"channel"}),
		lateness: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "whisper_deliver_lateness_seconds",
			Help:    "From a delivery's scheduled send time to its outcome, by channel.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"channel"}),
		rateWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "whisper_deliver_rate_limit_wait_seconds",
			Help:    "Time a send waited for its channel's rate-limit token, by channel.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}, []string{"channel"}),
		dlq: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_deliver_dlq_total",
			Help: "Decisions copied to whisper.decisions.dlq after their retries were exhausted.",
		}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_deliver_invalid_records_total",
			Help: "Records of whisper.decisions deliver could not use (not a decision, no valid ids), copied to whisper.decisions.dlq.",
		}),
		backlog: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "whisper_deliver_scheduled_backlog",
			Help: "Deliveries not final yet (scheduled, retrying or sending), across replicas.",
		}),
		overdue: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "whisper_deliver_oldest_overdue_seconds",
			Help: "How long the most overdue pending delivery has been due; 0 when none is.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.attempts, m.retries, m.latency, m.lateness, m.rateWait, m.dlq, m.invalid, m.backlog, m.overdue)
	}
	return m
}

func (m *metrics) observe(channel string, r result, sendTime time.Time) {
	m.attempts.WithLabelValues(channel, r.attempt).Inc()
	if r.state == "retrying" {
		m.retries.WithLabelValues(channel).Inc()
		return
	}
	m.deliveries.WithLabelValues(channel, r.state).Inc()
	m.lateness.WithLabelValues(channel).Observe(max(0, time.Since(sendTime).Seconds()))
}
