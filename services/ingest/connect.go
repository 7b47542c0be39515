package ingest

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/go-json-experiment/json/jsontext"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/whisperhq/whisper/internal/gen/whisper/event/v1"
	ingestv1 "github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/ingest/v1/ingestv1connect"
)

// ConnectHandler returns the IngestService's path and handler. Calls
// authenticate with the write key as the Basic-auth user name, as on the
// Segment API.
func (s *Service) ConnectHandler(opts ...connect.HandlerOption) (string, http.Handler) {
	opts = append(opts, connect.WithReadMaxBytes(MaxBatchBytes+64<<10))
	path, h := ingestv1connect.NewIngestServiceHandler(&connectAPI{s}, opts...)
	return path, authn.NewMiddleware(s.authenticateWriteKey).Wrap(h)
}

// workspaceInfo is what authentication leaves in the context.
type workspaceInfo struct{ id string }

func (s *Service) authenticateWriteKey(ctx context.Context, req authn.Request) (any, error) {
	key, _, ok := req.BasicAuth()
	if !ok || key == "" {
		s.metrics.rejected.WithLabelValues("connect", reasonUnauthorized).Inc()
		return nil, authn.Errorf("missing write key: send it as the Basic-auth user name")
	}
	ws, err := s.keys.ResolveWriteKey(ctx, key)
	if err != nil {
		s.metrics.rejected.WithLabelValues("connect", reasonUnauthorized).Inc()
		return nil, authn.Errorf("unknown or revoked write key")
	}
	return workspaceInfo{id: ws}, nil
}

type connectAPI struct{ s *Service }

var _ ingestv1connect.IngestServiceHandler = (*connectAPI)(nil)

func (a *connectAPI) Track(ctx context.Context, r *ingestv1.TrackRequest) (*ingestv1.TrackResponse, error) {
	ids, err := a.acceptItems(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
		{Call: &ingestv1.BatchItem_Track{Track: r}},
	}}, "")
	if err != nil {
		return nil, err
	}
	return &ingestv1.TrackResponse{MessageId: ids[0]}, nil
}

func (a *connectAPI) Identify(ctx context.Context, r *ingestv1.IdentifyRequest) (*ingestv1.IdentifyResponse, error) {
	ids, err := a.acceptItems(ctx, &ingestv1.BatchRequest{Items: []*ingestv1.BatchItem{
		{Call: &ingestv1.BatchItem_Identify{Identify: r}},
	}}, "")
	if err != nil {
		return nil, err
	}
	return &ingestv1.IdentifyResponse{MessageId: ids[0]}, nil
}

func (a *connectAPI) Batch(ctx context.Context, r *ingestv1.BatchRequest) (*ingestv1.BatchResponse, error) {
	if len(r.GetItems()) == 0 {
		return nil, a.reject(reasonInvalid, connect.CodeInvalidArgument, &InputError{Field: "items", Msg: "must hold at least one call"})
	}
	ids, err := a.acceptItems(ctx, r, "items")
	if err != nil {
		return nil, err
	}
	return &ingestv1.BatchResponse{MessageIds: ids}, nil
}

// acceptItems validates every item, then accepts them together. field names
// the items in error messages ("items" for Batch, empty for single calls).
func (a *connectAPI) acceptItems(ctx context.Context, r *ingestv1.BatchRequest, field string) ([]string, error) {
	info, _ := authn.GetInfo(ctx).(workspaceInfo)
	if info.id == "" {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("no workspace"))
	}
	req := &request{calls: make([]call, 0, len(r.GetItems()))}
	var err error
	if req.context, err = structJSON(r.GetContext()); err != nil {
		return nil, a.reject(reasonInvalid, connect.CodeInvalidArgument, &InputError{Field: "context", Msg: err.Error()})
	}
	if req.integrations, err = structJSON(r.GetIntegrations()); err != nil {
		return nil, a.reject(reasonInvalid, connect.CodeInvalidArgument, &InputError{Field: "integrations", Msg: err.Error()})
	}
	req.sentAt = timeOrZero(r.GetSentAt())
	for i, item := range r.GetItems() {
		at := itemRef{list: field, index: i}
		if size := proto.Size(item); size > MaxEventBytes {
			return nil, a.reject(reasonTooLarge, connect.CodeResourceExhausted,
				&TooLargeError{What: fmt.Sprintf("%s (%d bytes)", cmp.Or(at.String(), "event"), size), Limit: MaxEventBytes})
		}
		c, err := itemCall(item, at)
		if err != nil {
			return nil, a.reject(reasonInvalid, connect.CodeInvalidArgument, err)
		}
		if err := c.validate(at); err != nil {
			return nil, a.reject(reasonInvalid, connect.CodeInvalidArgument, err)
		}
		req.calls = append(req.calls, c)
	}
	ids, err := a.s.accept(ctx, "connect", info.id, req)
	if err != nil {
		if errors.Is(err, ErrUnavailable) {
			cerr := connect.NewError(connect.CodeUnavailable, err)
			cerr.Meta().Set("Retry-After", "1")
			return nil, a.reject(reasonUnavailable, connect.CodeUnavailable, cerr)
		}
		return nil, connect.NewError(connect.CodeInternal, err)
	}
	return ids, nil
}

func (a *connectAPI) reject(reason string, code connect.Code, err error) error {
	a.s.metrics.rejected.WithLabelValues("connect", reason).Inc()
	var cerr *connect.Error
	if errors.As(err, &cerr) {
		return cerr
	}
	return connect.NewError(code, err)
}

// itemCall converts one RPC item to the shared call form.
func itemCall(item *ingestv1.BatchItem, at itemRef) (call, error) {
	var (
		c      call
		common *ingestv1.Common
		err    error
	)
	switch v := item.GetCall().(type) {
	case *ingestv1.BatchItem_Track:
		c.typ = eventv1.EventType_EVENT_TYPE_TRACK
		c.event = v.Track.GetEvent()
		common = v.Track.GetCommon()
		if c.properties, err = structJSON(v.Track.GetProperties()); err != nil {
			return call{}, &InputError{Field: at.field("properties"), Msg: err.Error()}
		}
	case *ingestv1.BatchItem_Identify:
		c.typ = eventv1.EventType_EVENT_TYPE_IDENTIFY
		common = v.Identify.GetCommon()
		if c.traits, err = structJSON(v.Identify.GetTraits()); err != nil {
			return call{}, &InputError{Field: at.field("traits"), Msg: err.Error()}
		}
	default:
		return call{}, &InputError{Field: cmp.Or(at.String(), "call"), Msg: "must be a track or identify call"}
	}
	c.messageID = common.GetMessageId()
	c.userID = common.GetUserId()
	c.anonymousID = common.GetAnonymousId()
	c.timestamp = timeOrZero(common.GetTimestamp())
	c.sentAt = timeOrZero(common.GetSentAt())
	if c.context, err = structJSON(common.GetContext()); err != nil {
		return call{}, &InputError{Field: at.field("common.context"), Msg: err.Error()}
	}
	if c.integrations, err = structJSON(common.GetIntegrations()); err != nil {
		return call{}, &InputError{Field: at.field("common.integrations"), Msg: err.Error()}
	}
	return c, nil
}

// structJSON encodes a Struct as a JSON object; nil stays nil.
func structJSON(s *structpb.Struct) (jsontext.Value, error) {
	if s == nil {
		return nil, nil
	}
	b, err := protojson.Marshal(s)
	if err != nil {
		return nil, err
	}
	return b, nil
}

func timeOrZero(ts *timestamppb.Timestamp) (t time.Time) {
	if ts == nil {
		return t
	}
	return ts.AsTime()
}
