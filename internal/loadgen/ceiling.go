package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
)

// CeilingConfig says where and how to produce the ceiling's records.
type CeilingConfig struct {
	// Kafka are the producer settings of the ingest target (brokers,
	// linger, buffer): the ceiling producer is built by kafka.NewClient
	// from them, so acks=all, idempotence and compression are the same.
	Kafka kafka.Config
	// WorkspaceID keys the records as ingestion would for this workspace.
	WorkspaceID string
	// InFlight bounds the records produced and not yet acknowledged:
	// connections × batch size, the most the ingest target can hold for
	// the same number of clients.
	InFlight int
	// Partitions of the scratch topic; those of whisper.events when zero.
	Partitions       int
	Warmup, Duration time.Duration
	Bodies           *Bodies
	Logger           *slog.Logger
	// CPU, when set, is read at the start and the end of the measured
	// window, for the CPU time each process spent per acknowledged record.
	CPU CPUMeter
}

// CeilingResult is the outcome of RunCeiling.
type CeilingResult struct {
	Topic         string           `json:"topic"`
	Partitions    int              `json:"partitions"`
	InFlight      int              `json:"in_flight"`
	AvgValueBytes float64          `json:"avg_value_bytes"`
	Duration      time.Duration    `json:"duration_ns"`
	Acked         int64            `json:"acked_records"`
	RecordsPerSec float64          `json:"records_per_sec"`
	Errors        map[string]int64 `json:"errors,omitempty"`
	// CPUPerRecord is the CPU time each process watched by the config's
	// CPU meter spent per acknowledged record in the window, in µs.
	CPUPerRecord CPUUse `json:"cpu_us_per_record,omitempty"`
}

// ceilingRecords builds the records ingestion would produce for the events
// of the templates: same protobuf value, same key.
func ceilingRecords(b *Bodies, ws string, receivedAt time.Time) (keys, values [][]byte, err error) {
	for seq := range uint64(b.Templates()) {
		for i := range b.BatchSize() {
			ev, id := b.Event(seq, i)
			v, err := proto.Marshal(&eventv1.Event{
				MessageId:         id,
				WorkspaceId:       ws,
				Type:              eventv1.EventType_EVENT_TYPE_TRACK,
				UserId:            ev.UserID,
				Event:             ev.Name,
				Properties:        ev.Properties,
				Context:           ev.Context,
				Timestamp:         timestamppb.New(receivedAt.Add(-b.SentAt().Sub(ev.Timestamp))),
				OriginalTimestamp: timestamppb.New(ev.Timestamp),
				SentAt:            timestamppb.New(b.SentAt()),
				ReceivedAt:        timestamppb.New(receivedAt),
			})
			if err != nil {
				return nil, nil, fmt.Errorf("marshal event: %w", err)
			}
			keys = append(keys, kafka.Key(ws, ev.UserID))
			values = append(values, v)
		}
	}
	return keys, values, nil
}

