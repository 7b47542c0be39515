package tracing

import (
	"net/http"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
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
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(sw, r.WithContext(ctx))
		span.SetAttributes(semconv.HTTPResponseStatusCode(sw.status))
		if sw.status >= http.StatusInternalServerError {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
	})
}

// statusWriter remembers the status code a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
