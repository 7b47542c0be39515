package telemetry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/whisperhq/whisper/internal/metricstest"
)

const (
	procOK   = "/whisper.test.v1.TestService/Works"
	procFail = "/whisper.test.v1.TestService/Refuses"
)

// serve runs a real Connect server with the RED interceptor on handlers
// for procOK (succeeds) and procFail (invalid_argument).
func serve(t testing.TB, red *RED, capture func(connect.AnyRequest)) *httptest.Server {
	t.Helper()
	opts := connect.WithInterceptors(red.Interceptor(), connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if capture != nil {
				capture(req)
			}
			return next(ctx, req)
		}
	}))
	mux := http.NewServeMux()
	mux.Handle(procOK, connect.NewUnaryHandler(procOK, func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		return connect.NewResponse(&emptypb.Empty{}), nil
	}, opts))
	mux.Handle(procFail, connect.NewUnaryHandler(procFail, func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("no"))
	}, opts))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestREDRecordsCallsByProcedureAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	red := NewRED(reg)
	srv := serve(t, red, nil)
	ctx := context.Background()
	// The client carries the interceptor too: client-side calls must not
	// be counted a second time.
	clientOpts := connect.WithInterceptors(red.Interceptor())
	ok := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+procOK, clientOpts)
	fail := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+procFail, clientOpts)
	for range 2 {
		if _, err := ok.CallUnary(ctx, connect.NewRequest(&emptypb.Empty{})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fail.CallUnary(ctx, connect.NewRequest(&emptypb.Empty{})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("call to %s: %v, want invalid_argument", procFail, err)
	}

	want := map[string]float64{
		`code="invalid_argument",procedure="/whisper.test.v1.TestService/Refuses"`: 1,
		`code="ok",procedure="/whisper.test.v1.TestService/Works"`:                 2,
	}
	if diff := cmp.Diff(want, counters(t, reg, "whisper_rpc_requests_total")); diff != "" {
		t.Errorf("whisper_rpc_requests_total (-want +got):\n%s", diff)
	}
	for proc, n := range map[string]uint64{procOK: 2, procFail: 1} {
		if got := metricstest.Series(t, reg, "whisper_rpc_request_duration_seconds", "procedure", proc).GetHistogram().GetSampleCount(); got != n {
			t.Errorf("duration observations of %s = %d, want %d", proc, got, n)
		}
	}
}

func TestRouteRecordsRequestsByRouteMethodAndCode(t *testing.T) {
	reg := prometheus.NewRegistry()
	red := NewRED(reg)
	h := red.Route("/v1/track", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		_, _ = w.Write([]byte(`{"success":true}`)) // implicit 200
	}))
	for _, method := range []string{http.MethodPost, http.MethodPost, http.MethodOptions} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(method, "/v1/track?ignored=1", nil))
	}
	want := map[string]float64{
		`code="200",method="POST",route="/v1/track"`:    2,
		`code="204",method="OPTIONS",route="/v1/track"`: 1,
	}
	if diff := cmp.Diff(want, counters(t, reg, "whisper_http_requests_total")); diff != "" {
		t.Errorf("whisper_http_requests_total (-want +got):\n%s", diff)
	}
	if got := metricstest.Series(t, reg, "whisper_http_request_duration_seconds", "route", "/v1/track").GetHistogram().GetSampleCount(); got != 3 {
		t.Errorf("duration observations = %d, want 3", got)
	}
}

// counters returns the values of a counter family keyed by its labels,
// written name="value" in Prometheus' (sorted) order.
func counters(t testing.TB, reg *prometheus.Registry, name string) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, lp := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			out[strings.Join(ls, ",")] = m.GetCounter().GetValue()
		}
	}
	return out
}

// serverRequest captures a real server-side request of procOK: its Spec
// (procedure, IsClient false) can only be set by a Connect handler.
func serverRequest(b *testing.B, red *RED) connect.AnyRequest {
	b.Helper()
	var req connect.AnyRequest
	srv := serve(b, red, func(r connect.AnyRequest) { req = r })
	c := connect.NewClient[emptypb.Empty, emptypb.Empty](srv.Client(), srv.URL+procOK)
	if _, err := c.CallUnary(context.Background(), connect.NewRequest(&emptypb.Empty{})); err != nil {
		b.Fatal(err)
	}
	return req
}

// BenchmarkREDUnaryInterceptor measures what the RED interceptor adds to
// every unary call: the interceptor alone around a no-op handler. Target:
// under 2 µs and at most 2 allocations per call.
func BenchmarkREDUnaryInterceptor(b *testing.B) {
	for _, bc := range []struct {
		name string
		err  error
	}{
		{"ok", nil},
		{"error", connect.NewError(connect.CodeUnavailable, errors.New("broker down"))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			red := NewRED(prometheus.NewRegistry())
			req := serverRequest(b, red)
			call := red.Interceptor().WrapUnary(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) {
				return nil, bc.err
			})
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				_, _ = call(ctx, req)
			}
		})
	}
}

// Middleware stacked on one route share one StatusWriter, and each sees
// the code the handler wrote.
func TestCaptureStatusShared(t *testing.T) {
	rec := httptest.NewRecorder()
	outer := CaptureStatus(rec)
	inner := CaptureStatus(outer)
	if inner != outer {
		t.Fatal("CaptureStatus wrapped a StatusWriter again")
	}
	if got := outer.Status(); got != http.StatusOK {
		t.Errorf("status before any write = %d, want 200", got)
	}
	inner.WriteHeader(http.StatusServiceUnavailable)
	inner.WriteHeader(http.StatusTeapot) // ignored, as net/http does
	if got := outer.Status(); got != http.StatusServiceUnavailable {
		t.Errorf("status = %d, want 503", got)
	}
}
