package loadgen

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRenderProbe(t *testing.T) {
	at := time.Date(2026, 11, 27, 23, 0, 0, 123456789, time.UTC)
	tests := []struct {
		batchSize int
		seq       uint64
	}{
		{1, 0},
		{5, 7},
		{99, 1 << 40},
	}
	for _, tt := range tests {
		b, err := NewBodies(BodiesOptions{Templates: 3, BatchSize: tt.batchSize})
		if err != nil {
			t.Fatal(err)
		}
		var got, plain batchJSON
		if err := json.Unmarshal(b.RenderProbe(make([]byte, 0, 8), tt.seq, at), &got); err != nil {
			t.Fatalf("RenderProbe(batch %d, seq %d) is not JSON: %v", tt.batchSize, tt.seq, err)
		}
		if err := json.Unmarshal(b.Render(nil, tt.seq), &plain); err != nil {
			t.Fatal(err)
		}
		if len(got.Batch) != tt.batchSize+1 {
			t.Fatalf("batch %d, seq %d: %d events, want %d", tt.batchSize, tt.seq, len(got.Batch), tt.batchSize+1)
		}
		p := got.Batch[0]
		if p.Type != "track" || p.Event != ProbeEvent || p.UserID != b.ProbeUser(tt.seq) || !p.Timestamp.Equal(at) {
			t.Errorf("batch %d, seq %d: probe %+v, want a track of %q by %q at %v", tt.batchSize, tt.seq, p, ProbeEvent, b.ProbeUser(tt.seq), at)
		}
		ids := map[string]bool{}
		for i, ev := range got.Batch {
			if ids[ev.MessageID] {
				t.Errorf("batch %d, seq %d: messageId %q repeats", tt.batchSize, tt.seq, ev.MessageID)
			}
			ids[ev.MessageID] = true
			if i > 0 && ev.MessageID != plain.Batch[i-1].MessageID {
				t.Errorf("batch %d, seq %d: event %d is %q, Render has %q", tt.batchSize, tt.seq, i, ev.MessageID, plain.Batch[i-1].MessageID)
			}
		}
		if b.ProbeUser(tt.seq) == b.ProbeUser(tt.seq+1) {
			t.Errorf("ProbeUser(%d) = ProbeUser(%d)", tt.seq, tt.seq+1)
		}
	}
}

func TestSendTime(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		interval time.Duration
		k        int64
		want     time.Duration
	}{
		{20 * time.Millisecond, 0, 0},
		{20 * time.Millisecond, 50, time.Second},
		{time.Millisecond, 3_600_000, time.Hour},
	}
	for _, tt := range tests {
		if got := sendTime(start, tt.interval, tt.k).Sub(start); got != tt.want {
			t.Errorf("sendTime(start, %v, %d) = start+%v, want start+%v", tt.interval, tt.k, got, tt.want)
		}
	}
}

// fakeProfiles is a /v1/batch that remembers when each probe was accepted,
// and a Visible that shows a probe delay after that.
type fakeProfiles struct {
	status   int
	delay    time.Duration // < 0: never visible
	mu       sync.Mutex
	accepted map[string]time.Time
}

func (f *fakeProfiles) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b batchJSON
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || len(b.Batch) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if f.status == http.StatusOK && b.Batch[0].Event == ProbeEvent {
		f.mu.Lock()
		f.accepted[b.Batch[0].UserID] = time.Now()
		f.mu.Unlock()
	}
	w.WriteHeader(f.status)
}

func (f *fakeProfiles) visible(_ context.Context, user string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.accepted[user]
	if !ok {
		return false, nil
	}
	return f.delay >= 0 && time.Since(at) >= f.delay, nil
}

