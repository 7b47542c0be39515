package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"gopkg.in/yaml.v3"

	"github.com/whisperhq/whisper/internal/gitops/manifest"
	"github.com/whisperhq/whisper/internal/gitops/policy"
)

// Row names; the agreement checks refer to them.
const (
	rowPolicyCheck = "platformctl policy check"
	rowConftest    = "conftest test (+ same data.inventory)"
	rowConftestRaw = "conftest test (issue command, no data)"
	rowCheck       = "platformctl check (all environments)"
)

// environments are rendered in this order, one file each.
var environments = []string{"dev", "staging", "production"}

// outcome is what one run of a tool reported.
type outcome struct {
	docs, denies, warns int
	// waived counts platformctl findings a waiver turned off; conftest
	// knows no waivers and reports them at their level.
	waived int
	// findings counts each finding by "level policy/rule file: message",
	// the identity both tools can express.
	findings map[string]int
	packages []string
}

type tool struct {
	name  string
	argv  []string
	parse func(stdout []byte) (outcome, error)
	// docs overrides the document count for tools that do not report one.
	docs int
}

func bench(ctx context.Context, cfg config, logw io.Writer) (*Result, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "policybench: "+format+"\n", args...) }
	bin := filepath.Join(cfg.root, ".tmp", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "policybench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	// The conftest install takes minutes on a cold module cache: start it
	// first and prepare everything else meanwhile.
	type installed struct {
		path string
		info *buildinfo.BuildInfo
		err  error
	}
	conftestCh := make(chan installed, 1)
	go func() {
		p, info, err := ensureConftest(ctx, bin, cfg.conftestVersion, logf)
		conftestCh <- installed{p, info, err}
	}()
	waitConftest := func() (installed, error) {
		in := <-conftestCh
		return in, in.err
	}

	platformctl := filepath.Join(bin, "platformctl")
	if cfg.build {
		logf("building %s", platformctl)
		cmd := exec.CommandContext(ctx, "go", "build", "-o", platformctl, "./cmd/platformctl")
		cmd.Dir = cfg.root
		if out, err := cmd.CombinedOutput(); err != nil {
			_, _ = waitConftest()
			return nil, fmt.Errorf("build platformctl: %w\n%s", err, out)
		}
	}
	pinfo, err := buildinfo.ReadFile(platformctl)
	if err != nil {
		_, _ = waitConftest()
		return nil, fmt.Errorf("read build info of %s: %w", platformctl, err)
	}

	files, err := render(ctx, platformctl, cfg.root, work, logf)
	if err != nil {
		_, _ = waitConftest()
		return nil, err
	}
	conftestPolicies, dataDir, err := conftestInputs(cfg.root, work, files)
	if err != nil {
		_, _ = waitConftest()
		return nil, err
	}
	wantPackages, err := rulePackages(conftestPolicies)
	if err != nil {
		_, _ = waitConftest()
		return nil, err
	}
	docs, err := countDocuments(files)
	if err != nil {
		_, _ = waitConftest()
		return nil, err
	}
	ct, err := waitConftest()
	if err != nil {
		return nil, err
	}

	policyCheckArgv := append([]string{platformctl, "policy", "check", "--root", cfg.root, "--format", "json"}, files...)
	tools := []tool{
		{name: rowPolicyCheck, argv: policyCheckArgv, parse: parsePlatformctl},
		{name: rowConftest, argv: append([]string{ct.path, "test", "--all-namespaces", "-p", conftestPolicies, "--data", dataDir, "-o", "json"}, files...),
			parse: parseConftest, docs: docs},
		{name: rowConftestRaw, argv: append([]string{ct.path, "test", "--all-namespaces", "-p", filepath.Join(cfg.root, "policies"), "-o", "json"}, files...),
			parse: parseConftest, docs: docs},
		{name: rowCheck, argv: []string{platformctl, "check", "--root", cfg.root, "--format", "json"}, parse: parsePlatformctl},
	}

	// platformctl's json format does not list the packages it ran; its junit
	// format has one testsuite per package. Asked once, untimed.
	pcPackages, err := platformctlPackages(ctx, work, policyCheckArgv)
	if err != nil {
		return nil, err
	}

	loadBefore := loadAverage()
	samples := make([][]time.Duration, len(tools))
	cpus := make([][]time.Duration, len(tools))
	first := make([]outcome, len(tools))
	const warmup = 1
	for round := 0; round < warmup+cfg.runs; round++ {
		if round < warmup {
			logf("warm-up round")
		} else {
			logf("round %d/%d", round-warmup+1, cfg.runs)
		}
		// Interleaved, so that a noisy moment of the machine is shared
		// by all tools instead of landing on one of them.
		for i, t := range tools {
			d, c, o, err := timeRun(ctx, work, t)
			if err != nil {
				return nil, err
			}
			if round == 0 {
				first[i] = o
			} else if o.denies != first[i].denies || o.warns != first[i].warns || o.docs != first[i].docs {
				return nil, fmt.Errorf("%s: run %d reported %d docs, %d denies, %d warns; the warm-up %d, %d, %d",
					t.name, round, o.docs, o.denies, o.warns, first[i].docs, first[i].denies, first[i].warns)
			}
			if round >= warmup {
				samples[i] = append(samples[i], d)
				cpus[i] = append(cpus[i], c)
			}
		}
	}
	first[0].packages = pcPackages

	res := &Result{
		Environments:    environments,
		Runs:            cfg.runs,
		WarmupRuns:      warmup,
		CPUs:            runtime.NumCPU(),
		GOOS:            runtime.GOOS,
		GOARCH:          runtime.GOARCH,
		ConftestVersion: ct.info.Main.Version,
		OPAVersions:     OPAVersions{Platformctl: depVersion(pinfo, opaModule), Conftest: depVersion(ct.info, opaModule)},
		LoadAverage:     [2]string{loadBefore, loadAverage()},
		Pass:            true,
	}
	for i, t := range tools {
		o := first[i]
		if t.docs > 0 {
			o.docs = t.docs
		}
		ts := ToolStats{
			Name:          t.name,
			Command:       displayArgv(t.argv, cfg.root, work, files),
			MedianSeconds: secs(median(samples[i])),
			MinSeconds:    secs(minimum(samples[i])),
			CPUSeconds:    secs(median(cpus[i])),
			Documents:     o.docs,
			Denies:        o.denies,
			Warns:         o.warns,
			Packages:      o.packages,
		}
		for _, s := range samples[i] {
			ts.Samples = append(ts.Samples, secs(s))
		}
		res.Tools = append(res.Tools, ts)
	}

	// Both engines must have run every package that has rules; otherwise
	// the faster one may simply have done less.
	for i := range tools[:3] {
		if missing := subtract(wantPackages, first[i].packages); len(missing) > 0 {
			return nil, fmt.Errorf("%s did not evaluate packages %s", tools[i].name, strings.Join(missing, ", "))
		}
	}
	if docs != first[0].docs {
		return nil, fmt.Errorf("platformctl policy check read %d documents, the files hold %d", first[0].docs, docs)
	}

	pc := res.tool(rowPolicyCheck)
	for _, row := range []string{rowConftest, rowConftestRaw} {
		ratio := res.tool(row).MedianSeconds / pc.MedianSeconds
		res.Targets = append(res.Targets, Target{
			Name:     fmt.Sprintf("speedup, median wall: %s", row),
			Measured: ratio,
			Want:     fmt.Sprintf(">=%gx", cfg.minSpeedup),
			Pass:     ratio >= cfg.minSpeedup,
		})
	}
	// CPU time is not the promise, but on a busy machine it tells whether a
	// missed wall-time target is the tool or the neighbours.
	for _, row := range []string{rowConftest, rowConftestRaw} {
		ratio := res.tool(row).CPUSeconds / pc.CPUSeconds
		res.Targets = append(res.Targets, Target{
			Name:          fmt.Sprintf("speedup, median cpu:  %s", row),
			Measured:      ratio,
			Want:          fmt.Sprintf(">=%gx", cfg.minSpeedup),
			Pass:          ratio >= cfg.minSpeedup,
			Informational: true,
		})
	}
	chk := res.tool(rowCheck)
	res.Targets = append(res.Targets, Target{
		Name:     "platformctl check, all environments, median wall (s)",
		Measured: chk.MedianSeconds,
		Want:     fmt.Sprintf("<%gs", cfg.checkBudget.Seconds()),
		Pass:     chk.MedianSeconds < cfg.checkBudget.Seconds(),
	})
	for _, t := range res.Targets {
		if !t.Pass && !t.Informational {
			res.Pass = false
		}
	}

	same := compare(rowPolicyCheck, first[0], rowConftest, first[1])
	same.Expected = true
	if !same.Agree && first[0].waived > 0 {
		same.Explanation = fmt.Sprintf("platformctl waived %d findings (policies/waivers.yaml); conftest applies no waivers", first[0].waived)
	}
	if !same.Agree {
		res.Pass = false
	}
	raw := compare(rowPolicyCheck, first[0], rowConftestRaw, first[2])
	if !raw.Agree {
		if onlyInventoryMissing(first[0], first[2]) {
			raw.Explanation = "without --data conftest has no data.inventory, so kubernetes.network and kubernetes.workload " +
				"skip their cross-document rules and warn inventory-missing per object instead; platformctl policy check " +
				"always builds data.inventory from the files it checks (the row above gives conftest that same inventory)"
		} else {
			raw.Explanation = "differences other than inventory-missing warnings: unexpected, investigate"
			res.Pass = false
		}
	}
	res.Agreement = []Agreement{same, raw}
	return res, nil
}

