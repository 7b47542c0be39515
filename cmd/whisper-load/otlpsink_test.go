package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/whisperhq/whisper/internal/tracing"
)

// TestTracingEnv points tracing, set up as `whisper dev` sets it up, at the
// sink through the environment tracingEnv gives the child: the sink counts
// every span once the provider is shut down, and tracing off is refused by
// the variable that turns it off.
func TestTracingEnv(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	env, stop, err := tracingEnv(true, logger)
	if err != nil {
		t.Fatal(err)
	}
	setEnv(t, env)
	p, err := tracing.New(context.Background(), tracing.Options{Targets: []string{"ingest"}})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Enabled() {
		t.Fatalf("tracing off in the environment %q", env)
	}
	for range 3 {
		_, span := p.TracerProvider().Tracer("t").Start(context.Background(), "POST /v1/batch")
		span.End()
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	// The spans were counted: a second sink that receives nothing fails.
	env, stop, err = tracingEnv(true, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err == nil || !strings.Contains(err.Error(), "exported no span") {
		t.Errorf("stop of a sink that got nothing = %v, want an error", err)
	}

	env, stop, err = tracingEnv(false, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	setEnv(t, append([]string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:1"}, env...))
	p, err = tracing.New(context.Background(), tracing.Options{})
	if err != nil || p.Enabled() {
		t.Errorf("with %q: enabled %v, %v; want off", env, p.Enabled(), err)
	}
}

func setEnv(t *testing.T, env []string) {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}
