// Package contract is the observability contract gate of `platformctl check`:
// dashboards and alert rules may only query series that something produces
// (the code's metrics, a recording rule, or a pinned external exporter),
// with labels those series have and histogram boundaries that exist; every
// business metric is on a dashboard; every alert is routable and actionable
// (severity, summary, templated description, a runbook that exists).
//
// It exists because a renamed metric or label silently empties a panel and
// silences an alert: nothing else fails when that happens. The catalogue
// of the code's metrics is built from the registered collectors (see
// Recorder), by whoever may import the services, and passed in.
package contract

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// Folders under the repository root.
const (
	DashboardsDir = "dashboards"
	AlertsDir     = "alerts"
	RunbooksDir   = "alerts/runbooks"
)

// Rules of the contract, as they appear in violations.
const (
	RuleParse          = "parse"
	RuleUnknownMetric  = "unknown-metric"
	RuleUnknownLabel   = "unknown-label"
	RuleBucket         = "bucket"
	RuleNotOnDashboard = "business-metric-not-on-dashboard"
	RuleAlertName      = "alert-name"
	RuleSeverity       = "severity"
	RuleSummary        = "summary"
	RuleDescription    = "description"
	RuleRunbook        = "runbook"
	RulePanelStyle     = "panel-style"
)

// TargetLabels are attached by Prometheus service discovery to every
// scraped series, so any metric may be matched on them.
func TargetLabels() []string {
	return []string{"container", "instance", "job", "namespace", "pod", "service"}
}

// BusinessPrefixes name the services' own metrics, which say what the
// product does (events accepted, profile updates and users per stage,
// decisions and conversions, renders, deliveries by channel) and how each
// service's own pipeline runs: each must be on at least one dashboard, so
// a new one cannot ship unseen. Shared infrastructure (RED, Kafka, pools,
// runtime) is exempt: dashboards aggregate it.
func BusinessPrefixes() []string {
	return []string{"whisper_ingest_", "whisper_profiles_", "whisper_decide_", "whisper_content_", "whisper_deliver_"}
}

// ExternalMetrics are the exporters' metrics the dashboards and rules use,
// pinned with their labels: kube-state-metrics and cAdvisor (through the
// kubelet). Add a metric here only when a dashboard or rule uses it.
func ExternalMetrics() []Metric {
	return []Metric{
		{Name: "kube_pod_container_status_restarts_total", Type: Counter, Labels: []string{"container", "namespace", "pod", "uid"}},
		{Name: "container_cpu_usage_seconds_total", Type: Counter, Labels: []string{"container", "cpu", "id", "image", "name", "namespace", "pod"}},
		{Name: "container_memory_working_set_bytes", Type: Gauge, Labels: []string{"container", "id", "image", "name", "namespace", "pod"}},
		{Name: "kube_pod_container_resource_limits", Type: Gauge, Labels: []string{"container", "namespace", "node", "pod", "resource", "uid", "unit"}},
	}
}

// Violation is one breach of the contract.
type Violation struct {
	// File is relative to the repository root, slash-separated.
	File string
	// Line is where the panel or rule starts, 0 when unknown.
	Line int
	// Kind is Dashboard, Panel, AlertingRule, RecordingRule or Metric.
	Kind string
	// Name is the panel title, rule name or metric name.
	Name    string
	Rule    string
	Message string
}

func (v Violation) String() string {
	return fmt.Sprintf("%s:%d: %s %q: %s: %s", v.File, v.Line, v.Kind, v.Name, v.Rule, v.Message)
}

// Check reads root/dashboards/*.json and root/alerts/*.yaml and returns
// every violation. Missing folders mean nothing to check there; an
// unreadable file is an error.
func Check(root string, code *Catalogue) ([]Violation, error) {
	c := &checker{root: root, code: code, external: NewCatalogue(ExternalMetrics()...),
		recorded: map[string]*recorded{}, used: map[string]bool{}}
	rules, err := c.loadRules()
	if err != nil {
		return nil, err
	}
	dashboards, err := c.loadDashboards()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		c.checkRule(r)
	}
	for _, d := range dashboards {
		c.checkDashboard(d)
	}
	c.checkBusinessCoverage()
	sort.SliceStable(c.out, func(i, j int) bool {
		a, b := c.out[i], c.out[j]
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Name < b.Name
	})
	return c.out, nil
}

type checker struct {
	root     string
	code     *Catalogue
	external *Catalogue
	recorded map[string]*recorded
	// used are the catalogue families some dashboard queries.
	used map[string]bool
	out  []Violation
}

