package telemetry

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BacklogGauges show a queue's backlog as of its last measure: the items
// waiting in it and the age of the oldest (0 when it is empty). Outboxes
// are measured this way on each sweep.
type BacklogGauges struct {
	Items, OldestAge prometheus.Gauge
}

// NewBacklogGauges names the gauges of a queue <prefix>_backlog_records
// and <prefix>_oldest_age_seconds, with the help texts given; the caller
// registers them.
func NewBacklogGauges(prefix, itemsHelp, oldestHelp string) BacklogGauges {
	return BacklogGauges{
		Items:     prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_backlog_records", Help: itemsHelp}),
		OldestAge: prometheus.NewGauge(prometheus.GaugeOpts{Name: prefix + "_oldest_age_seconds", Help: oldestHelp}),
	}
}

// Measure sets the gauges from backlog. A failure is logged, unless ctx has
// ended, and leaves the gauges at their last values.
func (g BacklogGauges) Measure(ctx context.Context, logger *slog.Logger, backlog func(context.Context) (items int64, oldest time.Duration, err error)) {
	n, age, err := backlog(ctx)
	if err != nil {
		if ctx.Err() == nil {
			logger.WarnContext(ctx, "measure the backlog", "err", err)
		}
		return
	}
	g.Items.Set(float64(n))
	g.OldestAge.Set(age.Seconds())
}