// loadAverage is the 1-minute load average, printed with the result because
// wall times on a shared machine include waiting for a core.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "unknown"
	}
	return f[0]
}

const opaModule = "github.com/open-policy-agent/opa"

func depVersion(info *buildinfo.BuildInfo, path string) string {
	for _, d := range info.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return "unknown"
}

// ensureConftest installs conftest from the Go module proxy unless the
// binary in bin already is that exact module version. It runs `go install`
// from an empty folder outside the module so the project's go.mod and
// go.sum stay untouched.
func ensureConftest(ctx context.Context, bin, version string, logf func(string, ...any)) (string, *buildinfo.BuildInfo, error) {
	path := filepath.Join(bin, "conftest")
	if info, err := buildinfo.ReadFile(path); err == nil && info.Main.Path == conftestModule && info.Main.Version == version {
		return path, info, nil
	}
	logf("installing %s@%s into %s (minutes on a cold module cache)", conftestModule, version, bin)
	tmp, err := os.MkdirTemp("", "policybench-install-")
	if err != nil {
		return "", nil, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", conftestModule+"@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("install conftest: %w\n%s", err, out)
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("installed conftest: %w", err)
	}
	if info.Main.Version != version {
		return "", nil, fmt.Errorf("installed conftest is %s, want %s", info.Main.Version, version)
	}
	logf("installed conftest %s", version)
	return path, info, nil
}

