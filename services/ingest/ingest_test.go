package ingest_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	ingestv1 "github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1/ingestv1connect"
	"github.com/whisperhq/whisper/internal/kafka"
	"github.com/whisperhq/whisper/internal/kafkatest"
	"github.com/whisperhq/whisper/internal/metricstest"
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpc"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/ingest"
)

// keys is a write-key table; the real one lives in internal/workspace.
type keys map[string]string

func (k keys) ResolveWriteKey(_ context.Context, key string) (string, error) {
	if ws, ok := k[key]; ok {
		return ws, nil
	}
	return "", errors.New("unknown write key")
}

type stack struct {
	url     string
	brokers []string
	cluster *kfake.Cluster
	rdb     *redis.Client
	config  stackConfig
	ws      string
	key     string
	now     time.Time
	reg     *prometheus.Registry
}

type stackConfig struct {
	kafka      kafka.Config
	kgo        []kgo.Opt
	ackTimeout time.Duration
}

type stackOption func(*stackConfig)

func newStack(t testing.TB, opts ...stackOption) *stack {
	t.Helper()
	cluster, brokers := kafkatest.NewCluster(t)
	sc := stackConfig{
		kafka:      kafka.Config{Brokers: brokers, Partitions: 4, ReplicationFactor: -1, MaxBufferedBytes: 16 << 20, Linger: time.Millisecond},
		ackTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(&sc)
	}
	s := &stack{brokers: brokers, cluster: cluster, rdb: redistest.New(t), config: sc,
		ws: "ws-" + randHex(), key: "wk_" + randHex(),
		now: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), reg: prometheus.NewRegistry()}
	s.url = s.serve(t, s.reg)
	return s
}

// peer starts another ingest process on the stack's broker and Redis, as a
// second replica behind a load balancer would be, and returns its URL.
func (s *stack) peer(t testing.TB) string {
	t.Helper()
	return s.serve(t, prometheus.NewRegistry())
}

