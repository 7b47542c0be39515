package targets_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

const adminToken = "admin-token-for-tests-0123456789"

type platform struct {
	url     string
	brokers []string
	cancel  context.CancelFunc
	done    chan error
}

// start runs targets.Run on real PostgreSQL and Redis and an in-process
// broker, as `whisper serve --target=all` would.
func start(t testing.TB) *platform { return startWith(t, nil) }

// startWith is start with configure applied to the config (when not nil);
// it is given the platform's base URL.
func startWith(t testing.TB, configure func(cfg *targets.Config, url string)) *platform {
	t.Helper()
	_, brokers := kafkatest.NewCluster(t)
	redistest.New(t)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg targets.Config
	cfg.RegisterFlags(fs)
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Partitions = 3
	cfg.DatabaseURL = pgtest.NewDatabase(t)
	cfg.RedisURL = redistest.URL(t)
	cfg.AdminToken = adminToken
	cfg.HTTP.ShutdownTimeout = 10 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(&cfg, "http://"+ln.Addr().String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &platform{url: "http://" + ln.Addr().String(), brokers: brokers, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	go func() {
		p.done <- targets.Run(ctx, cfg, logger, targets.Options{Listener: ln, Ready: func(string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("platform not ready after 30 s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-p.done; err != nil {
			t.Errorf("Run returned %v after a clean stop", err)
		}
	})
	return p
}

func post(t *testing.T, url, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.SetBasicAuth(key, "")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestNewUserJourney does what a new user does: create a workspace with the
// admin token, issue a write key, send events, and find them on the topic;
// then revoke the key and see it refused at once.
func TestNewUserJourney(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	admin := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
	ws, err := admin.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "acme"})
	if err != nil {
		t.Fatalf("CreateWorkspace: %v", err)
	}
	id := ws.GetWorkspace().GetId()
	key, err := admin.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: id, Name: "web"})
	if err != nil {
		t.Fatalf("CreateWriteKey: %v", err)
	}
	code, res := post(t, p.url+"/v1/batch", key.GetSecret(),
		`{"batch":[{"type":"identify","userId":"u1","traits":{"plan":"pro"},"messageId":"j1"},{"type":"track","userId":"u1","event":"Signed Up","messageId":"j2"}]}`)
	if code != 200 {
		t.Fatalf("POST /v1/batch = %d %s", code, res)
	}
	recs := kafkatest.ReadAll(t, p.brokers, kafka.TopicEvents, 2, 10*time.Second)
	if len(recs) != 2 {
		t.Fatalf("read %d records, want 2", len(recs))
	}
	for _, r := range recs {
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.GetWorkspaceId() != id || string(r.Key) != id+"/u1" {
			t.Errorf("record %s: workspace %q key %q, want %q and %q", ev.GetMessageId(), ev.GetWorkspaceId(), r.Key, id, id+"/u1")
		}
	}
	if _, err := admin.RevokeWriteKey(ctx, &workspacev1.RevokeWriteKeyRequest{WorkspaceId: id, WriteKeyId: key.GetWriteKey().GetId()}); err != nil {
		t.Fatalf("RevokeWriteKey: %v", err)
	}
	if code, res := post(t, p.url+"/v1/track", key.GetSecret(), `{"userId":"u1","event":"x"}`); code != http.StatusUnauthorized {
		t.Errorf("revoked key: %d %s, want 401", code, res)
	}
}

// TestWorkspaceIsolation: a workspace's API token reaches nothing of
// another workspace.
func TestWorkspaceIsolation(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	admin := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
	var tokens, ids [2]string
	for i := range 2 {
		ws, err := admin.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: fmt.Sprintf("w%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = ws.GetWorkspace().GetId()
		tok, err := admin.CreateAPIToken(ctx, &workspacev1.CreateAPITokenRequest{WorkspaceId: ids[i], Name: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok.GetSecret()
	}
	a := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	if _, err := a.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: ids[0]}); err != nil {
		t.Errorf("own workspace: %v", err)
	}
	if _, err := a.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: ids[1]}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("other workspace's keys: %v, want PermissionDenied", err)
	}
	if _, err := a.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ids[1], Name: "x"}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("key in other workspace: %v, want PermissionDenied", err)
	}
	if _, err := a.ListWorkspaces(ctx, &workspacev1.ListWorkspacesRequest{}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("ListWorkspaces with a workspace token: %v, want PermissionDenied", err)
	}
}

