// Package loadgen drives the ingestion load benchmark: it pre-renders
// realistic Segment batches once, sends them over many connections with a
// unique message id patched into every event, and measures what the server
// accepted and how fast it answered. It also measures the raw ceiling: how
// fast the same records go straight into the broker, so the ingest number can
// be read against what the broker and machine allow at all.
//
// The other benchmarks pace their requests open loop at a fixed rate
// (paceOpenLoop): RunFreshness (ingest ack to GetProfile), RunDelivery
// (event to signed webhook) and RunDecide (the Decide RPC, over one h2c
// connection).
//
// The generator shares the machine with the server it measures, so it does
// as little as possible per request: no JSON encoding, no allocation of
// bodies, latencies into a fixed-size histogram.
package loadgen

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"time"
)

// idDigits is the width of the counter part of a message id, in hex digits.
const idDigits = 16

// Bodies are pre-rendered Segment batch bodies (POST /v1/batch). Rendering
// one copies a template and writes a run-unique id into each event's
// messageId, so the server's dedup window never drops an event.
type Bodies struct {
	prefix    string // run prefix of every message id, "<hex>-"
	batchSize int
	templates [][]byte
	idOffsets [][]int // idOffsets[t][i]: where event i's counter digits start in templates[t]
	events    [][]Event
	maxLen    int
	sentAt    time.Time
}

// Event is one track call of a template, for building the same record the
// ingest service would produce from it.
type Event struct {
	UserID     string
	Name       string
	Properties json.RawMessage
	Context    json.RawMessage
	Timestamp  time.Time
}

// BodiesOptions shape the templates.
type BodiesOptions struct {
	// Templates is how many distinct batches to pre-render; 256 when zero.
	Templates int
	// BatchSize is the number of events per batch; 100 when zero.
	BatchSize int
	// Users is how many distinct user ids events spread over (they key
	// the records, hence the partitions); 50,000 when zero.
	Users int
	// Seed makes the templates reproducible; the message-id prefix is
	// random whatever the seed, so runs never collide in the dedup window.
	Seed uint64
	// Now is the clock for sentAt and timestamps; time.Now when nil.
	Now func() time.Time
}

var (
	eventNames = []string{
		"Product Viewed", "Product Added", "Product Removed", "Cart Viewed", "Checkout Started",
		"Order Completed", "Coupon Applied", "Products Searched", "Signed Up", "Video Playback Started",
	}
	categories = []string{"Games", "Books", "Electronics", "Garden", "Toys", "Apparel", "Grocery", "Beauty"}
)

// wireEvent is the JSON of one batch item; field order is the wire order.
type wireEvent struct {
	Type       string          `json:"type"`
	MessageID  string          `json:"messageId"`
	UserID     string          `json:"userId"`
	Event      string          `json:"event"`
	Properties json.RawMessage `json:"properties"`
	Context    json.RawMessage `json:"context"`
	Timestamp  string          `json:"timestamp"`
}

