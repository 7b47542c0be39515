package targets_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	ingestv1 "github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1/ingestv1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/internal/tracing"
	"github.com/whisperhq/whisper/services/decide"
	"github.com/whisperhq/whisper/services/deliver"
	"github.com/whisperhq/whisper/services/profiles"
	"github.com/whisperhq/whisper/services/targets"
)

// startTraced is start with tracing on, every span kept in memory.
func startTraced(t *testing.T) (*platform, *tracetest.SpanRecorder) {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	_, brokers := kafkatest.NewCluster(t)
	redistest.New(t)
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg targets.Config
	cfg.RegisterFlags(fs)
	cfg.Kafka.Brokers = brokers
	cfg.Kafka.Partitions = 3
	cfg.DatabaseURL = pgtest.NewDatabase(t)
	cfg.RedisURL = redistest.URL(t)
	cfg.AdminToken = adminToken
	cfg.HTTP.ShutdownTimeout = 10 * time.Second
	cfg.TracerProvider = tp
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &platform{url: "http://" + ln.Addr().String(), brokers: brokers, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan struct{})
	logger := slog.New(tracing.NewLogHandler(slog.NewTextHandler(io.Discard, nil)))
	go func() {
		p.done <- targets.Run(ctx, cfg, logger, targets.Options{Listener: ln, Ready: func(string) { close(ready) }})
	}()
	select {
	case <-ready:
	case err := <-p.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("platform not ready after 30 s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-p.done; err != nil {
			t.Errorf("Run returned %v after a clean stop", err)
		}
		tp.Shutdown(context.Background())
	})
	return p, rec
}

