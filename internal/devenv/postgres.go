package devenv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os/user"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// devDatabase is the database whisper dev uses on a shared server, so that
// its tables never land in the server's `postgres` database.
const devDatabase = "whisper_dev"

const (
	// explicitPingTimeout bounds the ping of WHISPER_DATABASE_URL, which
	// may be a remote server.
	explicitPingTimeout = 10 * time.Second
	// localProbeTimeout bounds each login attempt on localhost:5432: a
	// local server answers at once, and no server refuses at once.
	localProbeTimeout = 2 * time.Second
	// createDatabaseTimeout bounds checking for and creating whisper_dev.
	createDatabaseTimeout = 30 * time.Second
)

// postgresDB is the outcome of resolution.
type postgresDB struct {
	url    string
	source PostgresSource
	// cluster is set when we started the server and must stop it.
	cluster *pgCluster
}

// errNoPostgres ends resolution when every step came up empty.
var errNoPostgres = errors.New("no PostgreSQL found: set WHISPER_DATABASE_URL, start a server on localhost:5432, or install PostgreSQL server binaries (Debian/Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server; macOS: brew install postgresql)")

func resolvePostgres(ctx context.Context, cfg Config, opts startOptions, logger *slog.Logger) (postgresDB, error) {
	// Step 1: an explicit URL is a promise; a broken one is an error, not
	// a reason to quietly use some other database.
	if cfg.DatabaseURL != "" {
		if err := pingURL(ctx, cfg.DatabaseURL, explicitPingTimeout); err != nil {
			return postgresDB{}, fmt.Errorf("postgres: cannot reach WHISPER_DATABASE_URL %s: check the URL and that the server is up, or unset it to use a local server: %w", redactURL(cfg.DatabaseURL), err)
		}
		return postgresDB{url: cfg.DatabaseURL, source: PostgresExplicit}, nil
	}

	// Step 2: a local server. Failing here is normal (none installed, or
	// we may not log in), so it is logged and resolution moves on.
	var localErr error
	if opts.localServerAddr != "" {
		dbURL, err := useLocalServer(ctx, opts.localServerAddr, logger)
		if err == nil {
			return postgresDB{url: dbURL, source: PostgresLocalServer}, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return postgresDB{}, fmt.Errorf("postgres: looking for a server on %s: %w", opts.localServerAddr, ctxErr)
		}
		localErr = fmt.Errorf("no usable server on %s: %w", opts.localServerAddr, err)
		level := slog.LevelInfo
		if !isConnRefused(err) {
			// A server is there but would not have us: the developer
			// may well expect their data there, so say so loudly.
			level = slog.LevelWarn
		}
		logger.Log(ctx, level, "no usable local PostgreSQL server, trying a throwaway cluster", "addr", opts.localServerAddr, "reason", err)
	}

	// Step 3: a private cluster from local binaries.
	bins, err := findPostgresBinaries()
	if err != nil {
		// Step 4: nothing left; say what to do, then what was tried.
		if localErr != nil {
			return postgresDB{}, fmt.Errorf("%w; tried: %w; %w", errNoPostgres, localErr, err)
		}
		return postgresDB{}, fmt.Errorf("%w; tried: %w", errNoPostgres, err)
	}
	cluster, err := startCluster(ctx, bins, cfg.DataDir, logger)
	if err != nil {
		return postgresDB{}, err
	}
	return postgresDB{url: cluster.url, source: PostgresThrowawayCluster, cluster: cluster}, nil
}

// useLocalServer logs in to the server at addr as `postgres` and, if
// different, as the current OS user (the two usual trust or peer-mapped
// roles of a developer install), makes sure whisper_dev exists, and returns
// its URL.
func useLocalServer(ctx context.Context, addr string, logger *slog.Logger) (string, error) {
	roles := []string{"postgres"}
	if u, err := user.Current(); err == nil && u.Username != "postgres" && u.Username != "" {
		roles = append(roles, u.Username)
	}
	var errs []error
	for _, role := range roles {
		adminURL := (&url.URL{
			Scheme:   "postgres",
			User:     url.User(role),
			Host:     addr,
			Path:     "/postgres",
			RawQuery: "sslmode=disable",
		}).String()
		err := ensureDatabase(ctx, adminURL, devDatabase, localProbeTimeout)
		if err == nil {
			return withDatabase(adminURL, devDatabase), nil
		}
		errs = append(errs, fmt.Errorf("as role %s: %w", role, err))
		if ctx.Err() != nil || isConnRefused(err) || errors.Is(err, context.DeadlineExceeded) {
			// Nobody listens, or nobody answers: other roles will not
			// fare better, and each try would cost the full timeout.
			break
		}
		logger.Debug("local PostgreSQL server refused a role", "role", role, "err", err)
	}
	return "", errors.Join(errs...)
}

// ensureDatabase connects to adminURL, giving up after connectTimeout, and
// creates db unless it exists.
func ensureDatabase(ctx context.Context, adminURL, db string, connectTimeout time.Duration) error {
	connectCtx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	conn, err := pgx.Connect(connectCtx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// Creating a database copies a template, which a busy server may take
	// a while over; only a hang is worth giving up on.
	ctx, cancel = context.WithTimeout(ctx, createDatabaseTimeout)
	defer cancel()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", db).Scan(&exists); err != nil {
		return fmt.Errorf("checking for database %s: %w", db, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		// Another `whisper dev` (or test) may have won the race; the
		// database existing is all we wanted.
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "42P04" /* duplicate_database */ || pgErr.Code == "23505" /* unique_violation */) {
			return nil
		}
		return fmt.Errorf("creating database %s (the role needs CREATEDB): %w", db, err)
	}
	return nil
}

// pingURL proves dbURL accepts a login and runs a query.
func pingURL(ctx context.Context, dbURL string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "SELECT 1")
	return err
}

// withDatabase returns dbURL pointing at database db.
func withDatabase(dbURL, db string) string {
	u, err := url.Parse(dbURL)
	if err != nil {
		// Only called on URLs we built.
		panic(fmt.Sprintf("devenv: bad internal database URL %q: %v", dbURL, err))
	}
	u.Path = "/" + db
	return u.String()
}

// redactURL hides a password in a URL meant for logs and errors. Strings
// that are not valid URLs cannot be redacted reliably, so they are not
// shown at all.
func redactURL(dbURL string) string {
	if !strings.Contains(dbURL, "://") {
		return "(keyword/value connection string)"
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		return "(malformed URL)"
	}
	return u.Redacted()
}

func isConnRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
