package metricstest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total", Help: "h"}, []string{"k"})
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "h_seconds", Help: "h"}, []string{"k"})
	reg.MustRegister(c, h)
	c.WithLabelValues("a").Add(3)
	h.WithLabelValues("b").Observe(1)
	h.WithLabelValues("b").Observe(2)
	if got := Series(t, reg, "c_total", "k", "a").GetCounter().GetValue(); got != 3 {
		t.Errorf("counter = %v, want 3", got)
	}
	if got := Series(t, reg, "h_seconds", "k", "b").GetHistogram().GetSampleCount(); got != 2 {
		t.Errorf("histogram count = %v, want 2", got)
	}
	if m := Series(t, reg, "c_total", "k", "missing"); m != nil || m.GetCounter().GetValue() != 0 {
		t.Errorf("missing series = %v, want nil reading 0", m)
	}
}
