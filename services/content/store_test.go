package content

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/whisperhq/whisper/internal/auth"
	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/pgtest"
	"github.com/whisperhq/whisper/internal/postgres"
)

// profileMap is a ProfileSource over a map, keyed by workspace + "/" + user.
type profileMap map[string]*profilev1.Profile

func (m profileMap) Profile(_ context.Context, ws, user string) (*profilev1.Profile, error) {
	if p, ok := m[ws+"/"+user]; ok {
		return p, nil
	}
	return nil, ErrProfileNotFound
}

func newTestHandler(t testing.TB, o Options) (*Handler, *Renderer) {
	t.Helper()
	pool := pgtest.NewPool(t)
	if err := postgres.Migrate(context.Background(), pool, Migrations, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	o.Store = NewStore(pool)
	r := New(o)
	return NewHandler(r, nil), r
}

func asWorkspace(ws string) context.Context {
	return auth.NewContext(context.Background(), &auth.Principal{WorkspaceID: ws, CredentialID: "tok"})
}

func codeOf(err error) connect.Code {
	if err == nil {
		return 0
	}
	return connect.CodeOf(err)
}

func TestTemplateVersions(t *testing.T) {
	h, _ := newTestHandler(t, Options{})
	ws := uuid.NewString()
	ctx := asWorkspace(ws)
	v1 := emailTemplate(map[string]*contentv1.Content{"en": {Subject: "v1 {{ user.first_name }}", Html: "<p>one</p>"}}, "en")
	created, err := h.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: v1})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetTemplate().GetTemplateId()
	if created.GetTemplate().GetVersion() != 1 || created.GetTemplate().GetWorkspaceId() != ws || created.GetTemplate().GetCreateTime() == nil {
		t.Fatalf("created = %v", created.GetTemplate())
	}

	v2 := emailTemplate(map[string]*contentv1.Content{"en": {Subject: "v2", Html: "<p>two</p>"}, "pt": {Subject: "v2 pt", Text: "dois"}}, "en")
	v2.TemplateId, v2.Name = id, "renamed"
	updated, err := h.UpdateTemplate(ctx, &contentv1.UpdateTemplateRequest{Template: v2})
	if err != nil {
		t.Fatal(err)
	}
	if updated.GetTemplate().GetVersion() != 2 {
		t.Fatalf("update made version %d, want 2", updated.GetTemplate().GetVersion())
	}

	ignore := protocmp.IgnoreFields(&contentv1.Template{}, "create_time")
	for _, tt := range []struct {
		version int32
		want    *contentv1.Template
	}{
		{0, updated.GetTemplate()},
		{2, updated.GetTemplate()},
		{1, created.GetTemplate()},
	} {
		got, err := h.GetTemplate(ctx, &contentv1.GetTemplateRequest{TemplateId: id, Version: tt.version})
		if err != nil {
			t.Fatalf("GetTemplate v%d: %v", tt.version, err)
		}
		if diff := cmp.Diff(tt.want, got.GetTemplate(), protocmp.Transform(), ignore); diff != "" {
			t.Errorf("GetTemplate v%d (-want +got):\n%s", tt.version, diff)
		}
		if got.GetLatestVersion() != 2 {
			t.Errorf("latest_version = %d, want 2", got.GetLatestVersion())
		}
	}

	// Errors.
	for _, tt := range []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"missing version", func() error {
			_, err := h.GetTemplate(ctx, &contentv1.GetTemplateRequest{TemplateId: id, Version: 3})
			return err
		}, connect.CodeNotFound},
		{"other workspace", func() error {
			_, err := h.GetTemplate(asWorkspace(uuid.NewString()), &contentv1.GetTemplateRequest{TemplateId: id})
			return err
		}, connect.CodeNotFound},
		{"naming another workspace", func() error {
			_, err := h.GetTemplate(ctx, &contentv1.GetTemplateRequest{WorkspaceId: uuid.NewString(), TemplateId: id})
			return err
		}, connect.CodePermissionDenied},
		{"channel change", func() error {
			t := emailTemplate(nil, "en")
			t.Channel, t.TemplateId, t.DefaultLocale = contentv1.Channel_CHANNEL_SMS, id, "en"
			t.Locales = map[string]*contentv1.Content{"en": {Text: "x"}}
			_, err := h.UpdateTemplate(ctx, &contentv1.UpdateTemplateRequest{Template: t})
			return err
		}, connect.CodeInvalidArgument},
		{"update unknown", func() error {
			t := emailTemplate(map[string]*contentv1.Content{"en": {Html: "x"}}, "en")
			t.TemplateId = uuid.NewString()
			_, err := h.UpdateTemplate(ctx, &contentv1.UpdateTemplateRequest{Template: t})
			return err
		}, connect.CodeNotFound},
		{"parse error", func() error {
			_, err := h.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: emailTemplate(map[string]*contentv1.Content{"en": {Html: "{% if %}"}}, "en")})
			return err
		}, connect.CodeInvalidArgument},
		{"admin without workspace", func() error {
			_, err := h.ListTemplates(auth.NewContext(context.Background(), &auth.Principal{Admin: true}), &contentv1.ListTemplatesRequest{})
			return err
		}, connect.CodeInvalidArgument},
		{"no principal", func() error {
			_, err := h.ListTemplates(context.Background(), &contentv1.ListTemplatesRequest{})
			return err
		}, connect.CodeUnauthenticated},
	} {
		if got := codeOf(tt.call()); got != tt.want {
			t.Errorf("%s: code %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestListTemplatesPages(t *testing.T) {
	h, _ := newTestHandler(t, Options{})
	ctx := asWorkspace(uuid.NewString())
	want := map[string]bool{}
	for range 5 {
		res, err := h.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: emailTemplate(map[string]*contentv1.Content{"en": {Html: "x"}}, "en")})
		if err != nil {
			t.Fatal(err)
		}
		want[res.GetTemplate().GetTemplateId()] = true
	}
	// Another workspace's template must not show.
	if _, err := h.CreateTemplate(asWorkspace(uuid.NewString()), &contentv1.CreateTemplateRequest{Template: emailTemplate(map[string]*contentv1.Content{"en": {Html: "x"}}, "en")}); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	token, pages := "", 0
	for {
		res, err := h.ListTemplates(ctx, &contentv1.ListTemplatesRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, tm := range res.GetTemplates() {
			got[tm.GetTemplateId()] = true
		}
		if token = res.GetNextPageToken(); token == "" {
			break
		}
	}
	if diff := cmp.Diff(want, got); diff != "" || pages != 3 {
		t.Errorf("listed (-want +got) in %d pages:\n%s", pages, diff)
	}
}

func TestRenderStored(t *testing.T) {
	ws := uuid.NewString()
	profiles := profileMap{ws + "/u1": sampleProfile(t, map[string]any{"first_name": "Ann", "locale": "pt-BR"})}
	h, r := newTestHandler(t, Options{Profiles: profiles})
	ctx := asWorkspace(ws)
	tmpl := emailTemplate(map[string]*contentv1.Content{
		"en": {Subject: "Hi {{ user.first_name }}", Html: "<p>{{ event.item }}</p>"},
		"pt": {Subject: "Olá {{ user.first_name }}", Html: "<p>{{ event.item }}</p>"},
	}, "en", "profile.traits.first_name")
	created, err := h.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: tmpl})
	if err != nil {
		t.Fatal(err)
	}
	id := created.GetTemplate().GetTemplateId()
	tmpl.TemplateId = id
	tmpl.Locales["en"].Subject = "Hello {{ user.first_name }}"
	if _, err := h.UpdateTemplate(ctx, &contentv1.UpdateTemplateRequest{Template: tmpl}); err != nil {
		t.Fatal(err)
	}
	event, _ := structFrom(map[string]any{"item": "<shoes>"})
	tests := []struct {
		name string
		req  *contentv1.RenderRequest
		want *contentv1.Message
		code connect.Code
	}{
		{name: "latest, user by id, locale from trait",
			req:  &contentv1.RenderRequest{TemplateId: id, User: &contentv1.RenderRequest_UserId{UserId: "u1"}, EventProperties: event},
			want: &contentv1.Message{TemplateId: id, Version: 2, Channel: contentv1.Channel_CHANNEL_EMAIL, Locale: "pt", Content: &contentv1.Content{Subject: "Olá Ann", Html: "<p>&lt;shoes&gt;</p>"}}},
		{name: "version 1, inline profile, request locale",
			req: &contentv1.RenderRequest{TemplateId: id, Version: 1, Locale: "en-GB",
				User: &contentv1.RenderRequest_Profile{Profile: sampleProfile(t, map[string]any{"first_name": "Bo"})}},
			want: &contentv1.Message{TemplateId: id, Version: 1, Channel: contentv1.Channel_CHANNEL_EMAIL, Locale: "en", Content: &contentv1.Content{Subject: "Hi Bo", Html: "<p></p>"}}},
		{name: "version 2 for the same",
			req: &contentv1.RenderRequest{TemplateId: id, Version: 2, Locale: "en-GB",
				User: &contentv1.RenderRequest_Profile{Profile: sampleProfile(t, map[string]any{"first_name": "Bo"})}},
			want: &contentv1.Message{TemplateId: id, Version: 2, Channel: contentv1.Channel_CHANNEL_EMAIL, Locale: "en", Content: &contentv1.Content{Subject: "Hello Bo", Html: "<p></p>"}}},
		{name: "missing required variable",
			req:  &contentv1.RenderRequest{TemplateId: id, User: &contentv1.RenderRequest_Profile{Profile: sampleProfile(t, nil)}},
			code: connect.CodeInvalidArgument},
		{name: "unknown user",
			req:  &contentv1.RenderRequest{TemplateId: id, User: &contentv1.RenderRequest_UserId{UserId: "nobody"}},
			code: connect.CodeNotFound},
		{name: "no user",
			req:  &contentv1.RenderRequest{TemplateId: id},
			code: connect.CodeInvalidArgument},
		{name: "unknown version",
			req:  &contentv1.RenderRequest{TemplateId: id, Version: 9, User: &contentv1.RenderRequest_UserId{UserId: "u1"}},
			code: connect.CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := h.Render(ctx, tt.req)
			if got := codeOf(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if diff := cmp.Diff(tt.want, res.GetMessage(), protocmp.Transform()); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := h.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: emailTemplate(map[string]*contentv1.Content{"en": {Html: "ok", Subject: "\n {{ x | }}"}}, "en")}); err == nil ||
		!strings.Contains(err.Error(), "template.locales[en].subject: en/subject: line 2, column 2:") {
		t.Errorf("CreateTemplate parse error = %v, want it to name the field, line and column", err)
	}
	if err := func() error {
		_, err := h.Render(ctx, tests[3].req)
		return err
	}(); !strings.Contains(err.Error(), "profile.traits.first_name") {
		t.Errorf("missing variable error %q does not name it", err)
	}

	// The in-process API has the same semantics, and serves versions from
	// the cache after the first read.
	msg, err := r.Render(context.Background(), &contentv1.RenderRequest{WorkspaceId: ws, TemplateId: id, Version: 2, User: &contentv1.RenderRequest_UserId{UserId: "u1"}, Locale: "pt-BR"})
	if err != nil || msg.GetContent().GetSubject() != "Olá Ann" {
		t.Fatalf("Renderer.Render = %v, %v", msg, err)
	}
	if _, err := r.Render(context.Background(), &contentv1.RenderRequest{WorkspaceId: uuid.NewString(), TemplateId: id, User: &contentv1.RenderRequest_UserId{UserId: "u1"}}); !errors.Is(err, ErrNotFound) {
		t.Errorf("render in another workspace: %v, want ErrNotFound", err)
	}
}

