package targets

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/observability/contract"
	"github.com/whisperhq/whisper/internal/telemetry"
	"github.com/whisperhq/whisper/services/content"
	"github.com/whisperhq/whisper/services/decide"
	"github.com/whisperhq/whisper/services/deliver"
	"github.com/whisperhq/whisper/services/ingest"
	"github.com/whisperhq/whisper/services/profiles"
)

// MetricCatalogue returns every metric a whisper process running every
// target can expose, for the observability contract gate (internal/ cannot
// import the services, so platformctl's main passes this in).
//
// It builds each target's collectors exactly as Run does, against a
// recording registry and without connecting to anything: the Kafka client
// points at a closed port and is closed before it is ever used (franz-go
// dials lazily), Redis and PostgreSQL are not needed to register metrics.
// A metric registered twice panics in Run; here it is an error.
func MetricCatalogue() (cat *contract.Catalogue, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("register metrics: %v", r)
		}
	}()
	reg := telemetry.NewRegistry()
	rec := contract.NewRecorder(reg)
	telemetry.NewRED(rec)

	// Ingest: its producer (with kprom's whisper_kafka_* metrics, which
	// register when the client is created) and its own metrics.
	producer, err := kafka.NewClient(kafka.Config{
		Brokers: config.StringList{"127.0.0.1:1"}, Partitions: 1, ReplicationFactor: -1,
		MaxBufferedBytes: 1 << 20, Linger: time.Millisecond,
	}, Ingest, rec)
	if err != nil {
		return nil, err
	}
	defer producer.Close()
	ingest.New(ingest.Options{Producer: producer, Registerer: rec, Logger: slog.New(slog.DiscardHandler)})

	// Profiles: its consumer's own metrics (batches, apply latency,
	// outcomes, stage transitions, the outbox) and the consumer lag gauge
	// that decide and deliver then share; its Kafka client registers none
	// here.
	profiles.New(profiles.Options{Registerer: rec, Logger: slog.New(slog.DiscardHandler)})

	// Connection pools, under the names Run gives them. Neither pgxpool
	// (no MinConns) nor go-redis dials before its first use.
	poolCfg, err := pgxpool.ParseConfig("postgres://catalogue@127.0.0.1:1/catalogue")
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), poolCfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	rec.MustRegister(
		telemetry.NewPgxPoolCollector("main", pool), telemetry.NewPgxPoolCollector(Profiles, pool),
		telemetry.NewRedisPoolCollector("main", rdb), telemetry.NewRedisPoolCollector(Profiles, rdb),
		telemetry.NewPgxPoolCollector("bandit", pool), telemetry.NewRedisPoolCollector(Deliver, rdb),
	)

	// Content: renders by channel and outcome, render latency, cache.
	content.New(content.Options{Registerer: rec})
	// Decide: its pipeline's metrics (decisions by campaign and outcome,
	// policy evaluation latency, waits, conversions, consumer records).
	if _, err := decide.New(decide.Options{Registerer: rec, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		return nil, err
	}

	// Deliver: deliveries by channel and status, attempts, retries, send
	// latency, lateness, rate-limit waits, DLQ, the scheduled backlog.
	deliver.New(deliver.Options{Registerer: rec})

	return rec.Catalogue()
}