type recorded struct {
	rule   rule
	expr   parser.Expr
	labels []string
	known  bool
	state  int // 0 new, 1 in progress, 2 done
}

type rule struct {
	file        string
	line        int
	record      string
	alert       string
	expr        string
	labels      map[string]string
	annotations map[string]string
}

func (r rule) kind() string {
	if r.alert != "" {
		return "AlertingRule"
	}
	return "RecordingRule"
}

func (r rule) name() string { return r.alert + r.record }

func (c *checker) add(v Violation) { c.out = append(c.out, v) }

func (c *checker) rel(path string) string {
	if r, err := filepath.Rel(c.root, path); err == nil {
		return filepath.ToSlash(r)
	}
	return path
}

func (c *checker) loadRules() ([]rule, error) {
	var files []string
	for _, pat := range []string{"*.yaml", "*.yml"} {
		m, err := filepath.Glob(filepath.Join(c.root, AlertsDir, pat))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	slices.Sort(files)
	var out []rule
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read rules: %w", err)
		}
		groups, errs := rulefmt.Parse(data)
		if len(errs) > 0 {
			c.add(Violation{File: c.rel(f), Kind: "RuleFile", Name: filepath.Base(f), Rule: RuleParse, Message: errors.Join(errs...).Error()})
			continue
		}
		for _, g := range groups.Groups {
			for _, n := range g.Rules {
				r := rule{file: c.rel(f), line: n.Record.Line + n.Alert.Line, record: n.Record.Value, alert: n.Alert.Value,
					expr: n.Expr.Value, labels: n.Labels, annotations: n.Annotations}
				out = append(out, r)
				if r.record == "" {
					continue
				}
				expr, err := parser.ParseExpr(r.expr)
				if err != nil {
					continue // reported by checkRule
				}
				// Several rules may record one name (one per SLO, say):
				// the series then has the labels of any of them.
				if prev, ok := c.recorded[r.record]; ok {
					prev.expr = &parser.BinaryExpr{Op: parser.LOR, LHS: prev.expr, RHS: expr,
						VectorMatching: &parser.VectorMatching{Card: parser.CardManyToMany}}
					for k, v := range r.labels {
						prev.rule.labels[k] = v
					}
					continue
				}
				ls := map[string]string{}
				for k, v := range r.labels {
					ls[k] = v
				}
				rr := r
				rr.labels = ls
				c.recorded[r.record] = &recorded{rule: rr, expr: expr}
			}
		}
	}
	return out, nil
}

var (
	alertName     = regexp.MustCompile(`^[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)*$`)
	runbookInPath = regexp.MustCompile(`(?:^|/)alerts/runbooks/([^?#]+)`)
)

func (c *checker) checkRule(r rule) {
	v := Violation{File: r.file, Line: r.line, Kind: r.kind(), Name: r.name()}
	expr, err := parser.ParseExpr(r.expr)
	if err != nil {
		c.add(with(v, RuleParse, "expression does not parse: %v", err))
	} else {
		c.checkExpr(v, expr, false)
	}
	if r.alert == "" {
		return
	}
	if !alertName.MatchString(r.alert) {
		c.add(with(v, RuleAlertName, "alert names are CamelCase (for example IngestProducerFailing)"))
	}
	switch sev := r.labels["severity"]; sev {
	case "critical", "warning", "info":
	case "":
		c.add(with(v, RuleSeverity, "no severity label: set one of critical, warning, info"))
	default:
		c.add(with(v, RuleSeverity, "severity %q is not one of critical, warning, info", sev))
	}
	summary := strings.TrimSpace(r.annotations["summary"])
	switch {
	case summary == "":
		c.add(with(v, RuleSummary, "no summary annotation: say in one sentence what is wrong"))
	case strings.Contains(summary, "{{"):
		c.add(with(v, RuleSummary, "the summary is a static sentence; put values and labels in the description"))
	case !oneSentence(summary):
		c.add(with(v, RuleSummary, "the summary is one sentence ending with a full stop, got %q", summary))
	}
	desc := r.annotations["description"]
	switch {
	case strings.TrimSpace(desc) == "":
		c.add(with(v, RuleDescription, "no description annotation"))
	case !strings.Contains(desc, "{{"):
		c.add(with(v, RuleDescription, "the description names what fires: template it with {{ $labels }} or {{ $value }}"))
	}
	url := r.annotations["runbook_url"]
	m := runbookInPath.FindStringSubmatch(url)
	switch {
	case url == "":
		c.add(with(v, RuleRunbook, "no runbook_url annotation"))
	case m == nil:
		c.add(with(v, RuleRunbook, "runbook_url %q does not point into %s/", url, RunbooksDir))
	default:
		if _, err := os.Stat(filepath.Join(c.root, RunbooksDir, filepath.FromSlash(m[1]))); err != nil {
			c.add(with(v, RuleRunbook, "runbook %s/%s does not exist", RunbooksDir, m[1]))
		}
	}
}

