package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/whisperhq/whisper/internal/tracing"
)

// clearOTELEnv unsets every OTEL_ variable of the environment for the test,
// so that a developer's shell cannot change its outcome.
func clearOTELEnv(t *testing.T) {
	for _, name := range []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
	} {
		t.Setenv(name, "")
	}
}

// TestNewOff: without an OTLP endpoint, or with tracing disabled by the
// standard variables, there is no provider and no goroutine is left.
func TestNewOff(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
	}{
		{name: "no endpoint"},
		{name: "sdk disabled", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"}},
		{name: "exporter none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTELEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			before := runtime.NumGoroutine()
			p, err := tracing.New(context.Background(), tracing.Options{Targets: []string{"ingest"}})
			if err != nil {
				t.Fatal(err)
			}
			if p.Enabled() || p.TracerProvider() != nil {
				t.Errorf("Enabled() = %v, TracerProvider() = %v; want off and nil", p.Enabled(), p.TracerProvider())
			}
			if err := p.Shutdown(context.Background()); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
			if after := runtime.NumGoroutine(); after > before {
				t.Errorf("%d goroutines after New and Shutdown, %d before", after, before)
			}
		})
	}
}

func TestNewRefusesUnknownSettings(t *testing.T) {
	for _, tc := range []struct {
		name, key, value, wantErr string
	}{
		{"exporter", "OTEL_TRACES_EXPORTER", "zipkin", "OTEL_TRACES_EXPORTER"},
		{"protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTELEnv(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
			t.Setenv(tc.key, tc.value)
			_, err := tracing.New(context.Background(), tracing.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("New with %s=%s: %v, want an error naming %s", tc.key, tc.value, err, tc.wantErr)
			}
		})
	}
}

// otlpReceiver is a fake OTLP/HTTP collector: it decodes every export
// request and keeps it.
type otlpReceiver struct {
	mu   sync.Mutex
	reqs []*coltracepb.ExportTraceServiceRequest
	srv  *httptest.Server
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path != "/v1/traces" || req.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want protobuf on /v1/traces", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(req.Body)
		var msg coltracepb.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &msg)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.keep(&msg)
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) keep(msg *coltracepb.ExportTraceServiceRequest) {
	r.mu.Lock()
	r.reqs = append(r.reqs, msg)
	r.mu.Unlock()
}

// grpcReceiver is the same collector over OTLP/gRPC.
type grpcReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	r *otlpReceiver
}

func (g grpcReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	g.r.keep(req)
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// newGRPCReceiver returns a receiver and its OTLP/gRPC endpoint URL.
func newGRPCReceiver(t *testing.T) (*otlpReceiver, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{}
	srv := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(srv, grpcReceiver{r: r})
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return r, "http://" + ln.Addr().String()
}

// spans returns "service.name/whisper.targets span-name" of every span
// received.
func (r *otlpReceiver) spans() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, req := range r.reqs {
		for _, rs := range req.GetResourceSpans() {
			attrs := map[string]string{}
			for _, kv := range rs.GetResource().GetAttributes() {
				attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, attrs["service.name"]+"/"+attrs["whisper.targets"]+" "+s.GetName())
				}
			}
		}
	}
	return out
}

