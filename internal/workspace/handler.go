package workspace

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/whisperhq/whisper/internal/auth"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
)

// CredentialCache is the authentication cache that a revocation must
// reach at once; *auth.Authenticator is one.
type CredentialCache interface {
	// Forget drops whatever is cached for the secret whose digest is hash.
	Forget(hash []byte)
}

// Handler serves WorkspaceService. It expects every request to carry an
// *auth.Principal, as attached by authn middleware running
// auth.Authenticator.AuthenticateBearer, and refuses requests without one.
type Handler struct {
	store  *Store
	cache  CredentialCache
	logger *slog.Logger
}

var _ workspacev1connect.WorkspaceServiceHandler = (*Handler)(nil)

// NewHandler returns a Handler over store that makes revocations take
// effect at once in cache (nil when this process caches no credentials).
func NewHandler(store *Store, cache CredentialCache, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{store: store, cache: cache, logger: logger}
}

// CreateWorkspace creates a workspace; admin only.
func (h *Handler) CreateWorkspace(ctx context.Context, req *workspacev1.CreateWorkspaceRequest) (*workspacev1.CreateWorkspaceResponse, error) {
	p, err := requireAdmin(ctx, "create workspaces")
	if err != nil {
		return nil, err
	}
	w, err := h.store.CreateWorkspace(ctx, req.GetName())
	if err != nil {
		return nil, h.toConnect(ctx, "create workspace", err)
	}
	h.logger.InfoContext(ctx, "created workspace", "workspace_id", w.ID, "principal", p)
	return &workspacev1.CreateWorkspaceResponse{Workspace: workspaceToProto(w)}, nil
}

