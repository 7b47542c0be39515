package channel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

// errClass is what a test compares about a Send error.
type errClass struct {
	OK, Retryable, Bounce bool
	RetryAfter            time.Duration
	Code                  string
}

func classOf(t *testing.T, err error) errClass {
	t.Helper()
	var ce *Error
	switch {
	case err == nil:
		return errClass{OK: true}
	case errors.As(err, &ce):
		return errClass{Retryable: ce.Retryable, Bounce: ce.Bounce, RetryAfter: ce.RetryAfter, Code: ce.Code}
	default:
		return errClass{Retryable: Retryable(err), Code: "unclassified"}
	}
}

// twilioFake speaks the shape of POST /2010-04-01/Accounts/{sid}/Messages.json:
// basic auth, a form body, an idempotency token honoured like Twilio does
// (a repeated token returns the first message), 201 with the Message
// resource or the error shape {code, message, more_info, status}.
type twilioFake struct {
	mu      sync.Mutex
	byToken map[string]string
	sent    []twilioSent
}

type twilioSent struct{ To, From, Body, Token string }

func (f *twilioFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fail := func(status, code int, msg string) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg,
			"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status})
	}
	user, pass, ok := r.BasicAuth()
	switch {
	case r.Method != http.MethodPost || r.URL.Path != "/2010-04-01/Accounts/ACtest/Messages.json":
		fail(404, 20404, "The requested resource "+r.URL.Path+" was not found")
		return
	case !ok || user != "ACtest" || pass != "tok":
		fail(401, 20003, "Authenticate")
		return
	case r.Header.Get("Content-Type") != "application/x-www-form-urlencoded":
		fail(400, 21601, "bad content type")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(400, 21601, err.Error())
		return
	}
	to, from, body := r.PostForm.Get("To"), r.PostForm.Get("From"), r.PostForm.Get("Body")
	switch {
	case to == "+15005550001":
		fail(400, 21211, "The 'To' number "+to+" is not a valid phone number.")
		return
	case to == "+15005550009":
		fail(400, 21610, "Attempt to send to unsubscribed recipient")
		return
	case to == "+15005550429":
		w.Header().Set("Retry-After", "3")
		fail(429, 20429, "Too Many Requests")
		return
	case to == "+15005550500":
		fail(500, 20500, "Internal Server Error")
		return
	case body == "":
		fail(400, 21602, "Message body is required.")
		return
	}
	tok := r.Header.Get("I-Twilio-Idempotency-Token")
	f.mu.Lock()
	sid, seen := f.byToken[tok]
	if !seen {
		sid = fmt.Sprintf("SM%032d", len(f.sent)+1)
		f.byToken[tok] = sid
		f.sent = append(f.sent, twilioSent{to, from, body, tok})
	}
	f.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(map[string]any{"sid": sid, "status": "queued", "to": to, "from": from, "body": body,
		"account_sid": "ACtest", "num_segments": "1", "error_code": nil})
}

func smsMessage(id, to, text string) Message {
	return Message{DeliveryID: id, WorkspaceID: "ws1", UserID: "u1", To: to,
		Content: &contentv1.Message{Channel: contentv1.Channel_CHANNEL_SMS, Content: &contentv1.Content{Text: text}}}
}

