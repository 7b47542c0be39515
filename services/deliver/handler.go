package deliver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	deliveryv1 "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1/deliveryv1connect"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	maxIDBytes      = 512
)

// Handler serves DeliveryService. It expects every request to carry an
// *auth.Principal (bearer authn middleware) and refuses requests without.
type Handler struct {
	s      *Service
	logger *slog.Logger
	tokens *InAppTokens // nil: IssueInAppToken is FailedPrecondition
	// heartbeat is how long a quiet StreamInApp waits before it sends a
	// heartbeat: under the 60 s idle timeout common to proxies and load
	// balancers.
	heartbeat time.Duration
}

// InAppHeartbeat is how often a quiet StreamInApp sends a heartbeat.
const InAppHeartbeat = 30 * time.Second

// InAppProcedures are the procedures that accept in-app tokens; mount the
// handler behind auth.AuthenticateBearerOrUser with them.
var InAppProcedures = []string{deliveryv1connect.DeliveryServiceStreamInAppProcedure, deliveryv1connect.DeliveryServiceMarkInAppReadProcedure}

var _ deliveryv1connect.DeliveryServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler reading s's ledger and inbox.
func NewHandler(s *Service, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{s: s, logger: logger, heartbeat: InAppHeartbeat}
}

// WithInAppTokens makes IssueInAppToken issue tokens signed by t; verify
// them in the authn middleware (auth.AuthenticateBearerOrUser).
func (h *Handler) WithInAppTokens(t *InAppTokens) *Handler {
	h.tokens = t
	return h
}

// Routes returns the path and handler to mount (behind bearer authn).
func (h *Handler) Routes(opts ...connect.HandlerOption) (string, http.Handler) {
	return deliveryv1connect.NewDeliveryServiceHandler(h, opts...)
}

const deliveryCols = `delivery_id, workspace_id::text, campaign_id, variant_id, user_id, channel, content_ref, state, reason,
	recipient, provider_message_id, attempts, send_time, next_attempt_at, create_time, update_time`

var states = map[string]deliveryv1.State{
	"scheduled": deliveryv1.State_STATE_SCHEDULED, "sending": deliveryv1.State_STATE_SENDING, "sent": deliveryv1.State_STATE_SENT,
	"retrying": deliveryv1.State_STATE_RETRYING, "failed": deliveryv1.State_STATE_FAILED, "skipped": deliveryv1.State_STATE_SKIPPED,
}

func scanDelivery(row pgx.Row) (*deliveryv1.Delivery, error) {
	d := &deliveryv1.Delivery{}
	var ch int16
	var state string
	var send, next, created, updated time.Time
	if err := row.Scan(&d.DeliveryId, &d.WorkspaceId, &d.CampaignId, &d.VariantId, &d.UserId, &ch, &d.ContentRef, &state, &d.Reason,
		&d.Recipient, &d.ProviderMessageId, &d.Attempts, &send, &next, &created, &updated); err != nil {
		return nil, err
	}
	d.DecisionId = d.DeliveryId
	d.Channel = campaignv1.Channel(ch)
	d.State = states[state]
	d.SendTime, d.CreateTime, d.UpdateTime = timestamppb.New(send), timestamppb.New(created), timestamppb.New(updated)
	if state == "scheduled" || state == "retrying" {
		d.NextAttemptTime = timestamppb.New(next)
	}
	return d, nil
}

type pageToken struct {
	T  time.Time `json:"t"`
	ID string    `json:"i"`
}

