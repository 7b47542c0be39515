package content

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

const (
	maxNameBytes = 200
	maxLocales   = 50
	maxDataKeys  = 50
	maxRequired  = 50
)

// FieldError is a template definition that is not valid: Field names the
// request field (e.g. "template.locales[en].html").
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

var (
	localeRE   = regexp.MustCompile(`^[A-Za-z]{2,8}([-_][A-Za-z0-9]{1,8})*$`)
	requiredRE = regexp.MustCompile(`^(profile|event|campaign|user|locale)(\.[^.\s]+)*$`)
)

// roots lists the variables in scope, for the required paths check.
var channelParts = map[contentv1.Channel][]string{
	contentv1.Channel_CHANNEL_EMAIL:   {"subject", "html", "text"},
	contentv1.Channel_CHANNEL_SMS:     {"text"},
	contentv1.Channel_CHANNEL_PUSH:    {"title", "body", "data"},
	contentv1.Channel_CHANNEL_WEBHOOK: {"body", "url"},
	contentv1.Channel_CHANNEL_IN_APP:  {"title", "body"},
}

// compiled is a template ready to render: every part of every locale
// compiled once. It is immutable, so the cache shares it between renders.
type compiled struct {
	tmpl    *contentv1.Template
	locales map[string]*compiledLocale
}

type compiledLocale struct {
	key   string // the locale key as the template spells it
	parts []*part
	// order of data keys, for a deterministic render
	dataKeys []string
}

// compileTemplate checks t's definition (field prefix "template") and
// compiles every part. Definition problems are *FieldError, Liquid errors
// *TemplateError.
func (e *engine) compileTemplate(t *contentv1.Template) (*compiled, error) {
	if n := len(t.GetName()); n == 0 || n > maxNameBytes {
		return nil, &FieldError{"template.name", "must be 1-200 bytes"}
	}
	allowed, ok := channelParts[t.GetChannel()]
	if !ok {
		return nil, &FieldError{"template.channel", "must be a known channel other than CHANNEL_UNSPECIFIED"}
	}
	if n := len(t.GetLocales()); n == 0 || n > maxLocales {
		return nil, &FieldError{"template.locales", "must hold 1-50 locale variants"}
	}
	if _, ok := t.GetLocales()[t.GetDefaultLocale()]; !ok {
		return nil, &FieldError{"template.default_locale", "must be a key of locales"}
	}
	if len(t.GetRequired()) > maxRequired {
		return nil, &FieldError{"template.required", "at most 50 variables"}
	}
	for i, r := range t.GetRequired() {
		if !requiredRE.MatchString(r) {
			return nil, &FieldError{fmt.Sprintf("template.required[%d]", i), "must be a dotted path under profile, event, campaign, user or locale"}
		}
	}
	c := &compiled{tmpl: t, locales: make(map[string]*compiledLocale, len(t.GetLocales()))}
	seen := map[string]string{}
	for key, content := range t.GetLocales() {
		field := "template.locales[" + key + "]"
		if !localeRE.MatchString(key) {
			return nil, &FieldError{field, "not a locale tag such as en or pt-BR"}
		}
		norm := normLocale(key)
		if other, dup := seen[norm]; dup {
			return nil, &FieldError{field, "same locale as " + other}
		}
		seen[norm] = key
		cl := &compiledLocale{key: key}
		parts := map[string]string{
			"subject": content.GetSubject(), "html": content.GetHtml(), "text": content.GetText(),
			"title": content.GetTitle(), "body": content.GetBody(), "url": content.GetUrl(),
		}
		for _, name := range []string{"subject", "html", "text", "title", "body", "url"} {
			src := parts[name]
			if src == "" {
				continue
			}
			if !slices.Contains(allowed, name) {
				return nil, &FieldError{field + "." + name, "not a part of " + t.GetChannel().String()}
			}
			p, err := e.compile(key+"/"+name, src, name == "html")
			if err != nil {
				return nil, err
			}
			cl.parts = append(cl.parts, p)
		}
		if len(content.GetData()) > 0 && !slices.Contains(allowed, "data") {
			return nil, &FieldError{field + ".data", "not a part of " + t.GetChannel().String()}
		}
		if len(content.GetData()) > maxDataKeys {
			return nil, &FieldError{field + ".data", "at most 50 keys"}
		}
		for k, src := range content.GetData() {
			p, err := e.compile(key+"/data."+k, src, false)
			if err != nil {
				return nil, err
			}
			cl.parts = append(cl.parts, p)
			cl.dataKeys = append(cl.dataKeys, k)
		}
		switch t.GetChannel() {
		case contentv1.Channel_CHANNEL_EMAIL:
			if content.GetHtml() == "" && content.GetText() == "" {
				return nil, &FieldError{field, "an email needs html or text"}
			}
		case contentv1.Channel_CHANNEL_SMS:
			if content.GetText() == "" {
				return nil, &FieldError{field + ".text", "required for CHANNEL_SMS"}
			}
		case contentv1.Channel_CHANNEL_WEBHOOK:
			if content.GetBody() == "" {
				return nil, &FieldError{field + ".body", "required for CHANNEL_WEBHOOK"}
			}
		case contentv1.Channel_CHANNEL_PUSH, contentv1.Channel_CHANNEL_IN_APP:
			if content.GetBody() == "" && content.GetTitle() == "" {
				return nil, &FieldError{field, "needs a title or a body"}
			}
		}
		c.locales[norm] = cl
	}
	return c, nil
}

