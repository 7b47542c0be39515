package kafka

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ConsumerLag reports, for every consumer group, how many records of each
// partition remain between the last processed offset and the partition's
// high watermark. It is set after a batch is processed (not when it is
// fetched), so a consumer stuck retrying a batch shows its lag growing.
// A partition the consumer no longer owns keeps its last value.
type ConsumerLag struct {
	lag *prometheus.GaugeVec
}

// NewConsumerLag registers whisper_kafka_consumer_lag_records with reg.
// Several targets in one process share a registry, so a second registration
// reuses the collector the first one registered. A nil reg registers nothing.
func NewConsumerLag(reg prometheus.Registerer) (*ConsumerLag, error) {
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "whisper_kafka_consumer_lag_records",
		Help: "Records between the last processed offset and the partition's high watermark, by consumer group, topic and partition; set after each processed batch.",
	}, []string{"group", "topic", "partition"})
	if reg != nil {
		if err := reg.Register(lag); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register consumer lag: %w", err)
			}
			existing, ok := are.ExistingCollector.(*prometheus.GaugeVec)
			if !ok {
				return nil, fmt.Errorf("register consumer lag: existing collector is %T", are.ExistingCollector)
			}
			lag = existing
		}
	}
	return &ConsumerLag{lag: lag}, nil
}

// Observe records the lag of p after its records have been processed:
// the high watermark is the offset the next produced record will get, so
// the lag is HighWatermark - last offset - 1, never below 0. A batch
// without records says nothing and is ignored.
func (l *ConsumerLag) Observe(group string, p kgo.FetchTopicPartition) {
	if len(p.Records) == 0 {
		return
	}
	last := p.Records[len(p.Records)-1].Offset
	l.Set(group, p.Topic, p.Partition, p.HighWatermark, last)
}

// Set records the lag of one partition given its high watermark and the
// offset of the last record processed.
func (l *ConsumerLag) Set(group, topic string, partition int32, highWatermark, lastOffset int64) {
	l.lag.WithLabelValues(group, topic, strconv.Itoa(int(partition))).Set(float64(max(highWatermark-lastOffset-1, 0)))
}
