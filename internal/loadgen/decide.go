package loadgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"connectrpc.com/connect"

	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
)

// DecideConfig says how to measure the Decide RPC: calls at a fixed rate,
// each for a new user, timed from send to answer.
type DecideConfig struct {
	// URL is the server's base URL, where DecisionService is served.
	URL string
	// APIToken authenticates the calls; CampaignID is in its workspace.
	APIToken string
	// CampaignID is the active campaign every call decides.
	CampaignID string
	// Rate is the calls per second, paced open loop: call k leaves at
	// start + k/Rate whatever the earlier ones do.
	Rate float64
	// Warmup runs before the measured Duration; its calls are made but not
	// measured.
	Warmup, Duration time.Duration
	// MaxInFlight bounds the calls awaiting an answer; a call due while it
	// is reached waits, and the worst send lag shows it. 256 when zero.
	MaxInFlight int
	// Timeout bounds one call; 30 s when zero. A call that reaches it
	// fails with deadline_exceeded.
	Timeout time.Duration
	Logger  *slog.Logger
}

// DecideResult is the outcome of RunDecide. The measured calls are those
// due inside the measured window; each is followed to its answer, even
// one that comes after the window closed.
type DecideResult struct {
	TargetRate float64       `json:"target_calls_per_sec"`
	Warmup     time.Duration `json:"warmup_ns"`
	Duration   time.Duration `json:"duration_ns"`
	// Offered counts the measured calls; Completed those answered with a
	// decision.
	Offered   int64 `json:"offered"`
	Completed int64 `json:"completed"`
	// SendSpan is how long the measured calls took to leave: Duration
	// when the generator kept its schedule, longer when it fell behind
	// (MaxInFlight reached because the server stalled, or the generator
	// starved of CPU).
	SendSpan time.Duration `json:"send_span_ns"`
	// OfferedPerSec is Offered over Duration: the schedule, TargetRate.
	// CompletedPerSec is Completed over SendSpan, so a run that could not
	// keep the schedule shows a lower rate even if every call completed.
	OfferedPerSec   float64 `json:"offered_calls_per_sec"`
	CompletedPerSec float64 `json:"completed_calls_per_sec"`
	// MaxLag is how far behind its schedule a call left at worst
	// (MaxInFlight reached, or the generator starved of CPU).
	MaxLag time.Duration `json:"max_send_lag_ns"`
	// Connections counts the TCP connections dialled for the calls: one
	// when every call multiplexed on one HTTP/2 connection, as intended.
	Connections int64 `json:"connections"`
	// Latency is send to answer of the completed calls; LatencyP90 is its
	// 90th percentile, which Latency does not carry.
	Latency    Latency       `json:"latency"`
	LatencyP90 time.Duration `json:"latency_p90_ns"`
	// Errors counts the measured calls that failed, by Connect code
	// ("deadline_exceeded" for a call that reached Timeout).
	Errors map[string]int64 `json:"errors,omitempty"`
	// Outcomes counts the completed calls by decision outcome
	// (OUTCOME_SEND, OUTCOME_CAPPED, ...).
	Outcomes map[string]int64 `json:"outcomes,omitempty"`
	// ErrorSamples holds one message per Connect code, warm-up included.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
}

// decideIDs names the user and request of each call of one run: a new
// user per call, and a run prefix so that no two runs share one (per-user
// caps would hold back a user decided for before, and a repeated
// request_id returns the first decision).
type decideIDs struct{ run string }

func newDecideIDs() (decideIDs, error) {
	var p [6]byte
	if _, err := rand.Read(p[:]); err != nil {
		return decideIDs{}, fmt.Errorf("loadgen: decide run id: %w", err)
	}
	return decideIDs{run: "ld" + hex.EncodeToString(p[:])}, nil
}

func (ids decideIDs) user(seq uint64) string {
	var d [idDigits]byte
	putHex(d[:], seq)
	return "decide-" + ids.run + "-" + string(d[:])
}

func (ids decideIDs) request(seq uint64) string {
	var d [idDigits]byte
	putHex(d[:], seq)
	return ids.run + "-" + string(d[:])
}

