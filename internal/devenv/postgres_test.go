//go:build unix

package devenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

const defaultTestDatabaseURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

func testDatabaseURL() string {
	if u := os.Getenv("WHISPER_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return defaultTestDatabaseURL
}

// requireServer skips (or, under CI, fails) unless dbURL answers.
func requireServer(t *testing.T, dbURL string) {
	t.Helper()
	if err := pingURL(t.Context(), dbURL, 2*time.Second); err != nil {
		requireOrSkip(t, "no PostgreSQL server at %s (set WHISPER_TEST_DATABASE_URL or start one): %v", redactURL(dbURL), err)
	}
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := findPostgresBinaries(); err != nil {
		requireOrSkip(t, "no PostgreSQL server binaries (Debian: apt-get install postgresql): %v", err)
	}
}

// queryDatabase runs SELECT 1 and returns the current database's name.
func queryDatabase(t *testing.T, dbURL string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connecting to %s: %v", redactURL(dbURL), err)
	}
	defer conn.Close(ctx)
	var one int
	var db string
	if err := conn.QueryRow(ctx, "SELECT 1, current_database()").Scan(&one, &db); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v; want 1, nil", one, err)
	}
	return db
}

// worldSearchableTempDir returns a temporary directory that the
// unprivileged account a root test hands the cluster to can enter.
func worldSearchableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "devenv-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// assertStopped checks that the cluster left nothing running behind.
func assertStopped(t *testing.T, pid int, addr string) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("postgres pid %d after Close: kill(0) = %v, want ESRCH", pid, err)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Close", addr)
	}
}

// TestStartLocalServer runs the whole environment as `whisper dev` would on
// a machine with a local server, and uses every dependency.
func TestStartLocalServer(t *testing.T) {
	requireServer(t, defaultTestDatabaseURL)
	env, err := Start(t.Context(), Config{KafkaAddr: "127.0.0.1:0", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer env.Close()

	if got := env.PostgresSource(); got != PostgresLocalServer {
		t.Errorf("PostgresSource() = %q, want %q", got, PostgresLocalServer)
	}
	if want := "postgres://postgres@127.0.0.1:5432/whisper_dev?sslmode=disable"; env.DatabaseURL() != want {
		t.Errorf("DatabaseURL() = %q, want %q", env.DatabaseURL(), want)
	}
	if got := queryDatabase(t, env.DatabaseURL()); got != devDatabase {
		t.Errorf("current_database() = %q, want %q", got, devDatabase)
	}

	produceConsume(t, env.KafkaBrokers())

	if !strings.HasPrefix(env.RedisURL(), "redis://127.0.0.1:") || !strings.HasSuffix(env.RedisURL(), "/0") {
		t.Errorf("RedisURL() = %q, want redis://127.0.0.1:PORT/0", env.RedisURL())
	}
	opts, err := redis.ParseURL(env.RedisURL())
	if err != nil {
		t.Fatalf("redis.ParseURL(%q): %v", env.RedisURL(), err)
	}
	opts.MaxRetries = -1 // the ping after Close must fail fast
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	if err := rdb.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Errorf("redis SET: %v", err)
	}

	if err := env.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := env.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := rdb.Ping(t.Context()).Err(); err == nil {
		t.Errorf("redis still answers after Close")
	}
}

func TestPostgresExplicit(t *testing.T) {
	dbURL := testDatabaseURL()
	requireServer(t, dbURL)
	env, err := Start(t.Context(), Config{KafkaAddr: "127.0.0.1:0", DatabaseURL: dbURL, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer env.Close()
	if got := env.PostgresSource(); got != PostgresExplicit {
		t.Errorf("PostgresSource() = %q, want %q", got, PostgresExplicit)
	}
	if env.DatabaseURL() != dbURL {
		t.Errorf("DatabaseURL() = %q, want %q unchanged", env.DatabaseURL(), dbURL)
	}
	queryDatabase(t, env.DatabaseURL())
}

// A broken explicit URL is an error, never a silent fall back to another
// database.
func TestPostgresExplicitUnreachable(t *testing.T) {
	closed, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		url    string
		hidden string // must not leak into the error
	}{
		{name: "nothing listening", url: fmt.Sprintf("postgres://whisper:s3cret@127.0.0.1:%d/whisper?sslmode=disable", closed), hidden: "s3cret"},
		{name: "malformed", url: "postgres://%zz"},
		{name: "keyword/value", url: fmt.Sprintf("host=127.0.0.1 port=%d password=s3cret sslmode=disable", closed), hidden: "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, err := Start(t.Context(), Config{KafkaAddr: "127.0.0.1:0", DatabaseURL: tt.url, Logger: testLogger(t)})
			if err == nil {
				env.Close()
				t.Fatalf("Start succeeded, want an error")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), "WHISPER_DATABASE_URL") {
				t.Errorf("Start error = %q, want it to name WHISPER_DATABASE_URL", err)
			}
			if tt.hidden != "" && strings.Contains(err.Error(), tt.hidden) {
				t.Errorf("Start error = %q leaks the password", err)
			}
		})
	}
}

