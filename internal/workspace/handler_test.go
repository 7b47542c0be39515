package workspace_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/whisperhq/whisper/internal/auth"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/workspace"
)

// TestHandlerAuthorizesFirst needs no database: every refusal happens
// before the store is touched (the handler has none here).
func TestHandlerAuthorizesFirst(t *testing.T) {
	h := workspace.NewHandler(nil, nil, nil)
	const own, other = "0b7c6a1e-2f3d-4e5a-8b9c-0d1e2f3a4b5c", "1c8d7b2f-3a4e-4f6b-9c0d-1e2f3a4b5c6d"
	token := auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: own, CredentialID: "t"})
	tests := []struct {
		name string
		ctx  context.Context
		call func(context.Context) error
		code connect.Code
	}{
		{"no principal: mounted without authn", context.Background(), func(ctx context.Context) error {
			_, err := h.GetWorkspace(ctx, &workspacev1.GetWorkspaceRequest{WorkspaceId: own})
			return err
		}, connect.CodeUnauthenticated},
		{"no principal, admin call", context.Background(), func(ctx context.Context) error {
			_, err := h.ListWorkspaces(ctx, &workspacev1.ListWorkspacesRequest{})
			return err
		}, connect.CodeUnauthenticated},
		{"other workspace", token, func(ctx context.Context) error {
			_, err := h.ListWriteKeys(ctx, &workspacev1.ListWriteKeysRequest{WorkspaceId: other})
			return err
		}, connect.CodePermissionDenied},
		{"token creates workspace", token, func(ctx context.Context) error {
			_, err := h.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: "x"})
			return err
		}, connect.CodePermissionDenied},
		{"bad id before anything", token, func(ctx context.Context) error {
			_, err := h.RevokeAPIToken(ctx, &workspacev1.RevokeAPITokenRequest{WorkspaceId: "x"})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		if got := connect.CodeOf(tt.call(tt.ctx)); got != tt.code {
			t.Errorf("%s: code %v; want %v", tt.name, got, tt.code)
		}
	}
}
