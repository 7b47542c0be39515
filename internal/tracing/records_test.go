package tracing_test

import (
	"context"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/whisperhq/whisper/internal/tracing"
)

// newRecorder returns a provider that samples everything and the recorder
// that keeps its ended spans.
func newRecorder(t testing.TB) (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, rec
}

func headerKeys(r *kgo.Record) []string {
	var keys []string
	for _, h := range r.Headers {
		keys = append(keys, h.Key)
	}
	return keys
}

func TestInjectRecords(t *testing.T) {
	tp, _ := newRecorder(t)
	spanCtx, span := tp.Tracer("t").Start(context.Background(), "request")
	defer span.End()
	member, _ := baggage.NewMember("workspace", "w1")
	bag, _ := baggage.New(member)

	for _, tc := range []struct {
		name     string
		ctx      context.Context
		existing []kgo.RecordHeader
		wantKeys []string
		wantSpan trace.SpanContext
		wantBag  string
	}{
		{name: "no span, no baggage", ctx: context.Background()},
		{name: "span", ctx: spanCtx, wantKeys: []string{"traceparent"}, wantSpan: span.SpanContext()},
		{
			name:     "span and baggage",
			ctx:      baggage.ContextWithBaggage(spanCtx, bag),
			wantKeys: []string{"baggage", "traceparent"},
			wantSpan: span.SpanContext(),
			wantBag:  "w1",
		},
		{
			// A dead-lettered copy of a record keeps its other headers
			// and gets one traceparent, the new one.
			name: "replaces a traceparent",
			ctx:  spanCtx,
			existing: []kgo.RecordHeader{
				{Key: "whisper-dlq-reason", Value: []byte("bad")},
				{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")},
			},
			wantKeys: []string{"whisper-dlq-reason", "traceparent"},
			wantSpan: span.SpanContext(),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs := []*kgo.Record{
				{Value: []byte("a"), Headers: slices.Clone(tc.existing)},
				{Value: []byte("b"), Headers: slices.Clone(tc.existing)},
			}
			tracing.InjectRecords(tc.ctx, recs...)
			for i, r := range recs {
				if diff := cmp.Diff(tc.wantKeys, headerKeys(r)); diff != "" {
					t.Errorf("record %d header keys (-want +got):\n%s", i, diff)
				}
				got := tracing.ContextFromRecord(context.Background(), r)
				if sc := trace.SpanContextFromContext(got); !sc.Equal(tc.wantSpan.WithRemote(tc.wantSpan.IsValid())) {
					t.Errorf("record %d: extracted span context %v, want %v", i, sc, tc.wantSpan)
				}
				if v := baggage.FromContext(got).Member("workspace").Value(); v != tc.wantBag {
					t.Errorf("record %d: baggage workspace = %q, want %q", i, v, tc.wantBag)
				}
			}
		})
	}
}

