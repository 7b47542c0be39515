package contract

import (
	"context"
	"sync"

	"github.com/whisperhq/whisper/internal/gitops/check"
	"github.com/whisperhq/whisper/internal/gitops/finding"
)

// Policy is the name the gate's findings are reported under.
const Policy = "observability.contract"

// Gate runs Check as a gate of `platformctl check`. Dashboards and rules
// are the same for every environment, so the findings are reported once,
// with no environment, on the first environment checked.
type Gate struct {
	code *Catalogue

	once     sync.Once
	first    string
	findings []finding.Finding
	err      error
}

// NewGate returns a gate checking against the code's metrics.
func NewGate(code *Catalogue) *Gate { return &Gate{code: code} }

// Name implements check.Gate.
func (g *Gate) Name() string { return Policy }

// Check implements check.Gate.
func (g *Gate) Check(_ context.Context, env check.Env) ([]finding.Finding, error) {
	g.once.Do(func() {
		g.first = env.Name
		var vs []Violation
		vs, g.err = Check(env.Root, g.code)
		for _, v := range vs {
			g.findings = append(g.findings, finding.Finding{
				File: v.File, Line: v.Line, Kind: v.Kind, Name: v.Name, Policy: Policy, Rule: v.Rule,
				Level: finding.Deny, Message: v.Message,
			})
		}
	})
	if env.Name != g.first {
		return nil, nil
	}
	return g.findings, g.err
}
