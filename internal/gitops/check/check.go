// Package check runs every gate of `platformctl check` over one or more
// environments: render, strict decode, CRD schemas, OPA policies, app-of-apps
// integrity, then any extra gates, and finally waivers and --select. It is
// the one place that knows the order of the gates; each gate lives in its
// own package.
package check

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/whisperhq/whisper/internal/gitops/appofapps"
	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
	"github.com/whisperhq/whisper/internal/gitops/policy"
	"github.com/whisperhq/whisper/internal/gitops/render"
	"github.com/whisperhq/whisper/internal/gitops/report"
	"github.com/whisperhq/whisper/internal/gitops/waiver"
)

// Environments are the environments checked when none is named.
func Environments() []string { return []string{"dev", "staging", "production"} }

// Policy names of the built-in gates, as they appear in findings.
const (
	PolicyRender = "platformctl.render"
	PolicyDecode = "platformctl.decode"
	PolicySchema = "platformctl.schema"
)

// Env is what a gate sees of one environment.
type Env struct {
	Name string
	// Root is the repository root.
	Root string
	// Rendered are the kustomize-rendered documents of environments/<Name>.
	Rendered []manifest.Document
	// GitOps are the Argo CD documents of the environment (root app,
	// projects, child apps).
	GitOps []manifest.Document
}

// Gate is one more check over an environment. The observability contract
// gate (dashboards and alerts present for every workload) plugs in here:
// implement Gate and pass it in Options.Gates; nothing else changes.
type Gate interface {
	// Name is the policy name the gate reports findings under.
	Name() string
	Check(ctx context.Context, env Env) ([]finding.Finding, error)
}

// SchemaValidator validates kinds that have no Go type (operator custom
// resources) against their OpenAPI schema.
type SchemaValidator interface {
	// Knows reports whether a schema exists for apiVersion/kind.
	Knows(apiVersion, kind string) bool
	// Validate returns one error per schema violation.
	Validate(doc manifest.Document) []error
}

// Options configure a Checker.
type Options struct {
	// Root is the repository root.
	Root string
	// PoliciesDir is the Rego folder, default <Root>/policies.
	PoliciesDir string
	// WaiversFile is the waivers file, default <PoliciesDir>/waivers.yaml;
	// a missing file means no waivers.
	WaiversFile string
	// Schemas validates custom resources; nil means every custom resource
	// without a Go type is reported as unvalidated.
	Schemas SchemaValidator
	// Gates run after the built-in gates.
	Gates []Gate
	// Now dates waiver expiry; zero means time.Now.
	Now time.Time
}

// Checker holds what is expensive to build (compiled policies, type scheme)
// so that it is built once for all environments.
type Checker struct {
	opts    Options
	engine  *policy.Engine
	decoder *manifest.Decoder
	waivers waiver.Set
	// waiverFile is set when a waivers file exists; its problems are
	// reported once per run, not once per environment.
	waiverFile string
}

// New loads policies and waivers. A broken policy or an unreadable waiver
// file is an error (exit 2), not a finding: nothing can be trusted then.
func New(ctx context.Context, opts Options) (*Checker, error) {
	if opts.PoliciesDir == "" {
		opts.PoliciesDir = filepath.Join(opts.Root, "policies")
	}
	if opts.WaiversFile == "" {
		opts.WaiversFile = filepath.Join(opts.PoliciesDir, "waivers.yaml")
	}
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	c := &Checker{opts: opts}
	var (
		wg             sync.WaitGroup
		engErr, decErr error
	)
	wg.Add(2)
	go func() { defer wg.Done(); c.engine, engErr = policy.Load(ctx, opts.PoliciesDir) }()
	go func() { defer wg.Done(); c.decoder, decErr = manifest.NewDecoder() }()
	wg.Wait()
	if err := errors.Join(engErr, decErr); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(opts.WaiversFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read waivers: %w", err)
	default:
		name := opts.WaiversFile
		if rel, err := filepath.Rel(opts.Root, name); err == nil {
			name = filepath.ToSlash(rel)
		}
		c.waiverFile = name
		c.waivers, err = waiver.Parse(name, data, opts.Now)
		if err != nil {
			return nil, fmt.Errorf("parse waivers: %w", err)
		}
	}
	return c, nil
}

