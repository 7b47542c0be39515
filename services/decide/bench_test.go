package decide

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"

	"github.com/whisperhq/whisper/internal/auth"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/proccpu"
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
// (activity only). It reports the steady state: events/s, decisions/s and
// CPU per decision are measured from the tenth of the decisions made (the
// consumer group joined, the connections open, the caches warm) to the
// last, counted by the service's decisions metric.
func BenchmarkConsumerThroughput(b *testing.B) {
	const (
		events = 50_000
		users  = 5_000
		want   = events / 5
		from   = want / 10
	)
	for range b.N {
		b.StopTimer()
		h := newHarness(b)
		h.arms.SetStaleness(time.Second) // as targets runs it
		h.create(b, tokenA, emailCampaign("Cart Abandoned"))
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
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- h.svc.Run(ctx) }()
		// Polled in process: a count(*) in PostgreSQL every few
		// milliseconds would be part of the CPU measured there.
		var (
			start    time.Time
			cpuStart time.Duration
			pgStart  map[int]time.Duration
			first    int // decisions made when measuring started
		)
		for n := 0; n < want; n = decisionsMade(b, h.reg) {
			if start.IsZero() && n >= from {
				b.StartTimer()
				start, cpuStart = time.Now(), processCPU(b)
				pgStart = postgresCPU(b, h.store)
				first = decisionsMade(b, h.reg)
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed, cpu := time.Since(start), processCPU(b)-cpuStart
		pgCPU, pgOK := postgresCPUSince(b, h.store, pgStart)
		b.StopTimer()
		cancel()
		<-done
		made := float64(want - first)
		b.ReportMetric(made*5/elapsed.Seconds(), "events/s")
		b.ReportMetric(made/elapsed.Seconds(), "decisions/s")
		// The process's CPU time (the consumer, and the in-process kfake
		// broker it fetches from and produces to; PostgreSQL and Redis are
		// other processes) per decision: what "per core" is about.
		b.ReportMetric(float64(cpu.Microseconds())/made, "cpu-µs/decision")
		if pgOK {
			// The CPU of this database's PostgreSQL backends (not of the
			// shared WAL writer and checkpointer) per decision.
			b.ReportMetric(float64(pgCPU.Microseconds())/made, "pg-cpu-µs/decision")
		}
	}
}

// decisionsMade sums the service's whisper_decide_decisions_total.
func decisionsMade(b *testing.B, reg *prometheus.Registry) int {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() != "whisper_decide_decisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return int(n)
}

// postgresCPU reads the user and system CPU time of each backend serving
// the store's database, by process id, from /proc: nil when PostgreSQL is
// not local (or /proc is not there), and the metric is left out.
func postgresCPU(b *testing.B, s *Store) map[int]time.Duration {
	rows, err := s.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		b.Fatal(err)
	}
	out := map[int]time.Duration{}
	for _, pid := range pids {
		cpu, ok := proccpu.Of(int(pid))
		if !ok {
			return nil // another machine's PostgreSQL, or a backend gone
		}
		out[int(pid)] = cpu
	}
	return out
}

// postgresCPUSince is the CPU the store's backends used since start
// (postgresCPU's), backends opened since counted whole; false when either
// reading failed.
func postgresCPUSince(b *testing.B, s *Store, start map[int]time.Duration) (time.Duration, bool) {
	end := postgresCPU(b, s)
	if start == nil || end == nil {
		return 0, false
	}
	var d time.Duration
	for pid, t := range end {
		d += t - start[pid]
	}
	return d, true
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
		start, pgStart := time.Now(), postgresCPU(b, h.store)
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
		pgCPU, pgOK := postgresCPUSince(b, h.store, pgStart)
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
		if pgOK && len(latencies) > 0 {
			b.ReportMetric(float64(pgCPU.Microseconds())/float64(len(latencies)), "pg-cpu-µs/decision")
		}
	}
}

// processCPU is the user and system CPU time the test process has used.
func processCPU(b *testing.B) time.Duration {
	cpu, err := proccpu.Self()
	if err != nil {
		b.Fatal(err)
	}
	return cpu
}
