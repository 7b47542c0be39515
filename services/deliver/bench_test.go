package deliver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/services/deliver/channel"
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

// BenchmarkDeliverWebhookHTTP is BenchmarkDeliverWebhook through the real
// webhook adapter (HMAC signature, dial-time SSRF check) to a local HTTP
// receiver.
//
//	go test -run '^$' -bench DeliverWebhookHTTP -benchtime=5000x ./services/deliver/
func BenchmarkDeliverWebhookHTTP(b *testing.B) {
	h := newHarness(b)
	var received atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		received.Add(1)
	}))
	b.Cleanup(srv.Close)
	hook, err := channel.NewWebhook(channel.WebhookConfig{Secret: []byte("s"), AllowPrivate: true})
	if err != nil {
		b.Fatal(err)
	}
	h.opts.Senders[campaignv1.Channel_CHANNEL_WEBHOOK] = hook
	h.opts.Profiles = urlProfiles{srv.URL}
	now := time.Now()
	ds := make([]*decisionv1.Decision, b.N)
	for i := range ds {
		ds[i] = h.decision(fmt.Sprintf("u%d", i%500), campaignv1.Channel_CHANNEL_WEBHOOK, "hook", now)
	}
	b.ResetTimer()
	start := time.Now()
	h.produce(b, ds...)
	h.start(b)
	for received.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
	time.Sleep(100 * time.Millisecond)
	if n := received.Load(); n != int64(b.N) {
		b.Errorf("received %d, want %d", n, b.N)
	}
}

// urlProfiles gives every user the webhook URL u.
type urlProfiles struct{ u string }

func (p urlProfiles) Profile(_ context.Context, _, user string) (*profilev1.Profile, error) {
	traits, _ := structpb.NewStruct(map[string]any{"hook": p.u + "/" + user})
	return &profilev1.Profile{UserId: user, Traits: traits}, nil
}

// BenchmarkDeliverBacklog measures how fast a backlog already in the ledger
// (a campaign scheduled for one moment, or a restart after an outage)
// drains: the claim loop, not the consumer, sets the pace.
//
//	go test -run '^$' -bench DeliverBacklog -benchtime=5000x ./services/deliver/
func BenchmarkDeliverBacklog(b *testing.B) {
	h := newHarness(b)
	at := time.Now().Add(3 * time.Second)
	ds := make([]*decisionv1.Decision, b.N)
	for i := range ds {
		ds[i] = h.decision(fmt.Sprintf("u%d", i%500), campaignv1.Channel_CHANNEL_WEBHOOK, "hook", at)
	}
	h.produce(b, ds...)
	h.start(b)
	for { // every row recorded and waiting for its time
		var n int
		if err := h.pool.QueryRow(context.Background(), `SELECT count(*) FROM deliver_deliveries`).Scan(&n); err != nil {
			b.Fatal(err)
		}
		if n == b.N {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Until(at))
	b.ResetTimer()
	start := time.Now()
	hook := h.senders[campaignv1.Channel_CHANNEL_WEBHOOK]
	for {
		if ids, _, _ := hook.count(); ids >= b.N {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
}
