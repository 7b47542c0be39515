package kafka

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/whisperhq/whisper/internal/kafkatest"
)

func TestConsumerLag(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := NewConsumerLag(reg)
	if err != nil {
		t.Fatal(err)
	}
	// A second target in the same process shares the registry.
	b, err := NewConsumerLag(reg)
	if err != nil {
		t.Fatalf("second NewConsumerLag on one registry: %v", err)
	}
	recs := func(offsets ...int64) []*kgo.Record {
		var rs []*kgo.Record
		for _, o := range offsets {
			rs = append(rs, &kgo.Record{Offset: o})
		}
		return rs
	}
	tp := func(topic string, partition int32, hw int64, offsets ...int64) kgo.FetchTopicPartition {
		return kgo.FetchTopicPartition{Topic: topic, FetchPartition: kgo.FetchPartition{Partition: partition, HighWatermark: hw, Records: recs(offsets...)}}
	}
	a.Observe("whisper-profiles", tp(TopicEvents, 0, 100, 10, 11, 12)) // 87 behind
	a.Observe("whisper-profiles", tp(TopicEvents, 1, 5, 4))            // caught up
	b.Observe("whisper-decide", tp(TopicProfiles, 2, 3, 7))            // watermark seen before a later record: never below 0
	b.Observe("whisper-decide", tp(TopicProfiles, 0, 50))              // no records: ignored
	a.Observe("whisper-profiles", tp(TopicEvents, 1, 9, 5))            // overwritten: 3 behind
	want := `
# HELP whisper_kafka_consumer_lag_records Records between the last processed offset and the partition's high watermark, by consumer group, topic and partition; set after each processed batch.
# TYPE whisper_kafka_consumer_lag_records gauge
whisper_kafka_consumer_lag_records{group="whisper-decide",partition="2",topic="whisper.profiles"} 0
whisper_kafka_consumer_lag_records{group="whisper-profiles",partition="0",topic="whisper.events"} 87
whisper_kafka_consumer_lag_records{group="whisper-profiles",partition="1",topic="whisper.events"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "whisper_kafka_consumer_lag_records"); err != nil {
		t.Error(err)
	}
}

func TestConsumerLagRegisterConflict(t *testing.T) {
	reg := prometheus.NewRegistry()
	// Another collector under the same name but a different shape is a
	// programming error and must be reported, not hidden.
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "whisper_kafka_consumer_lag_records", Help: "other"}))
	if _, err := NewConsumerLag(reg); err == nil {
		t.Error("NewConsumerLag over a different collector of the same name: no error")
	}
}

// Two members of one group, each in its own process (registry): when the
// second joins, the partitions it takes from the first disappear from the
// first's lag, so no partition is reported by two members; when it leaves,
// its series go with it.
func TestConsumerLagForgetsRevokedPartitions(t *testing.T) {
	const group, topic, partitions = "whisper-lag-test", "lag.test", 4
	_, brokers := kafkatest.NewCluster(t, kfake.SeedTopics(partitions, topic))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	producer, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for p := range int32(partitions) {
		for range 3 {
			if err := producer.ProduceSync(ctx, &kgo.Record{Topic: topic, Partition: p, Value: []byte("x")}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}

	type member struct {
		reg *prometheus.Registry
		cl  *kgo.Client
	}
	join := func() member {
		reg := prometheus.NewRegistry()
		lag, err := NewConsumerLag(reg)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(append([]kgo.Opt{
			kgo.SeedBrokers(brokers...),
			kgo.ConsumerGroup(group),
			kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.DisableAutoCommit(),
			kgo.HeartbeatInterval(100 * time.Millisecond),
		}, lag.ForgetRevoked(group)...)...)
		if err != nil {
			t.Fatal(err)
		}
		// Poll in the background as a consumer does, observing every
		// batch; nothing is committed, so a new owner reads from the start.
		go func() {
			for {
				fs := cl.PollFetches(ctx)
				if fs.IsClientClosed() || ctx.Err() != nil {
					return
				}
				fs.EachPartition(func(p kgo.FetchTopicPartition) { lag.Observe(group, p) })
			}
		}()
		return member{reg, cl}
	}
	reported := func(m member) []string {
		mfs, err := m.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var ps []string
		for _, mf := range mfs {
			for _, s := range mf.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "partition" {
						ps = append(ps, l.GetValue())
					}
				}
			}
		}
		slices.Sort(ps)
		return ps
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			if ctx.Err() != nil {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	a := join()
	defer a.cl.Close()
	waitFor("the first member to report every partition", func() bool { return len(reported(a)) == partitions })

	b := join()
	waitFor("the partitions to be split between the members", func() bool {
		ra, rb := reported(a), reported(b)
		return len(ra) > 0 && len(rb) > 0 && len(ra)+len(rb) == partitions
	})
	ra, rb := reported(a), reported(b)
	if both := slices.DeleteFunc(slices.Clone(ra), func(p string) bool { return !slices.Contains(rb, p) }); len(both) > 0 {
		t.Errorf("partitions %v reported by both members (first %v, second %v)", both, ra, rb)
	}

	b.cl.Close() // leaves the group: every partition it owned is revoked
	if got := reported(b); len(got) != 0 {
		t.Errorf("after leaving, the second member still reports partitions %v", got)
	}
	waitFor("the first member to take every partition back", func() bool { return len(reported(a)) == partitions })
}
