package ingest

import (
	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
)

// toEvent builds the record value of c for workspace ws. Batch-level context
// and integrations are merged under the call's own (the call's keys win), and
// the timestamp is corrected for the client's clock skew using sentAt.
func (r *request) toEvent(c *call, ws string, receivedAt time.Time, messageID string) (*eventv1.Event, error) {
	ctx, err := mergeObjects(r.context, c.context)
	if err != nil {
		return nil, err
	}
	integrations, err := mergeObjects(r.integrations, c.integrations)
	if err != nil {
		return nil, err
	}
	ev := &eventv1.Event{
		MessageId:    messageID,
		WorkspaceId:  ws,
		Type:         c.typ,
		UserId:       c.userID,
		AnonymousId:  c.anonymousID,
		Event:        c.event,
		Name:         c.name,
		Category:     c.category,
		GroupId:      c.groupID,
		PreviousId:   c.previousID,
		Properties:   c.properties,
		Traits:       c.traits,
		Context:      ctx,
		Integrations: integrations,
		ReceivedAt:   r.stamp(receivedAt),
	}
	sentAt := c.sentAt
	if sentAt.IsZero() {
		sentAt = r.sentAt
	}
	ev.Timestamp = timestamppb.New(correctedTime(c.timestamp, sentAt, receivedAt))
	if !c.timestamp.IsZero() {
		ev.OriginalTimestamp = timestamppb.New(c.timestamp)
	}
	if !sentAt.IsZero() {
		ev.SentAt = r.stamp(sentAt)
	}
	return ev, nil
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
