package content

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/structpb"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

// BenchmarkRender renders a stored email template (subject, HTML with a
// loop and escaping, text) for an inline profile: the path deliver takes,
// with the compiled version served from the cache.
func BenchmarkRender(b *testing.B) {
	h, r := newTestHandler(b, Options{})
	ws := uuid.NewString()
	created, err := h.CreateTemplate(asWorkspace(ws), &contentv1.CreateTemplateRequest{Template: emailTemplate(map[string]*contentv1.Content{
		"en": {
			Subject: "{{ user.first_name | default: 'Hi' }}, your {{ campaign.name }} picks",
			Html: `<html><body><h1>Hello {{ user.first_name }}</h1>
<p>You bought {{ profile.event_counts.Bought }} times; your plan is {{ event.plan | upcase }}.</p>
<ul>{% for item in event.items %}<li>{{ item.name }}: {{ item.price }}</li>{% endfor %}</ul>
{% if profile.stage == "at_risk" %}<p>We miss you.</p>{% else %}<p>Thanks for being {{ profile.stage }}.</p>{% endif %}
</body></html>`,
			Text: "Hello {{ user.first_name }}, {% for item in event.items %}{{ item.name }} {% endfor %}",
		},
		"pt": {Subject: "Olá", Text: "Olá {{ user.first_name }}"},
	}, "en", "profile.traits.first_name")})
	if err != nil {
		b.Fatal(err)
	}
	event, _ := structpb.NewStruct(map[string]any{"plan": "pro", "items": []any{
		map[string]any{"name": "Shoes <red>", "price": 59.9},
		map[string]any{"name": "Socks", "price": 4.5},
		map[string]any{"name": "Hat", "price": 19},
	}})
	req := &contentv1.RenderRequest{
		WorkspaceId: ws, TemplateId: created.GetTemplate().GetTemplateId(), Version: 1, Locale: "en-US",
		User:            &contentv1.RenderRequest_Profile{Profile: sampleProfile(b, map[string]any{"first_name": "Ann", "plan": "pro"})},
		EventProperties: event, Campaign: &contentv1.Campaign{Id: "c1", Name: "Spring"},
	}
	ctx := context.Background()
	if _, err := r.Render(ctx, req); err != nil { // fills the cache
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Render(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}