// chatServer speaks the chat completions shape; answer builds the reply.
func chatServer(t *testing.T, answer func(req map[string]any) (int, any)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "Bearer sk-test" || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var req map[string]any
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &req); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		code, body := answer(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func choices(contents ...string) map[string]any {
	var cs []any
	for i, c := range contents {
		cs = append(cs, map[string]any{"index": i, "message": map[string]any{"role": "assistant", "content": c}, "finish_reason": "stop"})
	}
	return map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "choices": cs}
}

func TestPreviewDrafts(t *testing.T) {
	var sawN atomic.Int64
	good, calls := chatServer(t, func(req map[string]any) (int, any) {
		n, _ := req["n"].(float64)
		sawN.Store(int64(n))
		msgs, _ := req["messages"].([]any)
		if len(msgs) != 2 || !strings.Contains(msgs[1].(map[string]any)["content"].(string), "shorter") {
			return http.StatusBadRequest, map[string]any{"error": map[string]any{"message": "no brief"}}
		}
		return http.StatusOK, choices(
			`{"subject":"Hey {{ user.first_name }}!","html":"<p>{{ event.item }}</p>"}`,
			`{"subject":"{% if %}","html":"broken"}`, // does not parse: dropped
			`not json at all`,                        // dropped
			`{"subject":"Yo {{ user.first_name | default: \"you\" }}","text":"short"}`,
		)
	})
	failing, _ := chatServer(t, func(map[string]any) (int, any) {
		return http.StatusTooManyRequests, map[string]any{"error": map[string]any{"message": "rate limited"}}
	})
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) }) // runs first

	tmpl := emailTemplate(map[string]*contentv1.Content{"en": {Subject: "Hi {{ user.first_name }}", Html: "<p>{{ event.item }}</p>"}}, "en")
	req := func(n int32) *contentv1.PreviewRequest {
		return &contentv1.PreviewRequest{Template: tmpl, DraftVariants: n, Brief: "make it shorter",
			User: &contentv1.PreviewRequest_Profile{Profile: sampleProfile(t, map[string]any{"first_name": "Ann"})}}
	}
	drafter := func(url string, timeout time.Duration) Drafter {
		return NewChatDrafter(DraftsConfig{URL: url, APIKey: "sk-test", Model: "m", Timeout: timeout})
	}
	tests := []struct {
		name    string
		drafter Drafter
		req     *contentv1.PreviewRequest
		code    connect.Code
		drafts  int
	}{
		{name: "no drafts asked", drafter: nil, req: req(0)},
		{name: "drafts without provider", drafter: nil, req: req(2), code: connect.CodeFailedPrecondition},
		{name: "two drafts", drafter: drafter(good.URL, 5*time.Second), req: req(2), drafts: 2},
		{name: "provider error", drafter: drafter(failing.URL, 5*time.Second), req: req(1), code: connect.CodeUnavailable},
		{name: "provider timeout", drafter: drafter(slow.URL, 200*time.Millisecond), req: req(1), code: connect.CodeUnavailable},
		{name: "too many drafts", drafter: drafter(good.URL, 5*time.Second), req: req(6), code: connect.CodeInvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(New(Options{Drafter: tt.drafter}), nil)
			start := time.Now()
			res, err := h.Preview(asWorkspace(uuid.NewString()), tt.req)
			if got := codeOf(err); got != tt.code {
				t.Fatalf("code %v (%v), want %v", got, err, tt.code)
			}
			if time.Since(start) > 3*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if err != nil {
				return
			}
			if got := res.GetMessage().GetContent().GetSubject(); got != "Hi Ann" {
				t.Errorf("rendered subject %q", got)
			}
			if len(res.GetDrafts()) != tt.drafts {
				t.Errorf("%d drafts, want %d: %v", len(res.GetDrafts()), tt.drafts, res.GetDrafts())
			}
		})
	}
	if calls.Load() != 1 || sawN.Load() != 2 {
		t.Errorf("provider called %d times with n=%d, want once with n=2", calls.Load(), sawN.Load())
	}
}

func structFrom(m map[string]any) (*structpb.Struct, error) { return structpb.NewStruct(m) }

// TestConcurrentUpdates: versions are consecutive and unique however
// updates interleave.
func TestConcurrentUpdates(t *testing.T) {
	h, _ := newTestHandler(t, Options{})
	ctx := asWorkspace(uuid.NewString())
	created, err := h.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: emailTemplate(map[string]*contentv1.Content{"en": {Html: "v1"}}, "en")})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	versions := make(chan int32, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			tm := emailTemplate(map[string]*contentv1.Content{"en": {Html: fmt.Sprint("update ", i)}}, "en")
			tm.TemplateId = created.GetTemplate().GetTemplateId()
			res, err := h.UpdateTemplate(ctx, &contentv1.UpdateTemplateRequest{Template: tm})
			if err != nil {
				t.Error(err)
				return
			}
			versions <- res.GetTemplate().GetVersion()
		})
	}
	wg.Wait()
	close(versions)
	var got []int32
	for v := range versions {
		got = append(got, v)
	}
	slices.Sort(got)
	want := []int32{2, 3, 4, 5, 6, 7, 8, 9}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
}
