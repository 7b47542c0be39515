// Package postgres opens PostgreSQL connection pools and applies the
// embedded schema migrations of each component.
//
// Each component owns its migrations (an embed.FS of goose SQL files) and
// its own version table, so services evolve their schemas independently and
// a target only migrates what it runs. Migrations take a PostgreSQL advisory
// lock, so replicas starting together apply each migration once.
package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Open connects a pool to url and checks that the server answers.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("ping postgres at %s:%d: %w", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return pool, nil
}

// Migrations is one component's schema history.
type Migrations struct {
	// Name identifies the component; its version table is goose_<name>.
	Name string
	// FS holds the goose SQL files at its root.
	FS fs.FS
}

// Migrate applies every pending migration of m.
func Migrate(ctx context.Context, pool *pgxpool.Pool, m Migrations, logger *slog.Logger) error {
	if m.Name == "" {
		return errors.New("migrations need a name")
	}
	h := fnv.New64a()
	h.Write([]byte(m.Name))
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(int64(h.Sum64() >> 1)))
	if err != nil {
		return fmt.Errorf("migrations %s: %w", m.Name, err)
	}
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := goose.NewProvider(goose.DialectPostgres, db, m.FS,
		goose.WithTableName("goose_"+m.Name),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("migrations %s: %w", m.Name, err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("apply migrations %s: %w", m.Name, err)
	}
	for _, r := range results {
		logger.InfoContext(ctx, "applied migration", "component", m.Name, "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}

// DB returns a database/sql handle on pool, for libraries that need one.
func DB(pool *pgxpool.Pool) *sql.DB { return stdlib.OpenDBFromPool(pool) }