func oneSentence(s string) bool {
	if strings.ContainsAny(s, "\n") || !strings.HasSuffix(s, ".") {
		return false
	}
	body := strings.TrimSuffix(s, ".")
	return !strings.Contains(body, ". ") && !strings.ContainsAny(body, "!?")
}

func with(v Violation, rule, format string, args ...any) Violation {
	v.Rule = rule
	v.Message = fmt.Sprintf(format, args...)
	return v
}

// checkExpr checks every selector of expr, and the labels aggregations
// group by. onDashboard marks the catalogue families it reaches as shown.
func (c *checker) checkExpr(v Violation, expr parser.Expr, onDashboard bool) {
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if agg, ok := n.(*parser.AggregateExpr); ok && !agg.Without {
			// A misspelt "by" label silently merges every series into one.
			if have, known := c.exprLabels(agg.Expr); known {
				have = append(have, TargetLabels()...)
				for _, l := range agg.Grouping {
					if !slices.Contains(have, l) {
						c.add(with(v, RuleUnknownLabel, "%s by (%s): the series aggregated have no label %q (they have: %s)",
							agg.Op, strings.Join(agg.Grouping, ", "), l, strings.Join(sortedUnique(have), ", ")))
					}
				}
			}
			return nil
		}
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			return nil // a regular expression over names: nothing to pin
		}
		allowed, buckets, known := c.resolve(name)
		if !known {
			c.add(with(v, RuleUnknownMetric, "%s is not registered by the code, recorded by a rule, or on the pinned list of external metrics", name))
			return nil
		}
		if onDashboard {
			if m, _, ok := c.code.series(name); ok {
				c.used[m.Name] = true
			}
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				continue
			}
			if allowed != nil && !slices.Contains(allowed, m.Name) {
				c.add(with(v, RuleUnknownLabel, "%s has no label %q (it has: %s)", name, m.Name, strings.Join(allowed, ", ")))
				continue
			}
			if m.Name == "le" && buckets != nil {
				for _, val := range leValues(m) {
					if !isBucket(val, buckets) {
						c.add(with(v, RuleBucket, "%s has no bucket le=%q (boundaries: %s)", name, val, formatBuckets(buckets)))
					}
				}
			}
		}
		return nil
	})
}

// resolve returns the labels a series may be matched on (nil: unknown, do
// not check) and, for a histogram's _bucket series, its boundaries.
func (c *checker) resolve(name string) (allowed []string, buckets []float64, known bool) {
	for _, cat := range []*Catalogue{c.code, c.external} {
		if cat == nil {
			continue
		}
		m, suffix, ok := cat.series(name)
		if !ok {
			continue
		}
		allowed = append(append([]string(nil), m.Labels...), TargetLabels()...)
		switch {
		case suffix == "_bucket":
			allowed = append(allowed, "le")
			buckets = m.Buckets
			if buckets == nil {
				buckets = []float64{}
			}
		case m.Type == Summary && suffix == "":
			allowed = append(allowed, "quantile")
		}
		return sortedUnique(allowed), buckets, true
	}
	if r, ok := c.recorded[name]; ok {
		ls, known := c.recordedLabels(r)
		if !known {
			return nil, nil, true
		}
		return sortedUnique(append(ls, TargetLabels()...)), nil, true
	}
	return nil, nil, false
}

func leValues(m *labels.Matcher) []string {
	switch m.Type {
	case labels.MatchEqual, labels.MatchNotEqual:
		return []string{m.Value}
	}
	// A regular expression that is a plain alternation of numbers.
	parts := strings.Split(m.Value, "|")
	for _, p := range parts {
		if _, err := strconv.ParseFloat(p, 64); err != nil && p != "+Inf" {
			return nil
		}
	}
	return parts
}

func isBucket(val string, buckets []float64) bool {
	if val == "+Inf" {
		return true
	}
	f, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return false
	}
	return slices.Contains(buckets, f)
}

func formatBuckets(bs []float64) string {
	s := make([]string, 0, len(bs)+1)
	for _, b := range bs {
		s = append(s, strconv.FormatFloat(b, 'g', -1, 64))
	}
	return strings.Join(append(s, "+Inf"), ", ")
}

