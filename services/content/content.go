// Package content stores message templates in versions and renders them
// for a user: the content target behind ContentService, and the in-process
// Renderer the deliver target calls.
//
// # Templates
//
// A template is Liquid (github.com/osteele/liquid) per part of its channel
// (email: subject, html, text; sms: text; push: title, body, data; webhook:
// a JSON body; in_app: title, body), in one variant per locale. Every
// update stores a new immutable version; a render names a version or takes
// the latest. The variant for locale "pt-BR" is "pt-BR", else "pt", else
// the template's default locale; an empty request locale uses the
// profile's "locale" trait when it is a string.
//
// # Scope
//
//	profile   the user's profile: user_id, profile_id, anonymous_ids, traits,
//	          stage, engagement_score, churn_risk, event_counts,
//	          last_event_times, rolling_counts (name -> last_1d/7d/28d),
//	          first_seen_time, last_seen_time, stage_time, update_time
//	user      profile.traits, for short: {{ user.first_name }}
//	event     the trigger event's properties
//	campaign  id, name
//	locale    the variant rendered, e.g. "pt-BR"
//
// Variables are optional by default: a missing one renders empty, and the
// default filter gives it a value ({{ user.first_name | default: "there" }}).
// A template lists the variables it cannot do without in required
// ("profile.traits.first_name"); rendering without one fails with a
// *TemplateError naming it (InvalidArgument at the API), positioned at its
// first use. Liquid's own strict mode is not used: it fails on every
// missing variable, which makes default unusable.
//
// # Escaping
//
// In the html part every {{ output }} is HTML-escaped unless its filter
// chain includes raw ({{ profile.traits.bio | raw }}), or escape or
// escape_once (escaped already: not twice). The compiler does it
// by appending a reserved escape filter to each output (osteele/liquid
// v1.6.0 has no autoescape of its own). Other parts are plain text and are
// not escaped (in_app title and body included: clients must show them as
// text); the json filter JSON-encodes a value for webhook bodies, whose
// rendered body must be valid JSON. Escaping is for HTML text and quoted
// attributes: a URL taken from data still needs checking by the author
// (a "javascript:" href is not escaped away).
//
// # Sandbox
//
// Rendering touches no file and no network: the include tag is refused at
// compile time (and its renderer is replaced by one that fails). capture is
// refused too: it renders into a buffer the limits cannot see; assign with
// append does the same job under the limits. Every part's output is capped
// at MaxOutputBytes, and so is every string a template assigns, replaces or
// joins; one render (all parts) has RenderBudget of time, checked by a
// guard the compiler inserts in every loop body (which also caps the
// iterations) and by the output writer. A render over a budget fails with
// an error wrapping ErrBudget (ResourceExhausted at the API) as soon as it
// is noticed, in the caller's goroutine: nothing is left running.
//
// # Errors
//
// A part that does not compile or fails to render is a *TemplateError with
// the part ("pt-BR/html"), line and column (1-based, bytes) in the author's
// source; a bad definition is a *FieldError naming the request field.
//
// # Caching
//
// Versions are immutable, so compiled templates are cached by (workspace,
// template id, version) for the life of the process, up to a bounded
// number of entries.
package content

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	contentv1 "github.com/whisperhq/whisper/internal/gen/whisper/content/v1"
	profilev1 "github.com/whisperhq/whisper/internal/gen/whisper/profile/v1"
	"github.com/whisperhq/whisper/internal/postgres"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migrations is the schema of the content target.
var Migrations = postgres.Migrations{Name: "content", FS: mustSub(migrationFiles, "migrations")}

func mustSub(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// ErrProfileNotFound is a render for a user id that has no profile.
var ErrProfileNotFound = errors.New("no profile has this user id")

// ProfileSource reads a user's profile; the target wires it to the
// profiles store. It returns ErrProfileNotFound for an unknown user.
type ProfileSource interface {
	Profile(ctx context.Context, workspaceID, userID string) (*profilev1.Profile, error)
}

// Options configure a Renderer.
type Options struct {
	Store    *Store
	Profiles ProfileSource
	// Drafter writes draft variants for Preview; nil disables drafts.
	Drafter    Drafter
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// CacheSize bounds the compiled templates kept; 4096 when zero.
	CacheSize int
}

// Renderer renders stored and unsaved templates. It is safe for
// concurrent use.
type Renderer struct {
	store    *Store
	profiles ProfileSource
	drafter  Drafter
	engine   *engine
	metrics  *metrics
	logger   *slog.Logger

	mu        sync.Mutex
	cache     map[cacheKey]*compiled
	cacheSize int
}

type cacheKey struct {
	workspace, template string
	version             int32
}

// New returns a Renderer.
func New(o Options) *Renderer {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 4096
	}
	return &Renderer{
		store: o.Store, profiles: o.Profiles, drafter: o.Drafter, engine: newEngine(),
		metrics: newMetrics(o.Registerer), logger: o.Logger,
		cache: map[cacheKey]*compiled{}, cacheSize: o.CacheSize,
	}
}

// Check compiles t without storing it: the validation of CreateTemplate.
func (r *Renderer) Check(t *contentv1.Template) error {
	_, err := r.engine.compileTemplate(t)
	return err
}

// Render renders the stored template req names for req's user, exactly as
// ContentService.Render does but without authentication: req.WorkspaceId
// is required and trusted. Errors: *FieldError (bad request),
// *TemplateError, ErrNotFound, ErrProfileNotFound, or one wrapping
// ErrBudget.
func (r *Renderer) Render(ctx context.Context, req *contentv1.RenderRequest) (*contentv1.Message, error) {
	start := time.Now()
	msg, ch, err := r.render(ctx, req)
	r.metrics.observe(ch, err, time.Since(start))
	return msg, err
}

