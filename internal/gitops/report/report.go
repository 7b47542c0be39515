// Package report writes findings in the formats CI systems read: text for
// people, json for scripts, sarif for code scanning, junit for test
// dashboards and github for workflow annotations on the changed lines.
package report

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/whisperhq/whisper/internal/gitops/finding"
)

// Formats lists the accepted --format values.
func Formats() []string { return []string{"text", "json", "junit", "sarif", "github"} }

// Report is everything a format may show.
type Report struct {
	Findings []finding.Finding
	// Files and Documents are how much was checked.
	Files     int
	Documents int
	// Policies are the policy names that ran, so that formats listing
	// passes (junit) can show a policy with no finding.
	Policies []string
}

// Write renders r in format to w.
func Write(w io.Writer, format string, r Report) error {
	finding.Sort(r.Findings)
	switch format {
	case "text", "":
		return writeText(w, r)
	case "json":
		return writeJSON(w, r)
	case "junit":
		return writeJUnit(w, r)
	case "sarif":
		return writeSARIF(w, r)
	case "github":
		return writeGitHub(w, r)
	default:
		return fmt.Errorf("unknown format %q (want one of %s)", format, strings.Join(Formats(), ", "))
	}
}

// Valid reports whether format is known.
func Valid(format string) bool {
	for _, f := range Formats() {
		if f == format {
			return true
		}
	}
	return false
}

