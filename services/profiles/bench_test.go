package profiles_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/services/profiles"
)

var (
	benchEvents = flag.Int("profiles.events", 200_000, "events pre-produced for BenchmarkConsumerThroughput")
	benchUsers  = flag.Int("profiles.users", 10_000, "distinct users of BenchmarkConsumerThroughput")
)

// benchNames are the track event names of the mix, most frequent first.
var benchNames = []string{"Product Viewed", "Product Added", "Cart Viewed", "Checkout Started", "Order Completed"}

// benchMix is the pre-produced workload: 90% tracks, 10% identifies with
// traits, over a fixed set of users, and what the profiles must end up
// holding.
type benchMix struct {
	ws      string
	records []*kgo.Record
	counts  map[string]int64 // track name -> events
	users   map[string]bool
}

func newBenchMix(n, users int) benchMix {
	rng := rand.New(rand.NewPCG(1, 2))
	m := benchMix{ws: uuid.NewString(), counts: map[string]int64{}, users: map[string]bool{}}
	base := time.Now().Add(-time.Hour).UTC()
	for i := range n {
		user := fmt.Sprintf("user-%06d", rng.IntN(users))
		at := base.Add(time.Duration(i) * time.Millisecond)
		ev := &eventv1.Event{
			MessageId:   fmt.Sprintf("bench-%09d", i),
			WorkspaceId: m.ws,
			UserId:      user,
			Timestamp:   timestamppb.New(at),
			ReceivedAt:  timestamppb.New(at),
			Context:     []byte(`{"ip":"10.1.2.3","library":{"name":"analytics.js","version":"5.2.1"}}`),
		}
		if rng.IntN(10) == 0 {
			ev.Type = eventv1.EventType_EVENT_TYPE_IDENTIFY
			ev.Traits = fmt.Appendf(nil, `{"plan":%q,"logins":%d,"email":"%s@example.com"}`,
				[]string{"free", "pro", "team"}[rng.IntN(3)], rng.IntN(1000), user)
		} else {
			// Skewed towards the first names, as real traffic is.
			name := benchNames[min(rng.IntN(len(benchNames)), rng.IntN(len(benchNames)))]
			ev.Type = eventv1.EventType_EVENT_TYPE_TRACK
			ev.Event = name
			ev.Properties = fmt.Appendf(nil, `{"product_id":"sku-%05d","price":%d.99}`, rng.IntN(100_000), rng.IntN(300))
			m.counts[name]++
		}
		v, err := proto.Marshal(ev)
		if err != nil {
			panic(err)
		}
		m.users[user] = true
		m.records = append(m.records, &kgo.Record{Topic: kafka.TopicEvents, Key: kafka.Key(m.ws, user), Value: v})
	}
	return m
}

// BenchmarkConsumerThroughput times the profiles consumer, built as
// targets.Run builds it, from its start until every one of the
// pre-produced events is applied in PostgreSQL and its offset committed.
// Run it with -benchtime=1x; -profiles.events sets the size.
//
// It measures the whole path: the PostgreSQL transaction, the Redis mirror
// (WHISPER_TEST_REDIS_URL) and the outbox relay running beside them.
func BenchmarkConsumerThroughput(b *testing.B) {
	n := *benchEvents
	mix := newBenchMix(n, *benchUsers)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rdb := redistest.New(b)
	for b.Loop() {
		b.StopTimer()
		ctx, cancel := context.WithCancel(context.Background())
		_, brokers := kafkatest.NewCluster(b, kfake.SeedTopics(12, kafka.TopicEvents, kafka.TopicEventsDLQ, kafka.TopicProfiles))
		// Tuned as the profiles target tunes its pool.
		poolCfg, err := pgxpool.ParseConfig(pgtest.NewDatabase(b))
		if err != nil {
			b.Fatal(err)
		}
		profiles.TunePool(poolCfg)
		pool, err := pgxpool.NewWithConfig(ctx, poolCfg)
		if err != nil {
			b.Fatal(err)
		}
		if err := postgres.Migrate(ctx, pool, profiles.Migrations, logger); err != nil {
			b.Fatal(err)
		}
		produceAll(b, brokers, mix.records)

		kcfg := kafka.Config{Brokers: brokers, Partitions: 12, ReplicationFactor: -1, MaxBufferedBytes: 64 << 20, Linger: 2 * time.Millisecond}
		consumer, err := kafka.NewClient(kcfg, "profiles", prometheus.NewRegistry(), profiles.ConsumerOpts(profiles.DefaultGroup)...)
		if err != nil {
			b.Fatal(err)
		}
		if err := kafka.EnsureTopics(ctx, consumer, kcfg, kafka.TopicEvents, kafka.TopicEventsDLQ, kafka.TopicProfiles); err != nil {
			b.Fatal(err)
		}
		svc := profiles.New(profiles.Options{Store: profiles.NewStore(pool), Client: consumer, Redis: rdb, Registerer: prometheus.NewRegistry(), Logger: logger})
		adm, closeAdm := newAdmin(b, brokers)

		b.StartTimer()
		start := time.Now()
		done := make(chan error, 1)
		go func() { done <- svc.Run(ctx) }()
		committed := waitCommitted(b, ctx, adm, int64(n), done)
		elapsed := time.Since(start)
		b.StopTimer()

		cancel()
		if err := <-done; err != nil {
			b.Errorf("consumer: %v", err)
		}
		consumer.Close()
		closeAdm()
		b.ReportMetric(float64(n)/elapsed.Seconds(), "events/s")
		b.ReportMetric(float64(elapsed.Milliseconds()), "ms/run")
		b.Logf("%d events (%d users, %d track names) applied and committed in %v: %.0f events/s", committed, len(mix.users), len(mix.counts), elapsed, float64(n)/elapsed.Seconds())
		checkBenchState(b, pool, mix, n)
		logTableStats(b, pool)
		pool.Close()
		b.StartTimer()
	}
}