// ListDeliveries pages through deliveries newest first.
func (h *Handler) ListDeliveries(ctx context.Context, req *deliveryv1.ListDeliveriesRequest) (*deliveryv1.ListDeliveriesResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0 || size > maxPageSize:
		return nil, invalid("page_size", "must be 0-1000")
	case size == 0:
		size = defaultPageSize
	}
	if len(req.GetUserId()) > maxIDBytes {
		return nil, invalid("user_id", "at most 512 bytes")
	}
	if len(req.GetCampaignId()) > maxIDBytes {
		return nil, invalid("campaign_id", "at most 512 bytes")
	}
	after := pageToken{T: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}
	if t := req.GetPageToken(); t != "" {
		b, err := base64.RawURLEncoding.DecodeString(t)
		if err != nil || json.Unmarshal(b, &after) != nil || after.ID == "" {
			return nil, invalid("page_token", "not a page token from a previous response")
		}
	}
	rows, err := h.s.pool.Query(ctx, `SELECT `+deliveryCols+` FROM deliver_deliveries
		WHERE workspace_id = $1 AND ($2 = '' OR user_id = $2) AND ($3 = '' OR campaign_id = $3)
		  AND (create_time, delivery_id) < ($4, $5)
		ORDER BY create_time DESC, delivery_id DESC LIMIT $6`,
		ws, req.GetUserId(), req.GetCampaignId(), after.T, after.ID, size+1)
	if err != nil {
		return nil, h.internal(ctx, "list deliveries", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*deliveryv1.Delivery, error) { return scanDelivery(r) })
	if err != nil {
		return nil, h.internal(ctx, "list deliveries", err)
	}
	res := &deliveryv1.ListDeliveriesResponse{Deliveries: ds}
	if len(ds) > size {
		res.Deliveries = ds[:size]
		last := ds[size-1]
		b, _ := json.Marshal(pageToken{T: last.GetCreateTime().AsTime(), ID: last.GetDeliveryId()})
		res.NextPageToken = base64.RawURLEncoding.EncodeToString(b)
	}
	return res, nil
}

// GetDelivery returns one delivery with its attempts.
func (h *Handler) GetDelivery(ctx context.Context, req *deliveryv1.GetDeliveryRequest) (*deliveryv1.GetDeliveryResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if req.GetDeliveryId() == "" || len(req.GetDeliveryId()) > maxIDBytes {
		return nil, invalid("delivery_id", "must be 1-512 bytes")
	}
	d, err := scanDelivery(h.s.pool.QueryRow(ctx, `SELECT `+deliveryCols+` FROM deliver_deliveries WHERE workspace_id = $1 AND delivery_id = $2`,
		ws, req.GetDeliveryId()))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, connect.NewError(connect.CodeNotFound, errors.New("no delivery has this delivery_id"))
	}
	if err != nil {
		return nil, h.internal(ctx, "get delivery", err)
	}
	rows, err := h.s.pool.Query(ctx, `SELECT number, start_time, end_time, result, code, error FROM deliver_attempts
		WHERE delivery_id = $1 ORDER BY number`, d.GetDeliveryId())
	if err != nil {
		return nil, h.internal(ctx, "get delivery", err)
	}
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*deliveryv1.Attempt, error) {
		a := &deliveryv1.Attempt{}
		var st, et time.Time
		err := r.Scan(&a.Number, &st, &et, &a.Result, &a.Code, &a.Error)
		a.StartTime, a.EndTime = timestamppb.New(st), timestamppb.New(et)
		return a, err
	})
	if err != nil {
		return nil, h.internal(ctx, "get delivery", err)
	}
	return &deliveryv1.GetDeliveryResponse{Delivery: d, Attempts: as}, nil
}

