package targets_test

import (
	"context"
	"flag"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	"github.com/whisperhq/whisper/internal/gen/whisper/content/v1/contentv1connect"
	"github.com/whisperhq/whisper/internal/observability/contract"
	"github.com/whisperhq/whisper/internal/rpctest"
	"github.com/whisperhq/whisper/services/targets"
)

// TestContentOverConnect stores and renders templates over ContentService
// on the real stack, for a profile built from Segment events, and holds
// every call to the caller's workspace.
func TestContentOverConnect(t *testing.T) {
	p := start(t)
	ctx := context.Background()
	ids, tokens, key := twoWorkspaces(t, p)
	code, res := post(t, p.url+"/v1/identify", key,
		`{"userId":"u1","traits":{"first_name":"Ann <3","locale":"pt-BR"},"messageId":"c1"}`)
	if code != http.StatusOK {
		t.Fatalf("POST /v1/identify = %d %s", code, res)
	}
	acme := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[0]))
	other := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url, rpctest.Bearer(tokens[1]))
	admin := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url, rpctest.Bearer(adminToken))
	anon := contentv1connect.NewContentServiceClient(http.DefaultClient, p.url)

	created, err := acme.CreateTemplate(ctx, &contentv1.CreateTemplateRequest{Template: &contentv1.Template{
		Name: "welcome", Channel: contentv1.Channel_CHANNEL_EMAIL, DefaultLocale: "en",
		Required: []string{"profile.traits.first_name"},
		Locales: map[string]*contentv1.Content{
			"en": {Subject: "Welcome {{ user.first_name }}", Html: "<h1>{{ user.first_name }}</h1>{{ campaign.name }}"},
			"pt": {Subject: "Bem-vinda {{ user.first_name }}", Html: "<h1>{{ user.first_name }}</h1>{{ event.plan | upcase }}"},
		},
	}})
	if err != nil {
		t.Fatalf("CreateTemplate: %v", err)
	}
	id := created.GetTemplate().GetTemplateId()

	// The profile exists once the profiles target has applied the identify.
	render := &contentv1.RenderRequest{TemplateId: id, User: &contentv1.RenderRequest_UserId{UserId: "u1"},
		Campaign: &contentv1.Campaign{Id: "cmp", Name: "Spring"}}
	var got *contentv1.Message
	waitFor(t, "the profile renders", func() (bool, string) {
		r, err := acme.Render(ctx, render)
		if err != nil {
			return false, err.Error()
		}
		got = r.GetMessage()
		return true, ""
	})
	want := &contentv1.Message{TemplateId: id, Version: 1, Channel: contentv1.Channel_CHANNEL_EMAIL, Locale: "pt",
		Content: &contentv1.Content{Subject: "Bem-vinda Ann <3", Html: "<h1>Ann &lt;3</h1>"}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("Render (-want +got):\n%s", diff)
	}

	// Isolation: the other workspace cannot see, name or render it.
	for _, tt := range []struct {
		name string
		call func() error
		want connect.Code
	}{
		{"other token reads", func() error {
			_, err := other.GetTemplate(ctx, &contentv1.GetTemplateRequest{TemplateId: id})
			return err
		}, connect.CodeNotFound},
		{"other token renders", func() error {
			_, err := other.Render(ctx, render)
			return err
		}, connect.CodeNotFound},
		{"other token names the workspace", func() error {
			_, err := other.GetTemplate(ctx, &contentv1.GetTemplateRequest{WorkspaceId: ids[0], TemplateId: id})
			return err
		}, connect.CodePermissionDenied},
		{"other token lists", func() error {
			res, err := other.ListTemplates(ctx, &contentv1.ListTemplatesRequest{})
			if err == nil && len(res.GetTemplates()) != 0 {
				t.Errorf("other workspace lists %d templates", len(res.GetTemplates()))
			}
			return err
		}, 0},
		{"admin without workspace", func() error {
			_, err := admin.GetTemplate(ctx, &contentv1.GetTemplateRequest{TemplateId: id})
			return err
		}, connect.CodeInvalidArgument},
		{"admin names it", func() error {
			_, err := admin.GetTemplate(ctx, &contentv1.GetTemplateRequest{WorkspaceId: ids[0], TemplateId: id})
			return err
		}, 0},
		{"no token", func() error {
			_, err := anon.GetTemplate(ctx, &contentv1.GetTemplateRequest{TemplateId: id})
			return err
		}, connect.CodeUnauthenticated},
		{"unknown user", func() error {
			_, err := acme.Render(ctx, &contentv1.RenderRequest{TemplateId: id, User: &contentv1.RenderRequest_UserId{UserId: "nobody"}})
			return err
		}, connect.CodeNotFound},
	} {
		var code connect.Code
		if err := tt.call(); err != nil {
			code = connect.CodeOf(err)
		}
		if code != tt.want {
			t.Errorf("%s: code %v, want %v", tt.name, code, tt.want)
		}
	}

	// Template faults are InvalidArgument with a position, runaway renders
	// ResourceExhausted, quickly.
	preview := func(html string) error {
		_, err := acme.Preview(ctx, &contentv1.PreviewRequest{
			Template: &contentv1.Template{Name: "p", Channel: contentv1.Channel_CHANNEL_EMAIL, DefaultLocale: "en",
				Locales: map[string]*contentv1.Content{"en": {Html: html}}},
			User: &contentv1.PreviewRequest_UserId{UserId: "u1"},
		})
		return err
	}
	if err := preview("ok\n  {% if %}"); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "line 2, column 3") {
		t.Errorf("parse error = %v, want InvalidArgument at line 2, column 3", err)
	}
	start := time.Now()
	if err := preview("{% for i in (1..100000000) %}{% endfor %}"); connect.CodeOf(err) != connect.CodeResourceExhausted {
		t.Errorf("runaway loop = %v, want ResourceExhausted", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("runaway loop took %v", took)
	}
	if _, err := acme.Preview(ctx, &contentv1.PreviewRequest{
		Template: created.GetTemplate(), User: &contentv1.PreviewRequest_UserId{UserId: "u1"}, DraftVariants: 1, Brief: "x",
	}); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("drafts without a provider = %v, want FailedPrecondition", err)
	}

	res2, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res2.Body)
	res2.Body.Close()
	for _, line := range []string{
		`whisper_content_renders_total{channel="email",outcome="ok"}`,
		`whisper_content_renders_total{channel="email",outcome="budget_exceeded"} 1`,
		`whisper_content_render_duration_seconds_count{channel="email"}`,
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}

