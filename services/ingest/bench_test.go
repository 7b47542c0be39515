package ingest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchBatch is a Segment batch of n track events of about 300 bytes each,
// as analytics-node sends them.
func benchBatch(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"sentAt":"2024-05-01T12:00:01.000Z","batch":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"track","messageId":"bench-%08d","userId":"user-%05d","event":"Product Viewed",`+
			`"properties":{"product_id":"sku-%d","price":19.99,"currency":"EUR","category":"shoes"},`+
			`"context":{"library":{"name":"analytics-node","version":"2.1.0"},"ip":"10.0.0.1"},`+
			`"timestamp":"2024-05-01T12:00:00.000Z"}`, i, i%1000, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkDecodeBatch measures decoding and validating a 100-event batch
// and building its record values: the CPU ingestion spends per request
// before the producer.
func BenchmarkDecodeBatch(b *testing.B) {
	body := benchBatch(100)
	now := time.Now()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	ids := make([]string, 100)
	skip := make([]bool, 100)
	for b.Loop() {
		req, err := decodeBatch(body)
		if err != nil {
			b.Fatal(err)
		}
		for i := range req.calls {
			ids[i] = req.calls[i].messageID
		}
		if _, _, err := req.records("ws", now, ids, skip); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "events/s")
}
