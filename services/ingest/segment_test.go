package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
)

func TestDecodeBatchErrors(t *testing.T) {
	big := `{"batch":[{"type":"track","userId":"u","event":"e","properties":{"p":"` + strings.Repeat("x", MaxEventBytes) + `"}}]}`
	tests := []struct {
		name     string
		body     string
		wantErr  string
		tooLarge bool
	}{
		{name: "not json", body: `nope`, wantErr: "malformed JSON"},
		{name: "truncated", body: `{"batch":[{"type":"track"`, wantErr: "malformed JSON"},
		{name: "array body", body: `[]`, wantErr: "expected a JSON object"},
		{name: "item not object", body: `{"batch":[1]}`, wantErr: "batch[0]: expected an object, got a number"},
		{name: "duplicate key", body: `{"batch":[{"type":"track","type":"identify","userId":"u","event":"e"}]}`, wantErr: "batch[0]"},
		{name: "invalid utf-8", body: "{\"batch\":[{\"type\":\"track\",\"userId\":\"\xff\",\"event\":\"e\"}]}", wantErr: "batch[0]"},
		{name: "no batch", body: `{"sentAt":"2024-01-01T00:00:00Z"}`, wantErr: "batch: required"},
		{name: "empty batch", body: `{"batch":[]}`, wantErr: "batch: must hold at least one call"},
		{name: "batch not array", body: `{"batch":{}}`, wantErr: "batch: must be an array"},
		{name: "missing type", body: `{"batch":[{"userId":"u"}]}`, wantErr: "batch[0].type: required"},
		{name: "unknown type", body: `{"batch":[{"type":"trak","userId":"u"}]}`, wantErr: `batch[0].type: unknown call type "trak"`},
		{name: "track without event", body: `{"batch":[{"type":"identify","userId":"u"},{"type":"track","userId":"u"}]}`, wantErr: "batch[1].event: required for track"},
		{name: "no identity", body: `{"batch":[{"type":"track","event":"e"}]}`, wantErr: "batch[0].userId: userId or anonymousId is required"},
		{name: "alias without previousId", body: `{"batch":[{"type":"alias","userId":"u"}]}`, wantErr: "batch[0].previousId: required for alias"},
		{name: "group without groupId", body: `{"batch":[{"type":"group","userId":"u"}]}`, wantErr: "batch[0].groupId: required for group"},
		{name: "properties not object", body: `{"batch":[{"type":"track","userId":"u","event":"e","properties":[1]}]}`, wantErr: "batch[0].properties: must be a JSON object"},
		{name: "event not string", body: `{"batch":[{"type":"track","userId":"u","event":{}}]}`, wantErr: "batch[0].event: expected a string or a number, got an object"},
		{name: "bad timestamp", body: `{"batch":[{"type":"track","userId":"u","event":"e","timestamp":"yesterday"}]}`, wantErr: `batch[0].timestamp: "yesterday" is not an ISO-8601 timestamp`},
		{name: "bad batch sentAt", body: `{"sentAt":"soon","batch":[{"type":"track","userId":"u","event":"e"}]}`, wantErr: "sentAt:"},
		{name: "context not object", body: `{"context":"x","batch":[{"type":"track","userId":"u","event":"e"}]}`, wantErr: "context: must be a JSON object"},
		{name: "trailing data", body: `{"batch":[{"type":"track","userId":"u","event":"e"}]} {}`, wantErr: "unexpected data"},
		{name: "long user id", body: `{"batch":[{"type":"track","userId":"` + strings.Repeat("u", maxIDBytes+1) + `","event":"e"}]}`, wantErr: "batch[0].userId: longer than 512 bytes"},
		{name: "event too large", body: big, tooLarge: true, wantErr: "batch[0] is larger than 32768 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeBatch([]byte(tt.body))
			if err == nil {
				t.Fatalf("decodeBatch(%.60q) succeeded, want error %q", tt.body, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error = %q, want containing %q", err, tt.wantErr)
			}
			if got := errors.Is(err, ErrTooLarge); got != tt.tooLarge {
				t.Errorf("errors.Is(err, ErrTooLarge) = %v, want %v", got, tt.tooLarge)
			}
		})
	}
}

