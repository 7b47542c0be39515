// Package waiver applies policies/waivers.yaml: a named owner may accept a
// specific deny on a specific object until a date. Waivers are themselves
// checked, because a waiver nobody owns or that never ends is a silent
// permanent exception.
package waiver

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/whisperhq/whisper/internal/gitops/finding"
)

// Policy is the policy name waiver problems are reported under.
const Policy = "platformctl.waiver"

// Selector names the objects a waiver covers. Empty fields match anything;
// fields may be shell patterns (path.Match).
type Selector struct {
	Kind      string `yaml:"kind"`
	Namespace string `yaml:"namespace"`
	Name      string `yaml:"name"`
}

// Waiver accepts the denies of policy/rule on the selected objects.
type Waiver struct {
	Policy   string   `yaml:"policy"`
	Rule     string   `yaml:"rule"`
	Selector Selector `yaml:"selector"`
	Owner    string   `yaml:"owner"`
	Reason   string   `yaml:"reason"`
	Expires  string   `yaml:"expires"`

	line    int
	expires time.Time
}

// Set is the valid, unexpired waivers of a file, and the problems found in it.
type Set struct {
	File     string
	Waivers  []Waiver
	Problems []finding.Finding
}

type file struct {
	Waivers []yaml.Node `yaml:"waivers"`
}

// Parse reads a waivers file. Malformed and expired waivers become deny
// findings on the file; only a file that is not YAML at all is an error.
func Parse(name string, data []byte, today time.Time) (Set, error) {
	set := Set{File: name}
	if len(bytes.TrimSpace(data)) == 0 {
		return set, nil
	}
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return set, fmt.Errorf("%s: %w", name, err)
	}
	day := today.UTC().Truncate(24 * time.Hour)
	for i, n := range f.Waivers {
		problem := func(rule, msg string) {
			set.Problems = append(set.Problems, finding.Finding{
				File: name, Index: i, Line: n.Line, Kind: "Waiver",
				Policy: Policy, Rule: rule, Level: finding.Deny, Message: msg,
			})
		}
		var w Waiver
		if err := n.Decode(&w); err != nil {
			problem("malformed", fmt.Sprintf("waiver %d: %v", i, err))
			continue
		}
		if err := strictFields(&n); err != nil {
			problem("malformed", fmt.Sprintf("waiver %d: %v", i, err))
			continue
		}
		w.line = n.Line
		if err := w.validate(); err != nil {
			problem("malformed", fmt.Sprintf("waiver %d (%s): %v", i, w.describe(), err))
			continue
		}
		exp, err := time.Parse(time.DateOnly, w.Expires)
		if err != nil {
			problem("malformed", fmt.Sprintf("waiver %d (%s): expires %q is not YYYY-MM-DD", i, w.describe(), w.Expires))
			continue
		}
		w.expires = exp
		if day.After(exp) {
			problem("expired", fmt.Sprintf("waiver %d (%s) owned by %s expired on %s: fix the finding or renew the waiver", i, w.describe(), w.Owner, w.Expires))
			continue
		}
		set.Waivers = append(set.Waivers, w)
	}
	return set, nil
}

// strictFields rejects keys the waiver schema does not have: a misspelt
// "expiers" would otherwise make a waiver that looks dated but is not.
func strictFields(n *yaml.Node) error {
	known := map[string]bool{"policy": true, "rule": true, "selector": true, "owner": true, "reason": true, "expires": true}
	sel := map[string]bool{"kind": true, "namespace": true, "name": true}
	if n.Kind != yaml.MappingNode {
		return errors.New("not a mapping")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i].Value
		if !known[k] {
			return fmt.Errorf("unknown field %q", k)
		}
		if k == "selector" {
			v := n.Content[i+1]
			for j := 0; j+1 < len(v.Content); j += 2 {
				if !sel[v.Content[j].Value] {
					return fmt.Errorf("unknown selector field %q", v.Content[j].Value)
				}
			}
		}
	}
	return nil
}

func (w Waiver) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"policy", w.Policy}, {"owner", w.Owner}, {"reason", w.Reason}, {"expires", w.Expires},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing %v", missing)
	}
	return nil
}

func (w Waiver) describe() string {
	return fmt.Sprintf("%s/%s on %s/%s/%s", w.Policy, w.Rule, or(w.Selector.Kind), or(w.Selector.Namespace), or(w.Selector.Name))
}

func or(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

func match(pattern, value string) bool {
	if pattern == "" {
		return true
	}
	ok, err := path.Match(pattern, value)
	return err == nil && ok
}

// Covers reports whether the waiver accepts the finding.
func (w Waiver) Covers(f finding.Finding) bool {
	return f.Policy == w.Policy &&
		(w.Rule == "" || w.Rule == f.Rule) &&
		match(w.Selector.Kind, f.Kind) &&
		match(w.Selector.Namespace, f.Namespace) &&
		match(w.Selector.Name, f.Name)
}

// Apply turns covered denies into waived findings, in place.
func (s Set) Apply(fs []finding.Finding) {
	for i := range fs {
		if fs[i].Level != finding.Deny {
			continue
		}
		for _, w := range s.Waivers {
			if w.Covers(fs[i]) {
				fs[i].Level = finding.Waived
				fs[i].WaivedBy = w.Owner
				fs[i].Message += fmt.Sprintf(" (waived by %s until %s: %s)", w.Owner, w.Expires, w.Reason)
				break
			}
		}
	}
}
