package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
)

// sdkDir holds the Node scripts that drive the real SDKs, and their pinned
// packages once `npm ci --prefix services/ingest/testdata/sdk` has run.
const sdkDir = "testdata/sdk"

// sdkClient is a published SDK, unmodified but for its host setting.
type sdkClient struct {
	name    string
	script  string // in sdkDir
	pkg     string // its package under node_modules
	library string // the context.library.name it stamps on every call
}

var sdkClients = []sdkClient{
	{name: "segment", script: "analytics-node.mjs", pkg: "@segment/analytics-node", library: "@segment/analytics-node"},
	// RudderStack's SDK descends from Segment's and still calls itself so.
	{name: "rudderstack", script: "rudder-sdk-node.mjs", pkg: "@rudderstack/rudder-sdk-node", library: "analytics-node"},
}

// sdkCall is one call of the SDK's public API: method is its name, message
// its argument, passed to the SDK unchanged.
type sdkCall struct {
	Method  string         `json:"method"`
	Message map[string]any `json:"message"`
}

// sdkCalls are the calls each SDK makes: every call type the Node SDKs
// share, known and anonymous users, nested properties, a client timestamp
// and per-call context and integrations.
func sdkCalls() []sdkCall {
	return []sdkCall{
		{"identify", map[string]any{
			"userId": "user-42", "anonymousId": "anon-7f3a",
			"traits":  map[string]any{"email": "ada@example.com", "name": "Ada Lovelace", "plan": "pro", "logins": 12.0},
			"context": map[string]any{"ip": "203.0.113.9", "locale": "en-GB"},
		}},
		{"track", map[string]any{
			"userId": "user-42", "event": "Order Completed",
			"properties": map[string]any{
				"orderId": "o-1001", "total": 99.95, "currency": "EUR", "gift": false, "coupon": nil,
				"products": []any{map[string]any{"sku": "sku-1", "quantity": 2.0}, map[string]any{"sku": "sku-9", "quantity": 1.0}},
			},
			"context": map[string]any{"campaign": map[string]any{"source": "newsletter", "medium": "email"}},
		}},
		{"track", map[string]any{
			"anonymousId": "anon-7f3a", "event": "Product Viewed",
			"properties": map[string]any{"sku": "sku-2", "name": "Café crème ☕"},
		}},
		{"track", map[string]any{
			"userId": "user-42", "anonymousId": "anon-7f3a", "event": "Checkout Started",
			"properties": map[string]any{"step": 1.0},
			"timestamp":  "2024-04-30T08:15:00.250Z",
		}},
		{"track", map[string]any{
			"userId": "user-42", "event": "Signed In",
			"integrations": map[string]any{"All": false, "Mixpanel": true},
		}},
		{"page", map[string]any{
			"userId": "user-42", "category": "Docs", "name": "Pricing",
			"properties": map[string]any{"url": "https://example.com/pricing", "path": "/pricing"},
		}},
		{"group", map[string]any{
			"userId": "user-42", "groupId": "acme",
			"traits": map[string]any{"name": "Acme Inc", "employees": 250.0},
		}},
		{"alias", map[string]any{"userId": "user-42", "previousId": "anon-7f3a"}},
	}
}

// sdkOutput is what a script prints: per call, the item as the SDK put it on
// the wire and the other top-level fields of its request (sentAt, ...).
type sdkOutput struct {
	Calls []struct {
		Message map[string]any `json:"message"`
		Batch   map[string]any `json:"batch"`
	} `json:"calls"`
}

