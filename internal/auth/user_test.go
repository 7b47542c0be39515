package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
)

// userTokens is a UserTokenVerifier over a fixed set of tokens.
type userTokens map[string][2]string

func (u userTokens) VerifyUserToken(token string) (string, string, error) {
	if token == "wu_expired" {
		return "", "", ErrExpiredToken
	}
	c, ok := u[token]
	if !ok {
		return "", "", errors.New("bad signature")
	}
	return c[0], c[1], nil
}

func TestAuthenticateBearerOrUser(t *testing.T) {
	const (
		stream = "/whisper.delivery.v1.DeliveryService/StreamInApp"
		list   = "/whisper.delivery.v1.DeliveryService/ListDeliveries"
	)
	store := newFakeStore()
	store.addAPIToken("wt_token", "ws1", "tok1")
	verifier := userTokens{"wu_ann": {"ws1", "ann"}, "wu_nobody": {"ws1", ""}}
	tests := []struct {
		name      string
		procedure string
		token     string
		want      *Principal
		wantCode  connect.Code
		wantMsg   string
	}{
		{name: "user token on an accepting procedure", procedure: stream, token: "wu_ann", want: &Principal{WorkspaceID: "ws1", UserID: "ann"}},
		{name: "api token still works there", procedure: stream, token: "wt_token", want: &Principal{WorkspaceID: "ws1", CredentialID: "tok1"}},
		{name: "api token elsewhere", procedure: list, token: "wt_token", want: &Principal{WorkspaceID: "ws1", CredentialID: "tok1"}},
		{name: "user token elsewhere", procedure: list, token: "wu_ann", wantCode: connect.CodePermissionDenied, wantMsg: "user token is not accepted here"},
		{name: "expired", procedure: stream, token: "wu_expired", wantCode: connect.CodeUnauthenticated, wantMsg: "user token expired"},
		{name: "tampered", procedure: stream, token: "wu_annx", wantCode: connect.CodeUnauthenticated, wantMsg: "invalid user token"},
		{name: "verifier names no user", procedure: stream, token: "wu_nobody", wantCode: connect.CodeUnauthenticated, wantMsg: "invalid user token"},
		{name: "user token never reaches the store", procedure: stream, token: "wu_unknown", wantCode: connect.CodeUnauthenticated, wantMsg: "invalid user token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := NewAuthenticator(store, "", 0, nil)
			calls := store.callCount()
			var got *Principal
			h := authn.NewMiddleware(a.AuthenticateBearerOrUser(verifier, stream)).Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got, _ = PrincipalFrom(r.Context())
			}))
			req := httptest.NewRequest(http.MethodPost, tt.procedure, strings.NewReader("{}"))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tt.token)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if strings.HasPrefix(tt.token, UserTokenPrefix) && store.callCount() != calls {
				t.Errorf("a user token was looked up in the credential store")
			}
			if tt.wantCode != 0 {
				if body := rec.Body.String(); !strings.Contains(body, `"code":"`+tt.wantCode.String()+`"`) || !strings.Contains(body, tt.wantMsg) {
					t.Errorf("body = %s; want code %v and message %q", body, tt.wantCode, tt.wantMsg)
				}
				if got != nil {
					t.Errorf("the handler ran with principal %+v", got)
				}
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("principal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWorkspaceForUser(t *testing.T) {
	const own, other = "0b0e8c8e-4f5c-4a43-9a57-4a1f0d2a7f10", "6c1d2f55-8f0c-4d3e-a3a1-0f6a3c7f9b21"
	user := &Principal{WorkspaceID: own, UserID: "ann"}
	token := &Principal{WorkspaceID: own, CredentialID: "t1"}
	tests := []struct {
		name      string
		p         *Principal
		requested string
		userID    string
		want      string
		wantCode  connect.Code
	}{
		{"user token, its user", user, "", "ann", own, 0},
		{"user token, its workspace named", user, strings.ToUpper(own), "ann", own, 0},
		{"user token, another user", user, "", "bob", "", connect.CodePermissionDenied},
		{"user token, another workspace", user, other, "ann", "", connect.CodePermissionDenied},
		{"user token, malformed workspace", user, "nope", "ann", "", connect.CodeInvalidArgument},
		{"api token, any user of its workspace", token, "", "bob", own, 0},
		{"api token, another workspace", token, other, "bob", "", connect.CodePermissionDenied},
		{"no principal", nil, "", "ann", "", connect.CodeUnauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			if tt.p != nil {
				ctx = NewContext(ctx, tt.p)
			}
			got, err := WorkspaceForUser(ctx, tt.requested, tt.userID)
			if tt.wantCode != 0 {
				if connect.CodeOf(err) != tt.wantCode {
					t.Errorf("WorkspaceForUser(%q, %q) = %q, %v; want code %v", tt.requested, tt.userID, got, err, tt.wantCode)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("WorkspaceForUser(%q, %q) = %q, %v; want %q", tt.requested, tt.userID, got, err, tt.want)
			}
		})
	}
}

func TestWorkspaceRefusesUserTokens(t *testing.T) {
	ctx := NewContext(context.Background(), &Principal{WorkspaceID: "0b0e8c8e-4f5c-4a43-9a57-4a1f0d2a7f10", UserID: "ann"})
	for _, requested := range []string{"", "0b0e8c8e-4f5c-4a43-9a57-4a1f0d2a7f10"} {
		if ws, err := Workspace(ctx, requested); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("Workspace(%q) with a user token = %q, %v; want PermissionDenied", requested, ws, err)
		}
	}
	if (&Principal{WorkspaceID: "ws1", UserID: "ann"}).CanAccess("ws1") {
		t.Error("a user token's principal can access its whole workspace")
	}
}