// TestNewExportsOverOTLP sets OTEL_EXPORTER_OTLP_ENDPOINT to a fake
// collector, over each protocol: spans arrive there, under service.name
// whisper (or OTEL_SERVICE_NAME) and the process's targets, by the time
// Shutdown returns.
func TestNewExportsOverOTLP(t *testing.T) {
	for _, tc := range []struct {
		name, protocol, serviceName, want string
	}{
		{"http/protobuf by default", "", "", "whisper/ingest,profiles POST /v1/track"},
		{"http/protobuf", "http/protobuf", "", "whisper/ingest,profiles POST /v1/track"},
		{"grpc", "grpc", "", "whisper/ingest,profiles POST /v1/track"},
		{"service name from the environment", "", "whisper-ingest", "whisper-ingest/ingest,profiles POST /v1/track"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOTELEnv(t)
			var recv *otlpReceiver
			if tc.protocol == "grpc" {
				var url string
				recv, url = newGRPCReceiver(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", url)
			} else {
				recv = newOTLPReceiver(t)
				t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", recv.srv.URL)
			}
			t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", tc.protocol)
			t.Setenv("OTEL_SERVICE_NAME", tc.serviceName)
			p, err := tracing.New(context.Background(), tracing.Options{Targets: []string{"ingest", "profiles"}})
			if err != nil {
				t.Fatal(err)
			}
			if !p.Enabled() {
				t.Fatal("tracing off with OTEL_EXPORTER_OTLP_ENDPOINT set")
			}
			_, span := p.TracerProvider().Tracer("t").Start(context.Background(), "POST /v1/track")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := p.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if diff := cmp.Diff([]string{tc.want}, recv.spans()); diff != "" {
				t.Errorf("spans received (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRoute(t *testing.T) {
	tp, rec := newRecorder(t)
	var inner trace.SpanContext
	h := tracing.Route(tp, "/v1/track", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner = trace.SpanContextFromContext(r.Context())
		if r.Header.Get("X-Fail") != "" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte(`{"success":true}`))
	}))
	remote := "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

	type result struct {
		Name     string
		Kind     trace.SpanKind
		Route    string
		Status   int64
		Code     codes.Code
		Root     bool
		LinkedTo string
	}
	for _, tc := range []struct {
		name   string
		method string
		header map[string]string
		want   result
	}{
		{"ok", http.MethodPost, nil, result{Name: "POST /v1/track", Kind: trace.SpanKindServer, Route: "/v1/track", Status: 200, Root: true}},
		{"5xx is an error", http.MethodPost, map[string]string{"X-Fail": "1"}, result{Name: "POST /v1/track", Kind: trace.SpanKindServer, Route: "/v1/track", Status: 503, Code: codes.Error, Root: true}},
		{"other method", http.MethodPut, nil, result{Name: "PUT /v1/track", Kind: trace.SpanKindServer, Route: "/v1/track", Status: 200, Root: true}},
		{
			// A caller's traceparent is linked, not trusted as parent.
			"remote parent is linked", http.MethodPost, map[string]string{"traceparent": remote},
			result{Name: "POST /v1/track", Kind: trace.SpanKindServer, Route: "/v1/track", Status: 200, Root: true, LinkedTo: "0af7651916cd43dd8448eb211c80319c"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(rec.Ended())
			req := httptest.NewRequest(tc.method, "/v1/track?x=1", nil)
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			h.ServeHTTP(httptest.NewRecorder(), req)
			ended := rec.Ended()
			if len(ended) != n+1 {
				t.Fatalf("%d spans ended, want 1", len(ended)-n)
			}
			s := ended[n]
			attrs := attribute.NewSet(s.Attributes()...)
			route, _ := attrs.Value("http.route")
			status, _ := attrs.Value("http.response.status_code")
			got := result{Name: s.Name(), Kind: s.SpanKind(), Route: route.AsString(), Status: status.AsInt64(), Code: s.Status().Code, Root: !s.Parent().IsValid()}
			for _, l := range s.Links() {
				got.LinkedTo = l.SpanContext.TraceID().String()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("span (-want +got):\n%s", diff)
			}
			if inner.SpanID() != s.SpanContext().SpanID() {
				t.Errorf("handler saw span %v, want the server span %v", inner.SpanID(), s.SpanContext().SpanID())
			}
		})
	}

	off := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	if got := tracing.Route(nil, "/v1/track", off); reflect.ValueOf(got).Pointer() != reflect.ValueOf(off).Pointer() {
		t.Errorf("Route(nil provider) wrapped the handler; want it as it was")
	}
}

func TestInterceptorsOff(t *testing.T) {
	if got := tracing.Interceptors(nil); len(got) != 0 {
		t.Errorf("Interceptors(nil) = %v, want none", got)
	}
}

func TestLogHandler(t *testing.T) {
	tp, _ := newRecorder(t)
	spanCtx, span := tp.Tracer("t").Start(context.Background(), "request")
	defer span.End()
	sc := span.SpanContext()

	for _, tc := range []struct {
		name string
		ctx  context.Context
		want map[string]any
	}{
		{"no span", context.Background(), map[string]any{"msg": "hello", "target": "ingest", "n": 1.0}},
		{"span", spanCtx, map[string]any{"msg": "hello", "target": "ingest", "n": 1.0, "trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}},
		{"remote parent only", trace.ContextWithRemoteSpanContext(context.Background(), sc), map[string]any{"msg": "hello", "target": "ingest", "n": 1.0, "trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			json := slog.NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}})
			logger := slog.New(tracing.NewLogHandler(json)).With("target", "ingest")
			logger.InfoContext(tc.ctx, "hello", "n", 1)
			got := decodeJSON(t, buf.Bytes())
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("log line (-want +got):\n%s", diff)
			}
		})
	}
}

func decodeJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("log line %q: %v", b, err)
	}
	return m
}
