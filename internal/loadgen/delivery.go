package loadgen

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// TriggerEvent starts the name of the track event that triggers the
// delivery benchmark's webhook campaign; TriggerEventName is the whole name.
const TriggerEvent = "Load Checkout"

// TriggerEventName is the trigger's event name in this run: the campaign
// of an earlier run (left active by a crash) never fires on it.
func (b *Bodies) TriggerEventName() string {
	return TriggerEvent + " " + strings.TrimSuffix(b.prefix, "-")
}

// DeliveryConfig says how to measure event to delivery: from sending a
// batch with a trigger event until the webhook it causes arrives.
type DeliveryConfig struct {
	// URL is the server's base URL: batches go to /v1/batch.
	URL      string
	WriteKey string
	// Rate is the events per second to send, paced open loop as in
	// FreshnessConfig.
	Rate float64
	// Bodies hold the events of each request but its trigger: every
	// request carries Bodies.BatchSize()+1 events, one of them a
	// TriggerEvent by a new user.
	Bodies *Bodies
	// Warmup runs before the measured Duration; its triggers are sent and
	// delivered but not measured.
	Warmup, Duration time.Duration
	// MaxInFlight bounds the requests awaiting an answer; 256 when zero.
	MaxInFlight int
	// Timeout bounds one request; 30 s when zero.
	Timeout time.Duration
	// DeliveryTimeout is how long after the last request the run waits
	// for the webhooks still missing; 30 s when zero.
	DeliveryTimeout time.Duration
	// Receiver is where the webhooks arrive (its handler must be served
	// at the campaign's destination while the run lasts).
	Receiver *HookReceiver
	Logger   *slog.Logger
}

// DeliveryResult is the outcome of RunDelivery.
type DeliveryResult struct {
	TargetRate float64       `json:"target_events_per_sec"`
	BatchSize  int           `json:"batch_size"`
	Duration   time.Duration `json:"duration_ns"`
	// Measured covers requests answered inside the measured window.
	Measured     Window        `json:"measured"`
	EventsPerSec float64       `json:"events_per_sec"`
	MaxLag       time.Duration `json:"max_send_lag_ns"`
	// Triggers counts the measured window's triggers that ingest
	// accepted; each should cause exactly one webhook.
	Triggers  int64 `json:"triggers"`
	Delivered int64 `json:"delivered"`
	Missing   int64 `json:"missing"`
	// Duplicates counts webhook requests beyond the first for a trigger
	// (same delivery id or not): in a run without crashes, none.
	Duplicates int64 `json:"duplicates"`
	// Rejected counts webhook requests the receiver refused: bad
	// signature, unparseable body, unknown trigger.
	Rejected int64 `json:"rejected"`
	// Latency is the batch's send to its webhook's arrival.
	Latency      Latency           `json:"event_to_delivery"`
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
}

// TriggerUser is the user of the trigger of request seq: a new user every
// time, so per-user contact caps never hold a trigger back.
func (b *Bodies) TriggerUser(seq uint64) string {
	var d [idDigits]byte
	putHex(d[:], seq)
	return "buyer-" + b.prefix + string(d[:])
}

// RenderTrigger is Render with one more event first: a track of
// TriggerEvent by TriggerUser(seq) whose properties carry seq, the run's
// prefix and the send time (unix nanoseconds), for the webhook body.
// Its name is TriggerEventName. Its timestamp is the batch's sentAt, as
// the other events' are near it: ingest corrects timestamps for the
// client's clock by sentAt, so a timestamp of at (later than the
// pre-rendered sentAt) would date the event in the future, and decide
// would hold its decision until then.
func (b *Bodies) RenderTrigger(dst []byte, seq uint64, at time.Time) []byte {
	dst = b.Render(dst, seq)
	var d [idDigits]byte
	putHex(d[:], seq)
	ev := fmt.Appendf(nil, `{"type":"track","messageId":"%st%s","userId":%q,"event":%q,"properties":{"run":%q,"seq":%d,"sent":"%d"},"timestamp":%q},`,
		b.prefix, d[:], b.TriggerUser(seq), b.TriggerEventName(), b.prefix, seq, at.UnixNano(), b.sentAt.Format(time.RFC3339Nano))
	return prependEvent(dst, ev)
}

// TriggerWebhookBody is the Liquid body of the benchmark's webhook
// template: what HookReceiver reads back.
const TriggerWebhookBody = `{"run": {{ event.run | json }}, "seq": {{ event.seq | json }}, "sent": {{ event.sent | json }}}`

// HookReceiver receives the benchmark's webhooks: it checks each one with
// Verify, reads the trigger it is for from the body, and records when the
// first one for each trigger arrived. Its zero value is not usable: use
// NewHookReceiver.
type HookReceiver struct {
	run    string
	verify func(http.Header, []byte) error

	mu       sync.Mutex
	sent     map[uint64]sentTrigger
	arrived  map[uint64]time.Time
	dups     int64
	rejected int64
	samples  map[string]string
	notify   chan struct{}
}

