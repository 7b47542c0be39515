// Package cli is platformctl's command line: it parses arguments, wires the
// gitops packages together and maps outcomes to exit codes (0 clean, 1
// findings, 2 usage or internal error). It is a package rather than part of
// main so that end-to-end tests drive exactly what users run.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/whisperhq/whisper/internal/gitops/check"
	"github.com/whisperhq/whisper/internal/gitops/crdschema"
	"github.com/whisperhq/whisper/internal/gitops/diff"
	"github.com/whisperhq/whisper/internal/gitops/finding"
	"github.com/whisperhq/whisper/internal/gitops/manifest"
	"github.com/whisperhq/whisper/internal/gitops/policy"
	"github.com/whisperhq/whisper/internal/gitops/render"
	"github.com/whisperhq/whisper/internal/gitops/report"
	"github.com/whisperhq/whisper/internal/gitops/waiver"
	"github.com/whisperhq/whisper/internal/observability/contract"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitFindings = 1
	ExitError    = 2
)

const usage = `usage:
  platformctl render ENV [--root DIR]
  platformctl check [--env E]... [--format text|json|junit|sarif|github] [--select PREFIX]... [--root DIR]
  platformctl policy check PATH... [--format F] [--select PREFIX]... [--env E] [--root DIR]
  platformctl policy test [--root DIR] [-v] [--run REGEX]
  platformctl diff --base GIT_REF [--env E]... [--root DIR]
`

// errUsage marks errors that are the caller's fault.
var errUsage = errors.New("usage")

// Option adds to Run what the repository alone cannot tell.
type Option func(*options)

type options struct {
	metrics func() (*contract.Catalogue, error)
}

// WithMetricCatalogue turns on the observability contract gate in check
// and diff, checking dashboards and rules against the metrics the code
// registers. The catalogue comes from the caller because it is built from
// the services, which internal/ must not import; it is built at most once.
func WithMetricCatalogue(build func() (*contract.Catalogue, error)) Option {
	return func(o *options) { o.metrics = sync.OnceValues(build) }
}

// gcPercent is the GOGC a command runs with. A command is one burst of
// allocation (compiling the policies, decoding YAML, evaluating every
// document) over a live heap of tens of megabytes that the process frees by
// exiting: at the default GOGC=100 the collector ran three times during
// `policy check` of the three environments and took a core from the
// evaluation for a fifth of its wall time. GOGC in the environment wins.
var gcPercent = 400

// Run executes one platformctl command.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, opts ...Option) int {
	if _, set := os.LookupEnv("GOGC"); !set {
		defer debug.SetGCPercent(debug.SetGCPercent(gcPercent))
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	code, err := run(ctx, o, args, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "platformctl: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprint(stderr, usage)
		}
		return ExitError
	}
	return code
}