func writeText(w io.Writer, r Report) error {
	var b strings.Builder
	waived := 0
	for _, f := range r.Findings {
		if f.Level == finding.Waived {
			waived++
		}
		env := f.Env
		if env == "" {
			env = "-"
		}
		fmt.Fprintf(&b, "%-6s %s %s:%d %s %s: %s\n",
			strings.ToUpper(string(f.Level)), env, f.File, f.Index, orDash(f.Object()), f.PolicyRule(), f.Message)
	}
	d, wn := finding.Count(r.Findings)
	fmt.Fprintf(&b, "%d files, %d documents: %d denies, %d warnings, %d waived\n", r.Files, r.Documents, d, wn, waived)
	_, err := io.WriteString(w, b.String())
	return err
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// JSONResult and JSONReport are the documented json format; scripts depend
// on these exact field names.
type JSONResult struct {
	File      string `json:"file"`
	Index     int    `json:"index"`
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Policy    string `json:"policy"`
	Rule      string `json:"rule"`
	Level     string `json:"level"`
	Message   string `json:"message"`
}

// JSONSummary counts what was checked and found.
type JSONSummary struct {
	Files     int `json:"files"`
	Documents int `json:"documents"`
	Denies    int `json:"denies"`
	Warns     int `json:"warns"`
}

// JSONReport is the top-level json object.
type JSONReport struct {
	Results []JSONResult `json:"results"`
	Summary JSONSummary  `json:"summary"`
}

func writeJSON(w io.Writer, r Report) error {
	out := JSONReport{Results: []JSONResult{}}
	for _, f := range r.Findings {
		out.Results = append(out.Results, JSONResult{
			File: f.File, Index: f.Index, Kind: f.Kind, Namespace: f.Namespace, Name: f.Name,
			Policy: f.Policy, Rule: f.Rule, Level: string(f.Level), Message: f.Message,
		})
	}
	out.Summary = JSONSummary{Files: r.Files, Documents: r.Documents}
	out.Summary.Denies, out.Summary.Warns = finding.Count(r.Findings)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// JUnit types: one testsuite per policy package, one testcase per finding.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// suiteName is the policy package: policy names of built-in gates are
// already packages, rules are never part of it.
func suiteName(f finding.Finding) string { return f.Policy }

func writeJUnit(w io.Writer, r Report) error {
	suites := map[string]*junitSuite{}
	get := func(name string) *junitSuite {
		s, ok := suites[name]
		if !ok {
			s = &junitSuite{Name: name}
			suites[name] = s
		}
		return s
	}
	for _, p := range r.Policies {
		get(p)
	}
	for _, f := range r.Findings {
		s := get(suiteName(f))
		c := junitCase{
			Name:      fmt.Sprintf("%s %s:%d %s %s", orDash(f.Env), f.File, f.Index, orDash(f.Object()), f.PolicyRule()),
			Classname: f.Policy,
		}
		switch f.Level {
		case finding.Deny:
			c.Failure = &junitMessage{Message: f.Message, Text: f.Message}
			s.Failures++
		case finding.Waived:
			c.Skipped = &junitMessage{Message: f.Message}
			s.Skipped++
		default:
			c.SystemOut = "warning: " + f.Message
		}
		s.Cases = append(s.Cases, c)
		s.Tests++
	}
	out := junitSuites{}
	names := make([]string, 0, len(suites))
	for n := range suites {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := suites[n]
		if len(s.Cases) == 0 {
			s.Cases = []junitCase{{Name: "all documents", Classname: n}}
			s.Tests = 1
		}
		out.Tests += s.Tests
		out.Failures += s.Failures
		out.Suites = append(out.Suites, *s)
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// SARIF 2.1.0, the subset code scanning reads.
type sarifLog struct {
	Schema  string     `json:"$schema"`
	Version string     `json:"version"`
	Runs    []sarifRun `json:"runs"`
}

type sarifRun struct {
	Tool    sarifTool     `json:"tool"`
	Results []sarifResult `json:"results"`
}

type sarifTool struct {
	Driver sarifDriver `json:"driver"`
}

type sarifDriver struct {
	Name           string      `json:"name"`
	InformationURI string      `json:"informationUri,omitempty"`
	Rules          []sarifRule `json:"rules"`
}

type sarifRule struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	ShortDescription sarifText `json:"shortDescription"`
}

type sarifText struct {
	Text string `json:"text"`
}

type sarifResult struct {
	RuleID       string             `json:"ruleId"`
	RuleIndex    int                `json:"ruleIndex"`
	Level        string             `json:"level"`
	Message      sarifText          `json:"message"`
	Locations    []sarifLocation    `json:"locations,omitempty"`
	Suppressions []sarifSuppression `json:"suppressions,omitempty"`
}

type sarifLocation struct {
	PhysicalLocation sarifPhysical `json:"physicalLocation"`
}

type sarifPhysical struct {
	ArtifactLocation sarifArtifact `json:"artifactLocation"`
	Region           *sarifRegion  `json:"region,omitempty"`
}

type sarifArtifact struct {
	URI string `json:"uri"`
}

type sarifRegion struct {
	StartLine int `json:"startLine"`
}

type sarifSuppression struct {
	Kind          string `json:"kind"`
	Justification string `json:"justification,omitempty"`
}

func writeSARIF(w io.Writer, r Report) error {
	run := sarifRun{
		Tool:    sarifTool{Driver: sarifDriver{Name: "platformctl", Rules: []sarifRule{}}},
		Results: []sarifResult{},
	}
	ruleIndex := map[string]int{}
	for _, f := range r.Findings {
		id := f.PolicyRule()
		idx, ok := ruleIndex[id]
		if !ok {
			idx = len(run.Tool.Driver.Rules)
			ruleIndex[id] = idx
			run.Tool.Driver.Rules = append(run.Tool.Driver.Rules, sarifRule{
				ID: id, Name: id, ShortDescription: sarifText{Text: "policy " + f.Policy + " rule " + orDash(f.Rule)},
			})
		}
		res := sarifResult{RuleID: id, RuleIndex: idx, Message: sarifText{Text: prefixEnv(f)}}
		switch f.Level {
		case finding.Deny:
			res.Level = "error"
		case finding.Warn:
			res.Level = "warning"
		default:
			res.Level = "error"
			res.Suppressions = []sarifSuppression{{Kind: "external", Justification: f.Message}}
		}
		if f.File != "" {
			loc := sarifLocation{PhysicalLocation: sarifPhysical{ArtifactLocation: sarifArtifact{URI: f.File}}}
			if f.Line > 0 {
				loc.PhysicalLocation.Region = &sarifRegion{StartLine: f.Line}
			}
			res.Locations = []sarifLocation{loc}
		}
		run.Results = append(run.Results, res)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(sarifLog{
		Schema:  "https://json.schemastore.org/sarif-2.1.0.json",
		Version: "2.1.0",
		Runs:    []sarifRun{run},
	})
}

func prefixEnv(f finding.Finding) string {
	msg := f.Message
	if o := f.Object(); o != "" {
		msg = o + ": " + msg
	}
	if f.Env != "" {
		msg = "[" + f.Env + "] " + msg
	}
	return msg
}

// GitHub workflow commands: escaping per actions/toolkit's command.ts.
func escapeData(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A").Replace(s)
}

func escapeProperty(s string) string {
	return strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C").Replace(s)
}

func writeGitHub(w io.Writer, r Report) error {
	var b strings.Builder
	for _, f := range r.Findings {
		cmd := "error"
		switch f.Level {
		case finding.Warn:
			cmd = "warning"
		case finding.Waived:
			cmd = "notice"
		}
		var props []string
		if f.File != "" {
			props = append(props, "file="+escapeProperty(f.File))
			line := f.Line
			if line < 1 {
				line = 1
			}
			props = append(props, fmt.Sprintf("line=%d", line))
		}
		props = append(props, "title="+escapeProperty(f.PolicyRule()))
		fmt.Fprintf(&b, "::%s %s::%s\n", cmd, strings.Join(props, ","), escapeData(prefixEnv(f)))
	}
	d, wn := finding.Count(r.Findings)
	fmt.Fprintf(&b, "%d files, %d documents: %d denies, %d warnings\n", r.Files, r.Documents, d, wn)
	_, err := io.WriteString(w, b.String())
	return err
}
