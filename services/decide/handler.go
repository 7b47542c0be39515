package decide

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/http"
	"strings"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/auth"
	campaignv1 "github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/campaign/v1/campaignv1connect"
	decisionv1 "github.com/whisperhq/whisper/internal/gen/whisper/decision/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/decision/v1/decisionv1connect"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
	maxUserIDBytes  = 512
	maxRequestID    = 128
)

// Handler serves CampaignService and DecisionService. It expects every
// request to carry an *auth.Principal, as attached by authn middleware
// running auth.Authenticator.AuthenticateBearer, and refuses requests
// without one.
type Handler struct {
	svc    *Service
	logger *slog.Logger
}

var (
	_ campaignv1connect.CampaignServiceHandler = (*Handler)(nil)
	_ decisionv1connect.DecisionServiceHandler = (*Handler)(nil)
)

// NewHandler returns a Handler on svc.
func NewHandler(svc *Service, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{svc: svc, logger: logger}
}

// CampaignRoutes returns the path and handler of CampaignService to mount
// (behind bearer authn).
func (h *Handler) CampaignRoutes(opts ...connect.HandlerOption) (string, http.Handler) {
	return campaignv1connect.NewCampaignServiceHandler(h, opts...)
}

// DecisionRoutes returns the path and handler of DecisionService to mount
// (behind bearer authn).
func (h *Handler) DecisionRoutes(opts ...connect.HandlerOption) (string, http.Handler) {
	return decisionv1connect.NewDecisionServiceHandler(h, opts...)
}

