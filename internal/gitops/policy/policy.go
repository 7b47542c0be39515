// Package policy evaluates the repository's Rego policies on Kubernetes
// documents. The policies are compiled once and every package is evaluated
// on a document by one prepared query, with the whole environment available
// as a gatekeeper-style inventory, because compile time dominates otherwise.
package policy

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

// resultRules are the rule names read from each package, with the level a
// message in them is reported at.
var resultRules = []struct {
	name  string
	level finding.Level
}{
	{"deny", finding.Deny},
	{"violation", finding.Deny},
	{"warn", finding.Warn},
}

type pkg struct {
	name  string // e.g. kubernetes.rbac
	rules []string
}

// output is one variable of a prepared query: the result set of one rule
// of one package.
type output struct {
	pkg   string
	rule  string
	level finding.Level
}

// query evaluates every result rule of a set of packages at once, so that
// what packages share (kubernetes.lib's helpers, the baseline rules that
// restricted re-exports, data.inventory lookups) is computed once per
// document rather than once per package.
type query struct {
	prepared rego.PreparedEvalQuery
	outputs  []output
}

// Engine holds the compiled policies. Evaluate may be called from several
// goroutines; evaluations are serialised because the inventory lives in the
// one store the queries were prepared against.
type Engine struct {
	mu       sync.Mutex
	compiler *ast.Compiler
	store    storage.Store
	packages []*pkg
	// queries are prepared per selection of packages (the key joins their
	// names), the full set at load time and others on first use.
	queries map[string]*query
	workers int
}

// Load compiles every non-test .rego file below dir.
func Load(ctx context.Context, dir string) (*Engine, error) {
	modules := map[string]*ast.Module{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".rego") || strings.HasSuffix(path, "_test.rego") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(path, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return err
		}
		modules[path] = m
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load policies from %s: %w", dir, err)
	}
	return compile(ctx, modules)
}

// LoadModules compiles policies given as source text, keyed by file name.
func LoadModules(ctx context.Context, sources map[string]string) (*Engine, error) {
	modules := map[string]*ast.Module{}
	for name, src := range sources {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", name, err)
		}
		modules[name] = m
	}
	return compile(ctx, modules)
}

func compile(ctx context.Context, modules map[string]*ast.Module) (*Engine, error) {
	compiler := ast.NewCompiler()
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("compile policies: %w", compiler.Errors)
	}
	rulesByPkg := map[string]map[string]bool{}
	for _, m := range modules {
		name := strings.TrimPrefix(m.Package.Path.String(), "data.")
		if rulesByPkg[name] == nil {
			rulesByPkg[name] = map[string]bool{}
		}
		for _, r := range m.Rules {
			if len(r.Head.Args) > 0 {
				continue // a helper function, not a result set
			}
			rulesByPkg[name][r.Head.Name.String()] = true
			if len(r.Head.Reference) > 0 {
				rulesByPkg[name][r.Head.Reference[0].String()] = true
			}
		}
	}
	store := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
	if err := storage.WriteOne(ctx, store, storage.AddOp, storage.Path{"inventory"}, map[string]any{}); err != nil {
		return nil, fmt.Errorf("init store: %w", err)
	}
	e := &Engine{compiler: compiler, store: store, queries: map[string]*query{}, workers: runtime.GOMAXPROCS(0)}
	names := make([]string, 0, len(rulesByPkg))
	for n := range rulesByPkg {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		p := &pkg{name: name}
		for _, rr := range resultRules {
			if rulesByPkg[name][rr.name] {
				p.rules = append(p.rules, rr.name)
			}
		}
		if len(p.rules) == 0 {
			continue // a library package: only imported by others
		}
		e.packages = append(e.packages, p)
	}
	if _, err := e.query(ctx, e.packages); err != nil {
		return nil, err
	}
	return e, nil
}

// query returns the prepared query over pkgs, preparing it on first use.
// The caller holds e.mu (or owns e exclusively).
func (e *Engine) query(ctx context.Context, pkgs []*pkg) (*query, error) {
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = p.name
	}
	key := strings.Join(names, " ")
	if q, ok := e.queries[key]; ok {
		return q, nil
	}
	q := &query{}
	var exprs []string
	for _, p := range pkgs {
		for _, rule := range p.rules {
			for _, rr := range resultRules {
				if rr.name != rule {
					continue
				}
				// The comprehension is always defined: a package whose rule
				// is undefined for this document adds nothing instead of
				// making the whole conjunction undefined.
				exprs = append(exprs, fmt.Sprintf("r%d := [x | x := data.%s.%s]", len(q.outputs), p.name, rule))
				q.outputs = append(q.outputs, output{pkg: p.name, rule: rule, level: rr.level})
			}
		}
	}
	prepared, err := rego.New(
		rego.Query(strings.Join(exprs, "; ")),
		rego.Compiler(e.compiler),
		rego.Store(e.store),
		rego.StoreReadAST(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare query of %s: %w", strings.Join(names, ", "), err)
	}
	q.prepared = prepared
	e.queries[key] = q
	return q, nil
}

// Packages lists the evaluated packages (those with deny/warn rules).
func (e *Engine) Packages() []string {
	out := make([]string, len(e.packages))
	for i, p := range e.packages {
		out[i] = p.name
	}
	return out
}

