// Command whisper runs the Whisper platform: `whisper serve` runs the
// targets named by --target against real dependencies, `whisper dev` runs
// every target on embedded ones.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"

	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/tracing"
	"github.com/whisperhq/whisper/services/targets"
)

const usage = `usage: whisper <command> [flags]

commands:
  serve   run the targets named by --target (WHISPER_TARGET) against real Kafka, PostgreSQL and Redis
  dev     run every target on embedded Kafka and Redis and a local PostgreSQL

Every flag has an environment fallback: --http-addr is WHISPER_HTTP_ADDR.
Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; the standard OTEL_*
variables apply (protocol, headers, sampler, service name, resource attributes).
Run "whisper <command> -h" for its flags.
`

// defaultGCPercent trades memory for CPU: an ingest process holds little
// live heap, and the default GOGC=100 spends a tenth of its CPU collecting
// request garbage. GOGC in the environment wins, as does GOMEMLIMIT.
const defaultGCPercent = 200

func main() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("whisper "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg targets.Config
	cfg.RegisterFlags(fs)
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "json", "json or text")
	var dev targets.DevConfig
	switch cmd {
	case "serve":
	case "dev":
		dev.RegisterFlags(fs)
		if err := fs.Set("log-format", "text"); err != nil {
			panic(err)
		}
	default:
		fmt.Fprintf(stderr, "whisper: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err := config.Parse(fs, args[1:], os.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "whisper %s: %v\n", cmd, err)
		return 2
	}
	logger, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "whisper %s: %v\n", cmd, err)
		return 2
	}
	tp, err := startTracing(ctx, cfg.Targets, logger)
	if err != nil {
		fmt.Fprintf(stderr, "whisper %s: %v\n", cmd, err)
		return 2
	}
	cfg.TracerProvider = tp.TracerProvider()
	if cmd == "dev" {
		err = targets.RunDev(ctx, cfg, dev, logger, stdout)
	} else {
		err = targets.Run(ctx, cfg, logger, targets.Options{})
	}
	// Spans of the last requests are still buffered: export them before
	// exiting, within the time a pod gets after its stop signal.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), traceFlushTimeout)
	defer cancel()
	if flushErr := tp.Shutdown(flushCtx); flushErr != nil {
		logger.Warn("traces not all exported at shutdown", "err", flushErr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "whisper %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(tracing.NewLogHandler(slog.NewJSONHandler(w, opts))), nil
	case "text":
		return slog.New(tracing.NewLogHandler(slog.NewTextHandler(w, opts))), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not json or text", format)
}

// traceFlushTimeout bounds the export of the last spans at exit.
const traceFlushTimeout = 5 * time.Second

// startTracing sets up the process's tracing from the OTEL_* environment
// (off unless OTEL_EXPORTER_OTLP_ENDPOINT is set) and makes it the global
// provider, propagator and error handler, for libraries that use those.
func startTracing(ctx context.Context, targetNames []string, logger *slog.Logger) (*tracing.Provider, error) {
	tp, err := tracing.New(ctx, tracing.Options{Targets: targetNames})
	if err != nil {
		return nil, err
	}
	otel.SetTextMapPropagator(tracing.Propagator)
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		logger.Warn("opentelemetry", "err", err)
	}))
	if tp.Enabled() {
		otel.SetTracerProvider(tp.TracerProvider())
		logger.InfoContext(ctx, "tracing on: exporting spans over OTLP")
	}
	return tp, nil
}