func TestDecodeBatch(t *testing.T) {
	body := `{
	  "writeKey": "wk_1",
	  "sentAt": "2024-05-01T12:00:10Z",
	  "context": {"library": {"name": "analytics-node"}, "ip": "10.0.0.1"},
	  "integrations": {"All": true},
	  "batch": [
	    {"type": "track", "userId": 42, "event": "Order Completed", "properties": {"total": 9.5},
	     "messageId": "m1", "timestamp": "2024-05-01T12:00:00Z", "context": {"ip": "10.0.0.2"}},
	    {"type": "identify", "anonymousId": "anon-1", "traits": {"plan": "pro"}},
	    {"type": "page", "userId": "u", "name": "Home", "category": "Docs", "properties": null},
	    {"type": "alias", "userId": "u", "previousId": "anon-1"},
	    {"type": "group", "userId": "u", "groupId": "g1", "traits": {"name": "Acme"}},
	    {"type": "screen", "anonymousId": "a", "name": "Settings"}
	  ]
	}`
	req, err := decodeBatch([]byte(body))
	if err != nil {
		t.Fatalf("decodeBatch: %v", err)
	}
	if req.writeKey != "wk_1" || len(req.calls) != 6 {
		t.Fatalf("writeKey %q calls %d, want wk_1 and 6", req.writeKey, len(req.calls))
	}
	c := req.calls[0]
	if c.typ != eventv1.EventType_EVENT_TYPE_TRACK || c.userID != "42" || c.event != "Order Completed" || c.messageID != "m1" {
		t.Errorf("call 0 = %+v", c)
	}
	received := time.Date(2024, 5, 1, 12, 0, 15, 0, time.UTC)
	ev, err := req.toEvent(&c, "ws1", received, "m1")
	if err != nil {
		t.Fatalf("toEvent: %v", err)
	}
	// The client's clock is 10 s behind its sentAt; the server received the
	// request 5 s after the client sent it: the event happened at 12:00:05.
	if got, want := ev.GetTimestamp().AsTime(), time.Date(2024, 5, 1, 12, 0, 5, 0, time.UTC); !got.Equal(want) {
		t.Errorf("timestamp = %v, want %v", got, want)
	}
	var ctx map[string]any
	if err := json.Unmarshal(ev.GetContext(), &ctx); err != nil {
		t.Fatalf("context: %v", err)
	}
	if ctx["ip"] != "10.0.0.2" || ctx["library"] == nil {
		t.Errorf("merged context = %v, want the item's ip and the batch's library", ctx)
	}
	if string(ev.GetIntegrations()) != `{"All": true}` {
		t.Errorf("integrations = %s", ev.GetIntegrations())
	}
	if p := req.calls[2]; p.properties != nil || p.name != "Home" || p.category != "Docs" {
		t.Errorf("page call = %+v, want null properties dropped", p)
	}
	if a := req.calls[3]; a.previousID != "anon-1" || a.user() != "u" {
		t.Errorf("alias = %+v", a)
	}
	if a := req.calls[1]; a.user() != "anon-1" {
		t.Errorf("identify user = %q, want the anonymous id", a.user())
	}
}