// recordedLabels infers the labels of a recorded series from its
// expression; known is false when the expression is beyond this inference.
func (c *checker) recordedLabels(r *recorded) ([]string, bool) {
	switch r.state {
	case 2:
		return r.labels, r.known
	case 1:
		return nil, false // a cycle; Prometheus would never fill it either
	}
	r.state = 1
	ls, known := c.exprLabels(r.expr)
	for k := range r.rule.labels {
		ls = append(ls, k)
	}
	r.labels, r.known, r.state = sortedUnique(ls), known, 2
	return r.labels, r.known
}

func (c *checker) exprLabels(e parser.Expr) ([]string, bool) {
	switch e := e.(type) {
	case *parser.NumberLiteral, *parser.StringLiteral:
		return nil, true
	case *parser.ParenExpr:
		return c.exprLabels(e.Expr)
	case *parser.UnaryExpr:
		return c.exprLabels(e.Expr)
	case *parser.StepInvariantExpr:
		return c.exprLabels(e.Expr)
	case *parser.SubqueryExpr:
		return c.exprLabels(e.Expr)
	case *parser.MatrixSelector:
		return c.exprLabels(e.VectorSelector)
	case *parser.VectorSelector:
		allowed, _, known := c.resolve(e.Name)
		if !known || allowed == nil {
			return nil, false
		}
		return allowed, true
	case *parser.AggregateExpr:
		inner, ok := c.exprLabels(e.Expr)
		switch {
		case e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO:
			return inner, ok
		case e.Without:
			return without(inner, e.Grouping...), ok
		case e.Op == parser.COUNT_VALUES:
			if s, isStr := e.Param.(*parser.StringLiteral); isStr {
				return append(append([]string(nil), e.Grouping...), s.Val), true
			}
			return nil, false
		}
		return append([]string(nil), e.Grouping...), true
	case *parser.Call:
		switch e.Func.Name {
		case "vector", "time", "scalar", "pi", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "hour", "minute", "month", "year":
			return nil, true
		case "absent", "absent_over_time":
			return nil, false
		case "label_replace", "label_join":
			inner, ok := c.exprLabels(e.Args[0])
			if s, isStr := e.Args[1].(*parser.StringLiteral); isStr {
				inner = append(inner, s.Val)
			}
			return inner, ok
		case "histogram_quantile":
			inner, ok := c.exprLabels(e.Args[1])
			return without(inner, "le"), ok
		}
		for _, a := range e.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return c.exprLabels(a)
			}
		}
		return nil, true
	case *parser.BinaryExpr:
		lt, rt := e.LHS.Type(), e.RHS.Type()
		switch {
		case lt != parser.ValueTypeVector && rt != parser.ValueTypeVector:
			return nil, true
		case lt != parser.ValueTypeVector:
			return c.exprLabels(e.RHS)
		case rt != parser.ValueTypeVector:
			return c.exprLabels(e.LHS)
		}
		l, lok := c.exprLabels(e.LHS)
		r, rok := c.exprLabels(e.RHS)
		vm := e.VectorMatching
		switch {
		case e.Op == parser.LOR:
			return append(l, r...), lok && rok
		case e.Op == parser.LAND || e.Op == parser.LUNLESS:
			return l, lok
		case vm != nil && vm.Card == parser.CardOneToOne && vm.On:
			return append([]string(nil), vm.MatchingLabels...), true
		case vm != nil && vm.Card == parser.CardOneToOne:
			return without(l, vm.MatchingLabels...), lok
		case vm != nil && vm.Card == parser.CardManyToOne:
			return append(l, vm.Include...), lok
		case vm != nil && vm.Card == parser.CardOneToMany:
			return append(r, vm.Include...), rok
		}
		return l, lok
	}
	return nil, false
}

func without(ls []string, drop ...string) []string {
	out := make([]string, 0, len(ls))
	for _, l := range ls {
		if !slices.Contains(drop, l) {
			out = append(out, l)
		}
	}
	return out
}

// Dashboards are read as plain JSON rather than the SDK's types, so that
// hand-made or imported dashboards are checked alike.
type dashboardJSON struct {
	Title      string      `json:"title"`
	Panels     []panelJSON `json:"panels"`
	Templating struct {
		List []variableJSON `json:"list"`
	} `json:"templating"`
}

