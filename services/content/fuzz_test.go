package content

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
)

// FuzzRender compiles and renders arbitrary sources as an HTML part and a
// text part: neither may panic, every failure must be one of the
// package's errors, output stays within MaxOutputBytes and a render within
// a bounded time. The seed corpus is in testdata/fuzz/FuzzRender.
func FuzzRender(f *testing.F) {
	for _, s := range []string{
		"Hi {{ user.first_name | default: 'there' }}",
		"{% for i in (1..3) %}{{ i }}{% endfor %}",
		"{% if profile.stage == 'engaged' %}{{ profile.engagement_score }}{% else %}x{% endif %}",
		"{{ user.bio | raw }}{% raw %}{{ x }}{% endraw %}",
		"{% assign s = 'ab' %}{% for i in (1..30) %}{% assign s = s | append: s %}{% endfor %}",
		"{% include 'x' %}{% capture c %}y{% endcapture %}",
		"{{ event | json }} {{ profile.traits | json }}",
		"{%- for i in (1..2) -%} {{ i }} {%- endfor -%}",
		"{% tablerow i in (1..4) cols:2 %}{{ i }}{% endtablerow %}",
		"{{ 'a' | replace: 'a', 'bb' | split: 'b' | join: '-' }}",
	} {
		f.Add(s)
	}
	traits, _ := structpb.NewStruct(map[string]any{"first_name": "Ann", "bio": "<b>x</b>"})
	event, _ := structpb.NewStruct(map[string]any{"plan": "pro", "n": 3})
	p := &profilev1.Profile{UserId: "u", Traits: traits, Stage: "engaged", EventCounts: map[string]int64{"A": 1}}
	e := newEngine()
	f.Fuzz(func(t *testing.T, src string) {
		tmpl := &contentv1.Template{Name: "f", Channel: contentv1.Channel_CHANNEL_EMAIL, DefaultLocale: "en",
			Locales: map[string]*contentv1.Content{"en": {Html: src, Text: src}}}
		c, err := e.compileTemplate(tmpl)
		if err != nil {
			var te *TemplateError
			var fe *FieldError
			if !errors.As(err, &te) && !errors.As(err, &fe) {
				t.Fatalf("compile error of type %T: %v", err, err)
			}
			return
		}
		start := time.Now()
		msg, err := c.render(context.Background(), "en", scope(p, event, nil, "en"))
		if took := time.Since(start); took > RenderBudget+time.Second {
			t.Fatalf("render took %v", took)
		}
		if err != nil {
			var te *TemplateError
			if !errors.As(err, &te) && !errors.Is(err, ErrBudget) {
				t.Fatalf("render error of type %T: %v", err, err)
			}
			return
		}
		if n := len(msg.GetContent().GetHtml()); n > MaxOutputBytes {
			t.Fatalf("html output %d bytes", n)
		}
		if n := len(msg.GetContent().GetText()); n > MaxOutputBytes {
			t.Fatalf("text output %d bytes", n)
		}
	})
}