// Engine exposes the compiled policies (policy check and diff reuse them).
func (c *Checker) Engine() *policy.Engine { return c.engine }

// Waivers exposes the parsed waivers.
func (c *Checker) Waivers() waiver.Set { return c.waivers }

// Result is the outcome of a check run.
type Result struct {
	Findings []finding.Finding
	Files    map[string]bool
	Docs     int
}

// Report converts the result for a report writer.
func (r Result) Report(policies []string) report.Report {
	return report.Report{Findings: r.Findings, Files: len(r.Files), Documents: r.Docs, Policies: policies}
}

// Policies lists every policy name a check reports under, for formats that
// list passing suites.
func (c *Checker) Policies() []string {
	out := []string{PolicyRender, PolicyDecode, PolicySchema, appofapps.Policy}
	out = append(out, c.engine.Packages()...)
	for _, g := range c.opts.Gates {
		out = append(out, g.Name())
	}
	if c.waiverFile != "" {
		out = append(out, waiver.Policy)
	}
	return out
}

// renderCache renders each folder once per run: child Applications often
// point at the environment folder itself.
type renderCache struct {
	root string
	mu   sync.Mutex
	m    map[string]*renderEntry
}

type renderEntry struct {
	once sync.Once
	res  render.Result
	err  error
}

func (rc *renderCache) get(dir string) (render.Result, error) {
	dir = filepath.Clean(dir)
	rc.mu.Lock()
	e, ok := rc.m[dir]
	if !ok {
		e = &renderEntry{}
		rc.m[dir] = e
	}
	rc.mu.Unlock()
	e.once.Do(func() { e.res, e.err = render.Render(rc.root, dir) })
	return e.res, e.err
}

// Run checks the environments and returns the selected findings, waivers
// applied.
func (c *Checker) Run(ctx context.Context, envs []string, sel finding.Selector) (Result, error) {
	res := Result{Files: map[string]bool{}}
	cache := &renderCache{root: c.opts.Root, m: map[string]*renderEntry{}}
	aoa := &appofapps.Checker{Root: c.opts.Root, Layout: appofapps.DefaultLayout(), Render: func(dir string) ([]manifest.Document, error) {
		r, err := cache.get(dir)
		return r.Docs, err
	}}

	// Rendering is independent per environment and dominated by kustomize:
	// do it concurrently, evaluate afterwards.
	var wg sync.WaitGroup
	for _, env := range envs {
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = cache.get(render.Dir(env)) }()
	}
	wg.Wait()

	var all []finding.Finding
	var reached []appofapps.Reach
	for _, env := range envs {
		fs, r, err := c.runEnv(ctx, env, cache, aoa, sel)
		if err != nil {
			return Result{}, err
		}
		all = append(all, fs...)
		reached = append(reached, r.reached...)
		res.Docs += r.docs
		for f := range r.files {
			res.Files[f] = true
		}
	}
	// Orphans only make sense against every environment's roots.
	if sameSet(envs, Environments()) {
		orphans, err := aoa.Orphans(reached)
		if err != nil {
			return Result{}, fmt.Errorf("app-of-apps: %w", err)
		}
		all = append(all, orphans...)
	}
	all = append(all, c.waivers.Problems...)
	c.waivers.Apply(all)
	res.Findings = sel.Filter(all)
	finding.Sort(res.Findings)
	return res, nil
}