func TestCorrectedTime(t *testing.T) {
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name                        string
		timestamp, sentAt, received time.Time
		want                        time.Time
	}{
		{"no timestamp", time.Time{}, base, base.Add(time.Hour), base.Add(time.Hour)},
		{"no sentAt", base, time.Time{}, base.Add(time.Hour), base},
		{"client clock ahead", base.Add(time.Hour), base.Add(time.Hour + 2*time.Second), base.Add(3 * time.Second), base.Add(time.Second)},
	}
	for _, tt := range tests {
		if got := correctedTime(tt.timestamp, tt.sentAt, tt.received); !got.Equal(tt.want) {
			t.Errorf("%s: correctedTime = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDecodeSingle(t *testing.T) {
	req, err := decodeSingle([]byte(`{"type":"identify","userId":"u","event":"x","writeKey":"k"}`), eventv1.EventType_EVENT_TYPE_TRACK)
	if err != nil {
		t.Fatalf("decodeSingle: %v", err)
	}
	if req.calls[0].typ != eventv1.EventType_EVENT_TYPE_TRACK || req.writeKey != "k" {
		t.Errorf("got %+v, want the route's type to win", req.calls[0])
	}
	if _, err := decodeSingle([]byte(`{"userId":"u"}`), eventv1.EventType_EVENT_TYPE_TRACK); err == nil || err.Error() != "event: required for track" {
		t.Errorf("track without event: err = %v", err)
	}
	if _, err := decodeSingle([]byte(strings.Repeat(" ", MaxEventBytes+1)), eventv1.EventType_EVENT_TYPE_TRACK); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized single: err = %v, want ErrTooLarge", err)
	}
}

// FuzzDecodeBatch checks that no input panics the decoder and that whatever
// it accepts holds only valid calls that make valid events.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"batch":[{"type":"track","userId":"u","event":"e","properties":{"a":1}}]}`))
	f.Add([]byte(`{"context":{"ip":"1"},"batch":[{"type":"identify","anonymousId":7,"traits":{},"context":{"x":[]}}],"sentAt":"2024-01-01T00:00:00.123Z"}`))
	f.Add([]byte(`{"batch":[{"type":"alias","userId":"u","previousId":"p"},{"type":"page","userId":"u","name":"n"}]}`))
	f.Add([]byte(`{"batch":[{"type":"track","userId":"\u00e9\ud83d\ude00","event":"e","timestamp":"2024-01-01T00:00:00+02:00"}]}`))
	f.Add([]byte(`{"batch":[1,2]}`))
	f.Add([]byte(`{"batch":[{"type":"track","userId":-1.5e3,"messageId":"m\"1\n","anonymousId":null,"event":"a\/b\\c\t"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeBatch(body)
		if err != nil {
			return
		}
		// The items' strings, some sliced out of the body, are what the
		// reflection decoder of single calls reads, escapes and numbers
		// included. (A member name spelled with \u escapes is matched by
		// that decoder but not by decodeBatch, so such bodies are left out.)
		var ref struct {
			Batch []segmentJSON `json:"batch"`
		}
		if !bytes.Contains(body, []byte(`\u`)) && jsonv2.Unmarshal(body, &ref) == nil && len(ref.Batch) == len(req.calls) {
			for i, w := range ref.Batch {
				c := req.calls[i]
				got := []string{c.messageID, c.userID, c.anonymousID, c.event, c.name, c.category, c.groupID, c.previousID}
				want := []string{string(w.MessageID), string(w.UserID), string(w.AnonymousID), string(w.Event), string(w.Name), string(w.Category), string(w.GroupID), string(w.PreviousID)}
				if !slices.Equal(got, want) {
					t.Fatalf("call %d strings %q, the reflection decoder reads %q", i, got, want)
				}
			}
		}
		now := time.Now()
		for i := range req.calls {
			c := &req.calls[i]
			if err := c.validate(itemRef{}); err != nil {
				t.Fatalf("accepted call %d fails validation: %v", i, err)
			}
			ev, err := req.toEvent(c, "ws", now, "id")
			if err != nil {
				t.Fatalf("accepted call %d: toEvent: %v", i, err)
			}
			for _, obj := range [][]byte{ev.GetProperties(), ev.GetTraits(), ev.GetContext(), ev.GetIntegrations()} {
				if len(obj) > 0 && !json.Valid(obj) {
					t.Fatalf("accepted call %d carries invalid JSON %q", i, obj)
				}
			}
		}
	})
}

// The records of a request share their buffers; when batch-level context
// copied into every item outgrows the first guess, the buffers move, and
// every record must still hold its own event and key.
func TestRecordsKeepTheirOwnBytes(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"context":{"pad":"` + strings.Repeat("x", 2000) + `"},"batch":[`)
	const n = 50
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"track","event":"e%d","userId":"user-%d","messageId":"m%d"}`, i, i, i)
	}
	b.WriteString(`]}`)
	req, err := decodeBatch([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	skip := make([]bool, n)
	for i := range ids {
		ids[i] = req.calls[i].messageID
	}
	skip[7] = true
	recs, callOf, err := req.records("ws", time.Now(), ids, skip)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != n-1 {
		t.Fatalf("%d records, want %d (one skipped)", len(recs), n-1)
	}
	for j, r := range recs {
		i := callOf[j]
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatalf("record %d: %v", j, err)
		}
		if ev.GetMessageId() != ids[i] || ev.GetUserId() != fmt.Sprintf("user-%d", i) || len(ev.GetContext()) < 2000 {
			t.Errorf("record %d (call %d) holds %q of %q with %d bytes of context", j, i, ev.GetMessageId(), ev.GetUserId(), len(ev.GetContext()))
		}
		if got, want := string(r.Key), fmt.Sprintf("ws/user-%d", i); got != want {
			t.Errorf("record %d key = %q, want %q", j, got, want)
		}
	}
}