// newH2CTransport is a transport that sends every request over one
// HTTP/2 cleartext connection, as gRPC and Connect callers multiplex their
// calls; over HTTP/1.1 the transport keeps two idle connections per host,
// so concurrent calls would open and close one each and the latency would
// include dials. Calls beyond the server's stream limit wait for a stream
// rather than open a second connection. dials counts the connections.
func newH2CTransport() (transport *http.Transport, dials *atomic.Int64) {
	dials = new(atomic.Int64)
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	transport = &http.Transport{
		Protocols: protocols,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return dialer.DialContext(ctx, network, addr)
		},
		MaxConnsPerHost:    1,
		HTTP2:              &http.HTTP2Config{StrictMaxConcurrentRequests: true},
		DisableCompression: true,
	}
	return transport, dials
}

// RunDecide calls DecisionService.Decide at cfg.Rate for the warm-up and
// the measured duration, over one h2c connection, and returns once every
// call was answered or timed out.
func RunDecide(ctx context.Context, cfg DecideConfig) (DecideResult, error) {
	if cfg.Rate <= 0 {
		return DecideResult{}, fmt.Errorf("decide: rate must be positive, got %v", cfg.Rate)
	}
	if cfg.CampaignID == "" {
		return DecideResult{}, errors.New("decide: CampaignID is required")
	}
	cfg.MaxInFlight = cmpOr(cfg.MaxInFlight, 256)
	cfg.Timeout = cmpOr(cfg.Timeout, 30*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ids, err := newDecideIDs()
	if err != nil {
		return DecideResult{}, err
	}
	tr, dials := newH2CTransport()
	defer tr.CloseIdleConnections()
	client := decisionv1connect.NewDecisionServiceClient(&http.Client{Transport: bearer{token: cfg.APIToken, next: tr}}, cfg.URL)
	interval := time.Duration(float64(time.Second) / cfg.Rate)

	res := DecideResult{TargetRate: cfg.Rate, Warmup: cfg.Warmup, Duration: cfg.Duration,
		Errors: map[string]int64{}, Outcomes: map[string]int64{}, ErrorSamples: map[string]string{}}
	var (
		mu       sync.Mutex // guards res, hist and lastSend
		hist     Histogram
		lastSend time.Time // of a measured call
		requests sync.WaitGroup
		inFlight = make(chan struct{}, cfg.MaxInFlight)
	)
	call := func(seq uint64, measured bool) {
		callCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
		req := &decisionv1.DecideRequest{CampaignId: cfg.CampaignID, UserId: ids.user(seq), RequestId: ids.request(seq)}
		began := time.Now()
		answer, err := client.Decide(callCtx, req)
		took := time.Since(began)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			code := connect.CodeOf(err).String()
			if _, ok := res.ErrorSamples[code]; !ok {
				res.ErrorSamples[code] = err.Error()
			}
			if measured {
				res.Offered++
				res.Errors[code]++
				lastSend = later(lastSend, began)
			}
			return
		}
		if measured {
			res.Offered++
			res.Completed++
			lastSend = later(lastSend, began)
			hist.Record(took)
			res.Outcomes[answer.GetDecision().GetOutcome().String()]++
		}
	}

	start := time.Now()
	windowStart := start.Add(cfg.Warmup)
	windowEnd := windowStart.Add(cfg.Duration)
	cfg.Logger.InfoContext(ctx, "decide load", "url", cfg.URL, "campaign", cfg.CampaignID, "rate", cfg.Rate,
		"interval", interval, "warmup", cfg.Warmup, "duration", cfg.Duration, "timeout", cfg.Timeout)
	res.MaxLag = paceOpenLoop(ctx, start, interval, windowEnd, inFlight, &requests, func(k int64, due time.Time) {
		call(uint64(k), !due.Before(windowStart))
	})
	requests.Wait()
	if err := ctx.Err(); err != nil {
		return res, fmt.Errorf("decide: %w", err)
	}
	res.Connections = dials.Load()
	res.Latency = hist.Summary()
	res.LatencyP90 = hist.Quantile(0.90)
	res.SendSpan = max(cfg.Duration, lastSend.Sub(windowStart))
	res.OfferedPerSec = float64(res.Offered) / cfg.Duration.Seconds()
	res.CompletedPerSec = float64(res.Completed) / res.SendSpan.Seconds()
	for _, m := range []*map[string]int64{&res.Errors, &res.Outcomes} {
		if len(*m) == 0 {
			*m = nil
		}
	}
	if len(res.ErrorSamples) == 0 {
		res.ErrorSamples = nil
	}
	return res, nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// The targets of the Decide benchmark (issue #4: "Decide RPC p99 below
// 10 ms at 1,000 req/s").
const (
	TargetDecideP99 = 10 * time.Millisecond
	// TargetDecideCompleted is the share of the offered rate that must be
	// answered with decisions: the p99 is over answered calls only, so
	// failures and timeouts must not hide the slow ones, nor a generator
	// that sent fewer calls than asked.
	TargetDecideCompleted = 0.99
)

// DecideReport is a Decide run, as printed and as --json.
type DecideReport struct {
	Machine Machine      `json:"machine"`
	Decide  DecideResult `json:"decide"`
	Targets []Target     `json:"targets"`
}

// Judge fills Targets from the result.
func (r *DecideReport) Judge() {
	d := r.Decide
	share := 0.0
	if d.OfferedPerSec > 0 {
		share = d.CompletedPerSec / d.OfferedPerSec
	}
	r.Targets = []Target{{
		Name: "Decide p99 (call sent -> decision answered)", Want: "< " + TargetDecideP99.String(),
		Got: msFine(d.Latency.P99), Pass: d.Latency.Count > 0 && d.Latency.P99 < TargetDecideP99,
	}, {
		Name: "completed calls", Want: fmt.Sprintf(">= %.0f%% of offered", TargetDecideCompleted*100),
		Got:  fmt.Sprintf("%.0f of %.0f calls/s (%.2f%%)", d.CompletedPerSec, d.OfferedPerSec, share*100),
		Pass: d.Offered > 0 && share >= TargetDecideCompleted,
	}}
}

// Passed reports whether every target was met.
func (r *DecideReport) Passed() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return true
}