// render writes `platformctl render ENV` of every environment to its own
// file in dir and returns the absolute file names.
func render(ctx context.Context, platformctl, root, dir string, logf func(string, ...any)) ([]string, error) {
	var files []string
	for _, env := range environments {
		logf("rendering %s", env)
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, platformctl, "render", env, "--root", root)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("render %s: %w: %s", env, err, stderr.Bytes())
		}
		f := filepath.Join(dir, env+".yaml")
		if err := os.WriteFile(f, stdout.Bytes(), 0o644); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// conftestInputs gives conftest exactly what platformctl evaluates: the
// non-test Rego modules of policies/ (platformctl skips *_test.rego; conftest
// would compile them too) and data.inventory built by platformctl's own
// code from the same files, as a --data document.
func conftestInputs(root, work string, files []string) (policiesDir, dataDir string, err error) {
	src := filepath.Join(root, "policies")
	policiesDir = filepath.Join(work, "policies")
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") || strings.HasSuffix(path, "_test.rego") {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dst := filepath.Join(policiesDir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		return "", "", fmt.Errorf("copy policies: %w", err)
	}
	set, err := manifest.ReadPaths("", files)
	if err != nil {
		return "", "", err
	}
	if len(set.Problems) > 0 {
		return "", "", fmt.Errorf("rendered manifests do not parse: %w", set.Problems[0])
	}
	inv, err := json.Marshal(map[string]any{"inventory": policy.Inventory(set.Docs)})
	if err != nil {
		return "", "", err
	}
	dataDir = filepath.Join(work, "data")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return "", "", err
	}
	return policiesDir, dataDir, os.WriteFile(filepath.Join(dataDir, "inventory.json"), inv, 0o644)
}

// rulePackages lists the packages that define deny, violation or warn, read
// independently of either tool.
func rulePackages(dir string) ([]string, error) {
	set := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(path, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return err
		}
		for _, r := range m.Rules {
			switch r.Head.Name.String() {
			case "deny", "violation", "warn":
			default:
				if len(r.Head.Reference) == 0 {
					continue
				}
				switch r.Head.Reference[0].String() {
				case "deny", "violation", "warn":
				default:
					continue
				}
			}
			set[strings.TrimPrefix(m.Package.Path.String(), "data.")] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policies: %w", err)
	}
	if len(set) == 0 {
		return nil, errors.New("no package in policies/ defines deny, violation or warn")
	}
	return sortedKeys(set), nil
}

