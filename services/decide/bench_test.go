package decide

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/whisperhq/whisper/internal/auth"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/rpctest"
)

// BenchmarkDecide measures one decision end to end in process: claim,
// audience, consent, variant, contact policy, the decision row and its
// record on whisper.decisions, one user per decision.
func BenchmarkDecide(b *testing.B) {
	h := newHarness(b)
	h.arms.SetStaleness(time.Second) // as targets runs it
	c := emailCampaign("unused")
	c.Audience = `profile.engagement_score < 90`
	c = h.create(b, tokenA, c)
	ctx := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: h.wsA})
	b.ResetTimer()
	start := time.Now()
	i := 0
	for b.Loop() {
		i++
		if _, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(i)/time.Since(start).Seconds(), "decisions/s")
}

// BenchmarkDecideParallel is BenchmarkDecide from concurrent callers, as
// the Decide RPC is used.
func BenchmarkDecideParallel(b *testing.B) {
	h := newHarness(b)
	h.arms.SetStaleness(time.Second) // as targets runs it
	c := h.create(b, tokenA, emailCampaign("unused"))
	ctx := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: h.wsA})
	var seq atomic.Int64
	b.SetParallelism(8)
	start := time.Now()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			if _, err := h.svc.decideNow(ctx, h.wsA, c.GetId(), fmt.Sprintf("u%d", i), fmt.Sprintf("r%d", i), nil); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(seq.Load())/time.Since(start).Seconds(), "decisions/s")
}

// BenchmarkConsumerThroughput pushes events through the consumer: a fifth
// trigger an active campaign (a decision each), the rest are other events
// (activity only). It reports events/s and decisions/s from the first
// record to the last decision row.
func BenchmarkConsumerThroughput(b *testing.B) {
	const (
		events = 10_000
		users  = 1_000
	)
	for range b.N {
		h := newHarness(b)
		h.arms.SetStaleness(time.Second) // as targets runs it
		c := h.create(b, tokenA, emailCampaign("Cart Abandoned"))
		var recs []*kgo.Record
		for i := range events {
			u := fmt.Sprintf("u%d", i%users)
			name := "Viewed"
			if i%5 == 0 {
				name = "Cart Abandoned"
			}
			v, err := proto.Marshal(track(h.wsA, fmt.Sprintf("m%d", i), u, name, t0, `{"total": 10}`))
			if err != nil {
				b.Fatal(err)
			}
			recs = append(recs, &kgo.Record{Topic: kafka.TopicEvents, Key: kafka.Key(h.wsA, u), Value: v})
		}
		if err := h.producer.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start, cpuStart := time.Now(), processCPU(b)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.svc.Run(ctx) }()
		for {
			var n int
			if err := h.store.pool.QueryRow(ctx, `SELECT count(*) FROM decisions WHERE campaign_id = $1 AND published_at IS NOT NULL`, c.GetId()).Scan(&n); err != nil {
				b.Fatal(err)
			}
			if n == events/5 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		elapsed, cpu := time.Since(start), processCPU(b)-cpuStart
		b.StopTimer()
		cancel()
		<-done
		b.ReportMetric(events/elapsed.Seconds(), "events/s")
		b.ReportMetric(events/5/elapsed.Seconds(), "decisions/s")
		// The process's CPU time (the consumer, and the in-process kfake
		// broker it fetches from and produces to; PostgreSQL and Redis are
		// other processes) per decision: what "per core" is about.
		b.ReportMetric(float64(cpu.Microseconds())/(events/5), "cpu-µs/decision")
	}
}

// BenchmarkDecideRPCLatency calls Decide over Connect (binary protobuf over
// one h2c connection) at a fixed rate for five seconds, one new user per call,
// and reports the latency percentiles and the rate achieved.
func BenchmarkDecideRPCLatency(b *testing.B) {
	const (
		rate     = 1000
		duration = 5 * time.Second
	)
	h := newHarness(b)
	h.arms.SetStaleness(time.Second) // as targets runs it
	c := h.create(b, tokenA, emailCampaign("unused"))
	// One HTTP/2 connection multiplexing every call, as gRPC and Connect
	// callers use: over HTTP/1.1 the transport keeps two idle connections
	// per host, so concurrent calls open and close one each.
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	client := decisionv1connect.NewDecisionServiceClient(&http.Client{Transport: &http.Transport{Protocols: protocols}}, h.url, rpctest.Bearer(tokenA))
	for range b.N {
		var (
			mu        sync.Mutex
			latencies []time.Duration
			failures  atomic.Int64
			wg        sync.WaitGroup
		)
		// Calls are started at their scheduled times, late ones at once: a
		// time.Ticker drops the ticks of a busy receiver, which on a loaded
		// machine offered well under rate.
		start := time.Now()
		offered := 0
		for i := 0; ; i++ {
			at := start.Add(time.Duration(i) * time.Second / rate)
			if at.Sub(start) >= duration {
				break
			}
			if d := time.Until(at); d > 0 {
				time.Sleep(d)
			}
			offered++
			wg.Go(func() {
				t0 := time.Now()
				_, err := client.Decide(context.Background(), &decisionv1.DecideRequest{
					CampaignId: c.GetId(), UserId: fmt.Sprintf("u%d", i), RequestId: fmt.Sprint(i),
				})
				d := time.Since(t0)
				if err != nil {
					failures.Add(1)
					return
				}
				mu.Lock()
				latencies = append(latencies, d)
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		slices.Sort(latencies)
		pct := func(p float64) float64 {
			if len(latencies) == 0 {
				return 0
			}
			return float64(latencies[int(p*float64(len(latencies)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(float64(offered)/duration.Seconds(), "offered-req/s")
		b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), "req/s")
		b.ReportMetric(pct(0.5), "p50-ms")
		b.ReportMetric(pct(0.99), "p99-ms")
		b.ReportMetric(float64(failures.Load()), "failures")
	}
}

// processCPU is the user and system CPU time the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