func TestTwilioSend(t *testing.T) {
	fake := &twilioFake{byToken: map[string]string{}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	tw, err := NewTwilio(TwilioConfig{BaseURL: srv.URL, AccountSID: "ACtest", AuthToken: "tok", From: "+15005550006"})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := tw.Send(context.Background(), smsMessage("dlv-1", "+14155550100", "Your code is 1234 & more"))
	if err != nil {
		t.Fatal(err)
	}
	// A retry with the same delivery id is deduplicated by the provider.
	rc2, err := tw.Send(context.Background(), smsMessage("dlv-1", "+14155550100", "Your code is 1234 & more"))
	if err != nil {
		t.Fatal(err)
	}
	if rc.ProviderMessageID == "" || rc != rc2 {
		t.Errorf("receipts %v and %v, want the same non-empty SID", rc, rc2)
	}
	want := []twilioSent{{"+14155550100", "+15005550006", "Your code is 1234 & more", "dlv-1"}}
	if diff := cmp.Diff(want, fake.sent); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
}

func TestTwilioErrors(t *testing.T) {
	srv := httptest.NewServer(&twilioFake{byToken: map[string]string{}})
	defer srv.Close()
	good := TwilioConfig{BaseURL: srv.URL, AccountSID: "ACtest", AuthToken: "tok", From: "+15005550006"}
	for _, tc := range []struct {
		name     string
		cfg      func(*TwilioConfig)
		to, text string
		want     errClass
	}{
		{"invalid number bounces", nil, "+15005550001", "hi", errClass{Bounce: true, Code: "21211"}},
		{"unsubscribed recipient bounces", nil, "+15005550009", "hi", errClass{Bounce: true, Code: "21610"}},
		{"rate limited", nil, "+15005550429", "hi", errClass{Retryable: true, RetryAfter: 3 * time.Second, Code: "20429"}},
		{"server error", nil, "+15005550500", "hi", errClass{Retryable: true, Code: "20500"}},
		{"bad credentials", func(c *TwilioConfig) { c.AuthToken = "wrong" }, "+14155550100", "hi", errClass{Code: "20003"}},
		{"not E.164 locally", nil, "0415 555 0100", "hi", errClass{Bounce: true, Code: "invalid_to"}},
		{"empty text", nil, "+14155550100", "", errClass{Code: "empty_body"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			tw, err := NewTwilio(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tw.Send(context.Background(), smsMessage("d", tc.to, tc.text))
			if diff := cmp.Diff(tc.want, classOf(t, err)); diff != "" {
				t.Errorf("%v (-want +got):\n%s", err, diff)
			}
		})
	}
	for _, cfg := range []TwilioConfig{
		{AccountSID: "ACx", AuthToken: "t", From: "+15005550006"},
		{BaseURL: srv.URL, AccountSID: "x", AuthToken: "t", From: "+15005550006"},
		{BaseURL: srv.URL, AccountSID: "ACx", From: "+15005550006"},
		{BaseURL: srv.URL, AccountSID: "ACx", AuthToken: "t", From: "5550006"},
		{BaseURL: srv.URL, AccountSID: "ACx", AuthToken: "t", From: "+15005550006", Timeout: -1},
	} {
		if _, err := NewTwilio(cfg); err == nil {
			t.Errorf("NewTwilio(%+v) succeeded", cfg)
		}
	}
}

// fcmFake speaks the shape of POST /v1/projects/{project}/messages:send:
// a Bearer token, a JSON {"message": {...}} body, {"name": ...} on
// success and the google.rpc.Status error shape with FcmError details.
type fcmFake struct {
	mu   sync.Mutex
	got  []map[string]any
	n    int
	fail map[string]func(w http.ResponseWriter) // by device token
	// authorized decides a bearer token; nil accepts only "ya29.test".
	authorized func(token string) bool
	refused    int // requests answered UNAUTHENTICATED
}

func fcmFail(status int, rpcStatus, msg string, details ...map[string]any) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		if status == 429 || status == 503 {
			w.Header().Set("Retry-After", "11")
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"code": status, "message": msg, "status": rpcStatus, "details": details}})
	}
}

func fcmErrorDetail(code string) map[string]any {
	return map[string]any{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
}

func (f *fcmFake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/projects/whisper-test/messages:send" {
		fcmFail(404, "NOT_FOUND", "no such method "+r.URL.Path)(w)
		return
	}
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok := f.authorized; (ok == nil && bearer != "ya29.test") || (ok != nil && !ok(bearer)) {
		f.mu.Lock()
		f.refused++
		f.mu.Unlock()
		fcmFail(401, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")(w)
		return
	}
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		fcmFail(400, "INVALID_ARGUMENT", "bad content type")(w)
		return
	}
	var body map[string]any
	b, _ := io.ReadAll(r.Body)
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&body); err != nil {
		fcmFail(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")(w)
		return
	}
	msg, _ := body["message"].(map[string]any)
	token, _ := msg["token"].(string)
	if h, ok := f.fail[token]; ok {
		h(w)
		return
	}
	f.mu.Lock()
	f.got = append(f.got, body)
	f.n++
	name := fmt.Sprintf("projects/whisper-test/messages/0:%d%%31bd1c96", f.n)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_ = json.NewEncoder(w).Encode(map[string]string{"name": name})
}