// Inventory builds gatekeeper's data.inventory from documents:
// namespace[ns][apiVersion][kind][name] for namespaced objects (no namespace
// means "default", as kubectl would apply it) and
// cluster[apiVersion][kind][name] for cluster-scoped ones.
func Inventory(docs []manifest.Document) map[string]any {
	ns := map[string]any{}
	cluster := map[string]any{}
	put := func(root map[string]any, keys []string, obj map[string]any) {
		m := root
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = obj
	}
	for _, d := range docs {
		if d.Kind() == "" || d.Name() == "" {
			continue
		}
		if ClusterScoped(d.APIVersion(), d.Kind()) {
			put(cluster, []string{d.APIVersion(), d.Kind(), d.Name()}, d.Object)
			continue
		}
		n := d.Namespace()
		if n == "" {
			n = "default"
		}
		put(ns, []string{n, d.APIVersion(), d.Kind(), d.Name()}, d.Object)
	}
	return map[string]any{"namespace": ns, "cluster": cluster}
}

// clusterScoped are the kinds that live outside namespaces; a list rather
// than a discovery call because the check never talks to a cluster.
var clusterScoped = map[string]bool{
	"Namespace": true, "Node": true, "PersistentVolume": true,
	"ClusterRole": true, "ClusterRoleBinding": true,
	"CustomResourceDefinition": true, "APIService": true,
	"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
	"PriorityClass": true, "StorageClass": true, "CSIDriver": true, "CSINode": true,
	"VolumeAttachment": true, "IngressClass": true, "RuntimeClass": true,
	"ClusterIssuer": true, "FlowSchema": true, "PriorityLevelConfiguration": true,
	"CertificateSigningRequest": true, "ClusterImagePolicy": true,
}

// ClusterScoped reports whether objects of this kind have no namespace.
func ClusterScoped(apiVersion, kind string) bool { return clusterScoped[kind] }

// Options narrow an evaluation.
type Options struct {
	// Env is data.environment; empty leaves it undefined.
	Env string
	// Select keeps only matching policies/rules.
	Select finding.Selector
	// Inventory overrides the inventory built from the evaluated docs.
	Inventory map[string]any
}

// Evaluate runs every selected package on every document, with
// data.inventory built from all of docs and data.environment set to env.
func (e *Engine) Evaluate(ctx context.Context, docs []manifest.Document, opts Options) ([]finding.Finding, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	inv := opts.Inventory
	if inv == nil {
		inv = Inventory(docs)
	}
	invVal, err := ast.InterfaceToValue(inv)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	if err := storage.WriteOne(ctx, e.store, storage.AddOp, storage.Path{"inventory"}, invVal); err != nil {
		return nil, fmt.Errorf("write inventory: %w", err)
	}
	// policies/README.md: an absent data.environment means non-production,
	// so an unnamed environment leaves it undefined rather than "".
	if opts.Env != "" {
		if err := storage.WriteOne(ctx, e.store, storage.AddOp, storage.Path{"environment"}, ast.String(opts.Env)); err != nil {
			return nil, fmt.Errorf("write environment: %w", err)
		}
	} else if err := storage.WriteOne(ctx, e.store, storage.RemoveOp, storage.Path{"environment"}, nil); err != nil && !storage.IsNotFound(err) {
		return nil, fmt.Errorf("clear environment: %w", err)
	}
	var pkgs []*pkg
	for _, p := range e.packages {
		if opts.Select.MayMatch(p.name) {
			pkgs = append(pkgs, p)
		}
	}
	if len(pkgs) == 0 || len(docs) == 0 {
		return nil, nil
	}
	q, err := e.query(ctx, pkgs)
	if err != nil {
		return nil, err
	}

	results := make([][]finding.Finding, len(docs))
	errs := make([]error, len(docs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(e.workers, len(docs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i], errs[i] = q.evalDoc(ctx, docs[i], opts)
			}
		}()
	}
	for i := range docs {
		next <- i
	}
	close(next)
	wg.Wait()

	var out []finding.Finding
	for i := range docs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		out = append(out, results[i]...)
	}
	return out, nil
}

func (q *query) evalDoc(ctx context.Context, d manifest.Document, opts Options) ([]finding.Finding, error) {
	input, err := ast.InterfaceToValue(d.Object)
	if err != nil {
		return nil, fmt.Errorf("%s: input: %w", d.Position(), err)
	}
	rs, err := q.prepared.Eval(ctx, rego.EvalParsedInput(input))
	if err != nil {
		return nil, fmt.Errorf("%s: evaluate: %w", d.Position(), err)
	}
	if len(rs) == 0 {
		return nil, nil
	}
	var out []finding.Finding
	for i, o := range q.outputs {
		defined, _ := rs[0].Bindings["r"+strconv.Itoa(i)].([]any)
		if len(defined) == 0 {
			continue
		}
		set, _ := defined[0].([]any)
		for _, msg := range set {
			text, rule := message(msg)
			if !opts.Select.Match(o.pkg, rule) {
				continue
			}
			out = append(out, finding.About(d, finding.Finding{
				Env: opts.Env, Policy: o.pkg, Rule: rule, Level: o.level, Message: text,
			}))
		}
	}
	return out, nil
}

// message accepts the two shapes the policies use: a string, or an object
// with "msg" and "rule".
func message(v any) (text, rule string) {
	switch m := v.(type) {
	case string:
		return m, ""
	case map[string]any:
		text, _ = m["msg"].(string)
		rule, _ = m["rule"].(string)
		if text == "" {
			text = fmt.Sprint(m)
		}
		return text, rule
	default:
		return fmt.Sprint(v), ""
	}
}