func TestContentMetricCatalogue(t *testing.T) {
	cat, err := targets.MetricCatalogue()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name   string
		typ    contract.Type
		labels []string
	}{
		{"whisper_content_renders_total", contract.Counter, []string{"channel", "outcome"}},
		{"whisper_content_render_duration_seconds", contract.Histogram, []string{"channel"}},
		{"whisper_content_template_cache_hits_total", contract.Counter, nil},
		{"whisper_content_template_cache_misses_total", contract.Counter, nil},
	} {
		m, ok := cat.Metric(tt.name)
		if !ok {
			t.Errorf("%s: not in the catalogue", tt.name)
			continue
		}
		if m.Type != tt.typ || !slices.Equal(m.Labels, tt.labels) {
			t.Errorf("%s: got %s %v, want %s %v", tt.name, m.Type, m.Labels, tt.typ, tt.labels)
		}
	}
}

func TestContentDraftsFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // "" for valid
	}{
		{"off by default", nil, ""},
		{"valid", []string{"--content-drafts-url=http://127.0.0.1:1/v1/chat/completions", "--content-drafts-api-key=k"}, ""},
		{"not a URL", []string{"--content-drafts-url=127.0.0.1:1"}, "--content-drafts-url: must be an http(s) URL"},
		{"bad timeout", []string{"--content-drafts-url=https://llm.internal/v1/chat/completions", "--content-drafts-timeout=0s"}, "--content-drafts-timeout: must be positive"},
		{"no model", []string{"--content-drafts-url=https://llm.internal/v1/chat/completions", "--content-drafts-model="}, "--content-drafts-model: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var cfg targets.Config
			cfg.RegisterFlags(fs)
			if err := fs.Parse(append([]string{"--database-url=postgres://x"}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			err := cfg.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
