// Package tracing is Whisper's distributed tracing with OpenTelemetry: the
// process-wide TracerProvider, server spans for Connect RPCs and plain HTTP
// routes, the trace context carried through Kafka record headers, batch
// processing spans for consumers, and trace and span ids on log lines.
//
// One trace follows an event: the ingest request's server span (HTTP route or
// RPC) is the parent of a "send whisper.events" producer span whose context
// is written into every record's headers (W3C traceparent, tracestate and
// baggage); a consumer's "process <topic>" span is parented by that header,
// so profile updates, decisions and deliveries land in the same trace.
//
// Tracing is off unless OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Off means no SDK, no exporter,
// no goroutine and no instrumentation: New then returns a Provider whose
// TracerProvider is nil, and every helper here treats a nil TracerProvider
// as "add nothing", which costs less than a no-op provider (otelconnect with
// a no-op provider still parses headers on every call). On, the standard
// OTEL_* variables apply: OTEL_EXPORTER_OTLP_PROTOCOL (http/protobuf by
// default, or grpc), OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER
// (parentbased_always_on by default) and its argument, OTEL_BSP_*,
// OTEL_SERVICE_NAME (default "whisper") and OTEL_RESOURCE_ATTRIBUTES.
// OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off again.
//
// Server spans of the public APIs do not trust an incoming traceparent: a
// browser or SDK must not choose our trace ids or sampling. The request gets
// a new root span that links to the caller's context instead (otelconnect's
// default, applied to the HTTP routes too).
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of Whisper's own spans.
const ScopeName = "github.com/whisperhq/whisper"

// ServiceName is the service.name of every process unless OTEL_SERVICE_NAME
// says otherwise; targets are told apart by the whisper.targets attribute.
const ServiceName = "whisper"

// Propagator reads and writes W3C trace context and baggage, in HTTP headers
// and in Kafka record headers alike.
var Propagator propagation.TextMapPropagator = propagation.NewCompositeTextMapPropagator(
	propagation.TraceContext{}, propagation.Baggage{})

// Options configure New.
type Options struct {
	// Targets are the targets this process runs, recorded as the resource
	// attribute whisper.targets ("ingest,profiles").
	Targets []string
	// Exporter, when set, receives the spans instead of an OTLP exporter
	// built from the environment, and turns tracing on whatever the
	// environment says: for tests and for benchmarks that discard spans.
	Exporter sdktrace.SpanExporter
	// Sampler overrides OTEL_TRACES_SAMPLER when set.
	Sampler sdktrace.Sampler
}

// Provider is the process's tracing: an SDK TracerProvider with its
// exporter when tracing is on, nothing when it is off.
type Provider struct {
	sdk *sdktrace.TracerProvider
}

// New sets up tracing as the environment says (see the package doc). The
// provider's exporting goroutine lives until Shutdown.
func New(ctx context.Context, o Options) (*Provider, error) {
	lookup := os.LookupEnv
	exp := o.Exporter
	if exp == nil {
		on, err := enabled(lookup)
		if err != nil || !on {
			return &Provider{}, err
		}
		if exp, err = newOTLPExporter(ctx, lookup); err != nil {
			return nil, err
		}
	}
	res, err := newResource(ctx, o.Targets)
	if err != nil {
		return nil, err
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithBatcher(exp), sdktrace.WithResource(res)}
	if o.Sampler != nil {
		opts = append(opts, sdktrace.WithSampler(o.Sampler))
	}
	return &Provider{sdk: sdktrace.NewTracerProvider(opts...)}, nil
}

func enabled(lookup func(string) (string, bool)) (bool, error) {
	if v, _ := lookup("OTEL_SDK_DISABLED"); strings.EqualFold(strings.TrimSpace(v), "true") {
		return false, nil
	}
	switch v, _ := lookup("OTEL_TRACES_EXPORTER"); strings.TrimSpace(v) {
	case "none":
		return false, nil
	case "", "otlp":
	default:
		return false, fmt.Errorf("OTEL_TRACES_EXPORTER: only otlp and none are supported, got %q", v)
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
		if v, _ := lookup(name); strings.TrimSpace(v) != "" {
			return true, nil
		}
	}
	return false, nil
}

func newOTLPExporter(ctx context.Context, lookup func(string) (string, bool)) (sdktrace.SpanExporter, error) {
	protocol, _ := lookup("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	if protocol == "" {
		protocol, _ = lookup("OTEL_EXPORTER_OTLP_PROTOCOL")
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch strings.TrimSpace(protocol) {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, fmt.Errorf("%s: must be http/protobuf or grpc, got %q", name, protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter: %w", err)
	}
	return exp, nil
}

func newResource(ctx context.Context, targets []string) (*resource.Resource, error) {
	// Later detectors win: OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
	// override the defaults.
	attrs := []attribute.KeyValue{semconv.ServiceName(ServiceName)}
	if len(targets) > 0 {
		attrs = append(attrs, attribute.String("whisper.targets", strings.Join(targets, ",")))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("tracing resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	return res, nil
}

// TracerProvider is the provider to hand to instrumentation, or nil when
// tracing is off.
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil || p.sdk == nil {
		return nil
	}
	return p.sdk
}

// Enabled reports whether spans are recorded and exported.
func (p *Provider) Enabled() bool { return p != nil && p.sdk != nil }

// Shutdown exports the spans still buffered and stops the exporter, within
// ctx's deadline. It does nothing when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if !p.Enabled() {
		return nil
	}
	if err := p.sdk.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// tracer is the tracer of Whisper's own spans from tp.
func tracer(tp trace.TracerProvider) trace.Tracer {
	return tp.Tracer(ScopeName)
}
