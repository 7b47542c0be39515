package deliver

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/authn"
	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/whisperhq/whisper/internal/auth"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	deliveryv1 "github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/delivery/v1/deliveryv1connect"
	"github.com/whisperhq/whisper/internal/postgres"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/internal/workspace"
)

// inAppServer serves DeliveryService over a real listener behind the
// bearer middleware that accepts in-app tokens, as the deliver target
// mounts it, for a workspace with an API token.
type inAppServer struct {
	url, ws, apiToken string
	tokens            *InAppTokens
}

func newInAppServer(t *testing.T, h *harness, tokens *InAppTokens, heartbeat time.Duration) *inAppServer {
	t.Helper()
	ctx := context.Background()
	if err := postgres.Migrate(ctx, h.pool, workspace.Migrations, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	store := workspace.NewStore(h.pool)
	w, err := store.CreateWorkspace(ctx, "inapp")
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := store.CreateAPIToken(ctx, w.ID, "backend")
	if err != nil {
		t.Fatal(err)
	}
	hd := NewHandler(New(h.opts), nil)
	hd.heartbeat = heartbeat
	authenticate := auth.NewAuthenticator(store, "", 0, nil).AuthenticateBearer
	if tokens != nil {
		hd.WithInAppTokens(tokens)
		authenticate = auth.NewAuthenticator(store, "", 0, nil).AuthenticateBearerOrUser(tokens, InAppProcedures...)
	}
	path, handler := hd.Routes()
	mux := http.NewServeMux()
	mux.Handle(path, authn.NewMiddleware(authenticate).Wrap(handler))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &inAppServer{url: srv.URL, ws: w.ID, apiToken: secret, tokens: tokens}
}

func (s *inAppServer) client(token string) deliveryv1connect.DeliveryServiceClient {
	return deliveryv1connect.NewDeliveryServiceClient(http.DefaultClient, s.url, rpctest.Bearer(token))
}

func addInbox(t *testing.T, h *harness, ws, user, id, title string) {
	t.Helper()
	b, err := proto.Marshal(&contentv1.Content{Title: title})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(context.Background(), `INSERT INTO deliver_inbox (delivery_id, workspace_id, user_id, campaign_id, content)
		VALUES ($1, $2, $3, 'c1', $4)`, id, ws, user, b); err != nil {
		t.Fatal(err)
	}
}

// receive returns the kinds of the first n responses of a stream, with
// each message's delivery id: "message:d1", "caught_up", "heartbeat".
func receive(t *testing.T, c deliveryv1connect.DeliveryServiceClient, req *deliveryv1.StreamInAppRequest, n int) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.StreamInApp(ctx, req)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	var got []string
	for len(got) < n && stream.Receive() {
		switch k := stream.Msg().GetKind().(type) {
		case *deliveryv1.StreamInAppResponse_Message:
			got = append(got, "message:"+k.Message.GetDeliveryId())
		case *deliveryv1.StreamInAppResponse_CaughtUp:
			got = append(got, "caught_up")
		case *deliveryv1.StreamInAppResponse_Heartbeat:
			got = append(got, "heartbeat")
		default:
			got = append(got, "unknown")
		}
	}
	if len(got) < n {
		return got, stream.Err()
	}
	return got, nil
}

