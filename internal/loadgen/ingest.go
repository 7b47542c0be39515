package loadgen

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// IngestConfig says where to send load and for how long.
type IngestConfig struct {
	// URL is the server's base URL; batches go to URL + "/v1/batch".
	URL      string
	WriteKey string
	// Connections is the number of concurrent connections, each with one
	// request in flight at a time.
	Connections int
	// Warmup runs before the measured Duration and is left out of results.
	Warmup, Duration time.Duration
	// Timeout bounds one request; 30 s when zero.
	Timeout time.Duration
	Bodies  *Bodies
	Logger  *slog.Logger
	// CPU, when set, is read at the start and the end of the measured
	// window, for the CPU time each process spent per accepted event.
	CPU CPUMeter
}

// Window is what happened in one stretch of a run.
type Window struct {
	Requests int64 `json:"requests"`
	// Accepted counts events in requests answered 200.
	Accepted int64 `json:"accepted_events"`
	// Errors counts failed requests by "HTTP <status>" or "transport: <kind>".
	Errors map[string]int64 `json:"errors,omitempty"`
}

// IngestResult is the outcome of RunIngest.
type IngestResult struct {
	Connections int           `json:"connections"`
	Duration    time.Duration `json:"duration_ns"`
	// Measured covers requests that ended inside the measured window.
	Measured     Window  `json:"measured"`
	EventsPerSec float64 `json:"events_per_sec"`
	Latency      Latency `json:"latency"`
	// Total covers the whole run, warm-up and the requests still in flight
	// when the window closed included: what the server must have stored.
	Total Window `json:"total"`
	// ErrorSamples holds one message per error kind (for a status, the
	// start of the answer's body), for diagnosis.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	// CPUPerEvent is the CPU time each process watched by the config's
	// CPU meter spent per accepted event in the measured window, in µs.
	CPUPerEvent CPUUse `json:"cpu_us_per_event,omitempty"`
}

// worker is one connection's loop state; everything a request needs is
// allocated once here.
type worker struct {
	buf      []byte
	body     reusableBody
	req      *http.Request
	hist     Histogram
	measured Window
	total    Window
	samples  map[string]string
}

// reusableBody lets a worker reuse its buffer: the transport closes a
// request body once it no longer reads it, even when the request fails.
type reusableBody struct {
	bytes.Reader
	inUse sync.WaitGroup
}

func (b *reusableBody) Close() error {
	b.inUse.Done()
	return nil
}

// NewTransport is an HTTP/1.1 transport that keeps one idle connection per
// worker, so connections are reused rather than re-dialled.
func NewTransport(connections int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        connections,
		MaxIdleConnsPerHost: connections,
		MaxConnsPerHost:     connections,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// RunIngest sends batches over cfg.Connections connections for the warm-up
// and then the measured duration, and returns what the server answered.
// Requests still in flight when the window closes are awaited but only
// counted in Total.
func RunIngest(ctx context.Context, cfg IngestConfig) (IngestResult, error) {
	if cfg.Connections < 1 {
		return IngestResult{}, fmt.Errorf("connections must be at least 1, got %d", cfg.Connections)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	target := cfg.URL + "/v1/batch"
	tr := NewTransport(cfg.Connections)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.WriteKey+":"))

	workers := make([]*worker, cfg.Connections)
	for i := range workers {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, http.NoBody)
		if err != nil {
			return IngestResult{}, fmt.Errorf("ingest request: %w", err)
		}
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		workers[i] = &worker{buf: make([]byte, 0, cfg.Bodies.MaxLen()), req: req,
			measured: Window{Errors: map[string]int64{}}, total: Window{Errors: map[string]int64{}},
			samples: map[string]string{}}
	}

	var seq atomic.Uint64
	start := time.Now()
	windowStart := start.Add(cfg.Warmup)
	windowEnd := windowStart.Add(cfg.Duration)
	cfg.Logger.InfoContext(ctx, "ingest load", "url", target, "connections", cfg.Connections, "warmup", cfg.Warmup, "duration", cfg.Duration)
	cpu := cpuWindow(ctx, cfg.CPU, windowStart, windowEnd)
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.run(ctx, client, cfg.Bodies, &seq, windowStart, windowEnd) })
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return IngestResult{}, fmt.Errorf("ingest load: %w", err)
	}

	res := IngestResult{
		Connections: cfg.Connections,
		Duration:    cfg.Duration,
		Measured:    Window{Errors: map[string]int64{}},
		Total:       Window{Errors: map[string]int64{}},
	}
	var hist Histogram
	for _, w := range workers {
		hist.Merge(&w.hist)
		res.Measured.add(w.measured)
		res.Total.add(w.total)
		for k, v := range w.samples {
			if res.ErrorSamples == nil {
				res.ErrorSamples = map[string]string{}
			}
			res.ErrorSamples[k] = v
		}
	}
	res.Latency = hist.Summary()
	res.EventsPerSec = float64(res.Measured.Accepted) / cfg.Duration.Seconds()
	res.CPUPerEvent = cpu(res.Measured.Accepted)
	return res, nil
}

func (w *Window) add(o Window) {
	w.Requests += o.Requests
	w.Accepted += o.Accepted
	if w.Errors == nil {
		w.Errors = map[string]int64{}
	}
	for k, v := range o.Errors {
		w.Errors[k] += v
	}
}

// count adds one request: accepted when kind is empty, else failed.
func (w *Window) count(kind string, events int64) {
	w.Requests++
	if kind == "" {
		w.Accepted += events
		return
	}
	w.Errors[kind]++
}

func (w *worker) run(ctx context.Context, client *http.Client, bodies *Bodies, seq *atomic.Uint64, windowStart, windowEnd time.Time) {
	events := int64(bodies.BatchSize())
	for ctx.Err() == nil {
		began := time.Now()
		if !began.Before(windowEnd) {
			return
		}
		w.buf = bodies.Render(w.buf, seq.Add(1)-1)
		w.body.Reset(w.buf)
		w.body.inUse.Add(1)
		w.req.Body = &w.body
		w.req.ContentLength = int64(len(w.buf))
		status, err := w.do(client)
		ended := time.Now()
		// The transport may still hold the body after an early answer;
		// the buffer is rewritten only once it let go.
		w.body.inUse.Wait()

		kind := ""
		switch {
		case err != nil:
			kind = "transport: " + transportKind(err)
			if _, ok := w.samples[kind]; !ok {
				w.samples[kind] = err.Error()
			}
		case status != http.StatusOK:
			kind = "HTTP " + strconv.Itoa(status)
		}
		w.total.count(kind, events)
		if !ended.Before(windowStart) && !ended.After(windowEnd) {
			w.measured.count(kind, events)
			w.hist.Record(ended.Sub(began))
		}
	}
}

// do sends the worker's request and drains the answer so the connection
// can be reused. The first answer of each failing status is kept as a
// sample.
func (w *worker) do(client *http.Client) (int, error) {
	res, err := client.Do(w.req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		kind := "HTTP " + strconv.Itoa(res.StatusCode)
		if _, ok := w.samples[kind]; !ok {
			msg, _ := io.ReadAll(io.LimitReader(res.Body, 300))
			w.samples[kind] = string(bytes.TrimSpace(msg))
		}
	}
	if _, err := io.Copy(io.Discard, res.Body); err != nil {
		return 0, fmt.Errorf("read answer: %w", err)
	}
	return res.StatusCode, nil
}

// transportKind names an error without its addresses, so errors of one kind
// count together.
func transportKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed (EOF)"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}