func normLocale(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "-")) }

// pick chooses the variant for locale: exact, then its language, then the
// template's default.
func (c *compiled) pick(locale string) *compiledLocale {
	if locale != "" {
		norm := normLocale(locale)
		if cl, ok := c.locales[norm]; ok {
			return cl
		}
		if lang, _, ok := strings.Cut(norm, "-"); ok {
			if cl, ok := c.locales[lang]; ok {
				return cl
			}
		}
	}
	return c.locales[normLocale(c.tmpl.GetDefaultLocale())]
}

// render renders the variant for locale with the given variables (see
// scope). A missing required variable is a *TemplateError naming it.
func (c *compiled) render(ctx context.Context, locale string, vars map[string]any) (*contentv1.Message, error) {
	cl := c.pick(locale)
	vars["locale"] = cl.key
	for _, r := range c.tmpl.GetRequired() {
		if _, ok := lookup(vars, r); !ok {
			return nil, cl.missing(r)
		}
	}
	b := &budget{ctx: ctx, deadline: time.Now().Add(RenderBudget)}
	if dl, ok := ctx.Deadline(); ok && dl.Before(b.deadline) {
		b.deadline = dl
	}
	vars[budgetKey] = b
	out := &contentv1.Content{}
	for i, p := range cl.parts {
		if err := b.check(); err != nil {
			return nil, err
		}
		s, err := p.render(vars, b)
		if err != nil {
			return nil, err
		}
		name := p.name[len(cl.key)+1:]
		switch name {
		case "subject":
			out.Subject = s
		case "html":
			out.Html = s
		case "text":
			out.Text = s
		case "title":
			out.Title = s
		case "url":
			out.Url = s
		case "body":
			out.Body = s
			if c.tmpl.GetChannel() == contentv1.Channel_CHANNEL_WEBHOOK && !json.Valid([]byte(s)) {
				return nil, &TemplateError{Part: p.name, Message: "the rendered webhook body is not valid JSON (insert values with the json filter)"}
			}
		default:
			if out.Data == nil {
				out.Data = make(map[string]string, len(cl.dataKeys))
			}
			out.Data[cl.dataKeys[i-(len(cl.parts)-len(cl.dataKeys))]] = s
		}
	}
	return &contentv1.Message{
		TemplateId: c.tmpl.GetTemplateId(),
		Version:    c.tmpl.GetVersion(),
		Channel:    c.tmpl.GetChannel(),
		Locale:     cl.key,
		Content:    out,
	}, nil
}

// missing is the error for a required variable without a value: it points
// at the variable's first use in the variant, if it is used.
func (cl *compiledLocale) missing(path string) error {
	te := &TemplateError{Part: cl.key, Variable: path, Message: "required variable " + path + " has no value"}
	for _, p := range cl.parts {
		for _, l := range p.exprs {
			if strings.Contains(l.compiled, path) {
				te.Part, te.Line, te.Column = p.name, l.line, l.column
				return te
			}
		}
	}
	return te
}