func pushMessage(token, title, body string, data map[string]string) Message {
	return Message{DeliveryID: "d", WorkspaceID: "ws1", UserID: "u1", To: token,
		Content: &contentv1.Message{Channel: contentv1.Channel_CHANNEL_PUSH, Content: &contentv1.Content{Title: title, Body: body, Data: data}}}
}

func newFCMFake() *fcmFake {
	return &fcmFake{fail: map[string]func(http.ResponseWriter){
		"gone": fcmFail(404, "NOT_FOUND", "Requested entity was not found.", fcmErrorDetail("UNREGISTERED")),
		"bad-token": fcmFail(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token",
			fcmErrorDetail("INVALID_ARGUMENT")),
		"bad-data": fcmFail(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value' (TYPE_STRING), 12",
			map[string]any{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": []map[string]string{
				{"field": "message.data[0].value", "description": "Invalid value"}}}),
		"other-sender": fcmFail(403, "PERMISSION_DENIED", "SenderId mismatch", fcmErrorDetail("SENDER_ID_MISMATCH")),
		"quota":        fcmFail(429, "RESOURCE_EXHAUSTED", "Quota exceeded.", fcmErrorDetail("QUOTA_EXCEEDED")),
		"down":         fcmFail(503, "UNAVAILABLE", "The service is currently unavailable.", fcmErrorDetail("UNAVAILABLE")),
		"internal":     fcmFail(500, "INTERNAL", "Internal error encountered.", fcmErrorDetail("INTERNAL")),
		"apns-auth":    fcmFail(401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service", fcmErrorDetail("THIRD_PARTY_AUTH_ERROR")),
	}}
}