type sentTrigger struct {
	at       time.Time
	measured bool
}

// NewHookReceiver returns a receiver for the triggers of bodies' run;
// verify checks a request's signature (channel.VerifySignature in
// whisper-load).
func NewHookReceiver(bodies *Bodies, verify func(header http.Header, body []byte) error) *HookReceiver {
	return &HookReceiver{run: bodies.prefix, verify: verify, sent: map[uint64]sentTrigger{}, arrived: map[uint64]time.Time{},
		samples: map[string]string{}, notify: make(chan struct{}, 1)}
}

// expect registers trigger seq as accepted by ingest at sent.
func (h *HookReceiver) expect(seq uint64, sent time.Time, measured bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.sent[seq] = sentTrigger{at: sent, measured: measured}
}

func (h *HookReceiver) reject(kind, msg string) {
	h.rejected++
	if _, ok := h.samples[kind]; !ok {
		h.samples[kind] = msg
	}
}

// ServeHTTP acknowledges every webhook with 204 once it is recorded;
// a refused one gets 400, which deliver does not retry.
func (h *HookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return
	}
	var hook struct {
		Run  string `json:"run"`
		Seq  uint64 `json:"seq"`
		Sent string `json:"sent"`
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch err := h.verify(r.Header, body); {
	case err != nil:
		h.reject("signature", err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	case json.Unmarshal(body, &hook) != nil || hook.Run != h.run:
		h.reject("body", "not a webhook of this run: "+string(body))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if _, seen := h.arrived[hook.Seq]; seen {
		h.dups++
	} else {
		h.arrived[hook.Seq] = now
	}
	select {
	case h.notify <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// missing counts the measured triggers not delivered yet.
func (h *HookReceiver) missing() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for seq, s := range h.sent {
		if _, ok := h.arrived[seq]; s.measured && !ok {
			n++
		}
	}
	return n
}

// RunDelivery sends batches at cfg.Rate for the warm-up and the measured
// duration, each with a trigger, and returns once every measured trigger's
// webhook arrived or cfg.DeliveryTimeout passed after the last request.
func RunDelivery(ctx context.Context, cfg DeliveryConfig) (DeliveryResult, error) {
	if cfg.Rate <= 0 {
		return DeliveryResult{}, fmt.Errorf("delivery: rate must be positive, got %v", cfg.Rate)
	}
	if cfg.Receiver == nil {
		return DeliveryResult{}, fmt.Errorf("delivery: Receiver is required")
	}
	cfg.MaxInFlight = cmpOr(cfg.MaxInFlight, 256)
	cfg.Timeout = cmpOr(cfg.Timeout, 30*time.Second)
	cfg.DeliveryTimeout = cmpOr(cfg.DeliveryTimeout, 30*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	events := int64(cfg.Bodies.BatchSize() + 1)
	interval := time.Duration(float64(events) / cfg.Rate * float64(time.Second))
	target := cfg.URL + "/v1/batch"
	tr := NewTransport(cfg.MaxInFlight)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(cfg.WriteKey+":"))

	res := DeliveryResult{TargetRate: cfg.Rate, BatchSize: int(events), Duration: cfg.Duration,
		Measured: Window{Errors: map[string]int64{}}, ErrorSamples: map[string]string{}}
	var (
		mu       sync.Mutex // guards res
		requests sync.WaitGroup
		inFlight = make(chan struct{}, cfg.MaxInFlight)
	)
	send := func(seq uint64, windowStart, windowEnd time.Time) {
		began := time.Now()
		body := cfg.Bodies.RenderTrigger(nil, seq, began)
		status, err := post(ctx, client, target, auth, body)
		ended := time.Now()
		kind := ""
		switch {
		case err != nil:
			kind = "transport: " + transportKind(err)
		case status != http.StatusOK:
			kind = "HTTP " + strconv.Itoa(status)
		}
		measured := !began.Before(windowStart)
		if kind == "" {
			cfg.Receiver.expect(seq, began, measured)
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if _, ok := res.ErrorSamples[kind]; !ok {
				res.ErrorSamples[kind] = err.Error()
			}
		}
		if measured && kind == "" {
			res.Triggers++
		}
		if !ended.Before(windowStart) && !ended.After(windowEnd) {
			res.Measured.count(kind, events)
		}
	}

	start := time.Now()
	windowStart := start.Add(cfg.Warmup)
	windowEnd := windowStart.Add(cfg.Duration)
	cfg.Logger.InfoContext(ctx, "delivery load", "url", cfg.URL, "rate", cfg.Rate, "batch", events,
		"interval", interval, "warmup", cfg.Warmup, "duration", cfg.Duration)
	res.MaxLag = paceOpenLoop(ctx, start, interval, windowEnd, inFlight, &requests, func(k int64, _ time.Time) {
		send(uint64(k), windowStart, windowEnd)
	})
	requests.Wait()
	h := cfg.Receiver
	cfg.Logger.InfoContext(ctx, "delivery load sent; waiting for the last webhooks", "triggers", res.Triggers, "missing", h.missing())
	deadline := time.NewTimer(cfg.DeliveryTimeout)
	defer deadline.Stop()
	for h.missing() > 0 {
		select {
		case <-ctx.Done():
			return res, fmt.Errorf("delivery: %w", ctx.Err())
		case <-deadline.C:
		case <-h.notify:
			continue
		}
		break
	}
	// Whatever came twice came by now: the last webhooks arrived after
	// the others' retries would have.
	h.mu.Lock()
	defer h.mu.Unlock()
	var lat Histogram
	for seq, s := range h.sent {
		if !s.measured {
			continue
		}
		if at, ok := h.arrived[seq]; ok {
			res.Delivered++
			lat.Record(at.Sub(s.at))
		} else {
			res.Missing++
		}
	}
	res.Duplicates, res.Rejected = h.dups, h.rejected
	for k, v := range h.samples {
		res.ErrorSamples["webhook "+k] = v
	}
	res.Latency = lat.Summary()
	res.EventsPerSec = float64(res.Measured.Accepted) / cfg.Duration.Seconds()
	if len(res.ErrorSamples) == 0 {
		res.ErrorSamples = nil
	}
	return res, nil
}

// TargetDeliveryP99 is the event-to-delivery target.
const TargetDeliveryP99 = 2 * time.Second

// DeliveryReport is a delivery run, as printed and as --json.
type DeliveryReport struct {
	Machine  Machine        `json:"machine"`
	Delivery DeliveryResult `json:"delivery"`
	Targets  []Target       `json:"targets"`
}

// Judge fills Targets from the result.
func (r *DeliveryReport) Judge() {
	d := r.Delivery
	r.Targets = []Target{{
		Name: "event to delivery p99 (batch sent -> signed webhook arrives)", Want: "< " + TargetDeliveryP99.String(),
		Got: ms(d.Latency.P99), Pass: d.Latency.Count > 0 && d.Latency.P99 < TargetDeliveryP99,
	}, {
		Name: "achieved rate", Want: fmt.Sprintf(">= %.0f events/s (%.0f%% of %.0f)", d.TargetRate*TargetRateShare, TargetRateShare*100, d.TargetRate),
		Got: fmt.Sprintf("%.0f events/s", d.EventsPerSec), Pass: d.EventsPerSec >= d.TargetRate*TargetRateShare,
	}, {
		Name: "triggers delivered once", Want: "all, no duplicate, none refused",
		Got:  fmt.Sprintf("%d of %d, %d missing, %d duplicates, %d refused", d.Delivered, d.Triggers, d.Missing, d.Duplicates, d.Rejected),
		Pass: d.Triggers > 0 && d.Delivered == d.Triggers && d.Duplicates == 0 && d.Rejected == 0,
	}}
}

// Passed reports whether every target was met.
func (r *DeliveryReport) Passed() bool {
	for _, t := range r.Targets {
		if !t.Pass {
			return false
		}
	}
	return true
}

// WriteText prints the report as a table.
func (r *DeliveryReport) WriteText(w io.Writer) error {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	d := r.Delivery
	fmt.Fprintf(tw, "machine\t%d CPUs; %s\n", r.Machine.CPUs, r.Machine.Note)
	fmt.Fprintf(tw, "load\t%.0f events/s open loop, batches of %d events (1 trigger: a new user tracking %q), %v measured\n\n",
		d.TargetRate, d.BatchSize, TriggerEvent, d.Duration)
	fmt.Fprintf(tw, "INGEST (POST /v1/batch)\n")
	fmt.Fprintf(tw, "  requests\t%d\n", d.Measured.Requests)
	fmt.Fprintf(tw, "  accepted events/s\t%.0f\n", d.EventsPerSec)
	fmt.Fprintf(tw, "  worst send lag\t%s\n", ms(d.MaxLag))
	if len(d.Measured.Errors) == 0 {
		fmt.Fprintf(tw, "  errors\tnone\n")
	}
	for _, k := range slices.Sorted(maps.Keys(d.Measured.Errors)) {
		fmt.Fprintf(tw, "  errors %s\t%d\n", k, d.Measured.Errors[k])
	}
	fmt.Fprintf(tw, "\nDELIVERY (batch sent -> signed webhook arrives)\n")
	fmt.Fprintf(tw, "  triggers\t%d: %d delivered, %d missing, %d duplicates, %d refused\n", d.Triggers, d.Delivered, d.Missing, d.Duplicates, d.Rejected)
	fmt.Fprintf(tw, "  p50 / p99 / max\t%s / %s / %s\n", ms(d.Latency.P50), ms(d.Latency.P99), ms(d.Latency.Max))
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
