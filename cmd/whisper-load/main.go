// Command whisper-load is the ingestion load benchmark behind `make bench`.
// It starts `whisper dev` (or targets a running instance), sends Segment
// batches over many connections for a fixed time, then produces the same
// records straight into the same broker to measure the ceiling, and prints
// both, their ratio and the targets they are judged against.
//
// With --mode=freshness it measures instead how fresh profiles are: it sends
// batches at a fixed rate, open loop, each with a probe event of a new user,
// and times from ingestion's acknowledgement until GetProfile shows it.
//
// With --mode=delivery it measures event to delivery: it creates a webhook
// campaign through the public API whose destination is a receiver inside
// whisper-load (checking every signature), sends batches at a fixed rate,
// each with one event that triggers the campaign, and times from the
// batch's send to the webhook's arrival.
//
// With --mode=decide it measures the Decide RPC: it creates an email
// campaign through the public API and calls DecisionService.Decide at a
// fixed rate, open loop, each call for a new user, every call multiplexed
// on one HTTP/2 cleartext connection, and times each call from send to
// answer.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/loadgen"
)

const usage = `usage: whisper-load [flags]

By default whisper-load starts "whisper dev" from --whisper on free ports,
benchmarks it and stops it. With --url (and --write-key, --brokers) it
benchmarks a running instance instead.

--mode=ingest (default) measures ingestion throughput and latency, and the
broker ceiling. --mode=freshness sends --rate events/s and measures how long
after ingestion acknowledges an event GetProfile shows it (with --url it
needs --api-token). --mode=delivery sends --rate events/s, one of every
--batch-size a new user's trigger of a webhook campaign it creates, and
measures from the send until the signed webhook reaches a receiver in
whisper-load (with --url it needs --api-token and --webhook-secret, and the
instance must reach --hook-addr: loopback needs
--deliver-webhook-allow-private; its contact rules apply: no quiet hours
for a clean run). --mode=decide calls DecisionService.Decide --rate times
a second (default 1000 in this mode) on an email campaign it creates, each
call a new user, over one h2c connection, and measures each call's latency
(with --url it needs --api-token, not --write-key; the instance's contact
rules apply: no quiet hours and high caps for a run whose decisions send).
Flags fall back to WHISPER_LOAD_* variables: --connections is
WHISPER_LOAD_CONNECTIONS.

flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type options struct {
	whisper, whisperLog         string
	url, writeKey, workspaceID  string
	brokers                     config.StringList
	connections, templates      int
	warmup, duration, timeout   time.Duration
	startTimeout                time.Duration
	linger                      time.Duration
	jsonOut, check, skipCeiling bool
	tracing                     bool

	mode, apiToken  string
	rate            float64
	batchSize       int
	maxInFlight     int
	pollInterval    time.Duration
	pollConcurrency int
	probeTimeout    time.Duration

	webhookSecret, hookAddr string
}

// Modes of whisper-load.
const (
	modeIngest    = "ingest"
	modeFreshness = "freshness"
	modeDelivery  = "delivery"
	modeDecide    = "decide"
)

// decideRate is --rate in decide mode when not given: issue #4's
// 1,000 req/s.
const decideRate = 1000

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("whisper-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	var kafkaDefaults kafka.Config
	kafkaDefaults.RegisterFlags(flag.NewFlagSet("", flag.ContinueOnError))

	var o options
	fs.StringVar(&o.whisper, "whisper", ".tmp/bin/whisper", "whisper binary to start as `whisper dev` (ignored with --url)")
	fs.StringVar(&o.whisperLog, "whisper-log", "", "file for the output of `whisper dev` (default: a temporary file)")
	fs.DurationVar(&o.startTimeout, "start-timeout", 90*time.Second, "how long `whisper dev` may take to become ready")
	fs.StringVar(&o.url, "url", "", "base URL of a running instance (http://host:port); empty starts `whisper dev`")
	fs.StringVar(&o.writeKey, "write-key", "", "write key of the running instance (with --url)")
	fs.Var(&o.brokers, "brokers", "Kafka brokers of the running instance, for the ceiling phase (with --url; empty skips it)")
	fs.StringVar(&o.workspaceID, "workspace-id", "", "workspace of --write-key, to key ceiling records like ingestion (with --url; default: a random id of the same shape)")
	fs.IntVar(&o.connections, "connections", 32, "concurrent connections, one request in flight each")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "measured duration of each phase")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "warm-up before each phase, left out of the results")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of one request")
	fs.IntVar(&o.templates, "templates", 256, "distinct pre-rendered batches (message ids are unique whatever this is)")
	fs.DurationVar(&o.linger, "kafka-linger", kafkaDefaults.Linger, "producer linger of the ceiling phase, and of `whisper dev` when started here: keep it the ingest target's")
	fs.BoolVar(&o.skipCeiling, "skip-ceiling", false, "skip the ceiling phase")
	fs.BoolVar(&o.tracing, "tracing", false, "run `whisper dev` with tracing on, every span exported over OTLP to a sink in this process that discards them; off, OTEL_SDK_DISABLED=true keeps it off whatever the environment says")
	fs.BoolVar(&o.jsonOut, "json", false, "print the report as JSON instead of a table")
	fs.BoolVar(&o.check, "check", false, "exit 3 when a target is missed")
	fs.StringVar(&o.mode, "mode", modeIngest, "what to measure: ingest (throughput, latency, ceiling), freshness (ack to GetProfile), delivery (event to webhook) or decide (Decide RPC latency)")
	fs.StringVar(&o.apiToken, "api-token", "", "API token of --write-key's workspace, for GetProfile, the campaign and Decide (freshness, delivery and decide with --url)")
	fs.Float64Var(&o.rate, "rate", 5000, "events/s sent open loop (freshness, delivery); Decide calls/s (decide, where the default is 1000)")
	fs.IntVar(&o.batchSize, "batch-size", 100, "events per request, one of them the probe or trigger (freshness, delivery)")
	fs.IntVar(&o.maxInFlight, "max-in-flight", 256, "requests awaiting an answer at most (freshness, delivery, decide)")
	fs.DurationVar(&o.pollInterval, "poll-interval", 25*time.Millisecond, "how often each pending probe's profile is read (freshness)")
	fs.IntVar(&o.pollConcurrency, "poll-concurrency", 8, "GetProfile calls in flight at most (freshness)")
	fs.DurationVar(&o.probeTimeout, "probe-timeout", 30*time.Second, "how long a probe may stay invisible before it counts as unseen (freshness); how long after the last request missing webhooks are awaited (delivery)")
	fs.StringVar(&o.webhookSecret, "webhook-secret", "", "the instance's --deliver-webhook-secret, to verify webhooks (delivery with --url; default: a new one given to whisper dev)")
	fs.StringVar(&o.hookAddr, "hook-addr", "127.0.0.1:0", "listen address of the webhook receiver (delivery)")
	lookup := func(name string) (string, bool) {
		return os.LookupEnv("WHISPER_LOAD_" + strings.TrimPrefix(name, "WHISPER_"))
	}
	if err := config.Parse(fs, args, lookup); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "whisper-load: %v\n", err)
		return 2
	}
	rateGiven := false // by a flag or its variable: config.Parse sets both
	fs.Visit(func(f *flag.Flag) { rateGiven = rateGiven || f.Name == "rate" })
	if o.mode == modeDecide && !rateGiven {
		o.rate = decideRate
	}
	if err := o.validate(); err != nil {
		fmt.Fprintf(stderr, "whisper-load: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	var report interface {
		WriteText(io.Writer) error
		Passed() bool
	}
	var err error
	switch o.mode {
	case modeFreshness:
		report, err = freshness(ctx, o, logger)
	case modeDelivery:
		report, err = delivery(ctx, o, logger)
	case modeDecide:
		report, err = decide(ctx, o, logger)
	default:
		report, err = bench(ctx, o, kafkaDefaults, logger)
	}
	if err != nil {
		fmt.Fprintf(stderr, "whisper-load: %v\n", err)
		return 1
	}
	if o.jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(report)
	} else {
		err = report.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "whisper-load: print report: %v\n", err)
		return 1
	}
	if o.check && !report.Passed() {
		return 3
	}
	return 0
}

func (o options) validate() error {
	var errs []error
	if o.url != "" && o.writeKey == "" && o.mode != modeDecide {
		errs = append(errs, errors.New("--write-key: required with --url"))
	}
	if o.url == "" && o.whisper == "" {
		errs = append(errs, errors.New("--whisper: required without --url"))
	}
	if o.connections < 1 {
		errs = append(errs, fmt.Errorf("--connections: must be at least 1, got %d", o.connections))
	}
	if o.duration <= 0 {
		errs = append(errs, fmt.Errorf("--duration: must be positive, got %v", o.duration))
	}
	if o.warmup < 0 {
		errs = append(errs, fmt.Errorf("--warmup: must not be negative, got %v", o.warmup))
	}
	if o.templates < 1 {
		errs = append(errs, fmt.Errorf("--templates: must be at least 1, got %d", o.templates))
	}
	switch o.mode {
	case modeIngest:
	case modeFreshness, modeDelivery:
		if o.url != "" && o.apiToken == "" {
			errs = append(errs, fmt.Errorf("--api-token: required with --url in %s mode", o.mode))
		}
		if o.mode == modeDelivery && o.url != "" && o.webhookSecret == "" {
			errs = append(errs, errors.New("--webhook-secret: required with --url in delivery mode"))
		}
		if o.rate <= 0 {
			errs = append(errs, fmt.Errorf("--rate: must be positive, got %v", o.rate))
		}
		if o.batchSize < 2 {
			errs = append(errs, fmt.Errorf("--batch-size: must be at least 2 (one probe, one event), got %d", o.batchSize))
		}
		if o.maxInFlight < 1 {
			errs = append(errs, fmt.Errorf("--max-in-flight: must be at least 1, got %d", o.maxInFlight))
		}
		if o.pollInterval <= 0 {
			errs = append(errs, fmt.Errorf("--poll-interval: must be positive, got %v", o.pollInterval))
		}
		if o.pollConcurrency < 1 {
			errs = append(errs, fmt.Errorf("--poll-concurrency: must be at least 1, got %d", o.pollConcurrency))
		}
		if o.probeTimeout <= 0 {
			errs = append(errs, fmt.Errorf("--probe-timeout: must be positive, got %v", o.probeTimeout))
		}
	case modeDecide:
		if o.url != "" && o.apiToken == "" {
			errs = append(errs, errors.New("--api-token: required with --url in decide mode"))
		}
		if o.rate <= 0 {
			errs = append(errs, fmt.Errorf("--rate: must be positive, got %v", o.rate))
		}
		if o.maxInFlight < 1 {
			errs = append(errs, fmt.Errorf("--max-in-flight: must be at least 1, got %d", o.maxInFlight))
		}
	default:
		errs = append(errs, fmt.Errorf("--mode: must be %s, %s, %s or %s, got %q", modeIngest, modeFreshness, modeDelivery, modeDecide, o.mode))
	}
	if o.tracing && o.url != "" {
		errs = append(errs, errors.New("--tracing: only when whisper-load starts whisper dev, not with --url"))
	}
	if o.linger < 0 {
		errs = append(errs, fmt.Errorf("--kafka-linger: must not be negative, got %v", o.linger))
	}
	return errors.Join(errs...)
}

// bench runs both phases against the instance o names, starting one when
// it names none.
func bench(ctx context.Context, o options, kafkaCfg kafka.Config, logger *slog.Logger) (_ *loadgen.Report, err error) {
	note := "the load generator runs on this machine; the server at " + o.url
	var meter loadgen.CPUMeter // only for a server started here
	if o.url == "" {
		env, stopTracing, err := tracingEnv(o.tracing, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, stopTracing()) }()
		dev, err := startDev(ctx, devOptions{
			binary: o.whisper, logPath: o.whisperLog, linger: o.linger, startTimeout: o.startTimeout, env: env,
		}, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, dev.stop()) }()
		o.url, o.writeKey, o.brokers, o.workspaceID = dev.url, dev.writeKey, dev.brokers, dev.workspaceID
		note = "load generator, whisper dev and its in-process broker share these CPUs, so the server gets only part of them"
		meter = cpuMeter(dev.cmd.Process.Pid)
	}
	if o.workspaceID == "" {
		o.workspaceID = uuid.NewString()
	}
	bodies, err := loadgen.NewBodies(loadgen.BodiesOptions{Templates: o.templates})
	if err != nil {
		return nil, err
	}
	report := &loadgen.Report{
		Machine: loadgen.Machine{CPUs: runtime.NumCPU(), Note: note},
		Load: loadgen.LoadShape{BatchSize: bodies.BatchSize(), AvgEventBytes: bodies.AvgEventBytes(),
			Templates: bodies.Templates(), Warmup: o.warmup, Duration: o.duration},
	}
	report.Ingest, err = loadgen.RunIngest(ctx, loadgen.IngestConfig{
		URL: strings.TrimSuffix(o.url, "/"), WriteKey: o.writeKey, Connections: o.connections,
		Warmup: o.warmup, Duration: o.duration, Timeout: o.timeout, Bodies: bodies, Logger: logger, CPU: meter,
	})
	if err != nil {
		return nil, err
	}
	if len(o.brokers) > 0 && !o.skipCeiling {
		kafkaCfg.Brokers = o.brokers
		kafkaCfg.Linger = o.linger
		ceiling, err := loadgen.RunCeiling(ctx, loadgen.CeilingConfig{
			Kafka: kafkaCfg, WorkspaceID: o.workspaceID, InFlight: o.connections * bodies.BatchSize(),
			Warmup: o.warmup, Duration: o.duration, Bodies: bodies, Logger: logger, CPU: meter,
		})
		if err != nil {
			return nil, err
		}
		report.Ceiling = &ceiling
	}
	report.Judge()
	return report, nil
}

// freshness runs the freshness benchmark against the instance o names,
// starting one when it names none.
func freshness(ctx context.Context, o options, logger *slog.Logger) (_ *loadgen.FreshnessReport, err error) {
	note := "the load generator runs on this machine; the server at " + o.url
	if o.url == "" {
		env, stopTracing, err := tracingEnv(o.tracing, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, stopTracing()) }()
		dev, err := startDev(ctx, devOptions{
			binary: o.whisper, logPath: o.whisperLog, linger: o.linger, startTimeout: o.startTimeout, env: env,
		}, logger)
		if err != nil {
			return nil, err
		}
		defer func() { err = errors.Join(err, dev.stop()) }()
		o.url, o.writeKey, o.apiToken = dev.url, dev.writeKey, dev.apiToken
		note = "load generator, whisper dev (every target) and its in-process broker share these CPUs; PostgreSQL too when local"
	}
	bodies, err := loadgen.NewBodies(loadgen.BodiesOptions{Templates: o.templates, BatchSize: o.batchSize - 1})
	if err != nil {
		return nil, err
	}
	res, err := loadgen.RunFreshness(ctx, loadgen.FreshnessConfig{
		URL: strings.TrimSuffix(o.url, "/"), WriteKey: o.writeKey, APIToken: o.apiToken,
		Rate: o.rate, Bodies: bodies, Warmup: o.warmup, Duration: o.duration, MaxInFlight: o.maxInFlight,
		Timeout: o.timeout, PollInterval: o.pollInterval, PollConcurrency: o.pollConcurrency,
		ProbeTimeout: o.probeTimeout, Logger: logger,
	})
	if err != nil {
		return nil, err
	}
	report := &loadgen.FreshnessReport{Machine: loadgen.Machine{CPUs: runtime.NumCPU(), Note: note}, Freshness: res}
	report.Judge()
	return report, nil
}

// tracingEnv is the environment that turns tracing on or off in `whisper
// dev`. On, it starts an OTLP sink; stop (after the child exited and
// flushed) closes it and logs what it received, so a run shows that spans
// really were exported.
func tracingEnv(on bool, logger *slog.Logger) (env []string, stop func() error, err error) {
	if !on {
		return []string{"OTEL_SDK_DISABLED=true"}, func() error { return nil }, nil
	}
	sink, err := startOTLPSink(logger)
	if err != nil {
		return nil, nil, err
	}
	logger.Info("tracing on: whisper dev exports every span to an in-process OTLP sink", "url", sink.url)
	return sink.env(), func() error {
		err := sink.stop()
		logger.Info("OTLP sink", "spans", sink.spans.Load(), "export_requests", sink.requests.Load(), "rejected", sink.rejected.Load())
		if err == nil && sink.spans.Load() == 0 {
			err = errors.New("--tracing: whisper dev exported no span; was tracing really on?")
		}
		return err
	}, nil
}