// msFine is ms with two decimals: one would print 9.96 ms, under a 10 ms
// target, as 10.0 ms.
func msFine(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// WriteText prints the report as a table.
func (r *DecideReport) WriteText(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	d := r.Decide
	fmt.Fprintf(tw, "machine\t%d CPUs; %s\n", r.Machine.CPUs, r.Machine.Note)
	fmt.Fprintf(tw, "load\t%.0f Decide calls/s open loop, each a new user, over one h2c connection (Connect, binary protobuf), %v measured after %v warm-up\n\n",
		d.TargetRate, d.Duration, d.Warmup)
	fmt.Fprintf(tw, "DECIDE (DecisionService.Decide)\n")
	fmt.Fprintf(tw, "  offered\t%.0f calls/s (%d calls)\n", d.OfferedPerSec, d.Offered)
	fmt.Fprintf(tw, "  completed\t%.0f calls/s (%d calls, sent in %v)\n", d.CompletedPerSec, d.Completed, d.SendSpan.Round(time.Millisecond))
	fmt.Fprintf(tw, "  connections\t%d\n", d.Connections)
	fmt.Fprintf(tw, "  worst send lag\t%s\n", msFine(d.MaxLag))
	fmt.Fprintf(tw, "  p50 / p90 / p99 / max\t%s / %s / %s / %s\n",
		msFine(d.Latency.P50), msFine(d.LatencyP90), msFine(d.Latency.P99), msFine(d.Latency.Max))
	if len(d.Errors) == 0 {
		fmt.Fprintf(tw, "  errors\tnone\n")
	}
	for _, k := range slices.Sorted(maps.Keys(d.Errors)) {
		fmt.Fprintf(tw, "  errors %s\t%d\n", k, d.Errors[k])
	}
	for _, k := range slices.Sorted(maps.Keys(d.Outcomes)) {
		fmt.Fprintf(tw, "  outcome %s\t%d\n", k, d.Outcomes[k])
	}
	for _, k := range slices.Sorted(maps.Keys(d.ErrorSamples)) {
		fmt.Fprintf(tw, "  sample %s\t%s\n", k, d.ErrorSamples[k])
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
