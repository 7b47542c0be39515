package auth

import (
	"context"
	"log/slog"

	"connectrpc.com/authn"
)

// Principal is who a management request acts for.
type Principal struct {
	// WorkspaceID is the workspace of an API token; empty for the admin.
	WorkspaceID string
	// CredentialID is the API token's id; empty for the admin.
	CredentialID string
	// Admin is set for the operator's admin token, which may act on every
	// workspace.
	Admin bool
	// UserID is set for a user token (AuthenticateBearerOrUser): the
	// principal acts for this one user of WorkspaceID, and only through
	// WorkspaceForUser.
	UserID string
}

// PrincipalFrom returns the principal that authn middleware running
// AuthenticateBearer attached to ctx.
func PrincipalFrom(ctx context.Context) (*Principal, bool) {
	p, ok := authn.GetInfo(ctx).(*Principal)
	return p, ok && p != nil
}

// NewContext returns ctx carrying p, as the authn middleware would; for
// tests and in-process callers.
func NewContext(ctx context.Context, p *Principal) context.Context {
	return authn.SetInfo(ctx, p)
}

// CanAccess reports whether p may act on workspaceID: the admin on any, an
// API token on its own only.
func (p *Principal) CanAccess(workspaceID string) bool {
	if p == nil {
		return false
	}
	if p.Admin {
		return true
	}
	return p.UserID == "" && p.WorkspaceID != "" && p.WorkspaceID == workspaceID
}

// LogValue keeps log lines about a principal short and free of secrets.
func (p *Principal) LogValue() slog.Value {
	switch {
	case p == nil:
		return slog.StringValue("none")
	case p.Admin:
		return slog.StringValue("admin")
	case p.UserID != "":
		// The user id is the customer's; it is no secret, and the log
		// needs it to tell whose stream failed.
		return slog.GroupValue(
			slog.String("workspace_id", p.WorkspaceID),
			slog.String("user_id", p.UserID),
		)
	default:
		return slog.GroupValue(
			slog.String("workspace_id", p.WorkspaceID),
			slog.String("api_token_id", p.CredentialID),
		)
	}
}