// StreamInApp sends the user's unread messages, oldest first, then a
// caught-up marker, then new ones as they arrive, with heartbeats when
// quiet, until the client goes away.
//
// connect-go writes the response headers with the first message and has
// no way to flush them alone, so the caught-up marker is what tells a
// client with no unread messages that it is connected.
func (h *Handler) StreamInApp(ctx context.Context, req *deliveryv1.StreamInAppRequest, stream *connect.ServerStream[deliveryv1.StreamInAppResponse]) error {
	user := req.GetUserId()
	if user == "" || len(user) > maxIDBytes {
		return invalid("user_id", "must be 1-512 bytes")
	}
	ws, err := auth.WorkspaceForUser(ctx, req.GetWorkspaceId(), user)
	if err != nil {
		return err
	}
	wake, done := h.s.hub.subscribe(ws, user)
	defer done()
	// Cursor: messages are sent in (create_time, delivery_id) order, and
	// only those after the last one sent are read again.
	var lastT time.Time
	lastID := ""
	poll := time.NewTicker(h.s.o.InboxPoll)
	defer poll.Stop()
	beat := time.NewTimer(h.heartbeat)
	defer beat.Stop()
	caughtUp := false
	for {
		rows, err := h.s.pool.Query(ctx, `SELECT delivery_id, campaign_id, content, create_time FROM deliver_inbox
			WHERE workspace_id = $1 AND user_id = $2 AND read_time IS NULL AND (create_time, delivery_id) > ($3, $4)
			ORDER BY create_time, delivery_id LIMIT 500`, ws, user, lastT, lastID)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return h.internal(ctx, "read inbox", err)
		}
		msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*deliveryv1.InAppMessage, error) {
			m := &deliveryv1.InAppMessage{Content: &contentv1.Content{}}
			var raw []byte
			var t time.Time
			if err := r.Scan(&m.DeliveryId, &m.CampaignId, &raw, &t); err != nil {
				return nil, err
			}
			m.CreateTime = timestamppb.New(t)
			return m, proto.Unmarshal(raw, m.Content)
		})
		if err != nil {
			return h.internal(ctx, "read inbox", err)
		}
		for _, m := range msgs {
			if err := stream.Send(&deliveryv1.StreamInAppResponse{Kind: &deliveryv1.StreamInAppResponse_Message{Message: m}}); err != nil {
				return nil // the client went away
			}
			lastT, lastID = m.GetCreateTime().AsTime(), m.GetDeliveryId()
		}
		if len(msgs) == 500 {
			continue
		}
		if len(msgs) > 0 {
			beat.Reset(h.heartbeat)
		}
		if !caughtUp {
			caughtUp = true
			if err := stream.Send(&deliveryv1.StreamInAppResponse{Kind: &deliveryv1.StreamInAppResponse_CaughtUp{CaughtUp: &deliveryv1.CaughtUp{}}}); err != nil {
				return nil
			}
			beat.Reset(h.heartbeat)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		case <-beat.C:
			if err := stream.Send(&deliveryv1.StreamInAppResponse{Kind: &deliveryv1.StreamInAppResponse_Heartbeat{Heartbeat: &deliveryv1.Heartbeat{}}}); err != nil {
				return nil
			}
			beat.Reset(h.heartbeat)
		}
	}
}

// MarkInAppRead marks messages read.
func (h *Handler) MarkInAppRead(ctx context.Context, req *deliveryv1.MarkInAppReadRequest) (*deliveryv1.MarkInAppReadResponse, error) {
	if req.GetUserId() == "" || len(req.GetUserId()) > maxIDBytes {
		return nil, invalid("user_id", "must be 1-512 bytes")
	}
	ws, err := auth.WorkspaceForUser(ctx, req.GetWorkspaceId(), req.GetUserId())
	if err != nil {
		return nil, err
	}
	if n := len(req.GetDeliveryIds()); n == 0 || n > 1000 {
		return nil, invalid("delivery_ids", "give 1-1000 ids")
	}
	tag, err := h.s.pool.Exec(ctx, `UPDATE deliver_inbox SET read_time = now()
		WHERE workspace_id = $1 AND user_id = $2 AND delivery_id = ANY($3) AND read_time IS NULL`, ws, req.GetUserId(), req.GetDeliveryIds())
	if err != nil {
		return nil, h.internal(ctx, "mark read", err)
	}
	return &deliveryv1.MarkInAppReadResponse{Marked: int32(tag.RowsAffected())}, nil
}

// IssueInAppToken signs a token for one user's in-app messages.
func (h *Handler) IssueInAppToken(ctx context.Context, req *deliveryv1.IssueInAppTokenRequest) (*deliveryv1.IssueInAppTokenResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if req.GetUserId() == "" || len(req.GetUserId()) > maxIDBytes {
		return nil, invalid("user_id", "must be 1-512 bytes")
	}
	ttl := DefaultInAppTokenTTL
	if d := req.GetTtl(); d != nil {
		if err := d.CheckValid(); err != nil {
			return nil, invalid("ttl", "not a valid duration")
		}
		ttl = d.AsDuration()
		if ttl < time.Second || ttl > MaxInAppTokenTTL {
			return nil, invalid("ttl", "must be 1s-24h")
		}
	}
	if h.tokens == nil {
		return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New("in-app tokens are off: the deliver target runs without --deliver-tracking-key"))
	}
	token, exp := h.tokens.Issue(ws, req.GetUserId(), ttl)
	return &deliveryv1.IssueInAppTokenResponse{Token: token, ExpireTime: timestamppb.New(exp)}, nil
}

func invalid(field, problem string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+problem))
}

func (h *Handler) internal(ctx context.Context, what string, err error) error {
	h.logger.ErrorContext(ctx, what, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New(what+" failed"))
}
