package ingest_test

import (
	"fmt"
	"strings"
	"testing"
)

// BenchmarkBatchRequest sends 100-event Segment batches one at a time over
// a real listener, each event a new message id, into kfake with real
// Redis: the latency of one request through every stage (read, decode,
// claim, dedup check, build, produce, answer) on an otherwise idle process.
func BenchmarkBatchRequest(b *testing.B) {
	s := newStack(b)
	var body strings.Builder
	n := 0
	for b.Loop() {
		body.Reset()
		body.WriteString(`{"sentAt":"2024-05-01T12:00:01.000Z","batch":[`)
		for i := range 100 {
			if i > 0 {
				body.WriteByte(',')
			}
			n++
			fmt.Fprintf(&body, `{"type":"track","messageId":"req-%09d","userId":"user-%05d","event":"Product Viewed",`+
				`"properties":{"product_id":"sku-%d","price":19.99,"currency":"EUR","category":"shoes"},`+
				`"context":{"library":{"name":"analytics-node","version":"2.1.0"},"ip":"10.0.0.1"},`+
				`"timestamp":"2024-05-01T12:00:00.000Z"}`, n, n%1000, n)
		}
		body.WriteString(`]}`)
		if code, res := s.post(b, "/v1/batch", body.String(), nil); code != 200 {
			b.Fatalf("%d %s", code, res)
		}
	}
}
