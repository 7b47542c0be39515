package targets_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"

	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
	deliveryv1 "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1/deliveryv1connect"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/deliver/channel"
	"github.com/whisperhq/whisper/services/targets"
)

// inbox records what a fake provider received, by a key (recipient).
type inbox struct {
	mu  sync.Mutex
	got map[string][]string
}

func (b *inbox) add(k, v string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.got == nil {
		b.got = map[string][]string{}
	}
	b.got[k] = append(b.got[k], v)
}

func (b *inbox) get(k string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.got[k]...)
}

type smtpSession struct {
	b  *inbox
	to string
}

func (s *smtpSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = to
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.b.add(s.to, string(b))
	return nil
}
func (s *smtpSession) Reset()        { s.to = "" }
func (s *smtpSession) Logout() error { return nil }

// TestDeliverySegmentEventToEveryChannel is the closed loop on the real
// stack with local fake providers: templates over ContentService,
// campaigns over CampaignService, a Segment track event, and exactly one
// message on each channel (an SMTP server, a signed webhook receiver,
// Twilio- and FCM-shaped servers, an in-app stream), with the rendered
// content; the ledger shows them sent.
func TestDeliverySegmentEventToEveryChannel(t *testing.T) {
	var mail, sms, push, hooks inbox
	smtpSrv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &smtpSession{b: &mail}, nil }))
	smtpSrv.Domain = "smtp.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = smtpSrv.Serve(ln) }()
	t.Cleanup(func() { _ = smtpSrv.Close() })

	twilio := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, _ := r.BasicAuth(); u != "ACtest" || p != "tok" || r.URL.Path != "/2010-04-01/Accounts/ACtest/Messages.json" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_ = r.ParseForm()
		sms.add(r.PostForm.Get("To"), r.PostForm.Get("Body"))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = fmt.Fprintf(w, `{"sid":"SM%d","status":"queued"}`, time.Now().UnixNano())
	}))
	t.Cleanup(twilio.Close)
	fcm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Message struct {
				Token        string            `json:"token"`
				Notification map[string]string `json:"notification"`
			} `json:"message"`
		}
		if r.Header.Get("Authorization") != "Bearer fcm-token" || json.NewDecoder(r.Body).Decode(&body) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		push.add(body.Message.Token, body.Message.Notification["title"])
		_, _ = fmt.Fprint(w, `{"name":"projects/proj/messages/1"}`)
	}))
	t.Cleanup(fcm.Close)
	const secret = "webhook-secret"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := channel.VerifySignature([]byte(secret), r.Header, b, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("webhook signature: %v", err)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		hooks.add(r.URL.Path, string(b))
	}))
	t.Cleanup(hook.Close)

	rules := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(`{"rules": {"other_channels": {"per_day": 1000, "per_week": 5000}, "quiet_start": "00:00", "quiet_end": "00:00"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startWith(t, func(c *targets.Config, url string) {
		c.DecideContactRules = rules
		c.Deliver.TrackingKey, c.Deliver.PublicURL = "tracking-key-for-tests-0123456789abcdef", url
		c.Deliver.SMTPAddr, c.Deliver.SMTPTLS, c.Deliver.SMTPFrom = ln.Addr().String(), "none", "shop@example.com"
		c.Deliver.WebhookSecret, c.Deliver.WebhookAllowPrivate = secret, true
		c.Deliver.TwilioBaseURL, c.Deliver.TwilioAccountSID, c.Deliver.TwilioAuthToken, c.Deliver.TwilioFrom = twilio.URL, "ACtest", "tok", "+15550000000"
		c.Deliver.FCMBaseURL, c.Deliver.FCMProjectID, c.Deliver.FCMAccessToken = fcm.URL, "proj", "fcm-token"
	})
	ctx := context.Background()
	_, tokens, key := twoWorkspaces(t, p)
	if code, res := post(t, p.url+"/v1/identify", key, fmt.Sprintf(`{"userId":"u1","messageId":"i1","traits":{"first_name":"Ann",
		"email":"ann@example.com","phone":"+15551234567","push_token":"device-1","webhook_url":%q}}`, hook.URL+"/hooks/ann")); code != http.StatusOK {
		t.Fatalf("identify = %d %s", code, res)
	}
	contents := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	templates := map[campaignv1.Channel]*contentv1.Content{
		campaignv1.Channel_CHANNEL_EMAIL:   {Subject: "Your {{ event.item }}, {{ user.first_name }}", Text: "Come back for the {{ event.item }}", Html: "<p>Come back for the {{ event.item }}</p>"},
		campaignv1.Channel_CHANNEL_SMS:     {Text: "SMS: {{ event.item }} for {{ user.first_name }}"},
		campaignv1.Channel_CHANNEL_PUSH:    {Title: "Push: {{ event.item }}", Body: "b"},
		campaignv1.Channel_CHANNEL_WEBHOOK: {Body: `{"item": {{ event.item | json }}}`},
		campaignv1.Channel_CHANNEL_IN_APP:  {Title: "In-app: {{ event.item }}", Body: "b"},
	}
	for ch, c := range templates {
		tmpl, err := contents.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: &contentv1.Template{
			Name: ch.String(), Channel: contentv1.Channel(ch), DefaultLocale: "en", Locales: map[string]*contentv1.Content{"en": c}}})
		if err != nil {
			t.Fatalf("CreateTemplate %v: %v", ch, err)
		}
		if _, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
			Name:     "cart " + ch.String(),
			Trigger:  &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: "Cart Abandoned"}}},
			Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: ch, ContentRef: tmpl.GetTemplate().GetTemplateId(), Topic: "cart"}},
		}}); err != nil {
			t.Fatalf("CreateCampaign %v: %v", ch, err)
		}
	}
	deliveries := deliveryv1connect.NewDeliveryServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	streamed := make(chan string, 1)
	go func() {
		stream, err := deliveries.StreamInApp(sctx, &deliveryv1.StreamInAppRequest{UserId: "u1"})
		if err != nil {
			streamed <- "error: " + err.Error()
			return
		}
		defer stream.Close()
		// The stream says it is caught up (no backlog) before the message.
		for stream.Receive() {
			if m := stream.Msg().GetMessage(); m != nil {
				streamed <- m.GetContent().GetTitle()
				return
			}
		}
		streamed <- "error: " + fmt.Sprint(stream.Err())
	}()
	waitFor(t, "the profile", func() (bool, string) {
		res, err := contents.Preview(ctx, &contentv1.PreviewRequest{Template: &contentv1.Template{Name: "x", Channel: contentv1.Channel_CHANNEL_SMS,
			DefaultLocale: "en", Locales: map[string]*contentv1.Content{"en": {Text: "{{ user.email }}"}}},
			User: &contentv1.PreviewRequest_UserId{UserId: "u1"}})
		return err == nil && res.GetMessage().GetContent().GetText() == "ann@example.com", fmt.Sprint(res, err)
	})
	if code, res := post(t, p.url+"/v1/track", key, `{"userId":"u1","event":"Cart Abandoned","messageId":"e1","properties":{"item":"red shoes"}}`); code != http.StatusOK {
		t.Fatalf("track = %d %s", code, res)
	}
	if got := <-streamed; got != "In-app: red shoes" {
		t.Errorf("in-app stream got %q", got)
	}
	waitFor(t, "every channel", func() (bool, string) {
		n := len(mail.get("ann@example.com")) + len(sms.get("+15551234567")) + len(push.get("device-1")) + len(hooks.get("/hooks/ann"))
		return n >= 4, fmt.Sprintf("%d of 4 providers reached", n)
	})
	time.Sleep(500 * time.Millisecond) // a duplicate would arrive now
	if got := mail.get("ann@example.com"); len(got) != 1 || !strings.Contains(got[0], "Subject: Your red shoes, Ann") || !strings.Contains(got[0], "Come back for the red shoes") {
		t.Errorf("emails %q", got)
	}
	if got := sms.get("+15551234567"); len(got) != 1 || got[0] != "SMS: red shoes for Ann" {
		t.Errorf("SMS %q", got)
	}
	if got := push.get("device-1"); len(got) != 1 || got[0] != "Push: red shoes" {
		t.Errorf("pushes %q", got)
	}
	if got := hooks.get("/hooks/ann"); len(got) != 1 || got[0] != `{"item": "red shoes"}` {
		t.Errorf("webhooks %q", got)
	}
	waitFor(t, "five sent deliveries", func() (bool, string) {
		res, err := deliveries.ListDeliveries(ctx, &deliveryv1.ListDeliveriesRequest{UserId: "u1"})
		if err != nil {
			return false, err.Error()
		}
		sent := 0
		for _, d := range res.GetDeliveries() {
			if d.GetState() == deliveryv1.State_STATE_SENT {
				sent++
			}
		}
		return len(res.GetDeliveries()) == 5 && sent == 5, fmt.Sprint(res.GetDeliveries())
	})
	metrics, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(metrics.Body)
	metrics.Body.Close()
	for _, ch := range []string{"email", "sms", "push", "webhook", "in_app"} {
		if want := fmt.Sprintf(`whisper_deliver_deliveries_total{channel=%q,status="sent"} 1`, ch); !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// The closed loop: the email's one-click unsubscribe (RFC 8058) is an
	// "Unsubscribed" event that decide's consent applies, so the next
	// trigger sends on every channel but email.
	email := mail.get("ann@example.com")[0]
	_, rest, ok := strings.Cut(email, "List-Unsubscribe: <")
	unsubURL, _, _ := strings.Cut(rest, ">")
	if !ok || !strings.HasPrefix(unsubURL, p.url+"/t/u/") || !strings.Contains(email, "List-Unsubscribe-Post: List-Unsubscribe=One-Click") {
		t.Fatalf("email lacks one-click unsubscribe headers:\n%s", email)
	}
	if !strings.Contains(email, p.url+"/t/o/") {
		t.Errorf("email HTML lacks the open pixel:\n%s", email)
	}
	res, err := http.Post(unsubURL, "application/x-www-form-urlencoded", strings.NewReader("List-Unsubscribe=One-Click"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("one-click unsubscribe = %d", res.StatusCode)
	}
	decisions := decisionv1connect.NewDecisionServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	waitFor(t, "the unsubscribe to reach decide", func() (bool, string) {
		if code, res := post(t, p.url+"/v1/track", key, fmt.Sprintf(`{"userId":"u1","event":"Cart Abandoned","messageId":"e-%d","properties":{"item":"hat"}}`, time.Now().UnixNano())); code != http.StatusOK {
			return false, res
		}
		time.Sleep(300 * time.Millisecond)
		res, err := decisions.ListDecisions(ctx, &decisionv1.ListDecisionsRequest{UserId: "u1", PageSize: 1000})
		if err != nil {
			return false, err.Error()
		}
		for _, d := range res.GetDecisions() {
			// Only the email campaign's user left: a decision that does
			// not send names no channel.
			if d.GetOutcome() == decisionv1.Outcome_OUTCOME_SKIPPED_CONSENT {
				return true, ""
			}
		}
		return false, "no decision skipped for consent yet"
	})
	// Triggers decided before decide applied the unsubscribe may still
	// have mailed; from now on none does, while SMS still goes out.
	emails, texts := len(mail.get("ann@example.com")), len(sms.get("+15551234567"))
	if code, res := post(t, p.url+"/v1/track", key, `{"userId":"u1","event":"Cart Abandoned","messageId":"after","properties":{"item":"hat"}}`); code != http.StatusOK {
		t.Fatalf("track = %d %s", code, res)
	}
	waitFor(t, "the SMS of the last trigger", func() (bool, string) {
		n := len(sms.get("+15551234567"))
		return n > texts, fmt.Sprint(n, " texts")
	})
	time.Sleep(300 * time.Millisecond) // the email, if any, is sent alongside
	if got := len(mail.get("ann@example.com")); got != emails {
		t.Errorf("%d emails after the unsubscribe took effect, want still %d", got, emails)
	}
	other := deliveryv1connect.NewDeliveryServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[1]))
	if res, err := other.ListDeliveries(ctx, &deliveryv1.ListDeliveriesRequest{UserId: "u1"}); err != nil || len(res.GetDeliveries()) != 0 {
		t.Errorf("the other workspace lists %v, %v", res, err)
	}
}

func TestDeliverConfigErrorsNameTheFlag(t *testing.T) {
	dir := t.TempDir()
	userKey, saKey := filepath.Join(dir, "user.json"), filepath.Join(dir, "sa.json")
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sa, _ := json.Marshal(map[string]string{"type": "service_account", "project_id": "p", "client_email": "w@p.iam.gserviceaccount.com",
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "token_uri": "http://127.0.0.1:1/token"})
	if err := errors.Join(os.WriteFile(userKey, []byte(`{"type": "authorized_user"}`), 0o600), os.WriteFile(saKey, sa, 0o600)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // empty: valid
	}{
		{"defaults", nil, ""},
		{"every provider", []string{"--deliver-smtp-addr=127.0.0.1:25", "--deliver-smtp-from=a@example.com", "--deliver-smtp-tls=none",
			"--deliver-webhook-secret=s", "--deliver-twilio-base-url=http://127.0.0.1:1", "--deliver-twilio-account-sid=ACx",
			"--deliver-twilio-auth-token=t", "--deliver-twilio-from=+15550000000", "--deliver-fcm-base-url=http://127.0.0.1:2",
			"--deliver-fcm-project-id=p", "--deliver-rate-limits=email=100,sms=10:20", "--deliver-tracking-key=0123456789abcdef0123456789abcdef"}, ""},
		{"rate limit channel", []string{"--deliver-rate-limits=fax=1"}, "--deliver-rate-limits: \"fax=1\""},
		{"rate limit burst", []string{"--deliver-rate-limits=sms=1:0"}, "--deliver-rate-limits: sms: burst"},
		{"short tracking key", []string{"--deliver-tracking-key=short"}, "--deliver-tracking-key: must be at least 32 bytes"},
		{"public url", []string{"--deliver-public-url=ftp://x"}, "--deliver-public-url"},
		{"twilio sid", []string{"--deliver-twilio-base-url=http://127.0.0.1:1", "--deliver-twilio-account-sid=x"}, "--deliver-twilio-*"},
		{"smtp tls", []string{"--deliver-smtp-addr=127.0.0.1:25", "--deliver-smtp-from=a@example.com", "--deliver-smtp-tls=maybe"}, "--deliver-smtp-*"},
		{"max attempts", []string{"--deliver-max-attempts=0"}, "--deliver-max-attempts: must be 1-100"},
		{"fcm service account", []string{"--deliver-fcm-credentials-file=" + saKey}, ""},
		{"fcm user credentials", []string{"--deliver-fcm-credentials-file=" + userKey}, "--deliver-fcm-credentials-file " + userKey + `: service account key: type "authorized_user"`},
		{"fcm credentials file missing", []string{"--deliver-fcm-credentials-file=/nonexistent/key.json"}, "--deliver-fcm-credentials-file: open /nonexistent/key.json"},
		{"fcm credentials and token", []string{"--deliver-fcm-credentials-file=/nonexistent/key.json", "--deliver-fcm-access-token=t"}, "give one, not both"},
		{"short claim lease", []string{"--deliver-claim-lease=5s"}, "--deliver-claim-lease: 5s leaves an attempt 3/4 of it"},
		{"short claim lease, short timeout", []string{"--deliver-claim-lease=5s", "--deliver-provider-timeout=2s"}, ""},
		{"in-app origins", []string{"--deliver-inapp-origins=https://app.example.com, http://127.0.0.1:3000,*"}, ""},
		{"in-app origin with a path", []string{"--deliver-inapp-origins=https://app.example.com/"}, "--deliver-inapp-origins: \"https://app.example.com/\" is not an origin"},
		{"in-app origin without scheme", []string{"--deliver-inapp-origins=app.example.com"}, "--deliver-inapp-origins: \"app.example.com\" is not an http(s) origin"},
		{"in-app origin in capitals", []string{"--deliver-inapp-origins=https://App.example.com"}, "must be lower case"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var cfg targets.Config
			cfg.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"--database-url=postgres://x"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
