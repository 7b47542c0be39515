package auth_test

import (
	"context"
	"testing"

	"connectrpc.com/connect"

	"github.com/whisperhq/whisper/internal/auth"
)

func TestWorkspace(t *testing.T) {
	const own, other = "0b0e8c8e-4f5c-4a43-9a57-4a1f0d2a7f10", "6c1d2f55-8f0c-4d3e-a3a1-0f6a3c7f9b21"
	token := &auth.Principal{WorkspaceID: own, CredentialID: "t1"}
	admin := &auth.Principal{Admin: true}
	for _, tc := range []struct {
		name      string
		principal *auth.Principal
		requested string
		want      string
		code      connect.Code
	}{
		{"token, own by default", token, "", own, 0},
		{"token, own named", token, own, own, 0},
		{"token, upper-case id is the same workspace", token, "0B0E8C8E-4F5C-4A43-9A57-4A1F0D2A7F10", own, 0},
		{"token, another workspace", token, other, "", connect.CodePermissionDenied},
		{"token, malformed id", token, "not-a-uuid", "", connect.CodeInvalidArgument},
		{"token, braced id", token, "{" + own + "}", "", connect.CodeInvalidArgument},
		{"admin names one", admin, other, other, 0},
		{"admin names none", admin, "", "", connect.CodeInvalidArgument},
		{"credential of no workspace", &auth.Principal{CredentialID: "x"}, "", "", connect.CodePermissionDenied},
		{"no principal", nil, own, "", connect.CodeUnauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			if tc.principal != nil {
				ctx = auth.NewContext(ctx, tc.principal)
			}
			got, err := auth.Workspace(ctx, tc.requested)
			if tc.code != 0 {
				if connect.CodeOf(err) != tc.code {
					t.Fatalf("Workspace(%q) = %q, %v; want code %v", tc.requested, got, err, tc.code)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Workspace(%q) = %q, %v; want %q", tc.requested, got, err, tc.want)
			}
		})
	}
}
