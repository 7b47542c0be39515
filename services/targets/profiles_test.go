package targets_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/profile/v1/profilev1connect"
	workspacev1 "github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/workspace/v1/workspacev1connect"
	"github.com/whisperhq/whisper/internal/rpctest"
)

// TestProfilesFromSegmentEvents sends identify, track and alias calls over
// the Segment API and reads the profile they build over ProfileService,
// as a client of `whisper serve --target=all` would.
func TestProfilesFromSegmentEvents(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	admin := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
	var ids, tokens [2]string
	for i, name := range []string{"acme", "other"} {
		ws, err := admin.CreateWorkspace(ctx, &workspacev1.CreateWorkspaceRequest{Name: name})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = ws.GetWorkspace().GetId()
		tok, err := admin.CreateAPIToken(ctx, &workspacev1.CreateAPITokenRequest{WorkspaceId: ids[i], Name: "ops"})
		if err != nil {
			t.Fatal(err)
		}
		tokens[i] = tok.GetSecret()
	}
	key, err := admin.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ids[0], Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	code, res := post(t, p.url+"/v1/batch", key.GetSecret(), `{"batch":[
		{"type":"track","anonymousId":"anon-1","event":"Viewed","timestamp":"2026-11-01T10:00:00Z","messageId":"p1"},
		{"type":"identify","anonymousId":"anon-1","userId":"u1","traits":{"plan":"pro","name":"Ann"},"timestamp":"2026-11-01T10:05:00Z","messageId":"p2"},
		{"type":"identify","userId":"u1","traits":{"plan":"free"},"timestamp":"2026-11-01T09:00:00Z","messageId":"p3"},
		{"type":"track","userId":"u1","event":"Bought","timestamp":"2026-11-01T10:10:00Z","messageId":"p4"},
		{"type":"track","userId":"legacy-7","event":"Viewed","timestamp":"2026-10-01T08:00:00Z","messageId":"p5"},
		{"type":"alias","userId":"u1","previousId":"legacy-7","timestamp":"2026-11-01T10:20:00Z","messageId":"p6"}
	]}`)
	if code != http.StatusOK {
		t.Fatalf("POST /v1/batch = %d %s", code, res)
	}

	at := func(s string) *timestamppb.Timestamp {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return timestamppb.New(tm)
	}
	traits, _ := structpb.NewStruct(map[string]any{"plan": "pro", "name": "Ann"})
	want := &profilev1.Profile{
		WorkspaceId:   ids[0],
		UserId:        "u1",
		AnonymousIds:  []string{"anon-1", "legacy-7"},
		Traits:        traits,
		FirstSeenTime: at("2026-10-01T08:00:00Z"),
		LastSeenTime:  at("2026-11-01T10:20:00Z"),
		EventCounts:   map[string]int64{"Viewed": 2, "Bought": 1},
		LastEventTimes: map[string]*timestamppb.Timestamp{
			"Viewed": at("2026-11-01T10:00:00Z"), "Bought": at("2026-11-01T10:10:00Z"),
		},
	}
	client := profilev1connect.NewProfileServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	byUser := &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: "u1"}}
	opts := []cmp.Option{protocmp.Transform(), protocmp.IgnoreFields(&profilev1.Profile{}, "profile_id", "update_time")}
	var diff string
	for deadline := time.Now().Add(30 * time.Second); ; {
		got, err := client.GetProfile(ctx, byUser)
		if err == nil {
			if diff = cmp.Diff(want, got.GetProfile(), opts...); diff == "" {
				break
			}
		} else {
			diff = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GetProfile(u1) never showed the events; last (-want +got):\n%s", diff)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Every id of the user finds the same profile.
	for _, req := range []*profilev1.GetProfileRequest{
		{Id: &profilev1.GetProfileRequest_AnonymousId{AnonymousId: "anon-1"}},
		{Id: &profilev1.GetProfileRequest_UserId{UserId: "legacy-7"}},
	} {
		got, err := client.GetProfile(ctx, req)
		if err != nil {
			t.Fatalf("GetProfile(%v): %v", req, err)
		}
		if diff := cmp.Diff(want, got.GetProfile(), opts...); diff != "" {
			t.Errorf("GetProfile(%v) (-want +got):\n%s", req, diff)
		}
	}
	list, err := client.ListProfiles(ctx, &profilev1.ListProfilesRequest{})
	if err != nil || len(list.GetProfiles()) != 1 {
		t.Errorf("ListProfiles = %v, %v; want the one merged profile", list, err)
	}

	// Another workspace's token reaches none of it.
	other := profilev1connect.NewProfileServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[1]))
	if got, err := other.GetProfile(ctx, byUser); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("workspace B GetProfile(u1) = %v, %v; want NotFound", got, err)
	}
	if got, err := other.GetProfile(ctx, &profilev1.GetProfileRequest{WorkspaceId: ids[0], Id: byUser.Id}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("workspace B GetProfile(workspace A, u1) = %v, %v; want PermissionDenied", got, err)
	}
	if got, err := other.ListProfiles(ctx, &profilev1.ListProfilesRequest{}); err != nil || len(got.GetProfiles()) != 0 {
		t.Errorf("workspace B ListProfiles = %v, %v; want none", got, err)
	}
	anonymous := profilev1connect.NewProfileServiceClient(http.DefaultClient, p.url)
	if _, err := anonymous.GetProfile(ctx, byUser); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("GetProfile without a token = %v, want Unauthenticated", err)
	}
}
