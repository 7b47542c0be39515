package content

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

func sampleProfile(t testing.TB, traits map[string]any) *profilev1.Profile {
	t.Helper()
	s, err := structpb.NewStruct(traits)
	if err != nil {
		t.Fatal(err)
	}
	return &profilev1.Profile{UserId: "u1", Traits: s, Stage: "engaged", EngagementScore: 71, EventCounts: map[string]int64{"Bought": 3}}
}

func emailTemplate(locales map[string]*contentv1.Content, def string, required ...string) *contentv1.Template {
	return &contentv1.Template{Name: "t", Channel: contentv1.Channel_CHANNEL_EMAIL, DefaultLocale: def, Locales: locales, Required: required}
}

// renderOne compiles t and renders it for p in locale.
func renderOne(t *testing.T, tmpl *contentv1.Template, p *profilev1.Profile, event map[string]any, locale string) (*contentv1.Message, error) {
	t.Helper()
	c, err := newEngine().compileTemplate(tmpl)
	if err != nil {
		return nil, err
	}
	ev, err := structpb.NewStruct(event)
	if err != nil {
		t.Fatal(err)
	}
	return c.render(context.Background(), locale, scope(p, ev, &contentv1.Campaign{Id: "c1", Name: "Spring"}, locale))
}

func TestRenderScopeAndEscaping(t *testing.T) {
	p := sampleProfile(t, map[string]any{"first_name": `<b>Ann</b> & "co"`, "bio": "<i>hi</i>"})
	tests := []struct {
		name, html, text, want, wantText string
	}{
		{name: "escaped by default", html: `<p>{{ user.first_name }}</p>`, want: `<p>&lt;b&gt;Ann&lt;/b&gt; &amp; &#34;co&#34;</p>`},
		{name: "raw is not escaped", html: `{{ profile.traits.bio | raw }}`, want: `<i>hi</i>`},
		{name: "raw anywhere in the chain", html: `{{ profile.traits.bio | raw | upcase }}`, want: `<I>HI</I>`},
		{name: "escaped by the author once only", html: `{{ user.first_name | escape }}|{{ user.first_name | escape_once }}`, want: `&lt;b&gt;Ann&lt;/b&gt; &amp; &#34;co&#34;|&lt;b&gt;Ann&lt;/b&gt; &amp; &#34;co&#34;`},
		{name: "filters then escape", html: `{{ user.first_name | upcase }}`, want: `&lt;B&gt;ANN&lt;/B&gt; &amp; &#34;CO&#34;`},
		{name: "pipe in a string is not a filter", html: `{{ "a|raw" | append: user.nothing }}`, want: `a|raw`},
		{name: "text part is not escaped", html: `x`, text: `Hi {{ user.first_name }}`, want: "x", wantText: `Hi <b>Ann</b> & "co"`},
		{name: "raw block untouched", html: `{% raw %}{{ user.first_name }}{% endraw %}`, want: `{{ user.first_name }}`},
		{name: "scope", html: `{{ profile.user_id }} {{ profile.stage }} {{ profile.engagement_score }} {{ profile.event_counts.Bought }} {{ event.sku }} {{ campaign.name }} {{ locale }}`,
			want: `u1 engaged 71 3 A&amp;1 Spring en`},
		{name: "default for optional", html: `Hi {{ user.nickname | default: "there" }}`, want: `Hi there`},
		{name: "trim markers keep working in loops", html: "{%- for i in (1..3) -%}\n {{ i }}\n{%- endfor -%}", want: "123"},
		{name: "assign", html: `{% assign n = user.first_name | size %}{{ n }}`, want: `17`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := renderOne(t, emailTemplate(map[string]*contentv1.Content{"en": {Subject: "s", Html: tt.html, Text: tt.text}}, "en"),
				p, map[string]any{"sku": "A&1"}, "")
			if err != nil {
				t.Fatal(err)
			}
			if got := msg.GetContent().GetHtml(); got != tt.want {
				t.Errorf("html = %q, want %q", got, tt.want)
			}
			if got := msg.GetContent().GetText(); got != tt.wantText {
				t.Errorf("text = %q, want %q", got, tt.wantText)
			}
		})
	}
}

