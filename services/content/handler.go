package content

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/whisperhq/whisper/internal/auth"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
)

const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// Handler serves ContentService. It expects every request to carry an
// *auth.Principal, as attached by authn middleware running
// auth.Authenticator.AuthenticateBearer, and refuses requests without one.
type Handler struct {
	renderer *Renderer
	logger   *slog.Logger
}

var _ contentv1connect.ContentServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler over r (which must have a Store).
func NewHandler(r *Renderer, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{renderer: r, logger: logger}
}

// Routes returns the path and handler to mount (behind bearer authn).
func (h *Handler) Routes(opts ...connect.HandlerOption) (string, http.Handler) {
	return contentv1connect.NewContentServiceHandler(h, opts...)
}

// CreateTemplate checks and stores version 1 of a template.
func (h *Handler) CreateTemplate(ctx context.Context, req *contentv1.CreateTemplateRequest) (*contentv1.CreateTemplateResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if req.GetTemplate() == nil {
		return nil, invalid("template", "required")
	}
	if err := h.renderer.Check(req.GetTemplate()); err != nil {
		return nil, definitionError(err)
	}
	t, err := h.renderer.store.create(ctx, ws, req.GetTemplate())
	if err != nil {
		return nil, h.toConnect(ctx, "create template", err)
	}
	return &contentv1.CreateTemplateResponse{Template: t}, nil
}

// UpdateTemplate checks and stores the next version of a template.
func (h *Handler) UpdateTemplate(ctx context.Context, req *contentv1.UpdateTemplateRequest) (*contentv1.UpdateTemplateResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if req.GetTemplate() == nil {
		return nil, invalid("template", "required")
	}
	if _, err := uuid.Parse(req.GetTemplate().GetTemplateId()); err != nil {
		return nil, invalid("template.template_id", "not a template id")
	}
	if err := h.renderer.Check(req.GetTemplate()); err != nil {
		return nil, definitionError(err)
	}
	t, err := h.renderer.store.update(ctx, ws, req.GetTemplate())
	if err != nil {
		return nil, h.toConnect(ctx, "update template", err)
	}
	return &contentv1.UpdateTemplateResponse{Template: t}, nil
}

// GetTemplate returns one version of a template, the latest by default.
func (h *Handler) GetTemplate(ctx context.Context, req *contentv1.GetTemplateRequest) (*contentv1.GetTemplateResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(req.GetTemplateId()); err != nil {
		return nil, invalid("template_id", "not a template id")
	}
	if req.GetVersion() < 0 {
		return nil, invalid("version", "must not be negative")
	}
	latest, err := h.renderer.store.latestVersion(ctx, ws, req.GetTemplateId())
	if err != nil {
		return nil, h.toConnect(ctx, "get template", err)
	}
	v := req.GetVersion()
	if v == 0 {
		v = latest
	}
	t, err := h.renderer.store.get(ctx, ws, req.GetTemplateId(), v)
	if err != nil {
		return nil, h.toConnect(ctx, "get template", err)
	}
	return &contentv1.GetTemplateResponse{Template: t, LatestVersion: latest}, nil
}

// ListTemplates pages through a workspace's templates by id.
func (h *Handler) ListTemplates(ctx context.Context, req *contentv1.ListTemplatesRequest) (*contentv1.ListTemplatesResponse, error) {
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
	after := uuid.Nil.String()
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) != 16 {
			return nil, invalid("page_token", "not a page token from a previous response")
		}
		after = uuid.UUID(b).String()
	}
	ts, err := h.renderer.store.list(ctx, ws, after, size+1)
	if err != nil {
		return nil, h.toConnect(ctx, "list templates", err)
	}
	resp := &contentv1.ListTemplatesResponse{}
	if len(ts) > size {
		ts = ts[:size]
		id := uuid.MustParse(ts[size-1].GetTemplateId())
		resp.NextPageToken = base64.RawURLEncoding.EncodeToString(id[:])
	}
	resp.Templates = ts
	return resp, nil
}

// Render renders a stored template for a user of the caller's workspace.
func (h *Handler) Render(ctx context.Context, req *contentv1.RenderRequest) (*contentv1.RenderResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	if _, err := uuid.Parse(req.GetTemplateId()); err != nil {
		return nil, invalid("template_id", "not a template id")
	}
	// The request is this call's own: it carries the resolved workspace on.
	req.WorkspaceId = ws
	msg, err := h.renderer.Render(ctx, req)
	if err != nil {
		return nil, h.toConnect(ctx, "render", err)
	}
	return &contentv1.RenderResponse{Message: msg}, nil
}

// Preview renders an unsaved template, with drafts when asked.
func (h *Handler) Preview(ctx context.Context, req *contentv1.PreviewRequest) (*contentv1.PreviewResponse, error) {
	ws, err := auth.Workspace(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	req.WorkspaceId = ws
	resp, err := h.renderer.Preview(ctx, req)
	if err != nil {
		return nil, h.toConnect(ctx, "preview", err)
	}
	return resp, nil
}

// definitionError is the InvalidArgument of a template being written: a
// Liquid error names the part as a request field.
func definitionError(err error) error {
	var te *TemplateError
	if errors.As(err, &te) {
		return connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s: %w", te.Field(), err))
	}
	return connect.NewError(connect.CodeInvalidArgument, err)
}

// toConnect maps the package's errors to connect codes: the one place
// where that happens.
func (h *Handler) toConnect(ctx context.Context, what string, err error) error {
	var te *TemplateError
	var fe *FieldError
	switch {
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, fe)
	case errors.As(err, &te):
		return connect.NewError(connect.CodeInvalidArgument, te)
	case errors.Is(err, ErrBudget):
		return connect.NewError(connect.CodeResourceExhausted, err)
	case errors.Is(err, ErrChannelChanged):
		return connect.NewError(connect.CodeInvalidArgument, errors.New("template.channel: "+err.Error()))
	case errors.Is(err, ErrNotFound):
		return connect.NewError(connect.CodeNotFound, ErrNotFound)
	case errors.Is(err, ErrProfileNotFound):
		return connect.NewError(connect.CodeNotFound, errors.New("user_id: "+ErrProfileNotFound.Error()))
	case errors.Is(err, ErrDraftsDisabled):
		return connect.NewError(connect.CodeFailedPrecondition, ErrDraftsDisabled)
	case errors.Is(err, ErrProvider):
		return connect.NewError(connect.CodeUnavailable, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	}
	h.logger.ErrorContext(ctx, what, "err", err)
	return connect.NewError(connect.CodeInternal, errors.New(what+" failed"))
}

func invalid(field, problem string) error {
	return connect.NewError(connect.CodeInvalidArgument, errors.New(field+": "+problem))
}