func (r *Renderer) render(ctx context.Context, req *contentv1.RenderRequest) (*contentv1.Message, contentv1.Channel, error) {
	if req.GetTemplateId() == "" {
		return nil, 0, &FieldError{"template_id", "required"}
	}
	if req.GetVersion() < 0 {
		return nil, 0, &FieldError{"version", "must not be negative"}
	}
	c, err := r.compiled(ctx, req.GetWorkspaceId(), req.GetTemplateId(), req.GetVersion())
	if err != nil {
		return nil, 0, err
	}
	ch := c.tmpl.GetChannel()
	p, err := r.profile(ctx, req.GetWorkspaceId(), req.GetUserId(), req.GetProfile(), req.GetUser() != nil)
	if err != nil {
		return nil, ch, err
	}
	msg, err := r.renderCompiled(ctx, c, p, req.GetEventProperties(), req.GetCampaign(), req.GetLocale())
	return msg, ch, err
}

// Preview renders an unsaved template, and asks the drafter for variants
// when req asks for them.
func (r *Renderer) Preview(ctx context.Context, req *contentv1.PreviewRequest) (*contentv1.PreviewResponse, error) {
	start := time.Now()
	resp, err := r.preview(ctx, req)
	r.metrics.observe(req.GetTemplate().GetChannel(), err, time.Since(start))
	return resp, err
}

func (r *Renderer) preview(ctx context.Context, req *contentv1.PreviewRequest) (*contentv1.PreviewResponse, error) {
	if req.GetTemplate() == nil {
		return nil, &FieldError{"template", "required"}
	}
	if n := req.GetDraftVariants(); n < 0 || n > maxDrafts {
		return nil, &FieldError{"draft_variants", "must be 0-5"}
	}
	if req.GetDraftVariants() > 0 && (req.GetBrief() == "" || len(req.GetBrief()) > maxBriefBytes) {
		return nil, &FieldError{"brief", "must be 1-2000 bytes with draft_variants"}
	}
	t := proto.CloneOf(req.GetTemplate())
	t.WorkspaceId, t.TemplateId, t.Version, t.CreateTime = req.GetWorkspaceId(), "", 0, nil
	c, err := r.engine.compileTemplate(t)
	if err != nil {
		return nil, err
	}
	p, err := r.profile(ctx, req.GetWorkspaceId(), req.GetUserId(), req.GetProfile(), req.GetUser() != nil)
	if err != nil {
		return nil, err
	}
	msg, err := r.renderCompiled(ctx, c, p, req.GetEventProperties(), req.GetCampaign(), req.GetLocale())
	if err != nil {
		return nil, err
	}
	resp := &contentv1.PreviewResponse{Message: msg}
	if req.GetDraftVariants() > 0 {
		if resp.Drafts, err = r.drafts(ctx, c, msg.GetLocale(), req.GetBrief(), int(req.GetDraftVariants())); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

func (r *Renderer) renderCompiled(ctx context.Context, c *compiled, p *profilev1.Profile, event *structpb.Struct, camp *contentv1.Campaign, locale string) (*contentv1.Message, error) {
	if locale == "" {
		if l, ok := p.GetTraits().GetFields()["locale"].GetKind().(*structpb.Value_StringValue); ok {
			locale = l.StringValue
		}
	}
	return c.render(ctx, locale, scope(p, event, camp, locale))
}

// profile returns the inline profile, or reads the user's.
func (r *Renderer) profile(ctx context.Context, ws, userID string, inline *profilev1.Profile, set bool) (*profilev1.Profile, error) {
	switch {
	case !set:
		return nil, &FieldError{"user", "set user_id or profile"}
	case inline != nil:
		return inline, nil
	case userID == "" || len(userID) > 512:
		return nil, &FieldError{"user_id", "must be 1-512 bytes"}
	case r.profiles == nil:
		return nil, fmt.Errorf("read profile: %w", errNoProfiles)
	}
	p, err := r.profiles.Profile(ctx, ws, userID)
	if err != nil {
		return nil, fmt.Errorf("read profile of %q: %w", userID, err)
	}
	return p, nil
}

var errNoProfiles = errors.New("this renderer has no profile source")

// compiled returns a stored version, compiled, from the cache or the store.
func (r *Renderer) compiled(ctx context.Context, ws, id string, version int32) (*compiled, error) {
	if version > 0 {
		r.mu.Lock()
		c, ok := r.cache[cacheKey{ws, id, version}]
		r.mu.Unlock()
		if ok {
			r.metrics.cacheHits.Inc()
			return c, nil
		}
	}
	// Latest: the store answers which version that is (a cheap indexed
	// read), then the cache serves its compiled form.
	if version == 0 {
		v, err := r.store.latestVersion(ctx, ws, id)
		if err != nil {
			return nil, err
		}
		return r.compiled(ctx, ws, id, v)
	}
	t, err := r.store.get(ctx, ws, id, version)
	if err != nil {
		return nil, err
	}
	c, err := r.engine.compileTemplate(t)
	if err != nil {
		// Stored versions were checked on write; this is a bug or a
		// change in the engine.
		return nil, fmt.Errorf("compile stored template %s v%d: %w", id, version, err)
	}
	r.metrics.cacheMisses.Inc()
	r.mu.Lock()
	if len(r.cache) >= r.cacheSize {
		// Random eviction (map order): versions are immutable, so a
		// dropped entry costs only a recompile.
		for k := range r.cache {
			delete(r.cache, k)
			if len(r.cache) < r.cacheSize*3/4 {
				break
			}
		}
	}
	r.cache[cacheKey{ws, id, version}] = c
	r.mu.Unlock()
	return c, nil
}
