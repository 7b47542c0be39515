package loadgen

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
)

// fakeDecisions is a DecisionService whose Decide answers after a delay,
// with an outcome or an error, and remembers what it was asked and how.
type fakeDecisions struct {
	decisionv1connect.UnimplementedDecisionServiceHandler
	delay   time.Duration
	outcome decisionv1.Outcome
	err     *connect.Error

	mu       sync.Mutex
	users    map[string]int
	requests map[string]int
	notH2    int // calls not over HTTP/2
	badAuth  int // calls without the API token
	campaign map[string]int
}

func (f *fakeDecisions) Decide(ctx context.Context, req *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
	f.mu.Lock()
	f.users[req.GetUserId()]++
	f.requests[req.GetRequestId()]++
	f.campaign[req.GetCampaignId()]++
	f.mu.Unlock()
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	return &decisionv1.DecideResponse{Decision: &decisionv1.Decision{Outcome: f.outcome, UserId: req.GetUserId()}}, nil
}

// serve serves f over HTTP/1.1 and h2c, as the whisper server does, and
// counts the calls that came otherwise than over HTTP/2 with the token.
func (f *fakeDecisions) serve(t *testing.T, token string) string {
	path, h := decisionv1connect.NewDecisionServiceHandler(f)
	mux := http.NewServeMux()
	mux.Handle(path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		if r.ProtoMajor != 2 {
			f.notH2++
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			f.badAuth++
		}
		f.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestRunDecide(t *testing.T) {
	const (
		rate     = 1000.0
		warmup   = 100 * time.Millisecond
		duration = 300 * time.Millisecond
		// Calls due in the window: one every millisecond.
		wantOffered = 300
	)
	tests := []struct {
		name    string
		delay   time.Duration
		outcome decisionv1.Outcome
		err     *connect.Error
		timeout time.Duration
		// maxInFlight is DecideConfig.MaxInFlight; 0 is its default.
		maxInFlight int
		check       func(DecideResult) error
		// Whether the completed target passes; the p99 target is
		// checked only to fail for a server slower than it (on a busy
		// machine a fast one may miss it too).
		completed, slow bool
	}{
		{"sends", 2 * time.Millisecond, decisionv1.Outcome_OUTCOME_SEND, nil, 0, 0,
			func(r DecideResult) error {
				if r.Completed != r.Offered || r.Outcomes["OUTCOME_SEND"] != r.Completed || r.Errors != nil {
					return errors.New("want every call completed with OUTCOME_SEND")
				}
				if r.Latency.Count != uint64(r.Completed) || r.Latency.P50 < 2*time.Millisecond || r.LatencyP90 < r.Latency.P50 || r.LatencyP90 > r.Latency.P99 {
					return errors.New("want a latency per completed call, none under the server's 2ms, p50 <= p90 <= p99")
				}
				if r.SendSpan < duration || r.SendSpan > duration+150*time.Millisecond || r.CompletedPerSec != float64(r.Completed)/r.SendSpan.Seconds() {
					return errors.New("want the window's calls sent in about its duration, the completed rate over that")
				}
				return nil
			}, true, false},
		{"slow, many calls in flight", 30 * time.Millisecond, decisionv1.Outcome_OUTCOME_CAPPED, nil, 0, 0,
			func(r DecideResult) error {
				if r.Completed != r.Offered || r.Outcomes["OUTCOME_CAPPED"] != r.Completed || r.Latency.P50 < 30*time.Millisecond {
					return errors.New("want every call completed with OUTCOME_CAPPED after 30ms")
				}
				return nil
			}, true, true},
		{"held back by MaxInFlight", 20 * time.Millisecond, decisionv1.Outcome_OUTCOME_SEND, nil, 0, 10,
			func(r DecideResult) error {
				// 10 calls of 20ms at a time: 500 calls/s at most, so
				// the window's 300 calls take about 0.7s to leave.
				if r.Completed != r.Offered || r.MaxLag < 100*time.Millisecond || r.SendSpan < 500*time.Millisecond || r.CompletedPerSec > 600 {
					return errors.New("want every call completed, but late, at 500 calls/s at most")
				}
				return nil
			}, false, true},
		{"refused", 0, 0, connect.NewError(connect.CodeFailedPrecondition, errors.New("campaign not active")), 0, 0,
			func(r DecideResult) error {
				if r.Completed != 0 || r.Errors["failed_precondition"] != r.Offered || !strings.Contains(r.ErrorSamples["failed_precondition"], "campaign not active") {
					return errors.New("want every call failed_precondition, with the server's message as sample")
				}
				return nil
			}, false, false},
		{"timeout", time.Second, 0, nil, 20 * time.Millisecond, 0,
			func(r DecideResult) error {
				if r.Completed != 0 || r.Errors["deadline_exceeded"] != r.Offered {
					return errors.New("want every call deadline_exceeded")
				}
				return nil
			}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDecisions{delay: tt.delay, outcome: tt.outcome, err: tt.err,
				users: map[string]int{}, requests: map[string]int{}, campaign: map[string]int{}}
			url := f.serve(t, "wt_test")
			res, err := RunDecide(t.Context(), DecideConfig{URL: url, APIToken: "wt_test", CampaignID: "c1",
				Rate: rate, Warmup: warmup, Duration: duration, Timeout: tt.timeout, MaxInFlight: tt.maxInFlight})
			if err != nil {
				t.Fatal(err)
			}
			if res.Offered != wantOffered || res.OfferedPerSec != wantOffered/duration.Seconds() {
				t.Errorf("offered %d calls (%.0f/s), want %d: one per millisecond of the window", res.Offered, res.OfferedPerSec, wantOffered)
			}
			if res.Connections != 1 {
				t.Errorf("%d connections, want every call on one", res.Connections)
			}
			if err := tt.check(res); err != nil {
				t.Errorf("%v; got %d offered, %d completed, errors %v, outcomes %v, latency %+v p90 %v, samples %v",
					err, res.Offered, res.Completed, res.Errors, res.Outcomes, res.Latency, res.LatencyP90, res.ErrorSamples)
			}
			f.mu.Lock()
			calls := len(f.users)
			for u, n := range f.users {
				if n != 1 || !strings.HasPrefix(u, "decide-") {
					t.Errorf("user %q decided %d times, want once", u, n)
				}
			}
			if len(f.requests) != calls || f.campaign["c1"] != calls || f.notH2 != 0 || f.badAuth != 0 {
				t.Errorf("%d users, %d request ids, %d calls for the campaign, %d not over HTTP/2, %d without the token; want a user and request id per call, every call h2c with the token",
					calls, len(f.requests), f.campaign["c1"], f.notH2, f.badAuth)
			}
			// A call that times out may do so before the server sees it.
			if tt.timeout == 0 && calls != wantOffered+int(warmup/time.Millisecond) {
				t.Errorf("the server saw %d calls, want the warm-up's and the window's", calls)
			}
			f.mu.Unlock()

			report := &DecideReport{Decide: res}
			report.Judge()
			if p99 := report.Targets[0]; tt.slow && p99.Pass {
				t.Errorf("%s passes (got %s) for a server slower than the target", p99.Name, p99.Got)
			}
			if completed := report.Targets[1]; completed.Pass != tt.completed {
				t.Errorf("%s: pass = %v, want %v (got %s)", completed.Name, completed.Pass, tt.completed, completed.Got)
			}
			var out strings.Builder
			if err := report.WriteText(&out); err != nil || !strings.Contains(out.String(), "DECIDE") {
				t.Errorf("WriteText = %v, %q", err, out.String())
			}
		})
	}
}

func TestRunDecideConfig(t *testing.T) {
	tests := []struct {
		cfg  DecideConfig
		want string
	}{
		{DecideConfig{CampaignID: "c1"}, "rate must be positive"},
		{DecideConfig{Rate: -1, CampaignID: "c1"}, "rate must be positive"},
		{DecideConfig{Rate: 10}, "CampaignID is required"},
	}
	for _, tt := range tests {
		if _, err := RunDecide(t.Context(), tt.cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("RunDecide(%+v) = %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

func TestDecideJudge(t *testing.T) {
	good := DecideResult{TargetRate: 1000, Offered: 1000, Completed: 1000, OfferedPerSec: 1000, CompletedPerSec: 1000,
		Latency: Latency{Count: 1000, P99: 9 * time.Millisecond}}
	tests := []struct {
		name   string
		modify func(*DecideResult)
		want   []bool // p99, completed
	}{
		{"all good", func(*DecideResult) {}, []bool{true, true}},
		{"p99 at the target", func(r *DecideResult) { r.Latency.P99 = 10 * time.Millisecond }, []bool{false, true}},
		{"99% completed", func(r *DecideResult) { r.Completed, r.CompletedPerSec, r.Latency.Count = 990, 990, 990 }, []bool{true, true}},
		{"98.9% completed", func(r *DecideResult) { r.Completed, r.CompletedPerSec, r.Latency.Count = 989, 989, 989 }, []bool{true, false}},
		{"all completed, sent in twice the time", func(r *DecideResult) { r.CompletedPerSec = 500 }, []bool{true, false}},
		{"nothing measured", func(r *DecideResult) { *r = DecideResult{TargetRate: 1000} }, []bool{false, false}},
	}
	for _, tt := range tests {
		res := good
		tt.modify(&res)
		r := &DecideReport{Decide: res}
		r.Judge()
		for i, target := range r.Targets {
			if target.Pass != tt.want[i] {
				t.Errorf("%s: %s pass = %v, want %v (got %s)", tt.name, target.Name, target.Pass, tt.want[i], target.Got)
			}
		}
		if r.Passed() != !slices.Contains(tt.want, false) {
			t.Errorf("%s: Passed() = %v, want %v", tt.name, r.Passed(), !slices.Contains(tt.want, false))
		}
	}
}
