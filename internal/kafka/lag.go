package kafka

import (
	"context"
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
// A partition the consumer gives up (revoked in a rebalance, or lost with
// its membership) has its series deleted when the client is built with
// ForgetRevoked: otherwise two members would both report the partition,
// the former owner with a value that no longer changes, and max() over the
// group would show a stale lag.
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

// ForgetRevoked returns the group options that delete group's series of
// the partitions the client stops consuming: OnPartitionsRevoked and
// OnPartitionsLost. Both options replace any earlier callback of theirs,
// so a consumer that needs its own must call Forget from it instead. They
// are meant for clients that commit themselves (DisableAutoCommit): with
// autocommit, setting OnPartitionsRevoked drops the default blocking
// commit on revoke.
func (l *ConsumerLag) ForgetRevoked(group string) []kgo.Opt {
	forget := func(_ context.Context, _ *kgo.Client, gone map[string][]int32) { l.Forget(group, gone) }
	return []kgo.Opt{kgo.OnPartitionsRevoked(forget), kgo.OnPartitionsLost(forget)}
}

// Forget deletes group's series of the given partitions, by topic.
func (l *ConsumerLag) Forget(group string, partitions map[string][]int32) {
	for topic, ps := range partitions {
		for _, p := range ps {
			l.lag.DeleteLabelValues(group, topic, strconv.Itoa(int(p)))
		}
	}
}