// serve starts an ingest service with its own producer on a new listener,
// its metrics in reg, and returns its URL.
func (s *stack) serve(t testing.TB, reg *prometheus.Registry) string {
	t.Helper()
	cfg := s.config.kafka
	producer, err := kafka.NewClient(cfg, "ingest-test", nil, s.config.kgo...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := kafka.EnsureTopics(ctx, producer, cfg, kafka.TopicEvents); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := ingest.New(ingest.Options{
		Producer: producer, Redis: s.rdb, WriteKeys: keys{s.key: s.ws},
		Registerer: reg, Logger: logger, Now: func() time.Time { return s.now },
		AckTimeout: s.config.ackTimeout,
	})
	srv := rpc.NewServer(rpc.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, ReadyTimeout: time.Second}, logger, prometheus.NewRegistry())
	for pattern, h := range svc.Routes() {
		srv.Handle(pattern, h)
	}
	path, h := svc.ConnectHandler()
	srv.HandleService(ingestv1connect.IngestServiceName, path, h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func randHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// post sends body to path with the write key as Basic-auth user name.
func (s *stack) post(t testing.TB, path, body string, header http.Header) (int, string) {
	t.Helper()
	return s.postTo(t, s.url, path, body, header)
}

// postTo is post to the process at url.
func (s *stack) postTo(t testing.TB, url, path, body string, header http.Header) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(s.key, "")
	for k, v := range header {
		req.Header[k] = v
	}
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// events reads want records and decodes them, keyed by message id.
func (s *stack) events(t *testing.T, want int) map[string]*kgo.Record {
	t.Helper()
	recs := kafkatest.ReadAll(t, s.brokers, kafka.TopicEvents, want, 10*time.Second)
	out := map[string]*kgo.Record{}
	for _, r := range recs {
		var ev eventv1.Event
		if err := proto.Unmarshal(r.Value, &ev); err != nil {
			t.Fatalf("record at offset %d is not an Event: %v", r.Offset, err)
		}
		if prev, dup := out[ev.GetMessageId()]; dup {
			t.Errorf("message %s produced twice: partition %d offsets %d and %d (producer %d/%d and %d/%d, received at %v and %v)",
				ev.GetMessageId(), r.Partition, prev.Offset, r.Offset, prev.ProducerID, prev.ProducerEpoch, r.ProducerID, r.ProducerEpoch,
				decode(t, prev).GetReceivedAt().AsTime(), ev.GetReceivedAt().AsTime())
		}
		out[ev.GetMessageId()] = r
	}
	if len(recs) != want {
		t.Fatalf("read %d records, want %d", len(recs), want)
	}
	return out
}

func decode(t *testing.T, r *kgo.Record) *eventv1.Event {
	t.Helper()
	var ev eventv1.Event
	if err := proto.Unmarshal(r.Value, &ev); err != nil {
		t.Fatal(err)
	}
	return &ev
}

func TestSegmentBatchRoundTrip(t *testing.T) {
	s := newStack(t)
	body := `{
	  "sentAt": "2024-05-01T11:59:58Z",
	  "context": {"library": {"name": "analytics-node", "version": "2.1.0"}},
	  "batch": [
	    {"type": "track", "messageId": "m-track", "userId": "u1", "event": "Order Completed",
	     "properties": {"total": 9.5}, "timestamp": "2024-05-01T11:59:57Z", "context": {"ip": "10.1.1.1"}},
	    {"type": "identify", "messageId": "m-identify", "anonymousId": "anon-1", "traits": {"plan": "pro"}},
	    {"type": "page", "messageId": "m-page", "userId": "u1", "name": "Pricing"},
	    {"type": "alias", "messageId": "m-alias", "userId": "u1", "previousId": "anon-1"},
	    {"type": "group", "messageId": "m-group", "userId": "u1", "groupId": "acme"},
	    {"type": "screen", "anonymousId": "anon-2", "name": "Home"}
	  ]
	}`
	code, res := s.post(t, "/v1/batch", body, nil)
	if code != http.StatusOK || res != `{"success":true}` {
		t.Fatalf("POST /v1/batch = %d %s, want 200 {\"success\":true}", code, res)
	}
	got := s.events(t, 6)

	// The track event, field by field.
	r := got["m-track"]
	if r == nil {
		t.Fatalf("no record for m-track; got %v", keysOf(got))
	}
	if string(r.Key) != s.ws+"/u1" {
		t.Errorf("key = %q, want %q", r.Key, s.ws+"/u1")
	}
	want := &eventv1.Event{
		MessageId: "m-track", WorkspaceId: s.ws, Type: eventv1.EventType_EVENT_TYPE_TRACK,
		UserId: "u1", Event: "Order Completed", Properties: []byte(`{"total": 9.5}`),
		// Sent 2 s after the event by the client's clock, received at 12:00:00.
		Timestamp:         timestamppb.New(s.now.Add(-time.Second)),
		OriginalTimestamp: timestamppb.New(time.Date(2024, 5, 1, 11, 59, 57, 0, time.UTC)),
		SentAt:            timestamppb.New(time.Date(2024, 5, 1, 11, 59, 58, 0, time.UTC)),
		ReceivedAt:        timestamppb.New(s.now),
	}
	ev := decode(t, r)
	var ctx map[string]any
	if err := json.Unmarshal(ev.GetContext(), &ctx); err != nil {
		t.Fatalf("context %q: %v", ev.GetContext(), err)
	}
	if diff := cmp.Diff(map[string]any{"ip": "10.1.1.1", "library": map[string]any{"name": "analytics-node", "version": "2.1.0"}}, ctx); diff != "" {
		t.Errorf("merged context (-want +got):\n%s", diff)
	}
	ev.Context = nil
	if diff := cmp.Diff(want, ev, protocmp.Transform()); diff != "" {
		t.Errorf("track event (-want +got):\n%s", diff)
	}

	// The others keep their type, identity and key.
	for id, want := range map[string]struct {
		typ eventv1.EventType
		key string
	}{
		"m-identify": {eventv1.EventType_EVENT_TYPE_IDENTIFY, s.ws + "/anon-1"},
		"m-page":     {eventv1.EventType_EVENT_TYPE_PAGE, s.ws + "/u1"},
		"m-alias":    {eventv1.EventType_EVENT_TYPE_ALIAS, s.ws + "/u1"},
		"m-group":    {eventv1.EventType_EVENT_TYPE_GROUP, s.ws + "/u1"},
	} {
		r := got[id]
		if r == nil {
			t.Errorf("no record for %s", id)
			continue
		}
		if ev := decode(t, r); ev.GetType() != want.typ || string(r.Key) != want.key {
			t.Errorf("%s: type %v key %q, want %v %q", id, ev.GetType(), r.Key, want.typ, want.key)
		}
	}
	// The screen call had no messageId: one was generated.
	var generated int
	for id := range got {
		if !strings.HasPrefix(id, "m-") {
			generated++
			if ev := decode(t, got[id]); ev.GetName() != "Home" || ev.GetAnonymousId() != "anon-2" {
				t.Errorf("screen event = %v", ev)
			}
		}
	}
	if generated != 1 {
		t.Errorf("%d events with generated ids, want 1", generated)
	}
}

func keysOf(m map[string]*kgo.Record) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSegmentSingleCallsGzipAndBodyKey(t *testing.T) {
	s := newStack(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"messageId":"m-gz","userId":"u2","event":"Signed Up"}`))
	zw.Close()
	code, res := s.post(t, "/v1/track", gz.String(), http.Header{"Content-Encoding": {"gzip"}})
	if code != http.StatusOK {
		t.Fatalf("gzip track = %d %s", code, res)
	}
	// The write key in the body, as browsers without Basic auth send it.
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/identify",
		strings.NewReader(fmt.Sprintf(`{"writeKey":%q,"messageId":"m-body","userId":"u2","traits":{"email":"a@b.c"}}`, s.key)))
	req.Header.Set("Content-Type", "text/plain")
	if code, res := do(t, req); code != http.StatusOK {
		t.Fatalf("identify with body key = %d %s", code, res)
	}
	got := s.events(t, 2)
	if ev := decode(t, got["m-gz"]); ev.GetEvent() != "Signed Up" || ev.GetType() != eventv1.EventType_EVENT_TYPE_TRACK {
		t.Errorf("gzip track = %v", ev)
	}
	if ev := decode(t, got["m-body"]); string(ev.GetTraits()) != `{"email":"a@b.c"}` {
		t.Errorf("identify traits = %s", ev.GetTraits())
	}
}

func TestSegmentRejects(t *testing.T) {
	s := newStack(t)
	big := `{"batch":[` + strings.Repeat(`{"type":"track","userId":"u","event":"e","properties":{"p":"`+strings.Repeat("x", 4000)+`"}},`, 130) +
		`{"type":"track","userId":"u","event":"e"}]}`
	tests := []struct {
		name     string
		path     string
		body     string
		key      string
		wantCode int
		wantMsg  string
	}{
		{"malformed json", "/v1/batch", `{"batch":[`, s.key, 400, "malformed JSON"},
		{"missing identity names item", "/v1/batch", `{"batch":[{"type":"track","userId":"u","event":"e"},{"type":"track","event":"e"}]}`, s.key, 400, "batch[1].userId: userId or anonymousId is required"},
		{"track without event", "/v1/track", `{"userId":"u"}`, s.key, 400, "event: required for track"},
		{"unknown key", "/v1/track", `{"userId":"u","event":"e"}`, "wk_nope", 401, "unknown or revoked write key"},
		{"no key", "/v1/track", `{"userId":"u","event":"e"}`, "", 401, "missing write key"},
		{"event over 32 KB", "/v1/track", `{"userId":"u","event":"e","properties":{"p":"` + strings.Repeat("x", 33<<10) + `"}}`, s.key, 413, "event is larger than 32768 bytes"},
		{"batch over 500 KB", "/v1/batch", big, s.key, 413, "batch is larger than 512000 bytes"},
		{"bad gzip", "/v1/batch", "not gzip", s.key, 400, "not valid gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.url+tt.path, strings.NewReader(tt.body))
			if tt.key != "" {
				req.SetBasicAuth(tt.key, "")
			}
			if tt.name == "bad gzip" {
				req.Header.Set("Content-Encoding", "gzip")
			}
			code, res := do(t, req)
			if code != tt.wantCode || !strings.Contains(res, tt.wantMsg) {
				t.Errorf("got %d %s, want %d containing %q", code, res, tt.wantCode, tt.wantMsg)
			}
			if !strings.Contains(res, `"success":false`) {
				t.Errorf("error body %s lacks \"success\":false", res)
			}
		})
	}
	// A valid event after all of that is the only record: nothing of a
	// refused batch was produced.
	if code, res := s.post(t, "/v1/track", `{"messageId":"m-ok","userId":"u","event":"e"}`, nil); code != 200 {
		t.Fatalf("valid track = %d %s", code, res)
	}
	if got := s.events(t, 1); got["m-ok"] == nil {
		t.Errorf("records = %v, want only m-ok", keysOf(got))
	}
}

func TestDedupWindow(t *testing.T) {
	s := newStack(t)
	body := `{"batch":[{"type":"track","messageId":"d1","userId":"u","event":"e"},
	                   {"type":"track","messageId":"d1","userId":"u","event":"e"},
	                   {"type":"track","messageId":"d2","userId":"u","event":"e"}]}`
	for i := range 3 {
		if code, res := s.post(t, "/v1/batch", body, nil); code != 200 {
			t.Fatalf("attempt %d: %d %s", i, code, res)
		}
	}
	got := s.events(t, 2)
	if got["d1"] == nil || got["d2"] == nil {
		t.Errorf("records %v, want d1 and d2 once each", keysOf(got))
	}
	// Nothing more arrives later.
	if extra := kafkatest.ReadSettled(t, s.brokers, kafka.TopicEvents, 2, 10*time.Second, time.Second); len(extra) != 2 {
		t.Errorf("topic holds %d records, want 2", len(extra))
	}
	// The first attempt checked Redis, produced and marked. A later one
	// checks Redis too unless it found the first's claim still held.
	for stage, want := range map[string][2]uint64{"dedup_check": {1, 3}, "produce": {1, 1}, "dedup_mark": {1, 1}} {
		if got := metricstest.Series(t, s.reg, "whisper_ingest_stage_duration_seconds", "stage", stage).GetHistogram().GetSampleCount(); got < want[0] || got > want[1] {
			t.Errorf("stage %s timed %d times, want %d to %d", stage, got, want[0], want[1])
		}
	}
}

// A retry that reaches another replica is caught by the Redis window:
// the items it already produced are dropped, the new ones are produced in
// the batch's order.
func TestDedupAcrossReplicas(t *testing.T) {
	s := newStack(t)
	track := func(id string) string { return `{"type":"track","messageId":"` + id + `","userId":"u","event":"e"}` }
	if code, res := s.post(t, "/v1/batch", `{"batch":[`+track("r1")+`,`+track("r2")+`]}`, nil); code != 200 {
		t.Fatalf("first replica: %d %s", code, res)
	}
	// The first replica marks after the broker's answer, off the request.
	waitFor(t, func() bool {
		return metricstest.Series(t, s.reg, "whisper_ingest_stage_duration_seconds", "stage", "dedup_mark").GetHistogram().GetSampleCount() == 1
	})
	retry := `{"batch":[` + strings.Join([]string{track("r3"), track("r1"), track("r4"), track("r2"), track("r5")}, ",") + `]}`
	if code, res := s.postTo(t, s.peer(t), "/v1/batch", retry, nil); code != 200 {
		t.Fatalf("second replica: %d %s", code, res)
	}
	recs := kafkatest.ReadAll(t, s.brokers, kafka.TopicEvents, 5, 10*time.Second)
	var order []string
	for _, r := range recs {
		order = append(order, decode(t, r).GetMessageId())
	}
	// One user: one partition, in the order produced. A repeat produced
	// again would stand in the first five, before r5.
	if want := []string{"r1", "r2", "r3", "r4", "r5"}; !slices.Equal(order, want) {
		t.Errorf("topic holds %v, want %v", order, want)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestConnectAndGRPCClients(t *testing.T) {
	s := newStack(t)
	auth := rpctest.BasicAuth(s.key)
	props, _ := structpb.NewStruct(map[string]any{"plan": "pro", "seats": 3})
	ts := time.Date(2024, 5, 1, 11, 0, 0, 0, time.UTC)
	for _, proto := range []struct {
		name string
		opts []connect.ClientOption
	}{
		{"connect", nil},
		{"grpc", []connect.ClientOption{connect.WithGRPC()}},
		{"grpcweb", []connect.ClientOption{connect.WithGRPCWeb()}},
	} {
		t.Run(proto.name, func(t *testing.T) {
			client := ingestv1connect.NewIngestServiceClient(rpctest.H2CClient(), s.url, append(proto.opts, auth)...)
			ctx := context.Background()
			id := "rpc-" + proto.name
			res, err := client.Track(ctx, &ingestv1.TrackRequest{
				Common: &ingestv1.Common{MessageId: id, UserId: "u9", Timestamp: timestamppb.New(ts)},
				Event:  "Plan Chosen", Properties: props,
			})
			if err != nil {
				t.Fatalf("Track: %v", err)
			}
			if res.GetMessageId() != id {
				t.Errorf("message id = %q, want %q", res.GetMessageId(), id)
			}
			batch, err := client.Batch(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
				{Call: &ingestv1.BatchItem_Identify{Identify: &ingestv1.IdentifyRequest{Common: &ingestv1.Common{UserId: "u9"}}}},
			}})
			if err != nil || len(batch.GetMessageIds()) != 1 || batch.GetMessageIds()[0] == "" {
				t.Fatalf("Batch = %v, %v; want one generated id", batch, err)
			}
			_, err = client.Track(ctx, &ingestv1.TrackRequest{Common: &ingestv1.Common{UserId: "u9"}})
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "event: required for track") {
				t.Errorf("Track without event: %v, want InvalidArgument naming event", err)
			}
			_, err = client.Batch(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
				{Call: &ingestv1.BatchItem_Identify{Identify: &ingestv1.IdentifyRequest{Common: &ingestv1.Common{UserId: "u"}}}},
				{Call: &ingestv1.BatchItem_Track{Track: &ingestv1.TrackRequest{Event: "x"}}},
			}})
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "items[1].userId") {
				t.Errorf("Batch with a bad item: %v, want InvalidArgument naming items[1].userId", err)
			}
			bad := ingestv1connect.NewIngestServiceClient(rpctest.H2CClient(), s.url, append(proto.opts, rpctest.BasicAuth("wk_bad"))...)
			if _, err := bad.Track(ctx, &ingestv1.TrackRequest{Common: &ingestv1.Common{UserId: "u"}, Event: "e"}); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("Track with a bad key: %v, want Unauthenticated", err)
			}
		})
	}
	got := s.events(t, 6)
	for _, name := range []string{"connect", "grpc", "grpcweb"} {
		r := got["rpc-"+name]
		if r == nil {
			t.Errorf("no record for rpc-%s", name)
			continue
		}
		ev := decode(t, r)
		var p map[string]any
		json.Unmarshal(ev.GetProperties(), &p)
		if ev.GetEvent() != "Plan Chosen" || ev.GetUserId() != "u9" || p["plan"] != "pro" || p["seats"] != 3.0 ||
			!ev.GetTimestamp().AsTime().Equal(ts) || ev.GetWorkspaceId() != s.ws {
			t.Errorf("%s event = %v", name, ev)
		}
	}
}

func TestBrokerDownIsUnavailableAndNothingIsLost(t *testing.T) {
	s := newStack(t, func(c *stackConfig) {
		c.kgo = append(c.kgo, kgo.RecordDeliveryTimeout(time.Second), kgo.RecordRetries(3))
		c.ackTimeout = 2 * time.Second
	})
	// The broker answers every produce with NOT_ENOUGH_REPLICAS, as a
	// cluster that lost its in-sync replicas does.
	var down atomic.Bool
	down.Store(true)
	s.cluster.ControlKey(int16(kmsg.Produce), func(r kmsg.Request) (kmsg.Response, error, bool) {
		s.cluster.KeepControl()
		if !down.Load() {
			return nil, nil, false
		}
		req := r.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.NotEnoughReplicas.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	body := `{"batch":[{"type":"track","messageId":"b1","userId":"u","event":"e"},{"type":"track","messageId":"b2","userId":"v","event":"e"}]}`
	req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/batch", strings.NewReader(body))
	req.SetBasicAuth(s.key, "")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable || res.Header.Get("Retry-After") == "" {
		t.Fatalf("with the broker down: %d (Retry-After %q) %s, want 503 with Retry-After", res.StatusCode, res.Header.Get("Retry-After"), msg)
	}
	down.Store(false)
	// Retry as SDKs do, honouring 503: the first attempt may still be in
	// flight, and its late outcome decides whether the retry produces.
	for attempt := 1; ; attempt++ {
		code, res := s.post(t, "/v1/batch", body, nil)
		if code == 200 {
			break
		}
		if code != http.StatusServiceUnavailable || attempt == 10 {
			t.Fatalf("retry %d after recovery = %d %s", attempt, code, res)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if got := s.events(t, 2); got["b1"] == nil || got["b2"] == nil {
		t.Errorf("records %v, want b1 and b2", keysOf(got))
	}
}

func TestSilentBrokerTimesOut(t *testing.T) {
	s := newStack(t, func(c *stackConfig) { c.ackTimeout = time.Second })
	// The broker takes produce requests and never answers.
	release := make(chan struct{})
	s.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		s.cluster.KeepControl()
		s.cluster.SleepControl(func() { <-release })
		return nil, nil, false
	})
	t.Cleanup(func() { close(release) })
	start := time.Now()
	code, res := s.post(t, "/v1/track", `{"userId":"u","event":"e"}`, nil)
	if code != http.StatusServiceUnavailable || !strings.Contains(res, "no broker acknowledgement") {
		t.Fatalf("silent broker: %d %s, want 503 naming the missing acknowledgement", code, res)
	}
	if waited := time.Since(start); waited > 5*time.Second {
		t.Errorf("answered after %v, want about the 1 s ack timeout", waited)
	}
}

func TestBufferFullIsUnavailable(t *testing.T) {
	s := newStack(t, func(c *stackConfig) { c.kafka.MaxBufferedBytes = 1 << 20 })
	// Hold every produce request until the test ends, so the buffer fills.
	release := make(chan struct{})
	s.cluster.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		s.cluster.KeepControl()
		s.cluster.SleepControl(func() { <-release })
		return nil, nil, false
	})
	t.Cleanup(func() { close(release) })
	prop := strings.Repeat("x", 30000)
	saw503 := false
	for i := 0; i < 60 && !saw503; i++ {
		body := fmt.Sprintf(`{"batch":[{"type":"track","userId":"u%d","event":"e","properties":{"p":%q}}]}`, i, prop)
		req, _ := http.NewRequest(http.MethodPost, s.url+"/v1/batch", strings.NewReader(body))
		req.SetBasicAuth(s.key, "")
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		res, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err == nil {
			saw503 = res.StatusCode == http.StatusServiceUnavailable
			res.Body.Close()
		}
		cancel()
	}
	if !saw503 {
		t.Fatal("never answered 503 while the producer buffer was full")
	}
}