func TestFCMSend(t *testing.T) {
	fake := newFCMFake()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	f, err := NewFCM(FCMConfig{BaseURL: srv.URL, ProjectID: "whisper-test",
		TokenSource: func(context.Context) (string, error) { return "ya29.test", nil }})
	if err != nil {
		t.Fatal(err)
	}
	rc, err := f.Send(context.Background(), pushMessage("dev-token-1", "Hi Ann", "Your cart misses you", map[string]string{"campaign": "c1"}))
	if err != nil {
		t.Fatal(err)
	}
	if rc.ProviderMessageID != "projects/whisper-test/messages/0:1%31bd1c96" {
		t.Errorf("receipt = %q", rc.ProviderMessageID)
	}
	if _, err := f.Send(context.Background(), pushMessage("dev-token-2", "", "", map[string]string{"silent": "1"})); err != nil {
		t.Fatal(err)
	}
	want := []map[string]any{
		{"message": map[string]any{"token": "dev-token-1",
			"notification": map[string]any{"title": "Hi Ann", "body": "Your cart misses you"},
			"data":         map[string]any{"campaign": "c1"}}},
		{"message": map[string]any{"token": "dev-token-2", "data": map[string]any{"silent": "1"}}},
	}
	if diff := cmp.Diff(want, fake.got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestFCMErrors(t *testing.T) {
	srv := httptest.NewServer(newFCMFake())
	defer srv.Close()
	static := func(tok string) func(context.Context) (string, error) {
		return func(context.Context) (string, error) { return tok, nil }
	}
	for _, tc := range []struct {
		token  string
		access string
		want   errClass
	}{
		{"gone", "ya29.test", errClass{Bounce: true, Code: "UNREGISTERED"}},
		{"bad-token", "ya29.test", errClass{Bounce: true, Code: "INVALID_ARGUMENT"}},
		{"bad-data", "ya29.test", errClass{Code: "INVALID_ARGUMENT"}},
		{"other-sender", "ya29.test", errClass{Bounce: true, Code: "SENDER_ID_MISMATCH"}},
		{"quota", "ya29.test", errClass{Retryable: true, RetryAfter: 11 * time.Second, Code: "QUOTA_EXCEEDED"}},
		{"down", "ya29.test", errClass{Retryable: true, RetryAfter: 11 * time.Second, Code: "UNAVAILABLE"}},
		{"internal", "ya29.test", errClass{Retryable: true, Code: "INTERNAL"}},
		{"apns-auth", "ya29.test", errClass{Retryable: true, Code: "THIRD_PARTY_AUTH_ERROR"}},
		{"fine", "expired", errClass{Retryable: true, Code: "UNAUTHENTICATED"}},
		{"", "ya29.test", errClass{Bounce: true, Code: "invalid_token"}},
	} {
		t.Run(tc.token+"/"+tc.access, func(t *testing.T) {
			f, err := NewFCM(FCMConfig{BaseURL: srv.URL, ProjectID: "whisper-test", TokenSource: static(tc.access)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.Send(context.Background(), pushMessage(tc.token, "t", "b", nil))
			if diff := cmp.Diff(tc.want, classOf(t, err)); diff != "" {
				t.Errorf("%v (-want +got):\n%s", err, diff)
			}
		})
	}
	f, err := NewFCM(FCMConfig{BaseURL: srv.URL, ProjectID: "whisper-test",
		TokenSource: func(context.Context) (string, error) { return "", errors.New("metadata server down") }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Send(context.Background(), pushMessage("tok", "t", "b", nil)); err == nil || !Retryable(err) {
		t.Errorf("token source failure: err = %v, want retryable", err)
	}
	for _, cfg := range []FCMConfig{
		{ProjectID: "p", TokenSource: static("x")},
		{BaseURL: srv.URL, TokenSource: static("x")},
		{BaseURL: srv.URL, ProjectID: "p"},
		{BaseURL: srv.URL, ProjectID: "p/../q", TokenSource: static("x")},
	} {
		if _, err := NewFCM(cfg); err == nil {
			t.Errorf("NewFCM(%+v) succeeded", cfg)
		}
	}
}

// TestCanceledIsNotRetryable: a send abandoned because deliver is shutting
// down is not a provider failure to retry.
func TestCanceledIsNotRetryable(t *testing.T) {
	hold := make(chan struct{})
	defer close(hold)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // so the server notices the client hanging up
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never greets
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	wh, err := NewWebhook(WebhookConfig{Secret: []byte("k"), AllowPrivate: true})
	if err != nil {
		t.Fatal(err)
	}
	sm, err := NewSMTP(SMTPConfig{Addr: l.Addr().String(), From: "hi@whisper.test", TLS: "none"})
	if err != nil {
		t.Fatal(err)
	}
	tw, err := NewTwilio(TwilioConfig{BaseURL: srv.URL, AccountSID: "ACtest", AuthToken: "tok", From: "+15005550006"})
	if err != nil {
		t.Fatal(err)
	}
	for name, send := range map[string]func(context.Context) error{
		"webhook": func(ctx context.Context) error {
			_, err := wh.Send(ctx, webhookMessage("d", srv.URL, `{}`))
			return err
		},
		"smtp": func(ctx context.Context) error {
			_, err := sm.Send(ctx, emailMessage("d", "a@b.test", "s", "t", "", ""))
			return err
		},
		"twilio": func(ctx context.Context) error {
			_, err := tw.Send(ctx, smsMessage("d", "+14155550100", "hi"))
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(100*time.Millisecond, cancel)
			err := send(ctx)
			if err == nil || !errors.Is(err, context.Canceled) || Retryable(err) {
				t.Errorf("err = %v, want a non-retryable context.Canceled", err)
			}
		})
	}
}
