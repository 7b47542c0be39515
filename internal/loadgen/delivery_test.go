package loadgen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRenderTrigger(t *testing.T) {
	at := time.Date(2026, 11, 28, 3, 0, 0, 123456789, time.UTC)
	b, err := NewBodies(BodiesOptions{Templates: 3, BatchSize: 9})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Batch []struct {
			Type, Event, UserID, MessageID string
			Properties                     map[string]any
			Timestamp                      time.Time
		} `json:"batch"`
	}
	if err := json.Unmarshal(b.RenderTrigger(nil, 42, at), &got); err != nil {
		t.Fatalf("RenderTrigger is not JSON: %v", err)
	}
	if len(got.Batch) != 10 {
		t.Fatalf("%d events, want 10", len(got.Batch))
	}
	tr := got.Batch[0]
	want := map[string]any{"run": b.prefix, "seq": 42.0, "sent": fmt.Sprint(at.UnixNano())}
	if tr.Type != "track" || tr.Event != b.TriggerEventName() || !strings.HasPrefix(tr.Event, TriggerEvent) || tr.UserID != b.TriggerUser(42) || fmt.Sprint(tr.Properties) != fmt.Sprint(want) {
		t.Errorf("trigger %+v, want a track of %q by %q with properties %v", tr, b.TriggerEventName(), b.TriggerUser(42), want)
	}
	if !tr.Timestamp.Equal(b.SentAt()) {
		t.Errorf("trigger timestamp %v, want the batch's sentAt %v (else ingest dates it in the future)", tr.Timestamp, b.SentAt())
	}
	if b.TriggerUser(42) == b.TriggerUser(43) || b.TriggerUser(42) == b.ProbeUser(42) {
		t.Errorf("trigger users are not distinct: %q", b.TriggerUser(42))
	}
}

// fakeDelivery is a /v1/batch that, for each accepted trigger, posts the
// webhook the benchmark's template would render to the receiver: after a
// delay, as many times as asked, signed or not.
type fakeDelivery struct {
	status int
	delay  time.Duration
	copies int // webhooks per trigger
	signed bool
	hook   string
}

func (f *fakeDelivery) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Batch []struct {
			Event      string         `json:"event"`
			Properties map[string]any `json:"properties"`
		} `json:"batch"`
	}
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || len(b.Batch) == 0 {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	if f.status == http.StatusOK && strings.HasPrefix(b.Batch[0].Event, TriggerEvent) {
		p := b.Batch[0].Properties
		body, _ := json.Marshal(map[string]any{"run": p["run"], "seq": p["seq"], "sent": p["sent"]})
		go func() {
			time.Sleep(f.delay)
			for range f.copies {
				req, _ := http.NewRequest(http.MethodPost, f.hook, bytes.NewReader(body))
				if f.signed {
					req.Header.Set("Test-Signature", "ok")
				}
				if res, err := http.DefaultClient.Do(req); err == nil {
					res.Body.Close()
				}
			}
		}()
	}
	w.WriteHeader(f.status)
}

