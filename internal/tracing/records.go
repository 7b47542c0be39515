package tracing

import (
	"context"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// HeaderTraceParent is the record header of the W3C trace context.
const HeaderTraceParent = "traceparent"

// recordCarrier reads and writes a record's headers for the propagator.
type recordCarrier struct{ r *kgo.Record }

var _ propagation.TextMapCarrier = recordCarrier{}

func (c recordCarrier) Get(key string) string {
	return string(headerValue(c.r, key))
}

// headerValue is the value of r's header key, nil when r has none.
func headerValue(r *kgo.Record, key string) []byte {
	for _, h := range r.Headers {
		if h.Key == key {
			if h.Value == nil {
				return []byte{}
			}
			return h.Value
		}
	}
	return nil
}

func (c recordCarrier) Set(key, value string) {
	setHeader(c.r, kgo.RecordHeader{Key: key, Value: []byte(value)})
}

func (c recordCarrier) Keys() []string {
	keys := make([]string, len(c.r.Headers))
	for i, h := range c.r.Headers {
		keys[i] = h.Key
	}
	return keys
}

// setHeader replaces r's header named h.Key, or adds it: a record copied
// from another (a dead letter, a retry) must not carry two traceparents.
func setHeader(r *kgo.Record, h kgo.RecordHeader) {
	for i := range r.Headers {
		if r.Headers[i].Key == h.Key {
			r.Headers[i] = h
			return
		}
	}
	r.Headers = append(r.Headers, h)
}

// InjectRecords writes the trace context of ctx (its span and baggage) into
// the headers of every record, so that whoever consumes them continues the
// trace. The headers are formatted once and shared by all the records. It
// does nothing when ctx has neither a span nor baggage.
func InjectRecords(ctx context.Context, recs ...*kgo.Record) {
	if !trace.SpanContextFromContext(ctx).IsValid() && baggage.FromContext(ctx).Len() == 0 {
		return
	}
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	keys := carrier.Keys()
	slices.Sort(keys)
	headers := make([]kgo.RecordHeader, len(keys))
	for i, k := range keys {
		headers[i] = kgo.RecordHeader{Key: k, Value: []byte(carrier[k])}
	}
	for _, r := range recs {
		for _, h := range headers {
			setHeader(r, h)
		}
	}
}

// ContextFromRecord returns ctx carrying the trace context (remote span and
// baggage) found in r's headers, if any: start a span from it to continue
// the trace of whoever produced r.
func ContextFromRecord(ctx context.Context, r *kgo.Record) context.Context {
	return Propagator.Extract(ctx, recordCarrier{r})
}

// StartSend starts the producer span of sending n records to topic, and
// returns ctx carrying it: pass that ctx to InjectRecords before producing.
// End the span when the broker has answered for every record. With a nil
// tp it returns ctx and a span that records nothing.
func StartSend(ctx context.Context, tp trace.TracerProvider, topic string, n int) (context.Context, trace.Span) {
	if tp == nil {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return tracer(tp).Start(ctx, "send "+topic,
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			semconv.MessagingSystemKafka,
			semconv.MessagingOperationTypeSend,
			semconv.MessagingOperationName("send"),
			semconv.MessagingDestinationName(topic),
			semconv.MessagingBatchMessageCount(n),
		))
}

// maxProcessSpans bounds the spans of one batch: past it, further traces
// are linked from the first span rather than given a span each.
const maxProcessSpans = 64

// Process is the set of spans of processing one batch of records.
type Process struct {
	spans []trace.Span
	// ctxs[i] carries spans[i]; byHeader maps a traceparent header value
	// to the index of the span that covers its records, noTrace is the
	// index of the span of records without one (-1: none).
	ctxs     []context.Context
	byHeader map[string]int
	noTrace  int
}

// StartProcess starts the spans of a consumer processing recs, one batch of
// one topic's records: one "process <topic>" span for each distinct trace
// context the records carry, parented by it, so that every event's trace
// continues into this processing (records of one ingest request share one
// context, so a batch has a span per request, not per record). Records
// without a context share one root span. The returned ctx carries the
// first span, for logs and calls made while processing. group names the
// consumer group. With a nil tp it returns ctx and a nil *Process, whose
// End does nothing, without reading any header.
func StartProcess(ctx context.Context, tp trace.TracerProvider, group string, recs []*kgo.Record) (context.Context, *Process) {
	if tp == nil || len(recs) == 0 {
		return ctx, nil
	}
	type parent struct {
		ctx   context.Context
		count int
	}
	var (
		parents []parent
		// Records of one request carry the same traceparent bytes: the
		// headers are parsed once per distinct value, not once per record.
		byHeader = map[string]int{}
		byID     = map[[24]byte]int{}
		noTrace  = -1
		links    []trace.Link
	)
	for _, r := range recs {
		header := headerValue(r, HeaderTraceParent)
		if header == nil {
			if noTrace < 0 {
				noTrace = len(parents)
				parents = append(parents, parent{ctx: ctx})
			}
			parents[noTrace].count++
			continue
		}
		if i, ok := byHeader[string(header)]; ok {
			parents[i].count++
			continue
		}
		rctx := ContextFromRecord(ctx, r)
		sc := trace.SpanContextFromContext(rctx)
		if !sc.IsValid() {
			if noTrace < 0 {
				noTrace = len(parents)
				parents = append(parents, parent{ctx: ctx})
			}
			byHeader[string(header)] = noTrace
			parents[noTrace].count++
			continue
		}
		var id [24]byte
		tid, sid := sc.TraceID(), sc.SpanID()
		copy(id[:16], tid[:])
		copy(id[16:], sid[:])
		if i, ok := byID[id]; ok { // the same span, differently flagged
			byHeader[string(header)] = i
			parents[i].count++
			continue
		}
		if len(parents) == maxProcessSpans {
			links = append(links, trace.Link{SpanContext: sc})
			byID[id], byHeader[string(header)] = 0, 0 // its records count on the first span
			parents[0].count++
			continue
		}
		byID[id], byHeader[string(header)] = len(parents), len(parents)
		parents = append(parents, parent{ctx: rctx, count: 1})
	}
	topic := recs[0].Topic
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKafka,
		semconv.MessagingOperationTypeProcess,
		semconv.MessagingOperationName("process"),
		semconv.MessagingDestinationName(topic),
		semconv.MessagingDestinationPartitionID(strconv.Itoa(int(recs[0].Partition))),
	}
	if group != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(group))
	}
	t := tracer(tp)
	p := &Process{spans: make([]trace.Span, len(parents)), ctxs: make([]context.Context, len(parents)), byHeader: byHeader, noTrace: noTrace}
	for i, par := range parents {
		opts := []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(attrs...),
			trace.WithAttributes(semconv.MessagingBatchMessageCount(par.count)),
		}
		if i == 0 && len(links) > 0 {
			opts = append(opts, trace.WithLinks(links...))
		}
		sctx, span := t.Start(par.ctx, "process "+topic, opts...)
		p.spans[i], p.ctxs[i] = span, sctx
	}
	return p.ctxs[0], p
}

// ContextFor returns ctx carrying the process span that covers r, one of
// the records the batch was started with, so that what processing r
// produces (a record on the next topic, say) continues r's trace. With a
// nil *Process, or a record the batch does not know, it returns ctx.
func (p *Process) ContextFor(ctx context.Context, r *kgo.Record) context.Context {
	if p == nil {
		return ctx
	}
	i := p.noTrace
	if header := headerValue(r, HeaderTraceParent); header != nil {
		var ok bool
		if i, ok = p.byHeader[string(header)]; !ok {
			return ctx
		}
	}
	if i < 0 {
		return ctx
	}
	ctx = trace.ContextWithSpanContext(ctx, trace.SpanContextFromContext(p.ctxs[i]))
	return baggage.ContextWithBaggage(ctx, baggage.FromContext(p.ctxs[i]))
}

// End ends every span of the batch, marking them failed when err is not nil.
func (p *Process) End(err error) {
	if p == nil {
		return
	}
	for _, s := range p.spans {
		if err != nil {
			s.RecordError(err)
			s.SetStatus(codes.Error, err.Error())
		}
		s.End()
	}
}