// TestTraceFollowsAnEvent sends one event over the Segment HTTP API and one
// over Connect, each triggering a campaign. Each request's trace holds its
// server span, the send to whisper.events under it, and under that the
// processing of both consumers of the record, profiles and decide, linked
// through the traceparent header the record carries on the broker; the
// decision decide publishes on whisper.decisions carries the same trace
// onward, for deliver.
func TestTraceFollowsAnEvent(t *testing.T) {
	p, rec := startTraced(t)
	ctx := context.Background()
	_, tokens, key := twoWorkspaces(t, p)
	campaigns := campaignv1connect.NewCampaignServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	if _, err := campaigns.CreateCampaign(ctx, &campaignv1.CreateCampaignRequest{Activate: true, Campaign: &campaignv1.Campaign{
		Name:     "welcome",
		Trigger:  &campaignv1.Trigger{Kind: &campaignv1.Trigger_Event{Event: &campaignv1.EventTrigger{Name: "Signed Up"}}},
		Variants: []*campaignv1.Variant{{Id: "A", Weight: 1, Channel: campaignv1.Channel_CHANNEL_WEBHOOK, ContentRef: "welcome/a"}},
	}}); err != nil {
		t.Fatalf("CreateCampaign: %v", err)
	}

	if code, res := post(t, p.url+"/v1/track", key, `{"userId":"u1","event":"Signed Up","messageId":"http-1"}`); code != http.StatusOK {
		t.Fatalf("POST /v1/track = %d %s", code, res)
	}
	client := ingestv1connect.NewIngestServiceClient(http.DefaultClient, p.url, rpctest.BasicAuth(key))
	if _, err := client.Track(ctx, &ingestv1.TrackRequest{
		Common: &ingestv1.Common{MessageId: "rpc-1", UserId: "u2"}, Event: "Signed Up",
	}); err != nil {
		t.Fatalf("Track: %v", err)
	}

	// The records on the broker carry the trace of their request.
	traceOf := map[string]trace.TraceID{} // message id -> trace in the record's header
	for _, r := range kafkatest.ReadAll(t, p.brokers, kafka.TopicEvents, 2, 10*time.Second) {
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatal(err)
		}
		sc := trace.SpanContextFromContext(tracing.ContextFromRecord(ctx, r))
		if !sc.IsValid() || !sc.IsSampled() {
			t.Fatalf("record %s carries no sampled trace context; headers %v", ev.GetMessageId(), r.Headers)
		}
		traceOf[ev.GetMessageId()] = sc.TraceID()
	}
	// So do the decisions they triggered.
	decisionTrace := map[string]trace.TraceID{} // trigger id -> trace in the decision record's header
	for _, r := range kafkatest.ReadAll(t, p.brokers, kafka.TopicDecisions, 2, 20*time.Second) {
		var d decisionv1.Decision
		if err := proto.Unmarshal(r.Value, &d); err != nil {
			t.Fatal(err)
		}
		decisionTrace[strings.TrimPrefix(d.GetTriggerId(), "event:")] = trace.SpanContextFromContext(tracing.ContextFromRecord(ctx, r)).TraceID()
	}

	for _, tc := range []struct {
		messageID string
		root      string
	}{
		{"http-1", "POST /v1/track"},
		{"rpc-1", "whisper.ingest.v1.IngestService/Track"},
	} {
		t.Run(tc.messageID, func(t *testing.T) {
			id, ok := traceOf[tc.messageID]
			if !ok {
				t.Fatalf("no record of %s on %s", tc.messageID, kafka.TopicEvents)
			}
			if got := decisionTrace[tc.messageID]; got != id {
				t.Errorf("the decision on %s carries trace %v, want the event's %v", kafka.TopicDecisions, got, id)
			}
			// The whole path, each span under the one that caused it:
			// deliver's consumer and its send attempts (the campaign's
			// template does not exist, so they fail and retry) hang off
			// decide's span through the decision record's headers.
			want := []string{
				tc.root + " (server)",
				"  send whisper.events (producer)",
				"    process whisper.events (consumer) group=" + decide.DefaultGroup,
				"      deliver webhook (internal)",
				"      process whisper.decisions (consumer) group=" + deliver.DefaultGroup,
				"    process whisper.events (consumer) group=" + profiles.DefaultGroup,
			}
			waitFor(t, "the trace of "+tc.messageID+" through profiles, decide and deliver", func() (bool, string) {
				got := tree(rec.Ended(), id)
				for _, w := range want {
					if !slices.Contains(got, w) {
						return false, "missing " + strings.TrimSpace(w) + " in\n" + strings.Join(got, "\n")
					}
				}
				return true, ""
			})
		})
	}
}

// tree renders the spans of one trace as an indented tree, with each
// consumer span's group, children in name order.
func tree(spans []sdktrace.ReadOnlySpan, id trace.TraceID) []string {
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	ids := map[trace.SpanID]bool{}
	for _, s := range spans {
		if s.SpanContext().TraceID() == id {
			ids[s.SpanContext().SpanID()] = true
		}
	}
	var roots []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanContext().TraceID() != id {
			continue
		}
		if parent := s.Parent().SpanID(); s.Parent().IsValid() && ids[parent] {
			children[parent] = append(children[parent], s)
		} else {
			roots = append(roots, s)
		}
	}
	var out []string
	var walk func(s sdktrace.ReadOnlySpan, depth int)
	label := func(s sdktrace.ReadOnlySpan) string {
		l := fmt.Sprintf("%s (%s)", s.Name(), s.SpanKind())
		for _, a := range s.Attributes() {
			if a.Key == semconv.MessagingConsumerGroupNameKey {
				l += " group=" + a.Value.AsString()
			}
		}
		return l
	}
	walk = func(s sdktrace.ReadOnlySpan, depth int) {
		out = append(out, strings.Repeat("  ", depth)+label(s))
		kids := children[s.SpanContext().SpanID()]
		slices.SortStableFunc(kids, func(a, b sdktrace.ReadOnlySpan) int { return strings.Compare(label(a), label(b)) })
		for _, c := range kids {
			walk(c, depth+1)
		}
	}
	for _, r := range roots {
		walk(r, 0)
	}
	return out
}