func TestRunDelivery(t *testing.T) {
	tests := []struct {
		name     string
		fake     fakeDelivery
		wantOnce bool // the "delivered once" target passes
		check    func(DeliveryResult) error
	}{
		{"delivered once", fakeDelivery{status: http.StatusOK, delay: 30 * time.Millisecond, copies: 1, signed: true}, true,
			func(r DeliveryResult) error {
				if r.Delivered != r.Triggers || r.Missing != 0 || r.Duplicates != 0 || r.Latency.P50 < 30*time.Millisecond {
					return errors.New("want every trigger delivered once, none before 30ms")
				}
				return nil
			}},
		{"delivered twice", fakeDelivery{status: http.StatusOK, copies: 2, signed: true}, false,
			func(r DeliveryResult) error {
				if r.Delivered != r.Triggers || r.Duplicates < r.Triggers { // warm-up triggers are sent twice too
					return errors.New("want every trigger delivered, each once more as a duplicate")
				}
				return nil
			}},
		{"never delivered", fakeDelivery{status: http.StatusOK, copies: 0}, false,
			func(r DeliveryResult) error {
				if r.Delivered != 0 || r.Missing != r.Triggers || r.Triggers == 0 {
					return errors.New("want every trigger missing")
				}
				return nil
			}},
		{"bad signature", fakeDelivery{status: http.StatusOK, copies: 1, signed: false}, false,
			func(r DeliveryResult) error {
				if r.Delivered != 0 || r.Rejected < r.Triggers || !strings.Contains(r.ErrorSamples["webhook signature"], "unsigned") {
					return errors.New("want every webhook refused for its signature")
				}
				return nil
			}},
		{"ingest refuses", fakeDelivery{status: http.StatusServiceUnavailable, copies: 1, signed: true}, false,
			func(r DeliveryResult) error {
				if r.Triggers != 0 || r.Measured.Errors["HTTP 503"] != r.Measured.Requests {
					return errors.New("want no trigger expected, every request HTTP 503")
				}
				return nil
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bodies, err := NewBodies(BodiesOptions{Templates: 2, BatchSize: 9})
			if err != nil {
				t.Fatal(err)
			}
			recv := NewHookReceiver(bodies, func(h http.Header, _ []byte) error {
				if h.Get("Test-Signature") != "ok" {
					return errors.New("unsigned")
				}
				return nil
			})
			hook := httptest.NewServer(recv)
			defer hook.Close()
			f := tt.fake
			f.hook = hook.URL
			srv := httptest.NewServer(&f)
			defer srv.Close()
			const rate, duration = 1000.0, 400 * time.Millisecond
			res, err := RunDelivery(t.Context(), DeliveryConfig{
				URL: srv.URL, WriteKey: "wk_test", Rate: rate, Bodies: bodies,
				Warmup: 100 * time.Millisecond, Duration: duration, DeliveryTimeout: 300 * time.Millisecond, Receiver: recv,
			})
			if err != nil {
				t.Fatal(err)
			}
			// Pacing is TestRunFreshness's to check: it shares sendTime.
			if res.Measured.Requests == 0 {
				t.Fatalf("no request in the measured window")
			}
			if err := tt.check(res); err != nil {
				t.Errorf("%v; got %d triggers, %d delivered, %d missing, %d duplicates, %d rejected, latency %+v, errors %v",
					err, res.Triggers, res.Delivered, res.Missing, res.Duplicates, res.Rejected, res.Latency, res.ErrorSamples)
			}
			report := &DeliveryReport{Delivery: res}
			report.Judge()
			if once := report.Targets[2]; once.Pass != tt.wantOnce || (report.Passed() && !tt.wantOnce) {
				t.Errorf("delivered once: %+v, Passed() = %v; want pass %v", once, report.Passed(), tt.wantOnce)
			}
			var out strings.Builder
			if err := report.WriteText(&out); err != nil || !strings.Contains(out.String(), "DELIVERY") {
				t.Errorf("WriteText = %v, %q", err, out.String())
			}
		})
	}
}

func TestDeliveryJudge(t *testing.T) {
	good := DeliveryResult{TargetRate: 1000, EventsPerSec: 1000, Triggers: 10, Delivered: 10, Latency: Latency{Count: 10, P99: time.Second}}
	tests := []struct {
		name   string
		modify func(*DeliveryResult)
		want   []bool // p99, rate, delivered once
	}{
		{"all good", func(*DeliveryResult) {}, []bool{true, true, true}},
		{"slow", func(r *DeliveryResult) { r.Latency.P99 = 2 * time.Second }, []bool{false, true, true}},
		{"rate missed", func(r *DeliveryResult) { r.EventsPerSec = 900 }, []bool{true, false, true}},
		{"one missing", func(r *DeliveryResult) { r.Delivered, r.Missing = 9, 1 }, []bool{true, true, false}},
		{"one duplicate", func(r *DeliveryResult) { r.Duplicates = 1 }, []bool{true, true, false}},
		{"one refused", func(r *DeliveryResult) { r.Rejected = 1 }, []bool{true, true, false}},
		{"nothing measured", func(r *DeliveryResult) { *r = DeliveryResult{TargetRate: 1000} }, []bool{false, false, false}},
	}
	for _, tt := range tests {
		res := good
		tt.modify(&res)
		r := &DeliveryReport{Delivery: res}
		r.Judge()
		for i, target := range r.Targets {
			if target.Pass != tt.want[i] {
				t.Errorf("%s: %s pass = %v, want %v (got %s)", tt.name, target.Name, target.Pass, tt.want[i], target.Got)
			}
		}
	}
}