// TestSDKs sends events through the published Segment and RudderStack Node
// SDKs, configured only with Whisper's URL as their host, and checks that
// each record on whisper.events is exactly what the SDK sent.
func TestSDKs(t *testing.T) {
	node := requireNode(t)
	for _, sdk := range sdkClients {
		t.Run(sdk.name, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", sdk.pkg, "package.json")); err != nil {
				missing(t, sdk.pkg+" is not installed: run `npm ci --prefix services/ingest/testdata/sdk --omit=optional --ignore-scripts`")
			}
			s := newStack(t)
			calls := sdkCalls()

			t.Run("bad write key fails the SDK", func(t *testing.T) {
				_, stderr, err := runSDK(t, node, sdk, s.url, "wk_unknown", calls)
				var exit *exec.ExitError
				if !errors.As(err, &exit) {
					t.Fatalf("script with an unknown write key: %v, want a non-zero exit\nstderr:\n%s", err, stderr)
				}
				// The SDK itself reports the refusal, not just the trace.
				reported := false
				for line := range strings.Lines(stderr) {
					reported = reported || strings.HasPrefix(line, "delivery failed: ") && strings.Contains(line, "401")
				}
				if !reported {
					t.Errorf("the SDK reported no error naming the 401; stderr:\n%s", stderr)
				}
			})

			t.Run("records are what the SDK sent", func(t *testing.T) {
				stdout, stderr, err := runSDK(t, node, sdk, s.url, s.key, calls)
				if err != nil {
					t.Fatalf("%s: %v\nstderr:\n%s", sdk.script, err, stderr)
				}
				// SDK logging may come first: the result is the last line.
				lines := bytes.Split(bytes.TrimSpace(stdout), []byte("\n"))
				var out sdkOutput
				if err := json.Unmarshal(lines[len(lines)-1], &out); err != nil {
					t.Fatalf("script output %q: %v", stdout, err)
				}
				if len(out.Calls) != len(calls) {
					t.Fatalf("script reported %d calls, want %d", len(out.Calls), len(calls))
				}
				// Nothing of the refused attempt was produced, and nothing
				// twice: the topic holds exactly one record per call.
				got := s.events(t, len(calls))
				if extra := kafkatest.ReadSettled(t, s.brokers, kafka.TopicEvents, len(calls), 10*time.Second, time.Second); len(extra) != len(calls) {
					t.Errorf("topic holds %d records, want %d", len(extra), len(calls))
				}
				for i, c := range calls {
					sent, batch := out.Calls[i].Message, out.Calls[i].Batch
					id, _ := sent["messageId"].(string)
					if id == "" {
						t.Errorf("call %d (%s): the SDK sent no messageId: %v", i, c.Method, sent)
						continue
					}
					checkSent(t, i, c, sent, sdk.library)
					r := got[id]
					if r == nil {
						t.Errorf("call %d (%s): no record for message %s", i, c.Method, id)
						continue
					}
					user, _ := c.Message["userId"].(string)
					if user == "" {
						user, _ = c.Message["anonymousId"].(string)
					}
					if wantKey := s.ws + "/" + user; string(r.Key) != wantKey {
						t.Errorf("call %d (%s): record key %q, want %q", i, c.Method, r.Key, wantKey)
					}
					want := wantEvent(t, s, sent, batch)
					if diff := cmp.Diff(want, canonical(t, decode(t, r)), protocmp.Transform(), jsonAsText); diff != "" {
						t.Errorf("call %d (%s): record (-what the SDK sent +got):\n%s", i, c.Method, diff)
					}
				}
			})
		})
	}
}

// requireNode returns the node binary, or skips (fails on CI) without one.
func requireNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node is not on PATH: install Node.js 20 or later to run the SDK compatibility tests")
	}
	return node
}

// missing skips the test loudly, or fails it when CI is set: CI must run it.
func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI must run the SDK compatibility tests)", why)
	}
	t.Skipf("SKIPPING SDK compatibility test: %s", why)
}

// runSDK runs sdk's script against baseURL with writeKey, the calls on its
// stdin, and returns its stdout and stderr. stderr traces each request the
// SDK made, which is logged.
func runSDK(t *testing.T, node string, sdk sdkClient, baseURL, writeKey string, calls []sdkCall) ([]byte, string, error) {
	t.Helper()
	in, err := json.Marshal(calls)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, sdk.script, baseURL, writeKey)
	cmd.Dir = sdkDir
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	if ctx.Err() != nil {
		err = errors.Join(err, ctx.Err())
	}
	t.Logf("node %s (key %s): %v\n%s", sdk.script, writeKey, err, stderr.String())
	return stdout.Bytes(), stderr.String(), err
}