// countDocuments counts the non-empty YAML documents of files with a plain
// YAML decoder, independently of platformctl's reader.
func countDocuments(files []string) (int, error) {
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		for {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, fmt.Errorf("%s: %w", f, err)
			}
			if v != nil {
				n++
			}
		}
	}
	return n, nil
}

// timeRun runs one tool as a whole process and measures the wall time from
// start to exit. Exit 1 is how both tools say "denies found", so it is only
// accepted when the output does report a deny.
//
// The CPU time (user+sys of the process) is returned beside it: on a shared
// machine it shows how much of a wall time was waiting for a core.
func timeRun(ctx context.Context, dir string, t tool) (wall, cpu time.Duration, _ outcome, _ error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, t.argv[0], t.argv[1:]...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	wall = time.Since(start)
	if cmd.ProcessState != nil {
		cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return 0, 0, outcome{}, fmt.Errorf("%s: %w", t.name, err)
		}
		code = ee.ExitCode()
	}
	o, perr := t.parse(stdout.Bytes())
	switch {
	case perr != nil:
		return 0, 0, outcome{}, fmt.Errorf("%s (exit %d): %w\nstderr: %s", t.name, code, perr, stderr.Bytes())
	case code == 0 && o.denies == 0, code == 1 && o.denies > 0:
	default:
		return 0, 0, outcome{}, fmt.Errorf("%s: exit %d with %d denies reported\nstderr: %s", t.name, code, o.denies, stderr.Bytes())
	}
	return wall, cpu, o, nil
}

func findingKey(level, pkg, rule, file, msg string) string {
	return fmt.Sprintf("%s %s/%s %s: %s", level, pkg, rule, filepath.Base(file), msg)
}

// parsePlatformctl reads platformctl's json format (internal/gitops/report).
func parsePlatformctl(stdout []byte) (outcome, error) {
	var r struct {
		Results []struct {
			File, Policy, Rule, Level, Message string
		}
		Summary struct {
			Documents, Denies, Warns int
		}
	}
	if err := json.Unmarshal(stdout, &r); err != nil {
		return outcome{}, fmt.Errorf("parse platformctl json: %w", err)
	}
	o := outcome{docs: r.Summary.Documents, denies: r.Summary.Denies, warns: r.Summary.Warns, findings: map[string]int{}}
	for _, f := range r.Results {
		switch f.Level {
		case "deny", "warn":
			o.findings[findingKey(f.Level, f.Policy, f.Rule, f.File, f.Message)]++
		case "waived":
			o.waived++
		}
	}
	return o, nil
}

// parseConftest reads `conftest test -o json`: one entry per file and
// namespace, failures are denies, warnings are warns.
func parseConftest(stdout []byte) (outcome, error) {
	type result struct {
		Msg      string         `json:"msg"`
		Metadata map[string]any `json:"metadata"`
	}
	var rs []struct {
		Filename  string   `json:"filename"`
		Namespace string   `json:"namespace"`
		Failures  []result `json:"failures"`
		Warnings  []result `json:"warnings"`
	}
	if err := json.Unmarshal(stdout, &rs); err != nil {
		return outcome{}, fmt.Errorf("parse conftest json: %w", err)
	}
	o := outcome{findings: map[string]int{}}
	pkgs := map[string]bool{}
	for _, r := range rs {
		pkgs[r.Namespace] = true
		for level, list := range map[string][]result{"deny": r.Failures, "warn": r.Warnings} {
			for _, f := range list {
				rule, _ := f.Metadata["rule"].(string)
				o.findings[findingKey(level, r.Namespace, rule, r.Filename, f.Msg)]++
			}
		}
		o.denies += len(r.Failures)
		o.warns += len(r.Warnings)
	}
	o.packages = sortedKeys(pkgs)
	return o, nil
}

