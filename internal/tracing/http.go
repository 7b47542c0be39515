package tracing

import (
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/whisperhq/whisper/internal/telemetry"
)

// Route wraps h, served under the ServeMux pattern route, so that every
// request gets a server span named "<method> <route>": the pattern, never
// the raw path, keeps span names few. An incoming traceparent is linked,
// not continued (see the package doc). With a nil tp it returns h itself.
func Route(tp trace.TracerProvider, route string, h http.Handler) http.Handler {
	if tp == nil {
		return h
	}
	t := tracer(tp)
	postName := http.MethodPost + " " + route // the one method of the ingest routes, named without allocating
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := postName
		if r.Method != http.MethodPost {
			name = r.Method + " " + route
		}
		opts := []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindServer),
			trace.WithAttributes(
				semconv.HTTPRequestMethodKey.String(r.Method),
				semconv.HTTPRoute(route),
				semconv.URLPath(r.URL.Path),
			),
		}
		ctx := r.Context()
		if remote := trace.SpanContextFromContext(Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))); remote.IsValid() {
			opts = append(opts, trace.WithNewRoot(), trace.WithLinks(trace.Link{SpanContext: remote}))
		}
		ctx, span := t.Start(ctx, name, opts...)
		defer span.End()
		sw := telemetry.CaptureStatus(w)
		h.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(semconv.HTTPResponseStatusCode(sw.Status()))
		if sw.Status() >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(sw.Status()))
		}
	})
}
