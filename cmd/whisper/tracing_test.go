package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
)

// TestServeExportsTracesAtShutdown runs `whisper serve` with
// OTEL_EXPORTER_OTLP_ENDPOINT pointing at a fake OTLP/HTTP collector and an
// export delay longer than the test: the spans of its requests reach the
// collector only because a graceful stop flushes them.
func TestServeExportsTracesAtShutdown(t *testing.T) {
	var (
		mu    sync.Mutex
		spans []string // "<whisper.targets> <span name>"
	)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil || r.URL.Path != "/v1/traces" {
			http.Error(w, "want OTLP protobuf on /v1/traces", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, rs := range req.GetResourceSpans() {
			var targets, service string
			for _, kv := range rs.GetResource().GetAttributes() {
				switch kv.GetKey() {
				case "whisper.targets":
					targets = kv.GetValue().GetStringValue()
				case "service.name":
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans = append(spans, service+"/"+targets+" "+s.GetName())
				}
			}
		}
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(out)
	}))
	defer collector.Close()
	for k, v := range map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT":        collector.URL,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "",
		"OTEL_SDK_DISABLED":                  "",
		"OTEL_TRACES_EXPORTER":               "",
		"OTEL_TRACES_SAMPLER":                "",
		"OTEL_SERVICE_NAME":                  "",
		"OTEL_BSP_SCHEDULE_DELAY":            "600000",
	} {
		t.Setenv(k, v)
	}

	_, brokers := kafkatest.NewCluster(t)
	redistest.New(t)
	httpAddr := freeAddr(t)
	const admin = "admin-token-for-tracing-test-0123"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exited := make(chan int, 1)
	var logs strings.Builder
	go func() {
		exited <- run(ctx, []string{"serve", "--target=ingest",
			"--http-addr", httpAddr, "--kafka-brokers", strings.Join(brokers, ","),
			"--database-url", pgtest.NewDatabase(t), "--redis-url", redistest.URL(t), "--admin-token", admin,
		}, io.Discard, &syncWriter{w: &logs})
	}()
	base := "http://" + httpAddr
	waitServing(t, base, exited)

	wsClient := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, base, rpctest.Bearer(admin))
	ws, err := wsClient.CreateWorkspace(context.Background(), &workspacev1.CreateWorkspaceRequest{Name: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := wsClient.CreateWriteKey(context.Background(), &workspacev1.CreateWriteKeyRequest{WorkspaceId: ws.GetWorkspace().GetId(), Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/track", strings.NewReader(`{"userId":"u1","event":"Signed Up"}`))
	req.SetBasicAuth(key.GetSecret(), "")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/track = %d", res.StatusCode)
	}
	mu.Lock()
	early := len(spans)
	mu.Unlock()
	if early != 0 {
		t.Fatalf("%d spans exported before shutdown; the test needs them held until the flush", early)
	}

	cancel()
	select {
	case code := <-exited:
		if code != 0 {
			t.Fatalf("whisper serve exited %d\n%s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("whisper serve did not stop within 30 s")
	}
	mu.Lock()
	got := slices.Sorted(slices.Values(spans))
	mu.Unlock()
	want := []string{
		"whisper/ingest POST /v1/track",
		"whisper/ingest send whisper.events",
		"whisper/ingest whisper.workspace.v1.WorkspaceService/CreateWorkspace",
		"whisper/ingest whisper.workspace.v1.WorkspaceService/CreateWriteKey",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("spans at the collector (-want +got):\n%s\nlogs:\n%s", diff, logs.String())
	}
}

func waitServing(t *testing.T, base string, exited chan int) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case code := <-exited:
			t.Fatalf("whisper serve exited %d before it was ready", code)
		default:
		}
		if res, err := http.Get(base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatal("whisper serve not ready after 30 s")
}

// syncWriter lets the server's logger and the test share a buffer.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