func TestLocaleFallback(t *testing.T) {
	tmpl := emailTemplate(map[string]*contentv1.Content{
		"en":    {Subject: "Hello", Text: "en"},
		"pt":    {Subject: "Olá", Text: "pt"},
		"pt-BR": {Subject: "Oi", Text: "pt-BR"},
		"fr_CA": {Subject: "Allo", Text: "fr-CA"},
	}, "en")
	for _, tt := range []struct {
		locale, traitLocale, want string
	}{
		{"pt-BR", "", "pt-BR"},
		{"pt-br", "", "pt-BR"},
		{"pt_BR", "", "pt-BR"},
		{"pt-PT", "", "pt"},
		{"pt", "", "pt"},
		{"fr-CA", "", "fr_CA"},
		{"fr", "", "en"},
		{"de-DE", "", "en"},
		{"", "", "en"},
		{"", "pt-BR", "pt-BR"}, // the profile's locale trait
		{"pt", "pt-BR", "pt"},  // the request wins
	} {
		traits := map[string]any{}
		if tt.traitLocale != "" {
			traits["locale"] = tt.traitLocale
		}
		r := New(Options{})
		c, err := r.engine.compileTemplate(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		msg, err := r.renderCompiled(context.Background(), c, sampleProfile(t, traits), nil, nil, tt.locale)
		if err != nil {
			t.Fatal(err)
		}
		if msg.GetLocale() != tt.want {
			t.Errorf("locale %q (trait %q) rendered %q, want %q", tt.locale, tt.traitLocale, msg.GetLocale(), tt.want)
		}
		if msg.GetContent().GetText() != strings.ReplaceAll(tt.want, "_", "-") {
			t.Errorf("locale %q: text %q is not the %q variant", tt.locale, msg.GetContent().GetText(), tt.want)
		}
	}
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		name     string
		html     string
		required []string
		want     TemplateError
	}{
		{name: "unclosed tag", html: "line one\n  {% if user.x %}\nno end", want: TemplateError{Part: "en/html", Line: 2, Column: 3}},
		{name: "bad expression column", html: "a\nb  {{ user.x | }}", want: TemplateError{Part: "en/html", Line: 2, Column: 4}},
		{name: "unknown tag", html: "x {% frobnicate %}", want: TemplateError{Part: "en/html", Line: 1, Column: 3}},
		{name: "include refused", html: "\n\t{% include 'etc/passwd' %}", want: TemplateError{Part: "en/html", Line: 2, Column: 2}},
		{name: "capture refused", html: "{% capture x %}y{% endcapture %}", want: TemplateError{Part: "en/html", Line: 1, Column: 1}},
		{name: "reserved filter", html: "{{ x | whisper_escape }}", want: TemplateError{Part: "en/html", Line: 1, Column: 1}},
		{name: "missing required", html: "Hi\n   {{ profile.traits.first_name }}", required: []string{"profile.traits.first_name"},
			want: TemplateError{Part: "en/html", Line: 2, Column: 4, Variable: "profile.traits.first_name"}},
		{name: "unknown filter at render", html: "\n{{ user.x | nosuchfilter }}", want: TemplateError{Part: "en/html", Line: 2, Column: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := renderOne(t, emailTemplate(map[string]*contentv1.Content{"en": {Html: tt.html}}, "en", tt.required...),
				sampleProfile(t, nil), nil, "")
			var te *TemplateError
			if !errors.As(err, &te) {
				t.Fatalf("err = %v, want a *TemplateError", err)
			}
			if te.Message == "" {
				t.Errorf("empty message")
			}
			got := *te
			got.Message = ""
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error %q (-want +got):\n%s", te.Error(), diff)
			}
			if strings.Contains(te.Error(), escapeFilter) || strings.Contains(te.Error(), guardTag) {
				t.Errorf("error %q shows the compiler's insertions", te.Error())
			}
		})
	}
}

