package loadgen

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/profile/v1/profilev1connect"
)

// ProbeEvent is the track event name of freshness probes.
const ProbeEvent = "Freshness Probe"

// FreshnessConfig says how to measure profile freshness: how long after
// ingestion acknowledges an event its profile shows it.
type FreshnessConfig struct {
	// URL is the server's base URL: batches go to /v1/batch, probes are
	// read with ProfileService.GetProfile.
	URL      string
	WriteKey string
	// APIToken authenticates GetProfile (the workspace of WriteKey's).
	APIToken string
	// Rate is the events per second to send, paced open loop: request k
	// leaves at start + k×BatchSize/Rate whatever the earlier ones do.
	Rate float64
	// Bodies hold the events of each request but its probe: every request
	// carries Bodies.BatchSize()+1 events.
	Bodies *Bodies
	// Warmup runs before the measured Duration; it sends load but no probe.
	Warmup, Duration time.Duration
	// MaxInFlight bounds the requests awaiting an answer; a request due
	// while it is reached waits, and the achieved rate shows it. 256 when
	// zero.
	MaxInFlight int
	// Timeout bounds one request; 30 s when zero.
	Timeout time.Duration
	// PollInterval is how often each pending probe is read; 25 ms when zero.
	PollInterval time.Duration
	// PollConcurrency bounds the GetProfile calls in flight; 8 when zero.
	PollConcurrency int
	// ProbeTimeout is how long a probe may stay invisible before it counts
	// as never seen; 30 s when zero.
	ProbeTimeout time.Duration
	// Visible reports whether the probe of userID shows in its profile;
	// when nil, GetProfile is called at URL with APIToken.
	Visible func(ctx context.Context, userID string) (bool, error)
	Logger  *slog.Logger
}