// RunCeiling produces the ingest records straight into the broker, into a
// scratch topic it creates and deletes, for the warm-up and the measured
// duration, and counts the acknowledgements inside the window.
func RunCeiling(ctx context.Context, cfg CeilingConfig) (res CeilingResult, err error) {
	if cfg.InFlight < 1 {
		return res, fmt.Errorf("ceiling: in-flight records must be at least 1, got %d", cfg.InFlight)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	keys, values, err := ceilingRecords(cfg.Bodies, cfg.WorkspaceID, time.Now().UTC())
	if err != nil {
		return res, fmt.Errorf("ceiling: %w", err)
	}
	var total int
	for _, v := range values {
		total += len(v)
	}
	res.AvgValueBytes = float64(total) / float64(len(values))
	res.InFlight = cfg.InFlight
	res.Duration = cfg.Duration

	cl, err := kafka.NewClient(cfg.Kafka, "load-ceiling", nil)
	if err != nil {
		return res, fmt.Errorf("ceiling: %w", err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if res.Partitions = cfg.Partitions; res.Partitions == 0 {
		if res.Partitions, err = partitionsOf(ctx, adm, kafka.TopicEvents); err != nil {
			return res, fmt.Errorf("ceiling: %w", err)
		}
	}
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return res, fmt.Errorf("ceiling: topic name: %w", err)
	}
	res.Topic = "whisper.load.ceiling." + hex.EncodeToString(suffix[:])
	topicCfg := cfg.Kafka
	topicCfg.Partitions = res.Partitions
	if err := kafka.EnsureTopics(ctx, cl, topicCfg, res.Topic); err != nil {
		return res, fmt.Errorf("ceiling: %w", err)
	}
	defer func() {
		// The scratch topic holds every record of the phase; on an
		// in-memory broker that is memory the next run wants back.
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if _, delErr := adm.DeleteTopic(delCtx, res.Topic); delErr != nil {
			err = errors.Join(err, fmt.Errorf("ceiling: delete topic %s: %w", res.Topic, delErr))
		}
	}()

	// Records are recycled through free, which also bounds the records in
	// flight: a record comes back once the broker answered for it.
	free := make(chan *kgo.Record, cfg.InFlight)
	for range cfg.InFlight {
		free <- new(kgo.Record)
	}
	var (
		acked   atomic.Int64
		errMu   sync.Mutex
		errs    = map[string]int64{}
		measure atomic.Bool
	)
	promise := func(r *kgo.Record, err error) {
		if err != nil {
			if measure.Load() {
				errMu.Lock()
				errs[produceErrorKind(err)]++
				errMu.Unlock()
			}
		} else {
			acked.Add(1)
		}
		free <- r
	}

	cfg.Logger.InfoContext(ctx, "ceiling load", "topic", res.Topic, "partitions", res.Partitions, "in_flight", cfg.InFlight,
		"warmup", cfg.Warmup, "duration", cfg.Duration)
	stop := make(chan struct{})
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for n := 0; ; n++ {
			var r *kgo.Record
			select {
			case r = <-free:
			case <-stop:
				return
			case <-ctx.Done():
				return
			}
			i := n % len(values)
			*r = kgo.Record{Topic: res.Topic, Key: keys[i], Value: values[i]}
			cl.Produce(ctx, r, promise)
		}
	}()

	var windowErr error
	var before int64
	var cpu CPUUse
	if windowErr = sleepCtx(ctx, cfg.Warmup); windowErr == nil {
		since := cpuSince(cfg.CPU)
		before = acked.Load()
		measure.Store(true)
		if windowErr = sleepCtx(ctx, cfg.Duration); windowErr == nil {
			cpu = since()
		}
	}
	res.Acked = acked.Load() - before
	res.CPUPerRecord = cpu.per(res.Acked)
	measure.Store(false)
	close(stop)
	<-produced
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := cl.Flush(flushCtx); err != nil {
		return res, fmt.Errorf("ceiling: flush: %w", err)
	}
	if windowErr != nil {
		return res, fmt.Errorf("ceiling: %w", windowErr)
	}
	if len(errs) > 0 {
		res.Errors = errs
	}
	res.RecordsPerSec = float64(res.Acked) / cfg.Duration.Seconds()
	return res, nil
}

func partitionsOf(ctx context.Context, adm *kadm.Client, topic string) (int, error) {
	details, err := adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("describe %s: %w", topic, err)
	}
	d, ok := details[topic]
	if !ok || d.Err != nil {
		return 0, fmt.Errorf("describe %s: topic not found (is the ingest target running on these brokers?)", topic)
	}
	return len(d.Partitions), nil
}

func produceErrorKind(err error) string {
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		return "kafka: " + ke.Message
	case errors.Is(err, kgo.ErrRecordTimeout):
		return "record timeout"
	case errors.Is(err, kgo.ErrMaxBuffered):
		return "buffer full"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "other"
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
