package targets_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	deliveryv1 "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1/deliveryv1connect"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

// browserDir is the npm package of the in-app page: its sources, the buf
// template of its generated client, and the scripts that bundle it
// (esbuild) and drive it in Chromium (playwright-core), once
// `npm ci --prefix services/deliver/testdata/browser` has run.
const browserDir = "../deliver/testdata/browser"

// TestInAppInBrowser is issue #5 end to end: a page built with
// connect-web, served from its own origin, streams a user's in-app
// messages from the deliver target (CORS) in headless Chromium with an
// in-app token the customer's backend got from IssueInAppToken; a Segment
// event triggers an in-app campaign and the page renders the message;
// clicking it marks it read in PostgreSQL, and a fresh stream no longer
// sends it.
func TestInAppInBrowser(t *testing.T) {
	node, chromium, buf := browserTools(t)
	dir, err := filepath.Abs(browserDir)
	if err != nil {
		t.Fatal(err)
	}
	page := buildInAppPage(t, node, buf, dir)
	site := httptest.NewServer(http.FileServer(http.Dir(page)))
	t.Cleanup(site.Close)

	rules := filepath.Join(t.TempDir(), "rules.json")
	if err := os.WriteFile(rules, []byte(`{"rules": {"other_channels": {"per_day": 1000, "per_week": 5000}, "quiet_start": "00:00", "quiet_end": "00:00"}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	var databaseURL string
	p := startWith(t, func(c *targets.Config, url string) {
		c.DecideContactRules = rules
		c.Deliver.TrackingKey, c.Deliver.PublicURL = "tracking-key-for-tests-0123456789abcdef", url
		c.Deliver.InAppOrigins = []string{site.URL}
		databaseURL = c.DatabaseURL
	})
	ctx := context.Background()
	_, tokens, key := twoWorkspaces(t, p)
	if code, res := post(t, p.url+"/v1/identify", key, `{"userId":"u1","messageId":"i1","traits":{"first_name":"Ann"}}`); code != http.StatusOK {
		t.Fatalf("identify = %d %s", code, res)
	}
	contents := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	tmpl, err := contents.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: &contentv1.Template{
		Name: "in-app", Channel: contentv1.Channel_CHANNEL_IN_APP, DefaultLocale: "en",
		Locales: map[string]*contentv1.Content{"en": {Title: "Your {{ event.item }}, {{ user.first_name }}", Body: "still in your cart"}}}})
	if err != nil {
		t.Fatal(err)
	}
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	if _, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
		Name:    "cart in-app",
		Trigger: &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: "Cart Abandoned"}}},
		Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_IN_APP,
			ContentRef: tmpl.GetTemplate().GetTemplateId(), Topic: "cart"}},
	}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the profile", func() (bool, string) {
		res, err := contents.Preview(ctx, &contentv1.PreviewRequest{Template: &contentv1.Template{Name: "x", Channel: contentv1.Channel_CHANNEL_SMS,
			DefaultLocale: "en", Locales: map[string]*contentv1.Content{"en": {Text: "{{ user.first_name }}"}}},
			User: &contentv1.PreviewRequest_UserId{UserId: "u1"}})
		return err == nil && res.GetMessage().GetContent().GetText() == "Ann", fmt.Sprint(res, err)
	})

	// The customer's backend gets the browser a token for u1.
	backend := deliveryv1connect.NewDeliveryServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	issued, err := backend.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{UserId: "u1"})
	if err != nil {
		t.Fatal(err)
	}

	fragment := url.Values{"base": {p.url}, "user": {"u1"}, "token": {issued.GetToken()}}.Encode()
	d := startDriver(t, node, chromium, dir, site.URL+"/#"+fragment, "Your red shoes, Ann")
	d.expect("connected")
	if code, res := post(t, p.url+"/v1/track", key, `{"userId":"u1","event":"Cart Abandoned","messageId":"e1","properties":{"item":"red shoes"}}`); code != http.StatusOK {
		t.Fatalf("track = %d %s", code, res)
	}
	d.next()
	shown := d.expect("message")
	if shown.Title != "Your red shoes, Ann" || shown.Body != "still in your cart" || shown.Count != 1 || shown.DeliveryID == "" {
		t.Errorf("the page shows %+v; want the one message, titled %q", shown, "Your red shoes, Ann")
	}
	d.expect("read")

	conn, err := pgx.Connect(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var read bool
	if err := conn.QueryRow(ctx, `SELECT read_time IS NOT NULL FROM deliver_inbox WHERE delivery_id = $1`, shown.DeliveryID).Scan(&read); err != nil || !read {
		t.Errorf("inbox row %s: read %v (%v); want read", shown.DeliveryID, read, err)
	}
	// A fresh stream, from Go and from a reloaded page, is caught up at once
	// and sends nothing.
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := backend.StreamInApp(sctx, &deliveryv1.StreamInAppRequest{UserId: "u1"})
	if err != nil {
		t.Fatal(err)
	}
	if !stream.Receive() || stream.Msg().GetCaughtUp() == nil {
		t.Errorf("a fresh stream starts with %v (%v); want caught_up, the read message gone", stream.Msg(), stream.Err())
	}
	stream.Close()
	d.next()
	if again := d.expect("reloaded"); again.Messages != 0 {
		t.Errorf("the reloaded page shows %d messages; want none", again.Messages)
	}
	d.wait()
}

// TestInAppCORS: the deliver target answers preflights from the origins of
// --deliver-inapp-origins, allowing the bearer token, and no others.
func TestInAppCORS(t *testing.T) {
	const allowed = "https://app.example.com"
	p := startWith(t, func(c *targets.Config, url string) {
		c.Targets = []string{targets.Deliver}
		c.Deliver.InAppOrigins = []string{allowed, "http://127.0.0.1:22001"}
	})
	preflight := func(origin, path string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodOptions, p.url+path, nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		// Sorted and lower case, as browsers send it (Fetch standard).
		req.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res
	}
	const stream = "/whisper.delivery.v1.DeliveryService/StreamInApp"
	tests := []struct {
		name, origin string
		allowed      bool
	}{
		{"listed origin", allowed, true},
		{"second listed origin", "http://127.0.0.1:22001", true},
		{"unlisted origin", "https://evil.example.com", false},
		{"listed host, other scheme", "http://app.example.com", false},
		{"listed host, other port", "https://app.example.com:8443", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := preflight(tt.origin, stream)
			got := res.Header.Get("Access-Control-Allow-Origin")
			if !tt.allowed {
				if got != "" {
					t.Errorf("preflight from %s: Access-Control-Allow-Origin %q; want none", tt.origin, got)
				}
				return
			}
			headers := strings.ToLower(res.Header.Get("Access-Control-Allow-Headers"))
			if res.StatusCode/100 != 2 || got != tt.origin || !strings.Contains(headers, "authorization") || !strings.Contains(headers, "connect-protocol-version") {
				t.Errorf("preflight from %s = %d, Allow-Origin %q, Allow-Headers %q; want 2xx allowing the origin, authorization and Connect's headers",
					tt.origin, res.StatusCode, got, headers)
			}
			if res.Header.Get("Access-Control-Allow-Credentials") != "" {
				t.Error("credentials allowed: in-app calls carry a bearer token, never cookies")
			}
		})
	}
	// The actual call: refused for want of a token, but readable by the
	// page, with Connect's headers exposed.
	req, _ := http.NewRequest(http.MethodPost, p.url+"/whisper.delivery.v1.DeliveryService/MarkInAppRead", strings.NewReader(`{}`))
	req.Header.Set("Origin", allowed)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("Access-Control-Allow-Origin") != allowed ||
		!strings.Contains(strings.ToLower(res.Header.Get("Access-Control-Expose-Headers")), "grpc-status") {
		t.Errorf("cross-origin call without a token = %d %s, headers %v; want 401 readable by %s", res.StatusCode, body, res.Header, allowed)
	}
}

// browserTools returns node, Chromium and buf, or skips (fails on CI)
// without them.
func browserTools(t *testing.T) (node, chromium, buf string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		missingBrowser(t, "node is not on PATH: install Node.js 20 or later")
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		missingBrowser(t, chromium+" is missing: `apt-get install chromium` (or set CHROMIUM)")
	}
	for _, pkg := range []string{"playwright-core", "esbuild", "@connectrpc/connect-web", "@bufbuild/protoc-gen-es"} {
		if _, err := os.Stat(filepath.Join(browserDir, "node_modules", pkg, "package.json")); err != nil {
			missingBrowser(t, pkg+" is not installed: run `npm ci --prefix services/deliver/testdata/browser --ignore-scripts`")
		}
	}
	buf, err = filepath.Abs("../../.tmp/bin/buf")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(buf); err != nil {
		missingBrowser(t, buf+" is missing: `make generate` builds it")
	}
	return node, chromium, buf
}

// missingBrowser skips the test loudly, or fails it when CI is set.
func missingBrowser(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI must run the in-app browser test)", why)
	}
	t.Skipf("SKIPPING in-app browser test: %s", why)
}

// buildInAppPage generates the TypeScript client from apis/ (so it can
// never be stale: it is never committed) next to a copy of the page's
// sources, bundles them, and returns the directory to serve.
func buildInAppPage(t *testing.T, node, buf, dir string) string {
	t.Helper()
	out := t.TempDir()
	for _, f := range []string{"index.html", "main.ts"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = "../.." // the buf module
		cmd.Env = append(os.Environ(), "PATH="+filepath.Join(dir, "node_modules", ".bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, b)
		}
	}
	run(buf, "generate", "--template", filepath.Join(dir, "buf.gen.yaml"), "--path", "apis/whisper/delivery/v1", "--output", out)
	run(node, filepath.Join(dir, "build.mjs"), out)
	return out
}

// driverStep is one line drive.mjs prints.
type driverStep struct {
	Step       string `json:"step"`
	DeliveryID string `json:"deliveryId"`
	Title      string `json:"title"`
	Body       string `json:"body"`
	Count      int    `json:"count"`
	Messages   int    `json:"messages"`
}

// driver is drive.mjs running: steps come from its stdout; next lets it go
// on where it waits for the test.
type driver struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	steps  chan driverStep
	stderr *strings.Builder // read only once done has delivered
	done   chan error
}

func startDriver(t *testing.T, node, chromium, dir, pageURL, title string) *driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "drive.mjs"), pageURL, title)
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	d := &driver{t: t, cmd: cmd, stdin: stdin, steps: make(chan driverStep, 8), stderr: &strings.Builder{}, done: make(chan error, 1)}
	cmd.Stderr = d.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(d.steps)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var s driverStep
			if json.Unmarshal(sc.Bytes(), &s) == nil {
				d.steps <- s
			}
		}
		d.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		stdin.Close()
		cancel()
		for range d.steps {
		}
	})
	return d
}

// expect returns the next step, failing the test unless it is want.
func (d *driver) expect(want string) driverStep {
	d.t.Helper()
	select {
	case s, ok := <-d.steps:
		if !ok {
			d.t.Fatalf("drive.mjs ended before %q: %v\nstderr:\n%s", want, <-d.done, d.stderr)
		}
		if s.Step != want {
			d.t.Fatalf("drive.mjs: step %+v, want %q", s, want)
		}
		return s
	case <-time.After(90 * time.Second):
		d.t.Fatalf("drive.mjs: no %q step after 90 s", want)
	}
	return driverStep{}
}

func (d *driver) next() {
	d.t.Helper()
	if _, err := io.WriteString(d.stdin, "go\n"); err != nil {
		// The script died: its stderr says why, once it has ended.
		for range d.steps {
		}
		d.t.Fatalf("drive.mjs stdin: %v (%v)\nstderr:\n%s", err, <-d.done, d.stderr)
	}
}

// wait waits for the script to end and fails on a non-zero exit.
func (d *driver) wait() {
	d.t.Helper()
	for range d.steps {
	}
	if err := <-d.done; err != nil {
		d.t.Fatalf("drive.mjs: %v\nstderr:\n%s", err, d.stderr)
	}
}