func sameSet(a, b []string) bool {
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

type envStats struct {
	docs    int
	files   map[string]bool
	reached []appofapps.Reach
}

func (c *Checker) runEnv(ctx context.Context, env string, cache *renderCache, aoa *appofapps.Checker, sel finding.Selector) ([]finding.Finding, envStats, error) {
	st := envStats{files: map[string]bool{}}
	var out []finding.Finding
	rendered, err := cache.get(render.Dir(env))
	if err != nil {
		out = append(out, finding.Finding{
			Env: env, File: filepath.ToSlash(render.Dir(env)), Line: 1,
			Policy: PolicyRender, Rule: "kustomize", Level: finding.Deny, Message: err.Error(),
		})
	}
	tree, aoaFindings, err := aoa.Env(env)
	if err != nil {
		return nil, st, fmt.Errorf("app-of-apps %s: %w", env, err)
	}
	out = append(out, aoaFindings...)
	tree.Children = dedupe(tree.Children)
	st.reached = tree.Reached

	docs := append(append([]manifest.Document(nil), rendered.Docs...), tree.Docs()...)
	for _, d := range docs {
		st.files[d.File] = true
	}
	st.docs = len(docs)
	out = append(out, c.Decode(env, docs)...)

	pf, err := c.engine.Evaluate(ctx, docs, policy.Options{Env: env, Select: sel})
	if err != nil {
		return nil, st, fmt.Errorf("policies %s: %w", env, err)
	}
	out = append(out, pf...)

	e := Env{Name: env, Root: c.opts.Root, Rendered: rendered.Docs, GitOps: tree.Docs()}
	for _, g := range c.opts.Gates {
		gf, err := g.Check(ctx, e)
		if err != nil {
			return nil, st, fmt.Errorf("gate %s on %s: %w", g.Name(), env, err)
		}
		out = append(out, gf...)
	}
	return out, st, nil
}

// dedupe drops documents read twice (two roots may reach one folder).
func dedupe(docs []manifest.Document) []manifest.Document {
	seen := map[string]bool{}
	out := docs[:0:0]
	for _, d := range docs {
		if seen[d.Position()] {
			continue
		}
		seen[d.Position()] = true
		out = append(out, d)
	}
	return out
}

// Decode strictly decodes every document into its Go type, or validates it
// against a CRD schema, and warns about kinds nothing can validate.
func (c *Checker) Decode(env string, docs []manifest.Document) []finding.Finding {
	fs := DecodeWith(c.decoder, c.opts.Schemas, env, docs)
	pointAtFields(c.opts.Root, fs)
	return fs
}

// pointAtFields moves the line of findings that name one field from the top
// of the object to the field itself, when the field is in the source file.
func pointAtFields(root string, fs []finding.Finding) {
	sources := map[string][]byte{}
	for i, f := range fs {
		path, ok := manifest.ErrorFieldPath(f.Message)
		if !ok || f.File == "" {
			continue
		}
		src, seen := sources[f.File]
		if !seen {
			src, _ = os.ReadFile(filepath.Join(root, filepath.FromSlash(f.File)))
			sources[f.File] = src
		}
		if line, ok := manifest.FieldLine(src, f.Index, path); ok {
			fs[i].Line = line
		}
	}
}

// DecodeWith is Decode for callers without a Checker.
func DecodeWith(dec *manifest.Decoder, schemas SchemaValidator, env string, docs []manifest.Document) []finding.Finding {
	var out []finding.Finding
	add := func(d manifest.Document, policy, rule string, level finding.Level, msg string) {
		out = append(out, finding.About(d, finding.Finding{Env: env, Policy: policy, Rule: rule, Level: level, Message: msg}))
	}
	for _, d := range docs {
		switch {
		case d.APIVersion() == "" || d.Kind() == "":
			add(d, PolicyDecode, "strict", finding.Deny, fmt.Sprintf("%s: apiVersion and kind are required", d.Position()))
		case dec.Knows(d.APIVersion(), d.Kind()):
			if err := dec.Decode(d); err != nil {
				add(d, PolicyDecode, "strict", finding.Deny, fmt.Sprintf("%s: %v", d.Position(), err))
			}
		case schemas != nil && schemas.Knows(d.APIVersion(), d.Kind()):
			errs := schemas.Validate(d)
			msgs := make([]string, 0, len(errs))
			for _, e := range errs {
				msgs = append(msgs, e.Error())
			}
			sort.Strings(msgs)
			for _, m := range msgs {
				add(d, PolicySchema, "openapi", finding.Deny, fmt.Sprintf("%s: %s %s: %s", d.Position(), d.APIVersion(), d.Kind(), m))
			}
		default:
			add(d, PolicyDecode, "unknown-kind", finding.Warn,
				fmt.Sprintf("%s: no Go type or CRD schema for %s %s: not validated", d.Position(), d.APIVersion(), d.Kind()))
		}
	}
	return out
}
