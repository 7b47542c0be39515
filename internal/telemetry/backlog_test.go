package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestBacklogGaugesKeepTheirValuesOnFailure(t *testing.T) {
	g := NewBacklogGauges("whisper_test_outbox", "rows", "age")
	reg := prometheus.NewRegistry()
	reg.MustRegister(g.Items, g.OldestAge)
	if n, err := testutil.GatherAndCount(reg, "whisper_test_outbox_backlog_records", "whisper_test_outbox_oldest_age_seconds"); err != nil || n != 2 {
		t.Fatalf("registered %d of the two gauges by name: %v", n, err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	ctx := context.Background()
	g.Measure(ctx, logger, func(context.Context) (int64, time.Duration, error) { return 3, 90 * time.Second, nil })
	if n, age := testutil.ToFloat64(g.Items), testutil.ToFloat64(g.OldestAge); n != 3 || age != 90 {
		t.Fatalf("gauges %v, %v; want 3, 90", n, age)
	}
	g.Measure(ctx, logger, func(context.Context) (int64, time.Duration, error) { return 0, 0, errors.New("database down") })
	if n, age := testutil.ToFloat64(g.Items), testutil.ToFloat64(g.OldestAge); n != 3 || age != 90 {
		t.Errorf("after a failure: gauges %v, %v; want the last values 3, 90", n, age)
	}
	if !strings.Contains(logs.String(), "database down") {
		t.Errorf("failure not logged: %q", logs.String())
	}
	// A failure because the process is stopping is not worth a warning.
	logs.Reset()
	stopped, cancel := context.WithCancel(ctx)
	cancel()
	g.Measure(stopped, logger, func(ctx context.Context) (int64, time.Duration, error) { return 0, 0, ctx.Err() })
	if logs.Len() != 0 {
		t.Errorf("logged on the way out: %q", logs.String())
	}
}
