package devenv

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// testLogger sends devenv's logs to the test output, where they show for
// failing or verbose runs only.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// requireOrSkip skips loudly when a local prerequisite is missing, but
// fails under CI, where every prerequisite is promised.
func requireOrSkip(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set, so this prerequisite is required: "+format, args...)
	}
	t.Skipf("!!! SKIPPED, prerequisite missing (required when CI is set): "+format, args...)
}

// produceConsume proves the broker at brokers works end to end the way the
// services use it: create a topic with kadm, produce, consume from the
// start.
func produceConsume(t *testing.T, brokers []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()

	const topic = "whisper.events"
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatalf("kgo.NewClient: %v", err)
	}
	defer admin.Close()
	if _, err := kadm.NewClient(admin).CreateTopic(ctx, 3, 1, nil, topic); err != nil {
		t.Fatalf("CreateTopic(%q): %v", topic, err)
	}

	want := &kgo.Record{Topic: topic, Key: []byte("ws1/user1"), Value: []byte("hello")}
	if err := admin.ProduceSync(ctx, want).FirstErr(); err != nil {
		t.Fatalf("ProduceSync: %v", err)
	}

	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("kgo.NewClient (consumer): %v", err)
	}
	defer consumer.Close()
	fetches := consumer.PollFetches(ctx)
	if err := fetches.Err(); err != nil {
		t.Fatalf("PollFetches: %v", err)
	}
	recs := fetches.Records()
	if len(recs) != 1 {
		t.Fatalf("consumed %d records, want 1", len(recs))
	}
	if got := recs[0]; string(got.Key) != string(want.Key) || string(got.Value) != string(want.Value) {
		t.Errorf("consumed key=%q value=%q, want key=%q value=%q", got.Key, got.Value, want.Key, want.Value)
	}
}

// waitGoroutines fails the test unless the goroutine count drops back to
// at most want: every goroutine devenv starts must end with Close. Client
// libraries wind down asynchronously, hence the polling.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := runtime.NumGoroutine()
		if got <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines still running after Close, want at most %d:\n%s", got, want, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
