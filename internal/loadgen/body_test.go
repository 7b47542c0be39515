package loadgen

import (
	"encoding/json"
	"testing"
	"time"
)

type batchJSON struct {
	Batch []struct {
		Type       string          `json:"type"`
		MessageID  string          `json:"messageId"`
		UserID     string          `json:"userId"`
		Event      string          `json:"event"`
		Properties json.RawMessage `json:"properties"`
		Context    json.RawMessage `json:"context"`
		Timestamp  time.Time       `json:"timestamp"`
	} `json:"batch"`
	SentAt time.Time `json:"sentAt"`
}

func TestBodies(t *testing.T) {
	tests := []struct {
		name      string
		opts      BodiesOptions
		renders   uint64 // bodies rendered, seq 0..renders-1
		wantBatch int
	}{
		{"defaults", BodiesOptions{}, 600, 100},
		{"one template reused", BodiesOptions{Templates: 1}, 300, 100},
		{"small batches", BodiesOptions{Templates: 3, BatchSize: 7}, 50, 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBodies(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := b.BatchSize(); got != tt.wantBatch {
				t.Errorf("BatchSize() = %d, want %d", got, tt.wantBatch)
			}
			ids := map[string]uint64{}
			buf := make([]byte, 0, b.MaxLen())
			for seq := range tt.renders {
				buf = b.Render(buf, seq)
				var got batchJSON
				if err := json.Unmarshal(buf, &got); err != nil {
					t.Fatalf("body %d is not valid JSON: %v\n%s", seq, err, buf)
				}
				if len(got.Batch) != tt.wantBatch {
					t.Fatalf("body %d has %d events, want %d", seq, len(got.Batch), tt.wantBatch)
				}
				if got.SentAt.IsZero() {
					t.Errorf("body %d has no sentAt", seq)
				}
				for i, ev := range got.Batch {
					if prev, dup := ids[ev.MessageID]; dup {
						t.Fatalf("body %d event %d repeats messageId %q of body %d", seq, i, ev.MessageID, prev)
					}
					ids[ev.MessageID] = seq
					if want := b.MessageID(seq*uint64(tt.wantBatch) + uint64(i)); ev.MessageID != want {
						t.Errorf("body %d event %d: messageId %q, want %q", seq, i, ev.MessageID, want)
					}
					tmpl, id := b.Event(seq, i)
					if id != ev.MessageID || tmpl.UserID != ev.UserID || tmpl.Name != ev.Event || !tmpl.Timestamp.Equal(ev.Timestamp) {
						t.Errorf("body %d event %d: Event() = %+v %q, body has %q %q %q %v", seq, i, tmpl, id, ev.MessageID, ev.UserID, ev.Event, ev.Timestamp)
					}
					if ev.Type != "track" || ev.UserID == "" || ev.Event == "" || len(ev.Properties) == 0 || len(ev.Context) == 0 {
						t.Errorf("body %d event %d is not a full track call: %+v", seq, i, ev)
					}
				}
			}
			if want := int(tt.renders) * tt.wantBatch; len(ids) != want {
				t.Errorf("%d distinct messageIds, want %d", len(ids), want)
			}
			if got := b.AvgEventBytes(); got < 270 || got > 330 {
				t.Errorf("AvgEventBytes() = %.0f, want about 300", got)
			}
		})
	}
}

func TestBodiesRunsDoNotShareIDs(t *testing.T) {
	a, err := NewBodies(BodiesOptions{Templates: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBodies(BodiesOptions{Templates: 1})
	if err != nil {
		t.Fatal(err)
	}
	if a.MessageID(0) == b.MessageID(0) {
		t.Errorf("two runs both start at messageId %q: the second would be deduplicated away", a.MessageID(0))
	}
}

func TestRenderDoesNotAllocate(t *testing.T) {
	b, err := NewBodies(BodiesOptions{Templates: 4})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, b.MaxLen())
	var seq uint64
	if n := testing.AllocsPerRun(100, func() { buf = b.Render(buf, seq); seq++ }); n != 0 {
		t.Errorf("Render allocates %v times per body, want 0", n)
	}
}

func TestPutHex(t *testing.T) {
	tests := []struct {
		n     uint64
		width int
		want  string
	}{
		{0, 4, "0000"},
		{0xbeef, 4, "beef"},
		{0x1beef, 4, "beef"},
		{1<<64 - 1, 16, "ffffffffffffffff"},
		{255, 16, "00000000000000ff"},
	}
	for _, tt := range tests {
		dst := make([]byte, tt.width)
		putHex(dst, tt.n)
		if string(dst) != tt.want {
			t.Errorf("putHex(%#x, width %d) = %q, want %q", tt.n, tt.width, dst, tt.want)
		}
	}
}