// NewBodies renders the templates.
func NewBodies(o BodiesOptions) (*Bodies, error) {
	if o.Templates == 0 {
		o.Templates = 256
	}
	if o.BatchSize == 0 {
		o.BatchSize = 100
	}
	if o.Users == 0 {
		o.Users = 50_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Templates < 1 || o.BatchSize < 1 || o.Users < 1 {
		return nil, errors.New("loadgen: templates, batch size and users must be positive")
	}
	var p [6]byte
	if _, err := rand.Read(p[:]); err != nil {
		return nil, fmt.Errorf("loadgen: message-id prefix: %w", err)
	}
	b := &Bodies{
		prefix:    "lg" + hex.EncodeToString(p[:]) + "-",
		batchSize: o.BatchSize,
		sentAt:    o.Now().UTC().Truncate(time.Millisecond),
	}
	rng := mathrand.New(mathrand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	placeholder := b.prefix + string(bytes.Repeat([]byte{'0'}, idDigits))
	idKey := []byte(`"messageId":"`)
	for range o.Templates {
		var body bytes.Buffer
		body.WriteString(`{"batch":[`)
		offs := make([]int, 0, o.BatchSize)
		evs := make([]Event, 0, o.BatchSize)
		for i := range o.BatchSize {
			ev := randomEvent(rng, o.Users, b.sentAt)
			js, err := json.Marshal(wireEvent{
				Type: "track", MessageID: placeholder, UserID: ev.UserID, Event: ev.Name,
				Properties: ev.Properties, Context: ev.Context, Timestamp: ev.Timestamp.Format(time.RFC3339Nano),
			})
			if err != nil {
				return nil, fmt.Errorf("loadgen: render event: %w", err)
			}
			if i > 0 {
				body.WriteByte(',')
			}
			offs = append(offs, body.Len()+bytes.Index(js, idKey)+len(idKey)+len(b.prefix))
			body.Write(js)
			evs = append(evs, ev)
		}
		fmt.Fprintf(&body, `],"sentAt":%q}`, b.sentAt.Format(time.RFC3339Nano))
		b.templates = append(b.templates, body.Bytes())
		b.idOffsets = append(b.idOffsets, offs)
		b.events = append(b.events, evs)
		b.maxLen = max(b.maxLen, body.Len())
	}
	return b, nil
}

func randomEvent(rng *mathrand.Rand, users int, sentAt time.Time) Event {
	name := eventNames[rng.IntN(len(eventNames))]
	sku := fmt.Sprintf("sku-%05d", rng.IntN(100_000))
	props := fmt.Sprintf(`{"product_id":%q,"category":%q,"price":%d.%02d}`,
		sku, categories[rng.IntN(len(categories))], 1+rng.IntN(300), rng.IntN(100))
	ctx := fmt.Sprintf(`{"ip":"10.%d.%d.%d","library":{"name":"analytics.js","version":"5.2.1"}}`,
		rng.IntN(256), rng.IntN(256), rng.IntN(256))
	return Event{
		UserID:     fmt.Sprintf("user-%07d", rng.IntN(users)),
		Name:       name,
		Properties: json.RawMessage(props),
		Context:    json.RawMessage(ctx),
		Timestamp:  sentAt.Add(-time.Duration(rng.IntN(5000)) * time.Millisecond),
	}
}

// BatchSize is the number of events in every body.
func (b *Bodies) BatchSize() int { return b.batchSize }

// MaxLen is the size of the largest body: a buffer of this capacity makes
// Render allocation-free.
func (b *Bodies) MaxLen() int { return b.maxLen }

// Templates is the number of distinct templates.
func (b *Bodies) Templates() int { return len(b.templates) }

// AvgEventBytes is the mean size of one event's JSON in the templates,
// batch framing included.
func (b *Bodies) AvgEventBytes() float64 {
	n := 0
	for _, t := range b.templates {
		n += len(t)
	}
	return float64(n) / float64(len(b.templates)*b.batchSize)
}

// SentAt is the sentAt of every batch.
func (b *Bodies) SentAt() time.Time { return b.sentAt }

// Render writes body number seq into dst (reusing its capacity) and returns
// it. Event i of body seq carries the message id MessageID(seq*BatchSize+i),
// so distinct seqs never share an id.
func (b *Bodies) Render(dst []byte, seq uint64) []byte {
	t := seq % uint64(len(b.templates))
	dst = append(dst[:0], b.templates[t]...)
	first := seq * uint64(b.batchSize)
	for i, off := range b.idOffsets[t] {
		putHex(dst[off:off+idDigits], first+uint64(i))
	}
	return dst
}

// Event returns event i of the template body seq renders from, and its
// message id in that body.
func (b *Bodies) Event(seq uint64, i int) (Event, string) {
	return b.events[seq%uint64(len(b.templates))][i], b.MessageID(seq*uint64(b.batchSize) + uint64(i))
}

// MessageID is the id of the n-th event of the run.
func (b *Bodies) MessageID(n uint64) string {
	var d [idDigits]byte
	putHex(d[:], n)
	return b.prefix + string(d[:])
}

const hexDigits = "0123456789abcdef"

// putHex writes n as len(dst) hex digits, zero-padded.
func putHex(dst []byte, n uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = hexDigits[n&0xf]
		n >>= 4
	}
}
