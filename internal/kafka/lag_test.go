package kafka

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"
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
