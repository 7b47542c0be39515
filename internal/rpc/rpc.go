// Package rpc serves a process's Connect services, plain HTTP routes,
// health, readiness and metrics on one port with HTTP/1.1 and cleartext
// HTTP/2 (h2c), and shuts it down gracefully.
//
// gRPC clients need HTTP/2; browsers and curl use HTTP/1.1; Connect works on
// both. One listener for all of them keeps Kubernetes Services, probes and
// NetworkPolicies to a single port.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config is the listener's configuration.
type Config struct {
	Addr            string
	ShutdownTimeout time.Duration
	ReadyTimeout    time.Duration
}

// RegisterFlags binds c to fs.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "http-addr", ":8080", "address of the HTTP port (Connect, gRPC, Segment HTTP API, metrics, probes)")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 25*time.Second, "how long in-flight requests may take to finish after a stop signal")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 2*time.Second, "how long each readiness check may take")
}

// Validate reports the first setting that cannot work, naming its flag.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("--http-addr: %q is not host:port: %w", c.Addr, err)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("--shutdown-timeout: must be positive, got %v", c.ShutdownTimeout)
	}
	if c.ReadyTimeout <= 0 {
		return fmt.Errorf("--ready-timeout: must be positive, got %v", c.ReadyTimeout)
	}
	return nil
}

// Check reports whether a dependency is reachable.
type Check func(ctx context.Context) error

// Server is the process's HTTP port.
type Server struct {
	cfg      Config
	logger   *slog.Logger
	mux      *http.ServeMux
	services []string

	mu     sync.Mutex
	checks map[string]Check
}

// NewServer returns a server exposing /metrics from gatherer, /healthz and
// /readyz. Services are added with Handle before Serve.
func NewServer(cfg Config, logger *slog.Logger, gatherer prometheus.Gatherer) *Server {
	s := &Server{cfg: cfg, logger: logger, mux: http.NewServeMux(), checks: map[string]Check{}}
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.serveReady)
	return s
}

// Handle registers h under pattern (a net/http ServeMux pattern).
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleService registers a Connect service under its path and names it for
// gRPC health and reflection.
func (s *Server) HandleService(name, path string, h http.Handler) {
	s.services = append(s.services, name)
	s.mux.Handle(path, h)
}

// AddCheck makes readiness depend on check.
func (s *Server) AddCheck(name string, check Check) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checks[name] = check
}

func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	names := make([]string, 0, len(s.checks))
	for n := range s.checks {
		names = append(names, n)
	}
	checks := maps.Clone(s.checks)
	s.mu.Unlock()
	sort.Strings(names)
	failed := map[string]string{}
	for _, n := range names {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
		err := checks[n](ctx)
		cancel()
		if err != nil {
			failed[n] = err.Error()
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if len(failed) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		json.NewEncoder(w).Encode(map[string]any{"ready": false, "failed": failed})
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"ready": true, "checks": names})
}

// Handler is the complete routing of the server, for in-process tests.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	checker := grpchealth.NewStaticChecker(s.services...)
	path, h := grpchealth.NewHandler(checker)
	mux.Handle(path, h)
	reflector := grpcreflect.NewStaticReflector(append([]string{grpchealth.HealthV1ServiceName}, s.services...)...)
	path, h = grpcreflect.NewHandlerV1(reflector)
	mux.Handle(path, h)
	path, h = grpcreflect.NewHandlerV1Alpha(reflector)
	mux.Handle(path, h)
	mux.Handle("/", s.mux)
	return mux
}

// Serve answers on ln until ctx ends, then stops accepting, lets in-flight
// requests finish within the shutdown timeout and returns. A nil ln listens
// on the configured address.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("listen on --http-addr %s: %w", s.cfg.Addr, err)
		}
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           s.Handler(),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.logger.InfoContext(ctx, "listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	s.logger.Info("draining http requests", "timeout", s.cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if serveErr := <-errc; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
		err = serveErr
	}
	if err != nil {
		return fmt.Errorf("shut down http: %w", err)
	}
	return nil
}