// platformctlPackages runs policy check once with --format junit, which has
// one testsuite per evaluated package.
func platformctlPackages(ctx context.Context, dir string, argv []string) ([]string, error) {
	args := append([]string{}, argv[1:]...)
	for i := range args {
		if args[i] == "json" && args[i-1] == "--format" {
			args[i] = "junit"
		}
	}
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], args...)
	cmd.Dir = dir
	cmd.Stdout = &stdout
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 {
			return nil, fmt.Errorf("platformctl policy check --format junit: %w", err)
		}
	}
	var suites struct {
		Suites []struct {
			Name string `xml:"name,attr"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(stdout.Bytes(), &suites); err != nil {
		return nil, fmt.Errorf("parse platformctl junit: %w", err)
	}
	var out []string
	for _, s := range suites.Suites {
		out = append(out, s.Name)
	}
	sort.Strings(out)
	return out, nil
}

// compare reports the findings one tool has and the other lacks, grouped by
// level and policy/rule with counts, then the first differing messages.
func compare(aName string, a outcome, bName string, b outcome) Agreement {
	ag := Agreement{A: aName, B: bName, Agree: true}
	if a.denies != b.denies || a.warns != b.warns {
		ag.Agree = false
		ag.Differences = append(ag.Differences, fmt.Sprintf("counts: %s %d denies %d warns; %s %d denies %d warns",
			aName, a.denies, a.warns, bName, b.denies, b.warns))
	}
	onlyA, onlyB := diffFindings(a.findings, b.findings)
	for _, side := range []struct {
		name string
		keys []string
	}{{aName, onlyA}, {bName, onlyB}} {
		if len(side.keys) == 0 {
			continue
		}
		ag.Agree = false
		groups := map[string]int{}
		for _, k := range side.keys {
			groups[groupOf(k)]++
		}
		for _, g := range sortedKeys(groups) {
			ag.Differences = append(ag.Differences, fmt.Sprintf("only in %s: %d x %s", side.name, groups[g], g))
		}
		for i, k := range side.keys {
			if i == 3 {
				ag.Differences = append(ag.Differences, fmt.Sprintf("  ... %d more", len(side.keys)-3))
				break
			}
			ag.Differences = append(ag.Differences, "  e.g. "+k)
		}
	}
	return ag
}

// diffFindings returns the finding keys (with multiplicity) of a not in b
// and of b not in a, sorted.
func diffFindings(a, b map[string]int) (onlyA, onlyB []string) {
	for k, n := range a {
		for i := b[k]; i < n; i++ {
			onlyA = append(onlyA, k)
		}
	}
	for k, n := range b {
		for i := a[k]; i < n; i++ {
			onlyB = append(onlyB, k)
		}
	}
	sort.Strings(onlyA)
	sort.Strings(onlyB)
	return onlyA, onlyB
}

// groupOf is "level policy/rule" of a finding key.
func groupOf(key string) string {
	level, rest, _ := strings.Cut(key, " ")
	rule, _, _ := strings.Cut(rest, " ")
	return level + " " + rule
}

// onlyInventoryMissing reports whether b differs from a only by extra
// inventory-missing warnings, the documented effect of no data.inventory.
func onlyInventoryMissing(a, b outcome) bool {
	onlyA, onlyB := diffFindings(a.findings, b.findings)
	if len(onlyA) > 0 || len(onlyB) == 0 || a.denies != b.denies {
		return false
	}
	for _, k := range onlyB {
		if !strings.HasSuffix(groupOf(k), "/inventory-missing") || !strings.HasPrefix(k, "warn ") {
			return false
		}
	}
	return true
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minimum(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds[1:] {
		m = min(m, d)
	}
	return m
}

func subtract(want, have []string) []string {
	got := map[string]bool{}
	for _, h := range have {
		got[h] = true
	}
	var missing []string
	for _, w := range want {
		if !got[w] {
			missing = append(missing, w)
		}
	}
	return missing
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// displayArgv shortens the paths in a command line so the printed command
// reads like something one would type in the repository.
func displayArgv(argv []string, root, work string, files []string) []string {
	out := make([]string, 0, len(argv))
	isFile := map[string]bool{}
	for _, f := range files {
		isFile[f] = true
	}
	shown := false
	for _, a := range argv {
		switch {
		case isFile[a]:
			if !shown {
				out = append(out, "FILES")
				shown = true
			}
			continue
		case a == root:
			out = append(out, ".")
			continue
		}
		if rel, err := filepath.Rel(root, a); err == nil && !strings.HasPrefix(rel, "..") {
			a = rel
		} else if rel, err := filepath.Rel(work, a); err == nil && !strings.HasPrefix(rel, "..") {
			a = "$TMP/" + rel
		}
		out = append(out, a)
	}
	return out
}
