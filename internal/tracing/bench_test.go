package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/whisperhq/whisper/internal/telemetry"
	"github.com/whisperhq/whisper/internal/tracing"
)

// capturedRequest returns a server-side request as a handler sees it, with
// the headers a Connect client sends, so interceptors do their real work.
func capturedRequest(b *testing.B) connect.AnyRequest {
	b.Helper()
	var req connect.AnyRequest
	capture := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, r connect.AnyRequest) (connect.AnyResponse, error) {
			req = r
			return next(ctx, r)
		}
	})
	mux := http.NewServeMux()
	mux.Handle("/bench.v1.BenchService/", connect.NewUnaryHandler("/bench.v1.BenchService/Call",
		func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
			return connect.NewResponse(&emptypb.Empty{}), nil
		}, connect.WithInterceptors(capture)))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+"/bench.v1.BenchService/Call")
	if _, err := c.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{})); err != nil {
		b.Fatal(err)
	}
	return req
}

// BenchmarkInterceptorStack measures what the interceptors add to every
// unary call, around a no-op handler: RED alone (what runs with tracing
// off, since then no tracing interceptor is installed), RED with
// otelconnect on a no-op provider (for comparison: the cost we avoid by
// installing nothing), and with the SDK sampling no call or every call (a
// batch processor exporting to a discarding exporter).
func BenchmarkInterceptorStack(b *testing.B) {
	sdk := func(s sdktrace.Sampler) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp
	}
	for _, bc := range []struct {
		name string
		tp   func() trace.TracerProvider
	}{
		{"red", func() trace.TracerProvider { return nil }},
		{"red+otelconnect/noop", func() trace.TracerProvider { return noop.NewTracerProvider() }},
		{"red+otelconnect/sampler=0", func() trace.TracerProvider { return sdk(sdktrace.NeverSample()) }},
		{"red+otelconnect/sampler=1", func() trace.TracerProvider { return sdk(sdktrace.AlwaysSample()) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			red := telemetry.NewRED(prometheus.NewRegistry())
			interceptors := append(tracing.Interceptors(bc.tp()), red.Interceptor())
			res := connect.NewResponse(&emptypb.Empty{})
			var call connect.UnaryFunc = func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) {
				return res, nil
			}
			for i := len(interceptors) - 1; i >= 0; i-- {
				call = interceptors[i].WrapUnary(call)
			}
			req := capturedRequest(b)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_, _ = call(ctx, req)
			}
		})
	}
}

// BenchmarkIngestRequest measures the tracing work of one Segment batch
// request of 100 events, as ingest does it: the route's server span, the
// send span, and the trace context written into the 100 records' headers.
// Off is what runs with tracing off (Route returns the handler itself).
// Spans go to a batch processor whose exporter discards them, so OTLP
// encoding and sending are not in these numbers (whisper-load --tracing
// has them).
func BenchmarkIngestRequest(b *testing.B) {
	sdk := func(s sdktrace.Sampler) trace.TracerProvider {
		tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(s), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
		b.Cleanup(func() { tp.Shutdown(context.Background()) })
		return tp
	}
	for _, bc := range []struct {
		name string
		tp   func() trace.TracerProvider
	}{
		{"off", func() trace.TracerProvider { return nil }},
		{"sampler=0", func() trace.TracerProvider { return sdk(sdktrace.ParentBased(sdktrace.NeverSample())) }},
		{"sampler=1", func() trace.TracerProvider { return sdk(sdktrace.ParentBased(sdktrace.AlwaysSample())) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tp := bc.tp()
			recs := make([]*kgo.Record, 100)
			for i := range recs {
				recs[i] = &kgo.Record{Topic: "whisper.events", Headers: make([]kgo.RecordHeader, 0, 1)}
			}
			h := tracing.Route(tp, "/v1/batch", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for _, rec := range recs {
					rec.Headers = rec.Headers[:0] // new records each request, without the allocation
				}
				ctx, span := tracing.StartSend(r.Context(), tp, "whisper.events", len(recs))
				tracing.InjectRecords(ctx, recs...)
				span.End()
			}))
			req := httptest.NewRequest(http.MethodPost, "/v1/batch", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkStartProcess measures a consumer's tracing work for one poll of
// 5,000 records sent by 50 requests (100 records each, as the load
// generator sends them): reading their headers and starting and ending 50
// sampled process spans.
func BenchmarkStartProcess(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	b.Cleanup(func() { tp.Shutdown(context.Background()) })
	var recs []*kgo.Record
	for range 50 {
		ctx, span := tp.Tracer("b").Start(context.Background(), "send")
		span.End()
		for range 100 {
			r := &kgo.Record{Topic: "whisper.events"}
			tracing.InjectRecords(ctx, r)
			recs = append(recs, r)
		}
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_, p := tracing.StartProcess(ctx, tp, "whisper-profiles", recs)
		p.End(nil)
	}
}
