package content

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

// Render outcomes, the values of the outcome label.
const (
	outcomeOK       = "ok"
	outcomeTemplate = "template_error" // the template or the request is at fault
	outcomeBudget   = "budget_exceeded"
	outcomeNotFound = "not_found"
	outcomeCanceled = "canceled"
	outcomeError    = "error"
)

type metrics struct {
	renders     *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	cacheHits   prometheus.Counter
	cacheMisses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		renders: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_content_renders_total",
			Help: "Renders (Render and Preview, in process and over the API), by channel (email, sms, push, webhook, in_app, unspecified) and outcome (ok, template_error, budget_exceeded, not_found, canceled, error).",
		}, []string{"channel", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "whisper_content_render_duration_seconds",
			Help:    "Time of one render by channel, template and profile reads included.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2.5, 12),
		}, []string{"channel"}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_content_template_cache_hits_total",
			Help: "Stored template versions served compiled from the cache.",
		}),
		cacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "whisper_content_template_cache_misses_total",
			Help: "Stored template versions read and compiled.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.renders, m.latency, m.cacheHits, m.cacheMisses)
	}
	return m
}

func channelLabel(ch contentv1.Channel) string {
	if ch == contentv1.Channel_CHANNEL_UNSPECIFIED || contentv1.Channel_name[int32(ch)] == "" {
		return "unspecified"
	}
	return strings.ToLower(strings.TrimPrefix(ch.String(), "CHANNEL_"))
}

func (m *metrics) observe(ch contentv1.Channel, err error, d time.Duration) {
	label := channelLabel(ch)
	m.renders.WithLabelValues(label, outcome(err)).Inc()
	m.latency.WithLabelValues(label).Observe(d.Seconds())
}

func outcome(err error) string {
	var te *TemplateError
	var fe *FieldError
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrBudget):
		return outcomeBudget
	case errors.As(err, &te), errors.As(err, &fe), errors.Is(err, ErrChannelChanged):
		return outcomeTemplate
	case errors.Is(err, ErrNotFound), errors.Is(err, ErrProfileNotFound):
		return outcomeNotFound
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return outcomeCanceled
	default:
		return outcomeError
	}
}
