package devenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// clusterReadyTimeout bounds the wait for a started cluster to accept
	// logins; a fresh cluster on a laptop needs about a second.
	clusterReadyTimeout = 60 * time.Second
	// clusterStopTimeout bounds a fast shutdown before we kill the server.
	clusterStopTimeout = 30 * time.Second
	// portAttempts is how often we retry when another process takes the
	// port we picked between picking it and postgres binding it.
	portAttempts = 3
)

// binaryGlobs are where distributions install versioned server binaries
// off PATH. The newest version wins.
var binaryGlobs = []string{
	"/usr/lib/postgresql/*/bin",          // Debian, Ubuntu
	"/usr/pgsql-*/bin",                   // PGDG RPMs
	"/opt/homebrew/opt/postgresql@*/bin", // Homebrew, Apple silicon
	"/usr/local/opt/postgresql@*/bin",    // Homebrew, Intel
}

// pgBinaries are the server programs of one PostgreSQL installation.
type pgBinaries struct {
	initdb   string
	postgres string
}

// findPostgresBinaries returns initdb and postgres from one directory, so
// that the two always come from the same version: PATH first, then the
// newest versioned install.
func findPostgresBinaries() (pgBinaries, error) {
	var dirs []string
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	var versioned []string
	for _, g := range binaryGlobs {
		m, _ := filepath.Glob(g) // patterns are constant and valid
		versioned = append(versioned, m...)
	}
	slices.SortStableFunc(versioned, func(a, b string) int {
		return -compareVersions(versionOf(a), versionOf(b))
	})
	dirs = append(dirs, versioned...)
	for _, dir := range dirs {
		b := pgBinaries{initdb: filepath.Join(dir, "initdb"), postgres: filepath.Join(dir, "postgres")}
		if isExecutable(b.initdb) && isExecutable(b.postgres) {
			return b, nil
		}
	}
	return pgBinaries{}, fmt.Errorf("no initdb and postgres found together on PATH or under %s", strings.Join(binaryGlobs, ", "))
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// versionOf extracts the version from an install directory such as
// /usr/lib/postgresql/16/bin or /opt/homebrew/opt/postgresql@14/bin.
func versionOf(binDir string) string {
	v := filepath.Base(filepath.Dir(binDir))
	if i := strings.LastIndexAny(v, "@-"); i >= 0 {
		v = v[i+1:]
	}
	return v
}

// compareVersions orders dotted numeric versions ("9.6" < "10" < "16").
// Non-numeric parts sort lowest so that odd directories lose.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := range max(len(as), len(bs)) {
		x, y := -1, -1
		if i < len(as) {
			if n, err := strconv.Atoi(as[i]); err == nil {
				x = n
			}
		}
		if i < len(bs) {
			if n, err := strconv.Atoi(bs[i]); err == nil {
				y = n
			}
		}
		if x != y {
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// runAs is the account that runs initdb and postgres; nil means our own.
type runAs struct {
	name     string
	uid, gid uint32
}

// unprivilegedAccount returns who should run the cluster: nobody special
// normally, but as root an unprivileged account, because initdb and
// postgres refuse to run as root.
func unprivilegedAccount() (*runAs, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, uerr := strconv.ParseUint(u.Uid, 10, 32)
		gid, gerr := strconv.ParseUint(u.Gid, 10, 32)
		if uerr != nil || gerr != nil {
			continue
		}
		return &runAs{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, errors.New("postgres: running as root, and PostgreSQL refuses to run as root, but there is no 'postgres' or 'nobody' account to run it as: create one (useradd --system postgres), run as a normal user, or set WHISPER_DATABASE_URL")
}

// pgCluster is a PostgreSQL server we started and must stop.
type pgCluster struct {
	logger    *slog.Logger
	url       string
	dataDir   string
	removeDir bool // the data dir is ours: remove it on stop
	port      int

	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has been waited for
	waitErr error         // cmd.Wait's result, readable once exited is closed
	output  *lineLogger

	stopOnce sync.Once
	stopErr  error
}

// startCluster initialises (unless one is already there) and starts a
// private cluster in dataDir, or in a temporary directory if it is empty.
func startCluster(ctx context.Context, bins pgBinaries, dataDir string, logger *slog.Logger) (_ *pgCluster, err error) {
	as, err := unprivilegedAccount()
	if err != nil {
		return nil, err
	}
	c := &pgCluster{logger: logger}
	defer func() {
		if err != nil {
			if serr := c.stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()

	if dataDir == "" {
		dir, err := os.MkdirTemp("", "whisper-dev-postgres-")
		if err != nil {
			return nil, fmt.Errorf("postgres: creating a temporary data directory (check TMPDIR): %w", err)
		}
		c.dataDir, c.removeDir = dir, true
	} else {
		dir, err := filepath.Abs(dataDir)
		if err != nil {
			return nil, fmt.Errorf("postgres: data directory %q: %w", dataDir, err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("postgres: creating data directory %s: %w", dir, err)
		}
		c.dataDir = dir
	}
	if as != nil {
		if err := checkSearchable(c.dataDir, as); err != nil {
			return nil, err
		}
		if err := os.Chown(c.dataDir, int(as.uid), int(as.gid)); err != nil {
			return nil, fmt.Errorf("postgres: handing data directory %s to user %s: %w", c.dataDir, as.name, err)
		}
	}

	if _, err := os.Stat(filepath.Join(c.dataDir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		if err := initCluster(ctx, bins, c.dataDir, as); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("postgres: inspecting data directory %s: %w", c.dataDir, err)
	} else {
		logger.Info("reusing PostgreSQL cluster", "data_dir", c.dataDir)
	}

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		err = c.serve(ctx, bins, as, port)
		if err == nil {
			break
		}
		// Someone took the port between our check and postgres's bind.
		if attempt < portAttempts && ctx.Err() == nil && strings.Contains(c.output.tail(), "already in use") {
			logger.Debug("port taken, retrying", "port", port)
			continue
		}
		return nil, err
	}

	adminURL := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", c.addr())
	if err := ensureDatabase(ctx, adminURL, devDatabase, clusterReadyTimeout); err != nil {
		return nil, fmt.Errorf("postgres: creating database %s in the throwaway cluster: %w", devDatabase, err)
	}
	c.url = withDatabase(adminURL, devDatabase)
	logger.Info("throwaway PostgreSQL cluster started", "data_dir", c.dataDir, "pid", c.cmd.Process.Pid, "postgres", bins.postgres)
	return c, nil
}

// initCluster runs initdb with trust auth and a superuser named postgres,
// so that URLs look the same whoever runs whisper dev.
func initCluster(ctx context.Context, bins pgBinaries, dataDir string, as *runAs) error {
	cmd := exec.CommandContext(ctx, bins.initdb,
		"--pgdata", dataDir,
		"--username", "postgres",
		"--auth", "trust",
		"--encoding", "UTF8",
		"--locale", "C",
		// A dev cluster is rebuilt in a second if an OS crash eats it.
		"--no-sync",
	)
	// The account may not be able to enter our working directory.
	cmd.Dir = dataDir
	cmd.SysProcAttr = sysProcAttr(as)
	// initdb cleans up a half-made cluster on SIGINT, not on SIGKILL.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("postgres: initdb in %s: %w", dataDir, ctx.Err())
		}
		return fmt.Errorf("postgres: initdb in %s failed%s; fix the cause below, or set WHISPER_DATABASE_URL: %w\n%s", dataDir, runAsNote(as), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// serve starts postgres on port and waits until it accepts logins.
func (c *pgCluster) serve(ctx context.Context, bins pgBinaries, as *runAs, port int) error {
	args := []string{
		"-D", c.dataDir,
		"-p", strconv.Itoa(port),
		// The socket goes in the data dir so that it cannot clash with a
		// system server's socket in /var/run/postgresql.
		"-k", c.dataDir,
		"-c", "listen_addresses=127.0.0.1",
	}
	if c.removeDir {
		// The data dies with the process anyway: trade durability for
		// speed.
		args = append(args, "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	}
	c.port = port
	c.output = &lineLogger{logger: c.logger}
	cmd := exec.Command(bins.postgres, args...)
	cmd.Dir = c.dataDir
	cmd.SysProcAttr = sysProcAttr(as)
	cmd.Stdout, cmd.Stderr = c.output, c.output
	// Server children inherit the output pipe; never let a stuck one hold
	// up Wait.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: starting %s%s: %w", bins.postgres, runAsNote(as), err)
	}
	c.cmd = cmd
	c.exited = make(chan struct{})
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()

	adminURL := fmt.Sprintf("postgres://postgres@%s/postgres?sslmode=disable", c.addr())
	deadline := time.After(clusterReadyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := pingURL(ctx, adminURL, time.Second)
		if err == nil {
			return nil
		}
		select {
		case <-c.exited:
			err := fmt.Errorf("postgres: the throwaway cluster in %s exited during start-up%s: %w\n%s", c.dataDir, runAsNote(as), c.waitErr, c.output.tail())
			c.cmd = nil // nothing left to stop
			return err
		case <-ctx.Done():
			return fmt.Errorf("postgres: waiting for the throwaway cluster to start: %w", ctx.Err())
		case <-deadline:
			return fmt.Errorf("postgres: the throwaway cluster in %s did not accept connections within %v: %w\n%s", c.dataDir, clusterReadyTimeout, err, c.output.tail())
		case <-tick.C:
		}
	}
}

func (c *pgCluster) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
}

// stop shuts the server down (SIGINT: fast shutdown, which rolls back open
// transactions and disconnects clients), waits for it, and removes a
// temporary data dir.
func (c *pgCluster) stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if c.cmd != nil {
			if err := c.shutdown(); err != nil {
				errs = append(errs, err)
			}
		}
		if c.removeDir && c.dataDir != "" {
			if err := os.RemoveAll(c.dataDir); err != nil {
				errs = append(errs, fmt.Errorf("postgres: removing the throwaway data directory: %w", err))
			}
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

func (c *pgCluster) shutdown() error {
	select {
	case <-c.exited:
		return fmt.Errorf("postgres: the throwaway cluster had already exited (%v); see its log above", c.waitErr)
	default:
	}
	if err := c.cmd.Process.Signal(os.Interrupt); err != nil {
		c.logger.Warn("cannot signal postgres, killing it", "err", err)
	} else {
		select {
		case <-c.exited:
			return nil
		case <-time.After(clusterStopTimeout):
			c.logger.Warn("postgres did not shut down in time, killing it", "timeout", clusterStopTimeout)
		}
	}
	if err := killProcessGroup(c.cmd.Process.Pid); err != nil {
		c.logger.Warn("killing postgres", "err", err)
	}
	<-c.exited
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("postgres: finding a free port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func runAsNote(as *runAs) string {
	if as == nil {
		return ""
	}
	return fmt.Sprintf(" (running as user %s, since PostgreSQL refuses to run as root)", as.name)
}

// lineLogger logs a process's output line by line at debug level and keeps
// the last lines for error messages.
type lineLogger struct {
	logger *slog.Logger

	mu      sync.Mutex
	partial []byte
	last    []string
}

const keptLines = 20

func (l *lineLogger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(bytes.TrimRight(l.partial[:i], "\r"))
		l.partial = l.partial[i+1:]
		l.logger.Debug(line)
		l.last = append(l.last, line)
		if len(l.last) > keptLines {
			l.last = l.last[len(l.last)-keptLines:]
		}
	}
	return len(p), nil
}

func (l *lineLogger) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := append([]string(nil), l.last...)
	if len(l.partial) > 0 {
		lines = append(lines, string(l.partial))
	}
	return strings.Join(lines, "\n")
}