// GetWorkspace returns a workspace the caller may access.
func (h *Handler) GetWorkspace(ctx context.Context, req *workspacev1.GetWorkspaceRequest) (*workspacev1.GetWorkspaceResponse, error) {
	id, _, err := authorize(ctx, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	w, err := h.store.GetWorkspace(ctx, id)
	if err != nil {
		return nil, h.toConnect(ctx, "get workspace", err)
	}
	return &workspacev1.GetWorkspaceResponse{Workspace: workspaceToProto(w)}, nil
}

// ListWorkspaces pages through all workspaces; admin only.
func (h *Handler) ListWorkspaces(ctx context.Context, req *workspacev1.ListWorkspacesRequest) (*workspacev1.ListWorkspacesResponse, error) {
	if _, err := requireAdmin(ctx, "list workspaces"); err != nil {
		return nil, err
	}
	ws, next, err := h.store.ListWorkspaces(ctx, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, h.toConnect(ctx, "list workspaces", err)
	}
	resp := &workspacev1.ListWorkspacesResponse{
		Workspaces:    make([]*workspacev1.Workspace, 0, len(ws)),
		NextPageToken: next,
	}
	for _, w := range ws {
		resp.Workspaces = append(resp.Workspaces, workspaceToProto(w))
	}
	return resp, nil
}

// CreateWriteKey issues a write key; its secret is in the response only.
func (h *Handler) CreateWriteKey(ctx context.Context, req *workspacev1.CreateWriteKeyRequest) (*workspacev1.CreateWriteKeyResponse, error) {
	c, secret, err := h.createCredential(ctx, writeKeys, req.GetWorkspaceId(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &workspacev1.CreateWriteKeyResponse{WriteKey: credentialToProto(c), Secret: secret}, nil
}

// ListWriteKeys lists a workspace's write keys, revoked ones included.
func (h *Handler) ListWriteKeys(ctx context.Context, req *workspacev1.ListWriteKeysRequest) (*workspacev1.ListWriteKeysResponse, error) {
	cs, err := h.listCredentials(ctx, writeKeys, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	return &workspacev1.ListWriteKeysResponse{WriteKeys: cs}, nil
}

// RevokeWriteKey revokes a write key; repeating it is harmless.
func (h *Handler) RevokeWriteKey(ctx context.Context, req *workspacev1.RevokeWriteKeyRequest) (*workspacev1.RevokeWriteKeyResponse, error) {
	c, err := h.revokeCredential(ctx, writeKeys, req.GetWorkspaceId(), req.GetWriteKeyId())
	if err != nil {
		return nil, err
	}
	return &workspacev1.RevokeWriteKeyResponse{WriteKey: c}, nil
}

// CreateAPIToken issues an API token; its secret is in the response only.
func (h *Handler) CreateAPIToken(ctx context.Context, req *workspacev1.CreateAPITokenRequest) (*workspacev1.CreateAPITokenResponse, error) {
	c, secret, err := h.createCredential(ctx, apiTokens, req.GetWorkspaceId(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &workspacev1.CreateAPITokenResponse{ApiToken: credentialToProto(c), Secret: secret}, nil
}

// ListAPITokens lists a workspace's API tokens, revoked ones included.
func (h *Handler) ListAPITokens(ctx context.Context, req *workspacev1.ListAPITokensRequest) (*workspacev1.ListAPITokensResponse, error) {
	cs, err := h.listCredentials(ctx, apiTokens, req.GetWorkspaceId())
	if err != nil {
		return nil, err
	}
	return &workspacev1.ListAPITokensResponse{ApiTokens: cs}, nil
}

// RevokeAPIToken revokes an API token; repeating it is harmless. A token
// may revoke itself.
func (h *Handler) RevokeAPIToken(ctx context.Context, req *workspacev1.RevokeAPITokenRequest) (*workspacev1.RevokeAPITokenResponse, error) {
	c, err := h.revokeCredential(ctx, apiTokens, req.GetWorkspaceId(), req.GetApiTokenId())
	if err != nil {
		return nil, err
	}
	return &workspacev1.RevokeAPITokenResponse{ApiToken: c}, nil
}

func (h *Handler) createCredential(ctx context.Context, kind credentialKind, workspaceID, name string) (Credential, string, error) {
	id, p, err := authorize(ctx, workspaceID)
	if err != nil {
		return Credential{}, "", err
	}
	c, secret, err := h.store.createCredential(ctx, kind, id, name)
	if err != nil {
		return Credential{}, "", h.toConnect(ctx, "create "+kind.noun, err)
	}
	h.logger.InfoContext(ctx, "created "+kind.noun, "workspace_id", id, "credential_id", c.ID, "prefix", c.Prefix, "principal", p)
	return c, secret, nil
}

func (h *Handler) listCredentials(ctx context.Context, kind credentialKind, workspaceID string) ([]*workspacev1.Credential, error) {
	id, _, err := authorize(ctx, workspaceID)
	if err != nil {
		return nil, err
	}
	cs, err := h.store.listCredentials(ctx, kind, id)
	if err != nil {
		return nil, h.toConnect(ctx, "list "+kind.noun+"s", err)
	}
	out := make([]*workspacev1.Credential, 0, len(cs))
	for _, c := range cs {
		out = append(out, credentialToProto(c))
	}
	return out, nil
}

func (h *Handler) revokeCredential(ctx context.Context, kind credentialKind, workspaceID, credentialID string) (*workspacev1.Credential, error) {
	id, p, err := authorize(ctx, workspaceID)
	if err != nil {
		return nil, err
	}
	c, err := h.store.revokeCredential(ctx, kind, id, credentialID)
	if err != nil {
		return nil, h.toConnect(ctx, "revoke "+kind.noun, err)
	}
	// The store has committed: from here on no lookup can find the
	// secret, so dropping it from the cache cannot race a refill.
	if h.cache != nil {
		h.cache.Forget(c.hash)
	}
	h.logger.InfoContext(ctx, "revoked "+kind.noun, "workspace_id", id, "credential_id", c.ID, "prefix", c.Prefix, "principal", p)
	return credentialToProto(c), nil
}

// authorize returns the canonical form of workspaceID if the caller may
// act on it. The check comes before any database access, so a refusal says
// nothing about whether the workspace exists.
func authorize(ctx context.Context, workspaceID string) (string, *auth.Principal, error) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		// The handler was mounted without authn middleware: fail closed.
		return "", nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing bearer token"))
	}
	id, err := parseID("workspace_id", workspaceID)
	if err != nil {
		return "", nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	if !p.CanAccess(id) {
		return "", nil, connect.NewError(connect.CodePermissionDenied, errors.New("an API token may act on its own workspace only"))
	}
	return id, p, nil
}

func requireAdmin(ctx context.Context, action string) (*auth.Principal, error) {
	p, ok := auth.PrincipalFrom(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeUnauthenticated, errors.New("missing bearer token"))
	}
	if !p.Admin {
		return nil, connect.NewError(connect.CodePermissionDenied, errors.New("only the admin token may "+action))
	}
	return p, nil
}

// toConnect maps a store error to the code a client can act on. Unexpected
// errors are logged here and reach the client without their detail.
func (h *Handler) toConnect(ctx context.Context, op string, err error) error {
	var fe *FieldError
	switch {
	case errors.As(err, &fe):
		return connect.NewError(connect.CodeInvalidArgument, fe)
	case errors.Is(err, ErrNotFound):
		return connect.NewError(connect.CodeNotFound, err)
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, err)
	default:
		h.logger.ErrorContext(ctx, op+" failed", "error", err)
		return connect.NewError(connect.CodeInternal, errors.New(op+" failed"))
	}
}

func workspaceToProto(w Workspace) *workspacev1.Workspace {
	return &workspacev1.Workspace{Id: w.ID, Name: w.Name, CreateTime: timestamppb.New(w.CreateTime)}
}

func credentialToProto(c Credential) *workspacev1.Credential {
	pb := &workspacev1.Credential{
		Id:          c.ID,
		WorkspaceId: c.WorkspaceID,
		Name:        c.Name,
		Prefix:      c.Prefix,
		CreateTime:  timestamppb.New(c.CreateTime),
	}
	if !c.RevokeTime.IsZero() {
		pb.RevokeTime = timestamppb.New(c.RevokeTime)
	}
	return pb
}
