package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/loadgen"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpc"
	"github.com/whisperhq/whisper/services/ingest"
)

type writeKeys map[string]string

func (k writeKeys) ResolveWriteKey(_ context.Context, key string) (string, error) {
	if ws, ok := k[key]; ok {
		return ws, nil
	}
	return "", errors.New("unknown write key")
}

// ingestStack is the ingest target in-process, on kfake and a real Redis,
// as services/ingest's own tests build it.
func ingestStack(t *testing.T) (url string, brokers []string, ws, key string) {
	t.Helper()
	_, brokers = kafkatest.NewCluster(t)
	rdb := redistest.New(t)
	cfg := kafka.Config{Brokers: brokers, Partitions: 4, ReplicationFactor: -1, MaxBufferedBytes: 16 << 20, Linger: 2 * time.Millisecond}
	producer, err := kafka.NewClient(cfg, "ingest-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := kafka.EnsureTopics(ctx, producer, cfg, kafka.TopicEvents); err != nil {
		t.Fatal(err)
	}
	ws, key = "ws-"+randHex(t), "wk_"+randHex(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := ingest.New(ingest.Options{Producer: producer, Redis: rdb, WriteKeys: writeKeys{key: ws}, Registerer: prometheus.NewRegistry(), Logger: logger})
	srv := rpc.NewServer(rpc.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, ReadyTimeout: time.Second}, logger, prometheus.NewRegistry())
	for pattern, h := range svc.Routes() {
		srv.Handle(pattern, h)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), brokers, ws, key
}

func randHex(t *testing.T) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestBenchAgainstIngest runs the command for about a second against an
// in-process ingest target and checks its accounting against what reached
// the topic.
func TestBenchAgainstIngest(t *testing.T) {
	url, brokers, ws, key := ingestStack(t)
	tests := []struct {
		name       string
		key        string
		wantErrors string // the only error kind, or empty
	}{
		{"accepted", key, ""},
		{"bad write key", "wk_nobody", "HTTP 401"},
	}
	stored := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), []string{
				"--url", url, "--write-key", tt.key, "--brokers", strings.Join(brokers, ","), "--workspace-id", ws,
				"--connections", "4", "--warmup", "200ms", "--duration", "800ms", "--templates", "8", "--json",
			}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d\n%s", code, stderr.String())
			}
			var r loadgen.Report
			if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
				t.Fatalf("--json output: %v\n%s", err, stdout.String())
			}
			in := r.Ingest
			if in.Total.Requests == 0 || in.Measured.Requests == 0 || in.Measured.Requests > in.Total.Requests {
				t.Fatalf("requests: measured %d, total %d", in.Measured.Requests, in.Total.Requests)
			}
			var failed int64
			for kind, n := range in.Total.Errors {
				if kind != tt.wantErrors {
					t.Errorf("error %q %d times; samples %v", kind, n, in.ErrorSamples)
				}
				failed += n
			}
			if tt.wantErrors == "" {
				if want := in.Total.Requests * int64(r.Load.BatchSize); in.Total.Accepted != want {
					t.Errorf("accepted %d events of %d requests, want %d", in.Total.Accepted, in.Total.Requests, want)
				}
			} else if in.Total.Accepted != 0 || failed != in.Total.Requests {
				t.Errorf("with a bad key: accepted %d, failed %d of %d requests", in.Total.Accepted, failed, in.Total.Requests)
			}
			stored += int(in.Total.Accepted)

			// Every accepted event is in the topic exactly once, and
			// nothing else is.
			recs := kafkatest.ReadAll(t, brokers, kafka.TopicEvents, stored, 10*time.Second)
			if len(recs) != stored {
				t.Fatalf("whisper.events holds %d records, the benchmark counted %d accepted events", len(recs), stored)
			}
			seen := map[string]bool{}
			for _, rec := range recs {
				var ev eventv1.Event
				if err := proto.Unmarshal(rec.Value, &ev); err != nil {
					t.Fatal(err)
				}
				if seen[ev.GetMessageId()] {
					t.Errorf("messageId %s stored twice", ev.GetMessageId())
				}
				seen[ev.GetMessageId()] = true
			}

			c := r.Ceiling
			if c == nil || c.Acked == 0 || c.RecordsPerSec <= 0 || len(c.Errors) > 0 || c.Partitions != 4 {
				t.Fatalf("ceiling = %+v, want acked records on 4 partitions and no errors", c)
			}
			if c.AvgValueBytes < 200 || c.AvgValueBytes > 500 {
				t.Errorf("ceiling values average %.0f bytes, want about an event's", c.AvgValueBytes)
			}
			if want := in.EventsPerSec / c.RecordsPerSec; r.Ratio != want {
				t.Errorf("ratio = %v, want %v", r.Ratio, want)
			}
			if len(r.Targets) != 3 {
				t.Errorf("targets = %+v, want throughput, p99 and ratio", r.Targets)
			}
			assertTopicGone(t, brokers, c.Topic)
		})
	}
}

func assertTopicGone(t *testing.T, brokers []string, topic string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(topic) {
		t.Errorf("scratch topic %s left behind", topic)
	}
}

func TestFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--url", "http://x"}, "--write-key: required with --url"},
		{[]string{"--connections", "0"}, "--connections: must be at least 1"},
		{[]string{"--duration", "0s"}, "--duration: must be positive"},
		{[]string{"--mode", "soak"}, `--mode: must be ingest, freshness, delivery or decide, got "soak"`},
		{[]string{"--mode", "delivery", "--url", "http://x", "--write-key", "k"}, "--api-token: required with --url in delivery mode"},
		{[]string{"--mode", "delivery", "--url", "http://x", "--write-key", "k", "--api-token", "t"}, "--webhook-secret: required with --url in delivery mode"},
		{[]string{"--mode", "delivery", "--batch-size", "1"}, "--batch-size: must be at least 2"},
		{[]string{"--mode", "freshness", "--url", "http://x", "--write-key", "k"}, "--api-token: required with --url in freshness mode"},
		{[]string{"--mode", "freshness", "--rate", "0"}, "--rate: must be positive"},
		{[]string{"--mode", "freshness", "--batch-size", "1"}, "--batch-size: must be at least 2"},
		{[]string{"--mode", "freshness", "--poll-interval", "0s"}, "--poll-interval: must be positive"},
		{[]string{"--mode", "decide", "--url", "http://x"}, "--api-token: required with --url in decide mode"},
		{[]string{"--mode", "decide", "--rate", "0"}, "--rate: must be positive, got 0"},
		{[]string{"--mode", "decide", "--rate", "-5"}, "--rate: must be positive, got -5"},
		{[]string{"--mode", "decide", "--max-in-flight", "0"}, "--max-in-flight: must be at least 1"},
		{[]string{"--tracing", "--url", "http://x", "--write-key", "k"}, "--tracing: only when whisper-load starts whisper dev"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), tt.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("run(%q) = %d, stderr %q; want 2 and %q", tt.args, code, stderr.String(), tt.want)
		}
	}
}

func TestCPUMeterReadsItselfAndTheServer(t *testing.T) {
	use := cpuMeter(os.Getpid())()
	if _, ok := use["whisper-load"]; !ok {
		t.Errorf("meter read %v, want whisper-load's own CPU", use)
	}
	if runtime.GOOS == "linux" {
		if _, ok := use["whisper dev"]; !ok {
			t.Errorf("meter read %v, want the server's CPU from /proc", use)
		}
	}
}
