package ingest

import (
	"encoding/json"
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
		ReceivedAt:   timestamppb.New(receivedAt),
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
		ev.SentAt = timestamppb.New(sentAt)
	}
	return ev, nil
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
func mergeObjects(batch, item json.RawMessage) (json.RawMessage, error) {
	if len(batch) == 0 {
		return item, nil
	}
	if len(item) == 0 {
		return batch, nil
	}
	var merged map[string]json.RawMessage
	if err := json.Unmarshal(batch, &merged); err != nil {
		return nil, err
	}
	var own map[string]json.RawMessage
	if err := json.Unmarshal(item, &own); err != nil {
		return nil, err
	}
	for k, v := range own {
		merged[k] = v
	}
	return json.Marshal(merged)
}
