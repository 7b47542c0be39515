// Package kafkatest runs an in-process Kafka broker (franz-go's kfake) that
// speaks the real protocol, and reads topics back for assertions.
package kafkatest

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NewCluster starts a one-broker cluster on a free loopback port, stopped
// when t ends, and returns its seed brokers.
func NewCluster(t testing.TB, opts ...kfake.Opt) (*kfake.Cluster, []string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()
}

// ReadAll consumes topic from the start until it has want records or the
// deadline passes, and returns what it read.
func ReadAll(t testing.TB, brokers []string, topic string, want int, timeout time.Duration) []*kgo.Record {
	t.Helper()
	return read(t, brokers, topic, want, timeout, 0)
}

// ReadSettled consumes topic from the start until it has at least want
// records or the deadline passes, then goes on reading for settle, and
// returns all it read: for tests that nothing was written more than want
// times, which a single short read could not tell from a consumer slow to
// start on a busy machine.
func ReadSettled(t testing.TB, brokers []string, topic string, want int, timeout, settle time.Duration) []*kgo.Record {
	t.Helper()
	return read(t, brokers, topic, want, timeout, settle)
}

func read(t testing.TB, brokers []string, topic string, want int, timeout, settle time.Duration) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer cl.Close()
	var out []*kgo.Record
	poll := func(ctx context.Context, until func() bool) {
		for !until() {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachError(func(topic string, p int32, err error) {
				t.Errorf("fetch %s/%d: %v", topic, p, err)
			})
			out = append(out, fs.Records()...)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	poll(ctx, func() bool { return len(out) >= want })
	if settle > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), settle)
		defer cancel()
		poll(ctx, func() bool { return false })
	}
	return out
}