func TestInAppTokenScopesStreamAndRead(t *testing.T) {
	h := newHarness(t)
	s := newInAppServer(t, h, newTestInAppTokens(t, testSigningKey, time.Now()), InAppHeartbeat)
	ctx := context.Background()
	backend := s.client(s.apiToken)
	addInbox(t, h, s.ws, "ann", "d1", "hello ann")
	addInbox(t, h, s.ws, "bob", "d2", "hello bob")

	res, err := backend.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{UserId: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if until := time.Until(res.GetExpireTime().AsTime()); until < 59*time.Minute || until > time.Hour {
		t.Errorf("default token expires in %v, want 1h", until)
	}
	ann := s.client(res.GetToken())
	expired, _ := newTestInAppTokens(t, testSigningKey, time.Now().Add(-2*time.Hour)).Issue(s.ws, "ann", time.Hour)
	otherKey, _ := newTestInAppTokens(t, testSigningKey+"-other", time.Now()).Issue(s.ws, "ann", time.Hour)

	got, err := receive(t, ann, &deliveryv1.StreamInAppRequest{UserId: "ann"}, 2)
	if err != nil || len(got) != 2 || got[0] != "message:d1" || got[1] != "caught_up" {
		t.Errorf("ann's stream = %v, %v; want [message:d1 caught_up]", got, err)
	}
	// With the API token, the backend still streams any user's messages.
	if got, err := receive(t, backend, &deliveryv1.StreamInAppRequest{UserId: "bob"}, 2); err != nil || len(got) != 2 || got[0] != "message:d2" {
		t.Errorf("bob's stream with the API token = %v, %v", got, err)
	}

	tests := []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"stream another user", func() error {
			_, err := receive(t, ann, &deliveryv1.StreamInAppRequest{UserId: "bob"}, 1)
			return err
		}, connect.CodePermissionDenied},
		{"stream another workspace", func() error {
			_, err := receive(t, ann, &deliveryv1.StreamInAppRequest{WorkspaceId: h.ws, UserId: "ann"}, 1)
			return err
		}, connect.CodePermissionDenied},
		{"stream with an expired token", func() error {
			_, err := receive(t, s.client(expired), &deliveryv1.StreamInAppRequest{UserId: "ann"}, 1)
			return err
		}, connect.CodeUnauthenticated},
		{"stream with a token of another key", func() error {
			_, err := receive(t, s.client(otherKey), &deliveryv1.StreamInAppRequest{UserId: "ann"}, 1)
			return err
		}, connect.CodeUnauthenticated},
		{"mark another user's message", func() error {
			_, err := ann.MarkInAppRead(ctx, &deliveryv1.MarkInAppReadRequest{UserId: "bob", DeliveryIds: []string{"d2"}})
			return err
		}, connect.CodePermissionDenied},
		{"list deliveries", func() error {
			_, err := ann.ListDeliveries(ctx, &deliveryv1.ListDeliveriesRequest{})
			return err
		}, connect.CodePermissionDenied},
		{"issue another token", func() error {
			_, err := ann.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{UserId: "ann"})
			return err
		}, connect.CodePermissionDenied},
		{"issue for no user", func() error {
			_, err := backend.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{})
			return err
		}, connect.CodeInvalidArgument},
		{"issue for more than a day", func() error {
			_, err := backend.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{UserId: "ann", Ttl: durationpb.New(25 * time.Hour)})
			return err
		}, connect.CodeInvalidArgument},
		{"issue for no time", func() error {
			_, err := backend.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{UserId: "ann", Ttl: durationpb.New(0)})
			return err
		}, connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := connect.CodeOf(tt.call()); got != tt.want {
				t.Errorf("code %v, want %v", got, tt.want)
			}
		})
	}

	// Ann marks her message read: it leaves her backlog, and Bob's stays.
	marked, err := ann.MarkInAppRead(ctx, &deliveryv1.MarkInAppReadRequest{UserId: "ann", DeliveryIds: []string{"d1", "d2"}})
	if err != nil || marked.GetMarked() != 1 {
		t.Errorf("MarkInAppRead = %v, %v; want 1 marked (d2 is Bob's)", marked, err)
	}
	if got, err := receive(t, ann, &deliveryv1.StreamInAppRequest{UserId: "ann"}, 1); err != nil || len(got) != 1 || got[0] != "caught_up" {
		t.Errorf("ann's stream after reading = %v, %v; want [caught_up]", got, err)
	}
	if got, err := receive(t, backend, &deliveryv1.StreamInAppRequest{UserId: "bob"}, 1); err != nil || len(got) != 1 || got[0] != "message:d2" {
		t.Errorf("bob's stream = %v, %v; want his unread d2 first", got, err)
	}
	// A custom lifetime is honoured.
	res, err = backend.IssueInAppToken(ctx, &deliveryv1.IssueInAppTokenRequest{UserId: "ann", Ttl: durationpb.New(10 * time.Minute)})
	if until := time.Until(res.GetExpireTime().AsTime()); err != nil || until < 9*time.Minute || until > 10*time.Minute {
		t.Errorf("10-minute token expires in %v (%v)", until, err)
	}
}

// TestStreamInAppHeartbeat: a client with nothing unread learns at once
// that it is connected, and a quiet stream is never silent for longer than
// the heartbeat.
func TestStreamInAppHeartbeat(t *testing.T) {
	h := newHarness(t)
	s := newInAppServer(t, h, nil, 100*time.Millisecond)
	start := time.Now()
	got, err := receive(t, s.client(s.apiToken), &deliveryv1.StreamInAppRequest{UserId: "ann"}, 3)
	if err != nil || len(got) != 3 || got[0] != "caught_up" || got[1] != "heartbeat" || got[2] != "heartbeat" {
		t.Fatalf("stream = %v, %v; want [caught_up heartbeat heartbeat]", got, err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("two heartbeats in %v, want them 100ms apart", took)
	}
	// Without a signing key there are no in-app tokens to issue.
	_, err = s.client(s.apiToken).IssueInAppToken(context.Background(), &deliveryv1.IssueInAppTokenRequest{UserId: "ann"})
	if connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("IssueInAppToken without a key: %v, want FailedPrecondition", err)
	}
}