func TestPostgresThrowawayCluster(t *testing.T) {
	requireBinaries(t)
	before := runtime.NumGoroutine()
	// An empty localServerAddr skips step 2, and no DatabaseURL skips 1.
	env, err := start(t.Context(), Config{KafkaAddr: "127.0.0.1:0", Logger: testLogger(t)}, startOptions{})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	defer env.Close()
	if got := env.PostgresSource(); got != PostgresThrowawayCluster {
		t.Fatalf("PostgresSource() = %q, want %q", got, PostgresThrowawayCluster)
	}
	if got := queryDatabase(t, env.DatabaseURL()); got != devDatabase {
		t.Errorf("current_database() = %q, want %q", got, devDatabase)
	}
	dataDir, pid, addr := env.cluster.dataDir, env.cluster.cmd.Process.Pid, env.cluster.addr()
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Errorf("data dir %s holds no cluster: %v", dataDir, err)
	}

	if err := env.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary data dir %s after Close: stat = %v, want it removed", dataDir, err)
	}
	assertStopped(t, pid, addr)
	waitGoroutines(t, before)
}

// A DataDir is kept, and the next start reuses the cluster in it.
func TestPostgresThrowawayClusterDataDir(t *testing.T) {
	requireBinaries(t)
	dataDir := filepath.Join(worldSearchableTempDir(t), "pg")
	cfg := Config{KafkaAddr: "127.0.0.1:0", DataDir: dataDir, Logger: testLogger(t)}

	exec := func(sql string) []int {
		env, err := start(t.Context(), cfg, startOptions{})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		defer env.Close()
		conn, err := pgx.Connect(t.Context(), env.DatabaseURL())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(t.Context())
		if _, err := conn.Exec(t.Context(), sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		rows, _ := conn.Query(t.Context(), "SELECT n FROM kept ORDER BY n")
		got, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatalf("reading kept rows: %v", err)
		}
		pid, addr := env.cluster.cmd.Process.Pid, env.cluster.addr()
		conn.Close(t.Context())
		if err := env.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		assertStopped(t, pid, addr)
		return got
	}

	exec("CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)")
	if _, err := os.Stat(filepath.Join(dataDir, "PG_VERSION")); err != nil {
		t.Fatalf("DataDir after Close: %v, want the cluster kept", err)
	}
	if got := exec("INSERT INTO kept VALUES (2)"); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("rows after restart = %v, want [1 2]", got)
	}
}

// Cancelling start-up stops whatever was started and leaves no data behind.
func TestPostgresThrowawayClusterCancelled(t *testing.T) {
	requireBinaries(t)
	for _, after := range []time.Duration{0, 300 * time.Millisecond} {
		t.Run(fmt.Sprintf("after %v", after), func(t *testing.T) {
			tmp := worldSearchableTempDir(t)
			t.Setenv("TMPDIR", tmp)
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(after, cancel)

			env, err := start(ctx, Config{KafkaAddr: "127.0.0.1:0", Logger: testLogger(t)}, startOptions{})
			if err == nil {
				env.Close()
				t.Skipf("start finished within %v, before the cancel could land", after)
			}
			if !errors.Is(err, context.Canceled) {
				t.Errorf("start error = %v, want context.Canceled", err)
			}
			left, _ := os.ReadDir(tmp)
			if len(left) != 0 {
				t.Errorf("TMPDIR holds %v after a cancelled start, want nothing", left)
			}
		})
	}
}

func TestPostgresThrowawayClusterUnreachableDataDir(t *testing.T) {
	requireBinaries(t)
	if os.Geteuid() != 0 {
		t.Skip("only root hands the cluster to another account")
	}
	private := worldSearchableTempDir(t)
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(private, "pg")
	env, err := start(t.Context(), Config{KafkaAddr: "127.0.0.1:0", DataDir: dataDir, Logger: testLogger(t)}, startOptions{})
	if err == nil {
		env.Close()
		t.Fatalf("start succeeded, want an error about %s", private)
	}
	t.Logf("error: %v", err)
	for _, want := range []string{"cannot enter " + private, "chmod o+x"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start error = %q, want it to contain %q", err, want)
		}
	}
}

// With no server and no binaries, the error says what to install.
func TestPostgresNothingFound(t *testing.T) {
	closed, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir())
	saved := binaryGlobs
	binaryGlobs = []string{filepath.Join(t.TempDir(), "*", "bin")}
	t.Cleanup(func() { binaryGlobs = saved })

	localAddr := fmt.Sprintf("127.0.0.1:%d", closed)
	env, err := start(t.Context(), Config{KafkaAddr: "127.0.0.1:0", Logger: testLogger(t)}, startOptions{localServerAddr: localAddr})
	if err == nil {
		env.Close()
		t.Fatal("start succeeded, want an error")
	}
	t.Logf("error: %v", err)
	if !errors.Is(err, errNoPostgres) {
		t.Errorf("start error = %v, want errNoPostgres", err)
	}
	for _, want := range []string{"WHISPER_DATABASE_URL", "apt-get install postgresql", localAddr} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start error = %q, want it to contain %q", err, want)
		}
	}
}

func TestCheckSearchable(t *testing.T) {
	as := &runAs{name: "someone", uid: 54321, gid: 54321}
	tests := []struct {
		mode os.FileMode
		ok   bool
	}{
		{mode: 0o700, ok: false},
		{mode: 0o750, ok: false}, // the group is not as's
		{mode: 0o701, ok: true},
		{mode: 0o755, ok: true},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			parent := worldSearchableTempDir(t)
			if err := os.Chmod(parent, tt.mode); err != nil {
				t.Fatal(err)
			}
			err := checkSearchable(filepath.Join(parent, "pg"), as)
			if (err == nil) != tt.ok {
				t.Errorf("checkSearchable under a %v directory = %v, want ok=%v", tt.mode, err, tt.ok)
			}
		})
	}
}