// FreshnessResult is the outcome of RunFreshness.
type FreshnessResult struct {
	TargetRate float64       `json:"target_events_per_sec"`
	BatchSize  int           `json:"batch_size"`
	Duration   time.Duration `json:"duration_ns"`
	// Measured covers requests answered inside the measured window.
	Measured     Window  `json:"measured"`
	EventsPerSec float64 `json:"events_per_sec"`
	// MaxLag is how far behind its schedule a request left at worst
	// (MaxInFlight reached, or the generator starved of CPU).
	MaxLag time.Duration `json:"max_send_lag_ns"`
	// IngestLatency is request to acknowledgement, inside the window.
	IngestLatency Latency `json:"ingest_latency"`
	// Freshness is acknowledgement to the first GetProfile answer showing
	// the probe, for the probes of the window that were seen.
	Freshness Latency `json:"freshness"`
	Probes    int64   `json:"probes"`
	Unseen    int64   `json:"unseen_probes"`
	// Polls counts GetProfile calls; PollErrors those that failed other
	// than with not_found.
	Polls        int64             `json:"polls"`
	PollsPerSec  float64           `json:"polls_per_sec"`
	PollErrors   int64             `json:"poll_errors"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
}

// ProbeUser is the user id of the probe of request seq: distinct for every
// request of a run and across runs (the id carries the run's prefix).
func (b *Bodies) ProbeUser(seq uint64) string {
	var d [idDigits]byte
	putHex(d[:], seq)
	return "probe-" + b.prefix + string(d[:])
}

// batchOpen is how every body starts; the probe goes right after it.
const batchOpen = `{"batch":[`

// RenderProbe is Render with one more event first: a track of ProbeEvent
// by ProbeUser(seq), timestamped at, with a message id no other event of
// the run has.
func (b *Bodies) RenderProbe(dst []byte, seq uint64, at time.Time) []byte {
	dst = b.Render(dst, seq)
	var d [idDigits]byte
	putHex(d[:], seq)
	probe := fmt.Appendf(nil, `{"type":"track","messageId":"%sp%s","userId":%q,"event":%q,"properties":{},"timestamp":%q},`,
		b.prefix, d[:], b.ProbeUser(seq), ProbeEvent, at.UTC().Format(time.RFC3339Nano))
	return prependEvent(dst, probe)
}

// prependEvent inserts ev (an event and its trailing comma) as the first
// event of the rendered batch dst.
func prependEvent(dst, ev []byte) []byte {
	n := len(batchOpen)
	dst = append(dst, ev...)                       // grow by len(ev)
	copy(dst[n+len(ev):], dst[n:len(dst)-len(ev)]) // shift the events right
	copy(dst[n:], ev)
	return dst
}

// sendTime is when request k of a run paced at interval is due.
func sendTime(start time.Time, interval time.Duration, k int64) time.Time {
	return start.Add(time.Duration(k) * interval)
}

// paceOpenLoop starts send(k, due) in requests for k = 0, 1, ... at
// start + k*interval until end, whatever the answers take (open loop: a slow
// server is not offered less), with at most cap(inFlight) calls outstanding;
// each call must receive from inFlight when it ends. It returns the worst
// lag of a call behind its due time, which says whether the generator kept
// up. It does not wait for the calls.
func paceOpenLoop(ctx context.Context, start time.Time, interval time.Duration, end time.Time,
	inFlight chan struct{}, requests *sync.WaitGroup, send func(k int64, due time.Time)) (maxLag time.Duration) {
	for k := int64(0); ctx.Err() == nil; k++ {
		due := sendTime(start, interval, k)
		if !due.Before(end) {
			break
		}
		if d := time.Until(due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		select {
		case inFlight <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		maxLag = max(maxLag, time.Since(due))
		requests.Go(func() {
			defer func() { <-inFlight }()
			send(k, due)
		})
	}
	return maxLag
}

// RunFreshness sends batches at cfg.Rate for the warm-up and the measured
// duration; every request of the window carries a probe whose profile is
// then polled until it shows. It returns once every probe is seen or has
// timed out.
func RunFreshness(ctx context.Context, cfg FreshnessConfig) (FreshnessResult, error) {
	if cfg.Rate <= 0 {
		return FreshnessResult{}, fmt.Errorf("freshness: rate must be positive, got %v", cfg.Rate)
	}
	cfg.MaxInFlight = cmpOr(cfg.MaxInFlight, 256)
	cfg.Timeout = cmpOr(cfg.Timeout, 30*time.Second)
	cfg.PollInterval = cmpOr(cfg.PollInterval, 25*time.Millisecond)
	cfg.PollConcurrency = cmpOr(cfg.PollConcurrency, 8)
	cfg.ProbeTimeout = cmpOr(cfg.ProbeTimeout, 30*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Visible == nil {
		cfg.Visible = profileVisible(cfg.URL, cfg.APIToken, cfg.PollConcurrency, cfg.Timeout)
	}
	events := int64(cfg.Bodies.BatchSize() + 1)
	interval := time.Duration(float64(events) / cfg.Rate * float64(time.Second))
	target := cfg.URL + "/v1/batch"
	tr := NewTransport(cfg.MaxInFlight)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.WriteKey+":"))

	res := FreshnessResult{TargetRate: cfg.Rate, BatchSize: int(events), Duration: cfg.Duration,
		Measured: Window{Errors: map[string]int64{}}, ErrorSamples: map[string]string{}}
	var (
		mu        sync.Mutex // guards res, ingest and fresh
		ingest    Histogram
		fresh     Histogram
		polls     atomic.Int64
		pollErrs  atomic.Int64
		requests  sync.WaitGroup
		probes    sync.WaitGroup
		inFlight  = make(chan struct{}, cfg.MaxInFlight)
		pollSlots = make(chan struct{}, cfg.PollConcurrency)
	)
	sample := func(kind, msg string) {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := res.ErrorSamples[kind]; !ok {
			res.ErrorSamples[kind] = msg
		}
	}

	// watch polls one probe until it shows or times out.
	watch := func(user string, acked time.Time) {
		deadline := acked.Add(cfg.ProbeTimeout)
		for {
			select {
			case pollSlots <- struct{}{}:
			case <-ctx.Done():
				return
			}
			ok, err := cfg.Visible(ctx, user)
			<-pollSlots
			now := time.Now()
			polls.Add(1)
			if err != nil && ctx.Err() == nil {
				pollErrs.Add(1)
				sample("poll", err.Error())
			}
			if ok {
				mu.Lock()
				fresh.Record(now.Sub(acked))
				mu.Unlock()
				return
			}
			if now.After(deadline) {
				mu.Lock()
				res.Unseen++
				mu.Unlock()
				return
			}
			t := time.NewTimer(cfg.PollInterval)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	}

	send := func(seq uint64, probe bool, windowStart, windowEnd time.Time) {
		var body []byte
		if probe {
			// Dated at the batch's sentAt like its other events: ingest
			// shifts timestamps by receivedAt-sentAt, so time.Now() here
			// would date the probe in the future by the run's age.
			body = cfg.Bodies.RenderProbe(nil, seq, cfg.Bodies.SentAt())
		} else {
			body = cfg.Bodies.Render(nil, seq)
		}
		began := time.Now()
		status, err := post(ctx, client, target, auth, body)
		ended := time.Now()
		kind := ""
		switch {
		case err != nil:
			kind = "transport: " + transportKind(err)
			sample(kind, err.Error())
		case status != http.StatusOK:
			kind = "HTTP " + strconv.Itoa(status)
		}
		if kind == "" && probe {
			probes.Go(func() { watch(cfg.Bodies.ProbeUser(seq), ended) })
		}
		mu.Lock()
		defer mu.Unlock()
		if probe && kind == "" {
			res.Probes++
		}
		if !ended.Before(windowStart) && !ended.After(windowEnd) {
			res.Measured.count(kind, events)
			ingest.Record(ended.Sub(began))
		}
	}

	start := time.Now()
	windowStart := start.Add(cfg.Warmup)
	windowEnd := windowStart.Add(cfg.Duration)
	cfg.Logger.InfoContext(ctx, "freshness load", "url", cfg.URL, "rate", cfg.Rate, "batch", events,
		"interval", interval, "warmup", cfg.Warmup, "duration", cfg.Duration)
	res.MaxLag = paceOpenLoop(ctx, start, interval, windowEnd, inFlight, &requests, func(k int64, due time.Time) {
		send(uint64(k), !due.Before(windowStart), windowStart, windowEnd)
	})
	requests.Wait()
	cfg.Logger.InfoContext(ctx, "freshness load sent; waiting for the last probes", "probes", res.Probes)
	probes.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("freshness: %w", err)
	}
	res.IngestLatency = ingest.Summary()
	res.Freshness = fresh.Summary()
	res.EventsPerSec = float64(res.Measured.Accepted) / cfg.Duration.Seconds()
	res.Polls, res.PollErrors = polls.Load(), pollErrs.Load()
	res.PollsPerSec = float64(res.Polls) / time.Since(windowStart).Seconds()
	if len(res.ErrorSamples) == 0 {
		res.ErrorSamples = nil
	}
	return res, nil
}

func cmpOr[T comparable](v, fallback T) T {
	var zero T
	if v == zero {
		return fallback
	}
	return v
}

// post sends one batch and drains the answer.
func post(ctx context.Context, client *http.Client, url, auth string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.ContentLength = int64(len(body))
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	w := worker{samples: map[string]string{}}
	w.req = req
	return w.do(client)
}

// bearer adds an API token to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(r)
}

// profileVisible reads profiles with GetProfile: a probe is visible once
// its user's profile exists and counts the probe event.
func profileVisible(url, token string, conns int, timeout time.Duration) func(context.Context, string) (bool, error) {
	hc := &http.Client{Transport: bearer{token: token, next: NewTransport(conns)}, Timeout: timeout}
	pc := profilev1connect.NewProfileServiceClient(hc, url)
	return func(ctx context.Context, user string) (bool, error) {
		res, err := pc.GetProfile(ctx, &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: user}})
		if connect.CodeOf(err) == connect.CodeNotFound {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		if res.GetProfile().GetEventCounts()[ProbeEvent] < 1 {
			return false, errors.New("profile exists without its probe event")
		}
		return true, nil
	}
}

// The targets of the freshness benchmark.
const (
	TargetFreshnessP99 = time.Second
	// TargetRateShare is the share of the asked rate that must be
	// achieved for the freshness number to count as measured at that rate.
	TargetRateShare = 0.95
)

// FreshnessReport is a freshness run, as printed and as --json.
type FreshnessReport struct {
	Machine   Machine         `json:"machine"`
	Freshness FreshnessResult `json:"freshness"`
	Targets   []Target        `json:"targets"`
}

// Judge fills Targets from the result.
func (r *FreshnessReport) Judge() {
	f := r.Freshness
	r.Targets = []Target{{
		Name: "profile freshness p99 (ingest ack -> GetProfile shows it)", Want: "< " + TargetFreshnessP99.String(),
		Got: ms(f.Freshness.P99), Pass: f.Freshness.Count > 0 && f.Freshness.P99 < TargetFreshnessP99,
	}, {
		Name: "achieved rate", Want: fmt.Sprintf(">= %.0f events/s (%.0f%% of %.0f)", f.TargetRate*TargetRateShare, TargetRateShare*100, f.TargetRate),
		Got: fmt.Sprintf("%.0f events/s", f.EventsPerSec), Pass: f.EventsPerSec >= f.TargetRate*TargetRateShare,
	}, {
		Name: "probes seen", Want: "all",
		Got: fmt.Sprintf("%d of %d", f.Probes-f.Unseen, f.Probes), Pass: f.Probes > 0 && f.Unseen == 0,
	}}
}

// Passed reports whether every target was met.
func (r *FreshnessReport) Passed() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return true
}

// WriteText prints the report as a table.
func (r *FreshnessReport) WriteText(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	f := r.Freshness
	fmt.Fprintf(tw, "machine\t%d CPUs; %s\n", r.Machine.CPUs, r.Machine.Note)
	fmt.Fprintf(tw, "load\t%.0f events/s open loop, batches of %d events (1 probe: a new user tracking %q), %v measured\n\n",
		f.TargetRate, f.BatchSize, ProbeEvent, f.Duration)
	fmt.Fprintf(tw, "INGEST (POST /v1/batch)\n")
	fmt.Fprintf(tw, "  requests\t%d\n", f.Measured.Requests)
	fmt.Fprintf(tw, "  accepted events/s\t%.0f\n", f.EventsPerSec)
	fmt.Fprintf(tw, "  latency p50 / p99 / max\t%s / %s / %s\n", ms(f.IngestLatency.P50), ms(f.IngestLatency.P99), ms(f.IngestLatency.Max))
	fmt.Fprintf(tw, "  worst send lag\t%s\n", ms(f.MaxLag))
	if len(f.Measured.Errors) == 0 {
		fmt.Fprintf(tw, "  errors\tnone\n")
	}
	for _, k := range slices.Sorted(maps.Keys(f.Measured.Errors)) {
		fmt.Fprintf(tw, "  errors %s\t%d\n", k, f.Measured.Errors[k])
	}
	fmt.Fprintf(tw, "\nFRESHNESS (ack -> GetProfile shows the probe)\n")
	fmt.Fprintf(tw, "  probes\t%d seen, %d unseen\n", f.Freshness.Count, f.Unseen)
	fmt.Fprintf(tw, "  p50 / p99 / max\t%s / %s / %s\n", ms(f.Freshness.P50), ms(f.Freshness.P99), ms(f.Freshness.Max))
	fmt.Fprintf(tw, "  polls\t%d (%.0f/s), %d failed\n", f.Polls, f.PollsPerSec, f.PollErrors)
	for _, k := range slices.Sorted(maps.Keys(f.ErrorSamples)) {
		fmt.Fprintf(tw, "  sample %s\t%s\n", k, f.ErrorSamples[k])
	}
	fmt.Fprintln(tw)
	for _, t := range r.Targets {
		verdict := "FAIL"
		if t.Pass {
			verdict = "PASS"
		}
		fmt.Fprintf(tw, "%s\t%s: %s (target %s)\n", verdict, t.Name, t.Got, t.Want)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(w, b.String())
	return err
}
