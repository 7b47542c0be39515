// Package kafka builds franz-go clients for Whisper's topics and creates the
// topics a component needs before it starts.
//
// Kafka is the spine between services: every hand-off is a topic whose
// records are protobuf values keyed by workspace and user, so one user's
// records stay ordered on one partition. Producers are idempotent and wait
// for all in-sync replicas: a record is acknowledged only when it is durable.
package kafka

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"

	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/tracing"
)

// The topics of the platform.
const (
	TopicEvents       = "whisper.events"
	TopicEventsDLQ    = "whisper.events.dlq"
	TopicProfiles     = "whisper.profiles"
	TopicDecisions    = "whisper.decisions"
	TopicDecisionsDLQ = "whisper.decisions.dlq"
)

// Config says where the brokers are and how topics are created.
type Config struct {
	Brokers           config.StringList
	Partitions        int
	ReplicationFactor int
	// MaxBufferedBytes bounds what a producer holds before the broker
	// acknowledges it; past it, producing fails fast instead of blocking.
	MaxBufferedBytes int
	Linger           time.Duration
}

// RegisterFlags binds c to fs with defaults for a single local broker.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Brokers = config.StringList{"127.0.0.1:9092"}
	fs.Var(&c.Brokers, "kafka-brokers", "comma-separated Kafka seed brokers")
	fs.IntVar(&c.Partitions, "kafka-partitions", 12, "partitions of topics this process creates")
	fs.IntVar(&c.ReplicationFactor, "kafka-replication-factor", -1, "replication factor of topics this process creates (-1: broker default)")
	fs.IntVar(&c.MaxBufferedBytes, "kafka-max-buffered-bytes", 64<<20, "bytes a producer may hold unacknowledged before it refuses more")
	// Ingest answers only once the broker acknowledged, so the linger is
	// part of every request's latency; 1 ms rather than 2 raised ingest's
	// throughput at 8 connections by a sixth, and did not lower it at 32.
	fs.DurationVar(&c.Linger, "kafka-linger", time.Millisecond, "how long a producer waits to fill a batch")
}

// Validate reports the first setting that cannot work, naming its flag.
func (c Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("--kafka-brokers: at least one broker is needed")
	case c.Partitions < 1:
		return fmt.Errorf("--kafka-partitions: must be at least 1, got %d", c.Partitions)
	case c.ReplicationFactor == 0 || c.ReplicationFactor < -1:
		return fmt.Errorf("--kafka-replication-factor: must be -1 or at least 1, got %d", c.ReplicationFactor)
	case c.MaxBufferedBytes < 1<<20:
		return fmt.Errorf("--kafka-max-buffered-bytes: must be at least 1 MiB, got %d", c.MaxBufferedBytes)
	case c.Linger < 0:
		return fmt.Errorf("--kafka-linger: must not be negative, got %v", c.Linger)
	}
	return nil
}

// NewClient returns a client named whisper-<name> whose metrics are
// registered on reg (when not nil) under whisper_kafka_*, labelled by client.
// Producer settings come from c; opts add consumer settings and overrides.
func NewClient(c Config, name string, reg prometheus.Registerer, opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID("whisper-" + name),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(c.Linger),
		kgo.MaxBufferedBytes(c.MaxBufferedBytes),
		kgo.ProducerBatchCompression(kgo.Lz4Compression(), kgo.NoCompression()),
		// A record that cannot reach a broker fails instead of waiting
		// forever, so callers can answer "unavailable" and the client retry.
		kgo.RecordDeliveryTimeout(30 * time.Second),
	}
	if reg != nil {
		m := kprom.NewMetrics("whisper", kprom.Subsystem("kafka"), kprom.Registerer(reg), kprom.WithClientLabel())
		base = append(base, kgo.WithHooks(m))
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client %s: %w", name, err)
	}
	return cl, nil
}

// TraceContext is the client option that writes the trace context of each
// produced record's context (the ctx passed to Produce, unless the record
// has its own) into the record's headers, so that whoever consumes it
// continues the producer's trace with tracing.ContextFromRecord. A record
// that already carries a traceparent keeps it: a dead-lettered copy stays in
// the trace of the event it copies, and a producer that injected the context
// of its own send span (tracing.InjectRecords) keeps that. Records produced
// outside any span are left as they are, so the option costs a context
// lookup per record when tracing is off.
func TraceContext() kgo.Opt { return kgo.WithHooks(traceHook{}) }

type traceHook struct{}

func (traceHook) OnProduceRecordBuffered(r *kgo.Record) {
	if r.Context == nil {
		return
	}
	for _, h := range r.Headers {
		if h.Key == tracing.HeaderTraceParent {
			return
		}
	}
	tracing.InjectRecords(r.Context, r)
}

// EnsureTopics creates the topics that do not exist yet. Existing topics are
// left as they are, whatever their partition count.
func EnsureTopics(ctx context.Context, cl *kgo.Client, c Config, topics ...string) error {
	adm := kadm.NewClient(cl)
	resp, err := adm.CreateTopics(ctx, int32(c.Partitions), int16(c.ReplicationFactor), nil, topics...)
	if err != nil {
		return fmt.Errorf("create topics %v: %w", topics, err)
	}
	for _, r := range resp.Sorted() {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// Key is the record key for one user of one workspace. The separator cannot
// occur in a workspace id, so keys of different workspaces never collide.
func Key(workspaceID, userID string) []byte {
	return AppendKey(make([]byte, 0, len(workspaceID)+1+len(userID)), workspaceID, userID)
}

// AppendKey appends Key(workspaceID, userID) to dst, for a producer that
// keys many records from one buffer.
func AppendKey(dst []byte, workspaceID, userID string) []byte {
	dst = append(dst, workspaceID...)
	dst = append(dst, '/')
	return append(dst, userID...)
}