func TestSandboxBudgets(t *testing.T) {
	tests := []struct {
		name, src string
	}{
		{name: "runaway loop", src: `{% for i in (1..100000000) %}{% endfor %}`},
		{name: "nested runaway loop", src: `{% for i in (1..100000) %}{% for j in (1..100000) %}{% endfor %}{% endfor %}`},
		{name: "oversized output", src: `{% for i in (1..1000000) %}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}`},
		{name: "doubling assign", src: `{% assign s = "xxxxxxxx" %}{% for i in (1..64) %}{% assign s = s | append: s %}{% endfor %}{{ s | size }}`},
		{name: "replace blow-up", src: `{% assign s = "xxxxxxxxxxxxxxxx" %}{% for i in (1..14) %}{% assign s = s | append: s %}{% endfor %}{{ s | replace: "x", s }}`},
		{name: "tablerow", src: `{% tablerow i in (1..100000000) %}{% endtablerow %}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			msg, err := renderOne(t, emailTemplate(map[string]*contentv1.Content{"en": {Html: tt.src}}, "en"), sampleProfile(t, nil), nil, "")
			took := time.Since(start)
			if !errors.Is(err, ErrBudget) {
				t.Fatalf("err = %v (output %d bytes), want ErrBudget", err, len(msg.GetContent().GetHtml()))
			}
			// The budget is 100 ms; allow for a slow, shared machine (and -race).
			if took > 2*time.Second {
				t.Errorf("took %v to fail", took)
			}
		})
	}
}

func TestChannelsParts(t *testing.T) {
	p := sampleProfile(t, map[string]any{"first_name": `Ann "A"`})
	tests := []struct {
		name string
		tmpl *contentv1.Template
		want *contentv1.Content
	}{
		{name: "push with data", tmpl: &contentv1.Template{Name: "p", Channel: contentv1.Channel_CHANNEL_PUSH, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Title: "Hi {{ user.first_name }}", Body: "b", Data: map[string]string{"deeplink": "app://c/{{ campaign.id }}", "n": "{{ profile.event_counts.Bought }}"}}}},
			want: &contentv1.Content{Title: `Hi Ann "A"`, Body: "b", Data: map[string]string{"deeplink": "app://c/c1", "n": "3"}}},
		{name: "webhook json", tmpl: &contentv1.Template{Name: "w", Channel: contentv1.Channel_CHANNEL_WEBHOOK, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Body: `{"name": {{ user.first_name | json }}, "traits": {{ profile.traits | json }}}`}}},
			want: &contentv1.Content{Body: `{"name": "Ann \"A\"", "traits": {"first_name":"Ann \"A\""}}`}},
		{name: "webhook url", tmpl: &contentv1.Template{Name: "w", Channel: contentv1.Channel_CHANNEL_WEBHOOK, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Body: `{}`, Url: "https://hooks.example.com/c/{{ campaign.id }}"}}},
			want: &contentv1.Content{Body: `{}`, Url: "https://hooks.example.com/c/c1"}},
		{name: "sms", tmpl: &contentv1.Template{Name: "s", Channel: contentv1.Channel_CHANNEL_SMS, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Text: "{{ user.first_name }}: {{ campaign.name }}"}}},
			want: &contentv1.Content{Text: `Ann "A": Spring`}},
		{name: "in-app", tmpl: &contentv1.Template{Name: "i", Channel: contentv1.Channel_CHANNEL_IN_APP, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Title: "T", Body: "<{{ user.first_name }}>"}}},
			want: &contentv1.Content{Title: "T", Body: `<Ann "A">`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := renderOne(t, tt.tmpl, p, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, msg.GetContent(), protocmp.Transform()); diff != "" {
				t.Errorf("content (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDefinitionErrors(t *testing.T) {
	ok := func() *contentv1.Template {
		return emailTemplate(map[string]*contentv1.Content{"en": {Subject: "s", Html: "h"}}, "en")
	}
	tests := []struct {
		name   string
		mutate func(*contentv1.Template)
		field  string
	}{
		{"no name", func(t *contentv1.Template) { t.Name = "" }, "template.name"},
		{"no channel", func(t *contentv1.Template) { t.Channel = 0 }, "template.channel"},
		{"default not a locale", func(t *contentv1.Template) { t.DefaultLocale = "fr" }, "template.default_locale"},
		{"bad locale", func(t *contentv1.Template) { t.Locales["e n"] = &contentv1.Content{Html: "x"} }, "template.locales[e n]"},
		{"part of another channel", func(t *contentv1.Template) { t.Locales["en"].Title = "x" }, "template.locales[en].title"},
		{"email without body", func(t *contentv1.Template) { t.Locales["en"].Html = "" }, "template.locales[en]"},
		{"bad required", func(t *contentv1.Template) { t.Required = []string{"secrets.x"} }, "template.required[0]"},
		{"duplicate locale", func(t *contentv1.Template) { t.Locales["EN"] = &contentv1.Content{Html: "x"} }, "template.locales["},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl := ok()
			tt.mutate(tmpl)
			_, err := newEngine().compileTemplate(tmpl)
			var fe *FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, tt.field) {
				t.Fatalf("err = %v, want a *FieldError on %s", err, tt.field)
			}
		})
	}
}