// checkSent checks that the SDK sent the call asked of it, so the record
// comparison is about Whisper and not about what the SDK made of the call.
func checkSent(t *testing.T, i int, c sdkCall, sent map[string]any, library string) {
	t.Helper()
	if sent["type"] != c.Method {
		t.Errorf("call %d: the SDK sent type %v, want %s", i, sent["type"], c.Method)
	}
	for k, v := range c.Message {
		if k == "timestamp" {
			continue // a Date in the SDK; checked on the record
		}
		asked, isObject := v.(map[string]any)
		if !isObject {
			if diff := cmp.Diff(v, sent[k]); diff != "" {
				t.Errorf("call %d (%s): the SDK sent %s (-asked +sent):\n%s", i, c.Method, k, diff)
			}
			continue
		}
		// SDKs add to objects (context.library; Segment's page copies
		// name and category into properties), never change what was asked.
		got, _ := sent[k].(map[string]any)
		for kk, vv := range asked {
			if diff := cmp.Diff(vv, got[kk]); diff != "" {
				t.Errorf("call %d (%s): the SDK sent %s.%s (-asked +sent):\n%s", i, c.Method, k, kk, diff)
			}
		}
	}
	ctx, _ := sent["context"].(map[string]any)
	lib, _ := ctx["library"].(map[string]any)
	if lib["name"] != library {
		t.Errorf("call %d (%s): context.library.name = %v, want %q", i, c.Method, lib["name"], library)
	}
}

// wantEvent is the record Whisper must write for sent, an item of a batch
// whose other top-level fields are batch, received at s.now.
func wantEvent(t *testing.T, s *stack, sent, batch map[string]any) *eventv1.Event {
	t.Helper()
	str := func(k string) string {
		v, _ := sent[k].(string)
		return v
	}
	obj := func(k string) []byte {
		v, ok := sent[k]
		if !ok || v == nil {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ts := func(v any) time.Time {
		s, _ := v.(string)
		if s == "" {
			return time.Time{}
		}
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("the SDK sent timestamp %q: %v", s, err)
		}
		return tm
	}
	types := map[string]eventv1.EventType{
		"track": eventv1.EventType_EVENT_TYPE_TRACK, "identify": eventv1.EventType_EVENT_TYPE_IDENTIFY,
		"page": eventv1.EventType_EVENT_TYPE_PAGE, "screen": eventv1.EventType_EVENT_TYPE_SCREEN,
		"group": eventv1.EventType_EVENT_TYPE_GROUP, "alias": eventv1.EventType_EVENT_TYPE_ALIAS,
	}
	ev := &eventv1.Event{
		MessageId: str("messageId"), WorkspaceId: s.ws, Type: types[str("type")],
		UserId: str("userId"), AnonymousId: str("anonymousId"),
		Event: str("event"), Name: str("name"), Category: str("category"),
		GroupId: str("groupId"), PreviousId: str("previousId"),
		Properties: obj("properties"), Traits: obj("traits"), Integrations: obj("integrations"),
		ReceivedAt: timestamppb.New(s.now),
	}
	// Batch-level context sits under the item's own.
	ctx := map[string]any{}
	if bc, ok := batch["context"].(map[string]any); ok {
		for k, v := range bc {
			ctx[k] = v
		}
	}
	if ic, ok := sent["context"].(map[string]any); ok {
		for k, v := range ic {
			ctx[k] = v
		}
	}
	var err error
	if ev.Context, err = json.Marshal(ctx); err != nil {
		t.Fatal(err)
	}
	// Segment's rule: the event happened at receivedAt - (sentAt - timestamp).
	happened := ts(sent["timestamp"])
	if happened.IsZero() {
		happened = ts(sent["originalTimestamp"])
	}
	sentAt := ts(sent["sentAt"])
	if sentAt.IsZero() {
		sentAt = ts(batch["sentAt"])
	}
	if happened.IsZero() || sentAt.IsZero() {
		t.Fatalf("the SDK sent no timestamp or no sentAt: item %v, batch %v", sent, batch)
	}
	ev.OriginalTimestamp = timestamppb.New(happened)
	ev.SentAt = timestamppb.New(sentAt)
	ev.Timestamp = timestamppb.New(s.now.Add(-sentAt.Sub(happened)))
	return canonical(t, ev)
}

// jsonAsText shows the JSON fields of events as text in diffs.
var jsonAsText = cmp.Transformer("text", func(b []byte) string { return string(b) })

// canonical rewrites the JSON fields of ev in one spelling (sorted keys, no
// spaces), so they compare by meaning.
func canonical(t *testing.T, ev *eventv1.Event) *eventv1.Event {
	t.Helper()
	for _, f := range []*[]byte{&ev.Properties, &ev.Traits, &ev.Context, &ev.Integrations} {
		if len(*f) == 0 {
			*f = nil
			continue
		}
		var v any
		if err := json.Unmarshal(*f, &v); err != nil {
			t.Fatalf("JSON field %q: %v", *f, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		*f = b
	}
	return ev
}