// TestGracefulShutdown: requests in flight when the stop comes are
// answered, and every acknowledged event is on the topic.
func TestGracefulShutdown(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	admin := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
	ws, err := admin.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "shutdown"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := admin.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ws.GetWorkspace().GetId(), Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	var acked atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 15 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				body := fmt.Sprintf(`{"batch":[{"type":"track","userId":"u%d","event":"e","messageId":"g-%d-%d"}]}`, w, w, i)
				req, _ := http.NewRequest(http.MethodPost, p.url+"/v1/batch", strings.NewReader(body))
				req.SetBasicAuth(key.GetSecret(), "")
				res, err := client.Do(req)
				if err != nil {
					return // the port closed
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == 200 {
					acked.Add(1)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	p.cancel()
	err = <-p.done
	p.done <- nil // for the cleanup
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	n := int(acked.Load())
	if n == 0 {
		t.Fatal("no request was acknowledged before the stop")
	}
	recs := kafkatest.ReadAll(t, p.brokers, kafka.TopicEvents, n, 10*time.Second)
	if len(recs) < n {
		t.Errorf("%d events acknowledged, %d on the topic", n, len(recs))
	}
}

func TestConfigErrorsNameTheFlag(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown target", []string{"--target=ingest,profilez"}, `--target: unknown target "profilez"`},
		{"no database", nil, "--database-url: required"},
		{"short admin token", []string{"--database-url=postgres://x", "--admin-token=short"}, "--admin-token: must be at least 24 characters"},
		{"bad http addr", []string{"--database-url=postgres://x", "--http-addr=8080"}, "--http-addr:"},
		{"bad partitions", []string{"--database-url=postgres://x", "--kafka-partitions=0"}, "--kafka-partitions: must be at least 1"},
		{"bad redis url", []string{"--database-url=postgres://x", "--redis-url=http://x"}, "--redis-url:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var cfg targets.Config
			cfg.RegisterFlags(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
			var runErr error
			if runErr = targets.Run(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), targets.Options{}); runErr == nil || !errors.Is(runErr, err) && runErr.Error() != err.Error() {
				t.Errorf("Run() = %v, want the validation error", runErr)
			}
		})
	}
}

// A small answer goes out uncompressed even to a client that accepts gzip;
// a big one is still compressed.
func TestSmallResponsesAreNotCompressed(t *testing.T) {
	p := start(t)
	call := func(procedure, body string) (encoding string, size int) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, p.url+"/whisper.workspace.v1.WorkspaceService/"+procedure, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept-Encoding", "gzip")
		req.Header.Set("Authorization", "Bearer "+adminToken)
		// A transport that leaves the encoding alone, to see what was sent.
		res, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("%s = %d %s", procedure, res.StatusCode, b)
		}
		return res.Header.Get("Content-Encoding"), len(b)
	}
	for i := range 60 {
		name := fmt.Sprintf("%03d %s", i, strings.Repeat("x", 190))
		if enc, n := call("CreateWorkspace", `{"name":"`+name+`"}`); enc != "" {
			t.Fatalf("a %d-byte answer was sent with Content-Encoding %q, want none", n, enc)
		}
	}
	if enc, _ := call("ListWorkspaces", `{"pageSize":100}`); enc != "gzip" {
		t.Errorf("a page of 60 workspaces (over 12 KiB) was sent with Content-Encoding %q, want gzip", enc)
	}
}
