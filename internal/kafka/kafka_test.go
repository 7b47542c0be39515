package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/kafkatest"
)

func TestClientsShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := Config{Brokers: config.StringList{"127.0.0.1:1"}, Partitions: 1, ReplicationFactor: -1, MaxBufferedBytes: 1 << 20}
	for _, name := range []string{"ingest", "profiles"} {
		cl, err := NewClient(cfg, name, reg)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) == 0 {
		t.Fatal("no kafka metrics gathered")
	}
}

// TestTraceContext produces, with TraceContext, a record inside a span, one
// outside any span and one that already carries a traceparent, and reads
// what the broker has: the first is in the span's trace, the second has no
// header, the third kept its own.
func TestTraceContext(t *testing.T) {
	_, brokers := kafkatest.NewCluster(t)
	cfg := Config{Brokers: brokers, Partitions: 1, ReplicationFactor: -1, MaxBufferedBytes: 1 << 20}
	cl, err := NewClient(cfg, "trace-test", nil, TraceContext())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := EnsureTopics(ctx, cl, cfg, TopicDecisions); err != nil {
		t.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(ctx)
	spanCtx, span := tp.Tracer("t").Start(ctx, "decide")
	defer span.End()
	const kept = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

	if err := cl.ProduceSync(spanCtx, &kgo.Record{Topic: TopicDecisions, Value: []byte("in span")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: TopicDecisions, Value: []byte("no span")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(spanCtx, &kgo.Record{Topic: TopicDecisions, Value: []byte("own"),
		Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte(kept)}}}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, r := range kafkatest.ReadAll(t, brokers, TopicDecisions, 3, 10*time.Second) {
		got[string(r.Value)] = ""
		for _, h := range r.Headers {
			got[string(r.Value)] += h.Key + "=" + string(h.Value) + ";"
		}
	}
	sc := span.SpanContext()
	want := map[string]string{
		"in span": "traceparent=00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-01;",
		"no span": "",
		"own":     "traceparent=" + kept + ";",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("record headers (-want +got):\n%s", diff)
	}
}