// TestStartProcess gives a batch of records from two traces (one of them
// twice), a record without a context and one with an unreadable one: three
// process spans, two in their records' traces and one new, counting their
// records.
func TestStartProcess(t *testing.T) {
	tp, rec := newRecorder(t)
	ctxA, a := tp.Tracer("t").Start(context.Background(), "send A")
	ctxB, b := tp.Tracer("t").Start(context.Background(), "send B")
	a.End()
	b.End()
	rA1 := &kgo.Record{Topic: "whisper.events", Partition: 2}
	rA2 := &kgo.Record{Topic: "whisper.events", Partition: 2}
	rB := &kgo.Record{Topic: "whisper.events", Partition: 2}
	rNone := &kgo.Record{Topic: "whisper.events", Partition: 2}
	rBad := &kgo.Record{Topic: "whisper.events", Partition: 2, Headers: []kgo.RecordHeader{{Key: "traceparent", Value: []byte("garbage")}}}
	tracing.InjectRecords(ctxA, rA1, rA2)
	tracing.InjectRecords(ctxB, rB)

	ctx, p := tracing.StartProcess(context.Background(), tp, "whisper-profiles", []*kgo.Record{rA1, rNone, rB, rBad, rA2})
	if got := trace.SpanContextFromContext(ctx); got.TraceID() != a.SpanContext().TraceID() {
		t.Errorf("returned context is in trace %v, want the first record's %v", got.TraceID(), a.SpanContext().TraceID())
	}
	// Each record maps to the span that covers it.
	for _, tc := range []struct {
		name string
		r    *kgo.Record
		want trace.TraceID
	}{
		{"rA2", rA2, a.SpanContext().TraceID()},
		{"rB", rB, b.SpanContext().TraceID()},
		{"rNone", rNone, trace.TraceID{}},
		{"rBad", rBad, trace.TraceID{}},
	} {
		got := trace.SpanContextFromContext(p.ContextFor(context.Background(), tc.r))
		if !got.IsValid() {
			t.Errorf("ContextFor(%s) carries no span", tc.name)
			continue
		}
		if tc.want.IsValid() && got.TraceID() != tc.want {
			t.Errorf("ContextFor(%s) is in trace %v, want %v", tc.name, got.TraceID(), tc.want)
		}
		if !tc.want.IsValid() && (got.TraceID() == a.SpanContext().TraceID() || got.TraceID() == b.SpanContext().TraceID()) {
			t.Errorf("ContextFor(%s) is in a sender's trace, want the batch's own", tc.name)
		}
	}
	if got := trace.SpanContextFromContext((*tracing.Process)(nil).ContextFor(context.Background(), rA1)); got.IsValid() {
		t.Errorf("nil Process: ContextFor carries %v, want nothing", got)
	}
	p.End(nil)

	type span struct {
		Name       string
		Kind       trace.SpanKind
		Parent     trace.SpanID
		SameTrace  trace.TraceID
		Count      int64
		Group      string
		Partition  string
		NewTraceOK bool
	}
	var got []span
	for _, s := range rec.Ended()[2:] {
		attrs := attribute.NewSet(s.Attributes()...)
		count, _ := attrs.Value("messaging.batch.message_count")
		group, _ := attrs.Value("messaging.consumer.group.name")
		part, _ := attrs.Value("messaging.destination.partition.id")
		sp := span{Name: s.Name(), Kind: s.SpanKind(), Parent: s.Parent().SpanID(), Count: count.AsInt64(), Group: group.AsString(), Partition: part.AsString()}
		switch s.Parent().TraceID() {
		case a.SpanContext().TraceID(), b.SpanContext().TraceID():
			sp.SameTrace = s.SpanContext().TraceID()
		default:
			sp.NewTraceOK = !s.Parent().IsValid()
		}
		got = append(got, sp)
	}
	want := []span{
		{Name: "process whisper.events", Kind: trace.SpanKindConsumer, Parent: a.SpanContext().SpanID(), SameTrace: a.SpanContext().TraceID(), Count: 2, Group: "whisper-profiles", Partition: "2"},
		{Name: "process whisper.events", Kind: trace.SpanKindConsumer, Count: 2, Group: "whisper-profiles", Partition: "2", NewTraceOK: true},
		{Name: "process whisper.events", Kind: trace.SpanKindConsumer, Parent: b.SpanContext().SpanID(), SameTrace: b.SpanContext().TraceID(), Count: 1, Group: "whisper-profiles", Partition: "2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("process spans (-want +got):\n%s", diff)
	}
}

// TestStartProcessOff: without a provider nothing is read or recorded, and
// the nil *Process may be ended.
func TestStartProcessOff(t *testing.T) {
	ctx := context.Background()
	got, p := tracing.StartProcess(ctx, nil, "g", []*kgo.Record{{Topic: "whisper.events"}})
	if got != ctx || p != nil {
		t.Errorf("StartProcess(nil provider) = %v, %v; want the same context and nil", got, p)
	}
	p.End(nil)
	sendCtx, span := tracing.StartSend(ctx, nil, "whisper.events", 3)
	if sendCtx != ctx || span.IsRecording() {
		t.Errorf("StartSend(nil provider) = %v, recording %v; want the same context and a no-op span", sendCtx, span.IsRecording())
	}
}

// TestStartProcessBoundsSpans: a batch of more traces than the cap gets
// the cap's spans, the rest linked from the first, and every record counted.
func TestStartProcessBoundsSpans(t *testing.T) {
	tp, rec := newRecorder(t)
	var recs []*kgo.Record
	for range 100 {
		ctx, s := tp.Tracer("t").Start(context.Background(), "send")
		s.End()
		r := &kgo.Record{Topic: "whisper.events"}
		tracing.InjectRecords(ctx, r)
		recs = append(recs, r)
	}
	_, p := tracing.StartProcess(context.Background(), tp, "", recs)
	p.End(nil)
	spans := rec.Ended()[100:]
	if len(spans) != 64 {
		t.Fatalf("%d process spans, want 64", len(spans))
	}
	if got := len(spans[0].Links()); got != 36 {
		t.Errorf("first span has %d links, want 36", got)
	}
	var total int64
	for _, s := range spans {
		set := attribute.NewSet(s.Attributes()...)
		v, _ := set.Value("messaging.batch.message_count")
		total += v.AsInt64()
	}
	if total != 100 {
		t.Errorf("spans count %d records, want 100", total)
	}
}