func run(ctx context.Context, o options, args []string, stdout, stderr io.Writer) (int, error) {
	if len(args) == 0 {
		return 0, fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "render":
		return runRender(args[1:], stdout)
	case "check":
		return runCheck(ctx, o, args[1:], stdout)
	case "policy":
		if len(args) < 2 {
			return 0, fmt.Errorf("%w: policy needs check or test", errUsage)
		}
		switch args[1] {
		case "check":
			return runPolicyCheck(ctx, args[2:], stdout)
		case "test":
			return runPolicyTest(ctx, args[2:], stdout)
		}
		return 0, fmt.Errorf("%w: unknown policy command %q", errUsage, args[1])
	case "diff":
		return runDiff(ctx, o, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0, nil
	}
	return 0, fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// list is a repeatable string flag.
type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

// parse parses flags anywhere among positional arguments (the flag package
// stops at the first positional one, but `policy check a.yaml --format json`
// is how people type).
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// repoRoot is --root, else the git top-level of the working directory, else
// the working directory.
func repoRoot(flagValue string) (string, error) {
	if flagValue != "" {
		return filepath.Abs(flagValue)
	}
	out, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err == nil {
		return strings.TrimSpace(string(out)), nil
	}
	return os.Getwd()
}

func validEnvs(envs []string) error {
	for _, e := range envs {
		if e == "" || strings.ContainsAny(e, `/\`) || strings.HasPrefix(e, ".") {
			return fmt.Errorf("%w: bad environment name %q", errUsage, e)
		}
	}
	return nil
}

func runRender(args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("render", flag.ContinueOnError)
	root := fs.String("root", "", "repository root")
	pos, err := parse(fs, args)
	if err != nil {
		return 0, err
	}
	if len(pos) != 1 {
		return 0, fmt.Errorf("%w: render needs exactly one ENV", errUsage)
	}
	if err := validEnvs(pos); err != nil {
		return 0, err
	}
	dir, err := repoRoot(*root)
	if err != nil {
		return 0, err
	}
	res, err := render.Render(dir, render.Dir(pos[0]))
	if err != nil {
		return 0, err
	}
	out, err := res.YAML()
	if err != nil {
		return 0, err
	}
	_, err = stdout.Write(out)
	return 0, err
}

// observabilityGates returns the observability contract gate when the
// caller gave the metric catalogue (see WithMetricCatalogue); `check` and
// `diff` run it after the built-in gates. It reads dashboards/ and alerts/
// of the tree being checked (check.Env.Root), so diff judges the base's.
func observabilityGates(o options) ([]check.Gate, error) {
	if o.metrics == nil {
		return nil, nil
	}
	cat, err := o.metrics()
	if err != nil {
		return nil, fmt.Errorf("metric catalogue: %w", err)
	}
	return []check.Gate{contract.NewGate(cat)}, nil
}

func newChecker(ctx context.Context, o options, root string) (*check.Checker, error) {
	return newCheckerWithPolicies(ctx, o, root, "")
}

// newCheckerWithPolicies uses policiesDir instead of root/policies when set.
func newCheckerWithPolicies(ctx context.Context, o options, root, policiesDir string) (*check.Checker, error) {
	schemas, err := crdschema.New()
	if err != nil {
		return nil, err
	}
	gates, err := observabilityGates(o)
	if err != nil {
		return nil, err
	}
	return check.New(ctx, check.Options{Root: root, PoliciesDir: policiesDir, Schemas: schemas, Gates: gates})
}

func exitFor(fs []finding.Finding) int {
	if d, _ := finding.Count(fs); d > 0 {
		return ExitFindings
	}
	return ExitOK
}

func runCheck(ctx context.Context, o options, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var envs, sel list
	fs.Var(&envs, "env", "environment (repeatable; default all)")
	fs.Var(&sel, "select", "policy or policy/rule prefix (repeatable)")
	format := fs.String("format", "text", "output format")
	root := fs.String("root", "", "repository root")
	pos, err := parse(fs, args)
	if err != nil {
		return 0, err
	}
	if len(pos) > 0 {
		return 0, fmt.Errorf("%w: check takes no arguments (use --env)", errUsage)
	}
	if !report.Valid(*format) {
		return 0, fmt.Errorf("%w: unknown format %q", errUsage, *format)
	}
	if len(envs) == 0 {
		envs = check.Environments()
	}
	if err := validEnvs(envs); err != nil {
		return 0, err
	}
	dir, err := repoRoot(*root)
	if err != nil {
		return 0, err
	}
	c, err := newChecker(ctx, o, dir)
	if err != nil {
		return 0, err
	}
	res, err := c.Run(ctx, envs, finding.Selector(sel))
	if err != nil {
		return 0, err
	}
	if err := report.Write(stdout, *format, res.Report(c.Policies())); err != nil {
		return 0, err
	}
	return exitFor(res.Findings), nil
}

func runPolicyCheck(ctx context.Context, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("policy check", flag.ContinueOnError)
	var sel list
	fs.Var(&sel, "select", "policy or policy/rule prefix (repeatable)")
	format := fs.String("format", "text", "output format")
	env := fs.String("env", "", "value of data.environment")
	root := fs.String("root", "", "repository root")
	policies := fs.String("policies", "", "Rego folder (default ROOT/policies)")
	pos, err := parse(fs, args)
	if err != nil {
		return 0, err
	}
	if len(pos) == 0 {
		return 0, fmt.Errorf("%w: policy check needs at least one PATH", errUsage)
	}
	if !report.Valid(*format) {
		return 0, fmt.Errorf("%w: unknown format %q", errUsage, *format)
	}
	dir, err := repoRoot(*root)
	if err != nil {
		return 0, err
	}
	pdir := *policies
	if pdir == "" {
		pdir = filepath.Join(dir, "policies")
	}
	// Compiling the policies and decoding the YAML take about as long as
	// each other and need nothing from each other: do them side by side.
	var (
		engine  *policy.Engine
		loadErr error
		loaded  = make(chan struct{})
	)
	go func() {
		defer close(loaded)
		engine, loadErr = policy.Load(ctx, pdir)
	}()
	cwd, _ := os.Getwd()
	set, err := manifest.ReadPaths(cwd, pos)
	<-loaded
	if loadErr != nil {
		return 0, loadErr
	}
	if err != nil {
		return 0, err
	}
	var out []finding.Finding
	for _, p := range set.Problems {
		out = append(out, finding.Finding{Env: *env, File: p.File, Index: p.Index, Line: p.Line,
			Policy: check.PolicyDecode, Rule: "yaml", Level: finding.Deny, Message: p.Err.Error()})
	}
	pf, err := engine.Evaluate(ctx, set.Docs, policy.Options{Env: *env, Select: finding.Selector(sel)})
	if err != nil {
		return 0, err
	}
	out = append(out, pf...)
	wfile := filepath.Join(pdir, "waivers.yaml")
	if data, err := os.ReadFile(wfile); err == nil {
		name := wfile
		if rel, err := filepath.Rel(dir, wfile); err == nil && !strings.HasPrefix(rel, "..") {
			name = filepath.ToSlash(rel)
		}
		ws, err := waiver.Parse(name, data, time.Now())
		if err != nil {
			return 0, err
		}
		ws.Apply(out)
	}
	out = finding.Selector(sel).Filter(out)
	r := report.Report{Findings: out, Files: len(set.Files), Documents: len(set.Docs), Policies: engine.Packages()}
	if err := report.Write(stdout, *format, r); err != nil {
		return 0, err
	}
	return exitFor(out), nil
}

func runPolicyTest(ctx context.Context, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("policy test", flag.ContinueOnError)
	root := fs.String("root", "", "repository root")
	verbose := fs.Bool("v", false, "print every test")
	filter := fs.String("run", "", "only tests matching this regular expression")
	pos, err := parse(fs, args)
	if err != nil {
		return 0, err
	}
	dir, err := repoRoot(*root)
	if err != nil {
		return 0, err
	}
	paths := pos
	if len(paths) == 0 {
		paths = []string{filepath.Join(dir, "policies")}
	}
	// Only Rego: waivers.yaml is tooling input, not policy data.
	modules, store, err := tester.Load(paths, func(_ string, info os.FileInfo, _ int) bool {
		return !info.IsDir() && !strings.HasSuffix(info.Name(), ".rego")
	})
	if err != nil {
		return 0, fmt.Errorf("load policies: %w", err)
	}
	runner := tester.NewRunner().SetStore(store).SetModules(modules).CapturePrintOutput(true).
		SetTimeout(30 * time.Second)
	if *filter != "" {
		runner = runner.Filter(*filter)
	}
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("run tests: %w", err)
	}
	// Count failures on the way to the reporter, which only prints.
	counted := make(chan *tester.Result)
	failed, total := 0, 0
	go func() {
		defer close(counted)
		for r := range ch {
			total++
			if r.Fail || r.Error != nil {
				failed++
			}
			counted <- r
		}
	}()
	rep := tester.PrettyReporter{Output: stdout, Verbose: *verbose, FailureLine: true}
	if err := rep.Report(counted); err != nil {
		return 0, err
	}
	if total == 0 {
		return 0, fmt.Errorf("no Rego tests found in %s", strings.Join(paths, " "))
	}
	if failed > 0 {
		return ExitFindings, nil
	}
	return ExitOK, nil
}

func runDiff(ctx context.Context, o options, args []string, stdout io.Writer) (int, error) {
	fs := flag.NewFlagSet("diff", flag.ContinueOnError)
	var envs list
	fs.Var(&envs, "env", "environment (repeatable; default all)")
	base := fs.String("base", "", "git ref to compare with")
	root := fs.String("root", "", "repository root")
	pos, err := parse(fs, args)
	if err != nil {
		return 0, err
	}
	if *base == "" || len(pos) > 0 {
		return 0, fmt.Errorf("%w: diff needs --base GIT_REF and no arguments", errUsage)
	}
	if len(envs) == 0 {
		envs = check.Environments()
	}
	if err := validEnvs(envs); err != nil {
		return 0, err
	}
	dir, err := repoRoot(*root)
	if err != nil {
		return 0, err
	}
	checkTree := func(ctx context.Context, tree string, envs []string) ([]finding.Finding, error) {
		// A base from before policies/ existed is judged by today's
		// policies, so the report still says what the change introduces.
		pdir := filepath.Join(tree, "policies")
		if _, err := os.Stat(pdir); err != nil {
			pdir = filepath.Join(dir, "policies")
		}
		c, err := newCheckerWithPolicies(ctx, o, tree, pdir)
		if err != nil {
			return nil, err
		}
		res, err := c.Run(ctx, envs, nil)
		return res.Findings, err
	}
	return 0, diff.Write(ctx, stdout, diff.Options{Root: dir, Base: *base, Envs: envs, Check: checkTree})
}
