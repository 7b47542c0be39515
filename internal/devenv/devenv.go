// Package devenv runs the dependencies of `whisper dev` on one machine with no
// setup: an in-process Kafka broker (kfake), an in-process Redis (miniredis),
// and a PostgreSQL database found or started locally.
//
// PostgreSQL is resolved in a fixed order, first match wins:
//
//  1. Config.DatabaseURL (WHISPER_DATABASE_URL), which must answer a ping;
//  2. a server on localhost:5432, where the database whisper_dev is created
//     if missing and used;
//  3. a private throwaway cluster started from local PostgreSQL binaries
//     (initdb and postgres on PATH or under /usr/lib/postgresql/*/bin);
//  4. otherwise an error saying what to install.
//
// Everything Start starts, Env.Close stops, in reverse order.
package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// DefaultKafkaAddr is where the dev broker listens when Config.KafkaAddr is
// empty; it is the address Kafka tools try first.
const DefaultKafkaAddr = "127.0.0.1:9092"

// Config says where the dev dependencies live. The zero value is usable.
type Config struct {
	// KafkaAddr is the host:port the broker listens on and advertises
	// (WHISPER_DEV_KAFKA_ADDR). Empty means DefaultKafkaAddr; port 0 picks
	// a free port. A wildcard host (0.0.0.0, ::) listens everywhere but
	// advertises 127.0.0.1, because clients cannot dial a wildcard.
	KafkaAddr string

	// DatabaseURL is an explicit PostgreSQL URL (WHISPER_DATABASE_URL).
	// Empty means: look for a local server, then a throwaway cluster.
	DatabaseURL string

	// DataDir is where a throwaway PostgreSQL cluster lives. A cluster
	// already there is reused and the directory is kept on Close. Empty
	// means a temporary directory that Close removes.
	DataDir string

	// Logger receives progress and the logs of the embedded dependencies.
	// Nil discards them.
	Logger *slog.Logger
}

// PostgresSource says which resolution step supplied the database.
type PostgresSource string

// The PostgreSQL sources, in resolution order.
const (
	PostgresExplicit         PostgresSource = "explicit"
	PostgresLocalServer      PostgresSource = "local-server"
	PostgresThrowawayCluster PostgresSource = "throwaway-cluster"
)

// Env is a running set of dev dependencies. Its methods are safe for
// concurrent use.
type Env struct {
	logger *slog.Logger

	kafkaBrokers   []string
	redisURL       string
	databaseURL    string
	postgresSource PostgresSource

	// Kept for tests, which check that Close really stops the cluster.
	cluster *pgCluster

	// stops holds what Close undoes, in start order.
	stops     []func() error
	closeOnce sync.Once
	closeErr  error
}

// startOptions are seams for tests; Start uses defaultStartOptions.
type startOptions struct {
	// localServerAddr is the host:port probed in resolution step 2;
	// empty skips that step.
	localServerAddr string
}

var defaultStartOptions = startOptions{localServerAddr: "127.0.0.1:5432"}

// Start starts Kafka, Redis and PostgreSQL as described in the package doc.
// On error, whatever was already started is stopped again. ctx bounds
// start-up only: the dependencies run until Close.
func Start(ctx context.Context, cfg Config) (*Env, error) {
	return start(ctx, cfg, defaultStartOptions)
}

func start(ctx context.Context, cfg Config, opts startOptions) (_ *Env, err error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "devenv")
	e := &Env{logger: logger}
	defer func() {
		if err != nil {
			// Start failed part way: undo what did start, and report
			// both failures if the undo fails too.
			if cerr := e.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("stopping partly started dev dependencies: %w", cerr))
			}
		}
	}()

	// Kafka goes first: its fixed port is the likeliest thing to clash
	// (a second `whisper dev`), and it fails fast.
	broker, err := startKafka(cfg.KafkaAddr, logger.With("dependency", "kafka"))
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, func() error { broker.Close(); return nil })
	e.kafkaBrokers = broker.ListenAddrs()
	logger.Info("kafka broker started", "brokers", e.kafkaBrokers)

	redis, err := startRedis(ttlTick)
	if err != nil {
		return nil, err
	}
	e.stops = append(e.stops, func() error { redis.Close(); return nil })
	e.redisURL = "redis://" + redis.Addr() + "/0"
	logger.Info("redis started", "url", e.redisURL)

	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("starting dev dependencies: %w", err)
	}
	pg, err := resolvePostgres(ctx, cfg, opts, logger.With("dependency", "postgres"))
	if err != nil {
		return nil, err
	}
	if pg.cluster != nil {
		e.cluster = pg.cluster
		e.stops = append(e.stops, pg.cluster.stop)
	}
	e.databaseURL = pg.url
	e.postgresSource = pg.source
	logger.Info("postgres ready", "source", pg.source, "url", redactURL(pg.url))
	return e, nil
}

// KafkaBrokers returns the broker addresses, as advertised to clients.
func (e *Env) KafkaBrokers() []string {
	return append([]string(nil), e.kafkaBrokers...)
}

// RedisURL returns a URL for the in-process Redis, like
// "redis://127.0.0.1:PORT/0".
func (e *Env) RedisURL() string { return e.redisURL }

// DatabaseURL returns the PostgreSQL URL to use.
func (e *Env) DatabaseURL() string { return e.databaseURL }

// PostgresSource says where DatabaseURL came from.
func (e *Env) PostgresSource() PostgresSource { return e.postgresSource }

// Close stops everything Start started, in reverse order, and removes
// temporary data. It is safe to call more than once; later calls return the
// first call's result. A database on a local or explicit server is left as
// it is: it is not ours to drop.
func (e *Env) Close() error {
	e.closeOnce.Do(func() {
		var errs []error
		for i := len(e.stops) - 1; i >= 0; i-- {
			if err := e.stops[i](); err != nil {
				errs = append(errs, err)
			}
		}
		e.closeErr = errors.Join(errs...)
		if e.closeErr != nil {
			e.logger.Warn("dev dependencies stopped with errors", "err", e.closeErr)
		} else if len(e.stops) > 0 {
			e.logger.Info("dev dependencies stopped")
		}
	})
	return e.closeErr
}