func produceAll(b *testing.B, brokers []string, recs []*kgo.Record) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(5*time.Millisecond),
		kgo.MaxBufferedRecords(len(recs)+1), kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	errs := make(chan error, 1)
	for _, r := range recs {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	select {
	case err := <-errs:
		b.Fatalf("pre-produce: %v", err)
	default:
	}
}

func newAdmin(b *testing.B, brokers []string) (*kadm.Client, func()) {
	b.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		b.Fatal(err)
	}
	return kadm.NewClient(cl), cl.Close
}

// waitCommitted polls the group's committed offsets until they add up to
// want, and returns the sum.
func waitCommitted(b *testing.B, ctx context.Context, adm *kadm.Client, want int64, done <-chan error) int64 {
	b.Helper()
	deadline := time.Now().Add(10 * time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var sum int64
		offs, err := adm.FetchOffsets(ctx, profiles.DefaultGroup)
		if err == nil {
			offs.Each(func(o kadm.OffsetResponse) {
				if o.Err == nil && o.Topic == kafka.TopicEvents {
					sum += o.At
				}
			})
		}
		if sum >= want {
			return sum
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d records committed after 10 minutes", sum, want)
		}
		select {
		case err := <-done:
			b.Fatalf("consumer stopped early (%v) at %d of %d records", err, sum, want)
		case <-tick.C:
		}
	}
}

// checkBenchState checks that PostgreSQL holds exactly what the mix says:
// every event recorded once, one profile per user, and per event name the
// counts of all profiles adding up to the events of that name.
func checkBenchState(b *testing.B, pool *pgxpool.Pool, mix benchMix, n int) {
	b.Helper()
	ctx := context.Background()
	var applied, profileRows int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM profile_applied_messages), (SELECT count(*) FROM profiles)`).Scan(&applied, &profileRows); err != nil {
		b.Fatal(err)
	}
	if applied != int64(n) {
		b.Errorf("applied message ids = %d, want %d", applied, n)
	}
	if profileRows != int64(len(mix.users)) {
		b.Errorf("profiles = %d, want %d (one per user)", profileRows, len(mix.users))
	}
	rows, err := pool.Query(ctx, `SELECT c.key, sum(c.value::bigint) FROM profiles, jsonb_each_text(event_counts) AS c GROUP BY c.key`)
	if err != nil {
		b.Fatal(err)
	}
	got := map[string]int64{}
	var name string
	var count int64
	if _, err := pgx.ForEachRow(rows, []any{&name, &count}, func() error {
		got[name] = count
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	if diff := cmp.Diff(mix.counts, got); diff != "" {
		b.Errorf("event counts per name (-want +got):\n%s", diff)
	}
}

// logTableStats logs how PostgreSQL read the tables during the run: a
// sequential scan of a table that grows with the run is the first suspect
// when throughput or freshness falls short.
func logTableStats(b *testing.B, pool *pgxpool.Pool) {
	b.Helper()
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `SELECT pg_stat_force_next_flush()`); err != nil {
		b.Logf("table stats: %v", err)
	}
	rows, err := pool.Query(ctx, `
		SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup, last_autoanalyze IS NOT NULL OR last_analyze IS NOT NULL
		FROM pg_stat_user_tables WHERE relname LIKE 'profile%' ORDER BY relname`)
	if err != nil {
		b.Logf("table stats: %v", err)
		return
	}
	var (
		name                    string
		seq, seqRows, idx, live int64
		analyzed                bool
	)
	if _, err := pgx.ForEachRow(rows, []any{&name, &seq, &seqRows, &idx, &live, &analyzed}, func() error {
		b.Logf("table %-26s seq_scan=%-6d seq_tup_read=%-11d idx_scan=%-8d live=%-8d analyzed=%v", name, seq, seqRows, idx, live, analyzed)
		return nil
	}); err != nil {
		b.Logf("table stats: %v", err)
	}
}