func TestRunFreshness(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		delay      time.Duration
		wantSeen   bool
		wantUnseen bool
		wantPass   bool
	}{
		{"visible at once", http.StatusOK, 0, true, false, true},
		{"visible after 60ms", http.StatusOK, 60 * time.Millisecond, true, false, true},
		{"never visible", http.StatusOK, -1, false, true, false},
		{"ingest refuses", http.StatusServiceUnavailable, 0, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeProfiles{status: tt.status, delay: tt.delay, accepted: map[string]time.Time{}}
			srv := httptest.NewServer(f)
			defer srv.Close()
			bodies, err := NewBodies(BodiesOptions{Templates: 2, BatchSize: 9})
			if err != nil {
				t.Fatal(err)
			}
			const rate, duration = 2000.0, 400 * time.Millisecond
			res, err := RunFreshness(t.Context(), FreshnessConfig{
				URL: srv.URL, WriteKey: "wk_test", Rate: rate, Bodies: bodies,
				Warmup: 100 * time.Millisecond, Duration: duration,
				PollInterval: 10 * time.Millisecond, ProbeTimeout: 150 * time.Millisecond, Visible: f.visible,
			})
			if err != nil {
				t.Fatal(err)
			}
			// 2000 events/s in requests of 10 is a request every 5ms: 80
			// in the window, give or take the edges.
			if n := res.Measured.Requests; n < 70 || n > 82 {
				t.Errorf("Measured.Requests = %d, want about 80 (open loop at %v/s)", n, rate)
			}
			if seen := res.Freshness.Count > 0; seen != tt.wantSeen {
				t.Errorf("Freshness = %+v; want probes seen: %v", res.Freshness, tt.wantSeen)
			}
			if tt.wantSeen && (res.Freshness.Count != uint64(res.Probes) || res.Freshness.P50 < tt.delay) {
				t.Errorf("Freshness = %+v over %d probes; want all seen, none before %v", res.Freshness, res.Probes, tt.delay)
			}
			if unseen := res.Unseen > 0; unseen != tt.wantUnseen || (unseen && res.Unseen != res.Probes) {
				t.Errorf("Unseen = %d of %d probes; want all unseen: %v", res.Unseen, res.Probes, tt.wantUnseen)
			}
			if tt.status != http.StatusOK && (res.Probes != 0 || res.Measured.Errors["HTTP 503"] != res.Measured.Requests) {
				t.Errorf("against a refusing ingest: %d probes, errors %v; want none, all requests HTTP 503", res.Probes, res.Measured.Errors)
			}
			report := &FreshnessReport{Freshness: res}
			report.Judge()
			if report.Passed() != tt.wantPass {
				t.Errorf("Passed() = %v, want %v; targets %+v", report.Passed(), tt.wantPass, report.Targets)
			}
			var out strings.Builder
			if err := report.WriteText(&out); err != nil || !strings.Contains(out.String(), "FRESHNESS") {
				t.Errorf("WriteText = %v, %q", err, out.String())
			}
		})
	}
}

func TestFreshnessJudge(t *testing.T) {
	tests := []struct {
		name string
		res  FreshnessResult
		want []bool // freshness, rate, probes
	}{
		{"all good", FreshnessResult{TargetRate: 5000, EventsPerSec: 4990, Probes: 10, Freshness: Latency{Count: 10, P99: 900 * time.Millisecond}}, []bool{true, true, true}},
		{"stale", FreshnessResult{TargetRate: 5000, EventsPerSec: 5000, Probes: 10, Freshness: Latency{Count: 10, P99: time.Second}}, []bool{false, true, true}},
		{"rate missed", FreshnessResult{TargetRate: 5000, EventsPerSec: 4000, Probes: 10, Freshness: Latency{Count: 10, P99: time.Millisecond}}, []bool{true, false, true}},
		{"probe lost", FreshnessResult{TargetRate: 5000, EventsPerSec: 5000, Probes: 10, Unseen: 1, Freshness: Latency{Count: 9, P99: time.Millisecond}}, []bool{true, true, false}},
		{"nothing measured", FreshnessResult{TargetRate: 5000}, []bool{false, false, false}},
	}
	for _, tt := range tests {
		r := &FreshnessReport{Freshness: tt.res}
		r.Judge()
		for i, target := range r.Targets {
			if target.Pass != tt.want[i] {
				t.Errorf("%s: %s pass = %v, want %v (got %s)", tt.name, target.Name, target.Pass, tt.want[i], target.Got)
			}
		}
	}
}

// The pacer starts one call per interval until the end, each at or after
// its due time, and never has more outstanding than inFlight holds: a
// stuck server makes it wait, not pile up calls.
func TestPaceOpenLoop(t *testing.T) {
	var (
		mu       sync.Mutex
		calls    []int64
		early    int
		running  int
		peak     int
		requests sync.WaitGroup
	)
	inFlight := make(chan struct{}, 3)
	start := time.Now()
	const interval = 2 * time.Millisecond
	lag := paceOpenLoop(context.Background(), start, interval, start.Add(40*time.Millisecond), inFlight, &requests, func(k int64, due time.Time) {
		mu.Lock()
		calls = append(calls, k)
		if time.Now().Before(due) || !due.Equal(sendTime(start, interval, k)) {
			early++
		}
		running++
		peak = max(peak, running)
		mu.Unlock()
		time.Sleep(5 * time.Millisecond) // slower than the pace
		mu.Lock()
		running--
		mu.Unlock()
	})
	requests.Wait()
	if len(calls) != 20 || early > 0 || peak > 3 {
		t.Errorf("%d calls (want 20), %d before their time (want 0), at most %d at once (want ≤ 3)", len(calls), early, peak)
	}
	if lag <= 0 {
		t.Errorf("max lag %v with calls slower than the pace and 3 in flight; want it to show", lag)
	}
}
