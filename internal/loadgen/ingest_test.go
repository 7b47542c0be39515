package loadgen

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// fakeIngest is an in-memory /v1/batch that answers by request number and
// remembers what it answered.
type fakeIngest struct {
	t      *testing.T
	answer func(n int) int // status of the n-th request; 0 hangs up
	mu     sync.Mutex
	n      int
	status map[int]int // status -> requests; 0 for hang-ups
	ids    map[string]bool
	stored int
}

func (f *fakeIngest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if user, _, _ := r.BasicAuth(); r.URL.Path != "/v1/batch" || user != "wk_test" || r.Header.Get("Content-Type") != "application/json" {
		f.t.Errorf("request %s %s with user %q and type %q", r.Method, r.URL.Path, user, r.Header.Get("Content-Type"))
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		f.t.Errorf("read body: %v", err)
		return
	}
	var b batchJSON
	if err := json.Unmarshal(body, &b); err != nil {
		f.t.Errorf("body is not JSON: %v", err)
	}
	f.mu.Lock()
	n := f.n
	f.n++
	status := f.answer(n)
	f.status[status]++
	if status == http.StatusOK {
		for _, ev := range b.Batch {
			if f.ids[ev.MessageID] {
				f.t.Errorf("messageId %s sent twice", ev.MessageID)
			}
			f.ids[ev.MessageID] = true
		}
		f.stored += len(b.Batch)
	}
	f.mu.Unlock()
	if status == 0 {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			f.t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	w.WriteHeader(status)
	io.WriteString(w, `{"success":true}`)
}

func TestRunIngestCountsEveryAnswer(t *testing.T) {
	tests := []struct {
		name        string
		connections int
		answer      func(n int) int
		wantKinds   []string
	}{
		{"all accepted", 4, func(int) int { return http.StatusOK }, nil},
		{"unavailable and refused", 3, func(n int) int {
			switch {
			case n%5 == 4:
				return http.StatusServiceUnavailable
			case n%7 == 6:
				return http.StatusBadRequest
			}
			return http.StatusOK
		}, []string{"HTTP 503", "HTTP 400"}},
		{"hang-ups", 2, func(n int) int {
			if n%3 == 2 {
				return 0
			}
			return http.StatusOK
		}, []string{"transport: connection closed (EOF)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeIngest{t: t, answer: tt.answer, status: map[int]int{}, ids: map[string]bool{}}
			srv := httptest.NewServer(f)
			defer srv.Close()
			bodies, err := NewBodies(BodiesOptions{Templates: 3, BatchSize: 10})
			if err != nil {
				t.Fatal(err)
			}
			res, err := RunIngest(t.Context(), IngestConfig{
				URL: srv.URL, WriteKey: "wk_test", Connections: tt.connections,
				Warmup: 50 * time.Millisecond, Duration: 300 * time.Millisecond, Bodies: bodies,
			})
			if err != nil {
				t.Fatal(err)
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if res.Total.Requests != int64(f.n) {
				t.Errorf("Total.Requests = %d, server saw %d", res.Total.Requests, f.n)
			}
			if res.Total.Accepted != int64(f.stored) {
				t.Errorf("Total.Accepted = %d events, server stored %d", res.Total.Accepted, f.stored)
			}
			var errs int64
			for kind, n := range res.Total.Errors {
				errs += n
				if !slices.Contains(tt.wantKinds, kind) {
					t.Errorf("unexpected error kind %q (%d times); samples %v", kind, n, res.ErrorSamples)
				}
			}
			if want := int64(f.n - f.status[http.StatusOK]); errs != want {
				t.Errorf("errors add up to %d, server failed %d requests: %v", errs, want, res.Total.Errors)
			}
			for status, n := range f.status {
				if status != 0 && status != http.StatusOK && res.Total.Errors["HTTP "+strconv.Itoa(status)] != int64(n) {
					t.Errorf("Total.Errors = %v, server answered %d %d times", res.Total.Errors, status, n)
				}
			}
			m := res.Measured
			if m.Requests == 0 || m.Requests > res.Total.Requests || m.Accepted > res.Total.Accepted {
				t.Errorf("Measured = %+v, Total = %+v: the window must hold some and at most all", m, res.Total)
			}
			if res.Latency.Count != uint64(m.Requests) {
				t.Errorf("latency counts %d requests, window %d", res.Latency.Count, m.Requests)
			}
			if want := float64(m.Accepted) / 0.3; res.EventsPerSec != want {
				t.Errorf("EventsPerSec = %v, want %v", res.EventsPerSec, want)
			}
		})
	}
}

func TestRunIngestConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	bodies, err := NewBodies(BodiesOptions{Templates: 1, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	res, err := RunIngest(t.Context(), IngestConfig{URL: url, WriteKey: "k", Connections: 2, Duration: 50 * time.Millisecond, Bodies: bodies})
	if err != nil {
		t.Fatal(err)
	}
	if n := res.Total.Errors["transport: connection refused"]; n == 0 || n != res.Total.Requests || res.Total.Accepted != 0 {
		t.Errorf("against a closed port: %+v, want every request counted as connection refused", res.Total)
	}
}

// The CPU meter is read at the window's start and end, and what each
// process used in between is divided by the events accepted in it.
func TestRunIngestMeasuresCPUPerEvent(t *testing.T) {
	f := &fakeIngest{t: t, answer: func(int) int { return http.StatusOK }, status: map[int]int{}, ids: map[string]bool{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	bodies, err := NewBodies(BodiesOptions{Templates: 3, BatchSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var readAt []time.Time
	meter := func() map[string]time.Duration {
		mu.Lock()
		defer mu.Unlock()
		readAt = append(readAt, time.Now())
		// The server used 2 s more by the second reading; "gone" is
		// read only once and so left out.
		use := map[string]time.Duration{"server": time.Duration(len(readAt)) * 2 * time.Second}
		if len(readAt) == 1 {
			use["gone"] = time.Second
		}
		return use
	}
	start := time.Now()
	res, err := RunIngest(t.Context(), IngestConfig{
		URL: srv.URL, WriteKey: "wk_test", Connections: 2,
		Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond, Bodies: bodies, CPU: meter,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(readAt) != 2 || readAt[0].Sub(start) < 100*time.Millisecond || readAt[1].Sub(start) < 400*time.Millisecond {
		t.Fatalf("meter read at %v after the start, want at the window's start (100ms) and end (400ms)", readAt)
	}
	want := 2e6 / float64(res.Measured.Accepted)
	if got := res.CPUPerEvent; len(got) != 1 || got["server"] != want {
		t.Errorf("CPUPerEvent = %v, want server %.3f µs", got, want)
	}
}

func TestCPURatioNeedsTheSameProcesses(t *testing.T) {
	r := Report{
		Ingest:  IngestResult{EventsPerSec: 100, CPUPerEvent: CPUUse{"dev": 8, "redis": 2}},
		Ceiling: &CeilingResult{RecordsPerSec: 300, CPUPerRecord: CPUUse{"dev": 2.5, "redis": 0.5}},
	}
	r.Judge()
	if r.CPURatio != 0.3 {
		t.Errorf("CPURatio = %v, want 3 µs over 10 µs = 0.3", r.CPURatio)
	}
	if got := r.Ingest.CPUPerEvent.String(); got != "dev 8.0 µs, redis 2.0 µs: 10.0 µs" {
		t.Errorf("String() = %q", got)
	}
	r.Ceiling.CPUPerRecord = CPUUse{"dev": 3}
	r.Judge()
	if r.CPURatio != 0 {
		t.Errorf("CPURatio = %v over different processes, want none", r.CPURatio)
	}
}
