package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
)

// childEnv makes the test binary act as the whisper command, so the crash
// test kills a real process without building one.
const childEnv = "WHISPER_TEST_RUN_AS_WHISPER"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(run(context.Background(), strings.Fields(os.Getenv(childEnv)), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// serveChild is the test binary as `whisper serve --target=target` on
// addr against the given dependencies, with extra environment variables;
// the caller starts it.
func serveChild(target, addr string, brokers []string, dbURL, redisURL, admin string, extra ...string) *exec.Cmd {
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(),
		childEnv+"=serve --target="+target,
		"WHISPER_HTTP_ADDR="+addr,
		"WHISPER_KAFKA_BROKERS="+strings.Join(brokers, ","),
		"WHISPER_KAFKA_PARTITIONS=4",
		"WHISPER_DATABASE_URL="+dbURL,
		"WHISPER_REDIS_URL="+redisURL,
		"WHISPER_ADMIN_TOKEN="+admin,
	)
	child.Env = append(child.Env, extra...)
	return child
}

// TestCrashLosesNothingAcknowledged kills `whisper serve --target=ingest`
// with SIGKILL under load: every event acknowledged before the kill must be
// on the topic afterwards.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	_, brokers := kafkatest.NewCluster(t)
	dbURL := pgtest.NewDatabase(t)
	redisURL := redistest.URL(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const admin = "crash-test-admin-token-0123456789"

	child := serveChild("ingest", addr, brokers, dbURL, redisURL, admin)
	var logs strings.Builder
	child.Stderr = &logs
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()
	t.Cleanup(func() {
		child.Process.Kill()
		<-exited
	})
	base := "http://" + addr
	waitReady(t, base, exited, &logs)

	ctx := context.Background()
	ws := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, base, rpctest.Bearer(admin))
	w, err := ws.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "crash"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := ws.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: w.GetWorkspace().GetId(), Name: "k"})
	if err != nil {
		t.Fatal(err)
	}

	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
	)
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				var ids []string
				var items []string
				for e := range 10 {
					id := fmt.Sprintf("c%d-r%d-e%d", c, i, e)
					ids = append(ids, id)
					items = append(items, fmt.Sprintf(`{"type":"track","userId":"u%d-%d","event":"Clicked","messageId":%q}`, c, e, id))
				}
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/batch", strings.NewReader(`{"batch":[`+strings.Join(items, ",")+`]}`))
				req.SetBasicAuth(key.GetSecret(), "")
				res, err := client.Do(req)
				if err != nil {
					return // the process is gone
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode == http.StatusOK {
					mu.Lock()
					acked = append(acked, ids...)
					mu.Unlock()
				}
			}
		}()
	}
	// Kill once a fair number of events are in, mid-stream.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 2000 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited
	exited <- nil
	wg.Wait()

	if len(acked) == 0 {
		t.Fatalf("nothing was acknowledged before the kill; child logs:\n%s", logs.String())
	}
	recs := kafkatest.ReadAll(t, brokers, kafka.TopicEvents, len(acked), 20*time.Second)
	onTopic := make(map[string]bool, len(recs))
	for _, r := range recs {
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		onTopic[ev.GetMessageId()] = true
	}
	var lost []string
	for _, id := range acked {
		if !onTopic[id] {
			lost = append(lost, id)
		}
	}
	t.Logf("%d events acknowledged before SIGKILL, %d records on the topic", len(acked), len(recs))
	if len(lost) > 0 {
		t.Errorf("%d acknowledged events lost, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}

func waitReady(t *testing.T, base string, exited chan error, logs *strings.Builder) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("whisper exited before ready: %v\n%s", err, logs.String())
		default:
		}
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("whisper not ready after 30 s\n%s", logs.String())
}
