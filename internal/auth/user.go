package auth

import (
	"context"
	"errors"
	"slices"
	"strings"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/google/uuid"
)

// UserTokenPrefix starts every user token, so that the middleware knows
// which verifier a bearer token is for without asking the store.
const UserTokenPrefix = "wu_"

// ErrExpiredToken is returned by a UserTokenVerifier for a genuine token
// past its expiry; any other error means the token is not genuine.
var ErrExpiredToken = errors.New("token expired")

// UserTokenVerifier checks a user token: a signed, short-lived credential
// for one user of one workspace, that a browser may hold. Its issuer lives
// elsewhere (the service that signs it); this package only needs to know
// whom a token speaks for.
type UserTokenVerifier interface {
	VerifyUserToken(token string) (workspaceID, userID string, err error)
}

// AuthenticateBearerOrUser returns an authn.AuthFunc that is
// AuthenticateBearer on every procedure and, on the given procedures
// only, also accepts user tokens (UserTokenPrefix) checked by v. The
// principal of a user token has UserID set; Workspace refuses it, so a
// handler reached by mistake still fails closed, and only handlers that
// call WorkspaceForUser serve it.
func (a *Authenticator) AuthenticateBearerOrUser(v UserTokenVerifier, procedures ...string) authn.AuthFunc {
	procedures = slices.Clone(procedures)
	return func(ctx context.Context, req authn.Request) (any, error) {
		token, ok := bearerToken(req.Header().Get("Authorization"))
		if !ok || !strings.HasPrefix(token, UserTokenPrefix) {
			return a.AuthenticateBearer(ctx, req)
		}
		if !slices.Contains(procedures, req.Procedure()) {
			return nil, connect.NewError(connect.CodePermissionDenied, errors.New("a user token is not accepted here: use an API token"))
		}
		ws, user, err := v.VerifyUserToken(token)
		switch {
		case errors.Is(err, ErrExpiredToken):
			return nil, authn.Errorf("user token expired: ask for a new one")
		case err != nil:
			return nil, authn.Errorf("invalid user token")
		case ws == "" || user == "":
			// A verifier bug must not yield a principal of no one.
			return nil, authn.Errorf("invalid user token")
		}
		return &Principal{WorkspaceID: ws, UserID: user}, nil
	}
}

// WorkspaceForUser is Workspace for a request about one user, userID: it
// also accepts the principal of a user token, when the token is for that
// user (PermissionDenied otherwise) and requested names its workspace or
// none. The caller checks userID's form first.
func WorkspaceForUser(ctx context.Context, requested, userID string) (string, error) {
	p, ok := PrincipalFrom(ctx)
	if !ok || p.UserID == "" {
		return Workspace(ctx, requested)
	}
	if requested != "" {
		u, err := uuid.Parse(requested)
		if err != nil || len(requested) != 36 {
			return "", connect.NewError(connect.CodeInvalidArgument, errors.New("workspace_id: not a valid id"))
		}
		if u.String() != p.WorkspaceID {
			return "", connect.NewError(connect.CodePermissionDenied, errors.New("workspace_id: the user token is for another workspace"))
		}
	}
	if userID != p.UserID {
		return "", connect.NewError(connect.CodePermissionDenied, errors.New("user_id: the user token is for another user"))
	}
	return p.WorkspaceID, nil
}
