// Package telemetry holds the Prometheus registry of a process, the RED
// instrumentation (rate, errors, duration) shared by every RPC and HTTP
// route, and the collectors of the connection pools a process builds
// (pgxpool as whisper_pgxpool_*, go-redis as whisper_redis_pool_*), read
// at scrape time so they cost nothing per query.
//
// Labels are bounded by construction: RPCs are labelled by procedure (a fixed
// set per binary) and HTTP routes by the route pattern they were registered
// under, never by raw path, user or workspace. Pools are labelled by the
// fixed name the process gives each one.
package telemetry

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a registry with the Go runtime and process collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// latencyBuckets suit in-process APIs: 0.5 ms to 10 s.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// RED records request counts and latencies of RPCs and HTTP routes.
type RED struct {
	rpcRequests  *prometheus.CounterVec
	rpcDuration  *prometheus.HistogramVec
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec
}

// NewRED registers the RED metrics on reg.
func NewRED(reg prometheus.Registerer) *RED {
	m := &RED{
		rpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_rpc_requests_total",
			Help: "RPCs handled, by procedure and Connect code (ok when successful).",
		}, []string{"procedure", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "whisper_rpc_request_duration_seconds",
			Help:                            "Time to handle an RPC, by procedure.",
			Buckets:                         latencyBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  100,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"procedure"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "whisper_http_requests_total",
			Help: "HTTP requests handled on plain (non-RPC) routes, by route, method and status code.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:                            "whisper_http_request_duration_seconds",
			Help:                            "Time to handle an HTTP request on a plain route, by route.",
			Buckets:                         latencyBuckets,
			NativeHistogramBucketFactor:     1.1,
			NativeHistogramMaxBucketNumber:  100,
			NativeHistogramMinResetDuration: time.Hour,
		}, []string{"route"}),
	}
	reg.MustRegister(m.rpcRequests, m.rpcDuration, m.httpRequests, m.httpDuration)
	return m
}

// Interceptor returns a Connect interceptor that records every unary and
// streaming call (a stream counts once, when it ends).
func (m *RED) Interceptor() connect.Interceptor { return redInterceptor{m} }

type redInterceptor struct{ m *RED }

func (i redInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		start := time.Now()
		res, err := next(ctx, req)
		i.m.observe(req.Spec().Procedure, err, time.Since(start))
		return res, err
	}
}

func (i redInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i redInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		start := time.Now()
		err := next(ctx, conn)
		i.m.observe(conn.Spec().Procedure, err, time.Since(start))
		return err
	}
}

func (m *RED) observe(procedure string, err error, d time.Duration) {
	code := "ok"
	if err != nil {
		code = connect.CodeOf(err).String()
	}
	m.rpcRequests.WithLabelValues(procedure, code).Inc()
	m.rpcDuration.WithLabelValues(procedure).Observe(d.Seconds())
}

// Route wraps h so that its requests are recorded under route, which must
// be the pattern h is registered under.
func (m *RED) Route(route string, h http.Handler) http.Handler {
	duration := m.httpDuration.WithLabelValues(route)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := CaptureStatus(w)
		h.ServeHTTP(sw, r)
		m.httpRequests.WithLabelValues(route, r.Method, strconv.Itoa(sw.Status())).Inc()
		duration.Observe(time.Since(start).Seconds())
	})
}

// StatusWriter remembers the status code a handler wrote. The HTTP
// middleware of a route (RED here, spans in internal/tracing) share one per
// request through CaptureStatus instead of each wrapping the writer again.
type StatusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

// CaptureStatus returns w as a StatusWriter: w itself when an outer
// middleware already wrapped it, else a new wrapper.
func CaptureStatus(w http.ResponseWriter) *StatusWriter {
	if sw, ok := w.(*StatusWriter); ok {
		return sw
	}
	return &StatusWriter{ResponseWriter: w, status: http.StatusOK}
}

// Status is the code the handler wrote, 200 when it wrote none.
func (w *StatusWriter) Status() int { return w.status }

// WriteHeader implements http.ResponseWriter.
func (w *StatusWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.status, w.wroteHeader = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *StatusWriter) Write(b []byte) (int, error) {
	w.wroteHeader = true
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
