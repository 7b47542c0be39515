// Package finding is the one shape every gate reports in, so that reports,
// waivers, --select and diff treat a decode error and a Rego deny alike.
package finding

import (
	"sort"
	"strings"

	"github.com/whisperhq/whisper/internal/gitops/manifest"
)

// Level is how much a finding matters.
type Level string

const (
	// Deny fails the check.
	Deny Level = "deny"
	// Warn is shown but does not fail.
	Warn Level = "warn"
	// Waived is a deny covered by a valid waiver: shown, does not fail.
	Waived Level = "waived"
)

// Finding is one result of one gate about one document (or about the
// environment as a whole when File is empty).
type Finding struct {
	Env       string
	File      string
	Index     int
	Line      int
	Kind      string
	Namespace string
	Name      string
	Policy    string
	Rule      string
	Level     Level
	Message   string
	// WaivedBy names the waiver owner when Level is Waived.
	WaivedBy string
}

// About fills the location and object fields from the document.
func About(d manifest.Document, f Finding) Finding {
	f.File, f.Index, f.Line = d.File, d.Index, d.Line
	f.Kind, f.Namespace, f.Name = d.Kind(), d.Namespace(), d.Name()
	return f
}

// PolicyRule is "policy/rule", or just the policy when the rule is unnamed.
func (f Finding) PolicyRule() string {
	if f.Rule == "" {
		return f.Policy
	}
	return f.Policy + "/" + f.Rule
}

// Object is kind/namespace/name with empty parts left out.
func (f Finding) Object() string {
	parts := make([]string, 0, 3)
	for _, p := range []string{f.Kind, f.Namespace, f.Name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "/")
}

// Selector keeps findings whose policy or policy/rule starts with one of the
// prefixes; no prefixes keeps everything.
type Selector []string

// Match reports whether a finding of policy/rule is selected.
func (s Selector) Match(policy, rule string) bool {
	if len(s) == 0 {
		return true
	}
	full := policy + "/" + rule
	for _, p := range s {
		if strings.HasPrefix(policy, p) || strings.HasPrefix(full, p) {
			return true
		}
	}
	return false
}

// MayMatch reports whether any rule of the policy could be selected, so that
// whole packages can be skipped before evaluation.
func (s Selector) MayMatch(policy string) bool {
	if len(s) == 0 {
		return true
	}
	for _, p := range s {
		if strings.HasPrefix(policy, p) || strings.HasPrefix(p, policy+"/") || p == policy {
			return true
		}
	}
	return false
}

// Filter returns the selected findings.
func (s Selector) Filter(fs []Finding) []Finding {
	if len(s) == 0 {
		return fs
	}
	out := fs[:0:0]
	for _, f := range fs {
		if s.Match(f.Policy, f.Rule) {
			out = append(out, f)
		}
	}
	return out
}

// Sort orders findings by env, file, index, policy, rule and message so that
// output is stable across runs and diffable.
func Sort(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		switch {
		case a.Env != b.Env:
			return a.Env < b.Env
		case a.File != b.File:
			return a.File < b.File
		case a.Index != b.Index:
			return a.Index < b.Index
		case a.Object() != b.Object():
			return a.Object() < b.Object()
		case a.Policy != b.Policy:
			return a.Policy < b.Policy
		case a.Rule != b.Rule:
			return a.Rule < b.Rule
		default:
			return a.Message < b.Message
		}
	})
}

// Count returns the number of denies and warnings (waived findings count as
// neither).
func Count(fs []Finding) (denies, warns int) {
	for _, f := range fs {
		switch f.Level {
		case Deny:
			denies++
		case Warn:
			warns++
		}
	}
	return denies, warns
}