type panelJSON struct {
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Panels      []panelJSON `json:"panels"`
	Targets     []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

type variableJSON struct {
	Name  string          `json:"name"`
	Type  string          `json:"type"`
	Query json.RawMessage `json:"query"`
}

type dashboard struct {
	file string
	data []byte
	dashboardJSON
}

// line finds the line of a panel by its title: JSON decoding keeps no
// positions, and titles are what people search for anyway.
func (d dashboard) line(title string) int {
	key, _ := json.Marshal(title)
	i := bytes.Index(d.data, append([]byte(`"title": `), key...))
	if i < 0 {
		i = bytes.Index(d.data, key)
	}
	if i < 0 {
		return 0
	}
	return bytes.Count(d.data[:i], []byte("\n")) + 1
}

func (c *checker) loadDashboards() ([]dashboard, error) {
	files, err := filepath.Glob(filepath.Join(c.root, DashboardsDir, "*.json"))
	if err != nil {
		return nil, err
	}
	slices.Sort(files)
	var out []dashboard
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read dashboard: %w", err)
		}
		d := dashboard{file: c.rel(f), data: data}
		if err := json.Unmarshal(data, &d.dashboardJSON); err != nil {
			c.add(Violation{File: d.file, Kind: "Dashboard", Name: filepath.Base(f), Rule: RuleParse, Message: err.Error()})
			continue
		}
		out = append(out, d)
	}
	return out, nil
}

// Grafana's built-in interval variables stand for durations; any other
// variable stands for a label value.
var (
	variableRef   = regexp.MustCompile(`\$\{([a-zA-Z0-9_]+)(?::[a-zA-Z]+)?\}|\[\[([a-zA-Z0-9_]+)\]\]|\$([a-zA-Z0-9_]+)`)
	literalRange  = regexp.MustCompile(`\[\s*[0-9]+[smhdwy]`)
	labelValuesFn = regexp.MustCompile(`^\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)
)

func expand(expr string) string {
	return variableRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := variableRef.FindStringSubmatch(ref)
		name := m[1] + m[2] + m[3]
		switch name {
		case "__rate_interval", "__interval", "__range", "__range_s", "__range_ms", "__interval_ms":
			return "5m"
		}
		return "variable"
	})
}

func (c *checker) checkDashboard(d dashboard) {
	for _, tv := range d.Templating.List {
		if tv.Type != "query" {
			continue
		}
		q := variableQuery(tv.Query)
		if m := labelValuesFn.FindStringSubmatch(q); m != nil {
			v := Violation{File: d.file, Line: d.line(tv.Name), Kind: "Variable", Name: tv.Name}
			c.checkQuery(v, m[1], false)
		}
	}
	var walk func(ps []panelJSON)
	walk = func(ps []panelJSON) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			v := Violation{File: d.file, Line: d.line(p.Title), Kind: "Panel", Name: p.Title}
			if strings.TrimSpace(p.Description) == "" {
				c.add(with(v, RulePanelStyle, "panel has no description: say what it shows and what to do about it"))
			}
			if p.Type != "text" && p.FieldConfig.Defaults.Unit == "" {
				c.add(with(v, RulePanelStyle, "panel has no unit"))
			}
			for _, t := range p.Targets {
				if t.Expr == "" {
					continue
				}
				c.checkQuery(v, t.Expr, true)
			}
		}
	}
	walk(d.Panels)
}

func (c *checker) checkQuery(v Violation, raw string, onDashboard bool) {
	if onDashboard && literalRange.MatchString(raw) {
		c.add(with(v, RulePanelStyle, "a fixed range (%s...]) hides or blurs data at other resolutions: use [$__rate_interval]", literalRange.FindString(raw)))
	}
	expr, err := parser.ParseExpr(expand(raw))
	if err != nil {
		c.add(with(v, RuleParse, "query does not parse once variables are expanded: %v", err))
		return
	}
	c.checkExpr(v, expr, onDashboard)
}

func variableQuery(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var m struct {
		Query string `json:"query"`
	}
	_ = json.Unmarshal(raw, &m)
	return m.Query
}

func (c *checker) checkBusinessCoverage() {
	if c.code == nil {
		return
	}
	for _, m := range c.code.Metrics() {
		business := false
		for _, p := range BusinessPrefixes() {
			business = business || strings.HasPrefix(m.Name, p)
		}
		if business && !c.used[m.Name] {
			c.add(Violation{File: DashboardsDir + "/", Kind: "Metric", Name: m.Name, Rule: RuleNotOnDashboard,
				Message: fmt.Sprintf("business metric %s is on no dashboard", m.Name)})
		}
	}
}
