package targets_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
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
	"github.com/whisperhq/whisper/internal/redistest"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/profiles"
)

// TestProfilesFromSegmentEvents sends identify, track and alias calls over
// the Segment API and reads the profile they build over ProfileService,
// as a client of `whisper serve --target=all` would.
func TestProfilesFromSegmentEvents(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	ids, tokens, key := twoWorkspaces(t, p)
	code, res := post(t, p.url+"/v1/batch", key, `{"batch":[
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
	// The lifecycle fields depend on the wall clock (the events are dated);
	// the profiles package tests them on a controlled one. Sessions depend
	// on the order in which the three keys' partitions are applied (a late
	// event starts none, a merge adds counts); the profiles package tests
	// them over every order.
	opts := []cmp.Option{protocmp.Transform(), protocmp.IgnoreFields(&profilev1.Profile{}, "profile_id", "update_time",
		"stage", "stage_time", "engagement_score", "churn_risk", "score_inputs", "rolling_counts",
		"session_count", "session_start_time")}
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
	if got, err := client.GetProfile(ctx, byUser); err != nil || got.GetProfile().GetStage() == "" || got.GetProfile().GetScoreInputs() == nil {
		t.Errorf("GetProfile(u1) = %v, %v; want a stage and its score inputs", got, err)
	}
	// The rolling activity is mirrored to the Redis of --redis-url (its
	// buckets depend on the wall clock; that it was written does not).
	rdb := redistest.New(t)
	waitFor(t, "the redis mirror", func() (bool, string) {
		got, err := client.GetProfile(ctx, byUser)
		if err != nil {
			return false, err.Error()
		}
		key := profiles.RollingKey(ids[0], got.GetProfile().GetProfileId())
		v, err := rdb.HGet(ctx, key, profiles.RollingVersionField).Result()
		return err == nil && v != "", fmt.Sprintf("%s version %q, %v", key, v, err)
	})
	rules, err := client.GetLifecycleRules(ctx, &profilev1.GetLifecycleRulesRequest{})
	if err != nil || !rules.GetDefaults() || rules.GetRules().GetActivationEvent() != "Signed Up" {
		t.Errorf("GetLifecycleRules = %v, %v; want the defaults", rules, err)
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

// TestListProfilesFilter lists profiles with CEL filters over traits,
// counts and times, pages through matches, and refuses bad filters.
func TestListProfilesFilter(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	ids, tokens, key := twoWorkspaces(t, p)

	// u0..u9: even users are on "pro", odd on "free"; ui bought i%3 times.
	var events []string
	for i := range 10 {
		plan := "free"
		if i%2 == 0 {
			plan = "pro"
		}
		events = append(events, fmt.Sprintf(`{"type":"identify","userId":"u%d","traits":{"plan":%q,"age":%d},"timestamp":"2026-11-01T10:00:00Z","messageId":"i%d"}`, i, plan, i, i))
		for j := range i % 3 {
			events = append(events, fmt.Sprintf(`{"type":"track","userId":"u%d","event":"Bought","timestamp":"2026-11-0%dT12:00:00Z","messageId":"t%d-%d"}`, i, 2+j, i, j))
		}
	}
	if code, res := post(t, p.url+"/v1/batch", key, `{"batch":[`+strings.Join(events, ",")+`]}`); code != http.StatusOK {
		t.Fatalf("POST /v1/batch = %d %s", code, res)
	}
	client := profilev1connect.NewProfileServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	waitFor(t, "all ten profiles", func() (bool, string) {
		got, err := client.ListProfiles(ctx, &profilev1.ListProfilesRequest{Filter: `profile.user_id.startsWith("u")`})
		if err != nil {
			return false, err.Error()
		}
		bought := int64(0)
		for _, p := range got.GetProfiles() {
			bought += p.GetEventCounts()["Bought"]
		}
		return len(got.GetProfiles()) == 10 && bought == 9, fmt.Sprintf("%d profiles, %d Bought", len(got.GetProfiles()), bought)
	})

	users := func(ps []*profilev1.Profile) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.GetUserId())
		}
		slices.Sort(out)
		return out
	}
	for _, tt := range []struct {
		filter string
		want   []string
	}{
		{`profile.traits.plan == "pro"`, []string{"u0", "u2", "u4", "u6", "u8"}},
		{`profile.traits.plan == "pro" && profile.event_counts["Bought"] >= 2`, []string{"u2", "u8"}},
		{`"Bought" in profile.event_counts && profile.event_counts["Bought"] == 1`, []string{"u1", "u4", "u7"}},
		{`profile.traits.age > 6.0`, []string{"u7", "u8", "u9"}},
		{`profile.last_event_times["Bought"] > timestamp("2026-11-03T00:00:00Z")`, []string{"u2", "u5", "u8"}},
		{`profile.first_seen_time == timestamp("2026-11-01T10:00:00Z") && profile.user_id == "u3"`, []string{"u3"}},
		{`size(profile.anonymous_ids) == 0 && profile.user_id in ["u1", "u9"]`, []string{"u1", "u9"}},
		// A missing trait is an evaluation error: no match, no failure.
		{`profile.traits.company == "acme"`, nil},
		{`has(profile.traits.company) || profile.traits.plan == "enterprise"`, nil},
	} {
		got, err := client.ListProfiles(ctx, &profilev1.ListProfilesRequest{Filter: tt.filter})
		if err != nil {
			t.Errorf("ListProfiles(%s): %v", tt.filter, err)
			continue
		}
		if diff := cmp.Diff(tt.want, users(got.GetProfiles())); diff != "" || got.GetNextPageToken() != "" {
			t.Errorf("ListProfiles(%s) users (-want +got):\n%s; next page %q, want none", tt.filter, diff, got.GetNextPageToken())
		}
	}

	for _, tt := range []struct {
		filter, wantInMessage string
	}{
		{`profile.traits.plan ==`, "<input>:1:"},
		{`profile.segment == "vip"`, "undefined field 'segment'"},
		{`profile.user_id`, "must be of type bool"},
		{`profile.event_counts["Bought"] + 1`, "must be of type bool"},
	} {
		_, err := client.ListProfiles(ctx, &profilev1.ListProfilesRequest{Filter: tt.filter})
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), tt.wantInMessage) {
			t.Errorf("ListProfiles(%s) = %v; want InvalidArgument containing %q", tt.filter, err, tt.wantInMessage)
		}
	}

	// Pages of two pro users each, resumed by the page token.
	var all []*profilev1.Profile
	pages := 0
	for req := (&profilev1.ListProfilesRequest{Filter: `profile.traits.plan == "pro"`, PageSize: 2}); ; pages++ {
		got, err := client.ListProfiles(ctx, req)
		if err != nil {
			t.Fatalf("ListProfiles page %d: %v", pages, err)
		}
		if len(got.GetProfiles()) > 2 {
			t.Fatalf("page %d holds %d profiles, want at most 2", pages, len(got.GetProfiles()))
		}
		all = append(all, got.GetProfiles()...)
		if got.GetNextPageToken() == "" {
			break
		}
		req.PageToken = got.GetNextPageToken()
	}
	if diff := cmp.Diff([]string{"u0", "u2", "u4", "u6", "u8"}, users(all)); diff != "" || pages < 2 {
		t.Errorf("paged filter after %d pages (-want +got):\n%s", pages+1, diff)
	}
	if !slices.IsSortedFunc(all, func(a, b *profilev1.Profile) int { return strings.Compare(a.GetProfileId(), b.GetProfileId()) }) {
		t.Errorf("paged filter not in profile id order")
	}

	// Another workspace sees none of it, filter or not.
	other := profilev1connect.NewProfileServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[1]))
	if got, err := other.ListProfiles(ctx, &profilev1.ListProfilesRequest{Filter: `true`}); err != nil || len(got.GetProfiles()) != 0 {
		t.Errorf("workspace B ListProfiles(true) = %v, %v; want none", got, err)
	}
	if _, err := other.ListProfiles(ctx, &profilev1.ListProfilesRequest{WorkspaceId: ids[0], Filter: `true`}); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("workspace B ListProfiles(workspace A) = %v; want PermissionDenied", err)
	}
}

// TestWatchProfile watches a profile over the Connect protocol and over
// gRPC: the current profile first, then its new state after a track call,
// following an identify that merges it into another profile; cancelling
// ends the stream.
func TestWatchProfile(t *testing.T) {
	p := start(t)
	ids, tokens, key := twoWorkspaces(t, p)
	for _, tt := range []struct {
		name string
		http *http.Client
		opts []connect.ClientOption
	}{
		{"connect", http.DefaultClient, nil},
		{"grpc", rpctest.H2CClient(), []connect.ClientOption{connect.WithGRPC()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			anon, user := "anon-"+tt.name, "user-"+tt.name
			if code, res := post(t, p.url+"/v1/batch", key, fmt.Sprintf(`{"batch":[
				{"type":"track","anonymousId":%q,"event":"Viewed","messageId":"%s-1"},
				{"type":"identify","userId":%q,"traits":{"plan":"pro"},"messageId":"%s-2"}
			]}`, anon, tt.name, user, tt.name)); code != http.StatusOK {
				t.Fatalf("POST /v1/batch = %d %s", code, res)
			}
			client := profilev1connect.NewProfileServiceClient(tt.http, p.url, append(tt.opts, rpctest.Bearer(tokens[0]))...)
			waitFor(t, "the anonymous profile", func() (bool, string) {
				_, err := client.GetProfile(context.Background(), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_AnonymousId{AnonymousId: anon}})
				return err == nil, fmt.Sprint(err)
			})
			waitFor(t, "the user's profile", func() (bool, string) {
				_, err := client.GetProfile(context.Background(), &profilev1.GetProfileRequest{Id: &profilev1.GetProfileRequest_UserId{UserId: user}})
				return err == nil, fmt.Sprint(err)
			})

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			stream, err := client.WatchProfile(ctx, &profilev1.WatchProfileRequest{Id: &profilev1.WatchProfileRequest_AnonymousId{AnonymousId: anon}})
			if err != nil {
				t.Fatal(err)
			}
			defer stream.Close()
			// receiveUntil reads the stream until a profile satisfies ok.
			receiveUntil := func(what string, ok func(*profilev1.Profile) bool) {
				t.Helper()
				for stream.Receive() {
					if ok(stream.Msg().GetProfile()) {
						return
					}
				}
				t.Fatalf("stream ended before %s: %v", what, stream.Err())
			}
			receiveUntil("the initial profile", func(got *profilev1.Profile) bool {
				if got.GetEventCounts()["Viewed"] != 1 || got.GetUserId() != "" || got.GetWorkspaceId() != ids[0] {
					t.Fatalf("first message = %v; want the anonymous profile with one Viewed", got)
				}
				return true
			})

			// A new event shows up on the stream.
			if code, res := post(t, p.url+"/v1/track", key, fmt.Sprintf(`{"anonymousId":%q,"event":"Clicked","messageId":"%s-3"}`, anon, tt.name)); code != http.StatusOK {
				t.Fatalf("POST /v1/track = %d %s", code, res)
			}
			receiveUntil("the Clicked event", func(got *profilev1.Profile) bool { return got.GetEventCounts()["Clicked"] == 1 })

			// identify merges the anonymous profile into the user's; the
			// stream follows the survivor, and then its changes.
			if code, res := post(t, p.url+"/v1/identify", key, fmt.Sprintf(`{"anonymousId":%q,"userId":%q,"messageId":"%s-4"}`, anon, user, tt.name)); code != http.StatusOK {
				t.Fatalf("POST /v1/identify = %d %s", code, res)
			}
			receiveUntil("the merged profile", func(got *profilev1.Profile) bool {
				return got.GetUserId() == user && got.GetEventCounts()["Clicked"] == 1 && got.GetTraits().GetFields()["plan"].GetStringValue() == "pro"
			})
			if code, res := post(t, p.url+"/v1/track", key, fmt.Sprintf(`{"userId":%q,"event":"Bought","messageId":"%s-5"}`, user, tt.name)); code != http.StatusOK {
				t.Fatalf("POST /v1/track = %d %s", code, res)
			}
			receiveUntil("the Bought event", func(got *profilev1.Profile) bool { return got.GetEventCounts()["Bought"] == 1 })

			cancel()
			for stream.Receive() {
			}
			if code := connect.CodeOf(stream.Err()); code != connect.CodeCanceled {
				t.Errorf("after cancel, stream error = %v; want Canceled", stream.Err())
			}
			if err := stream.Close(); err != nil {
				t.Errorf("Close after cancel: %v", err)
			}

			// Workspace B finds nothing to watch, and may not name A.
			other := profilev1connect.NewProfileServiceClient(tt.http, p.url, append(tt.opts, rpctest.Bearer(tokens[1]))...)
			for _, tc := range []struct {
				req  *profilev1.WatchProfileRequest
				want connect.Code
			}{
				{&profilev1.WatchProfileRequest{Id: &profilev1.WatchProfileRequest_UserId{UserId: user}}, connect.CodeNotFound},
				{&profilev1.WatchProfileRequest{WorkspaceId: ids[0], Id: &profilev1.WatchProfileRequest_UserId{UserId: user}}, connect.CodePermissionDenied},
			} {
				s, err := other.WatchProfile(context.Background(), tc.req)
				if err == nil {
					for s.Receive() {
						t.Errorf("workspace B WatchProfile(%v) received %v", tc.req, s.Msg())
					}
					err = s.Err()
					s.Close()
				}
				if connect.CodeOf(err) != tc.want {
					t.Errorf("workspace B WatchProfile(%v) = %v; want %v", tc.req, err, tc.want)
				}
			}
		})
	}
}

// twoWorkspaces creates workspaces A and B with an API token each, and a
// write key for A.
func twoWorkspaces(t *testing.T, p *platform) (ids, tokens [2]string, key string) {
	t.Helper()
	ctx := context.Background()
	admin := workspacev1connect.NewWorkspaceServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
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
	wk, err := admin.CreateWriteKey(ctx, &workspacev1.CreateWriteKeyRequest{WorkspaceId: ids[0], Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	return ids, tokens, wk.GetSecret()
}

// waitFor polls cond until it holds, failing the test after 30 s with
// cond's last word.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw %s; last: %s", what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