// CreateCampaign stores a new campaign.
func (h *Handler) CreateCampaign(ctx context.Context, req *campaignv1.CreateCampaignRequest) (*campaignv1.CreateCampaignResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if err := h.svc.exprs.validate(req.GetCampaign()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	status := statusDraft
	if req.GetActivate() {
		status = statusActive
	}
	c, err := h.svc.store.createCampaign(ctx, ws, req.GetCampaign(), status, h.svc.now())
	if err != nil {
		return nil, h.internal(ctx, "create campaign", err)
	}
	return &campaignv1.CreateCampaignResponse{Campaign: c}, nil
}

// UpdateCampaign stores a new version of a campaign.
func (h *Handler) UpdateCampaign(ctx context.Context, req *campaignv1.UpdateCampaignRequest) (*campaignv1.UpdateCampaignResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if err := h.svc.exprs.validate(req.GetCampaign()); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	id, err := parseID("campaign.id", req.GetCampaign().GetId())
	if err != nil {
		return nil, err
	}
	req.GetCampaign().Id = id
	c, err := h.svc.store.updateCampaign(ctx, ws, req.GetCampaign(), h.svc.now())
	if err != nil {
		return nil, h.storeError(ctx, "update campaign", err)
	}
	h.svc.campaignCache.forget(ws, id)
	return &campaignv1.UpdateCampaignResponse{Campaign: c}, nil
}

// GetCampaign returns a campaign.
func (h *Handler) GetCampaign(ctx context.Context, req *campaignv1.GetCampaignRequest) (*campaignv1.GetCampaignResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	id, err := parseID("campaign_id", req.GetCampaignId())
	if err != nil {
		return nil, err
	}
	if req.GetVersion() < 0 {
		return nil, invalid("version", "must not be negative")
	}
	c, err := h.svc.store.getCampaign(ctx, h.svc.store.pool, ws, id, req.GetVersion())
	if err != nil {
		return nil, h.storeError(ctx, "get campaign", err)
	}
	return &campaignv1.GetCampaignResponse{Campaign: c}, nil
}

// ListCampaigns pages through a workspace's campaigns in creation order.
func (h *Handler) ListCampaigns(ctx context.Context, req *campaignv1.ListCampaignsRequest) (*campaignv1.ListCampaignsResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	after, err := parsePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	page, err := h.svc.store.listCampaigns(ctx, ws, after, size+1)
	if err != nil {
		return nil, h.internal(ctx, "list campaigns", err)
	}
	resp := &campaignv1.ListCampaignsResponse{Campaigns: page.campaigns}
	if len(page.campaigns) > size {
		resp.Campaigns = page.campaigns[:size]
		resp.NextPageToken = pageToken(page.seqs[size-1])
	}
	return resp, nil
}

// PauseCampaign stops a campaign from deciding.
func (h *Handler) PauseCampaign(ctx context.Context, req *campaignv1.PauseCampaignRequest) (*campaignv1.PauseCampaignResponse, error) {
	c, err := h.setStatus(ctx, req.GetWorkspaceId(), req.GetCampaignId(), statusPaused)
	if err != nil {
		return nil, err
	}
	return &campaignv1.PauseCampaignResponse{Campaign: c}, nil
}

// ActivateCampaign makes a campaign decide.
func (h *Handler) ActivateCampaign(ctx context.Context, req *campaignv1.ActivateCampaignRequest) (*campaignv1.ActivateCampaignResponse, error) {
	c, err := h.setStatus(ctx, req.GetWorkspaceId(), req.GetCampaignId(), statusActive)
	if err != nil {
		return nil, err
	}
	return &campaignv1.ActivateCampaignResponse{Campaign: c}, nil
}

func (h *Handler) setStatus(ctx context.Context, requested, campaignID, status string) (*campaignv1.Campaign, error) {
	ws, err := auth.Workspace(ctx, requested)
	if err != nil {
		return nil, err
	}
	id, err := parseID("campaign_id", campaignID)
	if err != nil {
		return nil, err
	}
	c, err := h.svc.store.setStatus(ctx, ws, id, status, h.svc.now())
	if err != nil {
		return nil, h.storeError(ctx, "set campaign status", err)
	}
	h.svc.campaignCache.forget(ws, id)
	return c, nil
}

// Decide runs a campaign for a user now.
func (h *Handler) Decide(ctx context.Context, req *decisionv1.DecideRequest) (*decisionv1.DecideResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	id, err := parseID("campaign_id", req.GetCampaignId())
	if err != nil {
		return nil, err
	}
	if u := req.GetUserId(); u == "" || len(u) > maxUserIDBytes || strings.IndexByte(u, 0) >= 0 {
		return nil, invalid("user_id", "must be 1-512 bytes, without NUL")
	}
	requestID := req.GetRequestId()
	switch {
	case len(requestID) > maxRequestID || strings.IndexByte(requestID, 0) >= 0:
		return nil, invalid("request_id", "must be at most 128 bytes, without NUL")
	case requestID == "":
		requestID = uuid.NewString()
	}
	d, err := h.svc.decideNow(ctx, ws, id, req.GetUserId(), requestID, req.GetProperties())
	switch {
	case errors.Is(err, errNotActive):
		return nil, connect.NewError(connect.CodeFailedPrecondition, err)
	case err != nil:
		return nil, h.storeError(ctx, "decide", err)
	}
	return &decisionv1.DecideResponse{Decision: d}, nil
}

// ListDecisions pages through decisions, newest first.
func (h *Handler) ListDecisions(ctx context.Context, req *decisionv1.ListDecisionsRequest) (*decisionv1.ListDecisionsResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	campaign := ""
	if req.GetCampaignId() != "" {
		if campaign, err = parseID("campaign_id", req.GetCampaignId()); err != nil {
			return nil, err
		}
	}
	if len(req.GetUserId()) > maxUserIDBytes || strings.IndexByte(req.GetUserId(), 0) >= 0 {
		return nil, invalid("user_id", "must be at most 512 bytes, without NUL")
	}
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	before, err := parsePageToken(req.GetPageToken())
	if err != nil {
		return nil, err
	}
	page, err := h.svc.store.listDecisions(ctx, ws, req.GetUserId(), campaign, before, size)
	if err != nil {
		return nil, h.internal(ctx, "list decisions", err)
	}
	resp := &decisionv1.ListDecisionsResponse{Decisions: page.decisions}
	if len(page.decisions) == size {
		more, err := h.svc.store.listDecisions(ctx, ws, req.GetUserId(), campaign, page.lastSeq, 1)
		if err != nil {
			return nil, h.internal(ctx, "list decisions", err)
		}
		if len(more.decisions) > 0 {
			resp.NextPageToken = pageToken(page.lastSeq)
		}
	}
	return resp, nil
}

// ExplainDecision returns a decision with the campaign version it used.
func (h *Handler) ExplainDecision(ctx context.Context, req *decisionv1.ExplainDecisionRequest) (*decisionv1.ExplainDecisionResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	id, err := parseID("decision_id", req.GetDecisionId())
	if err != nil {
		return nil, err
	}
	d, err := h.svc.store.decision(ctx, h.svc.store.pool, ws, id)
	if err != nil {
		return nil, h.storeError(ctx, "explain decision", err)
	}
	c, err := h.svc.store.getCampaign(ctx, h.svc.store.pool, ws, d.GetCampaignId(), d.GetCampaignVersion())
	if err != nil {
		return nil, h.storeError(ctx, "explain decision", err)
	}
	return &decisionv1.ExplainDecisionResponse{Decision: d, Campaign: c}, nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n < 0 || n > maxPageSize:
		return 0, invalid("page_size", "must be 0-1000")
	case n == 0:
		return defaultPageSize, nil
	}
	return int(n), nil
}

const pageTokenVersion = 1

func pageToken(seq int64) string {
	b := binary.BigEndian.AppendUint64([]byte{pageTokenVersion}, uint64(seq))
	return base64.RawURLEncoding.EncodeToString(b)
}

func parsePageToken(t string) (int64, error) {
	if t == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(t)
	if err != nil || len(b) != 9 || b[0] != pageTokenVersion {
		return 0, invalid("page_token", "not a page token from a previous response")
	}
	return int64(binary.BigEndian.Uint64(b[1:])), nil
}

func parseID(field, id string) (string, error) {
	u, err := uuid.Parse(id)
	if err != nil || len(id) != 36 {
		return "", invalid(field, "not a valid id")
	}
	return u.String(), nil
}

func invalid(field, problem string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+problem))
}

func (h *Handler) storeError(ctx context.Context, what string, err error) error {
	if errors.Is(err, ErrNotFound) {
		return connect.NewError(connect.CodeNotFound, errors.New(what+": not found in the workspace"))
	}
	return h.internal(ctx, what, err)
}

func (h *Handler) internal(ctx context.Context, what string, err error) error {
	h.logger.ErrorContext(ctx, what, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New(what+" failed"))
}
