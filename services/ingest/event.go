package ingest

import (
	"fmt"
	"slices"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
)

// toEvent builds the record value of c for workspace ws. Batch-level context
// and integrations are merged under the call's own (the call's keys win), and
// the timestamp is corrected for the client's clock skew using sentAt.
func (r *request) toEvent(c *call, ws string, receivedAt time.Time, messageID string) (*eventv1.Event, error) {
	ev := &eventv1.Event{}
	if err := r.fillEvent(ev, &eventTimes{}, c, ws, receivedAt, messageID); err != nil {
		return nil, err
	}
	return ev, nil
}

// eventTimes holds the two timestamps an event has of its own, so a
// request can allocate them for all its events at once.
type eventTimes struct{ timestamp, original timestamppb.Timestamp }

// fillEvent is toEvent into ev, with ev's own timestamps in times.
func (r *request) fillEvent(ev *eventv1.Event, times *eventTimes, c *call, ws string, receivedAt time.Time, messageID string) error {
	ctx, err := mergeObjects(r.context, c.context)
	if err != nil {
		return err
	}
	integrations, err := mergeObjects(r.integrations, c.integrations)
	if err != nil {
		return err
	}
	ev.MessageId = messageID
	ev.WorkspaceId = ws
	ev.Type = c.typ
	ev.UserId = c.userID
	ev.AnonymousId = c.anonymousID
	ev.Event = c.event
	ev.Name = c.name
	ev.Category = c.category
	ev.GroupId = c.groupID
	ev.PreviousId = c.previousID
	ev.Properties = c.properties
	ev.Traits = c.traits
	ev.Context = ctx
	ev.Integrations = integrations
	ev.ReceivedAt = r.stamp(receivedAt)
	sentAt := c.sentAt
	if sentAt.IsZero() {
		sentAt = r.sentAt
	}
	ev.Timestamp = setTime(&times.timestamp, correctedTime(c.timestamp, sentAt, receivedAt))
	if !c.timestamp.IsZero() {
		ev.OriginalTimestamp = setTime(&times.original, c.timestamp)
	}
	if !sentAt.IsZero() {
		ev.SentAt = r.stamp(sentAt)
	}
	return nil
}

// setTime is timestamppb.New into ts.
func setTime(ts *timestamppb.Timestamp, t time.Time) *timestamppb.Timestamp {
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
	return ts
}

// records builds the Kafka records of the calls not skipped, in order, and
// callOf[j], the call of records[j]. Records, keys and values are allocated
// once per request, not once per event, and one event and its timestamps
// are filled and marshalled in turn for every call: at a hundred events a
// request, allocations were most of ingestion's CPU. The values and keys
// share buffers, which is safe because records are never mutated.
func (r *request) records(ws string, receivedAt time.Time, ids []string, skip []bool) (records []*kgo.Record, callOf []int, err error) {
	n := 0
	for i := range r.calls {
		if !skip[i] {
			n++
		}
	}
	if n == 0 {
		return nil, nil, nil
	}
	var ev eventv1.Event
	var times eventTimes
	recs := make([]kgo.Record, n)
	records = make([]*kgo.Record, 0, n)
	callOf = make([]int, 0, n)
	keys := make([]byte, 0, n*(len(ws)+1+24))
	values := make([]byte, 0, r.valueBytesGuess(n))
	for i := range r.calls {
		if skip[i] {
			continue
		}
		j := len(records)
		c := &r.calls[i]
		ev.Reset()
		if err := r.fillEvent(&ev, &times, c, ws, receivedAt, ids[i]); err != nil {
			return nil, nil, fmt.Errorf("build event %d: %w", i, err)
		}
		// The generated MarshalVT code, without proto.Marshal's reflection:
		// the record is about a tenth of an event's CPU otherwise.
		start, size := len(values), ev.SizeVT()
		values = slices.Grow(values, size)[:start+size]
		if _, err := ev.MarshalToSizedBufferVT(values[start:]); err != nil {
			return nil, nil, fmt.Errorf("build event %d: %w", i, err)
		}
		keyStart := len(keys)
		keys = kafka.AppendKey(keys, ws, c.user())
		// Full slice expressions: a later append that grows a buffer
		// moves it, and what was handed out must keep its own bytes.
		recs[j] = kgo.Record{
			Topic: kafka.TopicEvents,
			Key:   keys[keyStart:len(keys):len(keys)],
			Value: values[start:len(values):len(values)],
		}
		records = append(records, &recs[j])
		callOf = append(callOf, i)
	}
	return records, callOf, nil
}

// valueBytesGuess is the size to start the value buffer of n records at.
// From JSON, protobuf is smaller than its source, but each record adds the
// workspace id and timestamps (about 64 bytes): the body plus that holds
// them all unless batch-level context is repeated into every item, when the
// buffer grows. From protobuf, where the size is unknown, a typical event.
func (r *request) valueBytesGuess(n int) int {
	if r.bodyBytes > 0 {
		return r.bodyBytes + 64*n
	}
	return 384 * n
}

// stamp returns t as a Timestamp, shared by every event of the request that
// has the same time: receivedAt always, sentAt in a batch. Records are
// marshalled, never mutated, so sharing is safe and saves allocations.
func (r *request) stamp(t time.Time) *timestamppb.Timestamp {
	for _, s := range r.stamps {
		if s.t.Equal(t) {
			return s.pb
		}
	}
	pb := timestamppb.New(t)
	if len(r.stamps) < 2 {
		r.stamps = append(r.stamps, stampMemo{t, pb})
	}
	return pb
}

type stampMemo struct {
	t  time.Time
	pb *timestamppb.Timestamp
}

// correctedTime is when the event happened by the server's clock:
// receivedAt - (sentAt - timestamp), as Segment computes it. Without sentAt
// the client's timestamp is taken as is; without a timestamp, receivedAt.
func correctedTime(timestamp, sentAt, receivedAt time.Time) time.Time {
	switch {
	case timestamp.IsZero():
		return receivedAt
	case sentAt.IsZero():
		return timestamp
	}
	return receivedAt.Add(-sentAt.Sub(timestamp))
}

// mergeObjects overlays item's top-level keys on batch's. Either may be nil.
func mergeObjects(batch, item jsontext.Value) (jsontext.Value, error) {
	if len(batch) == 0 {
		return item, nil
	}
	if len(item) == 0 {
		return batch, nil
	}
	var merged map[string]jsontext.Value
	if err := json.Unmarshal(batch, &merged); err != nil {
		return nil, err
	}
	var own map[string]jsontext.Value
	if err := json.Unmarshal(item, &own); err != nil {
		return nil, err
	}
	for k, v := range own {
		merged[k] = v
	}
	return json.Marshal(merged, json.Deterministic(true))
}
