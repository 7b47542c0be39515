package auth

import (
	"context"
	"errors"

	"connectrpc.com/connect"
	"github.com/google/uuid"
)

// Workspace returns the workspace a management request acts on: the one
// it names in requested (its workspace_id field), when the caller may
// access it, else the caller's own. The admin token must name one.
//
// The errors are Connect errors for a handler to return as they are:
// Unauthenticated without a principal (a handler mounted without the authn
// middleware fails closed), InvalidArgument for a malformed id or the
// admin naming none, PermissionDenied for another workspace, a
// credential that belongs to none, or a user token (see WorkspaceForUser).
func Workspace(ctx context.Context, requested string) (string, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok {
		return "", connect.NewError(connect.CodeUnauthenticated, errors.New("missing bearer token"))
	}
	if p.UserID != "" {
		return "", connect.NewError(connect.CodePermissionDenied, errors.New("a user token is not accepted here: use an API token"))
	}
	if requested == "" {
		if p.Admin {
			return "", connect.NewError(connect.CodeInvalidArgument, errors.New("workspace_id: required with the admin token"))
		}
		if p.WorkspaceID == "" {
			return "", connect.NewError(connect.CodePermissionDenied, errors.New("the credential belongs to no workspace"))
		}
		return p.WorkspaceID, nil
	}
	u, err := uuid.Parse(requested)
	if err != nil || len(requested) != 36 {
		return "", connect.NewError(connect.CodeInvalidArgument, errors.New("workspace_id: not a valid id"))
	}
	if !p.CanAccess(u.String()) {
		return "", connect.NewError(connect.CodePermissionDenied, errors.New("an API token may act on its own workspace only"))
	}
	return u.String(), nil
}
