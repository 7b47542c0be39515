package content

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/go-json-experiment/json"
	"google.golang.org/protobuf/encoding/protojson"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
)

const (
	maxDrafts     = 5
	maxBriefBytes = 2000
	// maxProviderResponse bounds what is read from the provider.
	maxProviderResponse = 1 << 20
)

var (
	// ErrDraftsDisabled is a Preview asking for drafts from a process
	// without a drafting provider.
	ErrDraftsDisabled = errors.New("draft variants need a generative provider: set --content-drafts-url")
	// ErrProvider is a drafting provider that failed or answered nothing
	// usable.
	ErrProvider = errors.New("drafting provider failed")
)

// DraftRequest is what a Drafter is asked to vary.
type DraftRequest struct {
	Channel contentv1.Channel
	Locale  string
	// Source is the Liquid source of the locale's parts.
	Source *contentv1.Content
	Brief  string
	N      int
}

// Drafter writes draft variants of a template's content. It is used by
// Preview only, when a request asks for drafts; never when rendering for
// a send.
type Drafter interface {
	Draft(ctx context.Context, req DraftRequest) ([]*contentv1.Content, error)
}

// DraftsConfig configures the chat-completions drafter; an empty URL
// disables drafts (the default).
type DraftsConfig struct {
	URL     string
	APIKey  string
	Model   string
	Timeout time.Duration
}

// RegisterFlags binds c to fs.
func (c *DraftsConfig) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "content-drafts-url", "", "URL of an OpenAI-compatible chat completions endpoint (…/v1/chat/completions) that drafts template variants in Preview; empty disables drafts")
	fs.StringVar(&c.APIKey, "content-drafts-api-key", "", "bearer key for --content-drafts-url")
	fs.StringVar(&c.Model, "content-drafts-model", "gpt-4o-mini", "model named in draft requests")
	fs.DurationVar(&c.Timeout, "content-drafts-timeout", 20*time.Second, "how long one draft request may take")
}

// Validate reports a setting that cannot work, naming its flag.
func (c DraftsConfig) Validate() error {
	if c.URL == "" {
		return nil
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--content-drafts-url: must be an http(s) URL, got %q", c.URL)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("--content-drafts-timeout: must be positive, got %v", c.Timeout)
	}
	if c.Model == "" {
		return errors.New("--content-drafts-model: required with --content-drafts-url")
	}
	return nil
}

// ChatDrafter drafts variants through an OpenAI-compatible chat
// completions endpoint, asking for n choices that are each a JSON object
// of the parts.
type ChatDrafter struct {
	cfg    DraftsConfig
	client *http.Client
}

// NewChatDrafter returns a drafter for cfg, or nil when cfg.URL is empty.
func NewChatDrafter(cfg DraftsConfig) *ChatDrafter {
	if cfg.URL == "" {
		return nil
	}
	return &ChatDrafter{cfg: cfg, client: &http.Client{Timeout: cfg.Timeout}}
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type chatRequest struct {
	Model          string            `json:"model"`
	Messages       []chatMessage     `json:"messages"`
	N              int               `json:"n"`
	ResponseFormat map[string]string `json:"response_format"`
}

type chatResponse struct {
	Choices []struct {
		Message chatMessage `json:"message"`
	} `json:"choices"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

const draftSystemPrompt = `You write marketing message templates in Liquid. You get a template's parts as JSON and a brief. ` +
	`Answer with one JSON object with the same keys (subject, html, text, title, body, data as present), each a Liquid template: ` +
	`keep the {{ }} variables that make sense, use no include or capture tags, and write nothing but the JSON object.`

// Draft asks the provider for req.N variants.
func (d *ChatDrafter) Draft(ctx context.Context, req DraftRequest) ([]*contentv1.Content, error) {
	src, err := protojson.Marshal(req.Source)
	if err != nil {
		return nil, err
	}
	body, err := json.Marshal(chatRequest{
		Model: d.cfg.Model,
		N:     req.N,
		Messages: []chatMessage{
			{Role: "system", Content: draftSystemPrompt},
			{Role: "user", Content: fmt.Sprintf("Channel: %s\nLocale: %s\nBrief: %s\nTemplate parts: %s",
				channelLabel(req.Channel), req.Locale, req.Brief, src)},
		},
		ResponseFormat: map[string]string{"type": "json_object"},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProvider, err)
	}
	httpReq.Header.Set("Content-Type", "application/json")
	if d.cfg.APIKey != "" {
		httpReq.Header.Set("Authorization", "Bearer "+d.cfg.APIKey)
	}
	resp, err := d.client.Do(httpReq)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProvider, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxProviderResponse))
	if err != nil {
		return nil, fmt.Errorf("%w: read answer: %v", ErrProvider, err)
	}
	var cr chatResponse
	jsonErr := json.Unmarshal(raw, &cr, json.RejectUnknownMembers(false))
	if resp.StatusCode != http.StatusOK {
		msg := resp.Status
		if jsonErr == nil && cr.Error != nil {
			msg += ": " + cr.Error.Message
		}
		return nil, fmt.Errorf("%w: %s", ErrProvider, msg)
	}
	if jsonErr != nil {
		return nil, fmt.Errorf("%w: answer is not chat completions JSON: %v", ErrProvider, jsonErr)
	}
	var out []*contentv1.Content
	for _, ch := range cr.Choices {
		c := &contentv1.Content{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal([]byte(ch.Message.Content), c); err != nil {
			continue // a choice that is not the JSON object asked for
		}
		out = append(out, c)
	}
	return out, nil
}

// drafts asks the drafter for n variants of the locale's content and keeps
// those that compile as a template of the same channel.
func (r *Renderer) drafts(ctx context.Context, c *compiled, locale, brief string, n int) ([]*contentv1.Content, error) {
	if r.drafter == nil {
		return nil, ErrDraftsDisabled
	}
	src := c.tmpl.GetLocales()[locale]
	got, err := r.drafter.Draft(ctx, DraftRequest{Channel: c.tmpl.GetChannel(), Locale: locale, Source: src, Brief: brief, N: n})
	if err != nil {
		return nil, err
	}
	var out []*contentv1.Content
	for _, d := range got {
		t := &contentv1.Template{
			Name: "draft", Channel: c.tmpl.GetChannel(), DefaultLocale: locale,
			Locales: map[string]*contentv1.Content{locale: d},
		}
		if _, err := r.engine.compileTemplate(t); err != nil {
			r.logger.InfoContext(ctx, "dropped a draft that does not compile", "err", err)
			continue
		}
		out = append(out, d)
		if len(out) == n {
			break
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no usable draft among %d answers", ErrProvider, len(got))
	}
	return out, nil
}
