package contract

import (
	"context"
	"testing"

	"github.com/whisperhq/whisper/internal/gitops/check"
	"github.com/whisperhq/whisper/internal/gitops/finding"
)

func TestGateReportsOnceAsFindings(t *testing.T) {
	root := writeRepo(t, append([]panelSpec{{"Typo", `rate(whisper_rpc_request_total[$__rate_interval])`}}, goodPanels...), goodRules, "errors-high.md")
	var g check.Gate = NewGate(testCatalogue(t))
	if g.Name() != Policy {
		t.Errorf("Name() = %q, want %q", g.Name(), Policy)
	}
	fs, err := g.Check(context.Background(), check.Env{Name: "dev", Root: root})
	if err != nil {
		t.Fatal(err)
	}
	var typo []finding.Finding
	for _, f := range fs {
		if f.Name == "Typo" {
			typo = append(typo, f)
		}
	}
	if len(typo) != 1 {
		t.Fatalf("findings about panel Typo: %v, want one", fs)
	}
	f := typo[0]
	if f.File != "dashboards/test.json" || f.Policy != Policy || f.Rule != RuleUnknownMetric || f.Level != finding.Deny || f.Env != "" {
		t.Errorf("finding = %+v", f)
	}
	// The same dashboards for every environment: reported once.
	again, err := g.Check(context.Background(), check.Env{Name: "staging", Root: root})
	if err != nil || len(again) != 0 {
		t.Errorf("second environment: %v, %v; want nothing", again, err)
	}
}
