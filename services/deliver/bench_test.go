package deliver

import (
	"context"
	"fmt"
	"testing"
	"time"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
)

// BenchmarkDeliverWebhook measures deliveries per second from decisions on
// whisper.decisions to an in-process webhook sender: the ledger insert, the
// claim, render (fake), send, and the outcome's record and event.
//
//	go test -run '^$' -bench DeliverWebhook -benchtime=5000x ./services/deliver/
func BenchmarkDeliverWebhook(b *testing.B) {
	h := newHarness(b)
	h.opts.Concurrency = 64
	now := time.Now()
	ds := make([]*decisionv1.Decision, b.N)
	for i := range ds {
		ds[i] = h.decision(fmt.Sprintf("u%d", i%500), campaignv1.Channel_CHANNEL_WEBHOOK, "hook", now)
	}
	hook := h.senders[campaignv1.Channel_CHANNEL_WEBHOOK]
	b.ResetTimer()
	start := time.Now()
	h.produce(b, ds...)
	h.start(b)
	for {
		if ids, _, _ := hook.count(); ids >= b.N {
			break
		}
		time.Sleep(time.Millisecond)
	}
	// Every outcome recorded, too.
	for {
		var pending int
		if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM deliver_deliveries WHERE state <> 'sent'`).Scan(&pending); err != nil {
			b.Fatal(err)
		}
		if pending == 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
