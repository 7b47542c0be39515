package channel

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

func webhookMessage(id, to, body string) Message {
	return Message{DeliveryID: id, WorkspaceID: "ws1", UserID: "u1", To: to,
		Content: &contentv1.Message{Channel: contentv1.Channel_CHANNEL_WEBHOOK, Content: &contentv1.Content{Body: body}}}
}

func TestWebhookSendSigned(t *testing.T) {
	secret := []byte("whsec_test")
	type got struct {
		Method, Path, ContentType, DeliveryID, IdempotencyKey, Body string
		Verify                                                      string
	}
	gotc := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		v := "ok"
		if err := VerifySignature(secret, r.Header, b, time.Now(), 5*time.Minute); err != nil {
			v = err.Error()
		}
		gotc <- got{r.Method, r.URL.Path, r.Header.Get("Content-Type"), r.Header.Get("Whisper-Delivery-Id"), r.Header.Get("Idempotency-Key"), string(b), v}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	wh, err := NewWebhook(WebhookConfig{Secret: secret, AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"event":"welcome","user":"u1"}`
	if _, err := wh.Send(context.Background(), webhookMessage("dlv-9", srv.URL+"/hook", body)); err != nil {
		t.Fatal(err)
	}
	want := got{"POST", "/hook", "application/json", "dlv-9", `"dlv-9"`, body, "ok"}
	if diff := cmp.Diff(want, <-gotc); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
}

func TestWebhookStatusClassification(t *testing.T) {
	var hits atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		switch code {
		case 429, 503:
			w.Header().Set("Retry-After", "7")
		case 302:
			w.Header().Set("Location", other.URL)
		}
		w.WriteHeader(code)
	}))
	defer srv.Close()
	wh, err := NewWebhook(WebhookConfig{Secret: []byte("k"), AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	type class struct {
		OK, Retryable, Bounce bool
		RetryAfter            time.Duration
		Code                  string
	}
	for _, tc := range []struct {
		code int
		want class
	}{
		{200, class{OK: true}},
		{202, class{OK: true}},
		{408, class{Retryable: true, Code: "http_408"}},
		{429, class{Retryable: true, RetryAfter: 7 * time.Second, Code: "http_429"}},
		{500, class{Retryable: true, Code: "http_500"}},
		{503, class{Retryable: true, RetryAfter: 7 * time.Second, Code: "http_503"}},
		{400, class{Code: "http_400"}},
		{404, class{Code: "http_404"}},
		{410, class{Code: "http_410"}},
		{302, class{Code: "http_302"}},
	} {
		t.Run(strconv.Itoa(tc.code), func(t *testing.T) {
			_, err := wh.Send(context.Background(), webhookMessage("d", srv.URL+"/"+strconv.Itoa(tc.code), `{}`))
			var got class
			var ce *Error
			switch {
			case err == nil:
				got.OK = true
			case errors.As(err, &ce):
				got = class{Retryable: ce.Retryable, Bounce: ce.Bounce, RetryAfter: ce.RetryAfter, Code: ce.Code}
			default:
				t.Fatalf("unclassified error %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
}

// TestWebhookSSRF: without AllowPrivate, loopback and private destinations
// are refused at dial time, whether given as literals or as names that
// resolve to them, and nothing reaches the server.
func TestWebhookSSRF(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	wh, err := NewWebhook(WebhookConfig{Secret: []byte("k"), Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{
		srv.URL,                                    // 127.0.0.1 literal
		"http://localhost:" + port,                 // a name resolving to loopback
		"http://[::ffff:127.0.0.1]:" + port,        // IPv4-mapped loopback
		"http://10.1.2.3:" + port,                  // RFC 1918
		"http://169.254.169.254/latest/meta-data/", // cloud metadata, link-local
		"http://0.0.0.0:" + port,
		"http://[::1]:" + port,
	} {
		t.Run(u, func(t *testing.T) {
			_, err := wh.Send(context.Background(), webhookMessage("d", u, `{}`))
			var ce *Error
			if !errors.As(err, &ce) || ce.Code != "forbidden_address" || ce.Retryable || !errors.Is(err, ErrForbiddenAddress) {
				t.Errorf("err = %v, want a permanent forbidden_address *Error", err)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("%d requests reached the private server", n)
	}
	// The same server is reachable once private destinations are allowed.
	open, err := NewWebhook(WebhookConfig{Secret: []byte("k"), AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open.Send(context.Background(), webhookMessage("d", "http://localhost:"+port, `{}`)); err != nil {
		t.Fatalf("AllowPrivate: %v", err)
	}
}

func TestPublicAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "1.1.1.1": true, "2606:4700:4700::1111": true, "93.184.216.34": true,
		"127.0.0.1": false, "127.8.9.1": false, "::1": false, "10.0.0.1": false, "172.16.5.4": false,
		"192.168.1.1": false, "169.254.169.254": false, "fe80::1": false, "fc00::1": false, "fd12::1": false,
		"0.0.0.0": false, "::": false, "224.0.0.1": false, "ff02::1": false, "100.64.1.1": false,
		"::ffff:10.0.0.1": false, "::ffff:8.8.8.8": true, "64:ff9b::a00:1": false, "255.255.255.255": false,
	} {
		if got := PublicAddr(netip.MustParseAddr(addr)); got != want {
			t.Errorf("PublicAddr(%s) = %v, want %v", addr, got, want)
		}
	}
}

func TestWebhookTimeoutAndBoundedReply(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.ReadAll(r.Body)
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		// An endless reply: Send must read a bounded prefix and return.
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("x", 32<<10))
		for r.Context().Err() == nil {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	wh, err := NewWebhook(WebhookConfig{Secret: []byte("k"), AllowPrivate: true, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := wh.Send(context.Background(), webhookMessage("d", srv.URL+"/endless", `{}`)); err != nil {
		t.Errorf("endless reply: %v", err)
	}
	_, err = wh.Send(context.Background(), webhookMessage("d", srv.URL+"/slow", `{}`))
	if err == nil || !Retryable(err) {
		t.Errorf("slow receiver: err = %v, want retryable", err)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("took %v with a 300ms timeout", el)
	}
}

func TestWebhookInvalidInput(t *testing.T) {
	wh, err := NewWebhook(WebhookConfig{Secret: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ to, body, code string }{
		{"ftp://example.test/x", `{}`, "invalid_url"},
		{"not a url", `{}`, "invalid_url"},
		{"https://example.test/x", `{"a":`, "invalid_body"},
		{"https://example.test/x", ``, "invalid_body"},
	} {
		_, err := wh.Send(context.Background(), webhookMessage("d", tc.to, tc.body))
		var ce *Error
		if !errors.As(err, &ce) || ce.Code != tc.code || ce.Retryable {
			t.Errorf("Send(%q, %q) = %v, want permanent %s", tc.to, tc.body, err, tc.code)
		}
	}
	for _, cfg := range []WebhookConfig{{}, {Secret: []byte("k"), Timeout: -1}, {Secret: []byte("k"), Client: &http.Client{Transport: http.NewFileTransport(nil)}}} {
		if _, err := NewWebhook(cfg); err == nil {
			t.Errorf("NewWebhook(%+v) succeeded", cfg)
		}
	}
}

func TestVerifySignature(t *testing.T) {
	secret := []byte("whsec_test")
	body := []byte(`{"a":1}`)
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	good := "v1=" + sign(secret, ts, body)
	hdr := func(ts, sig string) http.Header {
		h := http.Header{}
		h.Set("Whisper-Timestamp", ts)
		if sig != "" {
			h.Set("Whisper-Signature", sig)
		}
		return h
	}
	for _, tc := range []struct {
		name   string
		h      http.Header
		body   []byte
		now    time.Time
		wantOK bool
	}{
		{"valid", hdr(ts, good), body, now, true},
		{"valid within tolerance", hdr(ts, good), body, now.Add(4 * time.Minute), true},
		{"rotated secrets, second matches", hdr(ts, "v1="+sign([]byte("old"), ts, body)+", "+good), body, now, true},
		{"tampered body", hdr(ts, good), []byte(`{"a":2}`), now, false},
		{"wrong secret", hdr(ts, "v1="+sign([]byte("other"), ts, body)), body, now, false},
		{"timestamp changed", hdr(strconv.FormatInt(now.Unix()+1, 10), good), body, now, false},
		{"too old", hdr(ts, good), body, now.Add(6 * time.Minute), false},
		{"from the future", hdr(ts, good), body, now.Add(-6 * time.Minute), false},
		{"missing signature", hdr(ts, ""), body, now, false},
		{"bad timestamp", hdr("yesterday", good), body, now, false},
		{"other scheme", hdr(ts, "v0="+sign(secret, ts, body)), body, now, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := VerifySignature(secret, tc.h, tc.body, tc.now, 5*time.Minute)
			if (err == nil) != tc.wantOK {
				t.Errorf("err = %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
}

// BenchmarkWebhookSend measures signed sends to a local receiver from
// parallel goroutines, as the deliver workers make them.
func BenchmarkWebhookSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	wh, err := NewWebhook(WebhookConfig{Secret: []byte("k"), AllowPrivate: true})
	if err != nil {
		b.Fatal(err)
	}
	m := webhookMessage("d", srv.URL+"/hook", `{"event":"welcome","user":"u1","properties":{"plan":"pro"}}`)
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := wh.Send(context.Background(), m); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
}
