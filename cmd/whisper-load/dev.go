package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"time"

	"github.com/whisperhq/whisper/internal/config"
	"github.com/whisperhq/whisper/internal/loadgen"
	"github.com/whisperhq/whisper/internal/proccpu"
)

// Credentials pinned in the child so the benchmark knows them; re-pinning
// the same ones on every run keeps the dev database from filling up with
// new credentials.
const (
	benchWriteKey   = "wk_whisperload_bench_0000000000000000"
	benchAPIToken   = "wt_whisperload_bench_0000000000000000"
	benchAdminToken = "wa_whisperload_bench_0000000000000000"
)

type devOptions struct {
	binary, logPath string
	linger          time.Duration
	startTimeout    time.Duration
	// env is added to the child's environment, after the inherited one.
	env []string
}

// dev is a `whisper dev` child process.
type dev struct {
	cmd         *exec.Cmd
	exited      chan struct{}
	waitErr     error
	log         *os.File
	url         string
	writeKey    string
	apiToken    string
	brokers     config.StringList
	workspaceID string
	logger      *slog.Logger
}

// startDev starts `whisper dev` on free ports and waits until /readyz
// answers 200.
func startDev(ctx context.Context, o devOptions, logger *slog.Logger) (_ *dev, err error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	kafkaAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var logFile *os.File
	if o.logPath != "" {
		logFile, err = os.Create(o.logPath)
	} else {
		logFile, err = os.CreateTemp("", "whisper-load-dev-*.log")
	}
	if err != nil {
		return nil, fmt.Errorf("log file of whisper dev: %w", err)
	}
	banner := &bannerWriter{out: logFile}
	cmd := exec.Command(o.binary, "dev", "--http-addr", httpAddr)
	cmd.Env = append(os.Environ(),
		"WHISPER_DEV_KAFKA_ADDR="+kafkaAddr,
		"WHISPER_DEV_WRITE_KEY="+benchWriteKey,
		"WHISPER_DEV_API_TOKEN="+benchAPIToken,
		"WHISPER_DEV_ADMIN_TOKEN="+benchAdminToken,
		"WHISPER_KAFKA_LINGER="+o.linger.String(),
	)
	cmd.Env = append(cmd.Env, o.env...)
	cmd.Stdout = banner
	cmd.Stderr = logFile
	cmd.SysProcAttr = childAttrs()
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s dev: %w", o.binary, err)
	}
	d := &dev{
		cmd: cmd, exited: make(chan struct{}), log: logFile, logger: logger,
		url: "http://" + httpAddr, writeKey: benchWriteKey, apiToken: benchAPIToken, brokers: config.StringList{kafkaAddr},
	}
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	logger.InfoContext(ctx, "started whisper dev", "pid", cmd.Process.Pid, "url", d.url, "kafka", kafkaAddr, "log", logFile.Name())
	defer func() {
		if err != nil {
			err = errors.Join(err, d.stop())
		}
	}()
	if err := d.waitReady(ctx, o.startTimeout); err != nil {
		return d, err
	}
	d.workspaceID = banner.workspaceID()
	return d, nil
}

func (d *dev) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readiness request: %w", err)
		}
		if res, err := client.Do(req); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-d.exited:
			return fmt.Errorf("whisper dev exited before it was ready (%v); see %s", d.waitErr, d.log.Name())
		case <-ctx.Done():
			return fmt.Errorf("whisper dev not ready at %s/readyz: %w; see %s", d.url, ctx.Err(), d.log.Name())
		case <-tick.C:
		}
	}
}

// stop interrupts the child as Ctrl-C would and waits for it, killing it
// when it takes too long.
func (d *dev) stop() error {
	defer d.log.Close()
	select {
	case <-d.exited:
		return fmt.Errorf("whisper dev exited early (%v); see %s", d.waitErr, d.log.Name())
	default:
	}
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		return fmt.Errorf("interrupt whisper dev: %w", err)
	}
	select {
	case <-d.exited:
	case <-time.After(40 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("whisper dev did not stop within 40s of SIGINT and was killed; see %s", d.log.Name())
	}
	if d.waitErr != nil {
		return fmt.Errorf("whisper dev: %w; see %s", d.waitErr, d.log.Name())
	}
	d.logger.Info("stopped whisper dev", "log", d.log.Name())
	return nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// workspaceLine is the banner line naming the demo workspace.
var workspaceLine = regexp.MustCompile(`(?m)^\s*Workspace\s+\S+ \(([^)\s]+)\)\s*$`)

// bannerWriter copies the child's stdout to the log and keeps the start of
// it, where the banner names the workspace.
type bannerWriter struct {
	mu   sync.Mutex
	out  *os.File
	head bytes.Buffer
}

func (w *bannerWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head.Len() < 64<<10 {
		w.head.Write(p)
	}
	return w.out.Write(p)
}

func (w *bannerWriter) workspaceID() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if m := workspaceLine.FindSubmatch(w.head.Bytes()); m != nil {
		return string(m[1])
	}
	return ""
}

// cpuMeter watches the CPU time of the processes a run on this machine
// spends: whisper-load itself, the `whisper dev` child pid (with its
// in-process broker) and the local redis-server when there is one.
func cpuMeter(pid int) loadgen.CPUMeter {
	redis := proccpu.Named("redis-server")
	return func() map[string]time.Duration {
		use := map[string]time.Duration{}
		if self, err := proccpu.Self(); err == nil {
			use["whisper-load"] = self
		}
		if dev, ok := proccpu.Of(pid); ok {
			use["whisper dev"] = dev
		}
		if r := redis(); r >= 0 {
			use["redis-server"] = r
		}
		return use
	}
}
